"""Image preprocessing: resize the shorter side, centre-crop, normalise.

This is the paper's protocol (A.1: shorter side 256, centre crop 224) with the
model's own mean/std by default; :meth:`Preprocess.from_model` reads them from
timm's data config, or from a Hugging Face model's saved image processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ._outputs import is_transformers_model
from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "hf_data_config"]


@dataclass(frozen=True)
class Preprocess:
    """Resize shorter side to ``resize``, centre-crop ``crop``, scale to [0,1], normalise.

    Example:
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> tensor = Preprocess()(Image.new("RGB", (300, 400)))
        >>> tuple(tensor.shape)
        (3, 224, 224)
    """

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    resize: int = 256
    crop: int = 224
    interpolation: str = "bicubic"

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        normalization: str = "model",
        crop: int | None = None,
        crop_pct: float | None = None,
    ) -> Preprocess:
        """Preprocessing from a timm model's config or a Hugging Face image processor.

        The processor is read as :func:`hf_data_config` does.

        ``normalization='imagenet'`` switches to ImageNet mean/std (what the paper's
        text states). ``crop_pct`` overrides the config's crop fraction: 0.875 is the
        paper's 256→224 protocol, 1.0 resizes the shorter side to the crop size
        (keeps the most of the photo; used for explanations).
        """
        cfg = getattr(model, "pretrained_cfg", None) or hf_data_config(model) or {}
        size = crop or int(cfg.get("input_size", (3, 224, 224))[-1])
        crop_pct = float(crop_pct or cfg.get("crop_pct", 0.875) or 0.875)
        if normalization == "model":
            mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        elif normalization == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise InputError(f"normalization must be 'model' or 'imagenet', got {normalization!r}.")
        return cls(
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            resize=round(size / crop_pct),
            crop=size,
            interpolation=str(cfg.get("interpolation", "bicubic")),
        )

    def geometry(self, image: Image.Image) -> Image.Image:
        """Resize and crop only (no normalisation): the RGB picture the model sees."""
        return self.geometry_of(image, self.interpolation)

    def geometry_of(self, image: Image.Image, interpolation: str) -> Image.Image:
        """Resize+crop with a given interpolation ('nearest' for masks)."""
        width, height = image.size
        scale = self.resize / min(width, height)
        new_size = (max(self.crop, round(width * scale)), max(self.crop, round(height * scale)))
        resized = image.resize(
            new_size, _INTERPOLATION.get(interpolation, Image.Resampling.BICUBIC)
        )
        # Offsets round the half pixel down (floor), on purpose and tested: torchvision's
        # center_crop rounds half to even, which differs by one pixel when the margin is
        # 3 (mod 4). Changing it would move the committed benchmark numbers.
        left = (new_size[0] - self.crop) // 2
        top = (new_size[1] - self.crop) // 2
        return resized.crop((left, top, left + self.crop, top + self.crop))

    def normalize(self, image: Image.Image) -> Tensor:
        """``3×H×W`` tensor of ``image`` in [0, 1], normalised by mean and std."""
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (tensor - mean) / std

    def denormalize(self, tensor: Tensor) -> Tensor:
        """Inverse of the normalisation: ``3×H×W`` (or ``B×3×H×W``) back to [0, 1]."""
        shape = (3, 1, 1) if tensor.dim() == 3 else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=tensor.device).view(shape)
        std = torch.tensor(self.std, device=tensor.device).view(shape)
        return (tensor * std + mean).clamp(0, 1)

    def __call__(self, image: Image.Image) -> Tensor:
        """The model input ``3×crop×crop`` of a PIL image (geometry, then normalisation)."""
        if not isinstance(image, Image.Image):
            raise InputError(
                f"Preprocess expects a PIL image, got {type(image).__name__}; "
                "load files with dense_readout.load_image(path)."
            )
        return self.normalize(self.geometry(image))


# -- Hugging Face image processors ------------------------------------------------------------
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's resample codes


def hf_data_config(model: object) -> dict[str, Any] | None:
    """A timm-style data config for a ``transformers`` model, else ``None``.

    Keys: ``input_size``, ``crop_pct``, ``mean``, ``std``, ``interpolation``.

    Read from the image processor saved next to the model when it was loaded from a
    directory (``from_pretrained(local_dir)``), or already in the local Hugging Face
    cache for a hub name (``local_files_only``: nothing is downloaded); without one,
    only ``config.image_size`` (and ImageNet mean/std). A processor that resizes to a fixed ``height×width``
    (ViT's) is approximated by resizing the shorter side to it and centre-cropping.
    Nothing imports ``transformers`` unless ``model`` comes from it.

    Example:
        >>> import tempfile, torch
        >>> from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor
        >>> from dense_readout.preprocessing import hf_data_config
        >>> hf_data_config(torch.nn.Linear(2, 2)) is None  # not a transformers model
        True
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8],
        ...         depths=[1])).save_pretrained(folder)
        ...     _ = ViTImageProcessor(size={"height": 96, "width": 96}, image_mean=[0.5] * 3,
        ...         image_std=[0.25] * 3, resample=3).save_pretrained(folder)
        ...     model = ResNetForImageClassification.from_pretrained(folder)
        ...     config = hf_data_config(model)  # read from the saved preprocessor_config.json
        >>> config["input_size"], config["mean"], config["std"], config["interpolation"]
        ((3, 96, 96), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 'bicubic')
    """
    if not is_transformers_model(model):
        return None
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None)
    cfg: dict[str, Any] = {}
    if size:
        side = int(size[-1]) if isinstance(size, (tuple, list)) else int(size)
        cfg = {"input_size": (3, side, side), "crop_pct": 1.0}
    source = str(getattr(model, "name_or_path", "") or "")
    if not source or (
        Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").is_file()
    ):
        return cfg
    from transformers import AutoImageProcessor

    try:  # a local directory, or a hub name already in the local cache; never downloads
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return cfg
    return {**cfg, **_processor_geometry(processor)}


def _side(size: Any) -> int | None:
    """The side of a processor's ``size``: an int, a dict or a ``SizeDict`` (transformers 5)."""
    if isinstance(size, int):
        return size
    for key in ("shortest_edge", "height", "width"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value:
            return int(value)
    return None


def _interpolation(resample: Any) -> str:
    """PIL's resample code (an int) or torchvision's ``InterpolationMode`` as a name."""
    if isinstance(resample, int):
        return _RESAMPLE.get(int(resample), "bilinear")
    value = str(getattr(resample, "value", resample)).lower()
    return value if value in ("nearest", "bilinear", "bicubic") else "bilinear"


def _processor_geometry(processor: Any) -> dict[str, Any]:
    """``input_size``/``crop_pct``/``mean``/``std``/``interpolation`` of an image processor."""
    resize = _side(getattr(processor, "size", None)) or 224
    crop = resize
    if getattr(processor, "do_center_crop", False):
        crop = _side(getattr(processor, "crop_size", None)) or resize
    crop_pct = getattr(processor, "crop_pct", None)  # ConvNeXt's: resize = size / crop_pct
    if crop_pct and crop == resize and resize < 384:
        resize = round(crop / float(crop_pct))
    cfg: dict[str, Any] = {"input_size": (3, crop, crop), "crop_pct": crop / max(resize, crop)}
    if getattr(processor, "do_normalize", True):
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is not None and std is not None:
            cfg["mean"], cfg["std"] = tuple(mean), tuple(std)
    else:
        cfg["mean"], cfg["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    cfg["interpolation"] = _interpolation(getattr(processor, "resample", None))
    return cfg
