"""Pseudo-labels for a whole export store: seeds per image, label PNGs, optional evaluation.

:func:`make_pseudo_labels` reads each exported image's maps for its image-level
classes (ground truth ``gt``, or predicted from the stored logits: ``top:N``,
``prob:P``), puts them on the original image (:meth:`ExportStore.upsample`,
bilinear), applies the seed recipe (:mod:`.seeds`) and writes ``<stem>.png``. With a
ground truth (:data:`TRUTHS`: ``coco`` — semantic masks from the store's COCO
annotations — or ``folder:DIR`` of VOC-style PNGs named like the images) it also
scores mIoU and sweeps the background threshold.

Example:
    >>> import tempfile, numpy as np
    >>> from dense_readout.pseudo_labels import image_classes
    >>> image_classes("top:2", np.array([0.1, 3.0, 2.0]), ())
    [1, 2]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from ..errors import InputError
from ..registry import Registry
from .metrics import ConfusionMatrix, ThresholdSweep
from .palette import read_label_png, save_label_png
from .seeds import labels_from_normalised, normalise_maps

__all__ = [
    "TRUTHS",
    "PseudoLabelConfig",
    "TruthReader",
    "image_classes",
    "make_pseudo_labels",
    "register_truth",
]

DEFAULT_SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 13))  # 0.05 … 0.60


@dataclass(frozen=True)
class PseudoLabelConfig:
    """``bg_threshold`` (IRN: 0.15), ``classes`` (``gt``, ``top:N``, ``prob:P``), the sweep.

    Example:
        >>> from dense_readout.pseudo_labels import PseudoLabelConfig
        >>> config = PseudoLabelConfig(bg_threshold=0.3, classes="top:1", write_png=False)
        >>> config.classes, config.sweep[:3], len(config.sweep)  # sweep: 0.05 … 0.60
        ('top:1', (0.05, 0.1, 0.15), 12)
    """

    bg_threshold: float = 0.15
    classes: str = "gt"
    sweep: tuple[float, ...] = field(default=DEFAULT_SWEEP)
    write_png: bool = True


def image_classes(spec: str, logits: np.ndarray, labels: Sequence[int]) -> list[int]:
    """The classes an image is labelled with.

    ``gt``: its labels; ``top:N``: the ``N`` highest logits; ``prob:P``: softmax
    probability at least ``P`` (at least the top-1).

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import image_classes
        >>> logits = np.log(np.array([0.05, 0.6, 0.3, 0.05]))  # softmax = these probabilities
        >>> image_classes("gt", logits, [3]), image_classes("top:2", logits, [3])
        ([3], [1, 2])
        >>> image_classes("prob:0.25", logits, []), image_classes("prob:0.9", logits, [])
        ([1, 2], [1])
    """
    if spec == "gt":
        return list(labels)
    kind, _, value = spec.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--image-classes {spec!r}: use gt, top:N or prob:P.") from None
    order = np.argsort(-logits, kind="stable")
    if kind == "top":
        return sorted(int(c) for c in order[: max(1, int(number))])
    if kind == "prob":
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        chosen = {int(order[0])} | {int(c) for c in np.flatnonzero(probabilities >= number)}
        return sorted(chosen)
    raise InputError(f"--image-classes {spec!r}: use gt, top:N or prob:P.")


TruthReader = Callable[[Any, str], Callable[[int], np.ndarray | None]]
TRUTHS: Registry[TruthReader] = Registry(
    "pseudo-label ground truth",
    hint="Use coco, or folder:DIR of label PNGs named like the images; register another "
    "with @dense_readout.pseudo_labels.run.register_truth(name).",
)


def register_truth(name: str) -> Callable[[TruthReader], TruthReader]:
    """Decorator: make ``reader(store, argument) -> truth(index)`` the ground truth ``name``.

    ``truth=`` / ``--eval`` ``name:argument`` calls ``reader(store, "argument")``; the
    ``truth(index)`` it returns gives the label map of exported image ``index`` (or None).

    Example:
        >>> import numpy as np
        >>> @register_truth("all-background")
        ... def all_background(store, argument):
        ...     return lambda index: np.zeros((4, 4), np.uint8)
        >>> TRUTHS.get("all-background")(None, "")(0).shape
        (4, 4)
        >>> TRUTHS.unregister("all-background") is all_background
        True
    """
    return TRUTHS.register(name)


@register_truth("folder")
def folder_truth(store: Any, argument: str) -> Callable[[int], np.ndarray | None]:
    """VOC-style label PNGs (``0`` background, ``1 + c`` class ``c``, 255 void) named ``<stem>.png``."""
    folder = Path(argument)
    if not folder.is_dir():
        raise InputError(f"--eval folder:{argument}: not a folder of label PNGs.")

    def truth(index: int) -> np.ndarray | None:
        path = folder / (Path(store.paths[index]).stem + ".png")
        return read_label_png(path) if path.is_file() else None

    return truth


@register_truth("coco")
def coco_truth(store: Any, argument: str) -> Callable[[int], np.ndarray | None]:
    """Semantic masks from the COCO instances of the store's root (``argument``: another root)."""
    from .coco_masks import CocoSemanticMasks

    masks = CocoSemanticMasks(argument or store.settings["root"])
    return lambda index: masks.for_path(store.paths[index])


def _truth(store: Any, spec: str | None) -> Callable[[int], np.ndarray | None] | None:
    if not spec:
        return None
    name, _, argument = spec.partition(":")
    return TRUTHS.get(name)(store, argument)


