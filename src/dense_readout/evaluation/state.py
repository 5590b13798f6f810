"""A benchmark run's state: counters, checkpoints, and the results dictionary it becomes.

:class:`BenchmarkState` holds everything a run accumulates (metric suite, threshold
sweep, prototype sums, per-reason skip counts, edge-case counts, images seen) and
where it stands (phase, items of the shard done). All of it is int64, so states of
processes or sessions merge by summation.

:class:`Checkpoint` writes the state atomically (temporary file + ``os.replace``)
together with a fingerprint of the settings, and refuses to resume a run whose
settings differ. :func:`build_results` turns a finished state into the dictionary
written to ``results.json``.

Example:
    >>> import tempfile, pathlib
    >>> from dense_readout.evaluation.state import BenchmarkState, Checkpoint
    >>> from dense_readout.evaluation.metrics import MetricSuite
    >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
    >>> def fresh():
    ...     return BenchmarkState(MetricSuite(["top1"], 10), None, PrototypeAccumulator())
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rank0-of-1.pt"
    >>> state = fresh(); state.done = 32; state.seen += 32
    >>> Checkpoint(path, {"batch_size": 16}).save(state)
    >>> again = fresh()
    >>> Checkpoint(path, {"batch_size": 16}).resume(again), int(again.seen)
    ({'phase': 'main', 'done': 32}, 32)
    >>> Checkpoint(path, {"batch_size": 8}).resume(fresh())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dense_readout.errors.DenseReadoutError: ... belongs to a run with other settings; ...
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..errors import DenseReadoutError
from .metrics import MetricSuite
from .thresholds import PrototypeAccumulator, ThresholdSweep

__all__ = [
    "EDGE_CASES",
    "PHASES",
    "SKIP_REASONS",
    "BenchmarkState",
    "Checkpoint",
    "build_results",
    "keep_speed",
]

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
class BenchmarkState:
    """Everything a checkpoint holds: the phase, position in the shard and the accumulators.

    Example:
        >>> from dense_readout.evaluation.metrics import MetricSuite
        >>> from dense_readout.evaluation.state import BenchmarkState
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> state = BenchmarkState(MetricSuite(["top1"], 10), None, PrototypeAccumulator())
        >>> state.phase, state.done, int(state.seen), int(state.skips.sum())
        ('main', 0, 0, 0)
    """

    suite: MetricSuite
    sweep: ThresholdSweep | None
    prototypes: PrototypeAccumulator
    skips: Tensor = field(default_factory=lambda: torch.zeros(len(SKIP_REASONS), dtype=torch.int64))
    edges: Tensor = field(default_factory=lambda: torch.zeros(len(EDGE_CASES), dtype=torch.int64))
    seen: Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.int64))
    phase: str = "main"
    done: int = 0

    def state_dict(self) -> dict:
        """The whole state (metrics, sweep, prototypes) for a checkpoint."""
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
        """Restore a state written by :meth:`state_dict`."""
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

    def count_skips(self, statuses: list[str]) -> None:
        """Count a batch's items as seen, and the failed ones by reason."""
        for status in statuses:
            if status:
                self.skips[SKIP_REASONS.index(status)] += 1
        self.seen += len(statuses)


