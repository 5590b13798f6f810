"""``dense-readout explain --model torchvision:NAME|monai:NAME CLIP...``: clips and volumes.

The 3-D path of ``explain`` (:mod:`dense_readout.commands.explain` hands over when
``--model`` names a video or volume model, see
:mod:`~dense_readout.commands._model_sources`). Each input is a clip or volume (a
folder of frames, ``.npy``, ``.nii``/``.nii.gz`` or a video file,
:func:`dense_readout.volumes.load_volume`), resized to ``--frames`` × ``--size`` and
read out on its ``t×h×w`` grid; into ``--out`` go ``<stem>.json``, ``<stem>.html``
(the page, with a slider over the grid's frames) and, unless ``--no-png``, a
label-grid and a heatmap PNG per grid frame
(:func:`dense_readout.volumes.explain_volume`). The checks that need no torch come
first (exit status 2), then the inputs (all bad: status 1, nothing loaded); a clip
that fails gives one ``error:`` line and status 1. Importing this module imports no
torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DenseReadoutError, InputError
from ._model_options import check_model_options
from ._model_sources import ModelSource, VolumeModel, build_volume_model, require_weights
from ._setup import OutputDir, check_output_dir

if TYPE_CHECKING:
    import numpy as np

__all__ = ["VOLUME_OPTIONS", "add_volume_options", "run_volumes"]

EXIT_OK, EXIT_FAILED, EXIT_SETUP_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
VOLUME_OPTIONS = ("frames", "size", "num_classes")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = [_positive(part) for part in text.replace("x", ",").split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}")
    return (parts[0], parts[-1])


def add_volume_options(parser: argparse.ArgumentParser) -> None:
    """``--frames``, ``--size``, ``--num-classes``: for video and volume models only."""
    group = parser.add_argument_group(
        "clips and volumes (with --model torchvision:NAME or monai:NAME)"
    )
    group.add_argument(
        "--frames",
        type=_positive,
        default=None,
        metavar="T",
        help="frames (slices) the clip is resampled to (default: 16 for torchvision, 96 for MONAI)",
    )
    group.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="N|H,W",
        help="frame size in pixels (default: the model's, 112 for r3d_18/mc3_18/r2plus1d_18, "
        "224 for the other torchvision models, 96 for MONAI)",
    )
    group.add_argument(
        "--num-classes",
        type=_positive,
        default=None,
        metavar="K",
        help="classes of the model's head (default: read from --checkpoint; 400 for "
        "torchvision and 2 for MONAI with --random-weights)",
    )


def run_volumes(args: argparse.Namespace, source: ModelSource, name: str) -> int:
    """Explain every input of ``args.images`` as a clip/volume with ``source``/``name``."""
    from ..volumes import clip_problem  # numpy, no torch

    try:
        _check(args, source, name)
    except DenseReadoutError as error:
        _error(str(error))
        return EXIT_SETUP_FAILED
    problems = [clip_problem(path) for path in args.images]
    if all(problems):
        for problem in problems:
            _error(str(problem))
        _failed(len(problems), len(problems))
        return EXIT_FAILED
    run = _Run(args, source, name)
    failures = 0
    try:
        for path, problem in zip(args.images, problems, strict=True):
            if problem:
                _error(problem)
                failures += 1
                continue
            failures += not run.explain(path)
            if run.setup_failed:
                return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        print(f"interrupted: {run.done} clip(s) done.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if run.out is not None and not run.done:
            run.out.remove_if_unused()
    if failures:
        _failed(failures, len(args.images))
    return EXIT_FAILED if failures else EXIT_OK


def _check(args: argparse.Namespace, source: ModelSource, name: str) -> None:
    """Every check of the options that needs no torch (and no input)."""
    if args.topk < 1:
        raise InputError(f"--topk must be >= 1, got {args.topk}.")
    check_model_options(args)
    require_weights(source, name, args.checkpoint, args.random_weights)
    for option, given in (
        ("--compare", bool(args.compare.strip())),
        ("--view", args.view is not None),
        ("--crop-pct", args.crop_pct != 1.0),
        ("--normalization imagenet", args.normalization != "model"),
    ):
        if given:
            raise InputError(
                f"{option} is for image models; a {source.description} reads the whole clip "
                "with its own normalisation (leave the option out)."
            )
    if len(args.classes) > 1:
        raise InputError("give at most one --class for a clip or volume (its heatmaps).")
    check_output_dir(args.out)


class _Run:
    """The model (built at the first clip: MONAI's input channels are the clip's) and outputs."""

    def __init__(self, args: argparse.Namespace, source: ModelSource, name: str) -> None:
        self.args, self.source, self.name = args, source, name
        self.loaded: VolumeModel | None = None
        self.names: list[str] | None = None
        self.target: int | None = None
        self.out: OutputDir | None = None
        self.device: Any = None
        self.setup_failed = False
        self.done = 0
        self.stems: set[str] = set()
        frames, side = source.defaults[name]
        self.size = (args.frames or frames, *(args.size or (side, side)))

    def explain(self, path: str) -> bool:
        """One clip: load, (first time) build the model, read out, write; print its line."""
        from ..errors import ImageLoadError
        from ..volumes import load_volume

        try:
            volume = load_volume(path)
        except (ImageLoadError, DenseReadoutError, OSError, ValueError) as error:
            message = str(error)
            _error(message if str(path) in message else f"{path}: {message}")
            return False
        if self.loaded is None:
            try:
                self._setup(self.source.channels or volume.shape[-1])
            except (DenseReadoutError, OSError) as error:
                _error(str(error))
                self.setup_failed = True
                return False
        try:
            line = self._explain(path, volume)
        except (DenseReadoutError, OSError) as error:
            _error(f"{path}: {error}")
            return False
        self.done += 1
        print(line, flush=True)
        return True

    def _setup(self, channels: int) -> None:
        from ..classes import resolve_class
        from ._setup import resolve_device

        self.device = resolve_device(self.args.device)
        self.loaded = build_volume_model(
            self.source,
            self.name,
            channels,
            checkpoint=self.args.checkpoint,
            random_weights=self.args.random_weights,
            num_classes=self.args.num_classes,
        )
        self.loaded.model.to(self.device)
        classes = self.loaded.num_classes  # --topk above it lists all of them
        self.names = _class_names(self.loaded, classes)
        if self.args.classes:
            self.target = resolve_class(self.args.classes[0], self.names, classes, option="--class")
        self.out = OutputDir(self.args.out)
        self.out.prepare()

    def _explain(self, path: str, volume: np.ndarray) -> str:
        import numpy as np

        from ..volumes import explain_volume, volume_tensor

        assert self.loaded is not None and self.out is not None
        channels = self.source.channels or volume.shape[-1]
        if volume.shape[-1] == 1 and channels == 3:
            volume = np.repeat(volume, 3, axis=-1)  # grey frames for an RGB model
        if volume.shape[-1] != self.loaded.channels:
            raise InputError(
                f"has {volume.shape[-1]} channel(s); the model was built for "
                f"{self.loaded.channels} (from the first input)."
            )
        x = volume_tensor(volume, self.size, self.source.mean, self.source.std).to(self.device)
        stem, n = _stem(path), 2
        while stem in self.stems:  # two clips named alike: walk, walk-2, ...
            stem, n = f"{_stem(path)}-{n}", n + 1
        self.stems.add(stem)
        random = self.loaded.weights == "random"
        written = explain_volume(
            self.loaded.model,
            x,
            self.out.path,
            self.names,
            stem=stem,
            target=self.target,
            topk=self.args.topk,
            pngs=not self.args.no_png,
            page={
                "title": Path(path).name,
                "model": f"{self.source.prefix}{self.name}",
                "random_weights": random,
                "slice_axis": self.source.slice_axis,
                "view": "{}×{}×{} input".format(*self.size),
            },
        )
        result = written["result"]
        probabilities = result.logits[0].detach().float().softmax(0)
        top = int(probabilities.argmax())
        label = self.names[top] if self.names else f"class {top}"
        files = [written["json"], written["page"], *(p for pair in written["frames"] for p in pair)]
        shown = ", ".join(str(p) for p in files[:2])
        more = f" (+{len(files) - 2} PNGs)" if len(files) > 2 else ""
        grid = "x".join(str(n) for n in result.grid_size)
        return (
            f"{path}: top-1 {label} ({float(probabilities[top]):.1%}); {grid} cells; "
            f"{'exact' if result.exact else 'not exact'}"
            f"{'; RANDOM WEIGHTS' if random else ''} -> {shown}{more}"
        )


def _class_names(loaded: VolumeModel, classes: int) -> list[str] | None:
    """Kinetics-400 names for a 400-class torchvision checkpoint (its only weights), else None."""
    if loaded.source.name == "torchvision" and classes == 400 and loaded.weights != "random":
        from torchvision.models._meta import _KINETICS400_CATEGORIES

        return list(_KINETICS400_CATEGORIES)
    return None


def _stem(path: str) -> str:
    """``brain.nii.gz`` → ``brain``, ``walk.mp4`` → ``walk``, a folder → its name."""
    import re

    name = Path(path.rstrip("/")).name
    name = name[: -len(".gz")] if name.lower().endswith(".nii.gz") else name
    name = name if Path(path).is_dir() else Path(name).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "clip"


def _failed(count: int, total: int) -> None:
    print(f"{count} of {total} clip(s) failed.", file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
