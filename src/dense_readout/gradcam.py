"""The dense readout as a pytorch-grad-cam method: :class:`DenseReadoutCAM`.

A drop-in :class:`pytorch_grad_cam.base_cam.BaseCAM` subclass. Instead of
weighting the target layer's channels with gradients, it applies the model's own
head to every cell of the grid (``Z = W h + b``) and evaluates the requested
target *per cell*, so any of the library's classifier targets works
(``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``,
``ClassifierOutputReST``, ``BinaryClassifierOutputTarget``, ``FinerWeightedTarget``).
No backward pass: one forward pass per call, and it also runs under
``torch.no_grad()``/``torch.inference_mode()``.

Relation to the library's methods, for a GAP + linear head at the grid layer
(tested): ``DenseReadoutCAM(model, include_bias=False)`` equals ``GradCAM`` and
``HiResCAM`` (both compute ``(Z_k − b_k)/N`` before the ReLU and min–max).

pytorch-grad-cam conventions kept as they are (documented, not changed):
the map is ReLU'd *before* min–max normalisation, so a map with no positive cell
becomes all zeros; the result is a float32 numpy array ``B×H×W`` in [0, 1],
resized with ``cv2.resize``. The raw signed maps and the full score tensor are
kept on the instance (:attr:`DenseReadoutCAM.last_raw_cams`,
:attr:`DenseReadoutCAM.last_scores`), and :meth:`DenseReadoutCAM.label_grid`
gives the top-1 class of every cell, which no CAM method provides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import Tensor, nn

from ._cells import grid_from_layer_output, head_channels, require_affine, scores_from_grid
from ._outputs import logits_only  # Hugging Face models return a ModelOutput
from ._target_layers import IgnoredTargetLayerWarning, match_input_channels, resolve_grid_layer
from .errors import InputError
from .readout import DenseReadout
from .validation import check_images

__all__ = ["DenseReadoutCAM", "IgnoredTargetLayerWarning"]


class DenseReadoutCAM(BaseCAM):
    """Class maps from the dense readout, in pytorch-grad-cam's interface.

    Args:
        model: a classifier supported by :class:`~dense_readout.DenseReadout`
            (timm or torchvision CNNs, Swin, ViT, ...). Put in eval mode, as
            every BaseCAM does.
        target_layers: layers as pytorch-grad-cam users pass them (e.g.
            ``[model.layer4[-1], model.layer4[-2]]``). The one whose output *is*
            the grid the head reads (checked on a probe input against the
            adapter's grid) is used; the others are ignored with an
            :class:`IgnoredTargetLayerWarning`; a list without it raises
            :class:`~dense_readout.errors.InputError` naming the right layer.
            Default: the model adapter's ``target_layer()``. Kept second so
            wrappers that call ``base_method(model, target_layers,
            reshape_transform)`` (FinerCAM) work.
        reshape_transform: maps the layer output to ``B×C×h×w``. Default: the
            adapter's (NHWC→NCHW for Swin, tokens→grid for ViT, none for CNNs).
        include_bias: keep the head's bias in ``Z`` (default). ``False`` gives
            ``Z − b``, the classic CAM, which equals GradCAM/HiResCAM on GAP +
            linear models; it needs an affine head.
        readout: a ready :class:`~dense_readout.DenseReadout` (e.g. built with
            ``features=``/``head=`` for a custom network).
        tta_transforms: passed to ``BaseCAM`` (used by ``aug_smooth=True``).

    Example:
        >>> import timm, torch
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> from dense_readout.gradcam import DenseReadoutCAM
        >>> model = timm.create_model("resnet18", num_classes=10).eval()
        >>> with DenseReadoutCAM(model) as cam:
        ...     maps = cam(torch.randn(2, 3, 64, 64), targets=[ClassifierOutputTarget(3)] * 2)
        ...     labels = cam.label_grid()
        >>> maps.shape, tuple(labels.shape)
        ((2, 64, 64), (2, 2, 2))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        *,
        include_bias: bool = True,
        readout: DenseReadout | None = None,
        tta_transforms: object | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        model.eval()
        self.dense_readout = readout if readout is not None else DenseReadout(model)
        adapter = self.dense_readout.adapter
        match_input_channels(adapter, model)
        if isinstance(target_layers, nn.Module):
            target_layers = [target_layers]
        if target_layers is None:
            layer = adapter.target_layer()
            if reshape_transform is None:
                reshape_transform = adapter.reshape_transform()
        else:
            layer, reshape_transform = resolve_grid_layer(
                adapter, model, target_layers, reshape_transform, "DenseReadoutCAM"
            )
        self.include_bias = bool(include_bias)
        if not self.include_bias:  # fail now, not at the first call
            require_affine(adapter)
        self._channels = head_channels(adapter)
        self.last_scores: Tensor | None = None
        self.last_raw_cams: Tensor | None = None
        super().__init__(
            logits_only(model),  # HF models: BaseCAM needs the logits tensor
            [layer],
            reshape_transform,
            uses_gradients=False,
            tta_transforms=tta_transforms,
        )

    # -- BaseCAM hooks ----------------------------------------------------------------
    def forward(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Tensor], Tensor]] | None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Validate, then run BaseCAM's forward without recording a graph."""
        adapter = self.dense_readout.adapter
        check_images(input_tensor, adapter.in_channels, adapter.spatial_dims)
        if targets is not None:
            targets = list(targets)
            if len(targets) != input_tensor.shape[0]:
                raise InputError(
                    f"Got {len(targets)} targets for a batch of {input_tensor.shape[0]} images "
                    "(pytorch-grad-cam would silently drop the extra images). Give one target "
                    "per image, e.g. [ClassifierOutputTarget(k)] * batch, or targets=None for "
                    "each image's top class."
                )
        if self.model.training:  # pytorch-grad-cam's convention: CAM classes switch to eval
            self.model.eval()
        with torch.no_grad():
            return super().forward(input_tensor, targets, eigen_smooth)

    def get_cam_image(
        self,
        input_tensor: Tensor,
        target_layer: nn.Module,
        targets: list[Callable[[Tensor], Tensor]],
        activations: np.ndarray,
        grads: np.ndarray | None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Per-cell target values of the readout, ``B×h×w`` or ``B×t×h×w`` (signed).

        Signed: before pytorch-grad-cam's ReLU and min–max.
        """
        adapter = self.dense_readout.adapter
        parameter = next(self.model.parameters())
        grid = torch.as_tensor(activations).to(device=parameter.device, dtype=parameter.dtype)
        grid = grid_from_layer_output(grid, None, self._channels, adapter.spatial_dims)
        if eigen_smooth:
            cams = self._eigen_cams(grid, targets)
        else:
            with torch.no_grad():
                scores = scores_from_grid(adapter, grid, self.include_bias)
                cams = torch.stack(
                    [_per_cell(target, scores[index]) for index, target in enumerate(targets)]
                )
            self.last_scores = scores
        self.last_raw_cams = cams.detach()
        return cams.detach().float().cpu().numpy()

    def _eigen_cams(self, grid: Tensor, targets: list[Callable[[Tensor], Tensor]]) -> Tensor:
        """First principal component of the per-channel contributions ``∂t/∂h ⊙ h`` per cell.

        For a linear head and ``ClassifierOutputTarget(k)`` the contributions are
        ``W_k ⊙ h``, whose channel sum is ``Z_k − b_k``.
        """
        if torch.is_inference_mode_enabled():
            raise InputError(
                "eigen_smooth=True differentiates the head per cell, which torch.inference_mode() "
                "forbids; call it outside inference_mode (torch.no_grad() is fine)."
            )
        with torch.enable_grad():
            cells = grid.detach().requires_grad_(True)
            scores = scores_from_grid(self.dense_readout.adapter, cells, self.include_bias)
            values = torch.stack([_per_cell(t, scores[i]) for i, t in enumerate(targets)])
            (gradient,) = torch.autograd.grad(values.sum(), cells)
        self.last_scores = scores.detach()
        contributions = (gradient * cells).detach().float().cpu().numpy()
        return torch.from_numpy(get_2d_projection(contributions))

    def __del__(self) -> None:  # BaseCAM.__del__ fails if __init__ raised before the hooks
        handles = getattr(self, "activations_and_grads", None)
        if handles is not None:
            handles.release()

    # -- what no CAM method gives --------------------------------------------------------
    def label_grid(self) -> Tensor:
        """Top-1 class of every cell of the last call, ``B×h×w`` or ``B×t×h×w`` (int64)."""
        if self.last_scores is None:
            raise InputError(
                "Call the CAM on a batch first; label_grid() reads that call's scores."
            )
        return self.last_scores.argmax(dim=1)

    def readout(self, input_tensor: Tensor) -> object:
        """The full :class:`~dense_readout.ReadoutResult` (all classes, all cells) of a batch."""
        return self.dense_readout(input_tensor)


def _per_cell(target: Callable[[Tensor], Tensor], scores: Tensor) -> Tensor:
    """Evaluate a pytorch-grad-cam target on every cell of one image's scores.

    ``scores`` is ``K×h×w`` (``K×t×h×w`` for clips and volumes).

    The cells are passed as a ``cells×K`` "batch" of logits, so targets written
    for ``B×K`` model outputs give one value per cell.
    """
    classes, *cells_shape = scores.shape
    count = scores[0].numel()
    cells = scores.movedim(0, -1).reshape(count, classes)
    values = target(cells)
    if not isinstance(values, Tensor):
        values = torch.as_tensor(values, device=scores.device)
    if values.numel() != count:
        raise InputError(
            f"Target {type(target).__name__} returned shape {tuple(values.shape)} for "
            f"{count} cells × {classes} classes; DenseReadoutCAM needs a target that "
            "gives one value per row of a B×K output (e.g. ClassifierOutputTarget(k))."
        )
    return values.reshape(cells_shape).to(scores.dtype)
