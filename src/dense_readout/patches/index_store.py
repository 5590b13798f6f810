"""On-disk layout of a patch index: settings, per-rank chunks, the merged FAISS index.

An index folder holds::

    build.json                    settings of the build (a rerun must match them)
    shards/rank<r>-of-<w>/        one folder per process of the build
        chunk-000000.npy          L2-normalised cell vectors of one batch (float32, n×C)
        chunk-000000.json         written last: the batch's images, vector ids, top-1 classes
        done.json                 the rank finished its images
    index.faiss                   the merged FAISS index (ids = image·h·w + u·w + v)
    images.json                   every image: path, size, status (ok or why skipped)
    top1.npy                      per vector id: the readout's top-1 class (-1: none)
    manifest.json                 written last by the merge: model, input size, grid, counts

Every file is written atomically (temporary file, then rename), so a killed build
leaves only complete chunks and a rerun continues after them.

Example:
    >>> import tempfile, numpy as np
    >>> layout = IndexLayout(tempfile.mkdtemp())
    >>> folder = layout.shard(0, 1)
    >>> write_chunk(folder, 0, np.ones((2, 3), np.float32), {"ids": [0, 1]})
    >>> [p.name for p in completed_chunks(folder)]
    ['chunk-000000.json']
    >>> read_chunk(completed_chunks(folder)[0])[0].shape
    (2, 3)
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from ..errors import InputError

__all__ = [
    "FORMAT",
    "IndexLayout",
    "completed_chunks",
    "fingerprint",
    "read_chunk",
    "read_json",
    "write_chunk",
    "write_json",
]

FORMAT = 1  # bump when the layout changes


class IndexLayout:
    """Paths inside an index folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def build(self) -> Path:
        """``build.json``: the build's settings and progress."""
        return self.root / "build.json"

    @property
    def manifest(self) -> Path:
        """``manifest.json``: what the index holds."""
        return self.root / "manifest.json"

    @property
    def index(self) -> Path:
        """``index.faiss``: the FAISS index."""
        return self.root / "index.faiss"

    @property
    def images(self) -> Path:
        """``images.json``: the indexed images, in vector order."""
        return self.root / "images.json"

    @property
    def top1(self) -> Path:
        """``top1.npy``: every cell's top-1 class."""
        return self.root / "top1.npy"

    def shard(self, rank: int, world: int) -> Path:
        """The folder of process ``rank`` of ``world`` (created)."""
        folder = self.root / "shards" / f"rank{rank}-of-{world}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def shards(self, world: int) -> list[Path]:
        """The folders of all ``world`` processes."""
        return [self.shard(rank, world) for rank in range(world)]


def write_json(path: Path, payload: Any) -> Path:
    """``payload`` as indented JSON, atomically."""
    return write_atomic(path, json.dumps(payload, indent=1))


def read_json(path: Path, what: str) -> Any:
    """A JSON file of the index, or :class:`InputError` naming ``what`` is missing/broken."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no {what}; is this a patch index folder?") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable {what} ({error}); rebuild the index.") from None


def write_chunk(folder: Path, number: int, vectors: np.ndarray, meta: dict[str, Any]) -> None:
    """Write chunk ``number``: its vectors, then its metadata (the completion mark)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32))
    write_atomic(folder / f"chunk-{number:06d}.npy", buffer.getvalue())
    write_json(folder / f"chunk-{number:06d}.json", meta)


def completed_chunks(folder: Path) -> list[Path]:
    """The metadata files of the complete chunks in ``folder``, in order."""
    return sorted(folder.glob("chunk-*.json"))


def read_chunk(meta_path: Path, mmap: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """``(vectors, metadata)`` of the chunk whose metadata file is ``meta_path``."""
    meta = json.loads(meta_path.read_text())
    vectors = np.load(meta_path.with_suffix(".npy"), mmap_mode="r" if mmap else None)
    return vectors, meta


def fingerprint(payload: Any) -> str:
    """A short hash of a JSON-able value (settings, the image list).

    Example:
        >>> fingerprint({"a": 1}) == fingerprint({"a": 1}) != fingerprint({"a": 2})
        True
    """
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
