"""Video clips and 3-D volumes: loading them and explaining them frame by frame.

* :func:`load_volume`: a folder of frames (sorted by name), a ``.npy`` array, a NIfTI
  file (``.nii``/``.nii.gz``, via ``nibabel``: the ``monai`` extra) or a video file
  (via ``torchvision.io``, which needs PyAV) → a float array ``T×H×W×C`` (``C`` = 3 for
  frames and video, 1 for volumes).
* :func:`volume_tensor`: that array resized and normalised into the model's
  ``1×C×T×H×W`` input.
* :func:`explain_volume`: the readout of one clip or volume, written as a label-grid
  and a heatmap figure per grid frame/slice plus one JSON of every cell's top classes.

Example:
    >>> import numpy as np, tempfile, torch
    >>> from torch import nn
    >>> from dense_readout.volumes import explain_volume, load_volume, volume_tensor
    >>> path = tempfile.mkdtemp() + "/vol.npy"
    >>> np.save(path, np.random.rand(12, 20, 20).astype("float32"))
    >>> volume = load_volume(path)
    >>> volume.shape
    (12, 20, 20, 1)
    >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2), nn.AdaptiveAvgPool3d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2)).eval()
    >>> x = volume_tensor(volume, size=(8, 16, 16))
    >>> tuple(x.shape)
    (1, 1, 8, 16, 16)
    >>> written = explain_volume(net, x, tempfile.mkdtemp(), stem="vol")
    >>> len(written["frames"]), written["json"].name
    (3, 'vol.json')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ImageLoadError, InputError, MissingDependencyError
from .images import load_image

__all__ = ["explain_volume", "load_volume", "volume_tensor"]

_FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def load_volume(path: str | Path) -> np.ndarray:
    """Read a clip or volume as ``T×H×W×C`` float32 (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
        if not frames:
            raise ImageLoadError(f"{path} holds no image frames ({sorted(_FRAME_SUFFIXES)}).")
        return np.stack([np.asarray(load_image(p), np.float32) / 255 for p in frames])
    if not path.exists():
        raise ImageLoadError(f"{path} does not exist.")
    name = path.name.lower()
    if name.endswith(".npy"):
        array = np.load(path).astype(np.float32)
    elif name.endswith((".nii", ".nii.gz")):
        array = _nifti(path)
    elif path.suffix.lower() in _VIDEO_SUFFIXES:
        return _video(path)
    else:
        raise ImageLoadError(
            f"{path}: not a clip or volume (a folder of frames, .npy, .nii/.nii.gz or a video)."
        )
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or not np.isfinite(array).all():
        raise ImageLoadError(f"{path}: expected a finite T×H×W(×C) array, got {array.shape}.")
    return array


def _nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError as error:
        raise MissingDependencyError(
            "Reading NIfTI volumes needs nibabel: pip install 'dense-readout[monai]'."
        ) from error
    # NIfTI stores x, y, z: slices along z become the first axis (D×H×W)
    image: Any = nibabel.load(str(path))  # a Nifti1Image (the stubs say FileBasedImage)
    data = np.asarray(image.get_fdata(), np.float32)
    return np.moveaxis(data, 2, 0) if data.ndim == 3 else data


def _video(path: Path) -> np.ndarray:
    try:
        from torchvision.io import read_video

        frames, _, _ = read_video(str(path), pts_unit="sec", output_format="THWC")
    except (ImportError, RuntimeError) as error:
        raise MissingDependencyError(
            f"Reading {path.suffix} video needs PyAV (pip install av); or pass a folder of "
            f"frames. ({error})"
        ) from error
    return frames.numpy().astype(np.float32) / 255


def volume_tensor(
    volume: np.ndarray,
    size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """``T×H×W×C`` → the model input ``1×C×T×H×W``.

    Resized to ``size=(T, H, W)`` (trilinear) and normalised per channel with
    ``mean``/``std`` (default: the volume to zero mean, unit std).
    """
    x = torch.from_numpy(np.ascontiguousarray(volume)).float().permute(3, 0, 1, 2)[None]
    if size is not None:
        if len(size) != 3:
            raise InputError(f"size must be (T, H, W), got {tuple(size)}.")
        x = F.interpolate(
            x, size=tuple(int(n) for n in size), mode="trilinear", align_corners=False
        )
    if mean is None or std is None:
        return (x - x.mean()) / x.std().clamp(min=1e-6)
    shape = (1, -1, 1, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def explain_volume(
    model: nn.Module,
    inputs: Tensor,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    stem: str = "clip",
    target: int | None = None,
    topk: int = 3,
) -> dict[str, Any]:
    """Read out one clip/volume (``1×C×T×H×W``) and write per-frame figures and a JSON.

    For every frame (slice) ``t`` of the readout grid: ``{stem}_t{t}_labels.png`` and
    ``{stem}_t{t}_heatmap.png`` (the class ``target``, default the clip's top-1), over
    the input frame at the centre of that grid slice; and ``{stem}.json`` with the
    clip's top classes, exactness and each cell's top-``topk`` classes, ``[t][u][v]``.
    Returns ``{"json": path, "frames": [(labels_png, heatmap_png), ...]}``.
    """
    from .readout import DenseReadout
    from .viz import readout_figures, save_png

    result = DenseReadout(model)(inputs)
    if result.spatial_dims != 3 or result.batch_size != 1:
        raise InputError("explain_volume takes one clip or volume, 1×C×T×H×W.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    steps = result.grid_size[0]
    for t in range(steps):
        centre = min(inputs.shape[2] - 1, int((t + 0.5) * inputs.shape[2] / steps))
        picture = _frame_picture(inputs[0, :, centre])
        figures = readout_figures(
            result.frame(t), picture, class_names, target=target, name=f"{stem} t={t}"
        )
        paths = (out / f"{stem}_t{t}_labels.png", out / f"{stem}_t{t}_heatmap.png")
        for figure, path in zip(figures, paths, strict=True):
            save_png(figure, path)
        frames.append(paths)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(_summary(result, class_names, topk), indent=1))
    return {"json": json_path, "frames": frames}


def _frame_picture(frame: Tensor) -> np.ndarray:
    """One ``C×H×W`` input frame as an RGB uint8 picture (min–max, gray replicated)."""
    picture = frame.detach().float()
    picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp(min=1e-6)
    if picture.shape[0] != 3:
        picture = picture[:1].expand(3, -1, -1)
    return (picture.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _summary(result: Any, class_names: Sequence[str] | None, topk: int) -> dict[str, Any]:
    def name(k: int) -> str:
        return class_names[k] if class_names is not None else str(k)

    k = min(topk, result.num_classes)
    values, classes = result.topk(k, probabilities=True)
    cells = [
        [
            [
                [[name(int(c)), round(float(p), 4)] for c, p in zip(cv, pv, strict=True)]
                for cv, pv in zip(crow.T, prow.T, strict=True)
            ]
            for crow, prow in zip(ct.permute(1, 0, 2), pt.permute(1, 0, 2), strict=True)
        ]
        for ct, pt in zip(
            classes[0].permute(1, 0, 2, 3), values[0].permute(1, 0, 2, 3), strict=True
        )
    ]
    probs = torch.softmax(result.logits[0].detach().float(), dim=0)
    top = probs.topk(k)
    return {
        "grid": list(result.grid_size),
        "input_size": list(result.input_size),
        "exact": result.exact,
        "exactness_note": result.exactness_note,
        "residual": float(result.residual[0]),
        "top_classes": [
            [name(int(c)), float(p)] for c, p in zip(top.indices, top.values, strict=True)
        ],
        "cells_topk": cells,
    }
