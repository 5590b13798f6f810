"""``dense-readout correspond A B``: the most similar cell pairs of two images (Fig. 9).

Writes into ``--out``: ``<A>__<B>_correspondence.png`` (the two images side by
side, the ``--top`` most similar cell pairs joined by lines) and
``<A>__<B>_correspondence.json`` (the pairs and grids). ``A``/``B`` are image files
or ``skimage:<name>``. The patch index of a whole dataset is ``dense-readout index``
(:mod:`dense_readout.commands.index`).

Prints one summary line; a bad option or model is one ``error:`` line with exit
status 2, an unreadable image exit status 1 (both told before the model loads).

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

from ..errors import DenseReadoutError, ImageLoadError, InputError
from ._extractor import add_extractor_options, load_extractor
from ._model_options import check_model_options
from ._setup import check_output_dir, load_picture

__all__ = ["register", "run_correspond"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``correspond`` subcommand."""
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
    add_extractor_options(parser)
    parser.set_defaults(func=run_correspond)


def run_correspond(args: argparse.Namespace) -> int:
    """Run ``correspond``; returns the exit status."""
    try:
        if args.top < 1:
            raise InputError(f"--top must be >= 1, got {args.top}.")
        check_model_options(args)
        check_output_dir(args.out)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        pictures = [load_picture(spec) for spec in (args.image_a, args.image_b)]
    except ImageLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from ..patches import correspondence, save_correspondence_figure

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
