"""What the commands settle before the first image: inputs, device, output folder.

Every function raises the package's own errors with a message naming the fix;
the command turns them into one ``error:`` line and exit status 2. Nothing here
imports torch at module level (``--help`` must not); the model options are in
:mod:`dense_readout.commands._model_options`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .._inputs import IMAGE_EXTENSIONS, expand_inputs
from ..errors import ImageLoadError, InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "OutputDir",
    "Source",
    "check_output_dir",
    "expand_inputs",
    "input_problem",
    "load_picture",
    "resolve_device",
]


class Source(NamedTuple):
    """One image to explain: a display name, an output stem and a loader."""

    name: str
    stem: str
    load: Callable[[], Image.Image]
    title: str = ""


def input_problem(path: str) -> str | None:
    """Why an input path cannot be an image, told without opening it (or None).

    The same words as :func:`dense_readout.load_image`, so that the line reads the same
    whether the file is found missing before the model loads or while loading it.

    Example:
        >>> input_problem("no/such/file.jpg")
        'no/such/file.jpg: no such file.'
    """
    if not os.path.exists(path):
        return f"{path}: no such file."
    if os.path.isdir(path):
        return f"{path}: is a directory, not an image file."
    return None


def load_picture(spec: str) -> Image.Image:
    """An image file, or ``skimage:<name>`` (a scikit-image sample), as an RGB PIL image.

    Example:
        >>> load_picture("skimage:coffee").size
        (600, 400)
        >>> load_picture("skimage:nosuch")
        Traceback (most recent call last):
        ...
        dense_readout.errors.ImageLoadError: scikit-image has no sample 'skimage:nosuch'.
    """
    if spec.startswith("skimage:"):
        from PIL import Image
        from skimage import data

        loader = getattr(data, spec.split(":", 1)[1], None)
        if loader is None:
            raise ImageLoadError(f"scikit-image has no sample {spec!r}.")
        return Image.fromarray(loader()).convert("RGB")
    from ..images import load_image

    return load_image(spec).convert("RGB")


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
    import torch

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
        """Create the folder and check that files can be written into it."""
        missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"cannot create the output directory {self.path}: {error.strerror or error}; "
                "choose another --out."
            ) from None
        self.created = missing  # innermost first
        try:
            _probe_write(self.path)
        except InputError:
            self.remove_if_unused()
            raise

    def remove_if_unused(self) -> None:
        """Remove the folders :meth:`prepare` created, if they are still empty."""
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                return


def check_output_dir(path: str | Path) -> None:
    """Fail now, not after the work, if ``--out`` cannot hold files; creates nothing.

    An existing folder must accept a file (tried with a temporary file, so root,
    ACLs and read-only mounts count as they will); a missing one needs its nearest
    existing parent to be a folder that accepts one.

    Example:
        >>> import tempfile
        >>> check_output_dir(tempfile.mkdtemp() + "/new/sub")  # would be created: fine
        >>> check_output_dir(__file__ + "/sub")
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: cannot create the output directory ...: ... is a file; choose another --out.
    """
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        target = path if existing == path else existing
        verb = "use" if existing == path else "create"
        raise InputError(
            f"cannot {verb} the output directory {path}: {target} is a file; choose another --out."
        )
    _probe_write(existing, path)


def _probe_write(folder: Path, wanted: Path | None = None) -> None:
    import tempfile

    wanted = wanted or folder
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".dense-readout-probe-")
    except OSError as error:
        verb = "write into" if wanted == folder else "create"
        raise InputError(
            f"cannot {verb} the output directory {wanted}: {error.strerror or error}"
            f"{'' if wanted == folder else f' (in {folder})'}; choose another --out."
        ) from None
    os.close(handle)
    os.unlink(name)
