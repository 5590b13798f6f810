"""``dense-readout lrp IMAGE``: refine one readout cell to pixels with LRP (paper Fig. 8).

Writes ``<stem>_lrp_<u>_<v>.png`` (the label grid with the cell in red beside its
relevance map) into ``--out`` and prints the cell's class, score, the share of its
relevance outside its own patch and the conservation ratio. ``IMAGE`` may be a
file or ``skimage:<name>`` (e.g. ``skimage:chelsea``). Exit status 1 if the image
cannot be read, 2 for a bad model/option; both are told before the model loads
where they can be.

Example:
    >>> from dense_readout.cli import main
    >>> main(["lrp", "no/such/file.jpg", "--out", "/tmp/dense-readout-doctest"])
    1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DenseReadoutError
from ._model_options import add_model_options, check_model_options, load_model
from ._setup import check_output_dir, load_picture

__all__ = ["register", "run_lrp"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lrp`` subcommand."""
    parser = subparsers.add_parser(
        "lrp",
        help="LRP relevance of one readout cell (paper Fig. 8)",
        description="Refine a readout cell's score to pixels with LRP (zennit) and draw Fig. 8.",
    )
    parser.add_argument(
        "image", metavar="IMAGE", help="image file, or skimage:<name> (e.g. skimage:chelsea)"
    )
    parser.add_argument(
        "--cell",
        type=int,
        nargs=2,
        default=None,
        metavar=("U", "V"),
        help="grid cell (row, column); default: the centre cell",
    )
    parser.add_argument(
        "--target", type=int, default=None, help="class index (default: the cell's top-1)"
    )
    parser.add_argument(
        "--composite", default=None, help="zennit composite name (default: family default)"
    )
    parser.add_argument("--out", default="dense-readout-lrp", metavar="DIR")
    add_model_options(parser, random_weights=False)
    parser.set_defaults(func=run_lrp)


def run_lrp(args: argparse.Namespace) -> int:
    """Run ``lrp``; returns the exit status."""
    try:
        check_model_options(args)
        check_output_dir(args.out)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        picture = load_picture(args.image)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from ..lrp import LRPReadout, plot_cell_relevance

    try:
        loaded = load_model(args)
        preprocess, names, name = loaded.preprocess, loaded.class_names, loaded.name
        lrp = LRPReadout(loaded.model, args.composite)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    x = preprocess(picture).unsqueeze(0)
    try:
        with_grid = lrp.readout(x)
        h, w = with_grid.grid_size
        cell = tuple(args.cell) if args.cell else (h // 2, w // 2)
        result = lrp.cell(x, cell=cell, target=args.target)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    k = int(result.targets[0])
    share = float(result.outside_share()[0])
    figure = plot_cell_relevance(
        preprocess.denormalize(x[0]),
        with_grid.labels()[0],
        result.relevance[0],
        cell,
        names,
        title=f"{name}: cell {cell}, '{names[k].split(',')[0]}' (Z = {float(result.start[0]):.2f})",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = (
        args.image.split(":", 1)[1] if args.image.startswith("skimage:") else Path(args.image).stem
    )
    path = out / f"{stem}_lrp_{cell[0]}_{cell[1]}.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(
        f"{args.image}: cell {cell} class {k} '{names[k]}' Z={float(result.start[0]):.3f} "
        f"outside-patch share={share:.3f} conservation={float(result.conservation[0]):.3g} "
        f"composite={result.composite} -> {path}"
    )
    return 0
