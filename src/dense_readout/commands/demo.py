"""``dense-readout demo [SAMPLE...]``: ``explain`` on scikit-image's sample photographs.

Takes every option of ``explain`` (:mod:`dense_readout.commands.explain`, which
also runs it) and needs no files and no network: the photos ship inside
scikit-image, the model is the embedded EfficientNet-Lite0.

Example:
    >>> from dense_readout.cli import main
    >>> main(["demo", "cheshire", "--out", "/tmp/dense-readout-doctest"])
    2
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from ._setup import Source
from .explain import EXIT_SETUP_FAILED, add_explain_options, run_sources

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEMO_SAMPLES", "register", "run_demo"]

DEMO_SAMPLES = ("chelsea", "coffee", "astronaut")
"""Photographs shipped inside scikit-image (``skimage.data.<name>()``), explained by ``demo``."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
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
    add_explain_options(demo, default_out="dense-readout-demo")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``demo``; returns the exit status."""
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
    return run_sources(sources, args)


def _skimage_sample(name: str) -> Image.Image:
    import skimage.data
    from PIL import Image

    from ..images import to_rgb

    return to_rgb(Image.fromarray(getattr(skimage.data, name)()))


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
