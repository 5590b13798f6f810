"""The data a readout page carries: scores packed as float16, per-cell top-5, the photo.

Everything the page shows is in one JSON object embedded in the HTML
(``<script type="application/json" id="readout-data">``); :func:`page_data` builds
it and :func:`read_page` reads it back (scores decoded to a ``K×h×w`` array, or
``K×t×h×w`` for a clip or volume, whose page has a slider over its ``t`` grid steps).

Size and precision: the scores ``Z`` travel as little-endian IEEE float16 in
base64, ``4/3 × 2 × K·h·w`` bytes (a 7×7×1000 grid: 131 kB). Rounding to float16
changes a score by at most ``2**-11 × |Z|`` (relative 0.05%; ``2**-25`` absolute
below ``2**-14``), e.g. at most 0.0078 for a logit of 16; scores beyond ±65504 are
clipped. The per-cell top-5 and the image-level logits shown in the page are
computed from the float32 scores in Python and stored as decimals (6 significant
digits), so the lists in the page are those of ``result.topk``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

__all__ = ["PageComparison", "decode_scores", "encode_scores", "page_data", "read_page"]

FLOAT16_MAX = 65504.0
DATA_ID = "readout-data"


@dataclass(frozen=True)
class PageComparison:
    """Another method's map of one class, shown beside the readout's in the page.

    ``map`` is ``H×W`` in [0, 1] over the readout's input region (as
    :func:`dense_readout.compare.compare` returns it); ``seconds`` is the wall time
    the method took for ``classes`` classes.

    Example:
        >>> import numpy as np, timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.page import PageComparison
        >>> from dense_readout.page.data import page_data
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> gradcam = PageComparison("gradcam", class_index=1, map=np.full((64, 64), 0.5), seconds=0.02)
        >>> data = page_data(DenseReadout(model)(torch.rand(1, 3, 64, 64)), None, comparisons=[gradcam])
        >>> entry = data["comparisons"][0]
        >>> entry["method"], entry["class"], entry["shape"], entry["classes"]
        ('gradcam', 1, [64, 64], 1)
    """

    method: str
    class_index: int
    map: np.ndarray
    seconds: float
    classes: int = 1


def encode_scores(scores: np.ndarray | torch.Tensor) -> str:
    """``K×h×w`` scores → base64 of little-endian float16 (clipped to ±65504).

    Example:
        >>> import numpy as np
        >>> z = np.array([[[1.0, -2.5]], [[3.14159, 100.0]]], dtype=np.float32)
        >>> back = decode_scores(encode_scores(z), z.shape)
        >>> bool(np.all(np.abs(back - z) <= 2.0**-11 * np.abs(z)))
        True
    """
    array = torch.as_tensor(scores).detach().cpu().float().numpy()
    clipped = np.clip(np.nan_to_num(array), -FLOAT16_MAX, FLOAT16_MAX)
    return base64.b64encode(clipped.astype("<f2").tobytes()).decode("ascii")


def decode_scores(text: str, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`encode_scores`: a float32 array of ``shape``.

    Example:
        >>> decode_scores(encode_scores(np.ones((2, 1, 1))), (2, 1, 1)).tolist()
        [[[1.0]], [[1.0]]]
    """
    raw = np.frombuffer(base64.b64decode(text), dtype="<f2")
    return raw.astype(np.float32).reshape(tuple(int(n) for n in shape))


def photo_uri(image: Image.Image, max_side: int = 1024, quality: int = 88) -> tuple[str, float]:
    """The photo as a JPEG data URI (longer side at most ``max_side``) and its scale.

    Example:
        >>> from PIL import Image
        >>> uri, scale = photo_uri(Image.new("RGB", (2048, 100)))
        >>> uri.startswith("data:image/jpeg;base64,"), scale
        (True, 0.5)
    """
    scale = min(1.0, max_side / max(image.size))
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), scale


def _round(values: torch.Tensor, digits: int = 6) -> list:
    return [float(f"{float(v):.{digits}g}") for v in values.flatten()]


