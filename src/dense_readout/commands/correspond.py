"""``dense-readout correspond A B`` and ``dense-readout index build|query|merge|map``.

``correspond`` writes into ``--out``: ``<A>__<B>_correspondence.png`` (Fig. 9: the two
images side by side, the ``--top`` most similar cell pairs joined by lines) and
``<A>__<B>_correspondence.json`` (the pairs and grids). ``A``/``B`` are image files
or ``skimage:<name>``. The ``index`` commands are in
:mod:`dense_readout.commands.patch_index`.

Every command prints one summary line; a bad option, model or index is one
``error:`` line with exit status 2, an unreadable query image exit status 1.

Example:
    >>> from dense_readout.cli import main
    >>> main(["correspond", "no/such/a.jpg", "skimage:coffee", "--out", "/tmp/dr-doctest"])
    1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import DenseReadoutError, ImageLoadError

__all__ = ["add_model_options", "load_extractor", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``correspond`` and ``index`` subcommands."""
    from . import patch_index

    parser = subparsers.add_parser(
        "correspond",
        help="most similar cell pairs of two images (paper Fig. 9)",
        description="Cosine similarity of every pre-pooling cell of image A with every cell "
        "of image B; draw the --top most similar pairs as lines between the two images.",
    )
    parser.add_argument("image_a", metavar="A", help="image file, or skimage:<name>")
    parser.add_argument("image_b", metavar="B", help="image file, or skimage:<name>")
    parser.add_argument("--top", type=int, default=20, help="pairs drawn (default 20)")
    parser.add_argument("--out", default="dense-readout-correspond", metavar="DIR")
    add_model_options(parser)
    parser.set_defaults(func=run_correspond)
    patch_index.register(subparsers)


def add_model_options(parser: argparse.ArgumentParser, default_from_index: bool = False) -> None:
    """``--model``, ``--checkpoint``, ``--random-weights``, ``--seed``, ``--input-size`` …"""
    default = "the index's model" if default_from_index else "tf_efficientnet_lite0, embedded"
    parser.add_argument("--model", default=None, metavar="NAME", help=f"timm name ({default})")
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="state-dict file")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="the architecture with random weights (seeded by --seed): for tests",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    parser.add_argument(
        "--input-size", type=int, default=None, metavar="PX", help="model input side (crop)"
    )
    parser.add_argument("--normalization", choices=("model", "imagenet"), default="model")
    parser.add_argument(
        "--crop-pct",
        type=float,
        default=1.0,
        help="crop fraction (default 1.0: whole shorter side)",
    )


def load_extractor(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """``(GridExtractor, Preprocess, info)`` for the model options; ``info`` goes in manifests."""
    from ..patches import GridExtractor
    from ..preprocessing import Preprocess
    from ._setup import load_model

    if args.random_weights:
        torch.manual_seed(args.seed)  # the same seed gives the same random model
    loaded = load_model(args)
    preprocess = loaded.preprocess
    if args.input_size:
        preprocess = Preprocess.from_model(
            loaded.model, args.normalization, crop=args.input_size, crop_pct=args.crop_pct
        )
    info = {
        "model": loaded.name,
        "weights": loaded.weights,
        "checkpoint": args.checkpoint,
        "seed": args.seed if args.random_weights else None,
        "class_names": list(loaded.names) if loaded.names else None,
    }
    return GridExtractor(loaded.model), preprocess, info


def load_picture(spec: str):
    """An image file, or ``skimage:<name>`` (a scikit-image sample), as an RGB PIL image."""
    from .lrp import _load

    return _load(spec).convert("RGB")


def run_correspond(args: argparse.Namespace) -> int:
    """Run ``correspond``; returns the exit status."""
    from ..patches import correspondence, save_correspondence_figure

    try:
        pictures = [load_picture(spec) for spec in (args.image_a, args.image_b)]
    except ImageLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        extractor, preprocess, info = load_extractor(args)
        result = correspondence(
            extractor.readout or extractor.model,
            pictures[0],
            pictures[1],
            top=args.top,
            features=extractor.features,
            preprocess=preprocess,
        )
        views = [preprocess.geometry(p) for p in pictures]
        stem = "__".join(Path(s.split(":", 1)[-1]).stem for s in (args.image_a, args.image_b))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        png = save_correspondence_figure(
            result, views[0], views[1], out / f"{stem}_correspondence.png"
        )
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = {"a": args.image_a, "b": args.image_b, "model": info["model"], **result.to_dict()}
    from .._atomic import write_atomic

    json_path = write_atomic(out / f"{stem}_correspondence.json", json.dumps(record, indent=1))
    best = result.pairs[0]
    print(
        f"{args.image_a} ~ {args.image_b}: best pair {best.cell_a} ~ {best.cell_b} "
        f"(cosine {best.similarity:.3f}); wrote {png}, {json_path}"
    )
    return 0
