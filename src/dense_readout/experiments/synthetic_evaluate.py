"""Evaluate a trained synthetic-scene classifier on a fresh split, with bootstrap intervals.

The paper reports its synthetic results on a held-out **test** split (50k scenes,
A.2). :func:`evaluate_run` renders a split from its own seed (by default the run's
data seed + 1, and the ``test`` split's random stream, so no scene can coincide
with a training or validation scene), runs the dense readout on every scene and
keeps each image's outcome (:func:`~.synthetic_metrics.image_outcomes`). From those
it reports Top-1, Top-1 (visible), Loc. pooled over cells and Loc. per image, each
with a percentile bootstrap confidence interval over images.

Long evaluations save their per-image outcomes every few batches
(``<name>.partial.npz`` beside the result, written atomically); rerunning the same
call continues from there and gives the same numbers as an uninterrupted run.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from dense_readout.experiments.synthetic_evaluate import evaluate_run
    >>> from dense_readout.experiments.synthetic_train import get_recipe, train
    >>> run = Path(tempfile.mkdtemp())
    >>> tiny = get_recipe("cpu-resnet18", train_size=32, val_size=8, epochs=1, batch_size=32)
    >>> _ = train(tiny, run, progress=False, log=lambda s: None)
    >>> report = evaluate_run(run, count=12, batch_size=6, resamples=200, progress=False)
    >>> report.summary["images"], report.split, report.seed
    (12.0, 'test', 1)
    >>> low, high = report.intervals["top1"]
    >>> low <= report.summary["top1"] <= high
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._atomic import write_atomic
from ..errors import CheckpointError, InputError
from .synthetic_metrics import image_outcomes

__all__ = ["OUTCOMES", "SplitEvaluation", "bootstrap_intervals", "evaluate_run", "summarize"]

OUTCOMES = ("top1", "top1_visible", "fg_cells", "fg_hits")
"""Per-image arrays kept by an evaluation (see :func:`~.synthetic_metrics.image_outcomes`)."""


def summarize(outcomes: dict[str, np.ndarray]) -> dict[str, float]:
    """The synthetic metrics (percent) from per-image outcomes.

    Same keys and definitions as :meth:`~.synthetic_metrics.SyntheticMetrics.summary`:
    ``loc_cell_pooled`` pools all foreground cells, ``loc`` averages per image over
    the images that have a foreground cell.

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_evaluate import summarize
        >>> s = summarize({"top1": np.array([1, 0]), "top1_visible": np.array([1, 1]),
        ...                "fg_cells": np.array([2, 1]), "fg_hits": np.array([1, 1])})
        >>> s["top1"], s["loc_cell_pooled"], s["loc"]
        (50.0, 66.66666666666667, 75.0)
    """
    cells = outcomes["fg_cells"].astype(np.float64)
    hits = outcomes["fg_hits"].astype(np.float64)
    has_fg = cells > 0
    count = len(cells)

    def pct(numerator: float, denominator: float) -> float:
        return 100.0 * numerator / denominator if denominator else float("nan")

    return {
        "top1": pct(float(outcomes["top1"].sum()), count),
        "top1_visible": pct(float(outcomes["top1_visible"].sum()), count),
        "loc_cell_pooled": pct(float(hits.sum()), float(cells.sum())),
        "loc": pct(float((hits[has_fg] / cells[has_fg]).sum()), float(has_fg.sum())),
        "images": float(count),
        "fg_cells": float(cells.sum()),
    }


def bootstrap_intervals(
    outcomes: dict[str, np.ndarray], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the four metrics, resampling images.

    Images are the independent units: ``loc_cell_pooled`` is resampled as a ratio of
    sums (cells of one image are not independent of each other).

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_evaluate import bootstrap_intervals
        >>> rng = np.random.default_rng(0)
        >>> data = {"top1": rng.random(400) < 0.25, "top1_visible": rng.random(400) < 0.9,
        ...         "fg_cells": np.full(400, 10), "fg_hits": rng.integers(7, 11, 400)}
        >>> low, high = bootstrap_intervals(data, resamples=500)["top1"]
        >>> 18 < low < 25 < high < 32
        True
    """
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}.")
    if resamples < 1:
        raise InputError(f"resamples must be positive, got {resamples}.")
    count = len(outcomes["top1"])
    if count == 0:
        raise InputError("No images to bootstrap: the evaluation is empty.")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {
        "top1": [],
        "top1_visible": [],
        "loc_cell_pooled": [],
        "loc": [],
    }
    for start in range(0, resamples, 100):  # chunks keep memory at 100 × images
        index = rng.integers(0, count, size=(min(100, resamples - start), count))
        cells = outcomes["fg_cells"][index].astype(np.float64)
        hits = outcomes["fg_hits"][index].astype(np.float64)
        draws["top1"] += list(100 * outcomes["top1"][index].mean(1))
        draws["top1_visible"] += list(100 * outcomes["top1_visible"][index].mean(1))
        draws["loc_cell_pooled"] += list(100 * hits.sum(1) / np.maximum(cells.sum(1), 1))
        share = np.divide(hits, cells, out=np.zeros_like(hits), where=cells > 0)
        draws["loc"] += list(100 * share.sum(1) / np.maximum((cells > 0).sum(1), 1))
    tail = 100 * (1 - level) / 2
    return {
        key: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
        for key, values in draws.items()
    }


