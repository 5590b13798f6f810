"""Image inputs given as paths, folders or globs, expanded to files (no heavy imports).

Used by the command line (``explain``, ``index``) and by :mod:`dense_readout.export`
for plain folders; it imports neither torch nor PIL, so ``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs"]

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
