"""Protocol: crop geometry of masks, any-pixel occupancy, the three inputs and their fill."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dense_readout.errors import InputError
from dense_readout.evaluation.protocol import (
    Protocol,
    boxes_to_mask,
    grid_occupancy,
    paper_preprocess,
)
from dense_readout.preprocessing import Preprocess

PRE = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_boxes_are_inclusive_pixel_ranges_and_unioned():
    mask = np.asarray(boxes_to_mask((20, 10), np.array([[2, 1, 4, 3], [3, 2, 6, 2]]))) > 0
    expected = np.zeros((10, 20), bool)
    expected[1:4, 2:5] = True
    expected[2, 3:7] = True
    assert (mask == expected).all()


@pytest.mark.parametrize(
    "size,box,rows,cols",
    [
        ((256, 256), [16, 16, 47, 47], (0, 32), (0, 32)),  # no resize, crop offset 16
        ((128, 128), [8, 8, 23, 23], (0, 32), (0, 32)),  # exact 2x upsampling
        (
            (512, 256),
            [144, 100, 155, 109],
            (84, 94),
            (0, 12),
        ),  # wide: crop offset 144 in x, 16 in y
    ],
)
def test_mask_follows_resize_and_centre_crop(size, box, rows, cols):
    mask = Protocol(PRE).mask(size, np.array([box])).numpy()
    expected = np.zeros((224, 224), bool)
    expected[rows[0] : rows[1], cols[0] : cols[1]] = True
    assert mask.shape == (224, 224) and (mask == expected).all()


def _brute_force_occupancy(mask: np.ndarray, grid):
    height, width = mask.shape
    out = np.zeros(grid, bool)
    for u in range(grid[0]):
        for v in range(grid[1]):
            r0, r1 = math.floor(u * height / grid[0]), math.ceil((u + 1) * height / grid[0])
            c0, c1 = math.floor(v * width / grid[1]), math.ceil((v + 1) * width / grid[1])
            out[u, v] = mask[r0:r1, c0:c1].any()
    return out


@pytest.mark.parametrize(
    "shape,grid", [((224, 224), (7, 7)), ((224, 224), (14, 14)), ((10, 10), (3, 3))]
)
def test_any_pixel_occupancy_matches_brute_force(shape, grid):
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand((5, *shape), generator=generator) > 0.995
    cells = grid_occupancy(masks, grid)
    for mask, cell in zip(masks, cells, strict=False):
        assert (cell.numpy() == _brute_force_occupancy(mask.numpy(), grid)).all()


def test_one_pixel_marks_exactly_its_cell():
    mask = torch.zeros(1, 224, 224, dtype=torch.bool)
    mask[0, 64, 223] = True
    assert grid_occupancy(mask, (7, 7))[0].nonzero().tolist() == [[2, 6]]


def test_three_inputs_occlude_with_the_fill():
    protocol = Protocol(PRE, fill="black")
    x = torch.randn(2, 3, 224, 224)
    mask = torch.zeros(2, 224, 224, dtype=torch.bool)
    mask[:, 50:100, 60:120] = True
    batch = protocol.three_inputs(x, mask)
    original, wo_bg, wo_fg = batch[:2], batch[2:4], batch[4:]
    assert torch.equal(original, x)
    black = torch.full((3,), -1.0)  # (0 - 0.5) / 0.5
    inside, outside = mask.unsqueeze(1).expand_as(x), ~mask.unsqueeze(1).expand_as(x)
    assert torch.equal(wo_bg[inside], x[inside]) and torch.equal(wo_fg[outside], x[outside])
    assert torch.all(wo_bg.permute(0, 2, 3, 1)[~mask] == black)
    assert torch.all(wo_fg.permute(0, 2, 3, 1)[mask] == black)


def test_mean_fill_is_zero_after_normalisation_and_custom_fill():
    pre = Preprocess()  # ImageNet mean/std
    assert torch.allclose(Protocol(pre).fill_value(), torch.zeros(3), atol=1e-7)
    value = Protocol(pre, fill="1,0,0.5").fill_value()
    expected = (torch.tensor([1, 0, 0.5]) - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    assert torch.allclose(value, expected)
    with pytest.raises(InputError, match="fill must be one of"):
        Protocol(pre, fill="purple").fill_value()
    with pytest.raises(InputError):
        Protocol(pre, fill="2,0,0").fill_value()


def test_paper_preprocess_is_256_224_with_the_models_normalisation(embedded):
    model = embedded.model
    own, imagenet = paper_preprocess(model), paper_preprocess(model, "imagenet")
    assert (own.resize, own.crop) == (256, 224) and own.mean == (0.5, 0.5, 0.5)
    assert imagenet.mean == (0.485, 0.456, 0.406)


def test_paper_preprocess_is_256_224_whatever_the_models_input_size():
    """A 240-px model (EfficientNet-Lite1's config) still gets the paper's 256 -> 224."""
    lite1 = torch.nn.Identity()
    lite1.pretrained_cfg = {
        "input_size": (3, 240, 240),
        "crop_pct": 0.882,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }
    own, imagenet = paper_preprocess(lite1), paper_preprocess(lite1, "imagenet")
    assert (own.resize, own.crop) == (256, 224) == (imagenet.resize, imagenet.crop)
    assert own.interpolation == "bilinear" and own.mean == (0.5, 0.5, 0.5)  # from the model
    assert imagenet.mean == (0.485, 0.456, 0.406)
    larger = paper_preprocess(lite1, crop=240)  # the CLI's --crop keeps the 0.875 ratio
    assert (larger.resize, larger.crop) == (274, 240)
    bare = paper_preprocess(torch.nn.Identity())  # no timm config at all
    assert (bare.resize, bare.crop, bare.interpolation) == (256, 224, "bicubic")


def test_real_sample_masks_cover_the_boxes(data_root):
    from dense_readout.evaluation.datasets import ILSVRCBoxes

    dataset = ILSVRCBoxes(data_root / "ilsvrc_val_sample")
    protocol = Protocol(PRE)
    sample = dataset[0]  # 500x400, box 151..478 x 59..390
    image = Image.open(sample.path).convert("RGB")
    _x, mask = protocol.transform(image, sample.boxes)
    # scale 256/400 = 0.64: x 151*0.64=96.6 -> 96.6-(320-224)/2 = 48.6; y 59*.64=37.8-16=21.8
    cols = mask.any(dim=0).nonzero().flatten()
    rows = mask.any(dim=1).nonzero().flatten()
    assert abs(int(cols[0]) - 48.6) <= 1 and int(cols[-1]) == 223
    assert (
        abs(int(rows[0]) - 21.8) <= 1 and int(rows[-1]) == 223
    )  # 390*0.64-16 = 233.6: cut by the crop
