"""The benchmark run: batches of images through every method and metric, resumable, sharded.

* **Images.** ``limit`` images evenly spaced over the dataset's sorted list (all
  by default), in that order; position ``p`` is the ``p``-th. Localization and
  cost run on every position; faithfulness and sanity on positions
  ``< subset_limit``; ROAD on ``< road_limit``; slow methods on ``< slow_limit``
  (with whichever metrics apply there). The subsets come first, so a run cut short
  has them complete.
* **Batches.** Global batch ``b`` holds positions ``[bB, (b+1)B)``; under
  ``torch.distributed.run`` rank ``r`` takes batches ``r, r+W, …``. Every image is
  computed in the same batch whatever the number of processes, so the per-image
  numbers do not depend on it.
* **Records.** Each process appends one JSON line per (image, method) to
  ``OUT/records/rank<r>-of-<W>.jsonl`` and a marker line when a batch is complete,
  then flushes and fsyncs. A restarted run (same settings, checked by fingerprint)
  drops a trailing incomplete batch and continues after the last marker; SIGKILL
  at any moment loses at most the batch in progress.
* **Summary.** Rank 0 waits for the others, reads every record and writes the
  reports (:mod:`.summary`, :mod:`.report`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ... import __version__
from ...errors import InputError
from ...evaluation.distributed import barrier, distributed_context
from ...evaluation.protocol import Protocol
from ...evaluation.state import fingerprint
from ...readout import DenseReadout
from ..methods import MethodContext
from ..specs import check_method_spec, resolve_method
from .examples import add_example_maps, example_images
from .items import BoxItems, make_loader
from .metrics import BENCH_METRICS, GROUPS, MapBatch, call_method
from .perturbation import probabilities
from .records import RecordFile, read_all_records
from .sanity import cascade_models

__all__ = ["BenchConfig", "run_compare_bench"]

FAST_METHODS = (
    "dense-readout",
    "cam",
    "gradcam",
    "gradcam++",
    "layercam",
    "eigencam",
    "layergradcam",
    "integrated-gradients",
    "lrp",
    "random",
)


@dataclass
class BenchConfig:
    """Settings of one benchmark run (all but ``workers``/``progress``/``resume`` are fingerprinted)."""

    methods: tuple[str, ...] = FAST_METHODS
    slow_methods: tuple[str, ...] = ()
    metrics: tuple[str, ...] = GROUPS
    limit: int | None = None
    slow_limit: int = 8
    subset_limit: int = 200
    road_limit: int = 0
    batch_size: int = 8
    steps: int = 16
    forward_batch: int = 32
    threshold_step: float = 0.01
    mprt_levels: int = 3
    road_percentiles: tuple[int, ...] = (20, 50, 80)
    baseline: str = "mean"
    threads: int | None = None
    workers: int = 1
    progress: bool = True
    resume: bool = True
    example_images: int = 6

    def __post_init__(self) -> None:
        self.methods, self.slow_methods = tuple(self.methods), tuple(self.slow_methods)
        self.metrics, self.road_percentiles = tuple(self.metrics), tuple(self.road_percentiles)
        unknown = sorted(set(self.metrics) - set(GROUPS))
        if unknown:
            raise InputError(f"Unknown metric group(s) {unknown}; choose from {list(GROUPS)}.")
        if self.baseline not in ("mean", "blur"):
            raise InputError(f"baseline must be 'mean' or 'blur', got {self.baseline!r}.")
        if self.batch_size < 1 or self.steps < 2:
            raise InputError("batch_size must be >= 1 and steps >= 2.")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}.")
        for spec in (*self.methods, *self.slow_methods):
            check_method_spec(spec)

    def fingerprinted(self) -> dict:
        """The settings that change numbers (a resume needs them equal)."""
        settings = asdict(self)
        for key in ("workers", "progress", "resume", "threads"):
            settings.pop(key)
        return settings


@dataclass
class _Job:
    model: nn.Module
    readout: DenseReadout
    protocol: Protocol
    config: BenchConfig
    num_classes: int
    cascade: list[tuple[str, nn.Module]] = field(default_factory=list)

    def options(self) -> dict[str, Any]:
        c = self.config
        return {
            "steps": c.steps,
            "forward_batch": c.forward_batch,
            "threshold_step": c.threshold_step,
            "road_percentiles": c.road_percentiles,
            "num_classes": self.num_classes,
        }

    def limit_of(self, group: str) -> float:
        if group == "road":
            return self.config.road_limit if "faithfulness" in self.config.metrics else 0
        if group not in self.config.metrics:
            return 0
        return self.config.subset_limit if group in ("faithfulness", "sanity") else math.inf


@contextmanager
def native_thread_limit(threads: int | None) -> Iterator[None]:
    """Bound NumPy's BLAS/OpenMP pools too, not only torch's (``--threads``).

    pytorch-grad-cam's EigenCAM takes an SVD in NumPy, whose BLAS starts one thread per
    core whatever ``torch.set_num_threads`` says; beside another process that
    oversubscribes the cores and inflates that method's cost column. Needs
    ``threadpoolctl`` (installed with scikit-learn); without it, torch's limit only.

    Example:
        >>> with native_thread_limit(1):
        ...     pass
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if not threads or threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def selected_indices(total: int, limit: int | None) -> list[int]:
    """``limit`` dataset indices evenly spaced over ``range(total)`` (all when ``limit`` is None).

    Example:
        >>> selected_indices(10, 4)
        [0, 3, 6, 9]
    """
    if limit is None or limit >= total:
        return list(range(total))
    return [int(v) for v in np.unique(np.linspace(0, total - 1, limit).round().astype(int))]


