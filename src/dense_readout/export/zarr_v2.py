"""A minimal writer and reader of the Zarr v2 storage format (directory store, raw chunks).

Why our own ~100 lines instead of a dependency: the export writes each image's maps
as **one chunk file, atomically** (temporary file + rename, :func:`~dense_readout._atomic.write_atomic`),
so a process killed at any instant leaves only whole chunks, and ranks of a
``torch.distributed.run`` job write disjoint files of the *same* arrays without
locks. The format is the published Zarr v2 spec: ``.zgroup``/``.zarray``/``.zattrs``
JSON files and uncompressed C-order chunks named ``i.j.k``; zarr-python 2.x and 3.x
open it (``zarr.open_group(STORE, mode="r")``), and NumPy alone reads a chunk with
``np.fromfile``. A chunk never written reads as the array's ``fill_value``.

Example:
    >>> import tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> write_group(root, {"note": "demo"})
    >>> meta = create_array(root, "a", shape=(3, 2), chunks=(1, 2), dtype="<f4", fill_value="NaN")
    >>> write_chunk(root, "a", meta, (1, 0), np.array([[1.0, 2.0]], np.float32))
    >>> read_array(root, "a").tolist()
    [[nan, nan], [1.0, 2.0], [nan, nan]]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from ..errors import InputError

__all__ = [
    "array_meta",
    "chunk_path",
    "create_array",
    "read_array",
    "read_attrs",
    "read_chunk",
    "write_attrs",
    "write_chunk",
    "write_group",
]


def write_group(root: str | Path, attrs: dict[str, Any] | None = None) -> None:
    """Make ``root`` a Zarr v2 group (``.zgroup``), with ``attrs`` in ``.zattrs``."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / ".zgroup", json.dumps({"zarr_format": 2}))
    if attrs is not None:
        write_attrs(folder, attrs)


def write_attrs(folder: str | Path, attrs: dict[str, Any]) -> None:
    """Write ``.zattrs`` of a group or array folder atomically."""
    write_atomic(Path(folder) / ".zattrs", json.dumps(attrs, indent=1, default=str))


def read_attrs(folder: str | Path) -> dict[str, Any]:
    """The ``.zattrs`` of a group or array (empty dict when absent)."""
    path = Path(folder) / ".zattrs"
    return json.loads(path.read_text()) if path.is_file() else {}


def create_array(
    root: str | Path,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    fill_value: Any,
) -> dict[str, Any]:
    """Write the ``.zarray`` of an uncompressed array ``root/name``; returns its metadata.

    ``fill_value`` is what unwritten chunks read as (``"NaN"`` for floats, an int
    for integer arrays).
    """
    meta = {
        "zarr_format": 2,
        "shape": [int(s) for s in shape],
        "chunks": [int(c) for c in chunks],
        "dtype": np.dtype(dtype).str,
        "compressor": None,
        "fill_value": fill_value,
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
    }
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / ".zarray", json.dumps(meta))
    return meta


def array_meta(root: str | Path, name: str) -> dict[str, Any]:
    """The ``.zarray`` metadata of ``root/name``."""
    path = Path(root) / name / ".zarray"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such array; is {root} an export store?") from None


def chunk_path(root: str | Path, name: str, key: tuple[int, ...]) -> Path:
    """File of the chunk with grid index ``key``."""
    return Path(root) / name / ".".join(str(int(k)) for k in key)


def write_chunk(
    root: str | Path, name: str, meta: dict[str, Any], key: tuple[int, ...], data: np.ndarray
) -> None:
    """Write one chunk atomically; ``data`` may be smaller than the chunk (edge chunks)."""
    chunk = np.full(meta["chunks"], _fill(meta), dtype=np.dtype(meta["dtype"]))
    chunk[tuple(slice(0, s) for s in data.shape)] = data
    write_atomic(chunk_path(root, name, key), np.ascontiguousarray(chunk).tobytes())


def read_chunk(
    root: str | Path, name: str, meta: dict[str, Any], key: tuple[int, ...]
) -> np.ndarray:
    """One chunk as an array of the chunk shape (the fill value if never written)."""
    dtype = np.dtype(meta["dtype"])
    path = chunk_path(root, name, key)
    if not path.is_file():
        return np.full(meta["chunks"], _fill(meta), dtype=dtype)
    return np.fromfile(path, dtype=dtype).reshape(meta["chunks"])


def read_array(root: str | Path, name: str, rows: slice | None = None) -> np.ndarray:
    """Rows ``rows`` (along the first axis; default all) of an array, assembled from its chunks."""
    meta = array_meta(root, name)
    shape, chunks = meta["shape"], meta["chunks"]
    start, stop, _ = (rows or slice(None)).indices(shape[0])
    out = np.empty([max(stop - start, 0), *shape[1:]], dtype=np.dtype(meta["dtype"]))
    grid = [math.ceil(s / c) for s, c in zip(shape[1:], chunks[1:], strict=True)]
    for first in range(start // chunks[0], math.ceil(stop / chunks[0]) if stop else 0):
        for rest in np.ndindex(*grid):
            data = read_chunk(root, name, meta, (first, *rest))
            lo = first * chunks[0]
            take = slice(max(start - lo, 0), min(stop - lo, chunks[0]))
            region = [
                slice(r * c, min((r + 1) * c, s))
                for r, c, s in zip(rest, chunks[1:], shape[1:], strict=True)
            ]
            source = [take] + [slice(0, reg.stop - reg.start) for reg in region]
            target = [slice(lo + take.start - start, lo + take.stop - start), *region]
            out[tuple(target)] = data[tuple(source)]
    return out


def _fill(meta: dict[str, Any]) -> Any:
    value = meta["fill_value"]
    return float("nan") if value == "NaN" else value
