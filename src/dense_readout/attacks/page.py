"""Fig. 11 as one interactive page: the attacked image step by step, cell by cell.

:func:`attack_page` turns an :class:`~dense_readout.attacks.AttackTrace` into one
self-contained HTML string (inline style and script, a Content-Security-Policy that
forbids every request but ``data:``, so it works from ``file://`` offline). In it:

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

import html as html_escape
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..page.data import photo_uri
from ..page.template import fill_template, json_payload
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
    title = f"PGD attack ({kind}, {target}) · dense readout"
    parts = {
        "TITLE": html_escape.escape(title),
        "DATA": json_payload(data),
        "DATA_ID": DATA_ID,
        "CSS": _CSS,
        "JS": _JS,
    }
    return fill_template(_HTML, parts)


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


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{CSP}}">
<title>{{TITLE}}</title>
<style>
{{CSS}}
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <p id="summary"></p>
</header>
<main>
  <section class="viewer" aria-label="attacked image">
    <div class="controls">
      <button type="button" id="prev" aria-label="previous step">&#9664; prev</button>
      <label for="step">step</label>
      <input type="range" id="step" min="0" max="0" step="1" value="0">
      <button type="button" id="next" aria-label="next step">next &#9654;</button>
      <output id="step-number" for="step" aria-live="polite"></output>
      <label class="toggle"><input type="checkbox" id="show-labels" checked> labels</label>
    </div>
    <div class="stage" id="stage">
      <img id="photo" alt="the image at the selected step">
      <div id="cells" role="group" aria-label="cells: arrow keys move between them"></div>
    </div>
  </section>
  <section class="panel" aria-label="readout at this step">
    <dl class="stats">
      <dt>image top-1</dt><dd id="image-top1"></dd>
      <dt id="target-prob-label">target probability</dt><dd id="target-prob"></dd>
      <dt id="target-share-label">target cells</dt><dd id="target-share"></dd>
    </dl>
    <div id="cell-info" aria-live="polite">
      <h2 id="cell-heading">hover, tap or focus a cell</h2>
      <p id="cell-top1"></p>
      <p id="cell-rank"></p>
    </div>
    <p class="note">Cells are tinted by their top-1 class; red outline: the cell's top-1 is
    the target. Pictures are JPEG, so the &plusmn;&epsilon; perturbation is smoothed.</p>
  </section>
</main>
<script type="application/json" id="{{DATA_ID}}">{{DATA}}</script>
<script>
{{JS}}
</script>
</body>
</html>
"""

_CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 1100px;
  color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 4px; } h2 { font-size: 1em; margin: 0 0 4px; }
main { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.viewer { flex: 1 1 420px; max-width: 640px; min-width: 0; }
.panel { flex: 1 1 260px; min-width: 0; }
.controls { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 8px; }
#step { flex: 1 1 160px; min-width: 0; }
#step-number { min-width: 5.5em; font-variant-numeric: tabular-nums; }
.stage { position: relative; width: 100%; background: #000; }
#photo { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
#cells { position: absolute; inset: 0; display: grid; }
.cell { margin: 0; padding: 2px; border: 1px solid rgba(255, 255, 255, 0.45); color: #fff;
  font: 11px/1.15 system-ui, sans-serif; text-shadow: 0 0 2px #000, 0 0 2px #000;
  display: flex; align-items: flex-end; overflow: hidden; cursor: crosshair; text-align: left;
  overflow-wrap: anywhere; }
.cell.target { outline: 3px solid #d81414; outline-offset: -3px; }
.cell:focus-visible, .cell.shown { box-shadow: inset 0 0 0 3px #ffd400; }
.stage.plain .cell { background: transparent !important; color: transparent;
  text-shadow: none; }
.stats { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 0 0 12px; }
.stats dt { color: #555; } .stats dd { margin: 0; font-weight: 600; }
#cell-info { border-top: 1px solid #ccc; padding-top: 8px; min-height: 5em; }
#cell-info p { margin: 2px 0; }
.note { color: #666; font-size: 0.85em; }
"""

_JS = """
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("attack-data").textContent);
  const $ = (id) => document.getElementById(id);
  const [h, w] = data.grid;
  const slider = $("step"), cells = $("cells"), info = $("cell-info");
  const role = data.targeted ? "target" : "true class";
  const full = (id) => data.names[String(id)] ?? String(id);
  const short = (id) => full(id).split(",")[0].trim() || full(id);
  const label = (id) => (short(id) === String(id) ? String(id) : `${short(id)} (${id})`);
  const pct = (p) => `${(100 * p).toFixed(1)}%`;
  const hue = (id) => {
    if (id === data.target) return 0;
    const angle = (id * 137.508) % 360;
    return angle < 25 || angle > 335 ? (angle + 70) % 360 : angle;
  };
  let step = 0, active = [0, 0], shown = null;
  $("title").textContent = `PGD attack, ${data.targeted ? "toward" : "away from"} ${label(data.target)}`;
  $("summary").textContent = data.success_step >= 0
    ? `The image top-1 ${data.targeted ? "becomes the target" : "leaves the true class"} at step ${data.success_step} of ${data.steps}.`
    : `The image top-1 does not ${data.targeted ? "reach the target" : "leave the true class"} in ${data.steps} steps.`;
  $("target-prob-label").textContent = `${role} probability`;
  $("target-share-label").textContent = `cells on the ${role}`;
  $("stage").style.aspectRatio = `${data.size[1]} / ${data.size[0]}`;
  slider.max = String(data.steps);
  slider.setAttribute("aria-valuemax", String(data.steps));
  cells.style.gridTemplateColumns = `repeat(${w}, 1fr)`;
  cells.style.gridTemplateRows = `repeat(${h}, 1fr)`;
  const buttons = [];
  for (let u = 0; u < h; u++) {
    for (let v = 0; v < w; v++) {
      const cell = document.createElement("button");
      cell.type = "button";
      cell.className = "cell";
      cell.tabIndex = u === 0 && v === 0 ? 0 : -1;
      cell.dataset.u = String(u);
      cell.dataset.v = String(v);
      cell.append(document.createElement("span"));
      cell.addEventListener("mouseenter", () => showCell(u, v));
      cell.addEventListener("click", () => showCell(u, v));
      cell.addEventListener("focus", () => { active = [u, v]; showCell(u, v); });
      cell.addEventListener("keydown", move);
      cells.append(cell);
      buttons.push(cell);
    }
  }
  function move(event) {
    const delta = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[event.key];
    if (!delta) return;
    event.preventDefault();
    const u = Math.min(h - 1, Math.max(0, active[0] + delta[0]));
    const v = Math.min(w - 1, Math.max(0, active[1] + delta[1]));
    buttons[active[0] * w + active[1]].tabIndex = -1;
    buttons[u * w + v].tabIndex = 0;
    buttons[u * w + v].focus();
  }
  function showCell(u, v) {
    if (shown) buttons[shown[0] * w + shown[1]].classList.remove("shown");
    shown = [u, v];
    buttons[u * w + v].classList.add("shown");
    const s = data.per_step[step];
    const top = s.labels[u][v], rank = s.target_ranks[u][v];
    Object.assign(info.dataset, { u: String(u), v: String(v), label: String(top), rank: String(rank) });
    $("cell-heading").textContent = `cell row ${u + 1}, column ${v + 1} at step ${step}`;
    $("cell-top1").textContent = `top-1: ${full(top)} (${top}) · ${pct(s.probs[u][v])}`;
    $("cell-rank").textContent = `${role} ${label(data.target)}: rank ${rank + 1} of ${data.num_classes} here`;
  }
  function setStep(value) {
    step = Math.max(0, Math.min(data.steps, Math.round(Number(value)) || 0));
    const s = data.per_step[step];
    slider.value = String(step);
    slider.setAttribute("aria-valuetext", `step ${step} of ${data.steps}`);
    $("photo").src = s.image;
    $("step-number").textContent = step === 0 ? `step 0 (clean) of ${data.steps}` : `step ${step} of ${data.steps}`;
    $("image-top1").textContent = `${label(s.prediction)} · ${pct(s.prediction_probability)}`;
    $("target-prob").textContent = pct(s.target_probability);
    const count = Math.round(s.target_cell_fraction * h * w);
    $("target-share").textContent = `${pct(s.target_cell_fraction)} (${count} of ${h * w} cells)`;
    buttons.forEach((cell, i) => {
      const u = Math.floor(i / w), v = i % w, top = s.labels[u][v];
      cell.style.backgroundColor = `hsla(${hue(top)}, 85%, 50%, 0.38)`;
      cell.classList.toggle("target", top === data.target);
      cell.firstChild.textContent = `${short(top)} ${Math.round(100 * s.probs[u][v])}%`;
      cell.setAttribute("aria-label", `row ${u + 1}, column ${v + 1}: ${short(top)} ${pct(s.probs[u][v])}`);
    });
    $("prev").disabled = step === 0;
    $("next").disabled = step === data.steps;
    document.body.dataset.step = String(step);
    if (shown) showCell(shown[0], shown[1]);
  }
  slider.addEventListener("input", () => setStep(slider.value));
  $("prev").addEventListener("click", () => setStep(step - 1));
  $("next").addEventListener("click", () => setStep(step + 1));
  $("show-labels").addEventListener("change", (event) => {
    $("stage").classList.toggle("plain", !event.target.checked);
  });
  setStep(0);
  window.attackPage = { data, setStep, showCell };
  document.body.dataset.ready = "true";
})();
"""
