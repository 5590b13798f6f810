"""From per-image records to ``results.json``, ``per_image.csv``, ``results.md`` and the HTML report.

Every summary number comes with a bootstrap 95 % interval: the images are
resampled with replacement (``BOOTSTRAP`` times, seed 0) and the metric's own
statistic (mean, MaxBoxAccV2's max over thresholds, cost's ratio of sums) is
recomputed; the interval is the 2.5th–97.5th percentile.

Example:
    >>> import numpy as np
    >>> from dense_readout.compare.bench.summary import bootstrap_interval
    >>> low, high = bootstrap_interval(np.arange(100.0), lambda v: float(v.mean()))
    >>> bool(low < 49.5 < high)
    True
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import write_atomic
from .metrics import BENCH_METRICS

__all__ = ["BOOTSTRAP", "bootstrap_interval", "summarise", "write_outputs"]

BOOTSTRAP = 1000
_VECTORS = ("box_ious", "deletion_curve", "insertion_curve", "mprt_levels", "example_map")


def bootstrap_interval(
    values: np.ndarray, statistic: Callable[[np.ndarray], float], rounds: int = BOOTSTRAP
) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of ``statistic`` over row resamples of ``values``."""
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(0)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(rounds)]
    low, high = np.nanpercentile(np.asarray(draws, dtype=float), [2.5, 97.5])
    return float(low), float(high)


def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(row["method"] for row in rows if row["method"] != "__image__"))


def summarise(rows: list[dict]) -> dict[str, Any]:
    """``{"methods": {m: {metric: value}}, "ci": …, "images": …, "curves": …, "cascade": …}``."""
    methods: dict[str, dict] = {}
    intervals: dict[str, dict] = {}
    counts: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    cascade: dict[str, list] = {}
    for name in _methods(rows):
        mine = [row for row in rows if row["method"] == name]
        methods[name], intervals[name], counts[name] = {}, {}, {}
        for metric_name in BENCH_METRICS.names():
            metric = BENCH_METRICS.get(metric_name)()
            for key in metric.keys:
                values = metric.values(key, mine)
                if len(values) == 0:
                    continue
                methods[name][key] = _round(metric.reduce(key, values))
                low, high = bootstrap_interval(values, partial(metric.reduce, key))
                intervals[name][key] = [_round(low), _round(high)]
                counts[name][key] = len(values)
        curves[name] = {
            mode: np.mean([r[f"{mode}_curve"] for r in mine if f"{mode}_curve" in r], axis=0)
            .round(6)
            .tolist()
            for mode in ("deletion", "insertion")
            if any(f"{mode}_curve" in r for r in mine)
        }
        levels = [r["mprt_levels"] for r in mine if "mprt_levels" in r]
        if levels:
            cascade[name] = np.nanmean(np.asarray(levels, dtype=float), axis=0).round(6).tolist()
    return {
        "methods": methods,
        "ci": intervals,
        "images": counts,
        "curves": curves,
        "cascade": cascade,
    }


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _csv(rows: list[dict], path: Path) -> None:
    columns = ["position", "index", "label", "method"]
    for row in rows:
        for key in row:
            if key not in columns and key not in _VECTORS and key != "png":
                columns.append(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            if row["method"] != "__image__":
                writer.writerow(row)


def write_outputs(records: dict, settings: dict, out_dir: Path, info: dict) -> dict:
    """Write every report of a run into ``out_dir``; returns the ``results.json`` dictionary."""
    from .report import markdown_table, write_html

    rows = records["rows"]
    results = summarise(rows)
    results["config"] = {**settings, "run": info}
    results["skipped"] = records["skipped"]
    results["directions"] = {
        key: ("higher" if better else "lower")
        for name in BENCH_METRICS.names()
        for key, better in BENCH_METRICS.get(name).higher_is_better.items()
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    _csv(rows, out_dir / "per_image.csv")
    write_atomic(out_dir / "results.md", markdown_table(results) + "\n")
    write_html(results, rows, out_dir / "report.html")
    return results
