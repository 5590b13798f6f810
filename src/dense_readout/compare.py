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
New names are added with :func:`register_method` (the LRP integration registers
itself this way). A method that fails on a model is reported in
:attr:`Comparison.failures`, not raised (``errors="raise"`` to stop instead).

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

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._cells import require_affine
from .errors import DenseReadoutError, GradientsUnavailableError, InputError
from .readout import DenseReadout
from .validation import check_eval_mode, check_images, check_targets

__all__ = [
    "Comparison",
    "GradientsUnavailableError",
    "MethodContext",
    "MethodResult",
    "available_methods",
    "check_method_spec",
    "compare",
    "postprocess",
    "register_method",
    "resolve_method",
]


# -- method registry ----------------------------------------------------------------------


@dataclass
class MethodContext:
    """What a method factory gets: the model, its readout (adapter) and the grid layer."""

    model: nn.Module
    readout: DenseReadout
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def target_layer(self) -> nn.Module:
        return self.readout.adapter.target_layer()

    @property
    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        return self.readout.adapter.reshape_transform()


class SaliencyMethod:
    """A ready method: ``method(inputs, targets) -> raw maps B×h×w`` (signed, any resolution).

    Subclasses set ``needs_gradients`` and may set ``classes_per_call`` (how many
    classes one call explains: 1 for CAMs, K for the readout) and ``close()``.
    """

    name: str = "method"
    needs_gradients: bool = True
    classes_per_call: int | None = 1

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release hooks."""


MethodFactory = Callable[[MethodContext], SaliencyMethod]


@dataclass(frozen=True)
class _Registration:
    factory: MethodFactory
    description: str


_METHODS: dict[str, _Registration] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_method(name: str, description: str = "") -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: make ``factory(context) -> SaliencyMethod`` available as ``name``.

    Example:
        >>> import torch
        >>> from dense_readout.compare import SaliencyMethod, register_method, available_methods
        >>> class Centre(SaliencyMethod):
        ...     name, needs_gradients = "centre-prior", False
        ...     def __call__(self, inputs, targets):
        ...         grid = torch.zeros(inputs.shape[0], 3, 3); grid[:, 1, 1] = 1
        ...         return grid
        >>> @register_method("centre-prior", "a fixed centre blob (a baseline)")
        ... def _centre(context):
        ...     return Centre()
        >>> "centre-prior" in available_methods()
        True
    """

    def decorate(factory: MethodFactory) -> MethodFactory:
        _METHODS[_key(name)] = _Registration(factory, description)
        return factory

    return decorate


def available_methods() -> dict[str, str]:
    """Registered method names and their descriptions."""
    return {name: registration.description for name, registration in sorted(_METHODS.items())}


# -- built-in methods ------------------------------------------------------------------------


class ReadoutMethod(SaliencyMethod):
    """The dense readout: ``Z_k`` (or ``Z_k − b_k``, the CAM of Zhou et al.) in one forward pass."""

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

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        result = self.readout(inputs)
        self.last_scores = result.scores
        maps = result.class_map(targets)
        if not self.include_bias:
            from ._cells import head_bias

            maps = maps - head_bias(self.readout.adapter, result.features)[
                targets.to(maps.device)
            ].view(-1, 1, 1)
        return maps


@register_method(
    "dense-readout", "Z_k: the model's head applied to every cell (all classes in one pass)"
)
def _readout_factory(context: MethodContext) -> SaliencyMethod:
    return ReadoutMethod(context.readout, include_bias=True, name="dense-readout")


@register_method("cam", "Z_k - b_k: the class activation map of Zhou et al. 2016 (affine heads)")
def _cam_factory(context: MethodContext) -> SaliencyMethod:
    return ReadoutMethod(context.readout, include_bias=False, name="cam")


class CamMethod(SaliencyMethod):
    """Any pytorch-grad-cam ``BaseCAM`` subclass at the model's grid layer."""

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
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self._raw.clear()
        if self.needs_gradients:  # so frozen (requires_grad=False) models still get gradients
            inputs = inputs.clone().requires_grad_(True)
        output = self.cam(inputs, [ClassifierOutputTarget(int(k)) for k in targets.tolist()])
        raw = self._raw[-1] if self._raw else output  # methods bypassing get_cam_image
        return torch.as_tensor(np.asarray(raw, dtype=np.float32))

    def close(self) -> None:
        self.cam.activations_and_grads.release()


