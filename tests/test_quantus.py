"""dense_readout.quantus.explain with real Quantus metrics, against dense_readout.localization.

Oracle: Quantus' localisation metrics, given our explain_func, score the same maps
as our own localization functions (they are scale-invariant, so Quantus'
normalise-by-max does not matter): PointingGame, RelevanceMassAccuracy,
RelevanceRankAccuracy (ties included: ReLU'd maps have zero plateaus),
AttributionLocalisation, TopKIntersection. Synthetic masks always run; the
ILSVRC sample (../shared/data) runs when present.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch

quantus = pytest.importorskip("quantus")

from dense_readout import localization as loc  # noqa: E402
from dense_readout.errors import InputError  # noqa: E402
from dense_readout.quantus import explain  # noqa: E402

METRICS = {
    "pointing_game": (quantus.PointingGame, loc.pointing_game),
    "relevance_mass": (quantus.RelevanceMassAccuracy, loc.relevance_mass),
    "relevance_rank": (quantus.RelevanceRankAccuracy, loc.relevance_rank),
    "attribution_localisation": (quantus.AttributionLocalisation, loc.attribution_localisation),
    "top_k_intersection": (quantus.TopKIntersection, loc.top_k_intersection),
}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


def _boxes_masks(count: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, 1, size, size), np.float32)
    for mask in masks:
        top, left = rng.integers(0, size // 2, 2)
        height, width = rng.integers(size // 4, size // 2, 2)
        mask[0, top : top + height, left : left + width] = 1
    return masks


def agreement(model, x, y, s, options, names=tuple(METRICS)):
    """``{metric: (quantus scores, our scores)}`` for the same explain_func options."""
    maps = explain(model, x, y, **options)[:, 0]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            make, ours = METRICS[name]
            metric = make(disable_warnings=True)
            theirs = metric(
                model=model,
                x_batch=x,
                y_batch=y,
                s_batch=s,
                explain_func=explain,
                explain_func_kwargs=dict(options),
                device="cpu",
            )
            out[name] = (np.asarray(theirs, dtype=np.float64), ours(maps, s[:, 0]))
    return out


def _assert_agree(results, tolerance=1e-5):
    for name, (theirs, ours) in results.items():
        assert theirs.shape == ours.shape, name
        assert np.array_equal(np.isnan(theirs), np.isnan(ours)), name
        both = ~np.isnan(ours)
        assert np.abs(theirs[both] - ours[both]).max() < tolerance, (name, theirs, ours)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "DenseReadoutAttribution"},
        {"method": "DenseReadoutAttribution", "relu": True},  # zero plateaus: rank ties
        {"method": "dense-readout", "include_bias": False, "interpolate_mode": "nearest"},
        {"method": "DenseReadoutCAM"},
    ],
)
def test_quantus_localisation_metrics_agree_with_ours_on_synthetic_masks(resnet, options):
    x = np.random.default_rng(1).normal(size=(6, 3, 64, 64)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5])
    _assert_agree(agreement(resnet, x, y, _boxes_masks(6, 64), options))


def test_empty_masks_are_nan_in_both(resnet):
    x = np.random.default_rng(2).normal(size=(3, 3, 64, 64)).astype(np.float32)
    s = _boxes_masks(3, 64)
    s[1] = 0
    results = agreement(resnet, x, np.array([1, 2, 3]), s, {}, ("relevance_mass", "relevance_rank"))
    _assert_agree(results)
    assert all(np.isnan(ours[1]) for _, ours in results.values())


def test_rank_ties_are_quantus_ties_on_a_relu_plateau():
    """A 224x224 ReLU'd map whose zeros fill most of the top-|mask|: Quantus' order."""
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(1, 1, 224, 224)), 0).astype(np.float32)
    a[..., 60:, :] = 0
    s = np.zeros((1, 1, 224, 224), np.float32)
    s[..., 60:200, :150] = 1
    metric = quantus.RelevanceRankAccuracy(disable_warnings=True)
    theirs = metric.evaluate_batch(a_batch=a / a.max(), s_batch=s)
    assert loc.relevance_rank(a[:, 0], s[:, 0])[0] == pytest.approx(theirs[0], abs=1e-12)
    # ties="first": equal values in row-major order, whatever numpy's sort does with ties
    # (numpy 1.26 and 2.x order this plateau differently: 0.243 vs 0.348 against Quantus)
    flat, inside = a[0, 0].ravel(), s[0, 0].ravel().astype(bool)
    order = np.lexsort((np.arange(flat.size), -flat))  # by value, then by pixel index
    expected = inside[order[: int(inside.sum())]].mean()
    assert loc.relevance_rank(a[:, 0], s[:, 0], ties="first")[0] == pytest.approx(expected)


def test_a_randomisation_metric_runs_with_it(resnet):
    x = np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.RandomLogit(num_classes=10, disable_warnings=True)
        scores = metric(
            model=resnet,
            x_batch=x,
            y_batch=np.array([1, 2]),
            explain_func=explain,
            explain_func_kwargs={"method": "DenseReadoutAttribution"},
            device="cpu",
        )
    scores = np.asarray(scores)
    assert scores.shape == (2,) and np.isfinite(scores).all() and (np.abs(scores) <= 1).all()


def test_other_methods_go_to_quantus_explain(resnet):
    x = np.random.default_rng(4).normal(size=(2, 3, 64, 64)).astype(np.float32)
    y = np.array([1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.explain(
            resnet, x, y, method="LayerGradCam", gc_layer=resnet.layer4, interpolate=(64, 64)
        )
        ours = explain(resnet, x, y, method="LayerGradCam", layer="layer4", interpolate=(64, 64))
        grid = quantus.explain(resnet, x, y, method="LayerGradCam", gc_layer=resnet.layer4)
    assert np.allclose(theirs, ours)
    # LayerGradCam = (Z_k - b_k) / N on this GAP-linear model (N = 4 cells), before resizing
    cam = explain(resnet, x, y, include_bias=False, resize=False)
    assert np.allclose(cam, 4 * grid, atol=1e-4)


def test_bad_options_are_errors(resnet):
    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(InputError, match="Unknown explain_func_kwargs"):
        explain(resnet, x, np.array([1]), rellu=True)
    with pytest.raises(InputError, match="softmax"):
        explain(resnet, x, np.array([1]), softmax=True)
    with pytest.raises(InputError, match="apply to"):
        explain(resnet, x, np.array([1]), method="Saliency", relu=True)
    with pytest.raises(InputError, match="not a submodule"):
        explain(resnet, x, np.array([1]), layer="layer9")


@pytest.mark.data
def test_quantus_agrees_with_ours_on_ilsvrc_sample(data_root, embedded):
    from dense_readout import load_image
    from dense_readout.evaluation.datasets import ILSVRCBoxes
    from dense_readout.evaluation.protocol import Protocol, paper_preprocess

    dataset = ILSVRCBoxes(data_root / "ilsvrc_val_sample", real=False)
    protocol = Protocol(paper_preprocess(embedded.model, "model"))
    images, masks, labels = [], [], []
    for index in np.linspace(0, len(dataset) - 1, 6).round().astype(int):
        sample = dataset[int(index)]
        tensor, mask = protocol.transform(load_image(sample.path), sample.boxes)
        images.append(tensor.numpy())
        masks.append(mask.numpy()[None].astype(np.float32))
        labels.append(sample.label)
    x, s, y = np.stack(images), np.stack(masks), np.asarray(labels)
    for options in ({}, {"relu": True}):
        _assert_agree(agreement(embedded.model, x, y, s, options))
