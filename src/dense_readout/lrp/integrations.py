"""LRP-refined readout maps behind the Captum, pytorch-grad-cam and ``compare`` interfaces.

* :class:`LRPReadoutAttribution` — a Captum ``Attribution``: ``attribute(inputs,
  target, cell=None)`` returns ``B×1×H×W`` relevance (or input-shaped with
  ``sum_channels=False``), with ``return_convergence_delta`` giving
  ``relevance.sum() − start`` like Captum's own LRP.
* :class:`LRPReadoutCAM` — a pytorch-grad-cam ``BaseCAM``: ``cam(input_tensor,
  targets)`` returns ``B×H×W`` in [0, 1] (ReLU then min-max, as every BaseCAM).
  It registers no hooks of its own on the model.
* The ``compare`` method ``"lrp"`` is registered by :mod:`dense_readout.compare`
  itself (``compare.wrappers.LRPMethod``), which imports this package only when
  the method is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..readout import DenseReadout
from .core import LRPReadout

__all__ = ["LRPReadoutAttribution", "LRPReadoutCAM"]

#: What ``LRPReadoutAttribution.attribute`` returns: a tensor, or a 1-tuple for tuple inputs.
AttributionMaps = Tensor | tuple[Tensor, ...]


def _captum_target(target: Any, batch: int) -> int | list[int] | None:
    if target is None:
        return None
    if isinstance(target, Tensor):
        values = target.flatten().tolist()
        return values[0] if len(values) == 1 else values
    if isinstance(target, tuple):
        if len(target) != 1:
            raise InputError(f"A tuple target must be (k,) for a classifier, got {target!r}.")
        return int(target[0])
    if isinstance(target, list):
        return [int(t[0]) if isinstance(t, tuple) else int(t) for t in target]
    return int(target)


try:  # captum is a dependency of the package, but keep the import failure readable
    from captum.attr import Attribution as _CaptumAttribution
except ImportError:  # pragma: no cover
    _CaptumAttribution = object


class LRPReadoutAttribution(_CaptumAttribution):
    """Captum-style LRP refinement of a readout cell or class map.

    Args:
        forward_func: the model (``nn.Module``) or an :class:`LRPReadout`.
        composite: as for :class:`LRPReadout`.
        composite_options: as for :class:`LRPReadout`.

    Example:
        >>> import torch
        >>> from dense_readout import load_pretrained
        >>> from dense_readout.lrp import LRPReadoutAttribution
        >>> attribution = LRPReadoutAttribution(load_pretrained().model)
        >>> maps = attribution.attribute(torch.randn(2, 3, 64, 64), target=285)
        >>> tuple(maps.shape)
        (2, 1, 64, 64)
    """

    def __init__(
        self,
        forward_func: nn.Module | LRPReadout | DenseReadout,
        composite: Any = None,
        composite_options: dict | None = None,
    ) -> None:
        lrp = (
            forward_func
            if isinstance(forward_func, LRPReadout)
            else LRPReadout(forward_func, composite, composite_options=composite_options)
        )
        self.lrp = lrp
        if _CaptumAttribution is not object:
            _CaptumAttribution.__init__(self, lrp.model)

    def has_convergence_delta(self) -> bool:
        """Captum API: ``attribute`` can return the convergence delta."""
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        """Captum API: relevance is already multiplied by the inputs."""
        return True

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: object | None = None,
        cell: tuple[int, int] | Sequence[Sequence[int]] | Tensor | None = None,
        sum_channels: bool = True,
        return_convergence_delta: bool = False,
    ) -> AttributionMaps | tuple[AttributionMaps, Tensor]:
        """Relevance of the readout score(s) of ``target``.

        Args:
            inputs: the image batch (or a 1-tuple holding it).
            target: class (int, one per example, ``(k,)``) or None: the predicted class.
            additional_forward_args: not supported (must be None).
            cell: ``(u, v)`` (or ``B×2``) to refine one cell; None refines all cells
                of the class (the class map).
            sum_channels: ``B×1×H×W`` (default) or the input's shape ``B×C×H×W``
                (what ``captum.metrics.infidelity`` needs).
            return_convergence_delta: also return ``relevance.sum() − start`` (``B``).
        """
        single = isinstance(inputs, Tensor)
        images = inputs if isinstance(inputs, Tensor) else inputs[0]
        if not isinstance(inputs, Tensor) and len(inputs) != 1:
            raise InputError("LRPReadoutAttribution takes one input tensor (the image batch).")
        if additional_forward_args is not None:
            raise InputError(
                "additional_forward_args is not supported: the readout takes only the image."
            )
        k = _captum_target(target, images.shape[0])
        if cell is None:
            result = self.lrp.class_map(images, k)
        else:
            result = self.lrp.cell(images, cell, k)
        maps = result.relevance if sum_channels else result.input_relevance
        maps = maps.contiguous()
        output: AttributionMaps = maps if single else (maps,)
        if return_convergence_delta:
            delta = result.relevance.sum(dim=(1, 2, 3)) - result.start
            return output, delta
        return output


try:
    from pytorch_grad_cam.base_cam import BaseCAM as _BaseCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
except ImportError:  # pragma: no cover
    _BaseCAM = object


class LRPReadoutCAM(_BaseCAM):
    """pytorch-grad-cam-style LRP map of the readout: ``B×H×W`` in [0, 1].

    ``targets`` are pytorch-grad-cam targets evaluated *per cell* on the readout
    scores (``ClassifierOutputTarget(k)`` refines the class map of ``k``); the
    starting relevance of a cell is ``Z ⊙ ∂target/∂Z`` (exactly ``Z_k`` for
    ``ClassifierOutputTarget``). ``targets=None`` uses each image's top class.

    Args:
        model: the classifier.
        target_layers: accepted for the ``(model, target_layers, reshape_transform)``
            signature and ignored: LRP reaches the input.
        reshape_transform: ignored likewise.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> from dense_readout import load_pretrained
        >>> from dense_readout.lrp import LRPReadoutCAM
        >>> cam = LRPReadoutCAM(load_pretrained().model)
        >>> maps = cam(torch.randn(1, 3, 64, 64), [ClassifierOutputTarget(285)])
        >>> maps.shape, float(maps.max()) <= 1.0
        ((1, 64, 64), True)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module] | None = None,
        reshape_transform: Callable | None = None,
        composite: Any = None,
        composite_options: dict | None = None,
        lrp: LRPReadout | None = None,
    ) -> None:
        if _BaseCAM is not object:
            _BaseCAM.__init__(self, model, [], None, uses_gradients=False)
        self.lrp = lrp or LRPReadout(model, composite, composite_options=composite_options)
        self.raw: Tensor | None = None

    def forward(
        self,
        input_tensor: Tensor,
        targets: list[Callable] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """pytorch-grad-cam API: LRP maps ``B×H×W`` of ``targets``, ReLU'd and min-max scaled."""
        raw = self.raw_maps(input_tensor, targets)
        self.raw = raw
        cam = np.maximum(raw.cpu().numpy(), 0)
        return scale_cam_image(cam)

    def raw_maps(self, input_tensor: Tensor, targets: list[Callable] | None = None) -> Tensor:
        """Signed relevance ``B×H×W`` before ReLU and min-max."""
        batch = input_tensor.shape[0]
        if targets is not None and len(targets) != batch:
            raise InputError(
                f"Got {len(targets)} targets for {batch} images; pytorch-grad-cam would silently "
                "drop the extra images. Give one target per image."
            )
        lrp = self.lrp
        holder: dict = {}

        def starts(z: Tensor) -> Tensor:
            if targets is None:
                mask = torch.zeros_like(z)
                mask[torch.arange(batch), z.mean(dim=(2, 3)).argmax(dim=1)] = 1
                return (mask * z).unsqueeze(0)
            rows = []
            for b, target in enumerate(targets):
                cells = z[b].permute(1, 2, 0).reshape(-1, z.shape[1]).detach().requires_grad_(True)
                with torch.enable_grad():
                    value = target(cells)
                    (grad,) = torch.autograd.grad(value.sum(), cells)
                rows.append(
                    (cells.detach() * grad).reshape(z.shape[2], z.shape[3], -1).permute(2, 0, 1)
                )
            holder["start"] = torch.stack(rows)
            return holder["start"].unsqueeze(0)

        lrp._check(input_tensor)
        grads, _ = lrp._run(input_tensor, starts)
        return grads[0].sum(dim=1).detach()

    def __call__(
        self,
        input_tensor: Tensor,
        targets: list[Callable] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """pytorch-grad-cam API: the maps of :meth:`forward`, optionally augmentation-smoothed."""
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)
