"""Merge the shards of a build into one FAISS index (exact ``flat`` or ``ivf-pq``).

Vector ids are ``image·h·w + u·w + v`` whatever process extracted them, so a build
over several processes gives the same index as one process. ``ivf-pq`` is trained
on a fixed random sample of the ids (the same for any number of processes), then
the vectors are added chunk by chunk: memory holds the sample and the codes, never
all vectors at once. ``dense-readout index merge INDEX`` reruns this step (e.g. to
switch ``--index`` without extracting again).

Example:
    >>> pick_pq_m(1280), pick_pq_m(96), pick_nlist(65_000), pick_nlist(100)
    (64, 24, 1019, 2)
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from .._optional import require
from ..errors import InputError
from .index_store import IndexLayout, completed_chunks, read_chunk, read_json, write_json

__all__ = ["INDEX_KINDS", "faiss", "merge_index", "pick_nlist", "pick_pq_m"]

INDEX_KINDS = ("flat", "ivf-pq")


def faiss() -> Any:
    """The ``faiss`` module, or :class:`MissingDependencyError` naming the ``patches`` extra."""
    return require("faiss", extra="patches", purpose="patch indexes")


def pick_nlist(count: int) -> int:
    """IVF lists for ``count`` vectors: about ``4·sqrt(count)``, at least 39 vectors per list."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def pick_pq_m(dim: int) -> int:
    """PQ sub-quantisers: the largest divisor of ``dim`` up to ``min(64, dim // 4)``."""
    limit = max(1, min(64, dim // 4))
    return max(m for m in range(1, limit + 1) if dim % m == 0)


def merge_index(
    root: str | Path,
    *,
    index: str = "flat",
    nlist: int | None = None,
    pq_m: int | None = None,
    nprobe: int = 32,
    train_size: int = 32_768,
    progress: bool = False,
) -> dict[str, Any]:
    """Build ``index.faiss``, ``images.json``, ``top1.npy`` and ``manifest.json`` in ``root``.

    Example:
        >>> import tempfile, timm
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index, merge_index
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> for k in range(2):
        ...     Image.new("RGB", (64, 64), (90 * k, 90, 30)).save(f"{root}/{k}.png")
        >>> extract = GridExtractor(timm.create_model("test_resnet").eval())
        >>> _ = build_index([f"{root}/{k}.png" for k in range(2)], f"{root}/ix", extract,
        ...                 Preprocess(resize=96, crop=96), model_name="test_resnet", progress=False)
        >>> manifest = merge_index(f"{root}/ix")  # again, from the stored chunks (no model needed)
        >>> PatchIndex.open(f"{root}/ix").size
        18
        >>> tmp.cleanup()
    """
    if index not in INDEX_KINDS:
        raise InputError(f"--index {index}: choose one of {', '.join(INDEX_KINDS)}.")
    layout = IndexLayout(root)
    build = read_json(layout.build, "build settings (build.json)")
    chunks = _finished_chunks(layout, int(build["world_size"]))
    images, top1, count = _tables(build, chunks)
    if count == 0:
        raise InputError(
            f"{root}: no image could be read ({len(images)} skipped); nothing to index."
        )
    dim = int(build["dim"])
    params: dict[str, Any] = {}
    if index == "flat":
        engine = faiss().IndexIDMap2(faiss().IndexFlatIP(dim))
    else:
        engine, params = _trained_ivf_pq(chunks, dim, count, nlist, pq_m, nprobe, train_size)
    for path in chunks:
        vectors, meta = read_chunk(path)
        if len(meta["ids"]):
            engine.add_with_ids(np.ascontiguousarray(vectors), np.asarray(meta["ids"], np.int64))
    write_atomic(layout.index, bytes(faiss().serialize_index(engine)))
    buffer = io.BytesIO()
    np.save(buffer, top1)
    write_atomic(layout.top1, buffer.getvalue())
    write_json(layout.images, images)
    skipped = [{"path": e["path"], "reason": e["reason"]} for e in images if e["status"] != "ok"]
    manifest = {k: v for k, v in build.items() if k != "images"}
    manifest.update(
        index=index,
        index_params=params,
        counts={
            "images": len(images),
            "indexed": len(images) - len(skipped),
            "skipped": len(skipped),
            "vectors": count,
        },
        skipped=skipped,
    )
    write_json(layout.manifest, manifest)
    return manifest


def _finished_chunks(layout: IndexLayout, world: int) -> list[Path]:
    chunks: list[Path] = []
    for rank, folder in enumerate(layout.shards(world)):
        if not (folder / "done.json").exists():
            raise InputError(
                f"{layout.root}: process {rank} of {world} has not finished extracting; "
                "rerun the same 'dense-readout index build' command to complete it."
            )
        chunks += completed_chunks(folder)
    return chunks


def _tables(build: dict[str, Any], chunks: list[Path]) -> tuple[list[dict], np.ndarray, int]:
    """Per-image entries (path, size, status), top-1 per vector id, and the vector count."""
    paths = build["images"]
    cells = int(build["grid"][0]) * int(build["grid"][1])
    images: list[dict[str, Any]] = [
        {"path": p, "status": "skipped", "reason": "not extracted"} for p in paths
    ]
    top1 = np.full(len(paths) * cells, -1, dtype=np.int32)
    count = 0
    for path in chunks:
        meta = read_json(path, "chunk metadata")
        for entry in meta["images"]:
            images[entry["index"]] = {"path": paths[entry["index"]], **entry}
            images[entry["index"]].pop("index")
        ids = np.asarray(meta["ids"], dtype=np.int64)
        count += len(ids)
        if "top1" in meta and len(ids):
            top1[ids] = meta["top1"]
    return images, top1, count


def _trained_ivf_pq(
    chunks: list[Path],
    dim: int,
    count: int,
    nlist: int | None,
    pq_m: int | None,
    nprobe: int,
    train_size: int,
) -> tuple[Any, dict[str, Any]]:
    """An untrained-then-trained ``IndexIVFPQ`` (inner product) and its parameters."""
    sample = _training_sample(chunks, count, train_size)
    nlist = nlist or pick_nlist(len(sample))
    pq_m = pq_m or pick_pq_m(dim)
    if dim % pq_m:
        raise InputError(f"--pq-m {pq_m} must divide the vector dimension {dim}.")
    nbits = max(1, min(8, int(math.log2(max(2, len(sample) // 4)))))
    quantizer = faiss().IndexFlatIP(dim)
    engine = faiss().IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, faiss().METRIC_INNER_PRODUCT)
    engine.train(sample)
    engine.nprobe = min(nprobe, nlist)
    params = {"nlist": nlist, "pq_m": pq_m, "nbits": nbits, "nprobe": engine.nprobe}
    return engine, {**params, "train_size": len(sample)}


def _training_sample(chunks: list[Path], count: int, train_size: int) -> np.ndarray:
    """Vectors of a seeded random set of ids, in id order (independent of the sharding)."""
    all_ids = np.sort(
        np.concatenate([np.asarray(read_json(p, "chunk")["ids"], np.int64) for p in chunks])
    )
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(all_ids, size=min(train_size, count), replace=False))
    rows, ids = [], []
    for path in chunks:
        vectors, meta = read_chunk(path, mmap=True)
        chunk_ids = np.asarray(meta["ids"], np.int64)
        keep = np.isin(chunk_ids, chosen)
        rows.append(np.asarray(vectors[keep]))
        ids.append(chunk_ids[keep])
    order = np.argsort(np.concatenate(ids))
    return np.ascontiguousarray(np.concatenate(rows)[order], dtype=np.float32)
