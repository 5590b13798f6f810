"""A.3 thresholding controls: cell scores, prototypes, sweep semantics, merging."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dense_readout.errors import InputError
from dense_readout.evaluation.thresholds import CELL_SCORES, PrototypeAccumulator, ThresholdSweep


def test_confidence_scores_by_hand():
    scores = torch.zeros(1, 4, 1, 2)
    scores[0, 2, 0, 1] = 100.0  # cell 0 uniform, cell 1 certain
    softmax = CELL_SCORES.get("max_softmax")(scores, None, {})
    entropy = CELL_SCORES.get("entropy")(scores, None, {})
    assert softmax[0, 0, 0] == pytest.approx(0.25) and softmax[0, 0, 1] == pytest.approx(1.0)
    assert entropy[0, 0, 0] == pytest.approx(0.0, abs=1e-6) and entropy[0, 0, 1] == pytest.approx(
        1.0, abs=1e-6
    )
    # two classes at 1/2 each among K=4: H = log 2, confidence 1 - log2/log4 = 0.5
    scores[0, :, 0, 0] = torch.tensor([0.0, 0.0, -1e4, -1e4])
    assert CELL_SCORES.get("entropy")(scores, None, {})[0, 0, 0] == pytest.approx(0.5, abs=1e-5)


def test_prototype_is_the_mean_of_correct_foreground_cells():
    features = torch.tensor(
        [[[[1.0, 3.0]], [[0.0, 2.0]]]]
    )  # B=1, C=2, 1×2 grid: cells (1,0) and (3,2)
    scores = torch.zeros(1, 3, 1, 2)
    scores[0, 1] = torch.tensor([[5.0, 5.0]])  # both cells predict class 1
    accumulator = PrototypeAccumulator(2, 3)
    accumulator.update(scores, features, torch.tensor([[[True, False]]]), torch.tensor([1]))
    prototypes = accumulator.prototypes()
    assert prototypes["features"][1].tolist() == [1.0, 0.0]  # only the FG cell counts
    assert prototypes["present"].tolist() == [False, True, False]
    assert torch.isnan(prototypes["features"][0]).all()
    accumulator.update(scores, features, torch.tensor([[[True, True]]]), torch.tensor([1]))
    assert accumulator.prototypes()["features"][1].tolist() == pytest.approx([5 / 3, 2 / 3])
    assert accumulator.prototypes()["features_global"].tolist() == pytest.approx([5 / 3, 2 / 3])
    wrong = PrototypeAccumulator(2, 3)
    wrong.update(scores, features, torch.tensor([[[True, True]]]), torch.tensor([0]))
    assert wrong.prototypes()["features"] is None


def test_class_prototype_score_uses_the_cells_top1_class():
    # class 0 prototype = (1, 0), class 1 prototype = (0, 1); class 2 has none
    prototypes = {
        "features": torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan")] * 2]),
        "present": torch.tensor([True, True, False]),
        "features_global": torch.tensor([-1.0, 0.0]),
    }
    features = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 1.0, 0.0]]]])  # cells (1,0), (1,1), (1,0)
    scores = torch.zeros(1, 3, 1, 3)
    scores[0, 0, 0, 0] = scores[0, 1, 0, 1] = scores[0, 2, 0, 2] = 1.0  # top-1: 0, 1, 2
    cosine = CELL_SCORES.get("feat_fg")(scores, features, prototypes)[0, 0]
    assert cosine[0] == pytest.approx(1.0) and cosine[1] == pytest.approx(math.sqrt(0.5))
    assert cosine[2] == pytest.approx(-1.0)  # no prototype for class 2: the global one


def test_cosine_scores_need_a_prototype():
    with pytest.raises(InputError, match="prototype"):
        CELL_SCORES.get("logit_fg")(torch.zeros(1, 2, 1, 1), None, {})


def _batch(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 5, 3, 3, generator=generator) * 3
    features = torch.randn(3, 4, 3, 3, generator=generator)
    fg = torch.rand(3, 3, 3, generator=generator) > 0.5
    target = scores.mean((2, 3)).argmax(1)
    return scores, features, fg, target


def test_sweep_is_monotone_and_merges_exactly():
    taus = [0.0, 0.2, 0.4, 0.6, 0.8]
    prototypes = {
        "features": torch.randn(5, 4),
        "logits": torch.randn(5, 5),
        "present": torch.ones(5, dtype=torch.bool),
        "features_global": torch.ones(4),
        "logits_global": torch.ones(5),
    }
    whole = ThresholdSweep(list(CELL_SCORES), taus)
    parts = [ThresholdSweep(list(CELL_SCORES), taus) for _ in range(2)]
    for sweep in (whole, *parts):
        sweep.prototypes = prototypes
    for seed in range(2):
        whole.update(*_batch(seed))
        parts[seed].update(*_batch(seed))
    parts[1].merge(parts[0])
    assert parts[1].curves() == whole.curves()
    for curve in whole.curves().values():
        loc = curve["loc"]
        assert all(a >= b for a, b in itertools.pairwise(loc))
        assert all(
            a >= b for a, b in zip(curve["kept_fg_cells"], curve["kept_fg_cells"][1:], strict=False)
        )


def test_missing_prototype_gives_undefined_curves():
    sweep = ThresholdSweep(["max_softmax", "feat_fg"], [0.0])
    sweep.prototypes = PrototypeAccumulator(4, 5).prototypes()
    sweep.update(*_batch(0))
    curves = sweep.curves()
    assert curves["feat_fg"]["loc"] == [None] and curves["max_softmax"]["loc"][0] is not None


def test_unknown_score_is_refused():
    with pytest.raises(InputError, match="Unknown threshold scores"):
        ThresholdSweep(["energy"])
