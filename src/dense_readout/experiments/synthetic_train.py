"""Training GAP classifiers from scratch on the synthetic scenes (paper 4.4, A.2).

Image-level cross-entropy on the single sampled target; validation of Top-1
(against the sampled target) and Loc. (a foreground cell is correct if its
top-1 class is *any* class present in that cell, with cells projected by
any-pixel occupancy of the 224-px semantic mask).

This module holds the training loop: the learning-rate schedule, the optimiser,
checkpoints and :func:`train`. Its parts live in modules of one job each and are
re-exported here, so ``from dense_readout.experiments.synthetic_train import ...``
keeps working for every name it offered:

* :mod:`.synthetic_recipes`: :class:`Recipe`, the :data:`RECIPES` registry,
  :func:`get_recipe`, :func:`register_recipe`, :func:`build_model`, :func:`grid_size_of`;
* :mod:`.synthetic_data`: :func:`cell_presence`, :class:`SyntheticDataset`,
  :class:`SceneTensors`, :class:`StreamingScenes`, :func:`materialize`;
* :mod:`.synthetic_metrics`: :class:`SyntheticMetrics`, :func:`evaluate`.

Checkpoints (``last.pt`` every epoch, ``best.pt`` by validation cell-pooled Loc.,
``loc_cell_pooled``) hold the model, optimiser, epoch, global step and history,
so an interrupted run continues where it stopped (:func:`train` with the same
``out_dir``). The learning-rate schedule is a pure function of the global step
and the epoch order a pure function of ``(seed, epoch)``, so a resumed run takes
the same path as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from .synthetic import SceneConfig, SceneGenerator, expected_top1
from .synthetic_data import (
    SceneSource,
    SceneTensors,
    StreamingScenes,
    SyntheticDataset,
    cell_presence,
    materialize,
    normalize_images,
)
from .synthetic_metrics import SyntheticMetrics, evaluate, upgrade_history
from .synthetic_recipes import (
    RECIPES,
    Recipe,
    build_model,
    get_recipe,
    grid_size_of,
    register_recipe,
)

__all__ = [
    "RECIPES",
    "Recipe",
    "SceneTensors",
    "StreamingScenes",
    "SyntheticDataset",
    "SyntheticMetrics",
    "build_model",
    "cell_presence",
    "evaluate",
    "get_recipe",
    "grid_size_of",
    "load_checkpoint",
    "lr_at",
    "materialize",
    "register_recipe",
    "train",
]

Log = Callable[[str], None]


# -- optimisation --------------------------------------------------------------------------------


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: linear warm-up, then cosine decay to ``min_lr``.

    Example:
        >>> from dense_readout.experiments.synthetic_train import Recipe, lr_at
        >>> recipe = Recipe("r", lr=0.1, min_lr=0.0, epochs=10, warmup_epochs=1)
        >>> [round(lr_at(recipe, step, steps_per_epoch=4), 4) for step in (0, 3)]  # warm-up
        [0.025, 0.1]
        >>> round(lr_at(recipe, 4 + 18, 4), 4), lr_at(recipe, 40, 4)  # half-way down; the end
        (0.05, 0.0)
    """
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1.0 + math.cos(math.pi * progress))


def _optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _name, parameter in model.named_parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise InputError(f"optimizer must be 'sgd' or 'adamw', got {recipe.optimizer!r}.")


# -- checkpoints ---------------------------------------------------------------------------------


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint


