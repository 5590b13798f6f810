"""``dense-readout explain IMAGE...`` and ``dense-readout demo``: pictures and JSON per image.

For every image the commands write, into ``--out``:

* ``<stem>_labels.png``: the label grid (top-1 class of every cell, legend);
* ``<stem>_heatmap.png``: the per-cell scores of the image-level top-1 class;
* ``<stem>.json``: image-level top-5, per-cell top-k classes with probabilities,
  the grid size and whether the readout is exact (see :func:`explanation_record`).

and print one summary line per image on stdout. A file that cannot be explained
gives one line ``error: <path>: <reason>`` on stderr; the others are still done
and the exit status is 1. A bad model or checkpoint stops before any image with
exit status 2.

Example:
    >>> from dense_readout.cli import main
    >>> main(["explain", "no/such/file.jpg", "--out", "/tmp/dense-readout-doctest"])
    1
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import CheckpointError, DenseReadoutError, ImageLoadError, InputError

__all__ = ["DEMO_SAMPLES", "Source", "explanation_record", "register"]

DEMO_SAMPLES = ("chelsea", "coffee", "astronaut")
"""Photographs shipped inside scikit-image (``skimage.data.<name>()``), explained by ``demo``."""

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_SETUP_FAILED = 0, 1, 2


@dataclass(frozen=True)
class Source:
    """One image to explain: a display name, an output stem and a loader."""

    name: str
    stem: str
    load: Callable[[], Image.Image]
    title: str = ""


# -- argument parsing -----------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` and ``demo`` subcommands."""
    explain = subparsers.add_parser(
        "explain",
        help="label grid, heatmap and JSON for image files",
        description=(
            "Explain image files with the dense readout: for each IMAGE write a label-grid "
            "PNG, a heatmap PNG of the image-level top-1 class and a JSON report into --out."
        ),
    )
    explain.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)"
    )
    _add_common(explain, default_out="dense-readout-out")
    explain.set_defaults(func=run_explain)

    demo = subparsers.add_parser(
        "demo",
        help="explain scikit-image's sample photos with the embedded model",
        description=(
            "Explain photographs shipped with scikit-image (default: "
            + ", ".join(DEMO_SAMPLES)
            + ") with the embedded offline EfficientNet-Lite0; needs no files and no network."
        ),
    )
    demo.add_argument(
        "samples",
        nargs="*",
        metavar="SAMPLE",
        help=f"sample names among {', '.join(DEMO_SAMPLES)} (default: all)",
    )
    _add_common(demo, default_out="dense-readout-demo")
    demo.set_defaults(func=run_demo)


def _add_common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="timm model name (default: tf_efficientnet_lite0 with embedded ImageNet weights); "
        "other models need --checkpoint",
    )
    parser.add_argument(
        "--checkpoint", default=None, metavar="PATH", help="local state-dict file for --model"
    )
    parser.add_argument(
        "--topk",
        type=int,
        default=3,
        metavar="K",
        help="classes listed per cell in the JSON (default 3)",
    )
    parser.add_argument(
        "--out",
        default=default_out,
        metavar="DIR",
        help=f"output directory (default {default_out})",
    )
    parser.add_argument(
        "--normalization",
        choices=("model", "imagenet"),
        default="model",
        help="input mean/std: the model's own (default) or ImageNet's",
    )
    parser.add_argument(
        "--no-png", action="store_true", help="write only the JSON reports (faster for many images)"
    )
    parser.add_argument(
        "--crop-pct",
        type=float,
        default=1.0,
        metavar="F",
        help="centre-crop fraction: 1.0 (default) keeps the most of the photo; 0.875 is the paper's 256→224",
    )


# -- the commands ---------------------------------------------------------------------
def run_explain(args: argparse.Namespace) -> int:
    from ..images import load_image

    sources = []
    stems: set[str] = set()
    for path in args.images:
        stem = _unique_stem(Path(path).stem, stems)
        sources.append(
            Source(
                name=str(path),
                stem=stem,
                load=functools.partial(load_image, path),
                title=Path(path).name,
            )
        )
    return _run(sources, args)


def run_demo(args: argparse.Namespace) -> int:
    unknown = [name for name in args.samples if name not in DEMO_SAMPLES]
    if unknown:
        _error(
            f"unknown demo sample(s) {', '.join(unknown)}; choose among {', '.join(DEMO_SAMPLES)}."
        )
        return EXIT_SETUP_FAILED
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        _error("the demo needs scikit-image: pip install 'dense-readout[demo]' (or scikit-image).")
        return EXIT_SETUP_FAILED
    names = list(dict.fromkeys(args.samples)) or list(DEMO_SAMPLES)
    sources = [
        Source(
            name=f"skimage.data.{name}",
            stem=name,
            load=functools.partial(_skimage_sample, name),
            title=name,
        )
        for name in names
    ]
    return _run(sources, args)


