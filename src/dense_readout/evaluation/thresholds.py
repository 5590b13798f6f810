"""Thresholding controls (paper A.3): keep a cell only if a score reaches τ.

Four cell scores (registry :data:`CELL_SCORES`):

* ``max_softmax``: the cell's largest softmax probability;
* ``entropy``: normalised-entropy confidence ``1 - H(p) / log K``;
* ``feat_fg``: cosine similarity of the cell's feature vector to the
  feature-space foreground prototype of the cell's top-1 class;
* ``logit_fg``: the same with the cell's score vector and the logit-space prototype;
* ``feat_fg_global`` / ``logit_fg_global``: the same against one prototype for all
  classes (not run by default).

A class prototype is the mean over the evaluated set of the cells that lie inside
the boxes of images of that class and are predicted correctly (top-1 = ground
truth); a cell whose top-1 class has no prototype uses the global one. The runner
estimates the prototypes in a first pass (:class:`PrototypeAccumulator`).

For each score and each τ the sweep reports, on the original input,
``Loc.(τ)``: per image, the fraction of FG cells that are kept *and* correct,
averaged over images with an FG cell (a dropped cell counts as not localised,
so Loc.(τ) can only fall with τ) and ``BG Act.(τ)``: images where the class is
the top-1 of at least one *kept* BG cell. A τ below every score reproduces the
unthresholded Loc. and BG Act. State is int64 (fixed point), so it merges exactly.

Example:
    >>> import torch
    >>> from dense_readout.evaluation.thresholds import ThresholdSweep
    >>> sweep = ThresholdSweep(["max_softmax"], taus=[0.0, 0.99])
    >>> scores = torch.zeros(1, 3, 1, 2); scores[0, 1, 0, 0] = 9.0; scores[0, 1, 0, 1] = 0.1
    >>> fg = torch.tensor([[[True, True]]])
    >>> sweep.update(scores, None, fg, torch.tensor([1]))
    >>> sweep.curves()["max_softmax"]["loc"]
    [100.0, 50.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..registry import Registry
from .metrics import FIXED

__all__ = [
    "CELL_SCORES",
    "DEFAULT_SCORES",
    "DEFAULT_TAUS",
    "PROTOTYPE_SCORES",
    "PrototypeAccumulator",
    "ThresholdSweep",
    "register_cell_score",
]

DEFAULT_TAUS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
DEFAULT_SCORES: tuple[str, ...] = (
    "max_softmax",
    "entropy",
    "feat_fg",
    "logit_fg",
)  # the paper's four
PROTO_SCALE = 1 << 20  # fixed point of the prototype sums

# name -> fn(scores B×K×h×w, features B×C×h×w, prototypes dict) -> B×h×w
CellScore = Callable[[Tensor, Tensor | None, dict], Tensor]
CELL_SCORES: Registry[CellScore] = Registry(
    "threshold cell score",
    hint="Register your own with dense_readout.evaluation.thresholds.register_cell_score.",
)
PROTOTYPE_SCORES = ("feat_fg", "logit_fg", "feat_fg_global", "logit_fg_global")


def register_cell_score(name: str) -> Callable[[CellScore], CellScore]:
    """Decorator: add a per-cell score function under ``name``.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.thresholds import CELL_SCORES, register_cell_score
        >>> @register_cell_score("top_score")
        ... def top_score(scores, features, prototypes):
        ...     return scores.amax(dim=1)
        >>> CELL_SCORES.get("top_score")(torch.ones(1, 3, 2, 2), None, {}).tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
        >>> CELL_SCORES.unregister("top_score") is top_score, "top_score" in CELL_SCORES
        (True, False)
    """
    return CELL_SCORES.register(name)


@register_cell_score("max_softmax")
def _max_softmax(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    return torch.softmax(scores.float(), dim=1).amax(dim=1)


@register_cell_score("entropy")
def _entropy(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    log_p = torch.log_softmax(scores.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return 1.0 - entropy / math.log(scores.shape[1])


def _cosine(grid: Tensor, prototype: Tensor | None, name: str) -> Tensor:
    if prototype is None:
        raise InputError(f"{name} needs a prototype: run the prototype pass first.")
    return F.cosine_similarity(
        grid.float(), prototype.to(grid.device, torch.float32).view(1, -1, 1, 1), dim=1
    )


def _class_cosine(
    grid: Tensor,
    scores: Tensor,
    table: Tensor | None,
    present: Tensor | None,
    fallback: Tensor | None,
    name: str,
) -> Tensor:
    """Cosine of each cell to the prototype of the cell's top-1 class.

    A class without a prototype (no correctly predicted FG cell in the set) falls back
    to the global prototype.
    """
    if table is None or present is None or fallback is None:
        raise InputError(f"{name} needs class prototypes: run the prototype pass first.")
    predicted = scores.argmax(dim=1)  # B×h×w
    rows = torch.where(present.unsqueeze(1), table, fallback.view(1, -1)).to(
        grid.device, torch.float32
    )
    chosen = rows[predicted].permute(0, 3, 1, 2)  # B×C×h×w
    return F.cosine_similarity(grid.float(), chosen, dim=1)


def _features_of(features: Tensor | None, name: str) -> Tensor:
    if features is None:
        raise InputError(f"{name} needs the feature grid (ReadoutResult.features).")
    return features


@register_cell_score("feat_fg")
def _feat_fg(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    return _class_cosine(
        _features_of(features, "feat_fg"),
        scores,
        prototypes.get("features"),
        prototypes.get("present"),
        prototypes.get("features_global"),
        "feat_fg",
    )


@register_cell_score("logit_fg")
def _logit_fg(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    return _class_cosine(
        scores,
        scores,
        prototypes.get("logits"),
        prototypes.get("present"),
        prototypes.get("logits_global"),
        "logit_fg",
    )


@register_cell_score("feat_fg_global")
def _feat_fg_global(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    return _cosine(
        _features_of(features, "feat_fg_global"),
        prototypes.get("features_global"),
        "feat_fg_global",
    )


@register_cell_score("logit_fg_global")
def _logit_fg_global(scores: Tensor, features: Tensor | None, prototypes: dict) -> Tensor:
    return _cosine(scores, prototypes.get("logits_global"), "logit_fg_global")


class PrototypeAccumulator:
    """Per-class sums (fixed point, int64) of the feature and score vectors of correct FG cells.

    ``features`` is ``K×C``, ``logits`` ``K×K``, ``count`` ``K`` (cells per class); the
    global prototype is the sum over classes. Sized by ``channels`` and ``num_classes``
    so that every process of a distributed run holds tensors of the same shape.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> scores = torch.zeros(1, 3, 1, 2); scores[0, 2] = 1.0  # both cells predict class 2
        >>> features = torch.tensor([[[[1.0, 3.0]], [[0.5, 0.5]]]])  # C=2 features per cell
        >>> prototypes = PrototypeAccumulator()
        >>> prototypes.update(scores, features, torch.tensor([[[True, False]]]), torch.tensor([2]))
        >>> prototypes.count.tolist(), prototypes.features.shape  # one correct FG cell, of class 2
        ([0, 0, 1], torch.Size([3, 2]))
    """

    def __init__(self, channels: int = 0, num_classes: int = 0) -> None:
        self._allocate(channels, num_classes)

    def _allocate(self, channels: int, num_classes: int) -> None:
        self.features = torch.zeros(num_classes, channels, dtype=torch.int64)
        self.logits = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.count = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, scores: Tensor, features: Tensor, fg: Tensor, target: Tensor) -> None:
        """Add one batch's correctly predicted foreground cells to their classes' sums."""
        correct = (scores.argmax(dim=1) == target.view(-1, 1, 1)) & fg  # B×h×w
        if self.features.numel() == 0:
            self._allocate(features.shape[1], scores.shape[1])
        classes = target.view(-1, 1, 1).expand_as(correct)[correct].cpu()
        cells_f = features.permute(0, 2, 3, 1)[correct].double().cpu()
        cells_z = scores.permute(0, 2, 3, 1)[correct].double().cpu()
        # quantise per cell, then add as integers: the sum does not depend on the order
        self.features.index_add_(0, classes, torch.round(cells_f * PROTO_SCALE).long())
        self.logits.index_add_(0, classes, torch.round(cells_z * PROTO_SCALE).long())
        self.count.index_add_(0, classes, torch.ones_like(classes))

    def tensors(self) -> list[Tensor]:
        """Every state tensor, in a fixed order (for ``all_reduce``)."""
        return [self.features, self.logits, self.count]

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the state tensors (for checkpoints)."""
        return {
            "features": self.features.clone(),
            "logits": self.logits.clone(),
            "count": self.count.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        self.features, self.logits, self.count = (
            state[k].clone() for k in ("features", "logits", "count")
        )

    def merge(self, other: PrototypeAccumulator) -> None:
        """Add the sums of another accumulator (another rank or shard)."""
        if self.features.numel() == 0:
            self.load_state_dict(other.state_dict())
            return
        if other.features.numel():
            self.features += other.features
            self.logits += other.logits
            self.count += other.count

    def prototypes(self) -> dict[str, Tensor | None]:
        """Class means ``features`` (K×C), ``logits`` (K×K), ``present`` (K) and global means.

        Rows of classes without a correct FG cell are NaN; everything is None when no
        correct FG cell was seen at all.
        """
        total = int(self.count.sum()) if self.count.numel() else 0
        if total == 0:
            return {
                "features": None,
                "logits": None,
                "present": None,
                "features_global": None,
                "logits_global": None,
            }
        count = self.count.double().clamp(min=1).unsqueeze(1) * PROTO_SCALE
        present = self.count > 0
        features = torch.where(present.unsqueeze(1), self.features.double() / count, float("nan"))
        logits = torch.where(present.unsqueeze(1), self.logits.double() / count, float("nan"))
        return {
            "features": features,
            "logits": logits,
            "present": present,
            "features_global": self.features.sum(0).double() / (PROTO_SCALE * total),
            "logits_global": self.logits.sum(0).double() / (PROTO_SCALE * total),
        }


class ThresholdSweep:
    """Loc.(τ) and BG Act.(τ) for several cell scores, streaming and mergeable.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.thresholds import ThresholdSweep
        >>> scores = torch.zeros(1, 3, 1, 2); scores[0, 1, 0, 0] = 9.0; scores[0, 1, 0, 1] = 0.1
        >>> fg = torch.tensor([[[True, True]]])
        >>> first, second = ThresholdSweep(["max_softmax"], taus=[0.0, 0.99]), ThresholdSweep(["max_softmax"], taus=[0.0, 0.99])
        >>> first.update(scores, None, fg, torch.tensor([1])); second.update(scores, None, fg, torch.tensor([1]))
        >>> first.merge(second)  # streaming and mergeable: two shards give the curves of one run
        >>> first.curves()["max_softmax"]["loc"]  # the same curve as one run over both halves
        [100.0, 50.0]
    """

    def __init__(self, methods: Sequence[str], taus: Sequence[float] = DEFAULT_TAUS) -> None:
        unknown = [m for m in methods if m not in CELL_SCORES]
        if unknown:
            raise InputError(
                f"Unknown threshold scores {unknown}; registered: {sorted(CELL_SCORES)}."
            )
        if not len(taus):
            raise InputError("taus must hold at least one threshold.")
        self.methods = tuple(methods)
        self.taus = torch.tensor([float(t) for t in taus], dtype=torch.float64)
        shape = (len(self.methods), len(self.taus))
        self.loc_num = torch.zeros(shape, dtype=torch.int64)
        self.bg_num = torch.zeros(shape, dtype=torch.int64)
        self.kept_fg = torch.zeros(shape, dtype=torch.int64)
        self.kept_bg = torch.zeros(shape, dtype=torch.int64)
        self.counts = torch.zeros(
            4, dtype=torch.int64
        )  # images with FG, with BG, FG cells, BG cells
        self.prototypes: dict = {}

    def update(
        self,
        scores: Tensor,
        features: Tensor | None,
        fg: Tensor,
        target: Tensor,
        annotated: Tensor | None = None,
    ) -> None:
        """Add a batch: ``scores`` B×K×h×w, ``features`` B×C×h×w (for feat_fg), ``fg`` B×h×w."""
        if annotated is not None:
            keep = annotated.bool()
            scores, fg, target = scores[keep], fg[keep], target[keep]
            features = features[keep] if features is not None else None
        if target.numel() == 0:
            return
        correct = scores.argmax(dim=1) == target.view(-1, 1, 1)
        bg = ~fg
        n_fg, n_bg = fg.flatten(1).sum(1), bg.flatten(1).sum(1)
        has_fg, has_bg = n_fg > 0, n_bg > 0
        taus = self.taus.to(scores.device, torch.float32).view(-1, 1, 1, 1)  # T×1×1×1
        for row, method in enumerate(self.methods):
            if not self.available(method):
                continue  # no correct FG cell in the whole set: the prototype is undefined
            cell_score = CELL_SCORES.get(method)(scores, features, self.prototypes)  # B×h×w
            kept = cell_score.unsqueeze(0) >= taus  # T×B×h×w
            good_fg = (kept & correct & fg).flatten(2).sum(2)  # T×B
            safe = n_fg.clamp(min=1).long()
            fraction = (good_fg.long() * FIXED + safe // 2) // safe
            self.loc_num[row] += (fraction * has_fg).sum(1).cpu()
            hit_bg = (kept & correct & bg).flatten(2).any(2)
            self.bg_num[row] += (hit_bg & has_bg).sum(1).cpu()
            self.kept_fg[row] += (kept & fg).flatten(1).sum(1).cpu()
            self.kept_bg[row] += (kept & bg).flatten(1).sum(1).cpu()
        self.counts += torch.tensor(
            [int(has_fg.sum()), int(has_bg.sum()), int(n_fg.sum()), int(n_bg.sum())]
        )

    def available(self, method: str) -> bool:
        """False for a prototype score whose prototype could not be estimated."""
        key = {
            "feat_fg": "features",
            "logit_fg": "logits",
            "feat_fg_global": "features_global",
            "logit_fg_global": "logits_global",
        }.get(method)
        return key is None or self.prototypes.get(key) is not None

    def tensors(self) -> list[Tensor]:
        """Every state tensor, in a fixed order (for ``all_reduce``)."""
        return [self.loc_num, self.bg_num, self.kept_fg, self.kept_bg, self.counts]

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the state tensors (for checkpoints)."""
        return {
            k: getattr(self, k).clone()
            for k in ("loc_num", "bg_num", "kept_fg", "kept_bg", "counts")
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        for key, value in state.items():
            setattr(self, key, value.clone())

    def merge(self, other: ThresholdSweep) -> None:
        """Add the counts of another sweep (another rank or shard)."""
        for key in ("loc_num", "bg_num", "kept_fg", "kept_bg", "counts"):
            getattr(self, key).add_(getattr(other, key))

    def curves(self) -> dict[str, dict[str, list]]:
        """Per method: ``tau``, ``loc``, ``bg_act`` and the kept fractions of FG/BG cells, in percent."""
        images_fg, images_bg, cells_fg, cells_bg = (int(v) for v in self.counts)

        def ratio(values: Tensor, den: int, scale: int = 1, method: str = "") -> list:
            undefined = den == 0 or not self.available(method)
            return [None if undefined else 100.0 * int(v) / (scale * den) for v in values]

        return {
            method: {
                "tau": [float(t) for t in self.taus],
                "loc": ratio(self.loc_num[row], images_fg, FIXED, method),
                "bg_act": ratio(self.bg_num[row], images_bg, 1, method),
                "kept_fg_cells": ratio(self.kept_fg[row], cells_fg, 1, method),
                "kept_bg_cells": ratio(self.kept_bg[row], cells_bg, 1, method),
            }
            for row, method in enumerate(self.methods)
        }