class CaptumMethod(SaliencyMethod):
    """A Captum attribution class: layer methods at the grid layer, others on the input.

    Input attributions (``B×C×H×W``) are summed over channels, keeping the sign.
    """

    def __init__(
        self,
        attribution_class: type,
        context: MethodContext,
        name: str | None = None,
        **options: Any,
    ) -> None:
        from captum.attr import GradientAttribution, LayerAttribution

        self.name = name or attribution_class.__name__
        self.needs_gradients = issubclass(attribution_class, GradientAttribution)
        from .captum import DenseReadoutAttribution

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
        if self.needs_gradients:
            inputs = inputs.clone().requires_grad_(True)
        maps = self.method.attribute(inputs, target=targets.to(inputs.device), **self.options)
        if isinstance(maps, tuple):
            maps = maps[0]
        return maps.detach().sum(dim=1)


def _grad_cam_classes() -> dict[str, tuple[str, str]]:
    return {
        "gradcam": ("GradCAM", "Selvaraju et al. 2017: mean-gradient channel weights"),
        "hirescam": (
            "HiResCAM",
            "Draelos & Carin 2020: gradient x activation, summed over channels",
        ),
        "gradcam++": ("GradCAMPlusPlus", "Chattopadhay et al. 2018: second-order channel weights"),
        "xgradcam": ("XGradCAM", "Fu et al. 2020: axiom-based channel weights"),
        "layercam": ("LayerCAM", "Jiang et al. 2021: ReLU(gradient) x activation"),
        "eigencam": (
            "EigenCAM",
            "Muhammad & Yeasin 2020: first principal component (class-agnostic)",
        ),
        "eigengradcam": ("EigenGradCAM", "first principal component of gradient x activation"),
        "scorecam": ("ScoreCAM", "Wang et al. 2020: one forward pass per channel (slow)"),
        "ablationcam": (
            "AblationCAM",
            "Desai & Ramaswamy 2020: one forward pass per channel (slow)",
        ),
    }


def _register_grad_cam() -> None:
    for key, (class_name, description) in _grad_cam_classes().items():

        def factory(
            context: MethodContext, _class_name: str = class_name, _key: str = key
        ) -> SaliencyMethod:
            import pytorch_grad_cam

            return CamMethod(
                getattr(pytorch_grad_cam, _class_name), context, name=_key, **context.options
            )

        register_method(key, f"pytorch-grad-cam {class_name}: {description}")(factory)


_register_grad_cam()


@register_method(
    "dense-readout-cam",
    "pytorch-grad-cam path of the readout (DenseReadoutCAM; same raw map as dense-readout)",
)
def _readout_cam_factory(context: MethodContext) -> SaliencyMethod:
    from .gradcam import DenseReadoutCAM

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


# -- resolving a method spec ------------------------------------------------------------------

MethodSpec = str | type | SaliencyMethod | Callable[[Tensor, Tensor], Tensor] | tuple[str, Any]


def resolve_method(spec: MethodSpec, context: MethodContext) -> SaliencyMethod:
    """Turn a name, class, callable or ``(label, spec)`` pair into a ready method."""
    check_method_spec(spec)
    label: str | None = None
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        label, spec = spec
    if isinstance(spec, str):
        method = _METHODS[_key(spec)].factory(context)
    elif isinstance(spec, type):
        method = _from_class(spec, context)
    elif isinstance(spec, SaliencyMethod):
        method = spec
    elif callable(spec):
        method = _CallableMethod(spec)
    else:
        raise InputError(f"Cannot use {spec!r} as a method: give a name, a class or a callable.")
    if label is not None:
        method.name = label
    return method


