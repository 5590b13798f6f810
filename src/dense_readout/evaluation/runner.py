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

Example:
    >>> from dense_readout.evaluation.runner import RunConfig
    >>> RunConfig(batch_size=8).on_error
    'skip'
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..errors import DatasetError, DenseReadoutError, ImageLoadError, InputError
from ..images import load_image
from ..readout import DenseReadout
from .metrics import ILSVRC_METRICS, IMAGENET_A_METRICS, GridBatch, MetricSuite, restrict_classes
from .protocol import Protocol, grid_occupancy
from .thresholds import (
    DEFAULT_SCORES,
    DEFAULT_TAUS,
    PROTOTYPE_SCORES,
    PrototypeAccumulator,
    ThresholdSweep,
)

__all__ = ["SKIP_REASONS", "BenchmarkState", "RunConfig", "distributed_context", "run_benchmark"]

# per-item outcomes counted in every run (fixed vocabulary -> one int64 vector, all-reducible)
SKIP_REASONS: tuple[str, ...] = (
    "missing_annotation",
    "malformed_annotation",
    "no_box",
    "box_outside_image",
    "missing_image",
    "corrupt_image",
    "other_error",
)
# edge cases that are scored for some metrics and skipped by others
EDGE_CASES: tuple[str, ...] = ("no_fg_cell", "no_bg_cell", "empty_real_set", "boxes_clipped_images")
PHASES = ("prototypes", "main")


@dataclass
class RunConfig:
    """Settings of one benchmark run (everything that changes numbers enters the fingerprint)."""

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


# --------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------
class _Items(Dataset):
    """Turns dataset samples into tensors in the workers; per-item errors become a status."""

    def __init__(
        self,
        dataset: Any,
        protocol: Protocol,
        indices: Sequence[int],
        num_classes: int,
        boxes: bool,
    ) -> None:
        self.dataset, self.protocol, self.indices = dataset, protocol, list(indices)
        self.num_classes, self.boxes = num_classes, boxes
        self.crop = protocol.preprocess.crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        real = torch.zeros(self.num_classes, dtype=torch.bool)
        item = {
            "index": index,
            "status": "",
            "message": "",
            "label": -1,
            "real": real,
            "real_known": False,
            "clipped": 0,
        }
        try:
            sample = self.dataset[index]
            image = load_image(sample.path)
            if self.boxes:
                x, mask = self.protocol.transform(image, sample.boxes)
            else:
                x, mask = (
                    self.protocol.preprocess(image),
                    torch.zeros(self.crop, self.crop, dtype=torch.bool),
                )
            item.update(x=x, mask=mask, label=int(sample.label), clipped=int(sample.boxes_clipped))
            if sample.real is not None:
                item["real_known"] = True
                labels = [v for v in sample.real if 0 <= v < self.num_classes]
                real[labels] = True
        except (DatasetError, ImageLoadError) as error:
            reason = getattr(error, "reason", None)
            if reason is None:
                reason = "corrupt_image" if isinstance(error, ImageLoadError) else "other_error"
            item.update(
                status=reason if reason in SKIP_REASONS else "other_error", message=str(error)
            )
        if "x" not in item:
            item["x"] = torch.zeros(3, self.crop, self.crop)
            item["mask"] = torch.zeros(self.crop, self.crop, dtype=torch.bool)
        return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------------------
