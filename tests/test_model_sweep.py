"""The model sweep (benchmarks/model_sweep.py): its JSON, the docs table made from it,
and a representative subset swept here (one model per verdict)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("model_sweep", ROOT / "benchmarks/model_sweep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recorded(sweep):
    return json.loads(sweep.RESULTS.read_text())


def test_docs_table_is_the_one_generated_from_the_json(sweep, recorded):
    text = sweep.DOCS.read_text()
    table = text.split(sweep.BEGIN)[1].split(sweep.END)[0].strip()
    assert table == sweep.docs_table(recorded)
    assert recorded["commands"] and all(c.startswith("python ") for c in recorded["commands"])


def test_recorded_sweep_has_no_raw_exception_and_every_refusal_a_reason(recorded):
    models = recorded["models"]
    assert models
    raw = {name: r["reason"] for name, r in models.items() if r["verdict"] == "raw exception"}
    assert raw == {}
    for name, record in models.items():
        if record["verdict"] in ("refused", "not exact", "skipped"):
            assert len(record["reason"]) > 10, name


def test_a_representative_subset_gets_the_expected_verdicts(sweep):
    import timm
    from torchvision.models.video import r3d_18

    def create(name):
        return lambda: timm.create_model(name, pretrained=False, num_classes=5)

    cases = {
        "resnet18": (create("resnet18"), "exact"),
        "convnext_atto": (create("convnext_atto"), "not exact"),  # LayerNorm in the head
        "crossvit_tiny_240": (create("crossvit_tiny_240"), "refused"),
        "r3d_18": (lambda: r3d_18(num_classes=5), "exact"),
    }
    for name, (build, verdict) in cases.items():
        record = sweep.sweep_one(build)
        assert record["verdict"] == verdict, (name, record)
        assert (record["reason"] == "") == (verdict == "exact"), (name, record)
    assert sweep.sweep_one(create("resnet18"), max_params=1e6)["verdict"] == "skipped"
