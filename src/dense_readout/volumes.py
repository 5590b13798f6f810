"""Video clips and 3-D volumes: loading them and explaining them frame by frame.

* :func:`load_volume`: a folder of frames (sorted by name), a ``.npy`` array, a NIfTI
  file (``.nii``/``.nii.gz``, via ``nibabel``: the ``monai`` extra) or a video file
  (via ``torchvision.io``, which needs PyAV) → a float array ``T×H×W×C`` (``C`` = 3 for
  frames and video, 1 for volumes).
* :func:`volume_tensor`: that array resized and normalised into the model's
  ``1×C×T×H×W`` input.
* :func:`explain_volume`: the readout of one clip or volume, written as a label-grid
  and a heatmap figure per grid frame/slice plus one JSON of every cell's top classes
  and (optionally) :func:`volume_page`, the interactive page with a frame slider;
  ``dense-readout explain --model torchvision:r3d_18 CLIP`` runs it from the command line.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImageLoadError, InputError, MissingDependencyError

if TYPE_CHECKING:  # torch on use: the command line checks clip paths without it
    from torch import Tensor, nn

__all__ = [
    "clip_problem",
    "explain_volume",
    "grid_pictures",
    "is_clip_file",
    "load_volume",
    "volume_page",
    "volume_tensor",
]

_FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
_CLIPS = "a folder of frames, .npy, .nii/.nii.gz or a video file"


def is_clip_file(path: str | Path) -> bool:
    """Whether ``path`` is named as a clip or volume file (.npy, NIfTI, a video).

    Example:
        >>> is_clip_file("brain.nii.gz"), is_clip_file("walk.MP4"), is_clip_file("cat.jpg")
        (True, True, False)
    """
    name = Path(path).name.lower()
    return name.endswith((".npy", ".nii", ".nii.gz")) or Path(name).suffix in _VIDEO_SUFFIXES


def clip_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a clip or volume, told without reading it (or None).

    Example:
        >>> clip_problem("no/such/clip.npy")
        'no/such/clip.npy: no such file or folder.'
        >>> clip_problem("cat.jpg") is None
        False
    """
    folder = Path(path)
    if folder.is_dir():
        if not any(p.suffix.lower() in _FRAME_SUFFIXES for p in folder.iterdir()):
            return f"{path} holds no image frames ({sorted(_FRAME_SUFFIXES)})."
        return None
    if not folder.exists():
        return f"{path}: no such file or folder."
    if not is_clip_file(path):
        return f"{path}: not a clip or volume ({_CLIPS})."
    return None


