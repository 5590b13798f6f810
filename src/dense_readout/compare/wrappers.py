"""The built-in compare methods: the readout, pytorch-grad-cam and Captum wrappers.

Importing this module registers the built-in names in
:data:`~dense_readout.compare.methods.METHODS`: ``dense-readout``, ``cam``,
``dense-readout-cam``, the pytorch-grad-cam CAMs (``gradcam``, ``hirescam``, …),
Captum's ``layergradcam`` and ``lrp`` (:class:`LRPMethod`; it imports
:mod:`dense_readout.lrp` and zennit only when the method is built). The library
wrappers :class:`CamMethod` and :class:`CaptumMethod` also serve classes passed
directly to ``compare``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .._cells import require_affine
from .._optional import require
from ..errors import InputError
from ..readout import DenseReadout
from .methods import MethodContext, SaliencyMethod, register_method

if TYPE_CHECKING:
    from ..lrp.core import LRPReadout

__all__ = ["CamMethod", "CaptumMethod", "LRPMethod", "ReadoutMethod"]


class ReadoutMethod(SaliencyMethod):
    """The dense readout: ``Z_k`` (or ``Z_k − b_k``, the CAM of Zhou et al.) in one forward pass.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.compare import ReadoutMethod
        >>> readout = DenseReadout(timm.create_model("resnet18", num_classes=3).eval())
        >>> x, targets = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
        >>> with torch.no_grad():
        ...     maps, cam = ReadoutMethod(readout)(x, targets), ReadoutMethod(readout, include_bias=False)(x, targets)
        >>> tuple(maps.shape)
        (2, 2, 2)
        >>> bias = readout.model.fc.bias[targets].view(-1, 1, 1)  # CAM = Z - b of the target class
        >>> torch.allclose(maps - bias, cam, atol=1e-5)
        True
    """

    needs_gradients = False

    def __init__(
        self, readout: DenseReadout, include_bias: bool = True, name: str = "dense-readout"
    ) -> None:
        if not include_bias:
            require_affine(readout.adapter)
        self.readout = readout
        self.include_bias = include_bias
        self.name = name
        self.classes_per_call = readout.num_classes
        self.last_scores: Tensor | None = None
        self.last_bias: Tensor | None = None  # b (K) when include_bias=False

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The readout's class maps ``B×h×w`` of ``targets``."""
        result = self.readout(inputs)
        self.last_scores = result.scores
        maps = result.class_map(targets)
        if not self.include_bias:
            from .._cells import head_bias

            self.last_bias = head_bias(self.readout.adapter, result.features)
            maps = maps - self.last_bias[targets.to(maps.device)].view(-1, 1, 1)
        return maps


class CamMethod(SaliencyMethod):
    """Any pytorch-grad-cam ``BaseCAM`` subclass at the model's grid layer.

    Example:
        >>> import timm, torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.compare import CamMethod, MethodContext
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> method = CamMethod(GradCAM, MethodContext(model, DenseReadout(model)))
        >>> raw = method(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
        >>> method.close()
        >>> method.name, method.needs_gradients, tuple(raw.shape)  # raw: at the grid, unscaled
        ('GradCAM', True, (2, 2, 2))
    """

    def __init__(
        self, cam_class: type, context: MethodContext, name: str | None = None, **options: Any
    ) -> None:
        self.name = name or cam_class.__name__
        self.cam = cam_class(
            context.model, [context.target_layer], context.reshape_transform, **options
        )
        self.needs_gradients = bool(getattr(self.cam, "uses_gradients", True))
        self.classes_per_call = getattr(self.cam, "classes_per_call", 1)
        self._raw: list[np.ndarray] = []
        original = self.cam.get_cam_image

        def capture(*args: Any, **kwargs: Any) -> np.ndarray:
            raw = original(*args, **kwargs)
            self._raw.append(np.asarray(raw.detach().cpu() if isinstance(raw, Tensor) else raw))
            return raw

        self.cam.get_cam_image = capture  # raw, signed maps before BaseCAM's ReLU and min-max

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The CAM's maps ``B×H×W`` of ``targets``, before its min-max scaling."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self._raw.clear()
        if self.needs_gradients:  # so frozen (requires_grad=False) models still get gradients
            inputs = inputs.clone().requires_grad_(True)
        output = self.cam(inputs, [ClassifierOutputTarget(int(k)) for k in targets.tolist()])
        raw = self._raw[-1] if self._raw else output  # methods bypassing get_cam_image
        return torch.as_tensor(np.asarray(raw, dtype=np.float32))

    def close(self) -> None:
        """Release the CAM's forward and backward hooks."""
        self.cam.activations_and_grads.release()


