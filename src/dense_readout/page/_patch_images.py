"""Pictures of the patch map page: one thumbnail per point, one downscaled copy per image.

Used by :mod:`dense_readout.page.patch_map`; each source image is read once.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError
from ..images import load_image
from ._map_point import MapPoint
from .data import photo_uri

__all__ = ["display_names", "embed_images", "thumbnail"]


def display_names(paths: Sequence[str | Path]) -> list[str]:
    """Paths relative to their common folder (the file name alone for one image)."""
    absolute = [os.path.abspath(p) for p in paths]
    if not absolute:
        return []
    if len(set(absolute)) == 1:
        common = os.path.dirname(absolute[0])
    else:
        common = os.path.commonpath(absolute)
    return [Path(os.path.relpath(p, common)).as_posix() for p in absolute]


def embed_images(
    points: Sequence[MapPoint],
    image_paths: Sequence[str | Path],
    thumb_size: int,
    image_side: int,
    margin: float,
    qualities: tuple[int, int],
    exif_transpose: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One downscaled copy per used image and one thumbnail per point, each image read once.

    ``qualities`` are the JPEG qualities of the thumbnails and of the source images.
    """
    by_image: dict[int, list[int]] = {}
    for i, point in enumerate(points):
        by_image.setdefault(point.image, []).append(i)
    names = display_names(image_paths)
    images: list[dict[str, Any]] = [
        {"name": name, "uri": None, "size": None, "scale": None} for name in names
    ]
    thumbs: list[dict[str, Any]] = [{} for _ in points]
    for k, members in sorted(by_image.items()):
        picture = load_image(image_paths[k], exif_transpose=exif_transpose)
        uri, scale = photo_uri(picture, image_side, qualities[1])
        images[k].update(uri=uri, size=[picture.width, picture.height], scale=scale)
        for i in members:
            thumbs[i] = thumbnail(picture, points[i], i, thumb_size, margin, qualities[0])
    return images, thumbs


def thumbnail(
    picture: Image.Image, point: MapPoint, index: int, size: int, margin: float, quality: int
) -> dict[str, Any]:
    """The cell's crop with ``margin`` cell sizes around it, longer side ``size`` px.

    ``outline`` is the cell's box as fractions (x0, y0, x1, y1) of the thumbnail's size.
    """
    x0, y0, x1, y1 = point.box
    inside = (max(x0, 0), max(y0, 0), min(x1, picture.width), min(y1, picture.height))
    if inside[0] >= inside[2] or inside[1] >= inside[3]:
        raise InputError(
            f"points[{index}].box = {point.box} lies outside its image "
            f"({picture.width}×{picture.height} px); boxes are in the original image's pixels."
        )
    pad_x, pad_y = margin * (x1 - x0), margin * (y1 - y0)
    left, top = max(0, math.floor(x0 - pad_x)), max(0, math.floor(y0 - pad_y))
    right = min(picture.width, math.ceil(x1 + pad_x))
    bottom = min(picture.height, math.ceil(y1 + pad_y))
    crop = picture.crop((left, top, right, bottom))
    scale = size / max(crop.size)
    shape = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    buffer = io.BytesIO()
    crop.resize(shape, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=quality)
    width, height = right - left, bottom - top
    outline = [(inside[0] - left) / width, (inside[1] - top) / height]
    outline += [(inside[2] - left) / width, (inside[3] - top) / height]
    return {
        "uri": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        "size": list(shape),
        "outline": [round(v, 4) for v in outline],
    }