def _skimage_sample(name: str) -> Image.Image:
    import skimage.data

    from ..images import to_rgb

    return to_rgb(Image.fromarray(getattr(skimage.data, name)()))


def _run(sources: Sequence[Source], args: argparse.Namespace) -> int:
    from ..readout import DenseReadout

    if args.topk < 1:
        _error(f"--topk must be >= 1, got {args.topk}.")
        return EXIT_SETUP_FAILED
    try:
        model, preprocess, names, model_name = _load_model(args)
        readout = DenseReadout(model)
        if args.topk > readout.num_classes:
            raise InputError(
                f"--topk {args.topk} exceeds the model's {readout.num_classes} classes."
            )
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"cannot create the output directory {out}: {error.strerror or error}; choose another --out."
            ) from None
    except (DenseReadoutError, OSError) as error:
        _error(str(error))
        return EXIT_SETUP_FAILED

    failures = 0
    for source in sources:
        try:
            line = _explain_one(source, readout, preprocess, names, model_name, args, out)
        except ImageLoadError as error:  # its message already names the file
            failures += 1
            _error(str(error))
        except Exception as error:
            failures += 1
            kind = (
                ""
                if isinstance(error, (DenseReadoutError, OSError))
                else f"{type(error).__name__}: "
            )
            _error(f"{source.name}: {kind}{error}")
        else:
            print(line, flush=True)
    if failures:
        print(f"{failures} of {len(sources)} image(s) failed.", file=sys.stderr, flush=True)
    return EXIT_IMAGE_FAILED if failures else EXIT_OK


def _load_model(args: argparse.Namespace):
    from ..imagenet import imagenet_class_names
    from ..pretrained import DEFAULT_MODEL, EMBEDDED_WEIGHTS, load_pretrained

    name = args.model or DEFAULT_MODEL
    if args.checkpoint is None and name not in EMBEDDED_WEIGHTS:
        raise CheckpointError(
            f"--model {name} needs --checkpoint PATH (a local state-dict file): only "
            f"{', '.join(sorted(EMBEDDED_WEIGHTS))} ship with weights, and nothing is downloaded."
        )
    if not 0 < args.crop_pct <= 1:
        raise InputError(f"--crop-pct must be in (0, 1], got {args.crop_pct}.")
    model, preprocess, names, name = load_pretrained(
        name, args.checkpoint, normalization=args.normalization, crop_pct=args.crop_pct
    )
    imagenet = tuple(names) == imagenet_class_names()
    return model, preprocess, (names if imagenet else None), name


def _explain_one(source: Source, readout, preprocess, names, model_name, args, out: Path) -> str:
    from ..viz import readout_figures, save_png

    image = source.load()
    picture = preprocess.geometry(image)
    batch = preprocess.normalize(picture).unsqueeze(0)
    result = readout(batch)
    record = explanation_record(result, names, topk=args.topk)
    label_path, heat_path, json_path = (
        out / f"{source.stem}_labels.png",
        out / f"{source.stem}_heatmap.png",
        out / f"{source.stem}.json",
    )
    files = {}
    if not args.no_png:
        grid_figure, heat_figure = readout_figures(
            result, picture, names, name=source.title or source.stem
        )
        files = {
            "label_grid": save_png(grid_figure, label_path).name,
            "heatmap": save_png(heat_figure, heat_path).name,
        }
    record = {
        "image": source.name,
        "original_size": [image.height, image.width],
        "model": model_name,
        "checkpoint": args.checkpoint,
        "preprocessing": {
            "normalization": args.normalization,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "resize_shorter_side": preprocess.resize,
            "centre_crop": preprocess.crop,
        },
        **record,
        "files": files,
    }
    json_path.write_text(_dumps(record))
    return _summary(source.name, record, json_path)


# -- the JSON record ------------------------------------------------------------------
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


def _summary(name: str, record: dict, json_path: Path) -> str:
    def label(item: dict) -> str:
        return item["name"].split(",")[0] if item["name"] else f"class {item['class']}"

    top = record["top5"][0]
    h, w = record["grid_size"]
    on_grid = record["classes_on_grid"]
    shown = ", ".join(f"{label(c)} {c['cells']}" for c in on_grid[:3])
    more = f" (+{len(on_grid) - 3} more)" if len(on_grid) > 3 else ""
    exact = "exact" if record["exact"] else f"not exact, residual {record['residual']:.3g}"
    return (
        f"{name}: top-1 {label(top)} ({100 * top['probability']:.1f}%); "
        f"{h}x{w} cells: {shown}{more}; {exact} -> {json_path}"
    )


def _dumps(record: dict) -> str:
    """JSON with one line per list of numbers and per flat object (grids and class entries)."""
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


def _unique_stem(stem: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "image"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
