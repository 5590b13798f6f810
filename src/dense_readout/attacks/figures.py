"""Fig. 11 of the paper from an :class:`~dense_readout.attacks.AttackTrace`.

* (a) the clean image with each cell's top-1 class and softmax probability;
* (b) the attacked image the same way, target-class cells boxed in red;
* (c) the per-cell top-1 at every iteration, target cells in red, with the image-level
  target probability and the share of target cells under each step;
* :func:`label_grid_animation`: the label grid across iterations as an animated GIF.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._optional import require_matplotlib
from ..errors import InputError
from ..viz import class_palette, figure_to_array, plot_label_grid, short_name
from .pgd import AttackTrace

__all__ = ["attack_figures", "label_grid_animation", "plot_attack_steps"]

_RED = (0.86, 0.08, 0.08)


def _name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return f"{short_name(class_names[index])} ({index})"
    return str(index)


def _picture(trace: AttackTrace, step: int, index: int) -> np.ndarray:
    return trace.images[step, index].permute(1, 2, 0).clamp(0, 1).numpy()


def _step_grid(
    trace: AttackTrace,
    step: int,
    index: int,
    class_names: Sequence[str] | None,
    title: str,
    **kw: Any,
) -> Any:
    figure = plot_label_grid(
        _picture(trace, step, index),
        trace.cell_labels[step, index],
        class_names,
        probabilities=trace.cell_probs[step, index],
        title=title,
        **kw,
    )
    _box_target_cells(figure, trace, step, index)
    return figure


def _box_target_cells(figure: Any, trace: AttackTrace, step: int, index: int) -> None:
    from matplotlib.patches import Rectangle

    axes = figure.axes[0]
    width, height = axes.get_xlim()[1], axes.get_ylim()[0]
    labels = trace.cell_labels[step, index]
    rows, cols = labels.shape
    cell_w, cell_h = width / cols, height / rows
    for u, v in (labels == trace.target[index]).nonzero().tolist():
        axes.add_patch(
            Rectangle(
                (v * cell_w + 1.5, u * cell_h + 1.5),
                cell_w - 3,
                cell_h - 3,
                fill=False,
                edgecolor=_RED,
                linewidth=3,
            )
        )


def attack_figures(
    trace: AttackTrace,
    class_names: Sequence[str] | None = None,
    index: int = 0,
    panel_px: int = 800,
) -> tuple[Any, Any, Any]:
    """Fig. 11 (a), (b), (c) of image ``index`` as three matplotlib figures.

    Example:
        >>> import timm, torch
        >>> from dense_readout.attacks import pgd
        >>> from dense_readout.attacks.figures import attack_figures
        >>> model = timm.create_model("resnet18", num_classes=4).eval()
        >>> trace = pgd(model, torch.rand(1, 3, 64, 64), target=1, true_class=0, steps=2)
        >>> [len(figure.axes) > 0 for figure in attack_figures(trace)]
        [True, True, True]
    """
    require_matplotlib()
    if not 0 <= index < trace.images.shape[1]:
        raise InputError(f"index must be in [0, {trace.images.shape[1]}), got {index}.")
    probs = trace.logits[:, index].softmax(dim=-1)
    target = int(trace.target[index])
    clean_top = int(trace.predictions()[0, index])
    final_top = int(trace.predictions()[-1, index])
    kind = "target" if trace.targeted else "true class"
    clean = _step_grid(
        trace,
        0,
        index,
        class_names,
        f"(a) clean: image top-1 {_name(clean_top, class_names)} "
        f"{100 * float(probs[0, clean_top]):.1f}%\nper-cell top-1 and softmax",
        panel_px=panel_px,
    )
    attacked = _step_grid(
        trace,
        trace.steps,
        index,
        class_names,
        f"(b) after {trace.steps} PGD steps: image top-1 {_name(final_top, class_names)} "
        f"{100 * float(probs[-1, final_top]):.1f}%\n{kind} {_name(target, class_names)} "
        "cells boxed in red",
        panel_px=panel_px,
    )
    return clean, attacked, plot_attack_steps(trace, class_names, index)


def plot_attack_steps(
    trace: AttackTrace, class_names: Sequence[str] | None = None, index: int = 0
) -> Any:
    """Fig. 11 (c): the per-cell top-1 at every step, target cells red."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    labels = trace.cell_labels[:, index]
    target = int(trace.target[index])
    classes, counts = torch.unique(labels, return_counts=True)
    ordered = [int(c) for c in classes[counts.argsort(descending=True)] if int(c) != target]
    palette = [_RED, *_not_red(len(ordered))]
    code = {target: 0, **{c: i + 1 for i, c in enumerate(ordered)}}
    steps = trace.steps + 1
    columns = min(7, steps)
    rows = -(-steps // columns)
    figure = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.6), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    target_prob = trace.logits[:, index].softmax(dim=-1)[:, target]
    fraction = trace.target_cell_fraction()[:, index]
    colours = ListedColormap(palette)
    for step in range(steps):
        axes = figure.add_subplot(rows, columns, step + 1)
        coded = labels[step].clone().apply_(lambda c: code[int(c)]).numpy()
        axes.imshow(coded, cmap=colours, vmin=-0.5, vmax=len(palette) - 0.5)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(
            f"step {step}\np={100 * float(target_prob[step]):.0f}% · "
            f"{100 * float(fraction[step]):.0f}% cells",
            fontsize=8,
        )
    figure.suptitle(
        f"(c) per-cell top-1 across PGD steps; red: {_name(target, class_names)} "
        "(p = image-level probability, % = share of cells)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _not_red(count: int) -> list[tuple[float, float, float]]:
    """``count`` class colours with every red-looking one left out (red marks the target)."""
    import colorsys

    def reddish(colour: tuple[float, float, float]) -> bool:
        hue, _, saturation = colorsys.rgb_to_hls(*colour)
        return saturation > 0.25 and (hue < 0.05 or hue > 0.9)

    size = count
    while True:
        colours = [c for c in class_palette(size) if not reddish(c)]
        if len(colours) >= count:
            return colours[:count]
        size += count - len(colours)


def label_grid_animation(
    trace: AttackTrace,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    index: int = 0,
    panel_px: int = 420,
    frame_ms: int = 400,
) -> Path:
    """Write the label grid of every step as an animated GIF; returns the path.

    Example:
        >>> import os, tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout.attacks import pgd
        >>> from dense_readout.attacks.figures import label_grid_animation
        >>> model = timm.create_model("resnet18", num_classes=4).eval()
        >>> trace = pgd(model, torch.rand(1, 3, 64, 64), target=1, true_class=0, steps=2)
        >>> gif = label_grid_animation(trace, os.path.join(tempfile.mkdtemp(), "a.gif"))
        >>> Image.open(gif).n_frames
        3
    """
    from PIL import Image

    frames = []
    for step in range(trace.steps + 1):
        figure = _step_grid(trace, step, index, class_names, f"PGD step {step}", panel_px=panel_px)
        frames.append(Image.fromarray(figure_to_array(figure)))
        figure.clear()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=False
    )
    return path
