"""``dense-readout explain`` on clips and volumes: the files, the page's scores, the errors.

The clips are made here (8 PNG frames, a .npy clip, a NIfTI volume); the models are
torchvision ``mc3_18`` (its grid keeps every input frame: ``t = T``) and MONAI
``resnet10``, saved as state dicts so that the test can rebuild the very model the
command read out and compare the page's scores with ``DenseReadout(model)(x)``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.cli import main
from dense_readout.commands._model_sources import KINETICS_MEAN, KINETICS_STD, MODEL_SOURCES
from dense_readout.page import read_page
from dense_readout.volumes import load_volume, volume_tensor

video = pytest.importorskip("torchvision.models.video")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 frames of 40×48 px as PNGs in a folder, the same clip as .npy, and a checkpoint."""
    root = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 40, 48, 3), dtype=np.uint8)
    (root / "walk").mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(root / "walk" / f"frame_{index:02d}.png")
    np.save(root / "walk.npy", frames.astype(np.float32) / 255)
    torch.manual_seed(0)
    model = video.mc3_18(num_classes=4).eval()
    torch.save(model.state_dict(), root / "mc3.pth")
    return root, model


def explain(*argv: str) -> int:
    return main(["explain", *argv])


def test_torchvision_names_are_every_torchvision_video_builder():
    from torchvision.models import list_models

    names = set(MODEL_SOURCES.get("torchvision").defaults)
    assert names == set(list_models(module=video))


def test_a_frames_folder_gives_page_pngs_json_and_the_readouts_scores(clip, tmp_path, capsys):
    root, model = clip
    out = tmp_path / "out"
    argv = ["--model", "torchvision:mc3_18", "--checkpoint", str(root / "mc3.pth")]
    assert (
        explain(str(root / "walk"), *argv, "--frames", "2", "--size", "32", "--out", str(out)) == 0
    )
    line = capsys.readouterr().out
    assert "2x2x2 cells; exact" in line and "RANDOM" not in line
    assert sorted(p.name for p in out.iterdir()) == [
        "walk.html",
        "walk.json",
        *(f"walk_t{t}_{kind}.png" for t in range(2) for kind in ("heatmap", "labels")),
    ]
    # the same input the command built: the frames in name order, resampled, Kinetics-normalised
    x = volume_tensor(load_volume(root / "walk"), (2, 32, 32), KINETICS_MEAN, KINETICS_STD)
    result = DenseReadout(model)(x)
    page = read_page(out / "walk.html")
    assert page["grid"] == [2, 2, 2] and page["scores"].shape == (4, 2, 2, 2)
    for t in range(2):
        z = result.scores[0, :, t].detach().numpy()
        assert np.all(np.abs(page["scores"][:, t] - z) <= 2.0**-11 * np.abs(z) + 2.0**-24)
    record = json.loads((out / "walk.json").read_text())
    _, classes = result.topk(3)
    assert [name for name, _ in record["cells_topk"][1][0][1]] == [
        str(int(k)) for k in classes[0, :, 1, 0, 1]
    ]


def test_the_page_lists_each_frames_cells_and_pictures(clip, tmp_path):
    root, model = clip
    out = tmp_path / "out"
    argv = ["--checkpoint", str(root / "mc3.pth"), "--no-png", "--out", str(out)]
    assert (
        explain(
            str(root / "walk.npy"),
            "--model",
            "torchvision:mc3_18",
            *argv,
            "--frames",
            "4",
            "--size",
            "32",
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["walk.html", "walk.json"]
    page = read_page(out / "walk.html")
    x = volume_tensor(load_volume(root / "walk.npy"), (4, 32, 32), KINETICS_MEAN, KINETICS_STD)
    result = DenseReadout(model)(x)
    assert page["slices"]["axis"] == "frame" and len(page["slices"]["uris"]) == 4
    assert page["slices"]["input_index"] == [0, 1, 2, 3]
    # cells are listed frame by frame, row by row: cell (t, u, v) at t·h·w + u·w + v
    top = result.scores[0].argmax(0)  # t×h×w
    assert [row[0] for row in page["cells"]["classes"]] == top.flatten().tolist()


def test_a_nifti_volume_with_a_monai_net(tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    pytest.importorskip("monai")
    volume = np.random.default_rng(1).random((20, 28, 24)).astype(np.float32)  # D×H×W
    nibabel.save(nibabel.Nifti1Image(np.moveaxis(volume, 0, 2), np.eye(4)), tmp_path / "b.nii.gz")
    out = tmp_path / "out"
    argv = ["--model", "monai:resnet10", "--random-weights", "--num-classes", "3", "--no-png"]
    assert (
        explain(
            str(tmp_path / "b.nii.gz"), *argv, "--frames", "32", "--size", "32", "--out", str(out)
        )
        == 0
    )
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    page = read_page(out / "b.html")
    assert page["random_weights"] is True and page["slices"]["axis"] == "slice"
    assert page["scores"].shape[:2] == (3, page["grid"][0]) and len(page["grid"]) == 3
    # the exact flag is an oracle: the mean of every cell of every slice is the logit
    logits = np.array(page["logits"])
    assert page["exact"] and np.allclose(page["scores"].mean(axis=(1, 2, 3)), logits, atol=1e-2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["CLIP", "--model", "torchvision:r3d_18"],
            "needs --checkpoint PATH (a local state-dict file) or --random-weights",
        ),
        (["CLIP", "--model", "resnet18", "--random-weights"], "is a 2-D image classifier"),
        (
            ["CLIP", "--model", "torchvision:resnet18", "--random-weights"],
            "unknown torchvision video classifier 'resnet18'",
        ),
        (["EMPTY", "--model", "monai:densenet121", "--random-weights"], "holds no image frames"),
        (
            ["CLIP", "--model", "monai:densenet121", "--random-weights", "--compare", "gradcam"],
            "--compare is for image models",
        ),
    ],
)
def test_bad_input_is_one_line_of_our_own(argv, message, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((4, 8, 8), np.float32))
    (tmp_path / "empty").mkdir()
    paths = {"CLIP": str(tmp_path / "c.npy"), "EMPTY": str(tmp_path / "empty")}
    status = explain(*(paths.get(a, a) for a in argv), "--out", str(tmp_path / "out"))
    errors = capsys.readouterr().err.splitlines()
    assert status in (1, 2) and message in errors[0] and errors[0].startswith("error: ")
    assert not (tmp_path / "out").exists()  # stopped before writing anything
