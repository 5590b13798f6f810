"""The comparative benchmark (``dense-readout compare``): identities, chance levels, sanity, Quantus.

Oracles: on a GAP-linear model with a zero head bias the readout, CAM and Grad-CAM
maps are the same map (up to a positive factor), so every score must coincide;
insertion of ``m`` is deletion of ``−m`` read backwards (same baseline), so a map
drawn at random scores the same on both in expectation; an edge detector never
reads the weights, so the randomisation cascade leaves it at ρ = 1 while the
readout's maps decorrelate; our batched deletion curve equals Quantus'
``PixelFlipping`` (one forward per step) on the same maps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import test_eval_fixtures as fx
from dense_readout.cli import main
from dense_readout.compare.bench.perturbation import curve_auc, perturbation_curves
from dense_readout.compare.bench.sanity import cascade_units, spearman_maps

TIMING = {"method_seconds", "forward_seconds", "calls_all_classes"}


def bench_args(root: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        "compare",
        str(root),
        "--out",
        str(out),
        "--model",
        "test_resnet",
        "--checkpoint",
        str(model),
        "--crop",
        "64",
        "--batch-size",
        "2",
        "--steps",
        "4",
        "--forward-batch",
        "16",
        "--threshold-step",
        "0.05",
        "--mprt-levels",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


def rows_of(out: Path) -> list[dict]:
    """Every record (complete batches), timing fields removed, sorted by (position, method)."""
    rows = []
    for path in sorted((out / "records").glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "method" in entry:
                rows.append({k: v for k, v in entry.items() if k not in TIMING})
    return sorted(rows, key=lambda row: (row["position"], row["method"]))


def quality(results: dict) -> dict:
    """results.json without the cost numbers (timings differ from run to run)."""
    cost = {"seconds_per_map", "seconds_all_classes", "forward_ratio_per_map"}
    cost |= {"forward_ratio_all_classes"}
    return {
        name: {k: v for k, v in scores.items() if k not in cost}
        for name, scores in results["methods"].items()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare-bench")
    root = fx.build_many(base / "data", 8)
    model = fx.tiny_model()
    with torch.no_grad():
        model.fc.bias.zero_()  # GAP-linear with b = 0: readout = CAM = N × Grad-CAM
    torch.save(model.state_dict(), base / "tiny.pt")
    return base, root, base / "tiny.pt"


@pytest.fixture(scope="module")
def gap_run(data):
    base, root, model = data
    out = base / "gap"
    args = bench_args(root, out, model, "--methods", "dense-readout,cam,gradcam,edge-detector")
    assert main([*args, "--subset", "4", "--road-limit", "2"]) == 0
    return out


def test_gap_linear_readout_cam_gradcam_scores_coincide(gap_run):
    results = json.loads((gap_run / "results.json").read_text())
    scores = quality(results)
    keys = set(scores["cam"])
    assert {"pointing_game", "maxboxacc_v2", "deletion_auc", "insertion_auc"} <= keys
    assert {"road_combined", "mprt_spearman", "random_logit_ssim"} <= keys
    for name in ("dense-readout", "gradcam"):
        for key in keys - {"loc"}:  # Loc. needs all-class maps: Grad-CAM has none
            assert scores[name][key] == pytest.approx(scores["cam"][key], abs=1e-5), (name, key)
    assert scores["dense-readout"]["loc"] == scores["cam"]["loc"]  # b = 0: same argmax
    # and per image: every record of the three methods carries the same numbers
    by_image: dict[tuple, dict] = {}
    for row in rows_of(gap_run):
        by_image.setdefault((row["position"], row["method"]), row)
    for (position, method), row in by_image.items():
        if method in ("dense-readout", "gradcam"):
            other = by_image[(position, "cam")]
            for key in ("pointing_game", "energy_pointing_game", "deletion_auc"):
                if key in row:
                    assert row[key] == pytest.approx(other[key], abs=1e-5)


def test_reports_and_cost_columns(gap_run):
    results = json.loads((gap_run / "results.json").read_text())
    cam, edge = results["methods"]["cam"], results["methods"]["edge-detector"]
    # all K classes: the readout is one call, Grad-CAM one call per class
    assert cam["seconds_all_classes"] == pytest.approx(cam["seconds_per_map"])
    grad = results["methods"]["gradcam"]
    # results.json keeps seconds to 6 decimals: K × a rounded per-map time is off by ≤ K · 5e-7
    assert grad["seconds_all_classes"] == pytest.approx(1000 * grad["seconds_per_map"], abs=5e-4)
    assert edge["forward_ratio_all_classes"] == pytest.approx(edge["forward_ratio_per_map"])
    low, high = results["ci"]["cam"]["pointing_game"]
    assert low <= cam["pointing_game"] <= high
    positions = sorted({row["position"] for row in rows_of(gap_run)})
    skipped = [item["position"] for item in results["skipped"]]
    assert sorted(positions + skipped) == list(range(8))  # every image scored or skipped
    assert results["images"]["cam"]["pointing_game"] == len(positions) >= 4
    assert results["images"]["cam"]["deletion_auc"] == sum(p < 4 for p in positions)  # --subset
    assert results["images"]["cam"]["road_combined"] == sum(p < 2 for p in positions)
    table = (gap_run / "results.md").read_text()
    assert table.count("\n| ") == 4  # one row per method (after the header)
    loc, subset, road = len(positions), sum(p < 4 for p in positions), sum(p < 2 for p in positions)
    assert f"| cam | {loc} / {subset} / {road} |" in table  # all / subset / ROAD, in that order
    csv_lines = (gap_run / "per_image.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(positions) * 4
    assert len(results["cascade"]["cam"]) == 2


def test_edge_detector_passes_mprt_at_one_readout_drops(gap_run):
    results = json.loads((gap_run / "results.json").read_text())
    assert results["cascade"]["edge-detector"] == pytest.approx([1.0, 1.0], abs=1e-12)
    # the readout's map moves at every level (the tiny model is random-init itself, so
    # its features share one dominant direction and |maps| stay partly correlated; on
    # the trained Lite0 the readout falls to about 0, see docs/compare.md)
    assert all(rho < 0.95 for rho in results["cascade"]["dense-readout"])
    assert results["methods"]["dense-readout"]["mprt_spearman"] < 0.95
    assert results["methods"]["edge-detector"]["random_logit_ssim"] == pytest.approx(1.0)


class _Tiny(nn.Module):
    """A one-channel conv classifier (no channel ties for Quantus' per-feature order)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_insertion_is_deletion_of_the_negated_map_reversed():
    model = _Tiny().double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    base = torch.zeros_like(x)
    maps, targets = torch.randn(3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    insertion = perturbation_curves(model, x, base, maps, targets, steps=8, mode="insertion")
    deletion = perturbation_curves(model, x, base, -maps, targets, steps=8, mode="deletion")
    assert torch.allclose(insertion, deletion.flip(1), rtol=0, atol=1e-12)
    assert torch.allclose(curve_auc(insertion), curve_auc(deletion), rtol=0, atol=1e-12)


def test_random_maps_score_at_chance_on_deletion_vs_insertion():
    model = _Tiny().double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=generator)
    base, targets = torch.zeros_like(x), torch.tensor([0, 1, 2, 0])
    gaps = []
    for _ in range(100):
        maps = torch.rand(4, 8, 8, dtype=torch.float64, generator=generator)
        ins = curve_auc(perturbation_curves(model, x, base, maps, targets, 8, "insertion"))
        dele = curve_auc(perturbation_curves(model, x, base, maps, targets, 8, "deletion"))
        gaps.append(ins - dele)
    gaps_t = torch.stack(gaps).flatten()
    standard_error = float(gaps_t.std()) / math.sqrt(len(gaps_t))
    assert abs(float(gaps_t.mean())) < 4 * standard_error  # zero in expectation
    # and a map that follows the model is far from chance: its gradient × input
    x_grad = x.clone().requires_grad_(True)
    model(x_grad).gather(1, targets.view(-1, 1)).sum().backward()
    saliency = (x_grad.grad * x)[:, 0].detach()
    ins = curve_auc(perturbation_curves(model, x, base, saliency, targets, 8, "insertion"))
    dele = curve_auc(perturbation_curves(model, x, base, saliency, targets, 8, "deletion"))
    assert float((ins - dele).mean()) > 4 * standard_error


def test_deletion_curve_equals_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = _Tiny().eval()
    x = torch.randn(3, 1, 8, 8)
    maps, targets = torch.rand(3, 8, 8), torch.tensor([0, 1, 2])
    low = x.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)  # Quantus' "black": the image min
    ours = perturbation_curves(model, x, low.expand_as(x), maps, targets, steps=8)
    metric = quantus.PixelFlipping(
        features_in_step=8, perturb_baseline="black", normalise=False, disable_warnings=True
    )
    theirs = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps.unsqueeze(1).numpy(),
        device="cpu",
        softmax=True,
    )
    assert np.allclose(ours[:, 1:].numpy(), np.asarray(theirs), atol=1e-6)