def fingerprint(settings: dict) -> str:
    """A short hash of the settings that change numbers (a checkpoint resumes only with equal ones)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _save_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _save_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


class Checkpoint:
    """One process's checkpoint file: the state, saved with the run's settings and fingerprint.

    Example:
        >>> import pathlib, tempfile
        >>> from dense_readout.evaluation.metrics import MetricSuite
        >>> from dense_readout.evaluation.state import BenchmarkState, Checkpoint
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> def fresh():
        ...     return BenchmarkState(MetricSuite(["top1"], 10), None, PrototypeAccumulator())
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     checkpoint = Checkpoint(pathlib.Path(folder) / "rank0-of-1.pt", {"batch_size": 16})
        ...     print(checkpoint.resume(fresh()))  # nothing saved yet
        ...     state = fresh(); state.done = 32; state.seen += 32
        ...     checkpoint.save(state)
        ...     again = fresh()
        ...     print(checkpoint.resume(again), int(again.seen))
        None
        {'phase': 'main', 'done': 32} 32
    """

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = Path(path)
        self.settings = settings
        self.fingerprint = fingerprint(settings)

    def save(self, state: BenchmarkState) -> None:
        """Write ``state`` atomically (a kill leaves the previous checkpoint or this one)."""
        _save_atomic(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "settings": self.settings,
                "state": state.state_dict(),
            },
        )

    def resume(self, state: BenchmarkState) -> dict | None:
        """Load the saved state into ``state``; returns where it resumes (None: no checkpoint).

        Raises :class:`~dense_readout.errors.DenseReadoutError` when the checkpoint
        belongs to a run with other settings.
        """
        if not self.path.is_file():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        if payload.get("fingerprint") != self.fingerprint:
            raise DenseReadoutError(
                f"{self.path} belongs to a run with other settings; use the same arguments to resume, "
                f"or another --out directory (or delete {self.path.parent}) to start afresh."
            )
        state.load_state_dict(payload["state"])
        return {"phase": state.phase, "done": state.done}


def keep_speed(path: Path, speed: dict | None) -> dict | None:
    """Store this session's speed; a session that processed nothing reports the last measured one.

    Example:
        >>> import pathlib, tempfile
        >>> from dense_readout.evaluation.state import keep_speed
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "speed.json"
        ...     first = keep_speed(path, {"images_per_s": 120.0})  # a session that measured
        ...     later = keep_speed(path, None)  # a resumed session with nothing left to do
        >>> first, later["images_per_s"], "earlier session" in later["note"]
        ({'images_per_s': 120.0}, 120.0, True)
    """
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


def _speed(timing: dict, workers: int, batch_size: int) -> dict | None:
    """Throughput of this session against the forward-pass-bound rate (None: nothing timed)."""
    images = timing["images"]
    if not (images and timing["forward_s"] > 0 and timing["wall_s"] > 0):
        return None
    throughput = images / timing["wall_s"]
    forward_rate = images / timing["forward_s"]
    return {
        "images": images,
        "wall_s": round(timing["wall_s"], 3),
        "forward_s": round(timing["forward_s"], 3),
        "images_per_s": round(throughput, 3),
        "forward_bound_images_per_s": round(forward_rate, 3),
        "ratio_to_forward_bound": round(throughput / forward_rate, 3),
        "forwards_per_image": timing["forwards_per_image"],
        "rank": 0,
        "workers": workers,
        "batch_size": batch_size,
        "note": "measured by rank 0 in this session (after any resume)",
    }


def build_results(
    state: BenchmarkState,
    settings: dict,
    config: Any,
    timing: dict,
    resumed_from: dict | None,
    world_size: int,
) -> dict:
    """The ``results.json`` dictionary of a finished (all-reduced) state.

    ``config`` is the run's :class:`~.runner.RunConfig` (``workers``, ``batch_size``,
    ``on_error`` are recorded).

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.metrics import GridBatch, MetricSuite
        >>> from dense_readout.evaluation.runner import RunConfig
        >>> from dense_readout.evaluation.state import BenchmarkState, build_results
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> state = BenchmarkState(MetricSuite(["top1"], 3), None, PrototypeAccumulator())
        >>> logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
        >>> state.suite.update(GridBatch(torch.tensor([1, 2]), logits, logits[:, :, None, None]))
        >>> state.seen += 2
        >>> settings = {"model": {"name": "toy"}, "protocol": {}}
        >>> timing = {"images": 0, "forward_s": 0.0, "wall_s": 0.0, "forwards_per_image": 1}
        >>> results = build_results(state, settings, RunConfig(), timing, None, world_size=1)
        >>> results["top1"], results["counts"]["top1"], results["images"]["evaluated"]
        (50.0, {'used': 2, 'skipped': 0}, 2)
    """
    values = state.suite.values()
    # skipped = every image of the run not counted by the metric (item errors included)
    counts = {
        name: {"used": c["used"], "skipped": int(state.seen) - c["used"]}
        for name, c in state.suite.counts().items()
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
        "speed": _speed(timing, config.workers, config.batch_size),
        "world_size": world_size,
        "resumed_from": resumed_from,
        "on_error": config.on_error,
    }
