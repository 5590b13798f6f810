"""Side-by-side comparison of the dense readout with CAM methods, on the same inputs.

:func:`compare` runs each method on the same batch and targets, times it, and
post-processes every map **the same way**:

1. the method's *raw* map: signed, at its native resolution (the grid for CAM
   methods; pytorch-grad-cam maps are taken *before* the library's ReLU and
   min–max, by intercepting ``get_cam_image``);
2. sign handling (``sign=``): ``"positive"`` (default, ReLU, the CAM
   convention), ``"absolute"`` or ``"all"`` (keep the sign);
3. bilinear resize (``align_corners=False``) to ``size`` (default: the input size);
4. min–max normalisation to [0, 1] per image (a constant map becomes all zeros).

Methods are named by string (see :func:`available_methods`), or given as a
pytorch-grad-cam ``BaseCAM`` subclass, a Captum attribution class, an object
with ``__call__(inputs, targets) -> B×h×w``, or a ``(label, method)`` pair.
New names are added with :func:`register_method` (the built-in ``lrp`` is
registered this way and imports :mod:`dense_readout.lrp` only when built); they
live in the registry :data:`METHODS`. A method that fails
on a model is reported in :attr:`Comparison.failures`, not raised
(``errors="raise"`` to stop instead).

Modules: :mod:`.methods` (what a method is; the name registry),
:mod:`.wrappers` (the readout, pytorch-grad-cam and Captum wrappers; the built-in
names), :mod:`.specs` (name/class/callable → method), :mod:`.postprocessing`,
:mod:`.results` (:class:`Comparison` and its figure), :mod:`.runner` (:func:`compare`).

Example:
    >>> import timm, torch
    >>> from dense_readout.compare import compare
    >>> model = timm.create_model("resnet18", num_classes=10).eval()
    >>> result = compare(model, torch.randn(2, 3, 64, 64), targets=[1, 2],
    ...                  methods=["dense-readout", "cam", "gradcam"])
    >>> sorted(result.maps), tuple(result.maps["gradcam"].shape)
    (['cam', 'dense-readout', 'gradcam'], (2, 64, 64))
    >>> bool((result.maps["cam"] - result.maps["gradcam"]).abs().max() < 1e-4)
    True
"""

from ..errors import GradientsUnavailableError
from . import baselines as _baselines  # noqa: F401  (registers random, edge-detector, integrated-gradients)
from .methods import (
    METHODS,
    MethodContext,
    MethodFactory,
    MethodRegistration,
    SaliencyMethod,
    available_methods,
    register_method,
)
from .postprocessing import postprocess
from .results import Comparison, MethodResult
from .runner import compare
from .specs import MethodSpec, check_method_spec, resolve_method
from .wrappers import CamMethod, CaptumMethod, ReadoutMethod

__all__ = [
    "METHODS",
    "CamMethod",
    "CaptumMethod",
    "Comparison",
    "GradientsUnavailableError",
    "MethodContext",
    "MethodFactory",
    "MethodRegistration",
    "MethodResult",
    "MethodSpec",
    "ReadoutMethod",
    "SaliencyMethod",
    "available_methods",
    "check_method_spec",
    "compare",
    "postprocess",
    "register_method",
    "resolve_method",
]
