"""Metric accumulators on constructed grids with hand-computable answers, edge cases, merging."""

from __future__ import annotations

import pytest
import torch

from dense_readout.errors import InputError
from dense_readout.evaluation.metrics import (
    FIXED,
    ILSVRC_METRICS,
    IMAGENET_A_METRICS,
    METRICS,
    GridBatch,
    MetricSuite,
    restrict_classes,
)

K = 4


def grid_from_labels(labels):
    """Scores whose per-cell top-1 is ``labels`` (B×h×w ints): one-hot times 10."""
    labels = torch.as_tensor(labels)
    return torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float() * 10


def hand_batch():
    # image 0, class 1: FG = left column (2 cells); cells: [[1, 2], [1, 1]] -> FG both 1; BG has a 1
    # image 1, class 2: FG = top-left only; cells [[3, 2], [2, 2]] -> FG wrong; BG has 2
    # image 2, class 0: FG = everything (no BG cell); cells [[0, 3], [3, 3]] -> Loc 1/4
    # image 3, class 3: FG = nothing (boxes cropped away); cells [[3, 3], [3, 3]]
    labels = [[[1, 2], [1, 1]], [[3, 2], [2, 2]], [[0, 3], [3, 3]], [[3, 3], [3, 3]]]
    fg = torch.tensor(
        [
            [[True, False], [True, False]],
            [[True, False], [False, False]],
            [[True, True], [True, True]],
            [[False, False], [False, False]],
        ]
    )
    scores = grid_from_labels(labels)
    logits = torch.tensor([[0, 5, 1, 0], [0, 1, 0, 5], [5, 0, 0, 4], [0, 4, 0, 5.0]])
    # w/o BG: image 0 -> FG cells [1, 0]; image 1 -> FG cell 2
    wo_bg = grid_from_labels(
        [[[1, 2], [0, 1]], [[2, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]]
    )
    # w/o FG: image 0 BG has no 1; image 1 BG keeps a 2
    wo_fg = grid_from_labels(
        [[[0, 0], [0, 0]], [[0, 2], [0, 0]], [[0, 0], [0, 0]], [[3, 3], [3, 3]]]
    )
    real = torch.zeros(4, K, dtype=torch.bool)
    real[0, [1, 2]] = True  # top-1 1 -> acc; grid has {1, 2} -> rec 2/2
    real[1, [2, 0]] = True  # top-1 3 -> miss; grid has {2, 3} -> rec 1/2
    # image 2: empty set -> skipped
    real[3, [1]] = True  # top-1 3 -> miss; grid {3} -> rec 0
    return GridBatch(
        target=torch.tensor([1, 2, 0, 3]),
        logits=logits,
        scores=scores,
        fg=fg,
        scores_wo_bg=wo_bg,
        scores_wo_fg=wo_fg,
        real=real,
    )


EXPECTED = {
    "top1": 100 * 3 / 4,  # images 0, 2 and 3 (logit argmax 1, 0, 3)
    "top5": 100.0,  # K = 4 < 5
    "fg_det": 100 * 2 / 3,  # images 0, 2 hit; image 1 misses; image 3 has no FG cell
    "loc": 100 * (1 + 0 + 0.25) / 3,
    "loc_cell_pooled": 100 * (2 + 0 + 1) / (2 + 1 + 4),
    "loc_wo_bg": 100 * (0.5 + 1 + 1) / 3,
    "bg_act": 100.0,  # images 0, 1, 3 all have the class in a BG cell; image 2 has no BG
    "bg_act_wo_fg": 100 * 2 / 3,  # image 0 loses it, 1 and 3 keep it
    "real_acc": 100 * 1 / 3,  # image 0 only; image 2 (empty set) skipped
    "real_rec": 100 * (1 + 0.5 + 0) / 3,
}


def test_hand_computed_values():
    suite = MetricSuite(ILSVRC_METRICS, K)
    suite.update(hand_batch())
    values = suite.values()
    for name, value in EXPECTED.items():
        assert values[name] == pytest.approx(value, abs=1e-7), name
    counts = suite.counts()
    assert counts["loc"] == {"used": 3, "skipped": 1}  # no FG cell
    assert counts["bg_act"] == {"used": 3, "skipped": 1}  # no BG cell
    assert counts["real_acc"] == {"used": 3, "skipped": 1}  # empty ReaL set
    assert counts["top1"] == {"used": 4, "skipped": 0}


def test_per_class_values_and_missing_classes_are_nan():
    suite = MetricSuite(["loc", "top1"], K)
    suite.update(hand_batch())
    per_class = suite["loc"].per_class()
    assert (
        per_class[1] == pytest.approx(100.0)
        and per_class[2] == 0
        and per_class[0] == pytest.approx(25.0)
    )
    assert torch.isnan(per_class[3])  # class 3's only image has no FG cell
    assert suite["top1"].per_class().tolist() == [100.0, 100.0, 0.0, 100.0]


def test_unannotated_images_are_skipped_by_box_metrics():
    batch = hand_batch()
    batch.annotated = torch.tensor([True, False, True, True])
    suite = MetricSuite(["fg_det", "bg_act", "top1"], K)
    suite.update(batch)
    assert suite.counts()["fg_det"] == {"used": 2, "skipped": 2}
    assert suite.counts()["top1"]["used"] == 4


def test_missing_inputs_leave_metrics_undefined():
    batch = hand_batch()
    suite = MetricSuite(ILSVRC_METRICS, K)
    suite.update(GridBatch(target=batch.target, logits=batch.logits, scores=batch.scores))
    values = suite.values()
    assert values["top1"] == 75.0
    assert all(values[n] is None for n in ILSVRC_METRICS if n not in ("top1", "top5"))


def test_merge_equals_one_pass_exactly():
    whole, parts = (
        MetricSuite(ILSVRC_METRICS, K),
        [MetricSuite(ILSVRC_METRICS, K) for _ in range(2)],
    )
    batch = hand_batch()
    whole.update(batch)
    for part, rows in zip(parts, (slice(0, 1), slice(1, 4)), strict=False):
        part.update(
            GridBatch(
                target=batch.target[rows],
                logits=batch.logits[rows],
                scores=batch.scores[rows],
                fg=batch.fg[rows],
                scores_wo_bg=batch.scores_wo_bg[rows],
                scores_wo_fg=batch.scores_wo_fg[rows],
                real=batch.real[rows],
            )
        )
    parts[1].merge(parts[0])  # merged in the other order
    assert parts[1].values() == whole.values()
    for a, b in zip(parts[1].tensors(), whole.tensors(), strict=False):
        assert a.dtype == torch.int64 and torch.equal(a, b)


def test_state_round_trip():
    suite = MetricSuite(ILSVRC_METRICS, K)
    suite.update(hand_batch())
    other = MetricSuite(ILSVRC_METRICS, K)
    other.load_state_dict(suite.state_dict())
    assert other.values() == suite.values()


def test_fixed_point_fraction_is_exact_enough():
    # 1/3 per image over 3 images = 33.33..%, error < 1e-8 points
    scores = grid_from_labels([[[1, 0, 0]]] * 3)
    fg = torch.ones(3, 1, 3, dtype=torch.bool)
    suite = MetricSuite(["loc"], K)
    suite.update(
        GridBatch(target=torch.tensor([1, 1, 1]), logits=scores.mean((2, 3)), scores=scores, fg=fg)
    )
    assert abs(suite.values()["loc"] - 100 / 3) < 1e-8
    assert int(suite["loc"].num.sum()) == 3 * ((FIXED + 1) // 3)


def test_imagenet_a_metrics_with_restricted_classes():
    # K = 4, ImageNet-A subset = {1, 2}; class 3 would win without restriction
    scores = torch.zeros(2, K, 1, 2)
    scores[:, 3] = 9
    scores[0, 1, 0, 0], scores[0, 2, 0, 1] = (
        2,
        3,
    )  # image 0 (class 1): cell0 -> 1, cell1 -> 2; mean: 2 wins
    scores[1, 2, 0, 0], scores[1, 1, 0, 1] = (
        1,
        0.5,
    )  # image 1 (class 1): cell0 -> 2, cell1 -> 1(0.5>0)
    restricted = restrict_classes(scores, [1, 2])
    logits = restrict_classes(scores.mean((2, 3)), [1, 2])
    suite = MetricSuite(IMAGENET_A_METRICS, K)
    suite.update(GridBatch(target=torch.tensor([1, 1]), logits=logits, scores=restricted))
    assert suite.values() == {
        "a_acc_top1": 0.0,
        "a_acc_top5": 100.0,
        "a_det_top1": 100.0,
        "a_det_top5": 100.0,
    }


def test_registry_and_validation():
    assert set(ILSVRC_METRICS) <= set(METRICS) and set(IMAGENET_A_METRICS) <= set(METRICS)
    with pytest.raises(InputError, match="Unknown metrics"):
        MetricSuite(["nope"], K)
    batch = hand_batch()
    with pytest.raises(InputError, match="grid_occupancy"):
        GridBatch(
            target=batch.target,
            logits=batch.logits,
            scores=batch.scores,
            fg=torch.ones(4, 3, 3, dtype=torch.bool),
        )
