"""Patch correspondence (paper Fig. 9): oracles against a direct cosine of the grid vectors."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dense_readout import DenseReadout, InputError, UnsupportedModelError
from dense_readout.patches import (
    GridExtractor,
    cell_boxes,
    correspondence,
    save_correspondence_figure,
)


def tiny(num_classes: int = 1000) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=num_classes).eval()


def direct_cosine(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Independent of the package: timm's forward_features, then pairwise cosine."""
    with torch.no_grad():
        fa = model.forward_features(a[None])[0].flatten(1).T  # (h·w)×C
        fb = model.forward_features(b[None])[0].flatten(1).T
    return F.cosine_similarity(fa[:, None, :], fb[None, :, :], dim=-1)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 96, 96, generator=generator), torch.rand(3, 128, 96, generator=generator)


def test_similarity_equals_direct_cosine(images):
    model = tiny()
    result = correspondence(model, *images, top=5)
    assert result.grid_a == (3, 3) and result.grid_b == (4, 3)
    torch.testing.assert_close(result.similarity, direct_cosine(model, *images), atol=1e-5, rtol=0)
    # the pairs are the largest entries of that matrix, in order
    flat = result.similarity.flatten().sort(descending=True).values[:5]
    assert [p.similarity for p in result.pairs] == pytest.approx(flat.tolist())
    for pair in result.pairs:
        row = pair.cell_a[0] * 3 + pair.cell_a[1]
        column = pair.cell_b[0] * 3 + pair.cell_b[1]
        assert result.similarity[row, column].item() == pytest.approx(pair.similarity)


def test_image_with_itself_matches_each_cell_to_itself(images):
    result = correspondence(tiny(), images[0], images[0], top=9)
    cells = result.similarity.shape[0]
    assert result.best_match().tolist() == list(range(cells))
    torch.testing.assert_close(result.similarity.diagonal(), torch.ones(cells), atol=1e-5, rtol=0)
    assert {(p.cell_a, p.cell_b) for p in result.pairs} == {(divmod(n, 3),) * 2 for n in range(9)}


def test_bare_backbone_gives_the_same_correspondence(images):
    """No head (num_classes=0), a features= callable, and a DenseReadout: same numbers."""
    classifier = tiny()
    with_head = correspondence(classifier, *images).similarity
    headless = tiny(num_classes=0)
    backbone = {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    headless.load_state_dict(backbone)  # the same weights, without the head
    assert not GridExtractor(headless).has_head and GridExtractor(tiny()).has_head
    torch.testing.assert_close(correspondence(headless, *images).similarity, with_head)
    callable_grid = correspondence(headless, *images, features=headless.forward_features)
    torch.testing.assert_close(callable_grid.similarity, with_head)
    torch.testing.assert_close(
        correspondence(DenseReadout(classifier), *images).similarity, with_head
    )


def test_pil_images_use_the_preprocessing():
    from dense_readout.preprocessing import Preprocess

    prep = Preprocess(resize=96, crop=96)
    a, b = Image.effect_noise((120, 96), 40).convert("RGB"), Image.effect_noise((96, 96), 60)
    result = correspondence(tiny(), a, b, preprocess=prep)
    expected = direct_cosine(tiny(), prep(a), prep(b.convert("RGB")))
    torch.testing.assert_close(result.similarity, expected, atol=1e-5, rtol=0)


def test_bad_inputs(images):
    model = tiny()
    with pytest.raises(InputError, match="top must be at least 1"):
        correspondence(model, *images, top=0)
    with pytest.raises(InputError, match="PIL image or a tensor"):
        correspondence(model, torch.rand(2, 3, 96, 96), images[1])
    with pytest.raises(InputError, match="channels"):
        wide, narrow = nn.Conv2d(3, 8, 32, 32).eval(), nn.Conv2d(3, 4, 32, 32).eval()
        calls = iter([wide, narrow])
        correspondence(wide, *images, features=lambda x: next(calls)(x))
    with pytest.raises(UnsupportedModelError, match="B×C×h×w"):
        correspondence(model, *images, features=lambda x: x.mean(dim=(2, 3)))
    with pytest.raises(InputError, match="training mode|eval"):
        correspondence(tiny().train(), *images)


def test_figure_is_written(images, tmp_path):
    result = correspondence(tiny(), *images, top=20)
    pictures = [x.permute(1, 2, 0).numpy() for x in images]
    path = save_correspondence_figure(result, *pictures, tmp_path / "fig9.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > png.height > 100


def test_cell_boxes_tile_the_centre_crop():
    boxes = cell_boxes((300, 200), grid=(2, 3), resize=100, crop=100)
    # shorter side 200 → 100: the crop is the centre 200×200 of the original
    assert boxes[0].tolist() == [50, 0, 117, 100] and boxes[-1].tolist() == [183, 100, 250, 200]
    assert (boxes[:, 2] > boxes[:, 0]).all() and len(boxes) == 6
