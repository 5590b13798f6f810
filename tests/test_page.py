"""The readout page: embedded scores equal the readout, size, self-containment, Jupyter.

The browser-side behaviour (hover, search, network) is in tests/test_browser.py.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.cli import main
from dense_readout.images import crop_region, full_view
from dense_readout.page import PageComparison, read_page, readout_page

skimage_data = pytest.importorskip("skimage.data")

DEMO = ("chelsea", "coffee", "astronaut")
FLOAT16_RELATIVE = 2.0**-11  # documented rounding bound of the page's scores


def within_float16(page_scores: np.ndarray, scores: torch.Tensor) -> None:
    z = scores.detach().float().numpy()
    bound = FLOAT16_RELATIVE * np.abs(z) + 2.0**-25
    assert page_scores.shape == z.shape
    assert np.all(np.abs(page_scores - z) <= bound), float(np.abs(page_scores - z).max())


@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory):
    """``explain --html --view full`` on the three demo photos saved as PNG files."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for name in DEMO:
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(root / f"{name}.png")
        paths.append(str(root / f"{name}.png"))
    out = root / "out"
    code = main(["explain", *paths, "--html", "--view", "full", "--no-png", "--out", str(out)])
    return code, root, out


def test_demo_pages_embed_the_readout_of_the_whole_photo(demo_pages, embedded):
    code, root, out = demo_pages
    assert code == 0
    model, preprocess, names, _ = embedded
    readout = DenseReadout(model)
    for name in DEMO:
        photo = Image.open(root / f"{name}.png").convert("RGB")
        picture = full_view(photo, preprocess.crop)
        assert min(picture.size) == 224  # any aspect ratio: chelsea and coffee are landscape
        result = readout(preprocess.normalize(picture).unsqueeze(0))
        data = read_page(out / f"{name}.html")
        within_float16(data["scores"], result.scores[0])
        h, w = result.grid_size
        assert data["grid"] == [h, w]
        assert (h, w) == ((7, 7) if name == "astronaut" else (7, 11))  # astronaut is square
        assert data["region"] == [0.0, 0.0, float(photo.width), float(photo.height)]
        assert data["names"] == list(names)
        values, classes = result.topk(5)
        page_classes = np.array(data["cells"]["classes"]).reshape(h, w, 5)
        assert np.array_equal(page_classes, classes[0].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(
            np.array(data["cells"]["logits"]).reshape(h, w, 5),
            values[0].permute(1, 2, 0).numpy(),
            rtol=1e-5,
        )
        top1 = int(result.logits[0].argmax())
        assert data["top5"][0]["class"] == top1 == data["initial_class"]
        record = (out / f"{name}.json").read_text()
        assert '"view": "full"' in record and f'"page": "{name}.html"' in record


def test_chelsea_whole_photo_still_a_cat(demo_pages):
    _, _, out = demo_pages
    assert read_page(out / "chelsea.html")["top5"][0]["class"] in range(281, 286)


def test_a_7x7x1000_page_is_small(embedded, tmp_path):
    """Crop view of chelsea: 7×7 cells × 1000 classes, photo included, well under 1.5 MB."""
    model, preprocess, names, _ = embedded
    photo = Image.fromarray(skimage_data.chelsea())
    result = DenseReadout(model)(preprocess(photo).unsqueeze(0))
    region = crop_region(photo.size, preprocess.resize, preprocess.crop)
    page = readout_page(result, photo, names, region=region, title="chelsea")
    data = read_page(page)
    assert data["scores"].shape == (1000, 7, 7)
    size = len(page.encode("utf-8"))
    scores_part = len(re.search(r'"data":"([^"]+)"', page).group(1))
    assert scores_part == 4 * -(-2 * 1000 * 49 // 3)  # base64 of float16: 130,668 bytes
    assert size <= 1.5e6, size
    assert size <= 400_000, size  # about 230 kB today; a jump means something got embedded twice


def test_crop_region_is_where_the_centre_crop_comes_from(embedded):
    _, preprocess, _, _ = embedded
    photo = Image.fromarray(skimage_data.astronaut()).crop((0, 0, 512, 300))
    left, top, right, bottom = crop_region(photo.size, preprocess.resize, preprocess.crop)
    assert (top, bottom) == (0.0, 300.0) and 0 < left < right < 512
    again = photo.resize((224, 224), box=(left, top, right, bottom), resample=Image.BICUBIC)
    expected = np.asarray(preprocess.geometry(photo), dtype=float)
    assert (
        np.abs(np.asarray(again, dtype=float) - expected).mean() < 4
    )  # same pixels, resampled once


def test_page_is_self_contained():
    model = timm.create_model("resnet18", num_classes=5).eval()
    result = DenseReadout(model)(torch.rand(1, 3, 64, 96))
    page = result.to_html(Image.new("RGB", (96, 64), "red"), list("abcde"), title="</script><b>")
    assert "http://" not in page and "https://" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert re.findall(r'\bsrc="(?!data:)', page) == []
    assert "<title>&lt;/script&gt;&lt;b&gt; · dense readout</title>" in page
    assert read_page(page)["title"] == "</script><b>"  # escaped inside the data block too


def test_repr_html_for_jupyter():
    model = timm.create_model("resnet18", num_classes=3).eval()
    result = DenseReadout(model)(torch.rand(1, 3, 64, 64))
    frame = result._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    inner = html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))
    within_float16(read_page(inner)["scores"], result.scores[0])


def test_comparisons_and_bad_arguments():
    model = timm.create_model("resnet18", num_classes=3).eval()
    result = DenseReadout(model)(torch.rand(2, 3, 64, 64))
    maps = [PageComparison("gradcam", 1, np.linspace(0, 1, 12).reshape(3, 4), 0.25, 5)]
    data = read_page(result.to_html(comparisons=maps, index=1))
    (item,) = data["comparisons"]
    assert item["shape"] == [3, 4] and item["seconds"] == 0.25 and item["class"] == 1
    within_float16(data["scores"], result.scores[1])
    from dense_readout.errors import InputError

    with pytest.raises(InputError, match="index must be in"):
        result.to_html(index=2)
    with pytest.raises(InputError, match="2 names for 3 classes"):
        result.to_html(class_names=["a", "b"])
