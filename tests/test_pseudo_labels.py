"""Pseudo-labels: the seed recipe and mIoU against plain-loop computations, PNGs, the store run.

Oracles: per-pixel loops written from the definitions (IRN's seed step; IoU = TP /
(TP + FP + FN) per class, mean over classes that occur, void not scored), the sweep =
separate runs at each threshold, and a store-level run scored against label PNGs whose
mIoU is recomputed from the written PNGs by the loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.errors import InputError
from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
from dense_readout.preprocessing import Preprocess
from dense_readout.pseudo_labels import (
    IGNORE,
    ConfusionMatrix,
    PseudoLabelConfig,
    ThresholdSweep,
    image_classes,
    make_pseudo_labels,
    read_label_png,
    save_label_png,
    seed_labels,
)


def loop_miou(pairs, num_labels: int) -> tuple[float, list[float]]:
    """mIoU by plain loops over every pixel of every (prediction, truth) pair."""
    tp = [0] * num_labels
    fp = [0] * num_labels
    fn = [0] * num_labels
    for prediction, truth in pairs:
        flat_prediction = np.asarray(prediction).ravel().tolist()
        for p, t in zip(flat_prediction, np.asarray(truth).ravel().tolist(), strict=True):
            if t == IGNORE or p == IGNORE:
                continue
            if p == t:
                tp[t] += 1
            else:
                fp[p] += 1
                fn[t] += 1
    ious = [
        tp[k] / (tp[k] + fp[k] + fn[k]) if tp[k] + fp[k] + fn[k] else math.nan
        for k in range(num_labels)
    ]
    present = [v for v in ious if not math.isnan(v)]
    return sum(present) / len(present), ious


def loop_seeds(maps: np.ndarray, classes: list[int], threshold: float) -> np.ndarray:
    """IRN's seed step pixel by pixel: ReLU, divide by each map's max (+1e-5), bg plane, argmax."""
    count, height, width = maps.shape
    peaks = [max(max(float(v), 0.0) for v in maps[m].ravel()) for m in range(count)]
    out = np.zeros((height, width), np.int64)
    for y in range(height):
        for x in range(width):
            best, label = threshold, 0
            for m in range(count):
                value = max(float(maps[m, y, x]), 0.0) / (peaks[m] + 1e-5)
                if value > best:
                    best, label = value, 1 + classes[m]
            out[y, x] = label
    return out


def test_miou_equals_plain_loops_on_a_synthetic_case():
    rng = np.random.default_rng(0)
    num_labels = 5
    pairs = []
    for _ in range(4):
        truth = rng.integers(0, num_labels, (13, 11))
        truth[rng.random(truth.shape) < 0.1] = IGNORE
        guess = rng.integers(0, num_labels, truth.shape)
        prediction = np.where(rng.random(truth.shape) < 0.6, truth, guess)
        prediction[prediction == IGNORE] = guess[prediction == IGNORE]
        prediction[rng.random(truth.shape) < 0.05] = IGNORE  # outside the crop
        pairs.append((prediction, truth))
    pairs[0][1][pairs[0][1] == 4] = 0  # label 4 occurs in a few images only
    matrix = ConfusionMatrix(num_labels)
    for prediction, truth in pairs:
        matrix.update(prediction, truth)
    expected, ious = loop_miou(pairs, num_labels)
    assert matrix.miou() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(matrix.iou(), ious, rtol=1e-12)
    scored = sum(int(((t != IGNORE) & (p != IGNORE)).sum()) for p, t in pairs)
    assert matrix.counts.sum() == scored
    assert matrix.unscored == sum(int(((t != IGNORE) & (p == IGNORE)).sum()) for p, t in pairs)


def test_absent_label_is_not_averaged():
    matrix = ConfusionMatrix(4)
    matrix.update(np.array([[0, 1]]), np.array([[0, 1]]))
    assert np.isnan(matrix.iou()[2:]).all() and matrix.miou() == 1.0


def test_seed_recipe_equals_plain_loops():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 9, 7)).astype(np.float32)
    maps[2] = -np.abs(maps[2])  # a class with no positive evidence stays below background
    classes = [4, 0, 11]
    for threshold in (0.0, 0.15, 0.5, 0.9):
        np.testing.assert_array_equal(
            seed_labels(maps, classes, threshold), loop_seeds(maps, classes, threshold)
        )
    with_nan = maps.copy()
    with_nan[:, 0, :] = np.nan  # outside the crop
    labels = seed_labels(with_nan, classes, 0.15)
    assert (labels[0] == IGNORE).all() and (labels[1:] != IGNORE).all()
    with pytest.raises(InputError, match="one class per map"):
        seed_labels(maps, [1, 2], 0.15)


def test_sweep_equals_separate_runs_and_best_is_the_maximum():
    rng = np.random.default_rng(2)
    images = [(rng.normal(size=(2, 8, 8)), [1, 3], rng.integers(0, 5, (8, 8))) for _ in range(3)]
    thresholds = (0.1, 0.3, 0.5, 0.7)
    sweep = ThresholdSweep(thresholds, 5)
    separate = []
    from dense_readout.pseudo_labels import normalise_maps

    for threshold in thresholds:
        matrix = ConfusionMatrix(5)
        for maps, classes, truth in images:
            matrix.update(seed_labels(maps, classes, threshold), truth)
        separate.append(matrix.miou())
    for maps, classes, truth in images:
        sweep.update(normalise_maps(maps), classes, truth)
    assert [c["miou"] for c in sweep.curve()] == pytest.approx(separate, rel=1e-12)
    assert sweep.best()["miou"] == max(separate)


def test_label_png_round_trip(tmp_path):
    small = np.array([[0, 1, 20], [IGNORE, 3, 0]])
    assert (read_label_png(save_label_png(tmp_path / "voc.png", small)) == small).all()
    assert Image.open(tmp_path / "voc.png").getpalette()[3:6] == [128, 0, 0]
    wide = np.array([[0, 1000], [IGNORE, 301]])  # ImageNet: label 1 + 999
    assert (read_label_png(save_label_png(tmp_path / "wide.png", wide)) == wide).all()


def test_image_classes():
    logits = np.array([0.0, 5.0, 4.9, -1.0])
    assert image_classes("gt", logits, (3,)) == [3]
    assert image_classes("top:2", logits, ()) == [1, 2]
    assert image_classes("prob:0.4", logits, ()) == [1, 2]
    assert image_classes("prob:0.99", logits, ()) == [1]  # at least the top-1
    with pytest.raises(InputError, match="gt, top:N or prob:P"):
        image_classes("best", logits, ())


def test_store_pseudo_labels_scored_against_pngs_equal_the_loops(tmp_path):
    rng = np.random.default_rng(3)
    root, truth_dir = tmp_path / "images", tmp_path / "truth"
    root.mkdir()
    truth_dir.mkdir()
    for k in range(4):
        size = (72 + 8 * k, 64)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            root / f"im{k}.png"
        )
        truth = rng.integers(0, 4, (size[1], size[0]))
        truth[:5] = IGNORE
        save_label_png(truth_dir / f"im{k}.png", truth)
    torch.manual_seed(0)
    readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
    config = ExportConfig(dtype="float32", progress=False)
    export_dataset(
        open_source(root), tmp_path / "store", readout, Preprocess(resize=64, crop=64), config
    )
    store = open_store(tmp_path / "store")
    summary = make_pseudo_labels(
        store,
        tmp_path / "labels",
        PseudoLabelConfig(bg_threshold=0.3, classes="top:2", sweep=(0.2, 0.3)),
        truth=f"folder:{truth_dir}",
        progress=False,
    )
    pairs = [
        (
            read_label_png(tmp_path / "labels" / f"im{k}.png"),
            read_label_png(truth_dir / f"im{k}.png"),
        )
        for k in range(4)
    ]
    assert all(p.shape == t.shape for p, t in pairs)
    assert all((p[:, : (p.shape[1] - 64) // 2] == IGNORE).all() for p, _ in pairs[1:])
    expected, _ = loop_miou(pairs, 4)
    evaluation = summary["evaluation"]
    assert evaluation["miou"] == pytest.approx(expected, rel=1e-12)
    assert evaluation["sweep"][1]["miou"] == pytest.approx(expected, rel=1e-12)  # same 0.3
    assert summary["counts"]["labelled"] == 4 and summary["counts"]["no_truth"] == 0
