"""Figures of the synthetic experiment: the Fig. 1 overlay and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["overlay_grid", "training_curves"]


def _pyplot():
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: dict[str, Any], path: str | Path | None = None):
    """Validation Top-1 and Loc. per epoch (with E[1/n] as a reference line).

    ``history`` is what :func:`~dense_readout.experiments.synthetic_train.train`
    returns (or its ``history.json``, also one written before the Loc. keys were
    renamed). Returns the matplotlib figure.

    Example:
        >>> from dense_readout.experiments.figures import training_curves
        >>> h = {"expected_top1": 26.1, "initial": {"top1": 5.0, "loc_cell_pooled": 5.0, "loc": 4.0},
        ...      "epochs": [{"epoch": 1, "val_top1": 20.0, "val_loc_cell_pooled": 40.0,
        ...                  "val_loc": 41.0, "train_top1": 15.0}]}
        >>> [line.get_ydata().tolist() for line in training_curves(h).axes[0].lines[:2]]
        [[5.0, 40.0], [4.0, 41.0]]
    """
    from .synthetic_metrics import upgrade_history

    plt = _pyplot()
    history = upgrade_history(history)
    epochs = history["epochs"]
    xs = [e["epoch"] for e in epochs]
    series = {
        "val Loc. (pooled over FG cells)": [e["val_loc_cell_pooled"] for e in epochs],
        "val Loc. (per-image mean)": [e["val_loc"] for e in epochs],
        "val Top-1 (vs sampled target)": [e["val_top1"] for e in epochs],
        "train Top-1 (running, vs training label)": [e["train_top1"] for e in epochs],
    }
    initial = history.get("initial")
    figure, axis = plt.subplots(figsize=(6, 4))
    keys = {
        "val Loc. (pooled over FG cells)": "loc_cell_pooled",
        "val Loc. (per-image mean)": "loc",
        "val Top-1 (vs sampled target)": "top1",
    }
    for label, values in series.items():
        x, y = list(xs), list(values)
        if initial is not None and label in keys:
            x, y = [0, *x], [initial[keys[label]], *y]
        axis.plot(
            x, y, marker="o", label=label, linestyle="--" if label.startswith("train") else "-"
        )
    axis.axhline(
        history.get("expected_top1", 26.1), color="grey", linestyle=":", label="E[1/n] = 26.1%"
    )
    axis.set_xlabel("epoch")
    axis.set_ylabel("%")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    recipe = history.get("recipe", {})
    axis.set_title(
        f"{recipe.get('model', '')} {recipe.get('name', '')}: synthetic scenes", fontsize=10
    )
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    return figure


def overlay_grid(
    model: nn.Module,
    recipe: Any,
    path: str | Path | None = None,
    indices: Sequence[int] = (0, 1, 2, 3),
    split: str = "test",
    seed: int | None = None,
):
    """Paper Fig. 1: scenes with the dense readout's top-1 class id written in every cell.

    Ids in green are correct (a class present in that cell), red are wrong
    foreground cells, grey are background cells. Titles give the visible classes,
    the sampled target and the image-level prediction. Returns the figure.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.experiments.figures import overlay_grid
        >>> from dense_readout.experiments.synthetic import SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import SyntheticDataset, normalize_images
        >>> from dense_readout.experiments.synthetic_recipes import Recipe, build_model
        >>> _ = torch.manual_seed(0)
        >>> recipe = Recipe("tiny", model_kwargs={"channels": [8, 16, 32, 64]}, input_size=64)
        >>> model = build_model(recipe)  # untrained: the ids are arbitrary, the layout is not
        >>> tmp = tempfile.TemporaryDirectory()
        >>> figure = overlay_grid(model, recipe, Path(tmp.name) / "fig1.png", indices=(0, 1))
        >>> [len(axis.texts) for axis in figure.axes]  # one id per cell of the 2×2 grid
        [4, 4]
        >>> images = torch.stack([SyntheticDataset(SceneGenerator(split="test"), 2, 64,
        ...     (2, 2))[i][0] for i in (0, 1)])
        >>> with torch.no_grad():
        ...     labels = DenseReadout(model)(normalize_images(images)).labels()
        >>> [[int(t.get_text()) for t in axis.texts] for axis in figure.axes] == labels.flatten(1).tolist()
        True
        >>> (Path(tmp.name) / "fig1.png").is_file()
        True
        >>> import matplotlib.pyplot as plt; plt.close(figure); tmp.cleanup()
    """
    from ..readout import DenseReadout
    from .synthetic import SceneConfig, SceneGenerator
    from .synthetic_data import SyntheticDataset, normalize_images
    from .synthetic_recipes import grid_size_of

    plt = _pyplot()
    model.eval()
    grid = grid_size_of(model, recipe.input_size)
    generator = SceneGenerator(SceneConfig(), recipe.data_seed if seed is None else seed, split)
    dataset = SyntheticDataset(generator, max(indices) + 1, recipe.input_size, grid)
    items = [dataset[i] for i in indices]
    images = torch.stack([item[0] for item in items])
    device = next(model.parameters()).device
    result = DenseReadout(model)(normalize_images(images).to(device))
    labels = result.labels().cpu()
    predicted = result.logits.argmax(1).cpu()
    figure, axes = plt.subplots(1, len(indices), figsize=(3.2 * len(indices), 3.6))
    axes = np.atleast_1d(axes)
    for axis, index, item, cell_labels, image_pred in zip(
        axes, indices, items, labels, predicted, strict=False
    ):
        scene = generator(index)
        axis.imshow(scene.image)
        size = scene.image.shape[0]
        presence = item[2]
        h, w = grid
        for i in range(h):
            for j in range(w):
                k = int(cell_labels[i, j])
                foreground = bool(presence[:, i, j].any())
                color = "grey" if not foreground else ("limegreen" if presence[k, i, j] else "red")
                axis.text(
                    (j + 0.5) * size / w,
                    (i + 0.5) * size / h,
                    str(k),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=color,
                    fontweight="bold",
                )
        for t in range(1, h):
            axis.axhline(t * size / h, color="white", linewidth=0.4, alpha=0.6)
        for t in range(1, w):
            axis.axvline(t * size / w, color="white", linewidth=0.4, alpha=0.6)
        axis.set_title(
            f"visible {scene.visible_classes}\ntarget {scene.target}, image pred {int(image_pred)}",
            fontsize=8,
        )
        axis.axis("off")
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    return figure
