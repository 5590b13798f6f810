"""The dense readout for Quantus: :func:`explain`, an ``explain_func`` its metrics accept.

Quantus metrics call ``explain_func(model=model, inputs=x, targets=y,
**explain_func_kwargs)`` with numpy arrays (``x``: ``B×C×H×W``, ``y``: ``B``
class indices) and expect a numpy array back. Pass this module's
:func:`explain` and choose the method and post-processing in
``explain_func_kwargs``::

    metric(model=model, x_batch=x, y_batch=y, s_batch=masks,
           explain_func=dense_readout.quantus.explain,
           explain_func_kwargs={"method": "DenseReadoutAttribution", "relu": True})

``method``:

* ``"DenseReadoutAttribution"`` (default; alias ``"dense-readout"``): the readout
  map ``Z_k`` of the target class (:class:`~dense_readout.captum.DenseReadoutAttribution`),
  ``include_bias=False`` for ``Z_k − b_k`` (the CAM), ``relu=True`` for its
  positive part;
* ``"DenseReadoutCAM"``: the same map through pytorch-grad-cam
  (:class:`~dense_readout.gradcam.DenseReadoutCAM`: ReLU, min–max to [0, 1],
  ``cv2`` resize);
* any other name is handed to ``quantus.explain`` with the same keyword
  arguments (``"LayerGradCam"`` with ``gc_layer=``, ``"Saliency"``, …), so one
  ``explain_func`` serves a comparison.

The grid map is resized to the input (``resize=True``) with ``interpolate_mode``
(default ``"bilinear"``, as :mod:`dense_readout.compare` and the localization
benchmarks use; Captum's own default is ``"nearest"``). The keys Quantus adds
itself (``device``, ``channel_first``, ``softmax``, ``xai_lib``,
``reduce_axes``, ``keepdims``) are accepted; ``softmax=True`` is refused (the
readout reads logits per cell). Quantus 0.6 has no hook to register a method
name, so ``quantus.explain(method="DenseReadoutAttribution")`` is not possible;
this function is the route.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError

__all__ = ["METHODS", "explain"]

METHODS = ("DenseReadoutAttribution", "DenseReadoutCAM")
_ALIASES = {"dense-readout": "DenseReadoutAttribution", "dense_readout": "DenseReadoutAttribution"}
_QUANTUS_KEYS = {"device", "channel_first", "softmax", "xai_lib", "reduce_axes", "keepdims"}
_OURS = {"relu", "include_bias", "resize", "interpolate_mode", "layer"}
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


def explain(model: nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """Explanations of ``inputs`` for ``targets`` as Quantus wants them: ``B×1×H×W`` float32.

    Keyword arguments (Quantus' ``explain_func_kwargs``): ``method`` (see the
    module docstring), ``relu`` (False), ``include_bias`` (True), ``resize``
    (True: to the input's ``H×W``; False: the ``h×w`` grid), ``interpolate_mode``
    (``"bilinear"``), ``layer`` (the grid layer, a module or a path such as
    ``"layer4"``; default: the model adapter's) and the keys Quantus adds.

    Example:
        >>> import numpy as np, timm, torch
        >>> from dense_readout.quantus import explain
        >>> model = timm.create_model("resnet18", num_classes=5).eval()
        >>> x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
        >>> maps = explain(model, x, np.array([1, 3]), method="DenseReadoutAttribution")
        >>> maps.shape, maps.dtype
        ((2, 1, 64, 64), dtype('float32'))
        >>> grid = explain(model, x, np.array([1, 3]), resize=False)
        >>> z = torch.stack([model.fc(f.permute(1, 2, 0))[..., k] for f, k in
        ...                  zip(model.forward_features(torch.from_numpy(x)), [1, 3])])
        >>> bool(np.allclose(grid[:, 0], z.detach().numpy(), atol=1e-4))
        True
    """
    method = str(kwargs.pop("method", "DenseReadoutAttribution"))
    method = _ALIASES.get(method, method)
    if method not in METHODS:
        return _delegate(model, inputs, targets, method, kwargs)
    unknown = set(kwargs) - _QUANTUS_KEYS - _OURS
    if unknown:
        raise InputError(
            f"Unknown explain_func_kwargs {sorted(unknown)} for method {method!r}; known: "
            f"{sorted(_OURS | _QUANTUS_KEYS | {'method'})}."
        )
    if kwargs.get("softmax"):
        raise InputError(
            "softmax=True asks for explanations of the softmax output; the dense readout reads "
            "the logits of every cell. Leave softmax unset (or False) for this method."
        )
    x = _as_images(model, inputs, kwargs.get("channel_first"))
    index = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
    if method == "DenseReadoutCAM":
        maps = _cam(model, x, index, kwargs)
    else:
        maps = _attribution(model, x, index, kwargs)
    return maps.astype(np.float32)


def _as_images(model: nn.Module, inputs: Any, channel_first: bool | None) -> torch.Tensor:
    """Quantus' numpy batch as a tensor on the model's device, channels first."""
    x = torch.as_tensor(np.asarray(inputs.detach().cpu() if torch.is_tensor(inputs) else inputs))
    if x.dim() != 4:
        raise InputError(f"Expected a B×C×H×W image batch, got shape {tuple(x.shape)}.")
    if channel_first is False:
        x = x.permute(0, 3, 1, 2)
    parameter = next(iter(model.parameters()))
    return x.to(device=parameter.device, dtype=parameter.dtype).contiguous()


def _layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module | None:
    if isinstance(layer, str):
        path = layer.removeprefix("model.")
        try:
            return model.get_submodule(path)
        except AttributeError:
            raise InputError(
                f"layer={layer!r} is not a submodule of {type(model).__name__}; give a module or "
                "a dotted path such as 'layer4' (or leave it unset for the adapter's grid layer)."
            ) from None
    return layer


def _cached(model: nn.Module, key: Any, build: Callable[[], Any]) -> Any:
    """One explainer per (model, key): building one probes the model with a forward pass."""
    entries = _CACHE.setdefault(model, {})
    if key not in entries:
        entries[key] = build()
    return entries[key]


def _attribution(
    model: nn.Module, x: torch.Tensor, index: torch.Tensor, options: dict[str, Any]
) -> np.ndarray:
    from .captum import DenseReadoutAttribution

    layer = _layer(model, options.get("layer"))
    explainer = _cached(
        model, ("attribution", layer), lambda: DenseReadoutAttribution(model, layer)
    )
    maps = explainer.attribute(
        x,
        target=index.to(x.device),
        include_bias=bool(options.get("include_bias", True)),
        relu_attributions=bool(options.get("relu", False)),
        interpolate_to_input=bool(options.get("resize", True)),
        interpolate_mode=str(options.get("interpolate_mode", "bilinear")),
    )
    return maps.detach().float().cpu().numpy()


def _cam(
    model: nn.Module, x: torch.Tensor, index: torch.Tensor, options: dict[str, Any]
) -> np.ndarray:
    """Through pytorch-grad-cam; the CAM's hooks are released after every call."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .gradcam import DenseReadoutCAM
    from .readout import DenseReadout

    layer = _layer(model, options.get("layer"))
    readout = _cached(model, "readout", lambda: DenseReadout(model))
    layers = None if layer is None else [layer]
    include_bias = bool(options.get("include_bias", True))
    with DenseReadoutCAM(model, layers, include_bias=include_bias, readout=readout) as cam:
        maps = cam(x, [ClassifierOutputTarget(int(k)) for k in index])
    return np.asarray(maps)[:, None]


def _delegate(
    model: nn.Module, inputs: Any, targets: Any, method: str, kwargs: dict[str, Any]
) -> np.ndarray:
    """Other methods: Quantus' own ``explain`` with the same keyword arguments."""
    import quantus

    ours = sorted(set(kwargs) & (_OURS - {"layer"}))
    if ours:
        raise InputError(
            f"{ours} apply to {list(METHODS)} only; for {method!r} pass Quantus' own options "
            "(e.g. interpolate=(H, W) for LayerGradCam)."
        )
    if "layer" in kwargs:
        kwargs["gc_layer"] = _layer(model, kwargs.pop("layer"))
    return np.asarray(quantus.explain(model, inputs, targets, method=method, **kwargs))