@dataclass
class SplitEvaluation:
    """What :func:`evaluate_run` measured: metrics, intervals and where they came from.

    Example:
        >>> import json
        >>> from dense_readout.experiments.synthetic_evaluate import SplitEvaluation
        >>> report = SplitEvaluation(checkpoint="run/best.pt", recipe="cpu-resnet18", epoch=7,
        ...     split="test", seed=1, count=2000, summary={"top1": 40.0},
        ...     intervals={"top1": (37.9, 42.1)}, level=0.95, resamples=1000, grid=(6, 6),
        ...     expected_top1=26.1)
        >>> saved = json.loads(report.to_json())  # what evaluate_run writes beside the run
        >>> saved["intervals"]["top1"], saved["grid"], saved["summary"]["top1"]
        ([37.9, 42.1], [6, 6], 40.0)
    """

    checkpoint: str
    recipe: str
    epoch: int
    split: str
    seed: int
    count: int
    summary: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    level: float
    resamples: int
    grid: tuple[int, int]
    expected_top1: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _fingerprint(payload: dict[str, Any], split: str, seed: int, count: int) -> dict[str, Any]:
    return {
        "recipe": payload["recipe"],
        "epoch": payload["epoch"],
        "step": payload["step"],
        "split": split,
        "seed": seed,
        "count": count,
    }


