"""What ``explain``/``demo`` settle before the first image: inputs, model, device, classes, output.

Every function raises the package's own errors with a message naming the fix;
the command turns them into one ``error:`` line and exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..classes import resolve_class
from ..errors import CheckpointError, InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedModel",
    "OutputDir",
    "expand_inputs",
    "load_model",
    "resolve_class",
    "resolve_device",
]

IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
    ]
)
"""File extensions (any case) taken from folders given as inputs."""


def expand_inputs(items: Sequence[str]) -> list[tuple[str, str | None]]:
    """Input arguments → ``(path, error)``: folders recursively (image extensions), globs.

    A folder gives its image files in sorted order; a pattern with ``*``, ``?`` or
    ``[`` that is not an existing file is expanded (``**`` matches folders
    recursively); a folder or pattern with no images gives one error entry.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "sub"))
        >>> for name in ("a.JPG", "sub/b.png", "notes.txt"):
        ...     open(os.path.join(root, name), "w").close()
        >>> [os.path.relpath(p, root) for p, _ in expand_inputs([root])]
        ['a.JPG', 'sub/b.png']
        >>> expand_inputs([os.path.join(root, "*.gif")])[0][1].endswith("matches no file.")
        True
    """
    import glob

    found: list[tuple[str, str | None]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = _images_under(path)
            found += [(str(f), None) for f in files] or [
                (item, f"{item}: the folder holds no image files ({_extensions()}).")
            ]
        elif not path.exists() and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            files = [
                f
                for m in matches
                for f in (_images_under(Path(m)) if Path(m).is_dir() else [Path(m)])
            ]
            found += [(str(f), None) for f in files] or [
                (item, f"{item}: the pattern matches no file.")
            ]
        else:
            found.append((item, None))
    return found


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _extensions() -> str:
    return " ".join(sorted(IMAGE_EXTENSIONS))


def resolve_device(name: str) -> torch.device:
    """``--device`` → a usable :class:`torch.device`, or :class:`InputError` saying why not.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: --device gpu is not a device name; use cpu, cuda, cuda:1 or mps.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(
            f"--device {name} is not a device name; use cpu, cuda, cuda:1 or mps."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InputError(
                f"--device {name}: this machine has {count} CUDA device(s); use --device cpu."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available here; use --device cpu.")
    return device


@dataclass
class LoadedModel:
    """The model and what goes with it: preprocessing, ImageNet names (or None), labels."""

    model: Any
    preprocess: Any
    names: tuple[str, ...] | None
    name: str
    weights: str  # "embedded", "checkpoint" or "random"


def load_model(args: Any) -> LoadedModel:
    """The model ``--model``/``--checkpoint``/``--random-weights`` ask for, in eval mode."""
    from ..imagenet import imagenet_class_names
    from ..pretrained import DEFAULT_MODEL, EMBEDDED_WEIGHTS, HF_PREFIX, load_pretrained

    name = args.model or DEFAULT_MODEL
    if not 0 < args.crop_pct <= 1:
        raise InputError(f"--crop-pct must be in (0, 1], got {args.crop_pct}.")
    if args.random_weights:
        if args.checkpoint is not None:
            raise InputError("--random-weights and --checkpoint exclude each other; give one.")
        model, preprocess, names = _random_model(name, args)
        weights = "random"
    else:
        hf = name.startswith(HF_PREFIX)  # hf:DIR carries its weights (dense_readout.pretrained)
        if args.checkpoint is None and name not in EMBEDDED_WEIGHTS and not hf:
            raise CheckpointError(
                f"--model {name} needs --checkpoint PATH (a local state-dict file): only "
                f"{', '.join(sorted(EMBEDDED_WEIGHTS))} ship with weights, and nothing is "
                f"downloaded (or try the architecture with --random-weights)."
            )
        model, preprocess, names, name = load_pretrained(
            name, args.checkpoint, normalization=args.normalization, crop_pct=args.crop_pct
        )
        weights = "embedded" if args.checkpoint is None else "checkpoint"
    imagenet = tuple(names) == imagenet_class_names()
    labelled = imagenet or name.startswith(HF_PREFIX)  # hf:DIR: names from config.id2label
    return LoadedModel(model, preprocess, tuple(names) if labelled else None, name, weights)


def _random_model(name: str, args: Any):
    import timm

    from ..preprocessing import Preprocess

    try:
        model = timm.create_model(name, pretrained=False).eval()
    except RuntimeError as error:  # timm raises RuntimeError for unknown names
        raise CheckpointError(f"Unknown timm model {name!r}: {error}") from None
    preprocess = Preprocess.from_model(model, args.normalization, crop_pct=args.crop_pct)
    classes = int(getattr(model, "num_classes", 0))
    from ..imagenet import imagenet_class_names

    names = imagenet_class_names() if classes == 1000 else ()
    return model, preprocess, names


class OutputDir:
    """``--out``, created up front (to fail early) and removed again if nothing was written.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> out = OutputDir(os.path.join(root, "a", "b"))
        >>> out.prepare(); os.path.isdir(out.path)
        True
        >>> out.remove_if_unused(); os.listdir(root)
        []
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.created: list[Path] = []

    def prepare(self) -> None:
        missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"cannot create the output directory {self.path}: {error.strerror or error}; "
                "choose another --out."
            ) from None
        self.created = missing  # innermost first

    def remove_if_unused(self) -> None:
        """Remove the folders :meth:`prepare` created, if they are still empty."""
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                return
