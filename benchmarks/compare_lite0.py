"""Renderers for docs/compare.md: the table and sentences quoted from ``compare_lite0.json``.

``docs/results/compare_lite0.json`` is the ``results.json`` that ``dense-readout compare``
wrote (its command is inside, under ``config.run.command``); these pure functions turn it
into the Markdown between the ``<!-- results: ... -->`` markers of docs/compare.md, and
``tests/test_docs_results.py`` re-renders them, so no number in that page is pasted by hand.

    python tests/test_docs_results.py --write docs/compare.md
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np

from dense_readout.compare.bench.report import markdown_table as _markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

__all__ = [
    "command_block",
    "findings",
    "markdown_table",
    "road_table",
    "second_model_table",
    "what_ran",
]


def command_block(data: dict) -> str:
    """The command that wrote the JSON, as the docs show it."""
    return f"```bash\n{data['config']['run']['command']}\n```"


def markdown_table(data: dict) -> str:
    """One row per method, every metric with its bootstrap 95 % interval."""
    return _markdown_table(data)


def _count(data: dict, method: str, metric: str) -> int:
    return int(data.get("images", {}).get(method, {}).get(metric, 0))


def what_ran(data: dict) -> str:
    """How many images each axis got, from the counts in the JSON (not from the command)."""
    run = data["config"]["run"]
    fast, slow = run["methods"], run.get("slow_methods", [])
    first = fast[0]
    skipped = len(data.get("skipped", []))
    steps = data["config"]["config"]["steps"]
    sample = f"{run['images']:,} images, {skipped} skipped: their boxes fall outside the crop"
    subset = _count(data, first, "deletion_auc")
    parts = [
        f"{len(fast)} methods on the ILSVRC sample ({sample})",
        f"localization and cost on **{_count(data, first, 'pointing_game'):,}** images",
        f"faithfulness (deletion/insertion, {steps} steps) and sanity on the first **{subset:,}**",
        f"ROAD on the first **{_count(data, first, 'road_combined'):,}**",
    ]
    parts += [
        f"`{name}` on the first **{_count(data, name, 'pointing_game'):,}** with every axis"
        for name in slow
    ]
    threads = int(run["threads"])
    return "; ".join(parts) + f" ({threads} thread{'' if threads == 1 else 's'} per process)."


# the ROAD run's columns: (key, header); ROAD values are probabilities of the target
ROAD_COLUMNS = (
    ("road_morf", "ROAD MoRF ↓"),
    ("road_lerf", "ROAD LeRF ↑"),
    ("road_combined", "ROAD (LeRF−MoRF)/2 ↑"),
    ("deletion_auc", "deletion AUC ↓"),
    ("insertion_auc", "insertion AUC ↑"),
)


def road_table(data: dict) -> str:
    """The faithfulness-only run: ROAD beside deletion/insertion on the same images."""
    lines = [
        "| method | images | " + " | ".join(h for _, h in ROAD_COLUMNS) + " |",
        "|" + "---|" * (len(ROAD_COLUMNS) + 2),
    ]
    for name, values in data["methods"].items():
        cells = []
        for key, _ in ROAD_COLUMNS:
            value = values.get(key)
            low, high = data.get("ci", {}).get(name, {}).get(key, [None, None])
            text = "—" if value is None else f"{value:.3f}"
            if value is not None and low is not None and high is not None:
                text += f" [{low:.3f}, {high:.3f}]"
            cells.append(text)
        lines.append(
            f"| {name} | {_count(data, name, 'road_combined')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _v(data: dict, method: str, key: str, digits: int = 2, scale: float = 1.0) -> str:
    return f"{data['methods'][method][key] * scale:.{digits}f}"


def _ci(data: dict, method: str, key: str, digits: int = 2) -> str:
    low, high = data["ci"][method][key]
    return f"{data['methods'][method][key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def findings(data: dict) -> str:
    """The reading of the main table, every number taken from the JSON."""
    r, cam, gc, lrp, rnd = "dense-readout", "cam", "gradcam", "lrp", "random"

    def span(methods: tuple[str, ...], key: str) -> str:
        values = [data["methods"][m][key] for m in methods]
        return f"{min(values):.2f}–{max(values):.2f}"

    others = ("gradcam++", "layercam", "eigencam")
    every_class = f"{data['methods'][gc]['forward_ratio_all_classes']:,.0f}"
    bullets = [
        (
            "**One map, four names.** On this GAP-linear model the readout, CAM, Grad-CAM "
            "and Captum's LayerGradCam give the same map up to a positive factor, so the "
            f"same localization (pointing game {_v(data, r, 'pointing_game', 1, 100)} %, "
            f"MaxBoxAccV2 {_v(data, r, 'maxboxacc_v2', 1, 100)} %), faithfulness (deletion "
            f"{_v(data, r, 'deletion_auc', 3)}, insertion {_v(data, r, 'insertion_auc', 3)}) "
            "and sanity scores; the small MPRT and Loc. differences come from the head bias "
            "that `dense-readout` keeps and CAM removes. They differ in cost: one readout "
            f"call gives all 1,000 class maps for {_v(data, r, 'forward_ratio_all_classes')}× "
            f"a forward pass (CAM: {_v(data, cam, 'forward_ratio_all_classes')}×), where "
            f"Grad-CAM costs {_v(data, gc, 'forward_ratio_per_map')}× per map (a forward and "
            f"a backward) and so ≈ {every_class}× for every class."
        ),
        (
            "**Sanity separates the CAM variants.** Grad-CAM++ and LayerCAM localize almost "
            "as well (EigenCAM less well), but the maps of all three survive the "
            "randomisation of the classifier and the last BatchNorm (MPRT ρ "
            f"{span(others, 'mprt_spearman')} against {_ci(data, r, 'mprt_spearman')} for "
            "the readout) and hardly depend on the class (random-logit SSIM "
            f"{span(others, 'random_logit_ssim')} against {_v(data, r, 'random_logit_ssim')})."
        ),
        (
            "**LRP trades sanity for deletion.** The readout refined to pixels with zennit "
            f"has the best deletion AUC ({_ci(data, lrp, 'deletion_auc', 3)}) and energy "
            f"pointing game ({_v(data, lrp, 'energy_pointing_game', 1, 100)} %), a lower "
            f"insertion AUC ({_v(data, lrp, 'insertion_auc', 3)}), and keeps ρ = "
            f"{_v(data, lrp, 'mprt_spearman')} in the cascade, the known weakness of LRP-type "
            f"rules; it costs {_v(data, lrp, 'forward_ratio_per_map', 1)}× a forward per map."
        ),
        (
            "**The references behave as they must.** The edge detector and the random map "
            "keep ρ = 1 and SSIM = 1, and the random map sits at chance on faithfulness "
            f"(deletion {_v(data, rnd, 'deletion_auc', 3)} vs insertion "
            f"{_v(data, rnd, 'insertion_auc', 3)})."
        ),
    ]
    return "\n".join(
        textwrap.fill(text, 88, initial_indent="* ", subsequent_indent="  ", break_on_hyphens=False)
        for text in bullets
    )


# the per-image scores compared across models: (CSV column, header, scale, digits)
SECOND_MODEL_COLUMNS = (
    ("pointing_game", "pointing game %", 100.0, 1),
    ("energy_pointing_game", "energy PG %", 100.0, 1),
    ("deletion_auc", "deletion AUC", 1.0, 3),
    ("insertion_auc", "insertion AUC", 1.0, 3),
    ("mprt_spearman", "MPRT ρ", 1.0, 2),
    ("random_logit_ssim", "random-logit SSIM", 1.0, 2),
)


def _per_image(path: Path) -> dict[tuple[str, int, str], float]:
    """``(method, dataset index, metric) -> value`` from a run's ``per_image.csv``."""
    values: dict[tuple[str, int, str], float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, _, _, _ in SECOND_MODEL_COLUMNS:
                if row.get(key) not in (None, ""):
                    values[(row["method"], int(row["index"]), key)] = float(row[key])
    return values


def _average_ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, equal values sharing their mean rank."""
    array = np.asarray(values)
    ranks = np.argsort(np.argsort(array, kind="stable")).astype(float) + 1
    for value in np.unique(array):
        tied = array == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _spearman(first: list[float], second: list[float]) -> float:
    """Rank correlation of two models' method means (compared at the precision shown,
    so that the readout, CAM and Grad-CAM, one map here, tie instead of ordering by
    rounding noise)."""
    return float(np.corrcoef(_average_ranks(first), _average_ranks(second))[0, 1])


def second_model_table(data: dict) -> str:
    """Lite1 beside Lite0 on the same images: per-method means and the ranking's agreement.

    ``data`` is the Lite1 run's ``results.json``; both runs' ``per_image.csv`` files (in
    docs/results) give the per-image scores, and each cell averages the images that both
    models scored for that method and metric, so the columns compare like with like.
    """
    second = _per_image(RESULTS / "compare_lite1_per_image.csv")
    first = _per_image(RESULTS / "compare_lite0_per_image.csv")
    methods = list(data["methods"])
    header = "| method | " + " | ".join(
        f"{h} (Lite0 / Lite1)" for _, h, _, _ in SECOND_MODEL_COLUMNS
    )
    lines = [header + " |", "|" + "---|" * (len(SECOND_MODEL_COLUMNS) + 1)]
    means: dict[str, tuple[list[float], list[float]]] = {}
    counts: dict[str, int] = {}
    for key, _, _, _ in SECOND_MODEL_COLUMNS:
        means[key] = ([], [])
        for method in methods:
            shared = [k for k in second if k[0] == method and k[2] == key and k in first]
            counts[key] = max(counts.get(key, 0), len(shared))
            means[key][0].append(float(np.mean([first[k] for k in shared])) if shared else np.nan)
            means[key][1].append(float(np.mean([second[k] for k in shared])) if shared else np.nan)
    for i, method in enumerate(methods):
        cells = []
        for key, _, scale, digits in SECOND_MODEL_COLUMNS:
            a, b = means[key][0][i] * scale, means[key][1][i] * scale
            cells.append(f"{a:.{digits}f} / {b:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    images = " | ".join(f"{counts[key]:,}" for key, _, _, _ in SECOND_MODEL_COLUMNS)
    agreement = " | ".join(
        f"{_spearman(*(list(np.round(np.asarray(m) * scale, digits)) for m in means[key])):.2f}"
        for key, _, scale, digits in SECOND_MODEL_COLUMNS
    )
    lines.append(f"| *images (both models)* | {images} |")
    lines.append(f"| *rank agreement (Spearman over methods)* | {agreement} |")
    return "\n".join(lines)