def _cells_top5(scores: torch.Tensor) -> dict[str, list]:
    """Row-major per-cell top-5 (or top-K) classes, softmax probabilities and scores.

    ``scores`` is ``K×h×w`` or ``K×t×h×w``; cells are listed in the grid's row-major
    order (for a clip: frame by frame, each frame row by row).
    """
    k = min(5, scores.shape[0])
    flat = scores.flatten(1)  # K × cells
    probabilities = torch.softmax(flat, dim=0)
    values, classes = flat.topk(k, dim=0)
    picked = probabilities.gather(0, classes)
    return {
        "classes": classes.T.tolist(),
        "probabilities": [_round(row) for row in picked.T],
        "logits": [_round(row) for row in values.T],
    }


def _comparisons(items: Sequence[PageComparison]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        array = np.clip(np.asarray(item.map, dtype=np.float32), 0, 1)
        if array.ndim != 2:
            raise InputError(f"comparison map of {item.method} must be H×W, got {array.shape}.")
        data = np.round(array * 255).astype(np.uint8).tobytes()
        out.append(
            {
                "method": item.method,
                "class": int(item.class_index),
                "shape": list(array.shape),
                "data": base64.b64encode(data).decode("ascii"),
                "seconds": float(item.seconds),
                "classes": int(item.classes),
            }
        )
    return out


def page_data(  # long: one flat dict literal, the page's whole data schema in one place
    result,
    image: Image.Image | Sequence[Image.Image] | None,
    class_names: Sequence[str] | None = None,
    *,
    index: int = 0,
    region: Sequence[float] | None = None,
    title: str = "",
    model: str = "",
    random_weights: bool = False,
    comparisons: Sequence[PageComparison] = (),
    initial_class: int | None = None,
    notes: Sequence[str] = (),
    view: str = "",
    slice_axis: str = "frame",
    slice_inputs: Sequence[int] = (),
) -> dict[str, Any]:
    """The JSON object a page embeds (see the module docstring for sizes).

    ``image`` is the whole photo; ``region`` = ``[left, top, right, bottom]`` in its
    pixels is where the readout's input came from (default: all of it). Without an
    image a grey picture of the input size stands in. ``notes`` are shown as
    warnings, ``view`` (e.g. "whole photo") in the summary line. With
    ``initial_class`` the page opens on that class's map (its name in the class
    box and in the colour bar's caption; ``open_on_class`` is true); without it, on
    the label grid, and the class map starts at the image's top-1 class.

    A clip or volume (a readout with a ``t×h×w`` grid) gets a slider over its ``t``
    grid steps: ``image`` is then one picture per grid step (or None: grey),
    ``slice_axis`` names the steps in the page ("frame", "slice") and
    ``slice_inputs`` gives the input frame/slice each picture shows. The payload
    gains ``slices`` (the pictures as data URIs) and the scores are ``K×t×h×w``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> data = page_data(DenseReadout(model)(torch.rand(1, 3, 64, 96)), None)
        >>> data["grid"], data["scores"]["shape"], data["region"], data["open_on_class"]
        ([2, 3], [3, 2, 3], [0.0, 0.0, 96.0, 64.0], False)
        >>> page_data(DenseReadout(model)(torch.rand(1, 3, 64, 96)), None, initial_class=3)
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: initial_class must be a class index in [0, 3), got 3.
    """
    if not 0 <= index < result.batch_size:
        raise InputError(f"index must be in [0, {result.batch_size}), got {index}.")
    if result.spatial_dims not in (2, 3):
        raise InputError(
            f"the page shows 2-D (h×w) and 3-D (t×h×w) grids, not {result.spatial_dims}-D ones."
        )
    scores = result.scores[index].detach().cpu().float()
    logits = result.logits[index].detach().cpu().float()
    num_classes, grid = result.num_classes, [int(n) for n in result.grid_size]
    if initial_class is not None and not 0 <= initial_class < num_classes:
        raise InputError(
            f"initial_class must be a class index in [0, {num_classes}), got {initial_class}."
        )
    names = (
        list(class_names) if class_names is not None else [f"class {k}" for k in range(num_classes)]
    )
    if len(names) < num_classes:
        raise InputError(
            f"class_names has {len(names)} names for {num_classes} classes; pass one per class."
        )
    pictures = _pictures(result, image, grid)
    box = [0.0, 0.0, float(pictures[0].width), float(pictures[0].height)]
    box = box if region is None else [float(v) for v in region]
    uris = [photo_uri(picture) for picture in pictures]
    uri, scale = uris[0]
    probabilities = torch.softmax(logits, dim=0)
    order = probabilities.argsort(descending=True)[: min(5, num_classes)]
    data = {
        "format": "dense-readout-page/1",
        "title": title,
        "model": model,
        "random_weights": bool(random_weights),
        "exact": bool(result.exact),
        "exactness_note": result.exactness_note,
        "residual": float(result.residual[index]),
        "photo": {"uri": uri, "size": [pictures[0].height, pictures[0].width], "scale": scale},
        "region": box,
        "input_size": list(result.input_size),
        "grid": grid,
        "names": names[:num_classes],
        "logits": _round(logits),
        "top5": [
            {"class": int(c), "probability": float(probabilities[c]), "logit": float(logits[c])}
            for c in order
        ],
        "cells": _cells_top5(scores),
        "scores": {
            "dtype": "float16",
            "layout": ("K,t,h,w" if len(grid) == 3 else "K,h,w") + " little-endian",
            "shape": [num_classes, *grid],
            "data": encode_scores(scores),
        },
        "comparisons": _comparisons(comparisons),
        "initial_class": int(order[0]) if initial_class is None else int(initial_class),
        "open_on_class": initial_class is not None,
        "notes": list(notes),
        "view": view,
    }
    if len(grid) == 3:
        inputs = list(slice_inputs) or list(range(grid[0]))
        if len(inputs) != grid[0]:
            raise InputError(f"slice_inputs has {len(inputs)} entries for {grid[0]} grid steps.")
        data["slices"] = {
            "axis": slice_axis,
            "uris": [u for u, _ in uris],
            "input_index": [int(i) for i in inputs],
        }
    return data


def _pictures(
    result: Any, image: Image.Image | Sequence[Image.Image] | None, grid: list[int]
) -> list[Image.Image]:
    """One picture (2-D grid) or one per grid step (3-D), grey where none is given."""
    steps = grid[0] if len(grid) == 3 else 1
    if image is None:
        size = list(result.input_size)[-2:]
        height, width = size if min(size, default=0) > 0 else (grid[-2] * 32, grid[-1] * 32)
        return [Image.new("RGB", (width, height), (128, 128, 128))] * steps
    pictures = [image] if isinstance(image, Image.Image) else list(image)
    if len(pictures) != steps:
        raise InputError(
            f"the page needs {steps} picture(s), one per grid step of {grid}; got {len(pictures)}."
        )
    if len({p.size for p in pictures}) > 1:
        raise InputError("a clip's pictures must all have one size.")
    return pictures


def read_page(source: str | Path) -> dict[str, Any]:
    """The data embedded in a page (a path or the HTML text), scores decoded to ``K×[t×]h×w``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> result = DenseReadout(model)(torch.rand(1, 3, 64, 64))
        >>> data = read_page(result.to_html())
        >>> z = result.scores[0].numpy()
        >>> bool(abs(data["scores"] - z).max() <= 2.0**-11 * abs(z).max())
        True
    """
    data = read_json_block(source, DATA_ID, "a dense-readout page")
    packed = data["scores"]
    data["scores"] = decode_scores(packed["data"], packed["shape"])
    return data


def read_json_block(source: str | Path, block_id: str, what: str) -> Any:
    """The JSON of ``<script type="application/json" id=block_id>`` in a page or its file.

    Shared by the readout page and the attack page. ``what`` names the page in the error.
    """
    text = str(source)
    if "<" not in text:
        text = Path(source).read_text(encoding="utf-8")
    start_tag = f'<script type="application/json" id="{block_id}">'
    start = text.find(start_tag)
    end = text.find("</script>", start)
    if start < 0 or end < 0:
        raise InputError(f"not {what}: its data block is missing.")
    return json.loads(text[start + len(start_tag) : end])