def load_volume(path: str | Path) -> np.ndarray:
    """Read a clip or volume as ``T×H×W×C`` float32 (see the module docstring).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from dense_readout.volumes import load_volume
        >>> tmp = tempfile.TemporaryDirectory()
        >>> os.mkdir(f"{tmp.name}/frames")
        >>> for t in (2, 0, 1):  # frames are read in name order
        ...     Image.new("RGB", (20, 10), (100 * t, 0, 0)).save(f"{tmp.name}/frames/f{t}.png")
        >>> clip = load_volume(f"{tmp.name}/frames")
        >>> clip.shape, clip.dtype, [round(float(v), 3) for v in clip[:, 0, 0, 0]]  # /255
        ((3, 10, 20, 3), dtype('float32'), [0.0, 0.392, 0.784])
        >>> np.save(f"{tmp.name}/ct.npy", np.zeros((5, 8, 8), np.int16))  # D×H×W: one channel
        >>> load_volume(f"{tmp.name}/ct.npy").shape
        (5, 8, 8, 1)
        >>> tmp.cleanup()
    """
    from .images import load_image

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
        raise ImageLoadError(f"{path}: not a clip or volume ({_CLIPS}).")
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

    Example:
        >>> import numpy as np
        >>> from dense_readout.volumes import volume_tensor
        >>> volume = np.random.default_rng(0).random((6, 10, 12, 3), dtype=np.float32)
        >>> x = volume_tensor(volume, size=(4, 8, 8))
        >>> tuple(x.shape), round(float(x.mean()), 4), round(float(x.std()), 4)
        ((1, 3, 4, 8, 8), 0.0, 1.0)
        >>> y = volume_tensor(volume, mean=(0.5,) * 3, std=(0.25,) * 3)  # per channel, no resize
        >>> tuple(y.shape), bool(np.allclose(y[0, 1, 2].numpy(), (volume[2, ..., 1] - 0.5) / 0.25))
        ((1, 3, 6, 10, 12), True)
    """
    import torch
    import torch.nn.functional as F

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
    pngs: bool = True,
    page: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read out one clip/volume (``1×C×T×H×W``) and write per-frame figures and a JSON.

    For every frame (slice) ``t`` of the readout grid: ``{stem}_t{t}_labels.png`` and
    ``{stem}_t{t}_heatmap.png`` (the class ``target``, default the clip's top-1), over
    the input frame at the centre of that grid slice (none with ``pngs=False``); and
    ``{stem}.json`` with the clip's top classes, exactness and each cell's
    top-``topk`` classes, ``[t][u][v]``. With ``page`` (the options of
    :func:`volume_page`, ``{}`` for none) also ``{stem}.html``, the interactive page
    with a slider over the grid's frames. Returns ``{"json": path, "frames":
    [(labels_png, heatmap_png), ...], "page": path or None, "result": the readout}``.

    Example:
        >>> import json, tempfile, torch
        >>> from pathlib import Path
        >>> from torch import nn
        >>> from dense_readout.volumes import explain_volume
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2), nn.AdaptiveAvgPool3d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.randn(1, 1, 8, 16, 16)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> written = explain_volume(net, x, tmp.name, ["cat", "dog"], stem="vol", topk=1,
        ...     pngs=False, page={})  # pngs=True adds vol_t{t}_labels/heatmap.png per frame
        >>> sorted(p.name for p in Path(tmp.name).iterdir()), written["frames"]
        (['vol.html', 'vol.json'], [])
        >>> report = json.loads(written["json"].read_text())
        >>> report["grid"], report["exact"]  # 3 grid frames of 7×7 cells; pooling + affine
        ([3, 7, 7], True)
        >>> with torch.no_grad():
        ...     top = ["cat", "dog"][int(net(x).argmax())]
        >>> report["top_classes"][0][0] == top, len(report["cells_topk"][2][6][6])
        (True, 1)
        >>> tmp.cleanup()
    """
    from ._atomic import write_atomic
    from .readout import DenseReadout
    from .viz import readout_figures, save_png

    result = DenseReadout(model)(inputs)
    if result.spatial_dims != 3 or result.batch_size != 1:
        raise InputError("explain_volume takes one clip or volume, 1×C×T×H×W.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for t, (_, picture) in enumerate(grid_pictures(inputs, result.grid_size[0]) if pngs else ()):
        figures = readout_figures(
            result.frame(t), picture, class_names, target=target, name=f"{stem} t={t}"
        )
        paths = (out / f"{stem}_t{t}_labels.png", out / f"{stem}_t{t}_heatmap.png")
        for figure, path in zip(figures, paths, strict=True):
            save_png(figure, path)
        frames.append(paths)
    json_path = out / f"{stem}.json"
    write_atomic(json_path, json.dumps(_summary(result, class_names, topk), indent=1))
    page_path = None
    if page is not None:
        page_path = write_atomic(
            out / f"{stem}.html",
            volume_page(result, inputs, class_names, initial_class=target, **page),
        )
    return {"json": json_path, "frames": frames, "page": page_path, "result": result}


def grid_pictures(inputs: Tensor, steps: int) -> list[tuple[int, np.ndarray]]:
    """For each of ``steps`` grid frames: the input frame at its centre, as RGB uint8.

    Grid step ``t`` covers input frames ``[t·T/steps, (t+1)·T/steps)``; its picture is
    the middle one of those (``inputs`` is ``1×C×T×H×W``).

    Example:
        >>> import torch
        >>> [index for index, _ in grid_pictures(torch.rand(1, 1, 8, 4, 4), 2)]
        [2, 6]
    """
    total = inputs.shape[2]
    centres = [min(total - 1, int((t + 0.5) * total / steps)) for t in range(steps)]
    return [(c, _frame_picture(inputs[0, :, c])) for c in centres]


def volume_page(
    result: Any,
    inputs: Tensor,
    class_names: Sequence[str] | None = None,
    *,
    slice_axis: str = "frame",
    **options: Any,
) -> str:
    """The interactive page of a clip/volume readout, with a slider over its grid frames.

    Each grid step shows the input frame (slice) at its centre (:func:`grid_pictures`);
    the same per-cell view as an image's page for the chosen step. ``options`` are
    those of :func:`dense_readout.page.data.page_data` (``title``, ``model``,
    ``random_weights``, ``initial_class``, ``notes``, ``view``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.page import read_page
        >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2), nn.AdaptiveAvgPool3d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.randn(1, 1, 9, 9, 9)
        >>> data = read_page(volume_page(DenseReadout(net)(x), x, slice_axis="slice"))
        >>> data["grid"], data["scores"].shape, data["slices"]["input_index"]
        ([4, 4, 4], (2, 4, 4, 4), [1, 3, 5, 7])
    """
    from PIL import Image

    from .page.data import DATA_ID, page_data
    from .page.template import render_page

    pictures = grid_pictures(inputs, result.grid_size[0])
    data = page_data(
        result,
        [Image.fromarray(picture) for _, picture in pictures],
        class_names,
        slice_axis=slice_axis,
        slice_inputs=[index for index, _ in pictures],
        **options,
    )
    return render_page("readout", title=data["title"] or "readout", data=data, data_id=DATA_ID)


def _frame_picture(frame: Tensor) -> np.ndarray:
    """One ``C×H×W`` input frame as an RGB uint8 picture (min–max, gray replicated)."""
    picture = frame.detach().float().cpu()
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
    import torch

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
