"""The benchmark's pluggable names (metrics, box layouts, fills, cell scores) are Registry instances.

Each ``register_*`` function is a thin wrapper over its module's registry and
returns what it registered; unknown names still fail with the old messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dense_readout.errors import DatasetError, InputError
from dense_readout.evaluation.datasets import (
    BOX_LAYOUTS,
    BoxLayout,
    ILSVRCBoxes,
    detect_layout,
    register_box_layout,
)
from dense_readout.evaluation.metrics import (
    ILSVRC_METRICS,
    IMAGENET_A_METRICS,
    METRICS,
    Accumulator,
    GridBatch,
    MetricSuite,
    register_metric,
)
from dense_readout.evaluation.protocol import FILLS, Protocol, register_fill
from dense_readout.evaluation.thresholds import CELL_SCORES, ThresholdSweep, register_cell_score
from dense_readout.preprocessing import Preprocess
from dense_readout.registry import Registry, RegistryOverwriteWarning, UnknownNameError, registries

REGISTRIES = {
    "benchmark metric": (METRICS, [*ILSVRC_METRICS, *IMAGENET_A_METRICS]),
    "box layout": (BOX_LAYOUTS, ["kaggle", "voc", "wsol"]),
    "occlusion fill": (FILLS, ["black", "gray", "mean", "white"]),
    "threshold cell score": (
        CELL_SCORES,
        ["entropy", "feat_fg", "feat_fg_global", "logit_fg", "logit_fg_global", "max_softmax"],
    ),
}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_each_is_a_package_registry_listed_by_registries(kind):
    registry, names = REGISTRIES[kind]
    assert isinstance(registry, Registry)
    assert registries()[kind] is registry
    assert registry.names() == sorted(names)
    with pytest.raises(UnknownNameError, match=f"Unknown {kind} 'nope'; known: "):
        registry.get("nope")


def test_register_metric_returns_the_class_and_feeds_metric_suites():
    class Seen(Accumulator):
        name = "seen_for_test"

        def observe(self, batch):
            ones = torch.ones_like(batch.target)
            return ones, ones, ones.bool()

    try:
        assert register_metric(Seen) is Seen
        assert METRICS.get("seen_for_test") is Seen
        suite = MetricSuite(["seen_for_test"], num_classes=3)
        scores = torch.zeros(2, 3, 1, 1)
        suite.update(
            GridBatch(target=torch.tensor([0, 2]), logits=scores[..., 0, 0], scores=scores)
        )
        assert suite.values() == {"seen_for_test": 100.0}
    finally:
        METRICS.unregister("seen_for_test")
    assert "seen_for_test" not in METRICS
    with pytest.raises(InputError, match="Unknown metrics"):
        MetricSuite(["seen_for_test"], num_classes=3)


def test_register_box_layout_returns_the_layout_and_keeps_detection_order(tmp_path):
    assert [name for name, _ in BOX_LAYOUTS.items()] == ["voc", "kaggle", "wsol"]
    marker = tmp_path / "my_boxes.txt"
    marker.write_text("")
    layout = BoxLayout(
        "marker_for_test",
        lambda root: root / "my_boxes.txt" if (root / "my_boxes.txt").is_file() else None,
        lambda location, synsets: lambda image_id: None,
        "a test layout",
    )
    try:
        assert register_box_layout(layout) is layout
        assert BOX_LAYOUTS.get("marker_for_test") is layout
        assert detect_layout(tmp_path) == "marker_for_test"
    finally:
        BOX_LAYOUTS.unregister("marker_for_test")
    with pytest.raises(DatasetError, match="No box annotations found"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetError, match=r"Unknown box layout 'marker_for_test'; known: \["):
        ILSVRCBoxes(tmp_path, layout="marker_for_test")


def test_register_fill_returns_the_colour_and_gives_float_colours():
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def red(pre):
        return (1, 0, np.float32(0.5))

    try:
        # the two-argument call is the decorator applied at once: both return the function
        assert register_fill("red_for_test", red) is red
        colour = Protocol(pre, fill="red_for_test").fill_colour()
        assert colour == (1.0, 0.0, 0.5) and all(type(c) is float for c in colour)
        assert Protocol(pre, fill="red_for_test").fill_value().tolist() == [2.0, -2.0, 0.0]
    finally:
        FILLS.unregister("red_for_test")
    with pytest.raises(
        InputError, match=r"fill must be one of \['black', 'gray', 'mean', 'white'\]"
    ):
        Protocol(pre, fill="red_for_test").fill_colour()
    assert Protocol(pre).fill_colour() == (0.5, 0.5, 0.5)  # 'mean' is the normalisation's mean


def test_register_cell_score_returns_the_function_and_feeds_the_sweep():
    def everything(scores, features, prototypes):
        return torch.ones(scores.shape[0], *scores.shape[2:])

    try:
        assert register_cell_score("everything_for_test")(everything) is everything
        sweep = ThresholdSweep(["everything_for_test"], taus=[0.5, 1.5])
        scores = torch.zeros(1, 2, 1, 2)
        scores[0, 1] = 1.0
        sweep.update(scores, None, torch.tensor([[[True, False]]]), torch.tensor([1]))
        curves = sweep.curves()["everything_for_test"]
        assert curves["loc"] == [100.0, 0.0] and curves["bg_act"] == [100.0, 0.0]
    finally:
        CELL_SCORES.unregister("everything_for_test")
    with pytest.raises(InputError, match="Unknown threshold scores"):
        ThresholdSweep(["everything_for_test"])


def test_registering_a_name_twice_warns_and_replaces():
    def first(pre):
        return (0.0, 0.0, 0.0)

    def second(pre):
        return (1.0, 1.0, 1.0)

    try:
        register_fill("twice_for_test", first)
        with pytest.warns(RegistryOverwriteWarning, match="twice_for_test"):
            register_fill("twice_for_test", second)
        assert Protocol(Preprocess(), fill="twice_for_test").fill_colour() == (1.0, 1.0, 1.0)
    finally:
        FILLS.unregister("twice_for_test")
