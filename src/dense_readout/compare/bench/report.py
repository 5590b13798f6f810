"""The benchmark's reports: a Markdown table and a self-contained offline HTML page.

The page (``page/static/compare.html``/``.css``/``.js``, filled with
:func:`~dense_readout.page.template.fill_template` under the offline CSP) draws,
from the JSON embedded in it: a quality-vs-cost scatter per metric, the mean
deletion and insertion curves, the MPRT cascade, and a strip of example maps per
method on the same images.

Example:
    >>> from dense_readout.compare.bench.report import markdown_table
    >>> results = {"methods": {"cam": {"pointing_game": 0.8}},
    ...            "ci": {"cam": {"pointing_game": [0.7, 0.9]}},
    ...            "images": {"cam": {"pointing_game": 10}}}
    >>> print(markdown_table(results).splitlines()[2])
    | cam | 10 / — / — | 80.0 [70.0, 90.0] | — | — | — | — | — | — | — | — | — | — | — |
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import write_atomic

__all__ = ["COLUMNS", "markdown_table", "write_html"]

# (key, header, scale): scores in %, AUCs and correlations as they are, cost as is
COLUMNS: list[tuple[str, str, float]] = [
    ("pointing_game", "pointing game % ↑", 100.0),
    ("energy_pointing_game", "energy PG % ↑", 100.0),
    ("maxboxacc_v2", "MaxBoxAccV2 % ↑", 100.0),
    ("loc", "Loc. % ↑", 100.0),
    ("deletion_auc", "deletion AUC ↓", 1.0),
    ("insertion_auc", "insertion AUC ↑", 1.0),
    ("road_combined", "ROAD (LeRF−MoRF)/2 ↑", 1.0),
    ("mprt_spearman", "MPRT ρ (last level) ↓", 1.0),
    ("random_logit_ssim", "random-logit SSIM ↓", 1.0),
    ("seconds_per_map", "s / map", 1.0),
    ("forward_ratio_per_map", "× forward (1 class)", 1.0),
    ("forward_ratio_all_classes", "× forward (all K)", 1.0),
]

# which metrics run on every image and which on the --subset (ROAD has its own limit)
ALL_IMAGE_METRICS = ("pointing_game", "maxboxacc_v2", "seconds_per_map")
SUBSET_METRICS = ("deletion_auc", "insertion_auc", "mprt_spearman", "random_logit_ssim")


def _cell(results: dict, name: str, key: str, scale: float) -> str:
    value = results["methods"].get(name, {}).get(key)
    if value is None:
        return "—"
    digits = 1 if scale == 100.0 else 3
    if key.startswith("forward_ratio"):
        digits = 2 if value < 100 else 0
    elif key == "seconds_per_map" and value > 0:  # two significant digits: 0.0094, 0.16, 12.95
        digits = max(2, 1 - math.floor(math.log10(value)))
    text = f"{value * scale:.{digits}f}"
    low, high = results.get("ci", {}).get(name, {}).get(key, [None, None])
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    return text


def _image_counts(counts: dict[str, int]) -> str:
    """``"all / subset / ROAD"``: the images of each group of metrics.

    All: localization or cost; subset: faithfulness or sanity; ROAD its own. They differ by design (``--subset``, ``--road-limit``), so one number would misstate
    some of them.
    """
    every, subset, road = (
        max((counts.get(k, 0) for k in keys), default=0)
        for keys in (ALL_IMAGE_METRICS, SUBSET_METRICS, ("road_combined",))
    )
    return " / ".join(str(n) if n else "—" for n in (every, subset, road))


def markdown_table(results: dict) -> str:
    """One row per method: every metric with its bootstrap 95 % interval, and the image counts."""
    header = "| method | images (loc. & cost / faith. & sanity / ROAD) | "
    header += " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for name in results["methods"]:
        images = _image_counts(results.get("images", {}).get(name, {}))
        cells = [_cell(results, name, key, scale) for key, _, scale in COLUMNS]
        lines.append(f"| {name} | {images} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _static(name: str) -> str:
    return resources.files("dense_readout.page").joinpath(f"static/{name}").read_text("utf-8")


def _shrink(grid: list[list[float]]) -> list[list[float]]:
    """A stored 56×56 example map as 28×28 (2×2 means), two decimals: a small page."""
    array = np.asarray(grid, dtype=float)
    rows, cols = array.shape[0] // 2 * 2, array.shape[1] // 2 * 2
    pooled = array[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))
    return pooled.round(2).tolist()


def page_data(results: dict, rows: list[dict]) -> dict[str, Any]:
    """What the page's script reads: summary, curves, cascade, example images and maps."""
    images = {row["position"]: row["png"] for row in rows if row["method"] == "__image__"}
    examples: dict[str, dict[int, Any]] = {}
    for row in rows:
        if "example_map" in row:
            examples.setdefault(row["method"], {})[row["position"]] = _shrink(row["example_map"])
    return {
        "methods": results["methods"],
        "ci": results.get("ci", {}),
        "images": results.get("images", {}),
        "curves": results.get("curves", {}),
        "cascade": results.get("cascade", {}),
        "cascade_units": results.get("config", {}).get("run", {}).get("cascade", []),
        "directions": results.get("directions", {}),
        "columns": [[key, header] for key, header, _ in COLUMNS],
        "example_images": {str(k): v for k, v in sorted(images.items())},
        "example_maps": {m: {str(k): v for k, v in d.items()} for m, d in examples.items()},
    }


def write_html(results: dict, rows: list[dict], path: Path) -> Path:
    """The self-contained report page (no network: data inline, offline CSP)."""
    from ...page.template import fill_template, json_payload

    html = fill_template(
        _static("compare.html"),
        {
            "STYLE": _static("compare.css"),
            "SCRIPT": _static("compare.js"),
            "DATA": json_payload(page_data(results, rows)),
            "TITLE": "dense-readout compare: attribution benchmark",
        },
    )
    return write_atomic(path, html)
