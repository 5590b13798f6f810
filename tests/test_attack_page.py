"""The attack's interactive page (paper Fig. 11 with a step slider).

The embedded per-step data read back equals the trace; the page is self-contained
(no http(s) URL, a strict Content-Security-Policy) and within the documented size;
in headless Chromium the slider, the prev/next buttons and the cells show the trace's
values and no request leaves ``file:``/``data:``. The browser tests skip, with the
reason, where Chromium, its driver or Selenium is missing (as tests/test_browser.py).
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from browser_support import headless_chromium, requests_made
from dense_readout.attacks import AttackTrace, pgd
from dense_readout.attacks.page import MAX_SIDE, attack_page, read_attack_page
from dense_readout.errors import InputError

NAMES = ["tench, Tinca tinca", "goldfish", "shark", "sombrero", "a <b> & c"]


@pytest.fixture(scope="module")
def trace() -> AttackTrace:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    seed = torch.Generator().manual_seed(0)
    # A large ε so that cells flip within 3 steps (the share of target cells changes).
    return pgd(
        model, images, 3, true_class=0, eps=32 / 255, alpha=16 / 255, steps=3, generator=seed
    )


def _jpeg(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.mark.parametrize("index", [0, 1])
def test_embedded_steps_equal_the_trace(trace, index):
    data = read_attack_page(attack_page(trace, NAMES, index=index))
    assert data["steps"] == trace.steps == 3 and len(data["per_step"]) == 4
    assert data["target"] == 3 and data["targeted"] is True and data["grid"] == [2, 2]
    probs = trace.logits[:, index].softmax(dim=-1)
    fraction = trace.target_cell_fraction()[:, index]
    for t, step in enumerate(data["per_step"]):
        assert step["step"] == t
        assert step["labels"] == trace.cell_labels[t, index].tolist()
        assert step["target_ranks"] == trace.target_ranks[t, index].tolist()
        assert np.abs(np.array(step["probs"]) - trace.cell_probs[t, index].numpy()).max() <= 5e-5
        assert step["prediction"] == int(trace.predictions()[t, index])
        assert step["prediction_probability"] == pytest.approx(float(probs[t].max()), abs=1e-6)
        assert step["target_probability"] == pytest.approx(float(probs[t, 3]), abs=1e-6)
        assert step["target_cell_fraction"] == pytest.approx(float(fraction[t]), abs=1e-9)
        picture = np.asarray(_jpeg(step["image"]).convert("RGB"), dtype=np.float32) / 255
        pixels = trace.images[t, index].permute(1, 2, 0).numpy()
        assert picture.shape == pixels.shape  # JPEG keeps the mean colour, not the noise
        assert np.abs(picture.mean(axis=(0, 1)) - pixels.mean(axis=(0, 1))).max() < 0.02
    shown = {int(k) for k in data["names"]}
    used = {3, *trace.cell_labels[:, index].flatten().tolist()}
    used |= set(trace.predictions()[:, index].tolist())
    assert shown == used  # only the classes the page shows
    assert all(data["names"][str(k)] == NAMES[k] for k in shown)


def test_page_is_self_contained(trace):
    page = attack_page(trace, NAMES)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", page)
    assert "default-src 'none'; img-src data:; style-src 'unsafe-inline'" in page
    assert re.findall(r'\b(?:src|href)="', page) == []  # images come from the JSON as data:
    assert page.count("data:image/jpeg;base64,") == trace.steps + 1


def test_names_cannot_break_out_of_the_page(trace):
    names = [*NAMES[:3], "</script><script>alert(1)</script>", "e"]
    page = attack_page(trace, names)
    assert page.count("</script>") == 2  # the JSON block and the page's script
    assert "<title>PGD attack (targeted, &lt;/script&gt;" in page
    assert read_attack_page(page)["names"]["3"] == names[3]


def test_page_size_for_21_steps_at_224_px():
    """21 steps of a 224 px photo, as noisy as PGD iterates, a 7×7 grid, 1000 names."""
    from skimage import data

    generator = torch.Generator().manual_seed(0)
    photo = Image.fromarray(data.chelsea()).resize((224, 224))
    clean = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
    noise = (torch.rand(21, 1, 3, 224, 224, generator=generator) * 2 - 1) * 8 / 255
    noise[0] = 0
    images = (clean + noise).clamp(0, 1)
    labels = torch.randint(0, 1000, (21, 1, 7, 7), generator=generator)
    trace = AttackTrace(
        images,
        torch.randn(21, 1, 1000, generator=generator),
        labels,
        torch.rand(21, 1, 7, 7, generator=generator),
        torch.randn(21, 1, 7, 7, generator=generator),
        torch.randint(0, 1000, (21, 1, 7, 7), generator=generator),
        torch.zeros(21, 1),
        torch.tensor([808]),
        True,
        True,
    )
    page = attack_page(trace, [f"class {k}, a longer synonym" for k in range(1000)])
    size = len(page.encode("utf-8"))
    assert size <= 2_000_000, size
    assert size <= 700_000, size  # the module docstring says 0.51 MB
    data = read_attack_page(page)
    assert len(data["per_step"]) == 21 and data["grid"] == [7, 7]
    assert max(_jpeg(data["per_step"][0]["image"]).size) == 224 <= MAX_SIDE


def test_large_images_are_shrunk_and_bad_index_refused(trace):
    big = AttackTrace(**{**trace.__dict__, "images": torch.rand(4, 2, 3, 600, 900)})
    uri = read_attack_page(attack_page(big, None))["per_step"][0]["image"]
    assert _jpeg(uri).size == (MAX_SIDE, 299)
    with pytest.raises(InputError, match="out of range"):
        attack_page(trace, NAMES, index=2)


# --- in a real browser -------------------------------------------------------------------------


browser = pytest.fixture(scope="module")(headless_chromium)


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_slider_steps_and_cells_in_the_browser(browser, trace, tmp_path):
    from selenium.webdriver.common.keys import Keys

    path = tmp_path / "attack.html"
    path.write_text(attack_page(trace, NAMES), encoding="utf-8")
    requests_made(browser)
    browser.get(path.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "true"
    fraction = trace.target_cell_fraction()[:, 0]

    def shown(t: int) -> None:
        assert browser.execute_script("return document.body.dataset.step") == str(t)
        assert _text(browser, "step-number").startswith(f"step {t} ")
        count = int(trace.cell_labels[t, 0].eq(3).sum())
        assert (
            _text(browser, "target-share")
            == f"{100 * float(fraction[t]):.1f}% ({count} of 4 cells)"
        )
        outlined = browser.find_elements("css selector", "#cells .cell.target")
        assert len(outlined) == count

    shown(0)
    first = _text(browser, "target-share")
    slider = browser.find_element("id", "step")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # the keyboard moves the slider
    shown(2)
    slider.send_keys(Keys.END)
    shown(3)
    browser.find_element("id", "prev").click()
    shown(2)
    if float(fraction[2]) != float(fraction[0]):
        assert _text(browser, "target-share") != first  # the shown share moved with the slider

    cell = browser.find_elements("css selector", "#cells .cell")[3]  # row 2, column 2
    browser.execute_script("arguments[0].focus()", cell)
    label, prob = int(trace.cell_labels[2, 0, 1, 1]), float(trace.cell_probs[2, 0, 1, 1])
    rank = int(trace.target_ranks[2, 0, 1, 1])
    assert _text(browser, "cell-heading") == "cell row 2, column 2 at step 2"
    assert _text(browser, "cell-top1") == f"top-1: {NAMES[label]} ({label}) · {100 * prob:.1f}%"
    assert f"rank {rank + 1} of 5 here" in _text(browser, "cell-rank")
    cell.send_keys(Keys.ARROW_UP)  # arrow keys move between cells
    assert _text(browser, "cell-heading") == "cell row 1, column 2 at step 2"

    urls = requests_made(browser)
    assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
