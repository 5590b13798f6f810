"""``dense-readout explain IMAGE...`` and ``dense-readout demo``: pictures, a page and JSON per image.

For every image the commands write, into ``--out``:

* ``<stem>_labels.png``: the label grid (top-1 class of every cell, legend);
* ``<stem>_heatmap.png``: the per-cell scores of the image-level top-1 class, and
  ``<stem>_class<K>.png`` for every ``--class``;
* ``<stem>.html`` with ``--html``: the interactive page (:mod:`dense_readout.page`);
* ``<stem>.json``: image-level top-5, per-cell top-k classes with probabilities,
  the grid size and whether the readout is exact (see :func:`explanation_record`).

``--view full`` reads out the whole photo (shorter side at the model size, any
aspect ratio), ``--view crop`` the centre crop; the default is ``full`` with
``--html`` and ``crop`` without. The commands print one summary line per image on
stdout. A file that cannot be explained gives one line ``error: <path>: <reason>``
on stderr; the others are still done and the exit status is 1. A bad model,
checkpoint or option stops before any image with exit status 2; Ctrl-C stops with
one line saying what was written (status 130); every file is written atomically.

Example:
    >>> from dense_readout.cli import main
    >>> main(["explain", "no/such/file.jpg", "--out", "/tmp/dense-readout-doctest"])
    1
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import DenseReadoutError, ImageLoadError, InputError
from ..images import ImageWarning
from ._outputs import Job, Source, Written, explain_one
from ._record import explanation_record
from ._setup import OutputDir, expand_inputs, load_model, resolve_class, resolve_device

__all__ = ["DEMO_SAMPLES", "Source", "explanation_record", "register"]

DEMO_SAMPLES = ("chelsea", "coffee", "astronaut")
"""Photographs shipped inside scikit-image (``skimage.data.<name>()``), explained by ``demo``."""

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_SETUP_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (any format PIL reads), folders (searched recursively) or glob patterns",
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
    _add_page_options(parser)


def _add_page_options(parser: argparse.ArgumentParser) -> None:
    """--html, --view, --class, --compare, --device, --random-weights."""
    parser.add_argument(
        "--html",
        action="store_true",
        help="also write <stem>.html, an interactive self-contained page (every cell, every class)",
    )
    parser.add_argument(
        "--view",
        choices=("full", "crop"),
        default=None,
        help="full: the whole photo, shorter side at the model size (default with --html); "
        "crop: the centre crop (default otherwise)",
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="NAME|ID",
        help="also draw <stem>_class<ID>.png for this class (repeatable); the page opens on the first",
    )
    parser.add_argument(
        "--compare",
        default="",
        metavar="METHODS",
        help="comma-separated methods of dense_readout.compare (e.g. gradcam,layergradcam) "
        "shown in the page beside the readout for the image's top-5 classes",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="torch device: cpu (default), cuda, cuda:1, mps",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="any timm architecture with random weights, no checkpoint (outputs marked RANDOM)",
    )


# -- the commands ---------------------------------------------------------------------
def run_explain(args: argparse.Namespace) -> int:
    from ..images import load_image

    sources: list[Source] = []
    stems: set[str] = set()
    for path, problem in expand_inputs(args.images):
        load = functools.partial(load_image, path)
        if problem is not None:
            load = functools.partial(_fail, problem)
        stem = _unique_stem(Path(path).stem, stems)
        sources.append(Source(name=str(path), stem=stem, load=load, title=Path(path).name))
    return _run(sources, args)


def _fail(message: str) -> Image.Image:
    raise ImageLoadError(message)


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


def _setup(args: argparse.Namespace) -> tuple[Job, OutputDir]:
    """Model, device, classes, methods and output folder; raises before any image."""
    from ..readout import DenseReadout

    if args.topk < 1:
        raise InputError(f"--topk must be >= 1, got {args.topk}.")
    args.view = args.view or ("full" if args.html else "crop")
    device = resolve_device(args.device)
    loaded = load_model(args)
    readout = DenseReadout(loaded.model.to(device))
    if args.topk > readout.num_classes:
        raise InputError(f"--topk {args.topk} exceeds the model's {readout.num_classes} classes.")
    classes = [
        resolve_class(c, loaded.names, readout.num_classes, option="--class") for c in args.classes
    ]
    methods = _methods(args.compare)
    if methods and not args.html:
        raise InputError("--compare shows its maps in the page; add --html.")
    out = OutputDir(args.out)
    out.prepare()
    return Job(readout, loaded, args, out.path, device, classes, methods), out


def _methods(text: str) -> list[str]:
    from ..compare import available_methods

    methods = [m.strip() for m in text.split(",") if m.strip()]
    known = available_methods()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise InputError(
            f"--compare: unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    return [m for m in methods if m != "dense-readout"]


def _run(sources: Sequence[Source], args: argparse.Namespace) -> int:
    try:
        job, out = _setup(args)
    except (DenseReadoutError, OSError) as error:
        _error(str(error))
        return EXIT_SETUP_FAILED
    written, failures, done = Written(), 0, 0
    try:
        for source in sources:
            failures += not _explain_reported(source, job, written)
            done += 1
    except KeyboardInterrupt:
        unfinished = written.discard_current()
        _interrupted(done, len(sources), written, sources[done].name, unfinished)
        return EXIT_INTERRUPTED
    finally:
        if not written.done:
            out.remove_if_unused()
    if failures:
        print(f"{failures} of {len(sources)} image(s) failed.", file=sys.stderr, flush=True)
    return EXIT_IMAGE_FAILED if failures else EXIT_OK


def _explain_reported(source: Source, job: Job, written: Written) -> bool:
    """Explain one image; print its line, its warnings and errors; True if it worked."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        try:
            line = explain_one(source, job, written)
        except ImageLoadError as error:  # its message already names the file
            line, message = None, str(error)
        except Exception as error:
            kind = (
                ""
                if isinstance(error, (DenseReadoutError, OSError))
                else f"{type(error).__name__}: "
            )
            hint = (
                " With --view full the input is the whole photo; --view crop reads out "
                "the centre crop at the model's input size."
                if isinstance(error, InputError) and job.args.view == "full"
                else ""
            )
            line, message = None, f"{source.name}: {kind}{error}{hint}"
    for warning in caught:
        if issubclass(warning.category, ImageWarning):
            print(f"warning: {warning.message}", file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if line is None:
        written.discard_current()
        _error(message)
        return False
    written.finish()
    print(line, flush=True)
    return True


def _interrupted(done: int, total: int, written: Written, current: str, removed: list) -> None:
    folders = sorted({str(p.parent) for p in written.done}) or ["nothing written"]
    dropped = f"; the unfinished {current} removed ({len(removed)} file(s))" if removed else ""
    print(
        f"interrupted: {done} of {total} image(s) done, {len(written.done)} complete file(s) "
        f"in {', '.join(folders)}{dropped}.",
        file=sys.stderr,
        flush=True,
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
