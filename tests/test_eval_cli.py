"""``dense-readout bench``: exit statuses for bad setups, ImageNet-A end to end."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import test_eval_fixtures as fx
from dense_readout.cli import main
from dense_readout.evaluation._imagenet_a_wnids import IMAGENET_A_WNIDS


def test_bad_setups_exit_2(tmp_path, capsys):
    assert (
        main(["bench", "ilsvrc", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "dataset root not found" in capsys.readouterr().err
    root = fx.build(tmp_path / "data", ("voc",))
    model = fx.save_tiny_model(tmp_path / "tiny.pt")
    common = [
        "--root",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--model",
        "test_resnet",
        "--checkpoint",
        str(model),
    ]
    assert main(["bench", "ilsvrc", *common, "--fill", "purple"]) == 2
    assert "fill must be one of" in capsys.readouterr().err
    assert (
        main(["bench", "ilsvrc", *common, "--model", "resnet18", "--checkpoint", str(model)]) == 2
    )
    assert "does not match" in capsys.readouterr().err
    assert main(["bench", "ilsvrc", *common, "--thresholds", "energy"]) == 2


def test_imagenet_a_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for wnid in IMAGENET_A_WNIDS[5:7]:
        (tmp_path / "a" / wnid).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
            tmp_path / "a" / wnid / "x.jpg"
        )
    model = fx.save_tiny_model(tmp_path / "tiny.pt")
    code = main(
        [
            "bench",
            "imagenet-a",
            "--root",
            str(tmp_path / "a"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "test_resnet",
            "--checkpoint",
            str(model),
            "--crop",
            "96",
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"] == {
        "total": 2,
        "evaluated": 2,
        "skipped": results["images"]["skipped"],
    }
    assert set(results) >= {"a_acc_top1", "a_acc_top5", "a_det_top1", "a_det_top5"}
    assert (
        results["a_det_top5"] >= results["a_det_top1"]
        and results["a_acc_top5"] >= results["a_acc_top1"]
    )
    assert results["settings"]["dataset"]["num_classes"] == 200
    assert "Det. (top-1)" in capsys.readouterr().out
