"""Training GAP classifiers from scratch on the synthetic scenes (paper 4.4, A.2).

Image-level cross-entropy on the single sampled target; validation of Top-1
(against the sampled target) and Loc. (a foreground cell is correct if its
top-1 class is *any* class present in that cell, with cells projected by
any-pixel occupancy of the 224-px semantic mask). Recipes are data in the
:data:`RECIPES` registry: the paper's GPU recipes and reduced CPU recipes.

Checkpoints (``last.pt`` every epoch, ``best.pt`` by validation Loc.) hold the
model, optimiser, epoch, global step and history, so an interrupted run
continues where it stopped (:func:`train` with the same ``out_dir``). The
learning-rate schedule is a pure function of the global step and the epoch
order of a pure function of ``(seed, epoch)``, so a resumed run takes the same
path as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from .synthetic import NUM_CLASSES, SceneConfig, SceneGenerator, expected_top1

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


# -- recipes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One training configuration (all fields are plain data, stored in checkpoints).

    Attributes:
        name: registry key.
        model: timm architecture; ``model_kwargs`` are passed to ``timm.create_model``.
        input_size: side of the model input; scenes are rendered at 224 px (A.2) and
            box-downsampled when smaller.
        train_size, val_size: number of scenes (seed ``data_seed``, splits train/val).
        epochs, batch_size: optimisation length.
        optimizer: ``'sgd'`` (momentum) or ``'adamw'``; ``lr``, ``weight_decay``,
            ``momentum``; ``warmup_epochs`` of linear warm-up then cosine decay to
            ``min_lr``.
        hflip: random horizontal flips (every class is mirror-symmetric up to rotation).
        resample_targets: draw the single training label anew each epoch, uniformly
            from the image's visible classes (the COCO protocol of A.1), instead of
            using the record's fixed sampled target (A.2). Still one label per step.
        in_memory: render the datasets once into tensors (cached to ``out_dir``)
            instead of streaming scenes through DataLoader workers.
        workers: DataLoader workers when streaming.
    """

    name: str
    model: str = "resnet18"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 224
    train_size: int = 500_000
    val_size: int = 50_000
    epochs: int = 100
    batch_size: int = 512
    optimizer: str = "sgd"
    lr: float = 0.15
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    hflip: bool = False
    resample_targets: bool = False
    seed: int = 0
    data_seed: int = 0
    in_memory: bool = False
    workers: int = 8
    eval_batch_size: int = 256

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` under its name (returns it)."""
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A registered recipe, with fields overridden (e.g. ``epochs=2``).

    Example:
        >>> from dense_readout.experiments.synthetic_train import get_recipe
        >>> get_recipe("cpu-resnet18", epochs=1).epochs
        1
    """
    if name not in RECIPES:
        raise InputError(f"Unknown recipe {name!r}; registered: {sorted(RECIPES)}.")
    unknown = set(overrides) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise InputError(
            f"Unknown recipe fields {sorted(unknown)}; valid: {sorted(Recipe.__dataclass_fields__)}."
        )
    return replace(RECIPES[name], **overrides)


_VIT_KWARGS = {
    "class_token": False,
    "global_pool": "avg",
    "fc_norm": False,
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "attn_drop_rate": 0.0,
    "proj_drop_rate": 0.0,
}

# The paper's GPU recipes (A.2): 500k/50k scenes, batch 512, up to 100 epochs.
register_recipe(Recipe(name="paper-resnet18", model="resnet18", lr=0.15, weight_decay=1e-4))
register_recipe(
    Recipe(
        name="paper-vit-s32",
        model="vit_small_patch32_224",
        model_kwargs=dict(_VIT_KWARGS),
        optimizer="adamw",
        lr=1.5e-3,
        weight_decay=0.05,
        min_lr=1e-5,
    )
)
# Reduced CPU recipes: 96-px inputs (the 224-px scenes box-downsampled); ResNet-18 with
# output stride 16 (dilated last stage) and ViT-S with 16-px patches give a 6×6 grid,
# close to the paper's 7×7; 6,000 scenes × 7 epochs.
register_recipe(
    Recipe(
        name="cpu-resnet18",
        model="resnet18",
        model_kwargs={"output_stride": 16},
        input_size=96,
        train_size=6000,
        val_size=300,
        epochs=7,
        batch_size=32,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=0.25,
        min_lr=1e-5,
        hflip=True,
        resample_targets=True,
        in_memory=True,
        workers=0,
        eval_batch_size=100,
    )
)
register_recipe(
    Recipe(
        name="cpu-vit-s32",
        model="vit_small_patch32_224",
        model_kwargs={**_VIT_KWARGS, "img_size": 96, "patch_size": 16},
        input_size=96,
        train_size=6000,
        val_size=300,
        epochs=7,
        batch_size=32,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_epochs=0.25,
        min_lr=1e-5,
        hflip=True,
        resample_targets=True,
        in_memory=True,
        workers=0,
        eval_batch_size=100,
    )
)


def build_model(recipe: Recipe, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A randomly initialised timm GAP classifier for ``recipe`` (no downloads)."""
    import timm

    try:
        return timm.create_model(
            recipe.model, pretrained=False, num_classes=num_classes, **recipe.model_kwargs
        )
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"Cannot build {recipe.model} with {recipe.model_kwargs}: {error}"
        ) from None


def grid_size_of(model: nn.Module, input_size: int) -> tuple[int, int]:
    """``(h, w)`` of the model's readout grid for ``input_size`` inputs."""
    from ..readout import DenseReadout

    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        probe = torch.zeros(1, 3, input_size, input_size, device=parameter.device)
        result = DenseReadout(model)(probe)
    finally:
        model.train(was_training)
    return result.grid_size


# -- data --------------------------------------------------------------------------------------


def _cell_bounds(size: int, cells: int) -> list[tuple[int, int]]:
    # the windows of adaptive pooling, as in evaluation.protocol.grid_occupancy
    return [((i * size) // cells, -((-(i + 1) * size) // cells)) for i in range(cells)]


def cell_presence(
    semantic: np.ndarray, grid: tuple[int, int], num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Classes present in each grid cell by any-pixel occupancy: ``K×h×w`` bool.

    ``semantic`` holds 0 for background and ``k + 1`` for class ``k``. Cell ``i``
    covers rows ``floor(i·H/h) .. ceil((i+1)·H/h)-1`` (and likewise columns): the
    windows of :func:`~dense_readout.evaluation.protocol.grid_occupancy`, applied to
    every class at once. (Computed per cell on the label map rather than by pooling
    K one-hot float masks: that allocates 4 MB per scene and fragmented the heap
    to 19 GB over 5,000 scenes.)

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_train import cell_presence
        >>> mask = np.zeros((4, 4), np.uint8); mask[0, 3] = 2   # class 1, top-right pixel
        >>> cell_presence(mask, (2, 2), num_classes=3)[1].tolist()
        [[False, True], [False, False]]
    """
    if semantic.ndim != 2:
        raise InputError(f"semantic mask must be H×W, got shape {semantic.shape}.")
    if int(semantic.max(initial=0)) > num_classes:
        raise InputError(
            f"semantic mask holds label {int(semantic.max())} > num_classes={num_classes}."
        )
    height, width = semantic.shape
    out = np.zeros((num_classes, grid[0], grid[1]), dtype=bool)
    for i, (top, bottom) in enumerate(_cell_bounds(height, grid[0])):
        for j, (left, right) in enumerate(_cell_bounds(width, grid[1])):
            labels = np.unique(semantic[top:bottom, left:right])
            out[labels[labels > 0] - 1, i, j] = True
    return out


class SyntheticDataset(torch.utils.data.Dataset):
    """Scenes streamed on the fly: ``(image uint8 3×S×S, target, presence K×h×w bool,
    visible K bool)``. ``visible`` marks the record's visible classes (the ones a
    target may be sampled from).

    Args:
        generator: a :class:`~dense_readout.experiments.synthetic.SceneGenerator`.
        count: number of scenes (indices ``0..count-1``).
        input_size: model input side; scenes are box-downsampled from their render size.
        grid: readout grid ``(h, w)`` for the presence maps (from the 224-px masks).

    Example:
        >>> from dense_readout.experiments.synthetic import SceneGenerator
        >>> from dense_readout.experiments.synthetic_train import SyntheticDataset
        >>> image, target, presence, visible = SyntheticDataset(SceneGenerator(), 4, 112, (7, 7))[0]
        >>> tuple(image.shape), tuple(presence.shape), bool(presence[target].any())
        ((3, 112, 112), (20, 7, 7), True)
    """

    def __init__(
        self, generator: SceneGenerator, count: int, input_size: int, grid: tuple[int, int]
    ) -> None:
        if count <= 0:
            raise InputError(f"count must be positive, got {count}.")
        self.generator, self.count, self.input_size, self.grid = (
            generator,
            count,
            input_size,
            tuple(grid),
        )

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor, Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        scene = self.generator(index)
        image = scene.image
        if image.shape[0] != self.input_size:
            image = np.asarray(
                Image.fromarray(image).resize(
                    (self.input_size, self.input_size), Image.Resampling.BOX
                )
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        presence = torch.from_numpy(cell_presence(scene.semantic, self.grid))
        visible = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        visible[scene.visible_classes] = True
        return tensor, scene.target, presence, visible


@dataclass
class SceneTensors:
    """A materialised split: ``images`` N×3×S×S uint8, ``targets`` N, ``presence``
    N×K×h×w and ``visible`` N×K (bool)."""

    images: Tensor
    targets: Tensor
    presence: Tensor
    visible: Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def train_batches(
        self, batch_size: int, seed: int, epoch: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Shuffled ``(images, targets, visible)`` batches; the order is a function of ``(seed, epoch)``."""
        for index in _epoch_order(len(self), batch_size, seed, epoch):
            yield self.images[index], self.targets[index], self.visible[index]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Sequential ``(images, targets, presence)`` batches."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self.images[start:stop], self.targets[start:stop], self.presence[start:stop]


class StreamingScenes:
    """A split rendered on the fly by DataLoader workers (for the full-size recipes).

    Same interface as :class:`SceneTensors` (``train_batches``/``eval_batches``),
    same epoch order for a given ``(seed, epoch)``.
    """

    def __init__(self, dataset: SyntheticDataset, workers: int = 0) -> None:
        self.dataset, self.workers = dataset, workers

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_sampler: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def train_batches(
        self, batch_size: int, seed: int, epoch: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = [index.tolist() for index in _epoch_order(len(self), batch_size, seed, epoch)]
        for images, targets, _, visible in self._loader(order):
            yield images, targets, visible

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = [
            list(range(i, min(i + batch_size, len(self)))) for i in range(0, len(self), batch_size)
        ]
        for images, targets, presence, _ in self._loader(order):
            yield images, targets, presence


def materialize(
    dataset: SyntheticDataset, cache: Path | None = None, progress: bool = False
) -> SceneTensors:
    """Render a dataset into tensors once; reuse ``cache`` (a ``.pt`` file) if it exists."""
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SceneTensors(data["images"], data["targets"], data["presence"], data["visible"])
    items = range(len(dataset))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"render {dataset.generator.split}", leave=False)
    images, targets, presence, visible = [], [], [], []
    for index in items:
        image, target, cells, classes = dataset[index]
        visible.append(classes)
        images.append(image)
        targets.append(target)
        presence.append(cells)
    tensors = SceneTensors(
        torch.stack(images),
        torch.tensor(targets, dtype=torch.long),
        torch.stack(presence),
        torch.stack(visible),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(
            {
                "images": tensors.images,
                "targets": tensors.targets,
                "presence": tensors.presence,
                "visible": tensors.visible,
            },
            tmp,
        )
        tmp.replace(cache)
    return tensors


def _normalize(images: Tensor) -> Tensor:
    return images.float().div_(127.5).sub_(1.0)  # mean = std = 0.5


# -- metrics -------------------------------------------------------------------------------------


@dataclass
class SyntheticMetrics:
    """Streaming Top-1 (vs the sampled target) and Loc. (FG cell top-1 ∈ classes in the cell).

    ``update(logits B×K, labels B×h×w, targets B, presence B×K×h×w)``; :meth:`summary`
    returns percentages: ``top1``, ``top1_visible`` (image prediction is any visible
    class), ``loc`` (pooled over all FG cells), ``loc_per_image`` (mean of per-image
    Loc.), and the counts.

    Example:
        >>> import torch
        >>> from dense_readout.experiments.synthetic_train import SyntheticMetrics
        >>> m = SyntheticMetrics()
        >>> presence = torch.zeros(1, 3, 1, 2, dtype=torch.bool); presence[0, 1, 0, 0] = True
        >>> presence[0, 2, 0, 1] = True
        >>> m.update(torch.tensor([[0., 1., 0.]]), torch.tensor([[[1, 1]]]), torch.tensor([2]), presence)
        >>> m.summary()["loc"], m.summary()["top1"]
        (50.0, 0.0)
    """

    images: int = 0
    top1_hits: int = 0
    visible_hits: int = 0
    fg_cells: int = 0
    fg_hits: int = 0
    per_image_loc_sum: float = 0.0
    images_with_fg: int = 0

    def update(self, logits: Tensor, labels: Tensor, targets: Tensor, presence: Tensor) -> None:
        predicted = logits.argmax(dim=1).cpu()
        targets = targets.cpu()
        presence = presence.cpu().bool()
        labels = labels.cpu()
        visible = presence.any(dim=(2, 3))  # B×K classes present anywhere on the grid
        self.images += int(targets.numel())
        self.top1_hits += int((predicted == targets).sum())
        self.visible_hits += int(visible.gather(1, predicted.view(-1, 1)).sum())
        foreground = presence.any(dim=1)  # B×h×w
        correct = presence.gather(1, labels.unsqueeze(1)).squeeze(1) & foreground
        cells = foreground.flatten(1).sum(1)
        hits = correct.flatten(1).sum(1)
        self.fg_cells += int(cells.sum())
        self.fg_hits += int(hits.sum())
        has_fg = cells > 0
        self.images_with_fg += int(has_fg.sum())
        self.per_image_loc_sum += float((hits[has_fg].float() / cells[has_fg].float()).sum())

    def summary(self) -> dict[str, float]:
        pct = lambda a, b: 100.0 * a / b if b else float("nan")  # noqa: E731
        return {
            "top1": pct(self.top1_hits, self.images),
            "top1_visible": pct(self.visible_hits, self.images),
            "loc": pct(self.fg_hits, self.fg_cells),
            "loc_per_image": pct(self.per_image_loc_sum, self.images_with_fg),
            "images": float(self.images),
            "fg_cells": float(self.fg_cells),
        }


def evaluate(
    model: nn.Module, data: SceneTensors | StreamingScenes, batch_size: int = 100
) -> dict[str, float]:
    """Validation Top-1 and Loc. of ``model`` on ``data`` via the dense readout.

    Runs on the model's device; returns :meth:`SyntheticMetrics.summary`.
    """
    from ..readout import DenseReadout

    was_training = model.training
    model.eval()
    readout = DenseReadout(model)
    device = next(model.parameters()).device
    metrics = SyntheticMetrics()
    try:
        for images, targets, presence in data.eval_batches(batch_size):
            result = readout(_normalize(images.to(device)))
            metrics.update(result.logits, result.labels(), targets, presence)
    finally:
        model.train(was_training)
    return metrics.summary()


# -- optimisation ------------------------------------------------------------------------------


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: linear warm-up, then cosine decay to ``min_lr``."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1.0 + math.cos(math.pi * progress))


def _optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
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


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint


def load_checkpoint(path: str | Path) -> tuple[nn.Module, Recipe, dict[str, Any]]:
    """Model (eval mode), recipe and the rest of a checkpoint written by :func:`train`."""
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
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a synthetic-training checkpoint: {error}") from None
    return model.eval(), recipe, payload


def _epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(count, generator=generator)
    return [order[i : i + batch_size] for i in range(0, count - batch_size + 1, batch_size)]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _splits(recipe: Recipe, grid: tuple[int, int], out: Path, progress: bool):
    config = SceneConfig()
    datasets = [
        SyntheticDataset(
            SceneGenerator(config, recipe.data_seed, split), size, recipe.input_size, grid
        )
        for split, size in (("train", recipe.train_size), ("val", recipe.val_size))
    ]
    if not recipe.in_memory:
        return [StreamingScenes(dataset, recipe.workers) for dataset in datasets]
    key = f"{recipe.data_seed}_{recipe.input_size}_{grid[0]}x{grid[1]}"
    return [
        materialize(
            dataset,
            out / f"data_{dataset.generator.split}_{len(dataset)}_{key}.pt",
            progress=progress,
        )
        for dataset in datasets
    ]


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` into ``out_dir`` (``last.pt``, ``best.pt``, ``history.json``).

    Resumes from ``out_dir/last.pt`` when present (and ``resume``). ``max_epochs``
    stops after that many epochs of *this call* (for time-boxed runs); the schedule
    still follows ``recipe.epochs``. Returns the history dict.

    Example:
        >>> import tempfile
        >>> from dense_readout.experiments.synthetic_train import get_recipe, train
        >>> tiny = get_recipe("cpu-resnet18", train_size=64, val_size=16, epochs=1, batch_size=32)
        >>> history = train(tiny, tempfile.mkdtemp(), progress=False, log=lambda s: None)
        >>> len(history["epochs"])
        1
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    device = _device()
    model = build_model(recipe).to(device)
    grid = grid_size_of(model, recipe.input_size)
    optimizer = _optimizer(recipe, model)
    history: dict[str, Any] = {
        "recipe": asdict(recipe),
        "grid": list(grid),
        "expected_top1": 100 * expected_top1(),
        "epochs": [],
    }
    start_epoch, step, best = 0, 0, -1.0
    last = out / "last.pt"
    if resume and last.is_file():
        payload = torch.load(last, map_location=device, weights_only=False)
        if payload.get("recipe") != asdict(recipe):
            raise CheckpointError(
                f"{last} was written by another recipe; use a fresh out_dir or resume=False.\n"
                f"checkpoint: {payload.get('recipe')}\nrequested: {asdict(recipe)}"
            )
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        start_epoch, step, best, history = (
            payload["epoch"],
            payload["step"],
            payload["best"],
            payload["history"],
        )
        log(f"resumed from {last} at epoch {start_epoch} (step {step})")

    t0 = time.time()
    train_data, val_data = _splits(recipe, grid, out, progress)
    log(
        f"data ready in {time.time() - t0:.1f}s: train {len(train_data)}, val {len(val_data)}, grid {grid}"
    )
    steps_per_epoch = len(train_data) // recipe.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"train_size {recipe.train_size} < batch_size {recipe.batch_size}.")
    if start_epoch == 0 and not history["epochs"]:
        initial = evaluate(model, val_data, recipe.eval_batch_size)
        history["initial"] = initial
        log(f"epoch 0 (init): val top1 {initial['top1']:.1f} loc {initial['loc']:.1f}")

    stop_epoch = (
        recipe.epochs if max_epochs is None else min(recipe.epochs, start_epoch + max_epochs)
    )
    for epoch in range(start_epoch, stop_epoch):
        model.train()
        flip_gen = torch.Generator().manual_seed(recipe.seed * 7919 + epoch)
        label_gen = torch.Generator().manual_seed(recipe.seed * 104_729 + epoch)
        iterator = train_data.train_batches(recipe.batch_size, recipe.seed, epoch)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                iterator,
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{recipe.epochs}",
                mininterval=5.0,
            )
            iterator = bar
        loss_sum, hits, seen, t_epoch = 0.0, 0, 0, time.time()
        for images, targets, visible in iterator:
            images = _normalize(images)
            if recipe.resample_targets:
                targets = torch.multinomial(visible.float(), 1, generator=label_gen).squeeze(1)
            if recipe.hflip:
                flip = torch.rand(len(targets), generator=flip_gen) < 0.5
                images[flip] = images[flip].flip(-1)
            images, targets = images.to(device), targets.to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, step, steps_per_epoch)
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(targets)
            hits += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}",
                    acc=f"{100 * hits / seen:.1f}",
                    lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                )
        if bar is not None:
            bar.close()
        train_seconds = time.time() - t_epoch
        val = evaluate(model, val_data, recipe.eval_batch_size)
        entry = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": loss_sum / seen,
            "train_top1": 100 * hits / seen,
            "train_seconds": train_seconds,
            "eval_seconds": time.time() - t_epoch - train_seconds,
            **{f"val_{k}": v for k, v in val.items()},
        }
        history["epochs"].append(entry)
        log(
            f"epoch {epoch + 1}: loss {entry['train_loss']:.3f} train-top1 {entry['train_top1']:.1f} | val top1 "
            f"{val['top1']:.1f} (visible {val['top1_visible']:.1f}) loc {val['loc']:.1f} "
            f"(per image {val['loc_per_image']:.1f}) | {train_seconds:.0f}s"
        )
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "step": step,
            "best": max(best, val["loc"]),
            "history": history,
            "recipe": asdict(recipe),
        }
        if val["loc"] > best:
            best = val["loc"]
            _save(out / "best.pt", {**payload, "optimizer": None})
        payload["best"] = best
        _save(last, payload)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return history