def check_method_spec(spec: MethodSpec) -> None:
    """Raise :class:`InputError` now for a spec that can never be a method (unknown name, wrong class)."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        spec = spec[1]
    if isinstance(spec, str):
        if _key(spec) not in _METHODS:
            raise InputError(
                f"Unknown method {spec!r}. Registered: {', '.join(sorted(_METHODS))}. Pass a "
                "pytorch-grad-cam BaseCAM subclass or a Captum attribution class, or "
                "register a name with dense_readout.compare.register_method."
            )
    elif isinstance(spec, type):
        if not any(issubclass(spec, base) for base in _method_base_classes()):
            raise InputError(
                f"{spec.__name__} is neither a pytorch-grad-cam BaseCAM subclass nor a Captum "
                "Attribution subclass; wrap it in a SaliencyMethod or register a factory."
            )
    elif not callable(spec):
        raise InputError(f"Cannot use {spec!r} as a method: give a name, a class or a callable.")


def _method_base_classes() -> tuple:
    bases: list = [SaliencyMethod]
    try:
        from pytorch_grad_cam.base_cam import BaseCAM

        bases.append(BaseCAM)
    except ImportError:  # pragma: no cover - optional extra
        pass
    try:
        from captum.attr import Attribution

        bases.append(Attribution)
    except ImportError:  # pragma: no cover - optional extra
        pass
    return tuple(bases)


def _from_class(spec: type, context: MethodContext) -> SaliencyMethod:
    try:
        from pytorch_grad_cam.base_cam import BaseCAM
    except ImportError:  # pragma: no cover - optional extra
        BaseCAM = ()  # type: ignore[assignment]
    try:
        from captum.attr import Attribution
    except ImportError:  # pragma: no cover - optional extra
        Attribution = ()  # type: ignore[assignment]
    if BaseCAM and issubclass(spec, BaseCAM):
        from .gradcam import DenseReadoutCAM

        if issubclass(spec, DenseReadoutCAM):
            options = {"readout": context.readout, **context.options}
            method = CamMethod(spec, context, **options)
            method.classes_per_call = context.readout.num_classes
            return method
        return CamMethod(spec, context, **context.options)
    if Attribution and issubclass(spec, Attribution):
        return CaptumMethod(spec, context, **context.options)
    if issubclass(spec, SaliencyMethod):
        return spec()
    raise InputError(
        f"{spec.__name__} is neither a pytorch-grad-cam BaseCAM subclass nor a Captum "
        "Attribution subclass; wrap it in a SaliencyMethod or register a factory."
    )


class _CallableMethod(SaliencyMethod):
    def __init__(self, function: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)
        self.needs_gradients = bool(getattr(function, "needs_gradients", False))

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return torch.as_tensor(self.function(inputs, targets))


# -- post-processing ----------------------------------------------------------------------------

_SIGNS: dict[str, Callable[[Tensor], Tensor]] = {
    "positive": lambda maps: maps.clamp(min=0),
    "absolute": torch.abs,
    "all": lambda maps: maps,
}


def postprocess(raw: Tensor, size: tuple[int, int], sign: str = "positive") -> Tensor:
    """The common post-processing: sign handling → bilinear resize → min–max per image.

    Example:
        >>> import torch
        >>> from dense_readout.compare import postprocess
        >>> maps = postprocess(torch.tensor([[[-1.0, 2.0], [0.0, 4.0]]]), (4, 4))
        >>> tuple(maps.shape), float(maps.min()), float(maps.max())
        ((1, 4, 4), 0.0, 1.0)
    """
    if sign not in _SIGNS:
        raise InputError(f"sign must be one of {sorted(_SIGNS)}, got {sign!r}.")
    maps = torch.as_tensor(raw).detach().float().cpu()
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise InputError(f"A method returned maps of shape {tuple(maps.shape)}; expected B×h×w.")
    maps = _SIGNS[sign](maps)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(
            maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp(min=1e-12), torch.zeros_like(maps))


# -- results ----------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """One method's outcome: post-processed ``maps`` (``B×H×W`` in [0, 1]), ``raw`` maps,
    wall ``seconds`` (median over repeats), and ``error`` if it failed."""

    name: str
    maps: Tensor | None = None
    raw: Tensor | None = None
    seconds: float = float("nan")
    times: list[float] = field(default_factory=list)
    classes_per_call: int | None = 1
    needs_gradients: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        inputs: the batch (CPU), ``targets``: the class per image (``B``),
        results: ``{method: MethodResult}`` in the order given,
        settings: the post-processing used (for reports),
        images: ``B×H×W×3`` RGB in [0, 1] for display.
    """

    inputs: Tensor
    targets: Tensor
    results: dict[str, MethodResult]
    settings: dict[str, Any]
    images: np.ndarray

    @property
    def maps(self) -> dict[str, Tensor]:
        """Post-processed maps of the methods that ran."""
        return {name: r.maps for name, r in self.results.items() if r.ok and r.maps is not None}

    @property
    def seconds(self) -> dict[str, float]:
        """Wall time per method (median over repeats), seconds for the whole batch."""
        return {name: r.seconds for name, r in self.results.items() if r.ok}

    @property
    def failures(self) -> dict[str, str]:
        """Methods that failed on this model, with the reason."""
        return {name: r.error for name, r in self.results.items() if not r.ok}  # type: ignore[misc]

    def table(self, reference_seconds: float | None = None) -> str:
        """A markdown table: method, seconds, ratio to ``reference_seconds``, classes per call."""
        lines = [
            "| method | seconds (batch) | × reference | classes per call | status |",
            "|---|---|---|---|---|",
        ]
        for name, r in self.results.items():
            ratio = f"{r.seconds / reference_seconds:.1f}" if reference_seconds and r.ok else "—"
            seconds = f"{r.seconds:.3f}" if r.ok else "—"
            status = "ok" if r.ok else f"failed: {r.error}"
            lines.append(
                f"| {name} | {seconds} | {ratio} | {r.classes_per_call or '—'} | {status} |"
            )
        return "\n".join(lines)

    def figure(
        self,
        class_names: Sequence[str] | None = None,
        max_images: int | None = None,
        panel_size: float = 2.2,
        cmap: str = "jet",
        alpha: float = 0.5,
        show_seconds: bool = False,
    ):
        """Side-by-side figure: one row per image, the image then one panel per method.

        ``show_seconds`` adds each method's wall time (of this one call, no warm-up)
        to its title; for speed claims use ``benchmarks/compare_speed.py``.
        """
        import matplotlib as mpl

        mpl.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = list(self.maps)
        count = (
            self.images.shape[0] if max_images is None else min(max_images, self.images.shape[0])
        )
        columns = 1 + len(names)
        fig, axes = plt.subplots(
            count, columns, figsize=(panel_size * columns, panel_size * count + 0.3), squeeze=False
        )
        for row in range(count):
            target = int(self.targets[row])
            label = class_names[target] if class_names is not None else f"class {target}"
            axes[row, 0].imshow(self.images[row])
            axes[row, 0].set_title(label[:28], fontsize=8)
            for column, name in enumerate(names, start=1):
                axes[row, column].imshow(self.images[row])
                axes[row, column].imshow(
                    self.maps[name][row].numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1
                )
                title = name
                if show_seconds and row == 0:
                    title = f"{name}\n{self.results[name].seconds * 1000:.0f} ms"
                axes[row, column].set_title(title, fontsize=8)
        for axis in axes.ravel():
            axis.set_axis_off()
        fig.tight_layout()
        return fig

    def save_figure(self, path: str, **kwargs: Any) -> None:
        """Write :meth:`figure` to ``path`` (PNG/PDF/SVG by extension)."""
        import matplotlib.pyplot as plt

        fig = self.figure(**kwargs)
        fig.savefig(path, dpi=110)
        plt.close(fig)