def make_pseudo_labels(
    store: Any,
    out: str | Path | None,
    config: PseudoLabelConfig = PseudoLabelConfig(),
    truth: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Seeds for every exported image of ``store`` → ``out/<stem>.png`` (+ ``out/pseudo_labels.json``).

    ``truth`` (``coco`` or ``folder:DIR``) adds the evaluation: per-class IoU, mIoU,
    the confusion matrix and the background-threshold sweep. Returns the summary.

    Example:
        >>> import os, tempfile, numpy as np, timm, torch
        >>> from PIL import Image
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
        >>> from dense_readout.pseudo_labels import (ConfusionMatrix, PseudoLabelConfig,
        ...     make_pseudo_labels, read_label_png, save_label_png)
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> os.mkdir(f"{root}/images"); os.mkdir(f"{root}/truth")
        >>> truth = np.zeros((48, 64), np.uint8); truth[:, :32] = 1  # class 0 on the left half
        >>> for k in range(2):
        ...     pixels = np.zeros((48, 64, 3), np.uint8); pixels[:, :32, k] = 255
        ...     Image.fromarray(pixels).save(f"{root}/images/img{k}.png")
        ...     _ = save_label_png(f"{root}/truth/img{k}.png", truth)
        >>> _ = torch.manual_seed(0)
        >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
        >>> _ = export_dataset(open_source(f"{root}/images"), f"{root}/store", readout,
        ...     Preprocess(resize=64, crop=64), ExportConfig(progress=False))
        >>> summary = make_pseudo_labels(open_store(f"{root}/store"), f"{root}/seeds",
        ...     PseudoLabelConfig(classes="top:1"), truth=f"folder:{root}/truth", progress=False)
        >>> summary["counts"]["labelled"], sorted(os.listdir(f"{root}/seeds"))
        (2, ['img0.png', 'img1.png', 'pseudo_labels.json'])
        >>> seeds = [read_label_png(f"{root}/seeds/img{k}.png") for k in range(2)]
        >>> seeds[0].shape  # on the original image
        (48, 64)
        >>> check = ConfusionMatrix(4)  # the evaluation, recomputed from the written PNGs
        >>> for seed in seeds:
        ...     check.update(seed, truth)
        >>> bool(np.isclose(check.miou(), summary["evaluation"]["miou"]))
        True
        >>> len(summary["evaluation"]["sweep"]), list(summary["evaluation"]["iou"])  # no names
        (12, ['background', '0', '1', '2'])
        >>> tmp.cleanup()
    """
    from tqdm.auto import tqdm

    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    truth_of = _truth(store, truth)
    num_labels = 1 + int(store.settings["num_classes"])
    confusion = ConfusionMatrix(num_labels)
    sweep = ThresholdSweep(config.sweep, num_labels) if truth_of else None
    counts = {
        "images": len(store),
        "labelled": 0,
        "not_exported": 0,
        "no_class": 0,
        "class_not_stored": 0,
        "no_truth": 0,
    }
    for index in tqdm(range(len(store)), desc="pseudo-labels", disable=None if progress else True):
        normalised, classes = _normalised(store, index, config.classes, counts)
        if normalised is None:
            continue
        labels = labels_from_normalised(normalised, classes, config.bg_threshold)
        counts["labelled"] += 1
        if folder is not None and config.write_png:
            save_label_png(folder / (Path(store.paths[index]).stem + ".png"), labels)
        if truth_of is not None and sweep is not None:
            mask = truth_of(index)
            if mask is None or mask.shape != labels.shape:
                counts["no_truth"] += 1
                continue
            confusion.update(labels, mask)
            sweep.update(normalised, classes, mask)
    summary = _summary(store, config, truth, counts, confusion if truth_of else None, sweep)
    if folder is not None:
        write_atomic(folder / "pseudo_labels.json", json.dumps(summary, indent=1))
    return summary


def _normalised(store: Any, index: int, spec: str, counts: dict[str, int]):
    """The normalised maps on the original image of image ``index``'s classes (or None)."""
    if store.status(index) != "ok":
        counts["not_exported"] += 1
        return None, []
    wanted = image_classes(spec, store.logits(index), store.labels(index))
    stored = {int(c): row for row, c in enumerate(store.classes(index)) if c >= 0}
    missing = [c for c in wanted if c not in stored]
    counts["class_not_stored"] += len(missing)
    classes = [c for c in wanted if c in stored]
    if not classes:
        counts["no_class"] += 1
        return None, []
    maps = store.scores(index)[[stored[c] for c in classes]]
    return normalise_maps(store.upsample(index, maps)), classes


def _summary(store, config, truth, counts, confusion, sweep) -> dict[str, Any]:
    summary: dict[str, Any] = {"store": str(store.root), "config": asdict(config), "counts": counts}
    if confusion is None or sweep is None:
        return summary
    names = store.settings.get("class_names") or [str(k) for k in range(confusion.num_labels - 1)]
    iou = confusion.iou()
    summary["evaluation"] = {
        "truth": truth,
        "miou": confusion.miou(),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "iou": {
            name: (None if np.isnan(v) else float(v))
            for name, v in zip(["background", *names], iou, strict=True)
        },
        "unscored_pixels": confusion.unscored,
        "sweep": sweep.curve(),
        "best": sweep.best(),
        "confusion": confusion.counts.tolist() if confusion.num_labels <= 128 else None,
    }
    return summary