def _scene_batches(
    recipe: Any, grid: tuple[int, int], split: str, seed: int, count: int, start: int, batch: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    from .synthetic import SceneConfig, SceneGenerator
    from .synthetic_data import SyntheticDataset

    dataset = SyntheticDataset(
        SceneGenerator(SceneConfig(), seed, split), count, recipe.input_size, grid
    )
    for first in range(start, count, batch):
        items = [dataset[i] for i in range(first, min(first + batch, count))]
        yield (
            torch.stack([item[0] for item in items]),
            torch.tensor([item[1] for item in items]),
            torch.stack([item[2] for item in items]),
        )


class _Partial:
    """Per-image outcomes so far, saved atomically so an interrupted run resumes."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.arrays: dict[str, list[np.ndarray]] = {key: [] for key in OUTCOMES}
        if resume and path.is_file():
            with np.load(path) as saved:
                if json.loads(str(saved["fingerprint"])) == fingerprint:
                    self.arrays = {key: [saved[key]] for key in OUTCOMES}

    @property
    def done(self) -> int:
        return sum(len(part) for part in self.arrays["top1"])

    def add(self, outcome: dict[str, Tensor]) -> None:
        for key in OUTCOMES:
            self.arrays[key].append(outcome[key].numpy())

    def joined(self) -> dict[str, np.ndarray]:
        return {
            key: np.concatenate(parts) if parts else np.zeros(0, np.int64)
            for key, parts in self.arrays.items()
        }

    def save(self) -> None:
        import io

        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"fingerprint": json.dumps(self.fingerprint), **self.joined()}
        np.savez(buffer, **arrays)
        write_atomic(self.path, buffer.getvalue())


def _load(run: Path, checkpoint: str) -> tuple[nn.Module, Any, dict[str, Any], Path]:
    from .synthetic_train import load_checkpoint

    path = run / checkpoint if run.is_dir() else run
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint {path}: pass a run folder written by 'dense-readout synthetic "
            "train' (it holds best.pt and last.pt) or a checkpoint file."
        )
    model, recipe, payload = load_checkpoint(path)
    return model, recipe, payload, path


def evaluate_run(  # long: argument checks, resume, the batch loop and the report in one place
    run: str | Path,
    *,
    checkpoint: str = "best.pt",
    split: str = "test",
    count: int = 10_000,
    seed: int | None = None,
    batch_size: int = 200,
    resamples: int = 1000,
    level: float = 0.95,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> SplitEvaluation:
    """Top-1 and Loc. of a run's checkpoint on ``count`` fresh scenes, with bootstrap CIs.

    Args:
        run: a run folder of ``synthetic train`` (``checkpoint`` inside it) or a
            checkpoint file. ``best.pt`` is the epoch selected by validation Loc.
        split: the scenes' split (``"test"``, ...).
        seed: the scenes' seed; defaults to the recipe's data seed + 1.
        count: number of scenes.
        batch_size: scenes per forward pass.
        resamples: bootstrap resamples.
        level: the bootstrap interval's coverage.
        out: folder for ``eval_<split>_s<seed>_n<count>.json`` and the partial state
            (default: the run folder).
        resume: continue a partial evaluation found in ``out``.
        progress: show a progress bar.
        on_batch: called with the number of scenes done after every batch.

    Example:
        >>> import json, tempfile
        >>> from dense_readout.experiments.synthetic_evaluate import evaluate_run
        >>> from dense_readout.experiments.synthetic_train import get_recipe, train
        >>> tiny = get_recipe("cpu-resnet18", model_kwargs={"output_stride": 16,
        ...     "channels": [8, 16, 32, 64]}, input_size=64, train_size=8, val_size=4,
        ...     epochs=1, batch_size=4, eval_batch_size=4)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> _ = train(tiny, tmp.name, progress=False, log=lambda s: None)
        >>> whole = evaluate_run(tmp.name, count=6, batch_size=3, resamples=100, progress=False)
        >>> whole.summary["images"], whole.grid, whole.split, whole.seed  # seed: data seed + 1
        (6.0, (4, 4), 'test', 1)
        >>> def interrupt(done):
        ...     if done == 3:
        ...         raise KeyboardInterrupt
        >>> try:  # stopped after the first batch: its outcomes are kept on disk
        ...     _ = evaluate_run(tmp.name, count=6, batch_size=3, resamples=100,
        ...         progress=False, out=f"{tmp.name}/again", on_batch=interrupt)
        ... except KeyboardInterrupt:
        ...     pass
        >>> done = []
        >>> resumed = evaluate_run(tmp.name, count=6, batch_size=3, resamples=100,
        ...     progress=False, out=f"{tmp.name}/again", on_batch=done.append)
        >>> done  # only the second batch was run again
        [6]
        >>> resumed.summary == whole.summary, resumed.intervals == whole.intervals
        (True, True)
        >>> json.load(open(f"{tmp.name}/eval_test_s1_n6.json"))["count"]
        6
        >>> tmp.cleanup()
    """
    if count <= 0 or batch_size <= 0:
        raise InputError(f"count and batch_size must be positive, got {count} and {batch_size}.")
    model, recipe, payload, path = _load(Path(run), checkpoint)
    seed = recipe.data_seed + 1 if seed is None else seed
    from .synthetic import SPLITS, expected_top1
    from .synthetic_data import normalize_images
    from .synthetic_recipes import grid_size_of

    if split not in SPLITS:
        raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
    folder = Path(out) if out is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{split}_s{seed}_n{count}"
    partial = _Partial(
        folder / f"{stem}.partial.npz", _fingerprint(payload, split, seed, count), resume
    )
    grid = grid_size_of(model, recipe.input_size)
    from ..readout import DenseReadout

    readout = DenseReadout(model)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, initial=partial.done, desc=f"evaluate {split}", mininterval=5.0)
    batches = _scene_batches(recipe, grid, split, seed, count, partial.done, batch_size)
    try:
        with torch.inference_mode():
            for number, (images, targets, presence) in enumerate(batches, 1):
                result = readout(normalize_images(images))
                partial.add(image_outcomes(result.logits, result.labels(), targets, presence))
                if number % 10 == 0:
                    partial.save()
                if bar is not None:
                    bar.update(len(targets))
                if on_batch is not None:
                    on_batch(partial.done)
    except BaseException:  # Ctrl-C or a crash: keep every finished batch for the rerun
        partial.save()
        raise
    finally:
        if bar is not None:
            bar.close()
    outcomes = partial.joined()
    report = SplitEvaluation(
        checkpoint=str(path),
        recipe=recipe.name,
        epoch=int(payload["epoch"]),
        split=split,
        seed=seed,
        count=count,
        summary=summarize(outcomes),
        intervals=bootstrap_intervals(outcomes, resamples, level),
        level=level,
        resamples=resamples,
        grid=grid,
        expected_top1=100 * expected_top1(),
    )
    write_atomic(folder / f"{stem}.json", report.to_json())
    partial.path.unlink(missing_ok=True)
    return report