def load_checkpoint(path: str | Path) -> tuple[nn.Module, Recipe, dict[str, Any]]:
    """Model (eval mode), recipe and the rest of a checkpoint written by :func:`train`.

    The history of a checkpoint written before the Loc. keys were renamed is
    returned with the current names (:func:`~.synthetic_metrics.upgrade_history`).

    Example:
        >>> import tempfile, torch
        >>> from dense_readout.experiments.synthetic_train import get_recipe, load_checkpoint, train
        >>> tiny = get_recipe("cpu-resnet18", model_kwargs={"output_stride": 16,
        ...     "channels": [8, 16, 32, 64]}, input_size=64, train_size=8, val_size=4,
        ...     epochs=1, batch_size=4, eval_batch_size=4)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> history = train(tiny, tmp.name, progress=False, log=lambda s: None)
        >>> model, recipe, payload = load_checkpoint(f"{tmp.name}/last.pt")
        >>> recipe == tiny, model.training, payload["epoch"]
        (True, False, 1)
        >>> payload["history"]["epochs"] == history["epochs"]
        True
        >>> with torch.no_grad():
        ...     tuple(model(torch.zeros(1, 3, 64, 64)).shape)
        (1, 20)
        >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist; train first (dense-readout synthetic train)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        recipe = Recipe(**payload["recipe"])
        model = build_model(recipe)
        model.load_state_dict(payload["model"])
        payload["history"] = upgrade_history(payload["history"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a synthetic-training checkpoint: {error}") from None
    return model.eval(), recipe, payload


# -- the training loop ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What :func:`train` carries from epoch to epoch (and stores in ``last.pt``)."""

    recipe: Recipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: dict[str, Any]
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best: float = -1.0  # best validation loc_cell_pooled so far

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history": self.history,
            "recipe": asdict(self.recipe),
        }


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _start(recipe: Recipe, device: torch.device) -> tuple[_Run, tuple[int, int]]:
    """A fresh run (seeded model, optimiser, empty history) and its readout grid."""
    torch.manual_seed(recipe.seed)
    model = build_model(recipe).to(device)
    grid = grid_size_of(model, recipe.input_size)
    history: dict[str, Any] = {
        "recipe": asdict(recipe),
        "grid": list(grid),
        "expected_top1": 100 * expected_top1(),
        "epochs": [],
    }
    return _Run(recipe, model, _optimizer(recipe, model), history), grid


def _resume(run: _Run, last: Path, device: torch.device, log: Log) -> None:
    """Load model, optimiser, counters and history of ``last`` into ``run``."""
    payload = torch.load(last, map_location=device, weights_only=False)
    if payload.get("recipe") != asdict(run.recipe):
        raise CheckpointError(
            f"{last} was written by another recipe; use a fresh out_dir or resume=False.\n"
            f"checkpoint: {payload.get('recipe')}\nrequested: {asdict(run.recipe)}"
        )
    run.model.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.epoch, run.step, run.best = payload["epoch"], payload["step"], payload["best"]
    run.history = upgrade_history(payload["history"])
    log(f"resumed from {last} at epoch {run.epoch} (step {run.step})")


def _splits(
    recipe: Recipe, grid: tuple[int, int], out: Path, progress: bool
) -> tuple[SceneSource, SceneSource]:
    """The train and validation splits of ``recipe``: in memory (cached in ``out``) or streamed."""
    config = SceneConfig()
    train_set, val_set = (
        SyntheticDataset(
            SceneGenerator(config, recipe.data_seed, split), size, recipe.input_size, grid
        )
        for split, size in (("train", recipe.train_size), ("val", recipe.val_size))
    )
    if not recipe.in_memory:
        return StreamingScenes(train_set, recipe.workers), StreamingScenes(val_set, recipe.workers)
    key = f"{recipe.data_seed}_{recipe.input_size}_{grid[0]}x{grid[1]}"

    def cached(dataset: SyntheticDataset) -> SceneTensors:
        name = f"data_{dataset.generator.split}_{len(dataset)}_{key}.pt"
        return materialize(dataset, out / name, progress=progress)

    return cached(train_set), cached(val_set)


def _training_batches(
    recipe: Recipe, data: SceneSource, epoch: int
) -> Iterable[tuple[Tensor, Tensor]]:
    """Normalised ``(images, targets)`` of one epoch.

    The recipe's label resampling and flips are drawn from generators seeded by ``(seed,
    epoch)``.
    """
    flip_gen = torch.Generator().manual_seed(recipe.seed * 7919 + epoch)
    label_gen = torch.Generator().manual_seed(recipe.seed * 104_729 + epoch)
    for images, targets, visible in data.train_batches(recipe.batch_size, recipe.seed, epoch):
        images = normalize_images(images)
        if recipe.resample_targets:
            targets = torch.multinomial(visible.float(), 1, generator=label_gen).squeeze(1)
        if recipe.hflip:
            flip = torch.rand(len(targets), generator=flip_gen) < 0.5
            images[flip] = images[flip].flip(-1)
        yield images, targets


