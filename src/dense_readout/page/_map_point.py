"""One point of the patch map: a grid cell of one image (:class:`MapPoint`).

Its own module so that :mod:`dense_readout.page.patch_map` (the page) and
:mod:`dense_readout.page._patch_images` (its pictures) both import it and not each
other; ``dense_readout.page.patch_map.MapPoint`` is the public name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MapPoint"]


@dataclass(frozen=True)
class MapPoint:
    """One patch on the map: its image, grid cell, pixel box and colour labels.

    ``image`` indexes ``image_paths``; ``cell`` is ``(u, v)`` = (row, column) of the
    grid; ``box`` is ``(x0, y0, x1, y1)`` of the cell in the original image's pixels;
    ``group`` is the image's class (or None) and ``top1`` the readout's top-1 class
    name of the cell when the model has a head (or None).

    Example:
        >>> from dense_readout.page.patch_map import MapPoint
        >>> MapPoint(3, (0, 1), (32, 0, 64, 32), group="cat")
        MapPoint(image=3, cell=(0, 1), box=(32, 0, 64, 32), group='cat', top1=None)
    """

    image: int
    cell: tuple[int, int]
    box: tuple[int, int, int, int]
    group: str | None = None
    top1: str | None = None
