"""LRP refinement of dense-readout scores: a cell's score ``Z[k,u,v]`` back to pixels.

The relevance starts at the readout scores, computed with the model's own head
modules (so zennit's rules for ``nn.Linear``/LayerNorm apply to the head), and is
propagated with a zennit composite after the canonizers of
:mod:`dense_readout.lrp.canonizers` made the timm blocks LRP-ready.

LRP with fixed rules is *linear in the starting relevance* (every rule divides by
forward quantities only). Two consequences are used here:

* the class map of ``k`` (all cells at once) is one backward pass, and the pixel
  label map needs one pass per class present in the label grid, not per cell;
* refining every cell separately is one forward pass plus one *batched* backward
  pass (``torch.autograd.grad(..., is_grads_batched=True)``), not ``h·w`` passes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from zennit.core import Composite

from ..adapters import ModelAdapter
from ..errors import InputError, UnsupportedModelError
from ..readout import DenseReadout
from ..validation import check_eval_mode, check_images, check_targets
from . import composites as _composites
from .canonizers import (
    BlockCanonizer,
    LayerNormCanonizer,
    MergeBatchNormPairs,
    trace_batch_norm_pairs,
)

__all__ = ["STRATEGIES", "CellRelevance", "LRPReadout", "LRPResult", "LabelMap"]

Target = int | Sequence[int] | Tensor | None
Cell = tuple[int, int] | Sequence[Sequence[int]] | Tensor

#: How all-cells refinement batches its backward passes.
STRATEGIES = ("vmap", "expand", "loop")


@dataclass
class LRPResult:
    """Pixel relevance of one start (a cell's score, or a class map) per image.

    Attributes:
        relevance: ``B×1×H×W``, input relevance summed over colour channels.
        input_relevance: ``B×C×H×W``, per input channel.
        start: ``B``, total relevance put in at the readout (the selected scores' sum).
        conservation: ``B``, ``relevance.sum() / start`` (health check: 1 for a
            conservative rule set without biases; see docs/lrp.md).
        targets: ``B`` class per image.
        cells: ``B×2`` ``(u, v)`` of the refined cell, or None for a class map.
        scores: ``Z`` of the same pass, ``B×K×h×w`` (detached).
        composite: name (or class name) of the composite used.
    """

    relevance: Tensor
    input_relevance: Tensor
    start: Tensor
    conservation: Tensor
    targets: Tensor
    cells: Tensor | None
    scores: Tensor
    composite: str

    @property
    def grid_size(self) -> tuple[int, int]:
        return int(self.scores.shape[-2]), int(self.scores.shape[-1])

    def outside_share(self, mode: str = "abs") -> Tensor:
        """``B`` share of the cell's relevance outside its own image patch (cell results only)."""
        from .diagnostics import _mass, cell_patch_masks

        if self.cells is None:
            raise InputError(
                "outside_share needs a single-cell result (LRPReadout.cell), not a class map."
            )
        masks = cell_patch_masks(self.grid_size, tuple(self.relevance.shape[-2:]))
        inside = masks[self.cells[:, 0], self.cells[:, 1]].to(self.relevance.device)  # B×H×W
        mass = _mass(self.relevance[:, 0], mode)
        return 1 - (mass * inside).sum(dim=(1, 2)) / mass.sum(dim=(1, 2))


@dataclass
class CellRelevance:
    """Relevance of every refined cell, kept separate.

    Attributes:
        relevance: ``B×h×w×H×W`` (channels summed); entry ``[b, u, v]`` is the map
            of cell ``(u, v)``. Cells not requested are zero.
        classes: ``B×h×w`` class refined at each cell.
        start: ``B×h×w`` starting relevance (the cell's score of that class).
        conservation: ``B×h×w`` input relevance sum / start.
        scores: ``Z`` (``B×K×h×w``).
        strategy: the batching strategy that ran.
    """

    relevance: Tensor
    classes: Tensor
    start: Tensor
    conservation: Tensor
    scores: Tensor
    composite: str
    strategy: str

    @property
    def grid_size(self) -> tuple[int, int]:
        return int(self.classes.shape[-2]), int(self.classes.shape[-1])

    def cell(self, u: int, v: int) -> Tensor:
        """The ``B×1×H×W`` map of cell ``(u, v)``."""
        return self.relevance[:, u, v].unsqueeze(1)


@dataclass
class LabelMap:
    """Pixel-level label map from every cell's own top-1 score.

    Attributes:
        labels: ``B×H×W`` class of the group of cells whose relevance dominates
            each pixel (argmax over classes of the summed relevance).
        classes: ``B×M`` class of each group (``-1`` pads images with fewer classes).
        relevance: ``B×M×H×W`` relevance per class group (channels summed).
        grid_labels: ``B×h×w`` the readout label grid the groups come from.
        conservation: ``B`` total input relevance / total starting relevance.
        scores: ``Z``.
    """

    labels: Tensor
    classes: Tensor
    relevance: Tensor
    grid_labels: Tensor
    conservation: Tensor
    scores: Tensor
    composite: str


def _model_bounds(model: nn.Module) -> tuple[Tensor, Tensor]:
    from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", IMAGENET_MEAN) if isinstance(cfg, dict) else IMAGENET_MEAN
    std = cfg.get("std", IMAGENET_STD) if isinstance(cfg, dict) else IMAGENET_STD
    return _composites.input_bounds(mean, std)


_ATTENTION_NAMES = ("Attention", "MultiheadAttention", "WindowAttention")


def _refuse_unsupported(readout: DenseReadout) -> None:
    from ..adapters import TokenGridAdapter

    model = readout.model
    why = (
        "zennit 0.5.1 has no conservative rules for self-attention (softmax, the "
        "query-key product) and none for LayerNorm inside attention blocks, so relevance "
        "would be neither conserved nor meaningful (zennit issues #184 and #192 are still "
        "open on this). Use a CNN (ResNet, EfficientNet, ConvNeXt), or the readout itself / "
        "dense_readout.gradcam for this model."
    )
    if isinstance(readout.adapter, TokenGridAdapter):
        raise UnsupportedModelError(
            f"LRP refinement does not support {type(model).__name__}: {why}"
        )
    for module in model.modules():
        name = type(module).__name__
        if isinstance(module, nn.MultiheadAttention) or any(
            name.endswith(n) for n in _ATTENTION_NAMES
        ):
            raise UnsupportedModelError(
                f"LRP refinement does not support {type(model).__name__} (it contains "
                f"attention, {name}): {why}"
            )


class LRPReadout:
    """Refine dense-readout scores to pixels with Layer-wise Relevance Propagation.

    Args:
        model: a CNN classifier in eval mode (timm ResNet, EfficientNet(-Lite),
            MobileNetV3, ConvNeXt, torchvision ResNet, or a custom network with
            ``features=``/``head=``), or a :class:`~dense_readout.DenseReadout`.
        composite: a registered composite name (see
            :func:`~dense_readout.lrp.registered_composites`) or a zennit
            ``Composite`` instance (used as is); default per family
            (:data:`~dense_readout.lrp.composites.FAMILY_DEFAULTS`).
        features, head: for a custom network, as in ``DenseReadout``.
        composite_options: keyword arguments for the composite (e.g. ``epsilon``,
            ``gamma``, ``zero_params``, ``low``/``high`` for ``epsilon_gamma_box``).
        stabilizer: denominator shift of the non-epsilon rules (z+, gamma, and the
            Norm rule of residual sums, average pools and LayerNorms); overridden by
            ``composite_options["stabilizer"]``.
        canonize: apply the block canonizers (residual sums, gates, batch-norm
            merging, LayerNorm). Turn off only to see why they are needed.

    Raises:
        UnsupportedModelError: for ViT/Swin and other attention models.

    Example:
        >>> import torch
        >>> from dense_readout import load_pretrained
        >>> from dense_readout.lrp import LRPReadout
        >>> model = load_pretrained().model
        >>> lrp = LRPReadout(model)
        >>> result = lrp.cell(torch.randn(1, 3, 224, 224), cell=(3, 3))
        >>> tuple(result.relevance.shape)
        (1, 1, 224, 224)
    """

    def __init__(
        self,
        model: nn.Module | DenseReadout,
        composite: str | Composite | None = None,
        *,
        features: Callable[[Tensor], Tensor] | None = None,
        head: nn.Module | None = None,
        composite_options: dict | None = None,
        canonize: bool = True,
        stabilizer: float = 1e-6,
    ) -> None:
        self.readout = (
            model
            if isinstance(model, DenseReadout)
            else DenseReadout(model, features=features, head=head)
        )
        self.model = self.readout.model
        self.adapter = self.readout.adapter
        _refuse_unsupported(self.readout)
        if composite is None:
            composite = _composites.default_composite(self.model)
        if isinstance(composite, str):
            if composite not in _composites.registered_composites():
                raise InputError(
                    f"Unknown composite {composite!r}. Choose one of "
                    f"{_composites.registered_composites()} or register one with "
                    "dense_readout.lrp.register_composite."
                )
        elif not isinstance(composite, Composite):
            raise InputError(
                f"composite must be a registered name or a zennit Composite, got "
                f"{type(composite).__name__}."
            )
        self.composite = composite
        self.composite_options = dict(composite_options or {})
        self.canonize = canonize
        self.stabilizer = stabilizer
        self._pairs: list | None = None
        self._root = _Root(self.model, features, head)

    @property
    def composite_name(self) -> str:
        return self.composite if isinstance(self.composite, str) else type(self.composite).__name__

    # -- machinery ----------------------------------------------------------------------
    def _make_composite(self, inputs: Tensor) -> Composite:
        if not isinstance(self.composite, str):
            return self.composite
        low, high = _model_bounds(self.model)
        return _composites.build_composite(
            self.composite,
            low=low.to(inputs),
            high=high.to(inputs),
            stabilizer=self.stabilizer,
            options=self.composite_options,
        )

    def _canonizers(self, inputs: Tensor) -> list:
        if not self.canonize:
            return []
        if self._pairs is None:
            probe = inputs[:1].detach()
            self._pairs = trace_batch_norm_pairs(lambda: self._scores(probe), self._root)
        return [MergeBatchNormPairs(self._pairs), BlockCanonizer(), LayerNormCanonizer()]

    @contextlib.contextmanager
    def context(self, inputs: Tensor) -> Iterator[Composite]:
        """Canonizers applied and composite registered inside; the model restored after.

        Everything is undone in ``finally``, also when the body raises.
        """
        check_eval_mode(self.model, "LRP (batch-norm merging)")
        canonizers = self._canonizers(inputs)
        composite = self._make_composite(inputs)
        applied: list = []
        try:
            for canonizer in canonizers:
                applied.extend(canonizer.apply(self._root))
            composite.register(self._root)
            yield composite
        finally:
            composite.remove()
            for instance in reversed(applied):
                instance.remove()

    def _scores(self, inputs: Tensor) -> Tensor:
        """Z through the head *modules* (``head_cells``), so their LRP rules apply.

        Adapters may override ``readout`` with a fast path that multiplies by the
        head's weight directly (bypassing ``nn.Linear``, hence its Epsilon rule);
        the base implementation always goes through ``head_cells``.
        """
        native = self.adapter.forward_features(inputs)
        grid = self.adapter.grid(native, inputs)
        return ModelAdapter.readout(self.adapter, grid)

    def _check(self, inputs: Tensor) -> Tensor:
        check_images(inputs, channels=self.adapter.in_channels)
        return inputs

    def _run(
        self, inputs: Tensor, starts: Callable[[Tensor], Tensor], strategy: str = "vmap"
    ) -> tuple[Tensor, Tensor]:
        """Relevance for a stack of starting relevances.

        ``starts(Z)`` returns ``N×B×K×h×w`` (N starts per image). Returns the input
        relevance ``N×B×C×H×W`` and ``Z``.
        """
        if strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
        with torch.enable_grad(), self.context(inputs):
            if strategy == "expand":
                with torch.no_grad():
                    scores = self._scores(inputs)
                start = starts(scores)
                count = start.shape[0]
                expanded = inputs.detach().repeat(count, 1, 1, 1).requires_grad_(True)
                z = self._scores(expanded)
                (grad,) = torch.autograd.grad(z, expanded, start.reshape(z.shape).to(z))
                return grad.reshape(count, *inputs.shape), scores
            x = inputs.detach().clone().requires_grad_(True)
            z = self._scores(x)
            start = starts(z.detach()).to(z)
            if start.shape[0] == 1:
                (grad,) = torch.autograd.grad(z, x, start[0])
                return grad.unsqueeze(0), z.detach()
            if strategy == "vmap":
                try:
                    (grad,) = torch.autograd.grad(
                        z, x, start, is_grads_batched=True, retain_graph=True
                    )
                    return grad, z.detach()
                except RuntimeError as error:  # pragma: no cover - op without a batching rule
                    warnings.warn(
                        f"Batched LRP backward failed ({str(error)[:120]}); falling back to one "
                        "backward pass per start.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            grads = [torch.autograd.grad(z, x, one, retain_graph=True)[0] for one in start]
            return torch.stack(grads), z.detach()

    # -- public entry points ----------------------------------------------------------------
    def cell(self, inputs: Tensor, cell: Cell, target: Target = None) -> LRPResult:
        """Refine one cell's score ``Z[k, u, v]`` per image.

        Args:
            inputs: ``B×3×H×W`` normalised images.
            cell: ``(u, v)`` for all images, or ``B×2`` (one cell per image).
            target: class ``k`` (int or one per image); default: the cell's own top-1.
        """
        inputs = self._check(inputs)
        holder: dict = {}

        def starts(z: Tensor) -> Tensor:
            cells = _check_cells(cell, z.shape[0], z.shape[-2:])
            batch = torch.arange(z.shape[0])
            if target is None:
                classes = z[batch, :, cells[:, 0], cells[:, 1]].argmax(dim=1).cpu()
            else:
                classes = check_targets(target, z.shape[0], z.shape[1])
            mask = torch.zeros_like(z)
            mask[batch, classes, cells[:, 0], cells[:, 1]] = 1
            holder.update(cells=cells, classes=classes)
            return (mask * z).unsqueeze(0)

        grads, scores = self._run(inputs, starts)
        start = scores[
            torch.arange(scores.shape[0]),
            holder["classes"],
            holder["cells"][:, 0],
            holder["cells"][:, 1],
        ]
        return self._result(grads[0], start, holder["classes"], holder["cells"], scores)

    def class_map(self, inputs: Tensor, target: Target = None) -> LRPResult:
        """Refine all cells of class ``k`` at once (the class map ``Z[k]``).

        ``target=None`` uses each image's predicted class (argmax of ``mean_uv Z``,
        the model's top-1 when the readout is exact).
        """
        inputs = self._check(inputs)
        holder: dict = {}

        def starts(z: Tensor) -> Tensor:
            if target is None:
                classes = z.mean(dim=(2, 3)).argmax(dim=1).cpu()
            else:
                classes = check_targets(target, z.shape[0], z.shape[1])
            mask = torch.zeros_like(z)
            mask[torch.arange(z.shape[0]), classes] = 1
            holder.update(classes=classes)
            return (mask * z).unsqueeze(0)

        grads, scores = self._run(inputs, starts)
        classes = holder["classes"]
        start = scores[torch.arange(scores.shape[0]), classes].sum(dim=(1, 2))
        return self._result(grads[0], start, classes, None, scores)

    def cells(
        self,
        inputs: Tensor,
        target: Target = None,
        *,
        which: Sequence[tuple[int, int]] | None = None,
        chunk_size: int | None = None,
        strategy: str = "expand",
    ) -> CellRelevance:
        """Refine every cell separately: ``h·w`` maps per image.

        ``strategy='expand'`` (default) runs one forward and one backward pass over
        the batch repeated once per cell of a chunk; ``'vmap'`` runs one forward
        pass and one vectorised backward pass (``is_grads_batched``); ``'loop'``
        one backward pass per cell (for benchmarks). ``benchmarks/lrp_speed.py``
        measures them.

        Args:
            target: None (each cell's own top-1 class), or one class for all cells
                (int or one per image).
            which: cells ``[(u, v), ...]`` to refine (default: all); the others stay 0.
            chunk_size: cells per batched pass (default: ``max(1, 16 // B)``, which
                keeps memory near that of a 16-image batch; all 49 cells of
                EfficientNet-Lite0 at 224 px in one chunk took 3.5 GB).
        """
        inputs = self._check(inputs)
        batch = inputs.shape[0]
        with torch.no_grad():
            scores = self._scores(inputs)
        height, width = scores.shape[-2:]
        if which is None:
            order = torch.arange(height * width)
        else:
            picked = _check_cells(list(which), len(which), (height, width)) if len(which) else None
            if picked is None:
                raise InputError("which= must list at least one (u, v) cell.")
            order = picked[:, 0] * width + picked[:, 1]
        count = len(order)
        if target is None:
            classes = scores.argmax(dim=1).cpu()
        else:
            classes = (
                check_targets(target, batch, scores.shape[1])
                .view(-1, 1, 1)
                .expand(-1, height, width)
            )
        chunk = chunk_size or max(1, min(count, 16 // max(1, batch)))
        if chunk < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}.")
        maps = []
        z_used = scores
        for first in range(0, count, chunk):
            index = order[first : first + chunk]

            def starts(z: Tensor, index: Tensor = index) -> Tensor:
                start = torch.zeros(len(index), *z.shape, dtype=z.dtype, device=z.device)
                rows, cols = index // width, index % width
                for slot, (u, v) in enumerate(zip(rows.tolist(), cols.tolist(), strict=False)):
                    k = classes[:, u, v]
                    start[slot, torch.arange(batch), k, u, v] = z[torch.arange(batch), k, u, v]
                return start

            grads, z_used = self._run(inputs, starts, strategy=strategy)
            maps.append(grads.sum(dim=2))  # chunk×B×H×W
        computed = torch.cat(maps).permute(1, 0, 2, 3)  # B×count×H×W
        relevance = computed.new_zeros(batch, height * width, *inputs.shape[-2:])
        relevance[:, order.to(relevance.device)] = computed
        relevance = relevance.reshape(batch, height, width, *inputs.shape[-2:])
        start = z_used.gather(1, classes.to(z_used.device).unsqueeze(1)).squeeze(1)
        conservation = relevance.sum(dim=(-2, -1)) / start
        done = torch.zeros(height * width, dtype=torch.bool)
        done[order] = True
        conservation = conservation.masked_fill(
            ~done.view(1, height, width).to(conservation.device), float("nan")
        )
        return CellRelevance(
            relevance=relevance.detach(),
            classes=classes,
            start=start.detach(),
            conservation=conservation.detach(),
            scores=z_used,
            composite=self.composite_name,
            strategy=strategy,
        )

    def label_map(self, inputs: Tensor) -> LabelMap:
        """Pixel labels: every cell's own top-1 score refined, grouped by class.

        Relevance is linear in its start, so the cells of one class are refined
        together: one batched backward pass with one start per class present.
        """
        inputs = self._check(inputs)
        batch = inputs.shape[0]
        with torch.no_grad():
            scores = self._scores(inputs)
        grid_labels = scores.argmax(dim=1).cpu()
        present = [torch.unique(grid_labels[b]) for b in range(batch)]
        groups = max(len(p) for p in present)
        classes = torch.full((batch, groups), -1, dtype=torch.long)
        for b, p in enumerate(present):
            classes[b, : len(p)] = p

        def starts(z: Tensor) -> Tensor:
            start = torch.zeros(groups, *z.shape, dtype=z.dtype, device=z.device)
            labels = z.argmax(dim=1)
            for b in range(batch):
                for g, k in enumerate(classes[b].tolist()):
                    if k < 0:
                        continue
                    start[g, b, k] = z[b, k] * (labels[b] == k)
            return start

        grads, z = self._run(inputs, starts)
        relevance = grads.sum(dim=2).permute(1, 0, 2, 3)  # B×M×H×W
        padded = relevance.masked_fill(
            (classes < 0).view(batch, groups, 1, 1).to(relevance.device), float("-inf")
        )
        winner = padded.argmax(dim=1).cpu()
        labels = classes.gather(1, winner.flatten(1)).view_as(winner)
        top = z.max(dim=1).values.sum(dim=(1, 2))
        conservation = relevance.sum(dim=(1, 2, 3)) / top
        return LabelMap(
            labels=labels,
            classes=classes,
            relevance=relevance.detach(),
            grid_labels=grid_labels,
            conservation=conservation.detach(),
            scores=z,
            composite=self.composite_name,
        )

    def _result(
        self, grad: Tensor, start: Tensor, classes: Tensor, cells: Tensor | None, scores: Tensor
    ) -> LRPResult:
        relevance = grad.sum(dim=1, keepdim=True)
        conservation = relevance.sum(dim=(1, 2, 3)) / start
        return LRPResult(
            relevance=relevance.detach(),
            input_relevance=grad.detach(),
            start=start.detach(),
            conservation=conservation.detach(),
            targets=classes,
            cells=cells,
            scores=scores,
            composite=self.composite_name,
        )

    def __repr__(self) -> str:
        return f"LRPReadout(adapter={self.adapter.name!r}, composite={self.composite_name!r})"


class _Root(nn.Module):
    """Container holding the model (and custom features/head) for composite registration."""

    def __init__(self, model: nn.Module, features: object, head: nn.Module | None) -> None:
        super().__init__()
        self.model = model
        if isinstance(features, nn.Module):
            self.features = features
        if isinstance(head, nn.Module):
            self.head = head


def _check_cells(cell: Cell, batch: int, grid: Sequence[int]) -> Tensor:
    height, width = int(grid[0]), int(grid[1])
    try:
        cells = torch.as_tensor(cell)
    except (TypeError, ValueError) as error:
        raise InputError(f"Cannot read cell {cell!r} as (u, v) indices: {error}") from None
    if cells.is_floating_point() or cells.dtype == torch.bool:
        raise InputError(f"cell must hold integer (row, column) indices, got dtype {cells.dtype}.")
    cells = cells.long().cpu()
    if cells.shape == (2,):
        cells = cells.view(1, 2).expand(batch, 2)
    if cells.dim() != 2 or cells.shape != (batch, 2):
        raise InputError(
            f"cell must be (u, v) or a B×2 tensor (B={batch}); got shape {tuple(cells.shape)}."
        )
    if (
        (cells[:, 0] < 0).any()
        or (cells[:, 0] >= height).any()
        or (cells[:, 1] < 0).any()
        or (cells[:, 1] >= width).any()
    ):
        raise InputError(
            f"cell {cells.tolist()} is outside the {height}×{width} readout grid "
            f"(rows 0..{height - 1}, columns 0..{width - 1})."
        )
    return cells