# -- compare ------------------------------------------------------------------------------------


def compare(
    model: nn.Module,
    inputs: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    methods: Sequence[MethodSpec] = ("dense-readout", "cam", "gradcam", "hirescam", "layergradcam"),
    *,
    size: tuple[int, int] | None = None,
    sign: str = "positive",
    repeats: int = 1,
    errors: str = "report",
    display: Callable[[Tensor], Tensor] | Tensor | np.ndarray | None = None,
    readout: DenseReadout | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> Comparison:
    """Run the dense readout and other saliency methods on the same inputs and targets.

    Args:
        model: the classifier (eval mode).
        inputs: ``B×3×H×W`` normalised batch.
        targets: one class per image (int, sequence, tensor); ``None``: each image's
            top-1 class (one extra, untimed forward pass).
        methods: names (:func:`available_methods`), BaseCAM / Captum classes,
            :class:`SaliencyMethod` objects, callables ``(inputs, targets) -> B×h×w``
            or ``(label, spec)`` pairs.
        size: output size of the maps (default: the input's ``H×W``).
        sign: ``"positive"`` (ReLU before normalising), ``"absolute"`` or ``"all"``.
        repeats: time each method this many times and report the median.
        errors: ``"report"`` (a failing method is recorded in ``failures``) or
            ``"raise"``.
        display: for the figure: a function mapping the batch to RGB in [0, 1]
            (e.g. ``Preprocess.denormalize``), or the RGB images themselves
            (``B×H×W×3`` or ``B×3×H×W``); default: per-image min–max of ``inputs``.
        readout: a ready :class:`~dense_readout.DenseReadout` (reuse it across calls).
        options: per-method keyword arguments, e.g. ``{"scorecam": {"batch_size": 64}}``.

    Returns:
        a :class:`Comparison` (maps, seconds, failures, ``figure()``, ``table()``).
    """
    if errors not in ("report", "raise"):
        raise InputError(f"errors must be 'report' or 'raise', got {errors!r}.")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}.")
    if sign not in _SIGNS:
        raise InputError(f"sign must be one of {sorted(_SIGNS)}, got {sign!r}.")
    if not methods:
        raise InputError("Give at least one method, e.g. methods=['dense-readout', 'gradcam'].")
    readout = readout if readout is not None else DenseReadout(model)
    check_images(inputs, channels=readout.adapter.in_channels)
    check_eval_mode(model, "the comparison")
    if targets is None:
        with torch.no_grad():
            targets = readout(inputs).logits.argmax(dim=1)
    index = check_targets(targets, inputs.shape[0], readout.num_classes)
    out_size = tuple(size) if size is not None else (int(inputs.shape[-2]), int(inputs.shape[-1]))
    options = {_key(k): v for k, v in (options or {}).items()}

    for spec in methods:  # fail fast, before running any (possibly slow) method
        check_method_spec(spec)
    results: dict[str, MethodResult] = {}
    for spec in methods:
        name = _spec_name(spec)
        context = MethodContext(model, readout, dict(options.get(_key(name), {})))
        result = _run_one(spec, name, context, inputs, index, out_size, sign, repeats)
        if result.error is not None and errors == "raise":
            raise DenseReadoutError(f"Method {name!r} failed: {result.error}")
        key, copy = result.name, 2
        while key in results:
            key, copy = f"{result.name}#{copy}", copy + 1
        results[key] = result

    settings = {
        "sign": sign,
        "resize": f"bilinear to {out_size[0]}x{out_size[1]} (align_corners=False)",
        "normalisation": "min-max per image to [0, 1] (constant map -> 0)",
        "raw maps": "signed, native resolution; pytorch-grad-cam maps taken before its ReLU/min-max",
        "timing": f"wall seconds for the batch of {inputs.shape[0]}, median of {repeats}",
        "threads": torch.get_num_threads(),
    }
    return Comparison(
        inputs.detach().cpu(), index, results, settings, _display_images(inputs, display)
    )