def _train_epoch(
    run: _Run, data: SceneSource, steps_per_epoch: int, device: torch.device, progress: bool
) -> dict[str, float]:
    """One epoch of SGD steps on ``run``; returns the running train loss and Top-1."""
    recipe, model, optimizer = run.recipe, run.model, run.optimizer
    model.train()
    batches = _training_batches(recipe, data, run.epoch)
    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"epoch {run.epoch + 1}/{recipe.epochs}"
        batches = bar = tqdm(batches, total=steps_per_epoch, desc=desc, mininterval=5.0)
    loss_sum, hits, seen = 0.0, 0, 0
    for cpu_images, cpu_targets in batches:
        images, targets = cpu_images.to(device), cpu_targets.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(recipe, run.step, steps_per_epoch)
        logits = model(images)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.step += 1
        loss_sum += loss.item() * len(targets)
        hits += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
        if bar is not None:
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}", acc=f"{100 * hits / seen:.1f}", lr=f"{lr:.3g}"
            )
    if bar is not None:
        bar.close()
    return {"train_loss": loss_sum / seen, "train_top1": 100 * hits / seen}


def _finish_epoch(
    run: _Run, out: Path, train: dict[str, float], val: dict[str, float]
) -> dict[str, Any]:
    """Record epoch ``run.epoch`` in the history and write the checkpoints.

    ``train``: loss, Top-1 and timings; ``val``: :meth:`SyntheticMetrics.summary`.
    """
    entry = {
        "epoch": run.epoch,
        "step": run.step,
        **train,
        **{f"val_{k}": v for k, v in val.items()},
    }
    run.history["epochs"].append(entry)
    improved = val["loc_cell_pooled"] > run.best
    run.best = max(run.best, val["loc_cell_pooled"])
    payload = run.payload()
    if improved:
        _save(out / "best.pt", {**payload, "optimizer": None})
    _save(out / "last.pt", payload)
    (out / "history.json").write_text(json.dumps(run.history, indent=1))
    return entry


def _epoch_message(entry: dict[str, Any]) -> str:
    return (
        f"epoch {entry['epoch']}: loss {entry['train_loss']:.3f} train-top1 "
        f"{entry['train_top1']:.1f} | val top1 {entry['val_top1']:.1f} (visible "
        f"{entry['val_top1_visible']:.1f}) loc cell-pooled {entry['val_loc_cell_pooled']:.1f} "
        f"(per image {entry['val_loc']:.1f}) | {entry['train_seconds']:.0f}s"
    )


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    log: Log = print,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` into ``out_dir`` (``last.pt``, ``best.pt``, ``history.json``).

    Resumes from ``out_dir/last.pt`` when present (and ``resume``). ``max_epochs``
    stops after that many epochs of *this call* (for time-boxed runs); the schedule
    still follows ``recipe.epochs``. Returns the history dict: ``initial`` (the
    metrics before training) and one entry per epoch with ``val_top1``,
    ``val_loc_cell_pooled``, ``val_loc`` (per image) and the train loss and Top-1.

    Example:
        >>> import tempfile
        >>> from dense_readout.experiments.synthetic_train import get_recipe, train
        >>> tiny = get_recipe("cpu-resnet18", train_size=64, val_size=16, epochs=1, batch_size=32)
        >>> history = train(tiny, tempfile.mkdtemp(), progress=False, log=lambda s: None)
        >>> len(history["epochs"]), sorted(k for k in history["epochs"][0] if "loc" in k)
        (1, ['val_loc', 'val_loc_cell_pooled'])
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = _device()
    run, grid = _start(recipe, device)
    if resume and (out / "last.pt").is_file():
        _resume(run, out / "last.pt", device, log)
    t0 = time.time()
    train_data, val_data = _splits(recipe, grid, out, progress)
    log(
        f"data ready in {time.time() - t0:.1f}s: train {len(train_data)}, val {len(val_data)}, grid {grid}"
    )
    steps_per_epoch = len(train_data) // recipe.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"train_size {recipe.train_size} < batch_size {recipe.batch_size}.")
    if run.epoch == 0 and not run.history["epochs"]:
        initial = evaluate(run.model, val_data, recipe.eval_batch_size)
        run.history["initial"] = initial
        log(
            f"epoch 0 (init): val top1 {initial['top1']:.1f} loc cell-pooled "
            f"{initial['loc_cell_pooled']:.1f} (per image {initial['loc']:.1f})"
        )
    stop = recipe.epochs if max_epochs is None else min(recipe.epochs, run.epoch + max_epochs)
    while run.epoch < stop:
        t_epoch = time.time()
        metrics = _train_epoch(run, train_data, steps_per_epoch, device, progress)
        metrics["train_seconds"] = time.time() - t_epoch
        val = evaluate(run.model, val_data, recipe.eval_batch_size)
        metrics["eval_seconds"] = time.time() - t_epoch - metrics["train_seconds"]
        run.epoch += 1
        log(_epoch_message(_finish_epoch(run, out, metrics, val)))
    return run.history
