"""The JSON record of one explained image, its one-line summary and compact JSON text.

Used by :mod:`dense_readout.commands.explain`; :func:`explanation_record` is
public (re-exported there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import torch

from ..errors import InputError

__all__ = ["dumps", "explanation_record", "summary"]


class _ClassEntry:
    """Builds the ``{"class", "name", "probability"[, "score"]}`` items of a record."""

    def __init__(self, class_names: Sequence[str] | None) -> None:
        self.class_names = class_names

    def __call__(self, cls: int, probability: float, score: float | None = None) -> dict:
        name = None if self.class_names is None else self.class_names[cls]
        item: dict = {"class": cls, "name": name, "probability": probability}
        if score is not None:
            item["score"] = score
        return item


def _cell_box(u: int, v: int, grid: tuple[int, int], size: tuple[int, int]) -> list[float]:
    """``[left, top, right, bottom]`` of cell ``(u, v)`` in input pixels (2 decimals)."""
    (h, w), (height, width) = grid, size
    return [
        round(v * width / w, 2),
        round(u * height / h, 2),
        round((v + 1) * width / w, 2),
        round((u + 1) * height / h, 2),
    ]


def explanation_record(
    result, class_names: Sequence[str] | None = None, topk: int = 3, index: int = 0
) -> dict:
    """JSON-ready description of image ``index`` of a :class:`~dense_readout.ReadoutResult`.

    Keys: ``input_size`` and ``grid_size`` (``[h, w]``), ``cell_size`` (input pixels
    per cell), ``exact``/``residual``/``exactness_note``, ``top5`` (image-level
    classes from the model's own logits, with probabilities), ``label_grid``
    (``h×w`` top-1 class ids), ``classes_on_grid`` (each top-1 class with its cell
    count) and ``cells`` (row-major, each with ``row``, ``col``, ``box`` =
    ``[left, top, right, bottom]`` in input pixels and ``topk`` classes with
    per-cell softmax probability and score ``Z``). Class entries carry ``name``
    when ``class_names`` is given, else ``null``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.commands.explain import explanation_record
        >>> model = timm.create_model("resnet18", num_classes=4).eval()
        >>> record = explanation_record(DenseReadout(model)(torch.randn(1, 3, 64, 64)), topk=2)
        >>> record["grid_size"], len(record["cells"]), len(record["cells"][0]["topk"])
        ([2, 2], 4, 2)
    """
    if not 0 <= index < result.batch_size:
        raise InputError(f"index must be in [0, {result.batch_size}), got {index}.")
    if topk < 1:
        raise InputError(f"topk must be >= 1, got {topk}.")
    if class_names is not None and len(class_names) < result.num_classes:
        raise InputError(
            f"class_names has {len(class_names)} names for {result.num_classes} classes; "
            "pass one name per class or None."
        )
    k = min(topk, result.num_classes)
    entry = _ClassEntry(class_names)
    image_probs = torch.softmax(result.logits[index].detach().float(), dim=0)
    values, classes = image_probs.topk(min(5, result.num_classes))
    logits = result.logits[index].detach().float()
    top5 = [entry(int(c), float(p), float(logits[c])) for p, c in zip(values, classes, strict=True)]

    scores = result.scores[index].detach().float()
    top_probs, top_classes = torch.softmax(scores, dim=0).topk(k, dim=0)
    h, w = result.grid_size
    height, width = result.input_size
    cells = [
        {
            "row": u,
            "col": v,
            "box": _cell_box(u, v, (h, w), (height, width)),
            "topk": [
                entry(
                    int(top_classes[j, u, v]),
                    float(top_probs[j, u, v]),
                    float(scores[top_classes[j, u, v], u, v]),
                )
                for j in range(k)
            ],
        }
        for u in range(h)
        for v in range(w)
    ]
    labels = top_classes[0]
    counts = torch.bincount(labels.flatten(), minlength=result.num_classes)
    present = sorted((int(c) for c in labels.unique()), key=lambda c: (-int(counts[c]), c))
    return {
        "input_size": [height, width],
        "grid_size": [h, w],
        "cell_size": [height / h, width / w],
        "exact": bool(result.exact),
        "residual": float(result.residual[index]),
        "exactness_note": result.exactness_note,
        "adapter": result.adapter,
        "top5": top5,
        "label_grid": labels.tolist(),
        "classes_on_grid": [
            {
                "class": c,
                "name": None if class_names is None else class_names[c],
                "cells": int(counts[c]),
            }
            for c in present
        ],
        "cells": cells,
    }


def summary(name: str, record: dict, files: Sequence[str]) -> str:
    """The line printed per image: top-1, the most frequent cell labels, exactness, files.

    Example:
        >>> record = {"top5": [{"class": 3, "name": None, "probability": 0.5}], "grid_size": [1, 1],
        ...           "classes_on_grid": [{"class": 3, "name": None, "cells": 1}], "exact": True}
        >>> summary("a.png", record, ["out/a.json"])
        'a.png: top-1 class 3 (50.0%); 1x1 cells: class 3 1; exact -> out/a.json'
    """

    def label(item: dict) -> str:
        return item["name"].split(",")[0] if item["name"] else f"class {item['class']}"

    top = record["top5"][0]
    h, w = record["grid_size"]
    on_grid = record["classes_on_grid"]
    shown = ", ".join(f"{label(c)} {c['cells']}" for c in on_grid[:3])
    more = f" (+{len(on_grid) - 3} more)" if len(on_grid) > 3 else ""
    random = "; RANDOM WEIGHTS" if record.get("weights") == "random" else ""
    exact = "exact" if record["exact"] else f"not exact, residual {record['residual']:.3g}"
    return (
        f"{name}: top-1 {label(top)} ({100 * top['probability']:.1f}%); "
        f"{h}x{w} cells: {shown}{more}; {exact}{random} -> {', '.join(files)}"
    )


def dumps(record: dict) -> str:
    """JSON with one line per list of numbers and per flat object (grids and class entries).

    Example:
        >>> print(dumps({"grid": [[1, 2], [3, 4]], "top": {"class": 1}}), end="")
        {
         "grid": [
          [1, 2],
          [3, 4]
         ],
         "top": {"class": 1}
        }
    """
    text = json.dumps(record, indent=1)
    text = re.sub(r"\{[^{}\[\]]*\}", lambda m: json.dumps(json.loads(m.group(0))), text)
    flat = re.compile(
        r"\[\s*((?:-?[0-9.eE+-]+|null|true|false)(?:,\s*(?:-?[0-9.eE+-]+|null|true|false))*)\s*\]"
    )
    return (
        flat.sub(
            lambda m: "[" + ", ".join(part.strip() for part in m.group(1).split(",")) + "]", text
        )
        + "\n"
    )
