"""Reports of a benchmark run: results.json, a markdown table, per-class CSV, threshold plot.

Files written by :func:`write_reports` into the output directory:

* ``results.json``: every metric in percent (``top1, top5, fg_det, loc,
  loc_cell_pooled, loc_wo_bg, bg_act, bg_act_wo_fg, real_acc, real_rec`` for
  ILSVRC; ``a_acc_top1, a_acc_top5, a_det_top1, a_det_top5`` for ImageNet-A),
  per-metric counts of images used and skipped, skip reasons, edge cases, the
  threshold curves, model, preprocessing, package version and speed;
* ``results.md``: the paper's table layout (Table 1 / Table 2);
* ``per_class.csv``: the metrics per evaluation class and ``delta_bg_act`` =
  BG Act. (w/o FG) − BG Act. (paper A.6);
* ``thresholds.csv`` and ``thresholds.png``: Loc. and BG Act. against τ (A.3).

Example:
    >>> from dense_readout.evaluation.reports import markdown_table
    >>> print(markdown_table({"top1": 80.0, "settings": {"kind": "imagenet-a"}, "a_acc_top1": 4.0,
    ...     "a_det_top1": 20.0, "a_acc_top5": 10.0, "a_det_top5": 30.0}, "m").splitlines()[2])
    | m | 4.0 | 20.0 | 10.0 | 30.0 |
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from ..imagenet import imagenet_class_names, imagenet_wnids

__all__ = ["ILSVRC_COLUMNS", "IMAGENET_A_COLUMNS", "markdown_table", "write_reports"]

ILSVRC_COLUMNS = [
    ("top1", "Top-1"),
    ("top5", "Top-5"),
    ("fg_det", "FG Det."),
    ("loc", "Loc."),
    ("loc_wo_bg", "Loc. (w/o BG)"),
    ("bg_act", "BG Act."),
    ("bg_act_wo_fg", "BG Act. (w/o FG)"),
    ("real_acc", "ReaL Acc."),
    ("real_rec", "ReaL Rec."),
]
IMAGENET_A_COLUMNS = [
    ("a_acc_top1", "Acc. (top-1)"),
    ("a_det_top1", "Det. (top-1)"),
    ("a_acc_top5", "Acc. (top-5)"),
    ("a_det_top5", "Det. (top-5)"),
]


def _fmt(value: float | None) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
    )


def markdown_table(results: dict, model: str) -> str:
    """The paper's table layout for one model; ILSVRC shows Loc. as ``per-image (cell-pooled)``.

    Example:
        >>> from dense_readout.evaluation.reports import markdown_table
        >>> table = markdown_table({"top1": 80.0, "settings": {"kind": "imagenet-a"}, "a_acc_top1": 4.0,
        ...     "a_det_top1": 20.0, "a_acc_top5": 10.0, "a_det_top5": 30.0}, "my-model")
        >>> print(table.splitlines()[2])
        | my-model | 4.0 | 20.0 | 10.0 | 30.0 |
    """
    kind = results.get("settings", {}).get("kind", "ilsvrc")
    columns = IMAGENET_A_COLUMNS if kind == "imagenet-a" else ILSVRC_COLUMNS
    header = "| Model | " + " | ".join(title for _, title in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    cells = []
    for key, _ in columns:
        text = _fmt(results.get(key))
        if key == "loc" and results.get("loc_cell_pooled") is not None:
            text += f" ({_fmt(results['loc_cell_pooled'])})"
        cells.append(text)
    return "\n".join([header, rule, f"| {model} | " + " | ".join(cells) + " |"])


def _write_atomic_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _class_labels(num_classes: int) -> tuple[list[str], list[str]]:
    if num_classes == 1000:
        return list(imagenet_wnids()), list(imagenet_class_names())
    return [""] * num_classes, [f"class {i}" for i in range(num_classes)]


def write_per_class(path: Path, state: Any) -> None:
    """One row per evaluation class that has at least one image."""
    suite = state.suite
    names = list(suite.metrics)
    per_class = {name: suite[name].per_class() for name in names}
    images = suite[names[0]].used
    wnids, labels = _class_labels(suite.num_classes)
    delta = None
    if "bg_act" in per_class and "bg_act_wo_fg" in per_class:
        delta = per_class["bg_act_wo_fg"] - per_class["bg_act"]
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["class", "wnid", "name", "images"]
            + names
            + (["delta_bg_act"] if delta is not None else [])
        )
        for k in range(suite.num_classes):
            if int(images[k]) == 0:
                continue
            row = [k, wnids[k], labels[k], int(images[k])]
            row += [
                "" if math.isnan(float(per_class[n][k])) else f"{float(per_class[n][k]):.4f}"
                for n in names
            ]
            if delta is not None:
                row.append("" if math.isnan(float(delta[k])) else f"{float(delta[k]):.4f}")
            writer.writerow(row)
    os.replace(temporary, path)


def write_threshold_curves(out_dir: Path, curves: dict, title: str) -> None:
    """``thresholds.csv`` and ``thresholds.png`` (Loc. and BG Act. against τ per score)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["method,tau,loc,bg_act,kept_fg_cells,kept_bg_cells"]
    for method, curve in curves.items():
        for i, tau in enumerate(curve["tau"]):
            values = [curve[k][i] for k in ("loc", "bg_act", "kept_fg_cells", "kept_bg_cells")]
            rows.append(
                f"{method},{tau}," + ",".join("" if v is None else f"{v:.4f}" for v in values)
            )
    _write_atomic_text(out_dir / "thresholds.csv", "\n".join(rows) + "\n")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for method, curve in curves.items():
        for axis, key in zip(axes, ("loc", "bg_act"), strict=False):
            points = [
                (t, v) for t, v in zip(curve["tau"], curve[key], strict=False) if v is not None
            ]
            if points:
                axis.plot(*zip(*points, strict=False), marker="o", markersize=3, label=method)
    for axis, label in zip(axes, ("Loc. (%)", "BG Act. (%)"), strict=False):
        axis.set_xlabel("threshold τ")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    temporary = out_dir / ".thresholds.tmp.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, out_dir / "thresholds.png")


