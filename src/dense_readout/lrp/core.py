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
from functools import partial

import torch
from torch import Tensor, nn
from zennit.core import Composite

from ..adapters import ModelAdapter
from ..errors import InputError
from ..readout import DenseReadout
from ..validation import check_eval_mode, check_images
from . import composites as _composites
from .canonizers import (
    BlockCanonizer,
    LayerNormCanonizer,
    MergeBatchNormPairs,
    trace_batch_norm_pairs,
)
from .compat import parameters_kept
from .families import default_composite, family_of
from .family import CANONIZERS
from .results import CellRelevance, LabelMap, LRPResult
from .selection import (
    Cell,
    Target,
    cell_classes,
    cell_order,
    cell_starts,
    chunk_length,
    class_group_starts,
    class_map_start,
    refined_mask,
    scatter_cells,
    single_cell_start,
)
from .support import refuse_unsupported

__all__ = ["STRATEGIES", "CellRelevance", "LRPReadout", "LRPResult", "LabelMap"]

#: How all-cells refinement batches its backward passes.
STRATEGIES = ("vmap", "expand", "loop")


def _model_bounds(model: nn.Module) -> tuple[Tensor, Tensor]:
    from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", IMAGENET_MEAN) if isinstance(cfg, dict) else IMAGENET_MEAN
    std = cfg.get("std", IMAGENET_STD) if isinstance(cfg, dict) else IMAGENET_STD
    return _composites.input_bounds(mean, std)


class LRPReadout:
    """Refine dense-readout scores to pixels with Layer-wise Relevance Propagation.

    Args:
        model: a classifier in eval mode (timm ResNet, EfficientNet(-Lite),
            MobileNetV3, ConvNeXt, torchvision ResNet, a timm or torchvision ViT/Swin
            (CP-LRP), or a custom network with ``features=``/``head=``), or a
            :class:`~dense_readout.DenseReadout`.
        composite: a registered composite name (see
            :func:`~dense_readout.lrp.registered_composites`) or a zennit
            ``Composite`` instance (used as is); default per family
            (the model's :class:`~dense_readout.lrp.LRPFamily` record, see
            :mod:`dense_readout.lrp.families`).
        features: for a custom network, as in ``DenseReadout``.
        head: for a custom network, as in ``DenseReadout``.
        composite_options: keyword arguments for the composite (e.g. ``epsilon``,
            ``gamma``, ``zero_params``, ``low``/``high`` for ``epsilon_gamma_box``).
        stabilizer: denominator shift of the non-epsilon rules (z+, gamma, and the
            Norm rule of residual sums, average pools and LayerNorms); overridden by
            ``composite_options["stabilizer"]``.
        canonize: apply the canonizers the model's family lists (residual sums and
            gates of its blocks, batch-norm merging, LayerNorm; all three for a model
            no family covers). Turn off only to see why they are needed.

    Raises:
        UnsupportedModelError: for attention models outside the CP-LRP families (timm
            ViT/DeiT/Swin, torchvision ViT/Swin V1; see docs/lrp.md) and for Hugging Face
            transformers models.

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
        refuse_unsupported(self.readout)
        family = family_of(self.model)
        self.canonizer_names = CANONIZERS if family is None else family.canonizers
        if composite is None:
            composite = default_composite(self.model)
        if isinstance(composite, str):
            _composites.composite_factory(composite)  # raises for an unknown name
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
        """The composite's registered name, or a zennit instance's class name."""
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
        if self._pairs is None and "batch_norm" in self.canonizer_names:
            probe = inputs[:1].detach()
            self._pairs = trace_batch_norm_pairs(lambda: self._scores(probe), self._root)
        makers: dict[str, Callable[[], object]] = {
            "batch_norm": lambda: MergeBatchNormPairs(self._pairs or []),
            "blocks": BlockCanonizer,
            "layer_norm": LayerNormCanonizer,
        }
        return [makers[name]() for name in CANONIZERS if name in self.canonizer_names]

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
            # zennit 1.0's rules swap Parameter objects: put them back before the undo
            with parameters_kept(self._root):
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
            start, holder["cells"], holder["classes"] = single_cell_start(z, cell, target)
            return start

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
            start, holder["classes"] = class_map_start(z, target)
            return start

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
            inputs: ``B×3×H×W`` float batch.
            target: None (each cell's own top-1 class), or one class for all cells
                (int or one per image).
            which: cells ``[(u, v), ...]`` to refine (default: all); the others stay 0.
            chunk_size: cells per batched pass (default: ``max(1, 16 // B)``, which
                keeps memory near that of a 16-image batch; all 49 cells of
                EfficientNet-Lite0 at 224 px in one chunk took 3.5 GB).
            strategy: how a chunk's cells are batched: ``"expand"`` (default, see
                above), ``"vmap"`` or ``"loop"`` (one backward pass per cell).
        """
        inputs = self._check(inputs)
        with torch.no_grad():
            scores = self._scores(inputs)
        grid = (int(scores.shape[-2]), int(scores.shape[-1]))
        order = cell_order(which, grid)
        classes = cell_classes(scores, target)
        chunk = chunk_length(chunk_size, len(order), inputs.shape[0])
        maps = []
        z_used = scores
        for first in range(0, len(order), chunk):
            starts = partial(cell_starts, index=order[first : first + chunk], classes=classes)
            grads, z_used = self._run(inputs, starts, strategy=strategy)
            maps.append(grads.sum(dim=2))  # chunk×B×H×W
        relevance = scatter_cells(torch.cat(maps), order, grid)
        return self._cell_result(relevance, order, classes, z_used, strategy)

    def _cell_result(
        self, relevance: Tensor, order: Tensor, classes: Tensor, scores: Tensor, strategy: str
    ) -> CellRelevance:
        """:class:`CellRelevance` from the ``B×h×w×H×W`` maps of the cells in ``order``."""
        start = scores.gather(1, classes.to(scores.device).unsqueeze(1)).squeeze(1)
        conservation = relevance.sum(dim=(-2, -1)) / start
        skipped = ~refined_mask(order, (relevance.shape[1], relevance.shape[2]))
        conservation = conservation.masked_fill(skipped.to(conservation.device), float("nan"))
        return CellRelevance(
            relevance=relevance.detach(),
            classes=classes,
            start=start.detach(),
            conservation=conservation.detach(),
            scores=scores,
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

        grads, z = self._run(inputs, partial(class_group_starts, classes=classes))
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
