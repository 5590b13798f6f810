"""Where a grid cell of an exported map lies in the original image.

The preprocessing resizes the shorter side to ``resize`` and centre-crops ``crop``
(:meth:`dense_readout.preprocessing.Preprocess.geometry_of`). The export stores, per
image, the integers that fix that mapping — :data:`GEOMETRY_FIELDS`: the original
size, the resized size, the crop offset and the crop side — so a reader maps a cell,
or a whole map, back onto the original pixels without our package: crop pixel
``(x, y)`` is resized pixel ``(x + left, y + top)``, which is original pixel
``((x + left) · width / resized_width, (y + top) · height / resized_height)``.

Example:
    >>> from dense_readout.preprocessing import Preprocess
    >>> record = geometry_record(Preprocess(resize=224, crop=224), (320, 256))
    >>> dict(zip(GEOMETRY_FIELDS, record.tolist()))
    {'width': 320, 'height': 256, 'resized_width': 280, 'resized_height': 224, 'left': 28, 'top': 0, 'crop': 224}
    >>> [round(v, 2) for v in cell_box(record, (7, 7), 0, 0)]  # x0, y0, x1, y1 in the original
    [32.0, 0.0, 68.57, 36.57]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GEOMETRY_FIELDS", "cell_box", "geometry_record", "to_original"]

GEOMETRY_FIELDS = ("width", "height", "resized_width", "resized_height", "left", "top", "crop")


def geometry_record(preprocess, size: tuple[int, int]) -> np.ndarray:
    """The :data:`GEOMETRY_FIELDS` of an image of ``size = (width, height)`` (int32).

    The same arithmetic as :meth:`~dense_readout.preprocessing.Preprocess.geometry_of`.

    Example:
        >>> from dense_readout.export import geometry_record
        >>> from dense_readout.preprocessing import Preprocess
        >>> geometry_record(Preprocess(resize=256, crop=224), (500, 375)).tolist()  # W, H, resized W, H, left, top, crop
        [500, 375, 341, 256, 58, 16, 224]
    """
    width, height = int(size[0]), int(size[1])
    crop = int(preprocess.crop)
    scale = preprocess.resize / min(width, height)
    resized = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    left, top = (resized[0] - crop) // 2, (resized[1] - crop) // 2
    return np.array([width, height, resized[0], resized[1], left, top, crop], dtype=np.int32)


def cell_box(
    record: Sequence[int] | np.ndarray, grid: tuple[int, int], row: int, col: int
) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` of cell ``(row, col)`` in original pixel coordinates.

    Continuous coordinates: pixel ``i`` spans ``[i, i + 1)``, so the box covers the
    pixels whose centres lie inside it.

    Example:
        >>> from dense_readout.export import cell_box
        >>> record = [448, 448, 224, 224, 0, 0, 224]  # a 448 px square shown whole at 224 px
        >>> cell_box(record, (7, 7), 0, 1)  # one cell = 32 crop pixels = 64 original pixels
        (64.0, 0.0, 128.0, 64.0)
    """
    width, height, rw, rh, left, top, crop = (int(v) for v in record)
    rows, cols = grid
    x0, x1 = col * crop / cols + left, (col + 1) * crop / cols + left
    y0, y1 = row * crop / rows + top, (row + 1) * crop / rows + top
    sx, sy = width / rw, height / rh
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def to_original(
    maps: np.ndarray | torch.Tensor, record: Sequence[int] | np.ndarray, mode: str = "bilinear"
) -> np.ndarray:
    """Maps ``M×h×w`` on the grid → ``M×height×width`` on the original image (float32).

    The maps are first resized to the crop (``mode``: ``'bilinear'``, as WSSS code
    upsamples CAMs, or ``'nearest'``: each cell a block); every original pixel then
    takes the value of the crop pixel under its centre. Pixels outside the crop saw
    no evidence and are NaN.

    Example:
        >>> import numpy as np
        >>> from dense_readout.export import to_original
        >>> record = [6, 4, 6, 4, 1, 0, 4]  # a 6×4 image, its centre 4×4 cropped
        >>> out = to_original(np.array([[[1.0, 2.0], [3.0, 4.0]]]), record, mode="nearest")
        >>> out.shape, bool(np.isnan(out[0, :, 0]).all()), out[0, 0, 1:5].tolist()  # outside the crop: NaN
        ((1, 4, 6), True, [1.0, 1.0, 2.0, 2.0])
    """
    width, height, rw, rh, left, top, crop = (int(v) for v in record)
    tensor = torch.as_tensor(np.asarray(maps, dtype=np.float32))[None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    on_crop = F.interpolate(tensor, size=(crop, crop), mode=mode, **options)[0].numpy()
    xs = np.floor((np.arange(width) + 0.5) * rw / width).astype(np.int64) - left
    ys = np.floor((np.arange(height) + 0.5) * rh / height).astype(np.int64) - top
    inside_x, inside_y = (xs >= 0) & (xs < crop), (ys >= 0) & (ys < crop)
    out = np.full((on_crop.shape[0], height, width), np.nan, dtype=np.float32)
    block = on_crop[:, ys[inside_y]][:, :, xs[inside_x]]
    out[np.ix_(np.arange(on_crop.shape[0]), np.flatnonzero(inside_y), np.flatnonzero(inside_x))] = (
        block
    )
    return out