def _delta_table(state: Any, top: int = 10) -> list[str]:
    """Classes with the largest Δ = BG Act.(w/o FG) − BG Act. (paper A.6), most positive first."""
    suite = state.suite
    if "bg_act" not in suite.metrics or "bg_act_wo_fg" not in suite.metrics:
        return []
    before, after = suite["bg_act"].per_class(), suite["bg_act_wo_fg"].per_class()
    delta = after - before
    _, names = _class_labels(suite.num_classes)
    valid = [k for k in range(suite.num_classes) if not math.isnan(float(delta[k]))]
    if not valid:
        return []
    ranked = sorted(valid, key=lambda k: (-float(delta[k]), k))[:top]
    lines = [
        (
            f"Per class (A.6), the {len(ranked)} largest Δ = BG Act. (w/o FG) − BG Act. "
            "(all classes in per_class.csv):"
        ),
        "",
        "| class | images | BG Act. | BG Act. (w/o FG) | Δ |",
        "|---|---|---|---|---|",
    ]
    for k in ranked:
        lines.append(
            f"| {k} {names[k]} | {int(suite['bg_act'].used[k])} | {float(before[k]):.1f} | "
            f"{float(after[k]):.1f} | {float(delta[k]):+.1f} |"
        )
    return lines


def write_reports(results: dict, state: Any, out_dir: os.PathLike | str) -> None:
    """Write results.json, results.md, per_class.csv and (ILSVRC) the threshold curves.

    Example:
        >>> import pathlib, tempfile
        >>> from dense_readout.evaluation.metrics import MetricSuite
        >>> from dense_readout.evaluation.reports import write_reports
        >>> from dense_readout.evaluation.state import BenchmarkState
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> state = BenchmarkState(MetricSuite(["a_acc_top1"], 3), None, PrototypeAccumulator())
        >>> results = {"top1": 80.0, "settings": {"kind": "imagenet-a"}, "a_acc_top1": 4.0, "a_det_top1": 20.0,
        ...            "a_acc_top5": 10.0, "a_det_top5": 30.0, "model": {"name": "m"},
        ...            "images": {"evaluated": 5, "total": 5, "skipped": {}}, "thresholds": None}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     write_reports(results, state, folder)
        ...     print(sorted(p.name for p in pathlib.Path(folder).iterdir()))
        ['per_class.csv', 'results.json', 'results.md']
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic_text(
        out_dir / "results.json", json.dumps(results, indent=2, sort_keys=False) + "\n"
    )
    model = str(results.get("model", {}).get("name", "model"))
    pre = results.get("preprocessing", {})
    lines = [
        markdown_table(results, model),
        "",
        (
            f"Images: {results['images']['evaluated']} evaluated of {results['images']['total']}; "
            f"skipped: {', '.join(f'{k} {v}' for k, v in results['images']['skipped'].items() if v) or 'none'}."
        ),
        f"Edge cases: {', '.join(f'{k} {v}' for k, v in results.get('edge_cases', {}).items())}.",
        (
            f"Preprocessing: shorter side {pre.get('resize_shorter_side')}, centre crop {pre.get('crop')}, "
            f"mean {pre.get('mean')}, std {pre.get('std')}, fill {pre.get('fill')!r}."
        ),
        f"dense-readout {results.get('version')}.",
    ]
    if results["settings"]["kind"] == "ilsvrc":
        lines.insert(1, "Loc. is averaged per image; in parentheses pooled over all FG cells.")
        lines += ["", *_delta_table(state)]
    _write_atomic_text(out_dir / "results.md", "\n".join(lines) + "\n")
    write_per_class(out_dir / "per_class.csv", state)
    if results.get("thresholds"):
        write_threshold_curves(out_dir, results["thresholds"], f"Thresholding controls — {model}")
