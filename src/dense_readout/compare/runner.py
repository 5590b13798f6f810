""":func:`compare`: run every method on the same batch and targets, time it, post-process it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._outputs import logits_only
from ..errors import DenseReadoutError, GradientsUnavailableError, InputError
from ..readout import DenseReadout
from ..validation import check_eval_mode, check_images, check_targets
from .methods import MethodContext, SaliencyMethod, method_key
from .postprocessing import check_sign, display_images, postprocess
from .results import Comparison, MethodResult
from .specs import MethodSpec, check_method_spec, resolve_method, spec_name

__all__ = ["compare"]

DEFAULT_METHODS = ("dense-readout", "cam", "gradcam", "hirescam", "layergradcam")


def compare(
    model: nn.Module,
    inputs: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    methods: Sequence[MethodSpec] = DEFAULT_METHODS,
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

    Example:
        >>> import timm, torch
        >>> from dense_readout.compare import compare
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> result = compare(model, torch.randn(2, 3, 64, 64), [0, 2], methods=["dense-readout", "cam", "hirescam"])
        >>> sorted(result.maps), tuple(result.maps["cam"].shape), result.failures
        (['cam', 'dense-readout', 'hirescam'], (2, 64, 64), {})
        >>> # on a GAP + linear model the CAM (Z - b) and HiResCAM agree after normalisation
        >>> torch.allclose(result.maps["cam"], result.maps["hirescam"], atol=1e-4)
        True
    """
    _check_arguments(methods, sign, repeats, errors)
    readout = readout if readout is not None else DenseReadout(model)
    check_images(inputs, channels=readout.adapter.in_channels)
    check_eval_mode(model, "the comparison")
    batch = _Batch(
        inputs,
        _resolve_targets(readout, inputs, targets),
        _output_size(inputs, size),
        sign,
        repeats,
    )
    per_method = {method_key(k): v for k, v in (options or {}).items()}
    for spec in methods:  # fail fast, before running any (possibly slow) method
        check_method_spec(spec)
    results: dict[str, MethodResult] = {}
    for spec in methods:
        name = spec_name(spec)
        options = dict(per_method.get(method_key(name), {}))
        context = MethodContext(logits_only(model), readout, options)  # HF: logits tensor
        result = _run_one(spec, name, context, batch)
        if result.error is not None and errors == "raise":
            raise DenseReadoutError(f"Method {name!r} failed: {result.error}")
        results[_unique_key(result.name, results)] = result
    return Comparison(
        inputs.detach().cpu(),
        batch.targets,
        results,
        _settings(batch),
        display_images(inputs, display),
    )


@dataclass(frozen=True)
class _Batch:
    """What every method runs on, and how its maps are post-processed and timed."""

    inputs: Tensor
    targets: Tensor
    size: tuple[int, int]
    sign: str
    repeats: int


def _check_arguments(methods: Sequence[MethodSpec], sign: str, repeats: int, errors: str) -> None:
    if errors not in ("report", "raise"):
        raise InputError(f"errors must be 'report' or 'raise', got {errors!r}.")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}.")
    check_sign(sign)
    if not methods:
        raise InputError("Give at least one method, e.g. methods=['dense-readout', 'gradcam'].")


def _resolve_targets(
    readout: DenseReadout, inputs: Tensor, targets: int | Sequence[int] | Tensor | None
) -> Tensor:
    """One class index per image; ``None``: each image's top-1 class (untimed)."""
    if targets is None:
        with torch.no_grad():
            targets = readout(inputs).logits.argmax(dim=1)
    return check_targets(targets, inputs.shape[0], readout.num_classes)


def _output_size(inputs: Tensor, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        height, width = size
        return (height, width)
    return (int(inputs.shape[-2]), int(inputs.shape[-1]))


def _unique_key(name: str, taken: dict[str, MethodResult]) -> str:
    """``name``, or ``name#2``, ``name#3`` … when a method of that name ran already."""
    key, copy = name, 2
    while key in taken:
        key, copy = f"{name}#{copy}", copy + 1
    return key


def _settings(batch: _Batch) -> dict[str, Any]:
    height, width = batch.size
    return {
        "sign": batch.sign,
        "resize": f"bilinear to {height}x{width} (align_corners=False)",
        "normalisation": "min-max per image to [0, 1] (constant map -> 0)",
        "raw maps": "signed, native resolution; pytorch-grad-cam maps taken before its ReLU/min-max",
        "timing": f"wall seconds for the batch of {batch.inputs.shape[0]}, median of {batch.repeats}",
        "threads": torch.get_num_threads(),
    }


def _run_one(spec: MethodSpec, name: str, context: MethodContext, batch: _Batch) -> MethodResult:
    """Resolve, run (``batch.repeats`` times) and post-process one method; errors are recorded."""
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
        _check_gradients_available(method, outcome.name)
        raw = _timed_runs(method, batch, outcome.times)
        outcome.raw = torch.as_tensor(raw).detach().float().cpu()
        if outcome.raw.dim() == 4 and outcome.raw.shape[1] == 1:
            outcome.raw = outcome.raw[:, 0]
        outcome.maps = postprocess(outcome.raw, batch.size, batch.sign)
        outcome.seconds = statistics.median(outcome.times)
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"
        outcome.maps = None
    finally:
        method.close()
    return outcome


def _check_gradients_available(method: SaliencyMethod, name: str) -> None:
    if method.needs_gradients and torch.is_inference_mode_enabled():
        raise GradientsUnavailableError(
            f"{name} needs gradients, but compare() runs inside torch.inference_mode(), "
            "where autograd cannot record. Call compare() outside inference_mode (under "
            "torch.no_grad() it re-enables gradients for such methods), or use gradient-free "
            "methods such as 'dense-readout', 'cam', 'eigencam', 'scorecam', 'ablationcam'."
        )


def _timed_runs(method: SaliencyMethod, batch: _Batch, times: list[float]) -> Tensor:
    """Call ``method`` ``batch.repeats`` times, appending each wall time; the last raw maps."""
    for _ in range(batch.repeats):
        start = time.perf_counter()
        with torch.enable_grad() if method.needs_gradients else torch.no_grad():
            raw = method(batch.inputs, batch.targets)
        times.append(time.perf_counter() - start)
    return raw