class CaptumMethod(SaliencyMethod):
    """A Captum attribution class: layer methods at the grid layer, others on the input.

    Input attributions (``B×C×H×W``) are summed over channels, keeping the sign.

    Example:
        >>> import timm, torch
        >>> from captum.attr import LayerGradCam, Saliency
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.compare import CaptumMethod, MethodContext
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> context = MethodContext(model, DenseReadout(model))
        >>> x, targets = torch.randn(1, 3, 64, 64), torch.tensor([2])
        >>> tuple(CaptumMethod(LayerGradCam, context)(x, targets).shape)  # at the grid layer
        (1, 2, 2)
        >>> tuple(CaptumMethod(Saliency, context)(x, targets).shape)  # on the input, channels summed
        (1, 64, 64)
    """

    def __init__(
        self,
        attribution_class: type[Any],
        context: MethodContext,
        name: str | None = None,
        **options: Any,
    ) -> None:
        from captum.attr import GradientAttribution, LayerAttribution

        from ..captum import DenseReadoutAttribution

        self.name = name or attribution_class.__name__
        self.needs_gradients = issubclass(attribution_class, GradientAttribution)
        self.method: Any  # a captum.attr.Attribution (subclass constructors differ)
        if issubclass(attribution_class, DenseReadoutAttribution):
            self.method = attribution_class(context.model, readout=context.readout)
            self.needs_gradients = False
            self.classes_per_call = context.readout.num_classes
        elif issubclass(attribution_class, LayerAttribution):
            if context.reshape_transform is not None:
                raise InputError(
                    f"{self.name} needs a channels-first layer, but this model's grid layer outputs "
                    "NHWC/tokens (it has a reshape_transform) and Captum layer methods take none."
                )
            self.method = attribution_class(context.model, context.target_layer)
        else:
            self.method = attribution_class(context.model)
        self.options = options

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The Captum method's attributions of ``targets``, summed over channels."""
        if self.needs_gradients:
            inputs = inputs.clone().requires_grad_(True)
        maps = self.method.attribute(inputs, target=targets.to(inputs.device), **self.options)
        if isinstance(maps, tuple):
            maps = maps[0]
        return maps.detach().sum(dim=1)


class LRPMethod(SaliencyMethod):
    """The LRP (zennit) refinement of the readout's class map of each target (signed, input size)."""

    needs_gradients = True
    classes_per_call = 1

    def __init__(self, lrp: LRPReadout, name: str = "lrp") -> None:
        self.lrp = lrp
        self.name = name

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``B×H×W`` relevance of each image's target class map."""
        return self.lrp.class_map(inputs, targets).relevance[:, 0]


# -- built-in names ---------------------------------------------------------------------------


@register_method(
    "dense-readout", "Z_k: the model's head applied to every cell (all classes in one pass)"
)
def _readout_factory(context: MethodContext) -> SaliencyMethod:
    return ReadoutMethod(context.readout, include_bias=True, name="dense-readout")


@register_method("cam", "Z_k - b_k: the class activation map of Zhou et al. 2016 (affine heads)")
def _cam_factory(context: MethodContext) -> SaliencyMethod:
    return ReadoutMethod(context.readout, include_bias=False, name="cam")


# built-in pytorch-grad-cam names: {name: (class name in pytorch_grad_cam, description)}
_GRAD_CAM_CLASSES: dict[str, tuple[str, str]] = {
    "gradcam": ("GradCAM", "Selvaraju et al. 2017: mean-gradient channel weights"),
    "hirescam": ("HiResCAM", "Draelos & Carin 2020: gradient x activation, summed over channels"),
    "gradcam++": ("GradCAMPlusPlus", "Chattopadhay et al. 2018: second-order channel weights"),
    "xgradcam": ("XGradCAM", "Fu et al. 2020: axiom-based channel weights"),
    "layercam": ("LayerCAM", "Jiang et al. 2021: ReLU(gradient) x activation"),
    "eigencam": ("EigenCAM", "Muhammad & Yeasin 2020: first principal component (class-agnostic)"),
    "eigengradcam": ("EigenGradCAM", "first principal component of gradient x activation"),
    "scorecam": ("ScoreCAM", "Wang et al. 2020: one forward pass per channel (slow)"),
    "ablationcam": ("AblationCAM", "Desai & Ramaswamy 2020: one forward pass per channel (slow)"),
}
# maps that ignore the target: one call serves every class (the cost's all-class column)
_CLASS_AGNOSTIC = frozenset({"eigencam"})


def _register_grad_cam() -> None:
    for key, (class_name, description) in _GRAD_CAM_CLASSES.items():

        def factory(
            context: MethodContext, _class_name: str = class_name, _key: str = key
        ) -> SaliencyMethod:
            import pytorch_grad_cam

            method = CamMethod(
                getattr(pytorch_grad_cam, _class_name), context, name=_key, **context.options
            )
            if _key in _CLASS_AGNOSTIC:
                method.classes_per_call = None
            return method

        register_method(key, f"pytorch-grad-cam {class_name}: {description}")(factory)


_register_grad_cam()


@register_method(
    "dense-readout-cam",
    "pytorch-grad-cam path of the readout (DenseReadoutCAM; same raw map as dense-readout)",
)
def _readout_cam_factory(context: MethodContext) -> SaliencyMethod:
    from ..gradcam import DenseReadoutCAM

    class _Cam(DenseReadoutCAM):
        def __init__(self, model: nn.Module, layers: Any, transform: Any, **options: Any) -> None:
            super().__init__(model, layers, transform, readout=context.readout, **options)

    method = CamMethod(_Cam, context, name="dense-readout-cam", **context.options)
    method.classes_per_call = context.readout.num_classes
    return method


@register_method(
    "layergradcam",
    "Captum LayerGradCam at the grid layer (signed; = (Z_k - b_k)/N on GAP-linear models)",
)
def _layergradcam_factory(context: MethodContext) -> SaliencyMethod:
    from captum.attr import LayerGradCam

    return CaptumMethod(LayerGradCam, context, name="layergradcam", **context.options)


@register_method("lrp", "LRP (zennit) refinement of the readout class map to pixels (signed)")
def _lrp_factory(context: MethodContext) -> SaliencyMethod:
    # registered here, imported on use: the name is listed without zennit, and
    # importing dense_readout.compare does not import dense_readout.lrp
    require("zennit", extra="lrp", purpose="the 'lrp' compare method and dense_readout.lrp")
    from ..lrp import LRPReadout

    options = dict(context.options)
    lrp = LRPReadout(
        context.readout,
        options.pop("composite", None),
        composite_options=options.pop("composite_options", None),
    )
    return LRPMethod(lrp)
