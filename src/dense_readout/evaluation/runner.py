"""Benchmark runner: batched, DataLoader workers, resumable checkpoints, torch.distributed.

:func:`run_benchmark` streams a dataset through the protocol and a model's dense
readout into the metric accumulators. Memory stays flat: only int64 counters
are kept.

* **Batching.** Each batch of ``B`` images becomes one ``3B`` batch
  ``[original; w/o BG; w/o FG]`` (ILSVRC) forwarded in one call.
* **Workers.** Decoding, resizing and mask drawing run in DataLoader workers,
  overlapped with the forward passes.
* **Resumable.** Every ``checkpoint_every`` batches the accumulator state and the
  number of items of this process's shard already consumed are written to
  ``<out>/checkpoint/rank<r>-of-<w>.pt`` (temp file + ``os.replace``, atomic). A
  run started again with the same arguments continues from there; state and
  position are saved together, so no item is counted twice or lost, whatever the
  moment of a kill (SIGKILL included). Different arguments are refused.
* **Distributed.** Under ``torch.distributed.run`` (env ``WORLD_SIZE`` > 1) the
  index list is sharded ``indices[rank::world]`` (disjoint, complete), and the
  int64 states are all-reduced (sum) at the end; rank 0 writes the reports.
  gloo on CPU, NCCL on GPU.
* **Two passes when prototype thresholds are on.** ``feat_fg``/``logit_fg`` need the
  foreground prototypes of the whole set, so a first pass (original input only)
  accumulates them before the main pass.

Per-item errors (see :mod:`.datasets`) are counted by reason and the item is skipped
(``on_error='skip'``), or the run stops with the item's message (``'stop'``).

The pieces live in :mod:`.batches` (items decoded in the workers, one batch's
forward and metric update), :mod:`.state` (state, checkpoints, results dictionary)
and :mod:`.distributed` (process group, all-reduce); this module holds the run's
settings (:class:`RunConfig`) and the loop over phases and batches. Their public
names stay importable from here.

Example:
    >>> from dense_readout.evaluation.runner import RunConfig
    >>> RunConfig(batch_size=8).on_error
    'skip'
    >>> RunConfig(on_error="ignore")
    Traceback (most recent call last):
    ...
    dense_readout.errors.InputError: on_error must be 'skip' or 'stop', got 'ignore'.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from ..readout import DenseReadout
from .batches import BenchmarkItems, check_errors, make_loader, process_batch
from .distributed import all_reduce_sum, barrier, distributed_context
from .metrics import ILSVRC_METRICS, IMAGENET_A_METRICS, MetricSuite
from .protocol import Protocol
from .state import (
    EDGE_CASES,
    PHASES,
    SKIP_REASONS,
    BenchmarkState,
    Checkpoint,
    build_results,
    keep_speed,
)
from .thresholds import (
    DEFAULT_SCORES,
    DEFAULT_TAUS,
    PROTOTYPE_SCORES,
    PrototypeAccumulator,
    ThresholdSweep,
)

__all__ = [
    "EDGE_CASES",
    "PHASES",
    "SKIP_REASONS",
    "BenchmarkState",
    "RunConfig",
    "distributed_context",
    "run_benchmark",
]

KINDS = ("ilsvrc", "imagenet-a")


@dataclass
class RunConfig:
    """Settings of one benchmark run (everything that changes numbers enters the fingerprint).

    Example:
        >>> from dense_readout.evaluation.runner import RunConfig
        >>> config = RunConfig(batch_size=8, workers=0, thresholds=(), progress=False)
        >>> config.batch_size, config.on_error, config.resume
        (8, 'skip', True)
    """

    batch_size: int = 16
    workers: int = 2
    limit: int | None = None
    on_error: str = "skip"
    checkpoint_every: int = 10  # batches
    thresholds: tuple[str, ...] = DEFAULT_SCORES
    taus: tuple[float, ...] = DEFAULT_TAUS
    progress: bool = True
    device: str | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}.")
        if self.on_error not in ("skip", "stop"):
            raise InputError(f"on_error must be 'skip' or 'stop', got {self.on_error!r}.")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}.")
        self.thresholds = tuple(self.thresholds)
        self.taus = tuple(float(t) for t in self.taus)


@dataclass
class _Job:
    """What every phase of one run (in one process) shares."""

    dataset: Any
    protocol: Protocol
    readout: DenseReadout
    config: RunConfig
    kind: str
    device: torch.device
    rank: int
    world_size: int
    shard: list[int]

    @property
    def boxes(self) -> bool:
        return self.kind == "ilsvrc"

    @property
    def num_classes(self) -> int:
        return self.readout.num_classes

    @property
    def subset(self) -> list[int] | None:
        """ImageNet-A: the 200 classes the scores are restricted to."""
        return list(self.dataset.class_indices) if self.kind == "imagenet-a" else None

    @property
    def thresholds(self) -> tuple[str, ...]:
        return self.config.thresholds if self.boxes else ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ILSVRC_METRICS if self.boxes else IMAGENET_A_METRICS

    @property
    def phases(self) -> list[str]:
        """``['main']``, preceded by ``'prototypes'`` when a threshold score needs prototypes."""
        needs_prototypes = any(t in PROTOTYPE_SCORES for t in self.thresholds)
        return [p for p in PHASES if p == "main" or needs_prototypes]


def run_benchmark(
    dataset: Any,
    model: nn.Module,
    protocol: Protocol,
    out_dir: os.PathLike | str,
    config: RunConfig | None = None,
    *,
    kind: str = "ilsvrc",
    model_info: dict | None = None,
) -> dict:
    """Evaluate ``model`` on ``dataset`` with ``protocol``; write reports to ``out_dir``.

    Args:
        dataset: an :class:`~.datasets.ILSVRCBoxes` (``kind='ilsvrc'``) or
            :class:`~.datasets.ImageNetA` (``kind='imagenet-a'``).
        model: classifier in eval mode (any model :class:`~dense_readout.DenseReadout` supports).
        protocol: preprocessing, mask transform and fill.
        out_dir: where ``results.json``, ``results.md``, ``per_class.csv``,
            ``thresholds.png`` and the checkpoints go.
        config: :class:`RunConfig`.
        kind: ``'ilsvrc'`` or ``'imagenet-a'``.
        model_info: what to record about the model (name, checkpoint).

    Returns:
        The results dictionary written to ``results.json`` (every rank gets it).

    Example (one 64×48 image with one box, a random tiny timm model):
        >>> import pathlib, tempfile, timm
        >>> from PIL import Image
        >>> from dense_readout.evaluation.datasets import ILSVRCBoxes
        >>> from dense_readout.evaluation.protocol import Protocol, paper_preprocess
        >>> from dense_readout.evaluation.runner import RunConfig, run_benchmark
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "val").mkdir(); (root / "bbox_val").mkdir()
        >>> Image.new("RGB", (64, 48), "white").save(root / "val" / "ILSVRC2012_val_00000001.JPEG")
        >>> _ = (root / "bbox_val" / "ILSVRC2012_val_00000001.xml").write_text(
        ...     "<annotation><size><width>64</width><height>48</height></size><object>"
        ...     "<name>n01440764</name><bndbox><xmin>8</xmin><ymin>8</ymin><xmax>40</xmax>"
        ...     "<ymax>40</ymax></bndbox></object></annotation>")
        >>> model = timm.create_model("test_resnet", pretrained=False).eval()
        >>> config = RunConfig(batch_size=1, workers=0, thresholds=(), progress=False, device="cpu")
        >>> results = run_benchmark(
        ...     ILSVRCBoxes(root), model, Protocol(paper_preprocess(model)), root / "out", config)
        >>> results["images"]["evaluated"], results["counts"]["top1"], results["edge_cases"]["no_fg_cell"]
        (1, {'used': 1, 'skipped': 0}, 0)
        >>> sorted(p.name for p in (root / "out").glob("results.*"))
        ['results.json', 'results.md']
    """
    from .reports import write_reports  # local: reports pulls in matplotlib

    config = config or RunConfig()
    if kind not in KINDS:
        raise InputError(f"kind must be 'ilsvrc' or 'imagenet-a', got {kind!r}.")
    out_dir = Path(out_dir)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    readout = DenseReadout(model)
    with distributed_context() as ctx:
        job = _start(dataset, model, readout, protocol, config, kind, device, ctx)
        state = _new_state(job)
        settings = _settings(job, model, model_info)
        checkpoint = Checkpoint(
            out_dir / "checkpoint" / f"rank{ctx.rank}-of-{ctx.world_size}.pt", settings
        )
        resumed_from = checkpoint.resume(state) if config.resume else None
        timing = _new_timing(job)
        _run_phases(job, state, checkpoint, timing)
        all_reduce_sum(state.reducible(), job.device)
        results = build_results(state, settings, config, timing, resumed_from, ctx.world_size)
        results["speed"] = keep_speed(
            checkpoint.path.with_name(f"speed-rank{ctx.rank}.json"), results["speed"]
        )
        if ctx.rank == 0:
            write_reports(results, state, out_dir)
        barrier()
    return results


def _start(
    dataset: Any,
    model: nn.Module,
    readout: DenseReadout,
    protocol: Protocol,
    config: RunConfig,
    kind: str,
    device: torch.device,
    ctx: distributed_context,
) -> _Job:
    """Pick this process's device, move the model there and take its shard of the indices."""
    if device.type == "cuda" and ctx.world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)))
    model.to(device)
    total = len(dataset) if config.limit is None else min(config.limit, len(dataset))
    shard = list(range(total))[ctx.rank :: ctx.world_size]
    return _Job(dataset, protocol, readout, config, kind, device, ctx.rank, ctx.world_size, shard)


