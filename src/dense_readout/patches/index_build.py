"""Build a patch index: stream images through the model, one chunk of cell vectors per batch.

:func:`build_index` runs in one process or under ``python -m torch.distributed.run``:
process ``r`` of ``w`` extracts images ``i ≡ r (mod w)`` into its own shard folder;
after a barrier, rank 0 merges all shards into one FAISS index
(:func:`dense_readout.patches.index_merge.merge_index`). A rerun of the same build
skips the chunks already written (resume after a kill); other settings are refused.

Example:
    >>> import tempfile, timm, torch
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index
    >>> root = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     Image.new("RGB", (80, 64), (60 * k, 90, 30)).save(f"{root}/{k}.png")
    >>> _ = torch.manual_seed(0)
    >>> model = timm.create_model("test_resnet").eval()
    >>> summary = build_index(sorted(Path(root).glob("*.png")), f"{root}/index",
    ...     GridExtractor(model), Preprocess(resize=96, crop=96), model_name="test_resnet",
    ...     progress=False)
    >>> summary["counts"]
    {'images': 3, 'indexed': 3, 'skipped': 0, 'vectors': 27}
    >>> PatchIndex.open(f"{root}/index").grid
    (3, 3)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DenseReadoutError, ImageLoadError, InputError
from ..evaluation.distributed import barrier, distributed_context, raise_on_every_rank
from ..images import load_image
from ..preprocessing import Preprocess
from .grid import GridExtractor, normalise_rows
from .index_merge import INDEX_KINDS, merge_index
from .index_store import (
    FORMAT,
    IndexLayout,
    completed_chunks,
    fingerprint,
    read_json,
    write_chunk,
    write_json,
)

__all__ = ["build_index", "extract_shard"]


def build_index(
    images: Sequence[str | Path],
    out: str | Path,
    extractor: GridExtractor,
    preprocess: Preprocess,
    *,
    model_name: str,
    batch_size: int = 32,
    index: str = "flat",
    class_names: Sequence[str] | None = None,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
    merge_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract every cell vector of ``images`` into ``out`` and build the index there.

    Args:
        images: image files, in the order that defines the vector ids.
        out: the index folder (created; a build there is resumed).
        extractor: the grid of the model (:class:`~dense_readout.patches.GridExtractor`).
        preprocess: resize/crop/normalise; its ``crop`` is the input size.
        model_name: recorded in the manifest; a query with another model is refused.
        batch_size: images per forward pass.
        index: ``"flat"`` (exact inner product) or ``"ivf-pq"``.
        class_names: names of the head's classes (the map colours cells by top-1).
        model_info: more settings that identify the model (weights, checkpoint, seed).
        progress: show a progress bar.
        merge_options: ``nlist``, ``pq_m``, ``nprobe``, ``train_size`` for IVF-PQ.

    Returns the manifest (on every rank). A corrupt image is skipped and counted.

    Example:
        >>> import tempfile, timm
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> for k in range(3):
        ...     Image.new("RGB", (80, 64), (60 * k, 90, 30)).save(f"{root}/{k}.png")
        >>> extract = GridExtractor(timm.create_model("test_resnet").eval())
        >>> summary = build_index([f"{root}/{k}.png" for k in range(3)], f"{root}/index", extract,
        ...                       Preprocess(resize=96, crop=96), model_name="test_resnet", progress=False)
        >>> summary["counts"]  # a 3×3 grid per image
        {'images': 3, 'indexed': 3, 'skipped': 0, 'vectors': 27}
        >>> tmp.cleanup()
    """
    if index not in INDEX_KINDS:
        raise InputError(f"--index {index}: choose one of {', '.join(INDEX_KINDS)}.")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    paths = [str(p) for p in images]
    if not paths:
        raise InputError("no images to index: the folder holds no image files.")
    layout = IndexLayout(out)
    with distributed_context() as context:
        rank, world = context.rank, context.world_size
        settings = _settings(paths, extractor, preprocess, model_name, batch_size, world)
        settings.update(model_info or {}, class_names=list(class_names) if class_names else None)
        refusal = None
        if rank == 0:
            try:
                _start_or_resume(layout, settings, paths)
            except InputError as error:
                refusal = str(error)
        raise_on_every_rank(refusal)  # a refused resume stops all processes, not just rank 0
        extract_shard(
            paths, layout.shard(rank, world), extractor, preprocess, settings, progress, rank, world
        )
        barrier()
        if rank == 0:
            merge_index(layout.root, index=index, progress=progress, **(merge_options or {}))
        barrier()
    return read_json(layout.manifest, "manifest")


