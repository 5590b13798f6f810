"""Runner: equals a per-image re-computation, counts faults, refuses foreign checkpoints, ImageNet-A."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import test_eval_fixtures as fx
from dense_readout import DenseReadout, load_image
from dense_readout.errors import DatasetError, DenseReadoutError
from dense_readout.evaluation.batches import BenchmarkItems
from dense_readout.evaluation.datasets import ILSVRCBoxes, ImageNetA
from dense_readout.evaluation.protocol import Protocol, paper_preprocess
from dense_readout.evaluation.runner import RunConfig, run_benchmark
from dense_readout.preprocessing import Preprocess

QUIET = {"progress": False, "workers": 0}


def _oracle(dataset, model, protocol):
    """The metrics recomputed image by image with plain loops (no accumulators, no batching)."""
    readout = DenseReadout(model)
    rows = {
        k: []
        for k in (
            "top1",
            "top5",
            "fg_det",
            "loc",
            "loc_wo_bg",
            "bg_act",
            "bg_act_wo_fg",
            "real_acc",
            "real_rec",
        )
    }
    pooled = [0, 0]
    for index in range(len(dataset)):
        try:
            sample = dataset[index]
            image = load_image(sample.path, exif_transpose=False)
        except Exception:
            continue
        x, mask = protocol.transform(image, sample.boxes)
        fill = protocol.fill_value().view(3, 1, 1)
        variants = [x, torch.where(mask, x, fill), torch.where(mask, fill, x)]
        results = [readout(v[None]) for v in variants]
        labels = [r.labels()[0].numpy() for r in results]
        h, w = labels[0].shape
        pixel = mask.numpy()
        size = pixel.shape[0]  # grids here divide the crop exactly
        fg = np.zeros((h, w), bool)
        for u in range(h):
            for v in range(w):
                fg[u, v] = pixel[
                    u * size // h : (u + 1) * size // h, v * size // w : (v + 1) * size // w
                ].any()
        t = sample.label
        logits = results[0].logits[0]
        rows["top1"].append(int(logits.argmax()) == t)
        rows["top5"].append(t in logits.topk(5).indices.tolist())
        if fg.any():
            rows["fg_det"].append(bool((labels[0][fg] == t).any()))
            rows["loc"].append(float((labels[0][fg] == t).mean()))
            rows["loc_wo_bg"].append(float((labels[1][fg] == t).mean()))
            pooled[0] += int((labels[0][fg] == t).sum())
            pooled[1] += int(fg.sum())
        if (~fg).any():
            rows["bg_act"].append(bool((labels[0][~fg] == t).any()))
            rows["bg_act_wo_fg"].append(bool((labels[2][~fg] == t).any()))
        if sample.real:
            rows["real_acc"].append(int(logits.argmax()) in sample.real)
            present = set(labels[0].ravel().tolist())
            rows["real_rec"].append(len(present & set(sample.real)) / len(sample.real))
    out = {k: 100.0 * float(np.mean(v)) for k, v in rows.items() if v}
    out["loc_cell_pooled"] = 100.0 * pooled[0] / pooled[1]
    out["_used"] = {k: len(v) for k, v in rows.items()}
    return out


@pytest.fixture(scope="module")
def tiny():
    return fx.tiny_model()


def test_runner_equals_per_image_oracle_and_counts_faults(tmp_path, tiny):
    root = fx.build_many(tmp_path / "data", 8)
    (root / "bbox_val" / "ILSVRC2012_val_00000003.xml").unlink()
    (root / "val" / fx.image_name(7)).write_bytes(b"\xff\xd8\xff garbage")
    dataset = ILSVRCBoxes(root)
    protocol = Protocol(paper_preprocess(tiny), fill="gray")
    results = run_benchmark(
        dataset, tiny, protocol, tmp_path / "out", RunConfig(batch_size=3, **QUIET)
    )
    oracle = _oracle(dataset, tiny, protocol)
    for name, value in oracle.items():
        if not name.startswith("_"):
            assert results[name] == pytest.approx(value, abs=1e-6), name
    assert results["images"]["total"] == 8 and results["images"]["evaluated"] == 6
    assert results["images"]["skipped"]["missing_annotation"] == 1
    assert results["images"]["skipped"]["corrupt_image"] == 1
    assert results["counts"]["top1"] == {"used": 6, "skipped": 2}
    assert results["counts"]["bg_act"]["used"] == oracle["_used"]["bg_act"]
    assert results["counts"]["real_acc"]["used"] == oracle["_used"]["real_acc"]
    for name in ("results.json", "results.md", "per_class.csv", "thresholds.csv", "thresholds.png"):
        assert (tmp_path / "out" / name).is_file(), name
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["preprocessing"]["fill"] == "gray" and saved["version"]


def test_threshold_sweep_below_every_score_reproduces_loc_and_bg_act(tmp_path, tiny):
    root = fx.build_many(tmp_path / "data", 6)
    protocol = Protocol(paper_preprocess(tiny))
    config = RunConfig(batch_size=4, taus=(-1.0, 0.5, 1.01), **QUIET)
    results = run_benchmark(ILSVRCBoxes(root), tiny, protocol, tmp_path / "out", config)
    for method, curve in results["thresholds"].items():
        assert curve["loc"][0] == pytest.approx(results["loc"], abs=1e-6), method
        assert curve["bg_act"][0] == pytest.approx(results["bg_act"], abs=1e-9), method
        assert curve["loc"][2] == 0.0 and curve["bg_act"][2] == 0.0  # nothing kept above 1
        assert curve["loc"][1] <= curve["loc"][0]


def test_edge_cases_are_reported(tmp_path, tiny):
    root = fx.build(tmp_path / "data", ("voc",))  # item 2 covers everything, item 4 is cropped away
    results = run_benchmark(
        ILSVRCBoxes(root),
        tiny,
        Protocol(paper_preprocess(tiny)),
        tmp_path / "out",
        RunConfig(batch_size=6, thresholds=(), **QUIET),
    )
    assert results["edge_cases"]["no_fg_cell"] == 1
    assert results["edge_cases"]["no_bg_cell"] >= 1
    assert results["edge_cases"]["empty_real_set"] == 1
    assert results["counts"]["loc"] == {"used": 5, "skipped": 1}
    assert results["counts"]["real_acc"] == {"used": 5, "skipped": 1}


def test_on_error_stop_raises_with_the_item(tmp_path, tiny):
    root = fx.build(tmp_path / "data", ("voc",))
    (root / "bbox_val" / "ILSVRC2012_val_00000002.xml").unlink()
    with pytest.raises(DatasetError, match="ILSVRC2012_val_00000002.*missing_annotation"):
        run_benchmark(
            ILSVRCBoxes(root),
            tiny,
            Protocol(paper_preprocess(tiny)),
            tmp_path / "out",
            RunConfig(on_error="stop", thresholds=(), **QUIET),
        )


def test_checkpoint_of_other_settings_is_refused(tmp_path, tiny):
    root = fx.build(tmp_path / "data", ("voc",))
    protocol = Protocol(paper_preprocess(tiny))
    run_benchmark(
        ILSVRCBoxes(root), tiny, protocol, tmp_path / "out", RunConfig(thresholds=(), **QUIET)
    )
    with pytest.raises(DenseReadoutError, match="other settings"):
        run_benchmark(
            ILSVRCBoxes(root),
            tiny,
            Protocol(protocol.preprocess, fill="black"),
            tmp_path / "out",
            RunConfig(thresholds=(), **QUIET),
        )


def test_imagenet_a_restricts_logits_to_its_classes(tmp_path, tiny):
    from dense_readout.evaluation._imagenet_a_wnids import IMAGENET_A_WNIDS
    from dense_readout.imagenet import imagenet_wnids

    rng = np.random.default_rng(0)
    wnids = IMAGENET_A_WNIDS[:3]
    for wnid in wnids:
        (tmp_path / "a" / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)).save(
                tmp_path / "a" / wnid / f"{i}.jpg"
            )
    dataset = ImageNetA(tmp_path / "a")
    with (
        torch.no_grad()
    ):  # make a non-ImageNet-A class (0 = tench) win every unrestricted prediction
        tiny_a = fx.tiny_model()
        tiny_a.fc.bias.add_(
            torch.randn(1000, generator=torch.Generator().manual_seed(0))
        )  # no ties
        tiny_a.fc.bias[0] = 1000.0
    protocol = Protocol(paper_preprocess(tiny_a))
    results = run_benchmark(
        dataset,
        tiny_a,
        protocol,
        tmp_path / "out",
        RunConfig(batch_size=4, **QUIET),
        kind="imagenet-a",
    )
    keep = torch.tensor(dataset.class_indices)
    readout = DenseReadout(tiny_a)
    hits = {"a_acc_top1": [], "a_acc_top5": [], "a_det_top1": [], "a_det_top5": []}
    for sample in (dataset[i] for i in range(len(dataset))):
        result = readout(protocol.preprocess(load_image(sample.path, exif_transpose=False))[None])
        logits, scores = result.logits[0, keep], result.scores[0, keep]
        t = int((keep == sample.label).nonzero())
        hits["a_acc_top1"].append(int(logits.argmax()) == t)
        hits["a_acc_top5"].append(t in logits.topk(5).indices.tolist())
        hits["a_det_top1"].append(bool((scores.argmax(0) == t).any()))
        hits["a_det_top5"].append(bool((scores.topk(5, dim=0).indices == t).any()))
    for name, values in hits.items():
        assert results[name] == pytest.approx(100 * np.mean(values)), name
    assert sample.label == imagenet_wnids().index(wnids[-1])
    assert "top-1" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_exif_oriented_file_keeps_its_mask_on_the_boxed_pixels(tmp_path, orientation):
    """Orientations 5-8 swap width and height; the boxes refer to the stored frame, and so must the pixels."""
    root = tmp_path / "data"
    (root / "val").mkdir(parents=True)
    (root / "bbox_val").mkdir()
    stored = np.zeros((40, 80, 3), np.uint8)  # stored frame: 80 wide, 40 high
    stored[10:30, 30:50] = 255  # the boxed object, white on black
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(root / "val" / fx.image_name(1), exif=exif, quality=95)
    (root / "bbox_val" / "ILSVRC2012_val_00000001.xml").write_text(
        fx.voc_xml(1, (80, 40), 3, [[30, 10, 49, 29]])
    )
    dataset = ILSVRCBoxes(root)
    assert dataset[0].image_size == (80, 40)  # the header's size: the stored frame
    assert load_image(dataset[0].path).size == (40, 80)  # what an upright viewer shows
    protocol = Protocol(Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3))  # white 1, black -1
    item = BenchmarkItems(dataset, protocol, [0], num_classes=1000, boxes=True)[0]
    x, mask = item["x"], item["mask"]
    assert item["status"] == "" and 1000 < int(mask.sum()) < mask.numel() // 2
    assert float(x[:, mask].mean()) > 0.9  # inside the mask: the white object
    assert float(x[:, ~mask].mean()) < -0.9  # outside: the black background


def test_split_modules_keep_the_runner_names_importable():
    from dense_readout.evaluation import batches, distributed, runner, state

    assert runner.SKIP_REASONS is state.SKIP_REASONS
    assert runner.BenchmarkState is state.BenchmarkState
    assert runner.distributed_context is distributed.distributed_context
    assert all(hasattr(runner, name) for name in runner.__all__)
    assert {"RunConfig", "run_benchmark"} <= set(runner.__all__)
    assert batches.BenchmarkItems.__module__ == "dense_readout.evaluation.batches"
