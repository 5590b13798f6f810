"""Open a patch index and search it: by vector, or by a cell or box of an image.

Example:
    >>> import tempfile, timm, torch
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index
    >>> root = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     Image.effect_noise((96, 96), 40 + 20 * k).convert("RGB").save(f"{root}/{k}.png")
    >>> _ = torch.manual_seed(0)
    >>> extract, prep = GridExtractor(timm.create_model("test_resnet").eval()), Preprocess(resize=96, crop=96)
    >>> _ = build_index([f"{root}/{k}.png" for k in range(3)], f"{root}/ix", extract, prep,
    ...                 model_name="test_resnet", progress=False)
    >>> index = PatchIndex.open(f"{root}/ix")
    >>> result = query_image(index, extract, prep, f"{root}/1.png", cell=(2, 0), k=3,
    ...                      model_name="test_resnet")
    >>> first = result.hits[0]
    >>> first.image, first.cell, round(first.similarity, 4)
    (1, (2, 0), 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..images import load_image
from ..preprocessing import Preprocess
from .grid import GridExtractor, cell_boxes, normalise_rows
from .index_merge import faiss
from .index_store import IndexLayout, completed_chunks, read_chunk, read_json

__all__ = ["Hit", "PatchIndex", "QueryResult", "query_image"]


@dataclass(frozen=True)
class Hit:
    """One retrieved patch: its vector id, image, cell, pixel box and similarity.

    Example:
        >>> from dense_readout.patches import Hit
        >>> hit = Hit(id=12, image=1, path="b.png", cell=(1, 0), box=(0, 32, 32, 64), similarity=0.87, top1="tabby")
        >>> hit.image, hit.cell, hit.box[2] - hit.box[0]
        (1, (1, 0), 32)
    """

    id: int
    image: int
    path: str
    cell: tuple[int, int]
    box: tuple[int, int, int, int]
    similarity: float
    top1: str | None = None


@dataclass
class QueryResult:
    """The query (image, cells used, box) and its hits, most similar first.

    Example:
        >>> from dense_readout.patches import Hit, QueryResult
        >>> hit = Hit(3, 0, "a.png", (0, 1), (32, 0, 64, 32), 0.9)
        >>> result = QueryResult("q.png", [(1, 1)], (32, 32, 64, 64), [hit])
        >>> record = result.to_dict()
        >>> record["query"]["cells"], record["hits"][0]["similarity"]
        ([[1, 1]], 0.9)
    """

    path: str
    cells: list[tuple[int, int]]
    box: tuple[int, int, int, int]
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The query and its hits as a plain dictionary (for JSON)."""
        return {
            "query": {"path": self.path, "cells": [list(c) for c in self.cells], "box": self.box},
            "hits": [asdict(hit) for hit in self.hits],
        }