def run_compare_bench(
    dataset: Any,
    model: nn.Module,
    protocol: Protocol,
    out_dir: os.PathLike | str,
    config: BenchConfig | None = None,
    model_info: dict | None = None,
    command: str | None = None,
) -> dict | None:
    """Run the comparative benchmark; rank 0 writes the reports and returns ``results.json``.

    Example: see ``tests/test_compare_bench.py`` and ``docs/compare.md`` (a run needs a
    dataset with boxes; :func:`dense_readout.compare.bench.run_compare_bench` on a
    generated folder takes seconds there).
    """
    job, indices, settings = _prepare(dataset, model, protocol, config, model_info)
    config = job.config
    out_dir = Path(out_dir)
    with distributed_context() as ctx:
        if "sanity" in config.metrics:
            job.cascade = cascade_models(model, config.mprt_levels)
        records = RecordFile(
            out_dir / "records" / f"rank{ctx.rank}-of-{ctx.world_size}.jsonl",
            fingerprint(settings),
            resume=config.resume,
        )
        batches = [
            list(range(start, min(start + config.batch_size, len(indices))))
            for start in range(0, len(indices), config.batch_size)
        ]
        mine = [b for b in range(len(batches)) if b % ctx.world_size == ctx.rank]
        todo = [b for b in mine if b not in records.done]
        with native_thread_limit(config.threads):
            _run_batches(job, dataset, indices, batches, todo, records, ctx.rank)
        records.close()
        barrier()
        results = None
        if ctx.rank == 0:
            from .summary import write_outputs

            rows = read_all_records(out_dir / "records", ctx.world_size)
            info = job_info(job, indices, dataset, command)
            results = write_outputs(rows, settings, out_dir, info)
        barrier()
    return results


