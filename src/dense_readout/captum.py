"""The dense readout as a Captum attribution: :class:`DenseReadoutAttribution`.

A :class:`captum.attr.LayerAttribution` usable wherever ``LayerGradCam`` is:
same keyword names (``inputs``, ``target``, ``additional_forward_args``,
``attribute_to_layer_input``, ``relu_attributions``), Captum's target
conventions, a ``B×1×h×w`` result that ``LayerAttribution.interpolate``,
``visualize_image_attr``, ``captum.metrics.infidelity`` and
``captum.metrics.sensitivity_max`` accept.

Relation to ``LayerGradCam`` (tested): at the grid layer of a GAP + linear model,
for class k and ``N = h·w`` cells,

    DenseReadoutAttribution.attribute(x, k)                    = N · LayerGradCam.attribute(x, k) + b_k
    DenseReadoutAttribution.attribute(x, k, include_bias=False) = N · LayerGradCam.attribute(x, k)

because GradCAM's channel weights are the mean gradient ``W_k / N``. The readout
needs no gradient and gives every class in the same forward pass
(``target=None`` returns ``B×K×h×w``, an extension of Captum's interface).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import (
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _run_forward,
)
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._cells import grid_from_layer_output, head_channels, scores_from_grid
from ._outputs import logits_only  # Hugging Face models return a ModelOutput
from ._target_layers import match_input_channels, resolve_grid_layer
from .errors import InputError
from .readout import DenseReadout
from .validation import check_eval_mode, check_images, check_targets

__all__ = ["DenseReadoutAttribution"]

TargetType = None | int | tuple[int, ...] | Tensor | Sequence[int | tuple[int, ...]]


class DenseReadoutAttribution(LayerAttribution):
    """Per-cell class evidence ``Z_k`` (the head applied to every cell) as a layer attribution.

    Args:
        forward_func: the model (an ``nn.Module``), or a function calling it; then
            pass ``model=``. Its output is used for the convergence delta, so it
            should return the logits.
        layer: the module whose output is the grid the head reads. Default: the
            model adapter's ``target_layer()``. (Second positional argument, as
            in ``LayerGradCam(model, layer)``.) Another layer is refused with an
            ``InputError`` naming the right one; an equivalent one (e.g.
            ``layer4[-1]`` for ``layer4``, same output) is accepted.
        device_ids: accepted for signature compatibility with ``LayerGradCam``;
            the readout reads the hooked layer output, so DataParallel needs no
            special handling.
        model: the classifier, when ``forward_func`` is not the model itself.
        reshape_transform: maps the layer output to ``B×C×h×w``. Default: the
            adapter's (Swin NHWC→NCHW, ViT tokens→grid).
        readout: a ready :class:`~dense_readout.DenseReadout` (e.g. with
            ``features=``/``head=`` for a custom network).

    Example:
        >>> import timm, torch
        >>> from captum.attr import LayerAttribution
        >>> from dense_readout.captum import DenseReadoutAttribution
        >>> model = timm.create_model("resnet18", num_classes=10).eval()
        >>> explainer = DenseReadoutAttribution(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> explainer.attribute(x, target=3).shape
        torch.Size([2, 1, 2, 2])
        >>> LayerAttribution.interpolate(explainer.attribute(x, target=[3, 4]), (64, 64)).shape
        torch.Size([2, 1, 64, 64])
        >>> explainer.attribute(x).shape  # target=None: every class at once
        torch.Size([2, 10, 2, 2])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module | None = None,
        device_ids: list[int] | None = None,
        *,
        model: nn.Module | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        readout: DenseReadout | None = None,
    ) -> None:
        if model is None:
            if readout is not None:
                model = readout.model
            elif isinstance(forward_func, nn.Module):
                model = forward_func
            else:
                raise InputError(
                    "forward_func is a plain function: pass the classifier too, "
                    "DenseReadoutAttribution(forward_func, model=model)."
                )
        self.dense_readout = readout if readout is not None else DenseReadout(model)
        adapter = self.dense_readout.adapter
        match_input_channels(adapter, model)
        if layer is None:
            layer = adapter.target_layer()
            if reshape_transform is None:
                reshape_transform = adapter.reshape_transform()
        elif not isinstance(layer, nn.Module):
            raise InputError(f"layer must be an nn.Module, got {type(layer).__name__}.")
        else:  # the layer must output the grid the head reads (checked on a probe input)
            layer, reshape_transform = resolve_grid_layer(
                adapter, model, [layer], reshape_transform, "DenseReadoutAttribution"
            )
        super().__init__(logits_only(forward_func), layer, device_ids)  # HF: logits tensor
        self.reshape_transform = reshape_transform
        self._channels = head_channels(adapter)

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: the readout is a local score, not multiplied by ``inputs − baselines``."""
        return False

    def has_convergence_delta(self) -> bool:
        """True: ``delta = mean_uv Z_k − y_k`` (0 up to rounding for exact models)."""
        return True

    @log_usage()  # NoiseTunnel calls attribute.__wrapped__, which this decorator provides
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: object | None = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        include_bias: bool = True,
        interpolate_to_input: bool = False,
        interpolate_mode: str = "nearest",
        expand_to_inputs: bool = False,
        return_convergence_delta: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor], Tensor]:
        """Readout map(s) of the target class(es).

        Args:
            inputs: the model input (tensor or tuple of tensors; the first is the image).
            target: Captum conventions: an int or 1-element tensor (all examples),
                a list / 1-D tensor with one class per example, a 1-tuple ``(k,)``
                (all examples) or a list of 1-tuples. ``None`` returns all ``K``
                class maps, ``B×K×h×w``.
            additional_forward_args: passed to ``forward_func`` after the inputs.
            attribute_to_layer_input: must be False (the readout reads the layer output).
            relu_attributions: keep only positive evidence, as in ``LayerGradCam``.
            include_bias: add the head bias ``b_k`` (default: ``Z_k`` itself).
                ``False`` gives ``Z_k − b_k = N · LayerGradCam`` on GAP + linear models.
            interpolate_to_input: resize to the input's ``H×W`` with
                ``LayerAttribution.interpolate(maps, size, interpolate_mode)``.
            interpolate_mode: ``"nearest"`` (default, Captum's own default, so the
                result equals ``LayerAttribution.interpolate`` of the grid map and
                each cell stays a visible block) or ``"bilinear"`` (smooth, what
                :mod:`dense_readout.compare` and the localization benchmarks use);
                any mode ``torch.nn.functional.interpolate`` takes.
            expand_to_inputs: resize and repeat over channels to the input's shape
                ``B×C×H×W``, as ``captum.metrics.infidelity`` requires.
            return_convergence_delta: also return ``mean_uv Z_k − y_k`` (``B``),
                where ``y`` is ``forward_func``'s output.

        Returns:
            ``B×1×h×w`` (or ``B×K×h×w`` for ``target=None``), resized as requested.
            Following Captum's ``Attribution`` contract, a tuple ``inputs`` gives a
            1-tuple (this is what ``sensitivity_max`` needs, which passes tuples;
            ``LayerGradCam`` returns a bare tensor there and fails in it). With
            ``return_convergence_delta``: ``(attributions, delta)``.
        """
        if attribute_to_layer_input:
            raise InputError(
                "attribute_to_layer_input=True is not supported: the dense readout is the head "
                "applied to the layer's *output* grid."
            )
        formatted = _format_tensor_into_tuples(inputs)
        adapter = self.dense_readout.adapter
        check_images(formatted[0], adapter.in_channels, adapter.spatial_dims)
        extra = _format_additional_forward_args(additional_forward_args)
        output, grid = self._forward(formatted, extra)
        with torch.no_grad():
            full = scores_from_grid(adapter, grid, include_bias=True)
            scores = full if include_bias else scores_from_grid(adapter, grid, include_bias=False)
            index = None
            if target is not None:
                index = _target_indices(target, scores.shape[0], scores.shape[1]).to(scores.device)
                ones = (1,) * (scores.dim() - 2)
                scores = scores.gather(1, index.view(-1, 1, *ones).expand(-1, 1, *scores.shape[2:]))
            if relu_attributions:
                scores = F.relu(scores)
            if interpolate_to_input or expand_to_inputs:
                size = tuple(formatted[0].shape[2:])
                mode = interpolate_mode
                if len(size) == 3 and mode == "bilinear":  # the same interpolation on a 3-D grid
                    mode = "trilinear"
                scores = LayerAttribution.interpolate(scores, size, mode)
            if expand_to_inputs:
                if scores.shape[1] != 1:
                    raise InputError("expand_to_inputs=True needs one target class per example.")
                scores = scores.expand(-1, formatted[0].shape[1], *formatted[0].shape[2:])
            scores = scores.contiguous()
        result: Tensor | tuple[Tensor] = (scores,) if isinstance(inputs, tuple) else scores
        if not return_convergence_delta:
            return result
        return result, self._delta(full, output, index)

    # -- internals ----------------------------------------------------------------------
    def _forward(
        self, inputs: tuple[Tensor, ...], extra: tuple[Any, ...] | None
    ) -> tuple[Tensor, Tensor]:
        model = self.dense_readout.model
        if self.dense_readout.check_mode:
            check_eval_mode(model, "the attribution")
        captured: list = []
        handle = self.layer.register_forward_hook(lambda module, args, out: captured.append(out))
        try:
            with torch.no_grad():
                output = _run_forward(self.forward_func, inputs, additional_forward_args=extra)
        finally:
            handle.remove()
        if not captured:
            raise InputError(
                f"The layer {type(self.layer).__name__} did not run during forward_func; pass the "
                "module whose output is the grid (or leave layer=None)."
            )
        spatial = self.dense_readout.adapter.spatial_dims
        grid = grid_from_layer_output(captured[-1], self.reshape_transform, self._channels, spatial)
        return output, grid

    @staticmethod
    def _delta(full: Tensor, output: object, index: Tensor | None) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[1] != full.shape[1]:
            raise InputError(
                "return_convergence_delta needs forward_func to return B×K logits; got "
                f"{getattr(output, 'shape', type(output).__name__)}."
            )
        means = full.mean(dim=tuple(range(2, full.dim())))
        if index is None:
            return (means - output).abs().amax(dim=1)
        return (means.gather(1, index.view(-1, 1)) - output.gather(1, index.view(-1, 1))).squeeze(1)


def _target_indices(target: TargetType, batch: int, classes: int) -> Tensor:
    """Captum's target conventions for a ``B×K`` output → one class per example (``B``)."""
    if isinstance(target, tuple):
        if len(target) != 1:
            raise InputError(
                f"A tuple target indexes the output behind the batch dimension; the readout's "
                f"image output is B×K, so use a 1-tuple (k,), got {target!r}."
            )
        target = target[0]
    elif isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        if any(len(t) != 1 for t in target):
            raise InputError(f"Each tuple target must be (k,) for a B×K output, got {target!r}.")
        target = [t[0] for t in target]
    return check_targets(target, batch, classes)  # type: ignore[arg-type]  # tuples unwrapped above