def _new_state(job: _Job) -> BenchmarkState:
    """Empty accumulators, in the first phase; prototype sums sized when that phase runs."""
    state = BenchmarkState(
        suite=MetricSuite(job.metric_names, job.num_classes),
        sweep=ThresholdSweep(job.thresholds, job.config.taus) if job.thresholds else None,
        prototypes=PrototypeAccumulator(),
    )
    state.phase = job.phases[0]
    if (
        "prototypes" in job.phases
    ):  # size the prototype sums now: every process must hold equal shapes
        crop = job.protocol.preprocess.crop
        probe = torch.zeros(1, 3, crop, crop, device=job.device)
        channels = job.readout(probe).features.shape[1]
        state.prototypes = PrototypeAccumulator(channels, job.num_classes)
    return state


def _settings(job: _Job, model: nn.Module, model_info: dict | None) -> dict:
    """Everything that changes the numbers (fingerprinted: a checkpoint resumes only with equal ones)."""
    return {
        "kind": job.kind,
        "dataset": job.dataset.describe(),
        "model": model_info or {"class": type(model).__name__},
        "protocol": job.protocol.describe(),
        "limit": job.config.limit,
        "batch_size": job.config.batch_size,
        "thresholds": list(job.thresholds),
        "taus": list(job.config.taus),
        "metrics": list(job.metric_names),
        "world_size": job.world_size,
        "version": __version__,
    }