def _spec_name(spec: MethodSpec) -> str:
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0]
    if isinstance(spec, str):
        return _key(spec)
    if isinstance(spec, type):
        return spec.__name__
    return getattr(spec, "name", None) or getattr(spec, "__name__", type(spec).__name__)


def _run_one(
    spec: MethodSpec,
    name: str,
    context: MethodContext,
    inputs: Tensor,
    targets: Tensor,
    size: tuple[int, int],
    sign: str,
    repeats: int,
) -> MethodResult:
    try:
        method = resolve_method(spec, context)
    except Exception as error:
        return MethodResult(name=name, error=f"{type(error).__name__}: {error}")
    outcome = MethodResult(
        name=method.name or name,
        classes_per_call=method.classes_per_call,
        needs_gradients=method.needs_gradients,
    )
    try:
        if method.needs_gradients and torch.is_inference_mode_enabled():
            raise GradientsUnavailableError(
                f"{outcome.name} needs gradients, but compare() runs inside torch.inference_mode(), "
                "where autograd cannot record. Call compare() outside inference_mode (under "
                "torch.no_grad() it re-enables gradients for such methods), or use gradient-free "
                "methods such as 'dense-readout', 'cam', 'eigencam', 'scorecam', 'ablationcam'."
            )
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.enable_grad() if method.needs_gradients else torch.no_grad():
                raw = method(inputs, targets)
            outcome.times.append(time.perf_counter() - start)
        outcome.raw = torch.as_tensor(raw).detach().float().cpu()
        if outcome.raw.dim() == 4 and outcome.raw.shape[1] == 1:
            outcome.raw = outcome.raw[:, 0]
        outcome.maps = postprocess(outcome.raw, size, sign)
        outcome.seconds = statistics.median(outcome.times)
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"
        outcome.maps = None
    finally:
        method.close()
    return outcome


def _display_images(inputs: Tensor, display: Any) -> np.ndarray:
    if display is None:
        images = inputs.detach().float().cpu()
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp(min=1e-12)
        images = (images - low) / span
    elif callable(display):
        images = torch.as_tensor(display(inputs.detach().cpu())).float()
    else:
        images = torch.as_tensor(np.asarray(display)).float()
    if images.dim() == 4 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise InputError(f"display images must be B×H×W×3 or B×3×H×W, got {tuple(images.shape)}.")
    return images.clamp(0, 1).numpy()
