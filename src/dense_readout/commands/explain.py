"""``dense-readout explain IMAGE...``: pictures, a page and JSON per image (or clip).

For every image the command (and ``demo``, :mod:`dense_readout.commands.demo`, which
shares its options and its run) writes, into ``--out``:

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
on stderr; the others are still done and the exit status is 1.

With a video or volume model (``--model torchvision:r3d_18``, ``--model
monai:densenet121``; the prefixes are :data:`._model_sources.MODEL_SOURCES`) every
input is a clip or volume and :mod:`._explain_volume` explains it: per-frame PNGs,
the JSON and the page with a frame slider. A clip or volume file given to an image
model stops before the model loads (status 2), naming the models that read it. A bad model,
checkpoint or option stops before the model loads, where it can, and before any
image with exit status 2; inputs that are all missing stop before the model loads
(status 1); Ctrl-C stops with one line saying what was written (status 130); every
file is written atomically. Importing this module does not import torch.

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
from typing import TYPE_CHECKING, Any

from ..errors import DenseReadoutError, ImageLoadError, InputError
from ._explain_volume import VOLUME_OPTIONS, add_volume_options, run_volumes
from ._model_options import DEFAULT_MODEL, add_model_options, check_model_options, load_model
from ._model_sources import model_source
from ._setup import (
    OutputDir,
    Source,
    check_output_dir,
    expand_inputs,
    input_problem,
)

if TYPE_CHECKING:
    from PIL import Image

    from ._outputs import Job, Written
    from ._record import explanation_record

__all__ = ["Source", "add_explain_options", "explanation_record", "register", "run_sources"]

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_SETUP_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


# -- argument parsing -----------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` subcommand."""
    explain = subparsers.add_parser(
        "explain",
        help="label grid, heatmap and JSON for image files (or video clips and 3-D volumes)",
        description=(
            "Explain image files with the dense readout: for each IMAGE write a label-grid "
            "PNG, a heatmap PNG of the image-level top-1 class and a JSON report into --out. "
            "With a video or volume model (--model torchvision:NAME, a torchvision.models.video "
            "classifier, or monai:NAME, a MONAI 3-D net such as densenet121, resnet18, "
            "efficientnet-b0; with --checkpoint or --random-weights) each input is a clip or "
            "volume: a folder of frames, .npy, .nii/.nii.gz or a video file; it gets a PNG "
            "pair per grid frame, the JSON and an HTML page with a frame slider."
        ),
    )
    explain.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (any format PIL reads), folders (searched recursively) or glob "
        "patterns; with a video/volume --model: clips or volumes",
    )
    add_explain_options(explain, default_out="dense-readout-out")
    add_volume_options(explain)
    explain.set_defaults(func=run_explain)


def __getattr__(name: str) -> Any:
    """``explanation_record``, imported on first use (its module imports torch)."""
    if name == "explanation_record":
        from ._record import explanation_record

        return explanation_record
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_explain_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options of ``explain`` and ``demo`` (all but the inputs)."""
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
        "--no-png", action="store_true", help="write only the JSON reports (faster for many images)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="torch device: cpu (default), cuda, cuda:1, mps",
    )
    _add_page_options(parser)
    add_model_options(parser)


def _add_page_options(parser: argparse.ArgumentParser) -> None:
    """--html, --view, --class, --compare."""
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


# -- the commands ---------------------------------------------------------------------
def run_explain(args: argparse.Namespace) -> int:
    """Run ``explain``; returns the exit status."""
    try:
        source, name = model_source(args.model)
        if source.spatial_dims == 3:
            return run_volumes(args, source, name)
        _check_image_inputs(args)
    except DenseReadoutError as error:
        _error(str(error))
        return EXIT_SETUP_FAILED
    sources: list[Source] = []
    problems: list[str | None] = []
    stems: set[str] = set()
    for path, problem in expand_inputs(args.images):
        problem = problem or input_problem(path)  # told now, before the model loads
        load = functools.partial(_fail, problem) if problem else functools.partial(_load, path)
        stem = _unique_stem(Path(path).stem, stems)
        sources.append(Source(name=str(path), stem=stem, load=load, title=Path(path).name))
        problems.append(problem)
    return run_sources(sources, args, problems)


def _check_image_inputs(args: argparse.Namespace) -> None:
    """An image model gets images: clip files and the clip options point to the video models."""
    from ..volumes import is_clip_file  # numpy only

    model = args.model or DEFAULT_MODEL
    clips = [path for path in args.images if is_clip_file(path)]
    if clips:
        raise InputError(
            f"{clips[0]} is a clip or volume, and --model {model} is a 2-D image classifier; "
            "explain it with a video or volume model, e.g. --model torchvision:r3d_18 or "
            "--model monai:densenet121 (with --checkpoint PATH or --random-weights)."
        )
    given = [f"--{o.replace('_', '-')}" for o in VOLUME_OPTIONS if getattr(args, o) is not None]
    if given:
        raise InputError(
            f"{', '.join(given)} set the clip size of video and volume models; --model {model} "
            "reads images (use --model torchvision:NAME or monai:NAME for clips)."
        )


def _load(path: str) -> Image.Image:
    from ..images import load_image  # numpy and PIL: not before the first image

    return load_image(path)


def _fail(message: str) -> Image.Image:
    raise ImageLoadError(message)


def run_sources(
    sources: Sequence[Source], args: argparse.Namespace, problems: Sequence[str | None] = ()
) -> int:
    """Explain ``sources`` with the options of :func:`add_explain_options`.

    The checks that need no model come first (exit status 2); when every input is
    already known to be bad (``problems``), each is reported and nothing is loaded
    (status 1); then the model, and one line per image.
    """
    try:
        _check_options(args)
    except DenseReadoutError as error:
        _error(str(error))
        return EXIT_SETUP_FAILED
    if problems and all(problems):
        for problem in problems:
            _error(str(problem))
        print(f"{len(problems)} of {len(problems)} image(s) failed.", file=sys.stderr, flush=True)
        return EXIT_IMAGE_FAILED
    return _run(sources, args)


def _check_options(args: argparse.Namespace) -> None:
    """Every check that needs neither the model nor torch."""
    if args.topk < 1:
        raise InputError(f"--topk must be >= 1, got {args.topk}.")
    check_model_options(args)
    if _method_names(args.compare) and not args.html:
        raise InputError("--compare shows its maps in the page; add --html.")
    check_output_dir(args.out)


def _setup(args: argparse.Namespace) -> tuple[Job, OutputDir]:
    """Model, device, classes, methods and output folder; raises before any image."""
    from ..classes import resolve_class
    from ..readout import DenseReadout
    from ._outputs import Job
    from ._setup import resolve_device

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
    out = OutputDir(args.out)
    out.prepare()
    return Job(readout, loaded, args, out.path, device, classes, methods), out


def _method_names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _methods(text: str) -> list[str]:
    from ..compare import available_methods

    methods = _method_names(text)
    known = available_methods()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise InputError(
            f"--compare: unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    return [m for m in methods if m != "dense-readout"]


def _run(sources: Sequence[Source], args: argparse.Namespace) -> int:
    from ._outputs import Written

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
    from ..images import ImageWarning
    from ._outputs import explain_one

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
