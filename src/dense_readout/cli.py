"""The ``dense-readout`` command line.

Each top-level command ``NAME`` lives in ``dense_readout.commands.<NAME>`` (``-``
as ``_``) with a ``register(subparsers)`` function that adds its parser and sets
``func``; :data:`COMMAND_MODULES` is the one list of them. Building the parser
imports no torch: command modules import their heavy dependencies inside their
``run`` functions, so ``--help``, ``--version`` and argument errors are quick.

Example:
    >>> parser = build_parser()
    >>> parser.parse_args(["explain", "cat.jpg", "--topk", "5"]).topk
    5
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES = [
    "dense_readout.commands.explain",
    "dense_readout.commands.demo",
    "dense_readout.commands.lrp",
    "dense_readout.commands.attack",
    "dense_readout.commands.correspond",
    "dense_readout.commands.index",
    "dense_readout.commands.bench",
    "dense_readout.commands.coco_probe",
    "dense_readout.commands.synthetic",
    "dense_readout.commands.compare",
    "dense_readout.commands.export",
]
"""Command modules, in the order ``--help`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMAND_MODULES`."""
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
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
