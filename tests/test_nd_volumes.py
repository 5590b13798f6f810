"""Loading clips/volumes (frames folder, .npy, NIfTI) and explain_volume's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dense_readout import DenseReadout
from dense_readout.errors import ImageLoadError
from dense_readout.volumes import explain_volume, load_volume, volume_tensor


def test_a_folder_of_frames_is_read_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    for index in (2, 0, 3, 1):  # written out of order; the names sort them
        Image.fromarray(frames[index]).save(tmp_path / f"frame_{index:03d}.png")
    volume = load_volume(tmp_path)
    assert volume.shape == (4, 6, 5, 3)
    assert np.array_equal(np.rint(volume * 255).astype(np.uint8), frames)


def test_npy_and_nifti_give_the_same_depth_first_volume(tmp_path):
    data = np.random.default_rng(1).random((7, 9, 11)).astype(np.float32)  # D×H×W
    np.save(tmp_path / "v.npy", data)
    assert np.array_equal(load_volume(tmp_path / "v.npy")[..., 0], data)
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.moveaxis(data, 0, 2), affine=np.eye(4))  # stored x, y, z
    nibabel.save(image, tmp_path / "v.nii.gz")
    assert np.allclose(load_volume(tmp_path / "v.nii.gz")[..., 0], data)


def test_bad_paths_are_our_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_volume(tmp_path / "missing.npy")
    with pytest.raises(ImageLoadError, match="no image frames"):
        load_volume(tmp_path)


def test_explain_volume_writes_every_grid_frame_and_the_cells_topk(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(1, 6, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()  # fmt: skip
    x = volume_tensor(np.random.default_rng(2).random((10, 12, 12, 1)), size=(9, 11, 11))
    assert tuple(x.shape) == (1, 1, 9, 11, 11)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    names = ["a", "b", "c", "d"]
    written = explain_volume(net, x, tmp_path, names, stem="vol", topk=2)
    result = DenseReadout(net)(x)
    assert len(written["frames"]) == result.grid_size[0] == 4
    assert all(path.stat().st_size > 0 for pair in written["frames"] for path in pair)
    record = json.loads(written["json"].read_text())
    assert record["grid"] == [4, 5, 5] and record["exact"] is True
    _, classes = result.topk(2, probabilities=True)
    t, u, v = 3, 1, 4
    assert [name for name, _ in record["cells_topk"][t][u][v]] == [
        names[int(k)] for k in classes[0, :, t, u, v]
    ]