class PatchIndex:
    """A finished index folder: manifest, FAISS index, image table and per-cell top-1.

    Example:
        >>> import tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> for k in range(2):
        ...     Image.effect_noise((64, 64), 40 + 20 * k).convert("RGB").save(f"{root}/{k}.png")
        >>> extract = GridExtractor(timm.create_model("test_resnet").eval())
        >>> _ = build_index([f"{root}/{k}.png" for k in range(2)], f"{root}/ix", extract,
        ...                 Preprocess(resize=96, crop=96), model_name="test_resnet", progress=False)
        >>> index = PatchIndex.open(f"{root}/ix")
        >>> index.grid, index.size, index.vectors([0, 17]).shape[0]
        ((3, 3), 18, 2)
        >>> tmp.cleanup()
    """

    def __init__(self, root: Path, manifest: dict[str, Any], engine: Any, images: list[dict]):
        self.root, self.manifest, self.engine, self.images = root, manifest, engine, images
        self.top1 = np.load(IndexLayout(root).top1)

    @classmethod
    def open(cls, root: str | Path) -> PatchIndex:
        """Open ``root``; :class:`InputError` if it is not a finished index."""
        layout = IndexLayout(root)
        if not layout.manifest.exists():
            hint = "finish it with the same build command" if layout.build.exists() else "build one"
            raise InputError(f"{root}: not a finished patch index (no manifest.json); {hint}.")
        manifest = read_json(layout.manifest, "manifest")
        engine = faiss().deserialize_index(np.fromfile(layout.index, dtype=np.uint8))
        return cls(layout.root, manifest, engine, read_json(layout.images, "image table"))

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the indexed images' grid."""
        return int(self.manifest["grid"][0]), int(self.manifest["grid"][1])

    @property
    def size(self) -> int:
        """Number of vectors in the index."""
        return int(self.engine.ntotal)

    def check_model(self, model_name: str, input_size: Sequence[int]) -> None:
        """Refuse a query made with another model or input size, naming both."""
        built = (self.manifest["model"], list(self.manifest["input_size"]))
        asked = (model_name, [int(s) for s in input_size])
        if built != asked:
            raise InputError(
                f"{self.root} was built with model {built[0]} at input size "
                f"{built[1][0]}x{built[1][1]}; this query uses {asked[0]} at "
                f"{asked[1][0]}x{asked[1][1]}. Query with --model {built[0]} "
                f"--input-size {built[1][0]} (vectors of different models are not comparable)."
            )

    def search(
        self, vectors: np.ndarray, k: int = 20, nprobe: int | None = None
    ) -> list[list[Hit]]:
        """The ``k`` nearest patches (cosine) of each row of ``vectors`` (``n×dim``)."""
        if self.size == 0:
            raise InputError(f"{self.root}: the index is empty; build it from readable images.")
        if k < 1:
            raise InputError(f"-k must be at least 1, got {k}.")
        if nprobe is not None and hasattr(self.engine, "nprobe"):
            self.engine.nprobe = int(nprobe)
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.engine.d)
        scores, ids = self.engine.search(queries, min(k, self.size))
        return [
            [self.hit(int(i), float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]

    def hit(self, vector_id: int, similarity: float = float("nan")) -> Hit:
        """The :class:`Hit` of vector ``vector_id``."""
        rows, cols = self.grid
        image, cell = divmod(vector_id, rows * cols)
        top1 = int(self.top1[vector_id]) if vector_id < len(self.top1) else -1
        names = self.manifest.get("class_names")
        name = (names[top1] if names else f"class {top1}") if top1 >= 0 else None
        box = self.boxes(image)[cell]
        entry = self.images[image]
        corners = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        return Hit(vector_id, image, entry["path"], divmod(cell, cols), corners, similarity, name)

    def boxes(self, image: int) -> np.ndarray:
        """Pixel boxes of image ``image``'s cells in its original frame (``h·w×4``)."""
        prep = self.manifest["preprocessing"]
        size = self.images[image]["size"]
        return cell_boxes(size, self.grid, int(prep["resize"]), int(prep["crop"]))

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of ``ids``, in that order, read from the chunks."""
        wanted = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(wanted), int(self.manifest["dim"])), np.float32)
        found = np.zeros(len(wanted), bool)
        position = {int(v): n for n, v in enumerate(wanted)}
        layout = IndexLayout(self.root)
        for folder in layout.shards(int(self.manifest["world_size"])):
            for path in completed_chunks(folder):
                vectors, meta = read_chunk(path, mmap=True)
                for row, vector_id in enumerate(meta["ids"]):
                    if vector_id in position:
                        out[position[vector_id]] = vectors[row]
                        found[position[vector_id]] = True
        if not found.all():
            raise InputError(f"{int((~found).sum())} of the ids are not in {self.root}.")
        return out

    def ids(self) -> np.ndarray:
        """Every vector id in the index (sorted)."""
        cells = self.grid[0] * self.grid[1]
        ok = [n for n, e in enumerate(self.images) if e["status"] == "ok"]
        return (np.asarray(ok, np.int64)[:, None] * cells + np.arange(cells)).reshape(-1)


def query_image(
    index: PatchIndex,
    extractor: GridExtractor,
    preprocess: Preprocess,
    image: str | Path | Image.Image,
    *,
    cell: tuple[int, int] | None = None,
    box: Sequence[float] | None = None,
    k: int = 20,
    model_name: str,
    nprobe: int | None = None,
) -> QueryResult:
    """Search ``index`` for the patches nearest a cell (or the cells under a box) of ``image``.

    ``box`` is ``x0, y0, x1, y1`` in the image's own pixels: the cells it overlaps are
    averaged (weighted by overlap) and renormalised. Without ``cell`` or ``box``:
    the centre cell.

    Example:
        >>> import tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index, query_image
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> for k in range(3):
        ...     Image.effect_noise((96, 96), 40 + 20 * k).convert("RGB").save(f"{root}/{k}.png")
        >>> extract, prep = GridExtractor(timm.create_model("test_resnet").eval()), Preprocess(resize=96, crop=96)
        >>> _ = build_index([f"{root}/{k}.png" for k in range(3)], f"{root}/ix", extract, prep,
        ...                 model_name="test_resnet", progress=False)
        >>> index = PatchIndex.open(f"{root}/ix")
        >>> result = query_image(index, extract, prep, f"{root}/1.png", cell=(2, 0), k=3, model_name="test_resnet")
        >>> first = result.hits[0]  # the queried cell itself is in the index
        >>> len(result.hits), first.image, first.cell, round(first.similarity, 4)
        (3, 1, (2, 0), 1.0)
        >>> tmp.cleanup()
    """
    index.check_model(model_name, (preprocess.crop, preprocess.crop))
    picture = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    grid = extractor(preprocess(picture).unsqueeze(0))[0]
    rows, cols = grid.shape[1:]
    if (rows, cols) != index.grid:
        raise InputError(f"the query grid is {rows}x{cols}, the index's {index.grid}.")
    boxes = cell_boxes(picture.size, (rows, cols), preprocess.resize, preprocess.crop)
    weights = _cell_weights(boxes, (rows, cols), cell, box)
    vectors = normalise_rows(grid.flatten(1).T)
    query = normalise_rows((torch.from_numpy(weights).float()[:, None] * vectors).sum(0))
    used = [divmod(int(n), int(cols)) for n in np.flatnonzero(weights)]
    chosen = boxes[weights > 0]
    outline = (*chosen[:, :2].min(0).tolist(), *chosen[:, 2:].max(0).tolist())
    path = str(image) if not isinstance(image, Image.Image) else "<image>"
    hits = index.search(query.numpy()[None], k, nprobe)[0]
    return QueryResult(path, used, tuple(int(v) for v in outline), hits)  # type: ignore[arg-type]


def _cell_weights(
    boxes: np.ndarray,
    grid: tuple[int, int],
    cell: tuple[int, int] | None,
    box: Sequence[float] | None,
) -> np.ndarray:
    rows, cols = grid
    weights = np.zeros(rows * cols)
    if cell is not None and box is not None:
        raise InputError("give --cell or --box, not both.")
    if box is None:
        u, v = cell if cell is not None else (rows // 2, cols // 2)
        if not (0 <= u < rows and 0 <= v < cols):
            raise InputError(
                f"cell ({u}, {v}) is outside the {rows}x{cols} grid: u goes from 0 to "
                f"{rows - 1}, v from 0 to {cols - 1}."
            )
        weights[u * cols + v] = 1.0
        return weights
    x0, y0, x1, y1 = (float(b) for b in box)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {tuple(box)} is empty: give x0,y0,x1,y1 with x1 > x0, y1 > y0.")
    overlap_w = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    overlap_h = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    weights = overlap_w * overlap_h
    if weights.sum() <= 0:
        covered = (*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist())
        raise InputError(
            f"box {tuple(box)} overlaps no cell; the model sees the region {tuple(covered)}."
        )
    return weights / weights.sum()