def _new_timing(job: _Job) -> dict:
    return {
        "forward_s": 0.0,
        "wall_s": 0.0,
        "images": 0,
        "forwards_per_image": 3 if job.boxes else 1,
    }


def _run_phases(job: _Job, state: BenchmarkState, checkpoint: Checkpoint, timing: dict) -> None:
    """Run the phases left (from the checkpoint's), saving after each."""
    phases = job.phases
    for phase in phases[phases.index(state.phase) :]:
        if state.phase != phase:
            state.phase, state.done = phase, 0
        if phase == "main" and state.sweep is not None:
            prototypes = PrototypeAccumulator()
            prototypes.merge(state.prototypes)
            # every rank runs this exactly once per process
            all_reduce_sum(prototypes.tensors(), job.device)
            state.sweep.prototypes = prototypes.prototypes()
        _run_phase(phase, job, state, checkpoint, timing if phase == "main" else None)
        checkpoint.save(state)


def _run_phase(
    phase: str,
    job: _Job,
    state: BenchmarkState,
    checkpoint: Checkpoint,
    timing: dict | None,
) -> None:
    """Stream the rest of the shard through one phase, checkpointing every few batches."""
    remaining = job.shard[state.done :]
    if not remaining:
        return
    items = BenchmarkItems(job.dataset, job.protocol, remaining, job.num_classes, job.boxes)
    loader = make_loader(items, job.config.batch_size, job.config.workers, job.device)
    bar = _progress_bar(job, state, phase)
    batches = 0
    start = time.perf_counter()
    try:
        for batch in loader:
            _consume(phase, job, state, batch, timing)
            batches += 1
            if bar is not None:
                bar.update(len(batch["status"]))
            if batches % max(1, job.config.checkpoint_every) == 0:
                checkpoint.save(state)
    finally:
        if bar is not None:
            bar.close()
    if timing is not None:
        timing["wall_s"] += time.perf_counter() - start


def _progress_bar(job: _Job, state: BenchmarkState, phase: str) -> Any:
    """A tqdm bar on rank 0 when ``config.progress`` (else None)."""
    if not (job.config.progress and job.rank == 0):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=len(job.shard),
        initial=state.done,
        unit="img",
        desc=f"{phase}",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def _consume(
    phase: str, job: _Job, state: BenchmarkState, batch: dict, timing: dict | None
) -> None:
    """One batch: stop or count failed items, forward the good ones, advance the position."""
    check_errors(batch, job.config.on_error)
    ok = torch.tensor([s == "" for s in batch["status"]], dtype=torch.bool)
    if phase == "main":
        state.count_skips(list(batch["status"]))
    if ok.any():
        elapsed = process_batch(
            phase, state, batch, ok, job.protocol, job.readout, job.boxes, job.subset, job.device
        )
        if timing is not None:
            timing["forward_s"] += elapsed
            timing["images"] += int(ok.sum())
    state.done += len(batch["status"])