@dataclass
class BenchmarkState:
    """Everything a checkpoint holds: the phase, position in the shard and the accumulators."""

    suite: MetricSuite
    sweep: ThresholdSweep | None
    prototypes: PrototypeAccumulator
    skips: Tensor = field(default_factory=lambda: torch.zeros(len(SKIP_REASONS), dtype=torch.int64))
    edges: Tensor = field(default_factory=lambda: torch.zeros(len(EDGE_CASES), dtype=torch.int64))
    seen: Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.int64))
    phase: str = "main"
    done: int = 0

    def state_dict(self) -> dict:
        return {
            "suite": self.suite.state_dict(),
            "sweep": self.sweep.state_dict() if self.sweep else None,
            "prototypes": self.prototypes.state_dict(),
            "skips": self.skips.clone(),
            "edges": self.edges.clone(),
            "seen": self.seen.clone(),
            "phase": self.phase,
            "done": self.done,
        }

    def load_state_dict(self, state: dict) -> None:
        self.suite.load_state_dict(state["suite"])
        if self.sweep is not None and state["sweep"] is not None:
            self.sweep.load_state_dict(state["sweep"])
        self.prototypes.load_state_dict(state["prototypes"])
        self.skips, self.edges, self.seen = (
            state["skips"].clone(),
            state["edges"].clone(),
            state["seen"].clone(),
        )
        self.phase, self.done = state["phase"], int(state["done"])

    def reducible(self) -> list[Tensor]:
        """Tensors summed across processes at the end of the main pass."""
        out = [*self.suite.tensors(), self.skips, self.edges, self.seen]
        return out + (self.sweep.tensors() if self.sweep else [])


def _save_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------
class distributed_context:
    """Initialise torch.distributed from the environment when ``WORLD_SIZE`` > 1.

    gloo on CPU, NCCL when CUDA is available; tears the process group down on exit
    if it created it. ``rank``/``world_size`` are 0/1 without a launcher.
    """

    def __init__(self) -> None:
        self.created = False
        self.rank, self.world_size = 0, 1

    def __enter__(self) -> distributed_context:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
            self.created = True
        if dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.created and dist.is_initialized():
            dist.destroy_process_group()


