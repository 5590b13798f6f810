"""Fig. 11 as one interactive page: the attacked image step by step, cell by cell.

:func:`attack_page` turns an :class:`~dense_readout.attacks.AttackTrace` into one
self-contained HTML string (inline style and script, a Content-Security-Policy that
forbids every request but ``data:``, so it works from ``file://`` offline); its markup,
style and script are ``page/static/attack.{html,css,js}`` in the shell that every page
shares (:func:`~dense_readout.page.template.render_page`). In it:

* a slider (``<input type="range">``, arrow keys / Home / End) and prev/next buttons
  go through steps 0 (clean) … T;
* the image of the selected step with its ``h×w`` grid over it, each cell tinted and
  labelled with its top-1 class and probability, target cells outlined red;
* per step: the image top-1 with its probability, the target's image probability and
  the share of cells whose top-1 is the target;
* hover, tap or keyboard-focus a cell (arrow keys move between cells) → its top-1
  class name, probability and the target's rank in that cell.

Only what the page shows is embedded, in one JSON block
(``<script type="application/json" id="attack-data">``, read back with
:func:`read_attack_page`): per step a JPEG data URI (longer side at most 448 px,
quality 90), per-cell top-1 id, probability (4 decimals) and target rank, and the
names of the classes that occur. Size, measured on skimage's chelsea at 224 px with
uniform ±8/255 noise at every step (as noisy as a PGD iterate), a 7×7 grid and 1000
class names: about 24 kB per step, 0.51 MB for 21 steps (``tests/test_attack_page.py``
holds it under 2 MB); the same at 448 px: 1.6 MB; a 224 px image of pure noise: 1.3 MB.
``dense-readout attack skimage:chelsea --target sombrero`` (20 steps) writes 0.54 MB.
JPEG smooths the ±ε perturbation, so the pictures show the attack's effect on the
readout, not the exact adversarial pixels (those are in the trace).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..page.data import photo_uri
from ..page.template import render_page
from .pgd import AttackTrace

__all__ = ["DATA_ID", "MAX_SIDE", "attack_page", "attack_page_data", "read_attack_page"]

DATA_ID = "attack-data"
MAX_SIDE = 448  # longest side of the embedded JPEG of each step
QUALITY = 90


def _short(name: str) -> str:
    return name.split(",")[0].strip() or name


def attack_page_data(
    trace: AttackTrace, class_names: Sequence[str] | None, index: int = 0
) -> dict[str, Any]:
    """The JSON object the page of image ``index`` embeds (see the module docstring).

    Example:
        >>> import torch
        >>> from dense_readout.attacks import AttackTrace
        >>> g = torch.zeros(3, 1, 1, 2, dtype=torch.long)
        >>> trace = AttackTrace(torch.rand(3, 1, 3, 8, 8), torch.zeros(3, 1, 4), g, g + 0.5,
        ...     g * 1.0, g, torch.zeros(3, 1), torch.tensor([2]), True, True)
        >>> data = attack_page_data(trace, ["a", "b", "c", "d"])
        >>> data["grid"], data["names"], data["per_step"][1]["labels"]
        ([1, 2], {'0': 'a', '2': 'c'}, [[0, 0]])
    """
    batch = int(trace.images.shape[1])
    if not 0 <= index < batch:
        raise InputError(f"index {index} is out of range for a trace of {batch} image(s).")
    target = int(trace.target[index])
    labels = trace.cell_labels[:, index]
    probs = trace.logits[:, index].float().softmax(dim=-1)
    predictions = probs.argmax(dim=-1)
    fraction = trace.target_cell_fraction()[:, index]
    used = {target, *labels.unique().tolist(), *predictions.unique().tolist()}
    names = {
        str(k): (class_names[k] if class_names is not None and k < len(class_names) else str(k))
        for k in sorted(int(k) for k in used)
    }
    height, width = (int(s) for s in trace.images.shape[-2:])
    return {
        "version": 1,
        "targeted": bool(trace.targeted),
        "target": target,
        "steps": trace.steps,
        "success_step": int(trace.success_step()[index]),
        "num_classes": int(trace.logits.shape[-1]),
        "grid": [int(s) for s in labels.shape[-2:]],
        "size": [height, width],
        "names": names,
        "per_step": [
            {
                "step": t,
                "image": _step_image(trace, t, index),
                "prediction": int(predictions[t]),
                "prediction_probability": float(probs[t, predictions[t]]),
                "target_probability": float(probs[t, target]),
                "target_cell_fraction": float(fraction[t]),
                "labels": labels[t].tolist(),
                "probs": np.round(trace.cell_probs[t, index].double().numpy(), 4).tolist(),
                "target_ranks": trace.target_ranks[t, index].tolist(),
            }
            for t in range(trace.steps + 1)
        ],
    }


def _step_image(trace: AttackTrace, step: int, index: int) -> str:
    pixels = trace.images[step, index].detach().float().clamp(0, 1).permute(1, 2, 0)
    array = (pixels * 255).round().to(torch.uint8).numpy()
    return photo_uri(Image.fromarray(array), MAX_SIDE, QUALITY)[0]


def attack_page(trace: AttackTrace, class_names: Sequence[str] | None, index: int = 0) -> str:
    """The interactive Fig. 11 page of image ``index`` of ``trace``, as HTML text.

    Example:
        >>> import timm, torch
        >>> from dense_readout.attacks import pgd
        >>> from dense_readout.attacks.page import attack_page, read_attack_page
        >>> model = timm.create_model("resnet18", num_classes=5).eval()
        >>> trace = pgd(model, torch.rand(1, 3, 64, 64), target=3, true_class=0, steps=2)
        >>> html = attack_page(trace, list("abcde"))
        >>> html.startswith("<!DOCTYPE html>"), "http://" in html or "https://" in html
        (True, False)
        >>> data = read_attack_page(html)
        >>> len(data["per_step"]), data["grid"], data["names"]["3"]
        (3, [2, 2], 'd')
        >>> data["per_step"][2]["labels"] == trace.cell_labels[2, 0].tolist()
        True
    """
    data = attack_page_data(trace, class_names, index)
    target = _label(data, data["target"])
    kind = "targeted" if data["targeted"] else "untargeted"
    title = f"PGD attack ({kind}, {target})"
    return render_page("attack", title=title, data=data, data_id=DATA_ID)


def _label(data: dict[str, Any], class_id: int) -> str:
    """``"short name (id)"`` of a class in a page's data (the id alone without a name)."""
    name = data["names"].get(str(class_id))
    return f"{_short(name)} ({class_id})" if name and name != str(class_id) else str(class_id)


def read_attack_page(source: str | Path) -> dict[str, Any]:
    """The JSON object embedded in an attack page (a path or the HTML text).

    Example:
        >>> read_attack_page('<script type="application/json" id="attack-data">{"a":1}</script>')
        {'a': 1}
    """
    from ..page.data import read_json_block

    return read_json_block(source, DATA_ID, "an attack page")
