"""The dense readout: apply a classifier's head to every cell of its pre-pooling grid.

For a GAP classifier with a linear head, ``Z[:, u, v] = W h_uv + b`` and the
spatial mean of Z equals the image logits exactly. This module holds the math
only (no I/O, no plotting); model specifics live in :mod:`dense_readout.adapters`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapters import CustomAdapter, ModelAdapter, find_adapter
from .aggregation import aggregate as _aggregate
from .errors import DenseReadoutError, ExactnessWarning, InputError, UnsupportedModelError
from .validation import check_eval_mode, check_images, check_targets

Target = int | Sequence[int] | Tensor

__all__ = ["DenseReadout", "ReadoutResult"]

# Relative gap |mean(Z) - logits| / scale above which a readout the adapter calls exact is
# reported as not exact (float32 rounding of the mean over cells stays near 1e-6).
EXACTNESS_TOLERANCE = 1e-3


@dataclass
class ReadoutResult:
    """Per-cell class scores of a batch, with the model's own image logits.

    Attributes:
        scores: ``Z``, shape ``B×K×h×w`` (channels first whatever the model's layout);
            ``B×K×t×h×w`` for video clips and volumes (``t`` frames or slices).
        logits: image-level logits ``B×K`` from the model's own head, same pass.
        exact: True when the architecture has only affine maps after average
            pooling, so ``mean_uv Z == logits`` up to float rounding. Decided from the
            model's structure, not from ``residual``.
        residual: ``B`` tensor, relative to the logits' scale:
            ``max_k |mean_uv Z[b,k] - logits[b,k]| / max(1, max_k |logits[b,k]|)``.
            Near 0 (float rounding, ~1e-6) for exact models whatever the size of the
            logits; for non-exact ones it measures how far the pointwise readout is
            from a decomposition of the logits.
        residual_abs: ``B`` tensor, the same gap unscaled, ``max_k |mean_uv Z - logits|``.
        features: the grid ``F`` the head was applied to, ``B×C×h×w`` (``B×C×t×h×w``).
        adapter: name of the model adapter that produced the readout.
        exactness_note: why the readout is or is not exact for this model.
        input_size: the input's spatial size, ``(H, W)`` or ``(T, H, W)``.

    Every method works on any grid rank: "cell" means one ``(u, v)`` or ``(t, u, v)``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> model = timm.create_model("resnet18", num_classes=10).eval()
        >>> result = DenseReadout(model)(torch.randn(2, 3, 224, 224))
        >>> tuple(result.scores.shape), result.exact
        ((2, 10, 7, 7), True)
        >>> bool(result.residual.max() < 1e-4)
        True
        >>> scale = result.logits.abs().amax(dim=1).clamp(min=1)
        >>> bool(torch.allclose(result.residual, result.residual_abs / scale))
        True
    """

    scores: Tensor
    logits: Tensor
    exact: bool
    residual: Tensor
    features: Tensor
    adapter: str = ""
    exactness_note: str = ""
    input_size: tuple[int, ...] = field(default=(0, 0))
    residual_abs: Tensor = field(default_factory=lambda: torch.empty(0))

    def __post_init__(self) -> None:
        if self.residual_abs.numel() == 0:  # built by hand with one residual: use it for both
            self.residual_abs = self.residual

    # -- shape helpers -------------------------------------------------------------
    @property
    def grid_size(self) -> tuple[int, ...]:
        """``(h, w)`` of the readout grid (``(t, h, w)`` for clips and volumes)."""
        return tuple(int(n) for n in self.scores.shape[2:])

    @property
    def spatial_dims(self) -> int:
        """Rank of the grid: 2 for images, 3 for video clips and volumes."""
        return self.scores.dim() - 2

    @property
    def cell_dims(self) -> tuple[int, ...]:
        """The axes of ``scores`` that index cells: ``(2, 3)`` or ``(2, 3, 4)``."""
        return tuple(range(2, self.scores.dim()))

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return int(self.scores.shape[1])

    @property
    def batch_size(self) -> int:
        """B, the number of images."""
        return int(self.scores.shape[0])

    # -- per-cell views ------------------------------------------------------------
    def probabilities(self, temperature: float = 1.0) -> Tensor:
        """Per-cell softmax over classes, ``B×K×h×w`` / ``B×K×t×h×w`` (each cell sums to 1)."""
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}.")
        return torch.softmax(self.scores / temperature, dim=1)

    def topk(self, k: int = 5, probabilities: bool = False) -> tuple[Tensor, Tensor]:
        """Per-cell top-k ``(values, class_indices)``, each ``B×k×h×w`` (or ``B×k×t×h×w``).

        With ``probabilities=True`` the values are softmax probabilities.
        """
        if not 1 <= k <= self.num_classes:
            raise InputError(f"k must be in [1, {self.num_classes}], got {k}.")
        source = self.probabilities() if probabilities else self.scores
        return source.topk(k, dim=1)

    def labels(self) -> Tensor:
        """Label grid: the top-1 class of every cell, ``B×h×w`` or ``B×t×h×w`` (int64)."""
        return self.scores.argmax(dim=1)

    def class_map(self, target: Target) -> Tensor:
        """Score map of one class per image, ``B×h×w`` (``B×t×h×w`` for clips and volumes).

        ``target`` is an int (same class for all images) or one class per image
        (sequence or tensor of length B).
        """
        index = check_targets(target, self.batch_size, self.num_classes)
        gather = index.to(self.scores.device).view(-1, 1, *(1,) * self.spatial_dims)
        gather = gather.expand(-1, 1, *self.scores.shape[2:])
        return self.scores.gather(1, gather).squeeze(1)

    def upsample(
        self,
        size: tuple[int, ...] | None = None,
        maps: Tensor | None = None,
        mode: str = "bilinear",
    ) -> Tensor:
        """Resize ``maps`` (default: all scores) to ``size`` (default: the input size).

        ``maps`` may be ``B×h×w`` or ``B×C×h×w`` (``B×t×h×w`` / ``B×C×t×h×w`` for clips
        and volumes, with ``size=(T, H, W)``); the result keeps that rank.
        ``mode='nearest'`` keeps the cells visible as blocks; ``'bilinear'`` on a 3-D
        grid means ``'trilinear'`` (the same interpolation, one more axis).
        """
        rank = self.spatial_dims
        size = tuple(int(n) for n in size) if size is not None else self.input_size
        if not size or min(size) <= 0 or len(size) != rank:
            axes = "(H, W)" if rank == 2 else "(T, H, W)"
            raise InputError(
                f"upsample needs size={axes} for this {rank}-D grid, got {size or 'none'}; "
                "the input size is unknown here or has another rank."
            )
        source = self.scores if maps is None else maps
        if source.dim() not in (rank + 1, rank + 2):
            raise InputError(
                f"maps must be B×cells or B×C×cells for a {rank}-D grid, got {tuple(source.shape)}."
            )
        squeeze = source.dim() == rank + 1
        source = source.unsqueeze(1) if squeeze else source
        if rank == 3 and mode == "bilinear":
            mode = "trilinear"
        kwargs = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
        out = F.interpolate(source.float(), size=size, mode=mode, **kwargs)
        return out.squeeze(1) if squeeze else out

    def aggregate(self, rule: str = "mean", **options: float) -> Tensor:
        """Re-aggregate Z into image scores ``B×K`` with another MIL pooling rule (any grid rank).

        Rules (see :mod:`dense_readout.aggregation`): ``mean`` (= GAP, equals the
        logits for exact models), ``max``, ``topk`` (``k`` cells or ``fraction``),
        ``lse`` (log-mean-exp with ``temperature``).
        """
        return _aggregate(self.scores, rule, **options)

    def to_html(self, image=None, class_names: Sequence[str] | None = None, **options) -> str:
        """A self-contained interactive HTML page of image ``index`` (see :mod:`dense_readout.page`).

        Example:
            >>> import timm, torch
            >>> from dense_readout import DenseReadout
            >>> model = timm.create_model("resnet18", num_classes=3).eval()
            >>> DenseReadout(model)(torch.rand(1, 3, 64, 64)).to_html().startswith("<!DOCTYPE html>")
            True
        """
        from .page import readout_page

        self._require_image_grid("to_html")
        return readout_page(self, image, class_names, **options)

    def _repr_html_(self) -> str:
        """Jupyter: the page of the first image, in an iframe."""
        from .page import notebook_html, readout_page

        if self.spatial_dims != 2:
            return f"<pre>{self!r}</pre>"
        return notebook_html(readout_page(self))

    def _require_image_grid(self, what: str) -> None:
        if self.spatial_dims != 2:
            raise InputError(
                f"{what} shows one h×w grid; this readout is {self.spatial_dims}-D "
                f"({tuple(self.scores.shape[2:])}). Take one frame or slice with "
                "result.frame(t) (a 2-D ReadoutResult) first."
            )

    def frame(self, index: int) -> ReadoutResult:
        """Frame / slice ``index`` of a 3-D readout as a 2-D :class:`ReadoutResult`.

        Its ``logits`` stay the clip's; ``exact`` is False (a frame's mean is not the
        clip's logits) and ``residual`` measures that frame's gap.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from dense_readout import DenseReadout
            >>> net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            ...                     nn.Linear(4, 2)).eval()
            >>> result = DenseReadout(net)(torch.randn(1, 1, 6, 8, 8))
            >>> result.grid_size, result.frame(0).grid_size
            ((4, 6, 6), (6, 6))
        """
        if self.spatial_dims != 3:
            raise InputError(f"frame() needs a 3-D readout, this one is {self.spatial_dims}-D.")
        if not -self.scores.shape[2] <= index < self.scores.shape[2]:
            raise InputError(f"frame {index} out of range: the grid has {self.scores.shape[2]}.")
        scores = self.scores[:, :, index]
        residual_abs = (scores.detach().mean(dim=(2, 3)) - self.logits.detach()).abs().amax(dim=1)
        scale = self.logits.detach().abs().amax(dim=1).clamp(min=1.0)
        return ReadoutResult(
            scores=scores,
            logits=self.logits,
            exact=False,
            residual=residual_abs / scale,
            residual_abs=residual_abs,
            features=self.features[:, :, index],
            adapter=self.adapter,
            exactness_note=f"frame {index} of a 3-D readout: " + self.exactness_note,
            input_size=tuple(self.input_size[1:]),
        )

    def to(self, device: str | torch.device) -> ReadoutResult:
        """Move all tensors to ``device``."""
        return ReadoutResult(
            scores=self.scores.to(device),
            logits=self.logits.to(device),
            exact=self.exact,
            residual=self.residual.to(device),
            features=self.features.to(device),
            adapter=self.adapter,
            exactness_note=self.exactness_note,
            input_size=self.input_size,
            residual_abs=self.residual_abs.to(device),
        )


class DenseReadout:
    """Dense readout of a classifier: class scores for every grid cell and every class.

    Args:
        model: a timm or torchvision classifier (or any model an adapter is
            registered for), in eval mode.
        features: for a custom network, a callable mapping the input batch to the
            pre-pooling grid ``B×C×h×w``. Give it together with ``head``.
        head: for a custom network, the module applied after average pooling
            (usually an ``nn.Linear``); it is applied to every cell.
        adapter: an explicit :class:`~dense_readout.adapters.ModelAdapter` instance,
            bypassing the registry lookup.
        check_mode: raise if the model is in training mode (dropout and batch-norm
            statistics would make Z random and inconsistent with the logits).

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> model = timm.create_model("resnet18", num_classes=10).eval()
        >>> readout = DenseReadout(model)
        >>> result = readout(torch.randn(1, 3, 224, 224))
        >>> result.labels().shape
        torch.Size([1, 7, 7])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        features: Callable[[Tensor], Tensor] | None = None,
        head: nn.Module | None = None,
        adapter: ModelAdapter | None = None,
        check_mode: bool = True,
    ) -> None:
        if (features is None) != (head is None):
            raise InputError(
                "Pass both features= (input -> B×C×h×w grid) and head= (module applied "
                "after average pooling), or neither."
            )
        if adapter is None:
            if features is not None and head is not None:
                adapter = CustomAdapter(model, features=features, head=head)
            else:
                adapter = find_adapter(model)
        self.model = model
        self.adapter = adapter
        self.check_mode = check_mode

    @property
    def exact(self) -> bool:
        """Whether mean(Z) equals the logits for this architecture."""
        return self.adapter.is_exact()

    @property
    def num_classes(self) -> int:
        """K, the number of classes of the model."""
        return self.adapter.num_classes

    def __call__(self, inputs: Tensor, *, grad: bool = False) -> ReadoutResult:
        """Read out ``inputs`` in one forward pass.

        ``inputs`` is a ``B×3×H×W`` float batch (``B×C×T×H×W`` for video/volume models).

        With ``grad=True`` the computation is recorded for autograd (needed by
        gradient-based consumers); otherwise it runs under ``torch.no_grad``.
        """
        if self.check_mode:  # check_mode=False: the caller knows what they are doing
            check_eval_mode(self.model, "the readout")
        check_images(
            inputs, channels=self.adapter.in_channels, spatial_dims=self.adapter.spatial_dims
        )
        context = contextlib.nullcontext() if grad else torch.no_grad()
        with context:
            try:
                native = self.adapter.forward_features(inputs)
                grid = self.adapter.grid(native, inputs)
                logits = self.adapter.image_logits(native)
                scores = self.adapter.readout(grid)
            except DenseReadoutError:
                raise
            except Exception as error:  # a foreign failure: ours, naming whose fault it is
                raise self._foreign_error(inputs, error) from error
        self.adapter.check_decomposition(scores, logits)
        cells = tuple(range(2, scores.dim()))
        residual_abs = (scores.detach().mean(dim=cells) - logits.detach()).abs().amax(dim=1)
        scale = logits.detach().abs().amax(dim=1).clamp(min=1.0)
        exact, note = self._measured_exactness(residual_abs / scale, scores.dtype)
        return ReadoutResult(
            scores=scores,
            logits=logits,
            exact=exact,
            residual=residual_abs / scale,
            residual_abs=residual_abs,
            features=grid,
            adapter=self.adapter.name,
            exactness_note=note,
            input_size=tuple(int(n) for n in inputs.shape[2:]),
        )

    def _measured_exactness(self, residual: Tensor, dtype: torch.dtype) -> tuple[bool, str]:
        """The adapter's verdict, overruled where an 'exact' readout measurably is not.

        A structural analysis can be fooled (a head that reads a class token the probe
        missed); the residual cannot. The bound is far above the rounding of a mean over
        cells (float32: ~1e-6 of the logits' scale) and far below a real gap.
        """
        exact, note = self.adapter.is_exact(), self.adapter.exactness_note()
        if not exact or residual.numel() == 0:  # nothing to check (and no device sync)
            return exact, note
        bound = max(EXACTNESS_TOLERANCE, 10 * torch.finfo(dtype).eps)
        worst = float(residual.max())
        if worst <= bound:
            return exact, note
        note = (
            f"not exact: the structure looked exact ({note}), but mean(Z) misses the logits "
            f"by {worst:.3g} of their scale on this input (bound {bound:.0e}); the adapter "
            f"{self.adapter.name!r} misreads this model's head"
        )
        warnings.warn(f"{type(self.model).__name__}: {note}.", ExactnessWarning, stacklevel=3)
        return False, note

    def _foreign_error(self, inputs: Tensor, error: Exception) -> DenseReadoutError:
        """InputError if the model itself fails on ``inputs``, else UnsupportedModelError."""
        what = f"{type(error).__name__}: {str(error)[:240]}"
        shape = tuple(inputs.shape)
        try:
            with torch.no_grad():
                self.model(inputs)
        except Exception:
            return InputError(
                f"{type(self.model).__name__} itself does not run on an input of shape {shape} "
                f"({what}). Give it the input size and channels it was built for."
            )
        return UnsupportedModelError(
            f"The {self.adapter.name!r} adapter could not read out {type(self.model).__name__} on "
            f"an input of shape {shape}, though the model runs on it ({what}). Pass "
            "DenseReadout(model, features=..., head=...) for this model."
        )

    def __repr__(self) -> str:
        return f"DenseReadout(adapter={self.adapter.name!r}, exact={self.exact})"