def _all_reduce(tensors: list[Tensor], device: torch.device) -> None:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for tensor in tensors:
        if tensor.numel() == 0:
            continue
        buffer = tensor.to(backend_device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        tensor.copy_(buffer.cpu())


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


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

    Example:
        >>> from dense_readout.evaluation.runner import run_benchmark
        >>> callable(run_benchmark)
        True
    """
    from .reports import write_reports  # local: reports pulls in matplotlib

    config = config or RunConfig()
    if kind not in ("ilsvrc", "imagenet-a"):
        raise InputError(f"kind must be 'ilsvrc' or 'imagenet-a', got {kind!r}.")
    boxes = kind == "ilsvrc"
    out_dir = Path(out_dir)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    readout = DenseReadout(model)
    num_classes = readout.num_classes
    subset = list(dataset.class_indices) if kind == "imagenet-a" else None
    thresholds = config.thresholds if boxes else ()
    metric_names = ILSVRC_METRICS if boxes else IMAGENET_A_METRICS

    with distributed_context() as ctx:
        if device.type == "cuda" and ctx.world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)))
        model.to(device)
        total = len(dataset) if config.limit is None else min(config.limit, len(dataset))
        shard = list(range(total))[ctx.rank :: ctx.world_size]
        state = BenchmarkState(
            suite=MetricSuite(metric_names, num_classes),
            sweep=ThresholdSweep(thresholds, config.taus) if thresholds else None,
            prototypes=PrototypeAccumulator(),
        )
        phases = [
            p for p in PHASES if p == "main" or any(t in PROTOTYPE_SCORES for t in thresholds)
        ]
        state.phase = phases[0]
        if (
            "prototypes" in phases
        ):  # size the prototype sums now: every process must hold equal shapes
            crop = protocol.preprocess.crop
            channels = readout(torch.zeros(1, 3, crop, crop, device=device)).features.shape[1]
            state.prototypes = PrototypeAccumulator(channels, num_classes)
        settings = {
            "kind": kind,
            "dataset": dataset.describe(),
            "model": model_info or {"class": type(model).__name__},
            "protocol": protocol.describe(),
            "limit": config.limit,
            "batch_size": config.batch_size,
            "thresholds": list(thresholds),
            "taus": list(config.taus),
            "metrics": list(metric_names),
            "world_size": ctx.world_size,
            "version": __version__,
        }
        fingerprint = _fingerprint(settings)
        checkpoint = out_dir / "checkpoint" / f"rank{ctx.rank}-of-{ctx.world_size}.pt"
        resumed_from = None
        if config.resume and checkpoint.is_file():
            payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
            if payload.get("fingerprint") != fingerprint:
                raise DenseReadoutError(
                    f"{checkpoint} belongs to a run with other settings; use the same arguments to resume, "
                    f"or another --out directory (or delete {checkpoint.parent}) to start afresh."
                )
            state.load_state_dict(payload["state"])
            resumed_from = {"phase": state.phase, "done": state.done}

        timing = {
            "forward_s": 0.0,
            "wall_s": 0.0,
            "images": 0,
            "forwards_per_image": 3 if boxes else 1,
        }

        def save() -> None:
            _save_atomic(
                checkpoint,
                {"fingerprint": fingerprint, "settings": settings, "state": state.state_dict()},
            )

        for phase in phases[phases.index(state.phase) :]:
            if state.phase != phase:
                state.phase, state.done = phase, 0
            if phase == "main" and state.sweep is not None:
                prototypes = PrototypeAccumulator()
                prototypes.merge(state.prototypes)
                _all_reduce(
                    prototypes.tensors(), device
                )  # every rank runs this exactly once per process
                state.sweep.prototypes = prototypes.prototypes()
            _run_phase(
                phase,
                state,
                dataset,
                protocol,
                readout,
                shard,
                config,
                num_classes,
                boxes,
                subset,
                device,
                ctx.rank,
                save,
                timing if phase == "main" else None,
            )
            save()
        _all_reduce(state.reducible(), device)
        results = _results(state, settings, config, timing, resumed_from, ctx.world_size)
        results["speed"] = _keep_speed(
            checkpoint.with_name(f"speed-rank{ctx.rank}.json"), results["speed"]
        )
        if ctx.rank == 0:
            write_reports(results, state, out_dir)
        if dist.is_initialized():
            dist.barrier()
    return results


def _run_phase(
    phase: str,
    state: BenchmarkState,
    dataset: Any,
    protocol: Protocol,
    readout: DenseReadout,
    shard: list[int],
    config: RunConfig,
    num_classes: int,
    boxes: bool,
    subset: list[int] | None,
    device: torch.device,
    rank: int,
    save,
    timing: dict | None,
) -> None:
    remaining = shard[state.done :]
    if not remaining:
        return
    items = _Items(dataset, protocol, remaining, num_classes, boxes)
    loader = DataLoader(
        items,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        worker_init_fn=_worker_init if config.workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )
    bar = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(shard),
            initial=state.done,
            unit="img",
            desc=f"{phase}",
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )
    batches = 0
    start = time.perf_counter()
    try:
        for batch in loader:
            _check_errors(batch, config)
            ok = torch.tensor([s == "" for s in batch["status"]], dtype=torch.bool)
            if phase == "main":
                for status in batch["status"]:
                    if status:
                        state.skips[SKIP_REASONS.index(status)] += 1
                state.seen += len(batch["status"])
            if ok.any():
                elapsed = _process(
                    phase, state, batch, ok, protocol, readout, boxes, subset, device
                )
                if timing is not None:
                    timing["forward_s"] += elapsed
                    timing["images"] += int(ok.sum())
            state.done += len(batch["status"])
            batches += 1
            if bar is not None:
                bar.update(len(batch["status"]))
            if batches % max(1, config.checkpoint_every) == 0:
                save()
    finally:
        if bar is not None:
            bar.close()
    if timing is not None:
        timing["wall_s"] += time.perf_counter() - start


def _check_errors(batch: dict, config: RunConfig) -> None:
    if config.on_error == "stop":
        for status, message in zip(batch["status"], batch["message"], strict=False):
            if status:
                raise DatasetError(
                    f"{message} (reason: {status}; pass --on-error skip to skip and count such items)"
                )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _process(
    phase: str,
    state: BenchmarkState,
    batch: dict,
    ok: Tensor,
    protocol: Protocol,
    readout: DenseReadout,
    boxes: bool,
    subset: list[int] | None,
    device: torch.device,
) -> float:
    x = batch["x"][ok].to(device, non_blocking=True)
    mask = batch["mask"][ok].to(device, non_blocking=True)
    target = batch["label"][ok].to(device)
    size = x.shape[0]
    inputs = protocol.three_inputs(x, mask) if (boxes and phase == "main") else x
    _synchronize(device)
    tic = time.perf_counter()
    result = readout(inputs)
    _synchronize(device)
    elapsed = time.perf_counter() - tic
    scores, logits, features = result.scores, result.logits, result.features
    if subset is not None:
        scores, logits = restrict_classes(scores, subset), restrict_classes(logits, subset)
    fg = grid_occupancy(mask, result.grid_size) if boxes else None
    if phase == "prototypes":
        state.prototypes.update(scores, features, fg, target)
        return elapsed
    real = batch["real"][ok].to(device)
    real_known = batch["real_known"][ok].to(device)
    if boxes:
        n_fg = fg.flatten(1).sum(1)
        cells = fg[0].numel()
        state.edges += torch.tensor(
            [
                int((n_fg == 0).sum()),
                int((n_fg == cells).sum()),
                int((real_known & (real.sum(1) == 0)).sum()),
                int((batch["clipped"][ok] > 0).sum()),
            ]
        )
        grid = GridBatch(
            target=target,
            logits=logits[:size],
            scores=scores[:size],
            fg=fg,
            scores_wo_bg=scores[size : 2 * size],
            scores_wo_fg=scores[2 * size :],
            real=real if bool(real_known.any()) else None,
            real_known=real_known,
        )
        if state.sweep is not None:
            state.sweep.update(scores[:size], features[:size], fg, target)
    else:
        grid = GridBatch(target=target, logits=logits, scores=scores)
    state.suite.update(grid)
    return elapsed


def _keep_speed(path: Path, speed: dict | None) -> dict | None:
    """Store this session's speed; a session that processed nothing reports the last measured one."""
    if speed is not None:
        _save_json_atomic(path, speed)
        return speed
    if path.is_file():
        previous = json.loads(path.read_text())
        previous["note"] = (
            "measured in an earlier session of this run (this session had nothing left to do)"
        )
        return previous
    return None


def _save_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def _results(
    state: BenchmarkState,
    settings: dict,
    config: RunConfig,
    timing: dict,
    resumed_from: dict | None,
    world_size: int,
) -> dict:
    values = state.suite.values()
    # skipped = every image of the run not counted by the metric (item errors included)
    counts = {
        name: {"used": c["used"], "skipped": int(state.seen) - c["used"]}
        for name, c in state.suite.counts().items()
    }
    images = timing["images"]
    speed = None
    if images and timing["forward_s"] > 0 and timing["wall_s"] > 0:
        throughput = images / timing["wall_s"]
        forward_rate = images / timing["forward_s"]
        speed = {
            "images": images,
            "wall_s": round(timing["wall_s"], 3),
            "forward_s": round(timing["forward_s"], 3),
            "images_per_s": round(throughput, 3),
            "forward_bound_images_per_s": round(forward_rate, 3),
            "ratio_to_forward_bound": round(throughput / forward_rate, 3),
            "forwards_per_image": timing["forwards_per_image"],
            "rank": 0,
            "workers": config.workers,
            "batch_size": config.batch_size,
            "note": "measured by rank 0 in this session (after any resume)",
        }
    return {
        **{name: values[name] for name in values},
        "counts": counts,
        "images": {
            "total": int(state.seen),
            "skipped": dict(zip(SKIP_REASONS, (int(v) for v in state.skips), strict=False)),
            "evaluated": int(state.seen) - int(state.skips.sum()),
        },
        "edge_cases": dict(zip(EDGE_CASES, (int(v) for v in state.edges), strict=False)),
        "thresholds": state.sweep.curves() if state.sweep is not None else None,
        "settings": settings,
        "model": settings["model"],
        "preprocessing": settings["protocol"],
        "version": __version__,
        "speed": speed,
        "world_size": world_size,
        "resumed_from": resumed_from,
        "on_error": config.on_error,
    }
