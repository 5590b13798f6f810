"""``export_dataset``: stream a dataset through the readout into one chunked store.

Runs in one process or under ``python -m torch.distributed.run``: process ``r`` of
``w`` exports the batches ``b ≡ r (mod w)`` (:mod:`.store_layout`), rank 0 creates
the store first and writes the counts last. A rerun with the same settings resumes:
batches whose status chunk exists are skipped, so no image is lost or written twice
after a kill; other settings are refused on every rank. Memory is one batch.

Example:
    >>> import tempfile, timm, torch
    >>> from PIL import Image
    >>> from dense_readout import DenseReadout
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.export import ExportConfig, export_dataset, open_source
    >>> root = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     Image.new("RGB", (80, 64), (60 * k, 90, 30)).save(f"{root}/{k}.png")
    >>> _ = torch.manual_seed(0)
    >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=4).eval())
    >>> summary = export_dataset(open_source(root), f"{root}/store", readout,
    ...     Preprocess(resize=64, crop=64), ExportConfig(batch_size=2, progress=False))
    >>> summary["complete"], summary["counts"]
    (True, {'images': 3, 'exported': 3, 'unreadable': 0, 'error': 0, 'pending': 0})
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..evaluation.distributed import barrier, distributed_context, raise_on_every_rank
from . import zarr_v2
from .items import ExportItems, make_loader
from .maps import ClassSelection, readout_maps
from .sources import ExportSource
from .store_layout import FORMAT, STATUS, StoreLayout

__all__ = ["ExportConfig", "export_dataset"]

DTYPES = {"float16": "<f2", "float32": "<f4"}


@dataclass(frozen=True)
class ExportConfig:
    """Options of an export (all recorded in the store; a resume must repeat them).

    Attributes:
        classes: ``all``, ``topk:N``, ``gt`` (the image's labels) or a list ``3,17``.
        dtype: ``float16`` or ``float32`` for the maps (logits are always float32).
        scales, flip: multi-scale / flip maps summed on the scale-1.0 grid (WSSS).
        features: also store the grid features ``F``.
        batch_size, workers: images per forward and DataLoader decoding processes.

    Example:
        >>> from dense_readout.export import ExportConfig
        >>> config = ExportConfig(classes="topk:5", dtype="float32", scales=(1.0, 0.5), flip=True)
        >>> config.scales, config.flip, config.features  # features are opt-in (they are large)
        ((1.0, 0.5), True, False)
    """

    classes: str = "all"
    dtype: str = "float16"
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    features: bool = False
    batch_size: int = 32
    workers: int = 0
    progress: bool = True


def export_dataset(
    source: ExportSource,
    out: str | Path,
    readout,
    preprocess,
    config: ExportConfig = ExportConfig(),
    model_info: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Export every image of ``source`` into the store ``out``.

    Returns the store's attributes (``settings``, ``complete``, ``counts``) and this
    session's ``timing`` (``images``, ``forward_s``, ``wall_s``), on every rank.

    Example:
        >>> import tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for k, colour in enumerate(["red", "blue"]):
        ...     Image.new("RGB", (64, 48), colour).save(f"{tmp.name}/img{k}.png")
        >>> _ = torch.manual_seed(0)
        >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
        >>> summary = export_dataset(open_source(tmp.name), f"{tmp.name}/store", readout,
        ...     Preprocess(resize=64, crop=64), ExportConfig(progress=False))
        >>> summary["complete"], summary["counts"]["exported"], summary["settings"]["grid"]
        (True, 2, [2, 2])
        >>> again = export_dataset(open_source(tmp.name), f"{tmp.name}/store", readout,
        ...     Preprocess(resize=64, crop=64), ExportConfig(progress=False))
        >>> again["timing"]["images"]  # resumed: every batch was done, nothing recomputed
        0.0
        >>> tmp.cleanup()
    """
    if config.dtype not in DTYPES:
        raise InputError(f"--dtype {config.dtype}: choose float16 or float32.")
    if config.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {config.batch_size}.")
    device = torch.device(device)
    layout = StoreLayout(out, config.batch_size)
    max_labels = max((len(row) for row in source.labels or []), default=0)
    selection = ClassSelection.parse(config.classes, max_labels)
    settings = _settings(source, readout, preprocess, config, selection, model_info, device)
    with distributed_context() as context:
        refusal = None
        if context.rank == 0:
            try:
                _start_or_resume(layout, settings, source)
            except InputError as error:
                refusal = str(error)
        raise_on_every_rank(refusal)
        timing = _export_shard(
            layout,
            source,
            readout,
            preprocess,
            config,
            selection,
            settings,
            device,
            context.rank,
            context.world_size,
        )
        barrier()
        if context.rank == 0:
            _finish(layout, timing)
        barrier()
    return {**zarr_v2.read_attrs(layout.root), "timing": timing}


def _settings(source, readout, preprocess, config, selection, model_info, device) -> dict:
    crop = int(preprocess.crop)
    with torch.inference_mode():
        probe = readout(torch.zeros(1, 3, crop, crop, device=device))
    classes = int(probe.scores.shape[1])
    settings = {
        "format": FORMAT,
        **(model_info or {}),
        "exact": bool(probe.exact),
        "preprocessing": dataclasses.asdict(preprocess),
        "exif_transpose": source.layout == "folder",
        "layout": source.layout,
        "root": source.root,
        "grid": list(probe.grid_size),
        "num_classes": classes,
        "classes": config.classes,
        "maps_per_image": selection.width(classes),
        "dtype": DTYPES[config.dtype],
        "scales": [float(s) for s in config.scales],
        "flip": bool(config.flip),
        "features_dim": int(probe.features.shape[1]) if config.features else 0,
        "batch_size": config.batch_size,
        "image_count": len(source.paths),
        "class_names": list(source.class_names) if source.class_names else None,
    }
    return json.loads(json.dumps(settings))  # as read back from the store (tuples → lists)


def _start_or_resume(layout: StoreLayout, settings: dict, source: ExportSource) -> None:
    previous = layout.settings()
    if previous is None:
        layout.create(settings, source.paths, source.labels)
        return
    for stale in layout.root.glob("**/.*.part"):  # a write cut short by a kill; redone below
        stale.unlink(missing_ok=True)
    old_paths = layout.paths()
    changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if old_paths != source.paths:
        changed.append("images")
    if changed:
        raise InputError(
            f"{layout.root} holds an export with other settings ({', '.join(changed)} differ); "
            "rerun with the same options to resume, or choose another --out."
        )


def _export_shard(
    layout, source, readout, preprocess, config, selection, settings, device, rank, world
) -> dict[str, float]:
    """Export this process's unfinished batches; returns its timing."""
    size, count = config.batch_size, len(source.paths)
    mine = layout.batches(count, rank, world)
    todo = [b for b in mine if not layout.done(b)]
    batches = [list(range(b * size, min((b + 1) * size, count))) for b in todo]
    items = ExportItems(source.paths, preprocess, settings["exif_transpose"])
    bar = _progress(
        sum(len(range(b * size, min((b + 1) * size, count))) for b in mine),
        rank,
        world,
        config.progress,
    )
    bar.update(
        sum(len(range(b * size, min((b + 1) * size, count))) for b in mine) - sum(map(len, batches))
    )
    metas = {name: layout.meta(name) for name in ("scores", "logits", "geometry", "status")}
    for name in ("classes", "features"):
        if layout.has(name):
            metas[name] = layout.meta(name)
    timing = {"images": 0.0, "forward_s": 0.0, "wall_s": 0.0}
    tic = time.perf_counter()
    for number, batch in zip(todo, make_loader(items, batches, config.workers), strict=True):
        timing["forward_s"] += _write_batch(
            layout.root, metas, number, batch, readout, config, selection, source.labels, device
        )
        timing["images"] += len(batch["index"])
        bar.update(len(batch["index"]))
    timing["wall_s"] = time.perf_counter() - tic
    bar.close()
    return timing


def _write_batch(root, metas, number, batch, readout, config, selection, labels, device) -> float:
    """Forward the readable images of one batch and write its chunks; status last."""
    indices = [int(i) for i in batch["index"]]
    status = batch["status"].numpy().astype(np.int8)
    ok = np.flatnonzero(status == STATUS["ok"])
    logits_block = np.full((len(indices), metas["logits"]["chunks"][1]), np.nan, np.float32)
    classes_block = np.full((len(indices), metas["scores"]["chunks"][1]), -1, np.int32)
    elapsed = 0.0
    if len(ok):
        x = batch["x"][torch.from_numpy(ok)].to(device, non_blocking=True)
        tic = time.perf_counter()
        scores, logits, features = readout_maps(readout, x, config.scales, config.flip)
        rows = [labels[indices[j]] for j in ok] if labels is not None else [()] * len(ok)
        kept, classes = selection.select(scores, logits, rows)
        kept = kept.float().cpu().numpy()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - tic
        logits_block[ok] = logits.float().cpu().numpy()
        if classes is not None:
            classes_block[ok] = classes.cpu().numpy()
        feats = features.float().cpu().numpy() if "features" in metas else None
        for position, j in enumerate(ok):
            zarr_v2.write_chunk(
                root,
                "scores",
                metas["scores"],
                (indices[j], 0, 0, 0),
                kept[position : position + 1],
            )
            if feats is not None:
                zarr_v2.write_chunk(
                    root,
                    "features",
                    metas["features"],
                    (indices[j], 0, 0, 0),
                    feats[position : position + 1],
                )
    zarr_v2.write_chunk(root, "logits", metas["logits"], (number, 0), logits_block)
    zarr_v2.write_chunk(root, "geometry", metas["geometry"], (number, 0), batch["geometry"].numpy())
    if "classes" in metas:
        zarr_v2.write_chunk(root, "classes", metas["classes"], (number, 0), classes_block)
    failed = [
        {"index": indices[j], "status": int(status[j]), "message": batch["message"][j]}
        for j in np.flatnonzero(status != STATUS["ok"])
    ]
    if failed:  # a zarr group per batch, its messages as attributes
        zarr_v2.write_group(Path(root) / "skipped")
        zarr_v2.write_group(Path(root) / "skipped" / f"b{number}", {"items": failed})
    zarr_v2.write_chunk(root, "status", metas["status"], (number,), status)  # marks the batch done
    return elapsed


def _finish(layout: StoreLayout, timing: dict[str, float]) -> None:
    """Rank 0, after every rank: count the statuses and mark the store complete."""
    status = zarr_v2.read_array(layout.root, "status")
    counts = {
        "images": len(status),
        "exported": int((status == STATUS["ok"]).sum()),
        "unreadable": int((status == STATUS["unreadable"]).sum()),
        "error": int((status == STATUS["error"]).sum()),
        "pending": int((status == STATUS["pending"]).sum()),
    }
    attrs = zarr_v2.read_attrs(layout.root)
    attrs.update(complete=counts["pending"] == 0, counts=counts)
    zarr_v2.write_attrs(layout.root, attrs)


def _progress(total: int, rank: int, world: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    label = "export" if world == 1 else f"export rank {rank}/{world}"
    return tqdm(
        total=total,
        unit="img",
        desc=label,
        file=sys.stderr,
        dynamic_ncols=True,
        position=rank,
        disable=None if enabled else True,
    )