def _settings(
    paths: list[str],
    extractor: GridExtractor,
    preprocess: Preprocess,
    model_name: str,
    batch_size: int,
    world: int,
) -> dict[str, Any]:
    probe = torch.zeros(1, 3, preprocess.crop, preprocess.crop)
    grid = extractor(probe)
    return {
        "format": FORMAT,
        "model": model_name,
        "input_size": [preprocess.crop, preprocess.crop],
        "preprocessing": dataclasses.asdict(preprocess),
        "grid": [int(grid.shape[2]), int(grid.shape[3])],
        "dim": int(grid.shape[1]),
        "head": bool(extractor.has_head),
        "batch_size": batch_size,
        "world_size": world,
        "image_count": len(paths),
        "images_fingerprint": fingerprint(paths),
    }


def _start_or_resume(layout: IndexLayout, settings: dict[str, Any], paths: list[str]) -> None:
    if layout.build.exists():
        previous = read_json(layout.build, "build settings")
        old = {k: v for k, v in previous.items() if k != "images"}
        if fingerprint(old) != fingerprint(settings):
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise InputError(
                f"{layout.root} holds a build with other settings ({', '.join(changed)} "
                "differ); rerun with the same options to resume, or choose another --out."
            )
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    write_json(layout.build, {**settings, "images": paths})


def extract_shard(
    paths: Sequence[str],
    folder: Path,
    extractor: GridExtractor,
    preprocess: Preprocess,
    settings: dict[str, Any],
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
) -> None:
    """Write the chunks of images ``rank, rank + world, …`` into ``folder``, skipping done ones."""
    batch_size = int(settings["batch_size"])
    mine = list(range(rank, len(paths), world))
    batches = [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]
    done = {int(p.stem.split("-")[1]) for p in completed_chunks(folder)}
    initial = sum(len(batches[n]) for n in done if n < len(batches))
    bar = _progress(len(mine), initial, rank, world) if progress else None
    for number, batch in enumerate(batches):
        if number in done:
            continue
        vectors, meta = _extract_batch(paths, batch, extractor, preprocess, settings)
        write_chunk(folder, number, vectors, meta)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    write_json(folder / "done.json", {"images": len(mine), "chunks": len(batches)})


def _extract_batch(
    paths: Sequence[str],
    batch: list[int],
    extractor: GridExtractor,
    preprocess: Preprocess,
    settings: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    """One batch: load (skipping unreadable files), forward, normalise, ids and top-1."""
    entries: list[dict[str, Any]] = []
    tensors, kept = [], []
    for index in batch:
        try:
            image = load_image(paths[index])
        except ImageLoadError as error:
            entries.append({"index": index, "status": "skipped", "reason": str(error)})
            continue
        tensors.append(preprocess(image))
        kept.append(index)
        entries.append({"index": index, "status": "ok", "size": list(image.size)})
    rows, cols = settings["grid"]
    cells = rows * cols
    if not tensors:
        return np.zeros((0, settings["dim"]), np.float32), {"images": entries, "ids": []}
    grid = extractor(torch.stack(tensors))
    if tuple(grid.shape[1:]) != (settings["dim"], rows, cols):
        raise DenseReadoutError(
            f"the model gave a {tuple(grid.shape[1:])} grid, the build expects "
            f"{(settings['dim'], rows, cols)}; is the preprocessing's crop fixed?"
        )
    vectors = normalise_rows(grid.flatten(2).transpose(1, 2).reshape(-1, grid.shape[1]))
    ids = (np.asarray(kept)[:, None] * cells + np.arange(cells)[None, :]).reshape(-1)
    meta: dict[str, Any] = {"images": entries, "ids": ids.tolist()}
    if extractor.has_head:
        meta["top1"] = extractor.top1(grid).reshape(-1).tolist()
    return vectors.numpy(), meta


def _progress(total: int, initial: int, rank: int, world: int) -> Any:
    from tqdm.auto import tqdm

    label = "index build" if world == 1 else f"index build rank {rank}/{world}"
    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc=label,
        file=sys.stderr,
        dynamic_ncols=True,
        position=rank,
        disable=None,  # off when stderr is not a terminal
    )
