"""The ``dense-readout`` command line.

Each subcommand lives in its own module under :mod:`dense_readout.commands` with a
``register(subparsers)`` function that adds its parser and sets ``func``; add a
module name to ``COMMAND_MODULES`` to add a command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

COMMAND_MODULES = [
    "dense_readout.commands.explain",
    "dense_readout.commands.bench",
    "dense_readout.commands.synthetic",
    "dense_readout.commands.coco",
    "dense_readout.commands.lrp",
    "dense_readout.commands.attack",
    "dense_readout.commands.patches",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dense-readout",
        description="Per-cell class evidence of GAP classifiers (dense readout).",
    )
    parser.add_argument("--version", action="version", version=f"dense-readout {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