def _prepare(
    dataset: Any,
    model: nn.Module,
    protocol: Protocol,
    config: BenchConfig | None,
    model_info: dict | None,
) -> tuple[_Job, list[int], dict]:
    config = config or BenchConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    model.eval()
    readout = DenseReadout(model)
    job = _Job(model, readout, protocol, config, readout.num_classes)
    indices = selected_indices(len(dataset), config.limit)
    settings = {
        "config": config.fingerprinted(),
        "dataset": dataset.describe() if hasattr(dataset, "describe") else type(dataset).__name__,
        "model": model_info or {"class": type(model).__name__},
        "protocol": protocol.describe(),
        "images": len(indices),
        "version": __version__,
    }
    return job, indices, settings


def rewrite_reports(
    dataset: Any,
    model: nn.Module,
    protocol: Protocol,
    out_dir: os.PathLike | str,
    config: BenchConfig | None = None,
    model_info: dict | None = None,
    command: str | None = None,
) -> dict:
    """Rewrite the reports from the complete batches recorded so far (a run in progress too)."""
    from .summary import write_outputs

    job, indices, settings = _prepare(dataset, model, protocol, config, model_info)
    directory = Path(out_dir) / "records"
    worlds = {int(p.stem.split("-of-")[1]) for p in directory.glob("rank*-of-*.jsonl")}
    if len(worlds) != 1:
        raise InputError(
            f"{directory} must hold the records of one run, found world sizes {worlds}."
        )
    job.cascade = [(name, model) for name in _cascade_names(job)]
    records = read_all_records(directory, worlds.pop())
    write_outputs(records, settings, Path(out_dir), job_info(job, indices, dataset, command))
    return {"rows": len(records["rows"])}


def _cascade_names(job: _Job) -> list[str]:
    from .sanity import cascade_units

    if "sanity" not in job.config.metrics:
        return []
    return cascade_units(job.model)[: job.config.mprt_levels]


def job_info(job: _Job, indices: list[int], dataset: Any, command: str | None = None) -> dict:
    """What the reports say about the run besides the numbers (not fingerprinted)."""
    c = job.config
    return {
        "command": command,
        "methods": list(c.methods),
        "slow_methods": list(c.slow_methods),
        "metrics": list(c.metrics),
        "images": len(indices),
        "subset": min(c.subset_limit, len(indices)),
        "road_subset": min(c.road_limit, len(indices)),
        "slow_subset": min(c.slow_limit, len(indices)),
        "cascade": [name for name, _ in job.cascade],
        "num_classes": job.num_classes,
        "threads": torch.get_num_threads(),
        "groups": {name: BENCH_METRICS.get(name).group for name in BENCH_METRICS.names()},
    }


def _run_batches(
    job: _Job,
    dataset: Any,
    indices: list[int],
    batches: list[list[int]],
    todo: list[int],
    records: RecordFile,
    rank: int,
) -> None:
    if not todo:
        return
    items = BoxItems(dataset, job.protocol, indices, job.num_classes)
    loader = make_loader(items, [batches[b] for b in todo], job.config.workers)
    bars = _progress_bars(job, todo, batches, rank)
    try:
        for number, batch in zip(todo, loader, strict=True):
            rows = _process_batch(job, batch, bars)
            records.write_batch(number, rows, skipped=_skipped(batch))
    finally:
        for bar in bars.values():
            bar.close()


def _skipped(batch: dict) -> list[dict]:
    return [
        {"position": p, "status": s}
        for p, s in zip(batch["position"], batch["status"], strict=True)
        if s
    ]


def _progress_bars(job: _Job, todo: list[int], batches: list[list[int]], rank: int) -> dict:
    """One tqdm bar per method (images), on rank 0 when progress is on."""
    if not (job.config.progress and rank == 0):
        return {}
    from tqdm.auto import tqdm

    c = job.config
    bars = {}
    for line, name in enumerate((*c.methods, *c.slow_methods)):
        limit = c.slow_limit if name in c.slow_methods and name not in c.methods else math.inf
        total = sum(1 for b in todo for p in batches[b] if p < limit)
        bars[name] = tqdm(
            total=total, desc=f"{name:>22}", unit="img", position=line, file=sys.stderr
        )
    return bars