def test_spearman_of_the_cascade_units_and_identity():
    import timm

    model = timm.create_model("test_resnet", num_classes=5)
    assert cascade_units(model)[0] == "fc"
    maps = torch.rand(2, 6, 6)
    assert spearman_maps(maps, maps) == pytest.approx([1.0, 1.0])
    assert math.isnan(spearman_maps(torch.ones(1, 3, 3), maps[:1, :3, :3])[0])


def test_road_imputation_equals_quantus_and_scores_are_seeded():
    quantus_perturb = pytest.importorskip("quantus.functions.perturb_func")
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from dense_readout.compare.bench.perturbation import road_scores

    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, 12, 10, generator=generator, dtype=torch.float64)
    keep = torch.rand(12, 10, generator=generator) > 0.4  # 0 = impute
    theirs = quantus_perturb.noisy_linear_imputation(
        image.numpy(), indices=np.flatnonzero(~keep.numpy()), noise=0.0
    )
    ours = NoisyLinearImputer(noise=0.0)(image.float(), keep.float())
    assert np.allclose(ours.numpy(), theirs, atol=1e-5)  # float32 solve vs float64
    assert torch.equal(ours[:, keep], image.float()[:, keep])  # kept pixels untouched
    model = _Tiny().eval()
    x, maps = torch.rand(2, 1, 12, 10), torch.rand(2, 12, 10)
    state = torch.random.get_rng_state()
    first = road_scores(model, x, maps, torch.tensor([0, 1]), (20, 80), seed=5)
    second = road_scores(model, x, maps, torch.tensor([0, 1]), (20, 80), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is restored
    for key in ("road_morf", "road_lerf", "road_combined"):
        assert np.array_equal(first[key], second[key])
    combined = (first["road_lerf"] - first["road_morf"]) / 2
    assert np.allclose(first["road_combined"], combined)


def test_threads_bound_numpy_blas_pools_too():
    """--threads limits NumPy's BLAS pools during the run (EigenCAM's SVD runs there)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    from dense_readout.compare.bench.runner import native_thread_limit

    before = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
    with native_thread_limit(1):
        inside = threadpoolctl.threadpool_info()
        assert inside and all(pool["num_threads"] == 1 for pool in inside)
    after = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
    assert after == before


def test_rank_agreement_of_the_second_model_table_matches_scipy():
    """benchmarks/compare_lite0's tie-aware Spearman equals scipy's on tied data."""
    stats = pytest.importorskip("scipy.stats")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from compare_lite0 import _spearman

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 4, 10).astype(float)  # many ties, like readout = CAM = Grad-CAM
        b = a + rng.integers(0, 3, 10)
        if np.ptp(a) and np.ptp(b):
            assert abs(_spearman(list(a), list(b)) - stats.spearmanr(a, b).statistic) < 1e-12