def _baseline(job: _Job, inputs: Tensor) -> Tensor:
    if job.config.baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(inputs, kernel_size=[31, 31], sigma=[10.0, 10.0])
    return job.protocol.fill_value().view(1, 3, 1, 1).expand_as(inputs).clone()


def _process_batch(job: _Job, batch: dict, bars: dict) -> list[dict]:
    ok = torch.tensor([s == "" for s in batch["status"]], dtype=torch.bool)
    if not bool(ok.any()):
        return []
    inputs, targets = batch["x"][ok], batch["label"][ok]
    positions = torch.tensor(batch["position"])[ok]
    base = _baseline(job, inputs)
    ends = (
        probabilities(job.model, inputs, targets, job.config.forward_batch),
        probabilities(job.model, base, targets, job.config.forward_batch),
    )
    shared = {
        "inputs": inputs,
        "targets": targets,
        "indices": batch["index"][ok],
        "mask": batch["mask"][ok],
        "boxes": [b for b, k in zip(batch["boxes"], ok.tolist(), strict=True) if k],
        "baseline": base,
        "ends": ends,
    }
    rows = example_images(job.protocol, job.config.example_images, inputs, positions)
    c = job.config
    for name in (*c.methods, *c.slow_methods):
        limit = c.slow_limit if name in c.slow_methods and name not in c.methods else math.inf
        keep = positions < limit
        if not bool(keep.any()):
            continue
        rows.extend(_one_method(job, name, shared, keep, positions))
        if name in bars:
            bars[name].update(int(keep.sum()))
    return rows


def _one_method(job: _Job, name: str, shared: dict, keep: Tensor, positions: Tensor) -> list[dict]:
    """One method on the kept images: timed call (with a forward just before), every metric."""
    rows = [i for i, k in enumerate(keep.tolist()) if k]
    sub: dict[str, Any] = {
        key: [value[i] for i in rows] if isinstance(value, list) else value[keep]
        for key, value in shared.items()
        if key != "ends"
    }
    ends = (shared["ends"][0][keep], shared["ends"][1][keep])
    method = resolve_method(name, MethodContext(job.model, job.readout))
    cascade = [
        (unit, resolve_method(name, MethodContext(m, DenseReadout(m)))) for unit, m in job.cascade
    ]
    try:
        forward_seconds = _timed_forward(job.model, sub["inputs"])
        start = time.perf_counter()
        raw = call_method(method, sub["inputs"], sub["targets"])
        seconds = time.perf_counter() - start
        maps = MapBatch(
            method=method,
            model=job.model,
            raw=raw,
            seconds=seconds,
            forward_seconds=forward_seconds,
            ends=ends,
            options=job.options(),
            cascade=cascade,
            **sub,
        )
        return _metric_rows(job, name, maps, positions[keep])
    finally:
        method.close()
        for _, other in cascade:
            other.close()


def _timed_forward(model: nn.Module, inputs: Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        model(inputs)
        return time.perf_counter() - start


def _metric_rows(job: _Job, name: str, maps: MapBatch, positions: Tensor) -> list[dict]:
    rows = [
        {
            "position": int(p),
            "index": int(i),
            "label": int(t),
            "method": name,
        }
        for p, i, t in zip(positions, maps.indices, maps.targets, strict=True)
    ]
    add_example_maps(job.config.example_images, rows, maps, positions)
    for metric_name in BENCH_METRICS.names():
        metric = BENCH_METRICS.get(metric_name)()
        keep = positions < job.limit_of(metric.group)
        if not bool(keep.any()):
            continue
        chosen = maps if bool(keep.all()) else maps.select(keep)
        values = metric.compute(chosen)
        targets = [row for row, k in zip(rows, keep.tolist(), strict=True) if k]
        for key, column in values.items():
            for row, value in zip(targets, column, strict=True):
                row[key] = value if isinstance(value, list) else _number(value)
    return rows


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
