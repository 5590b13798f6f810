"""The patch index's interactive map (paper A.8, Fig. 10) as one self-contained HTML page.

:func:`umap_coords` projects patch vectors to 2-D (umap-learn, cosine metric, the
``patches`` extra); :func:`write_map_page` writes the page; :func:`read_map_page`
reads its data back. The page holds everything it shows in one JSON block
(``<script type="application/json" id="patch-map-data">``): the 2-D coordinates,
each point's image, cell and pixel box, its colour groups, its nearest neighbours,
one JPEG thumbnail per point (the cell's crop with a margin of ``margin`` cell
sizes on each side, longer side ``thumb_size`` px, JPEG ``quality``) and one
downscaled JPEG per source image (longer side at most ``image_side`` px, JPEG
``image_quality``). Script and style are inline
and a Content-Security-Policy forbids every request that is not ``data:``, so it
works offline from ``file://``. In the page:

* a canvas scatter plot: drag to pan, wheel or the +/− buttons to zoom; on the
  focused plot the arrow keys pan, + / − zoom, 0 fits all and Enter selects the
  point nearest the centre cross;
* colour by the image's class (``group``) or by the readout's top-1 class of the
  cell (``top1``), with a toggle when both are known: the nine most frequent
  classes get nine distinct colours, every other class one grey ("N other
  classes"); names are short (the first synonym; the full name where two share
  it); pressing legend entries shows only their points (press again, or "show
  all", to undo);
* hover a point → a tooltip with its patch thumbnail (cell outlined), image name,
  cell, class and top-1;
* click a point → the side panel shows its source image with the cell outlined and
  the thumbnails of its nearest neighbours (buttons: press one to select it).

``neighbours[i]`` lists indices into ``points``; the point itself and ``-1`` (FAISS's
"no result") are skipped in the page but kept in the data. Image names shown are the
paths relative to the images' common folder.

Size and speed, measured on the ILSVRC sample (ImageNet photos, 7×7 cells; see
``benchmarks/patch_map_page.py``): a source image at 256 px, quality 75, takes about
16.6 kB, a 64 px thumbnail at quality 85 about 2.2 kB; 3,000 points from 952 images
make a 22.9 MB page, written in 14 s; headless Chromium has it ready 3.1 s after
navigation and redraws the 3,000 points in about 20 ms (pan and zoom stay fluid).
Sample fewer source images (or lower ``image_side``) for a smaller page.

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from dense_readout.page.patch_map import MapPoint, read_map_page, write_map_page
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (64, 32), (200, 30, 30)).save(folder / "a.png")
    >>> points = [MapPoint(0, (0, v), (32 * v, 0, 32 * v + 32, 32), group="red") for v in (0, 1)]
    >>> neighbours = np.array([[0, 1], [1, 0]])
    >>> coords = np.array([[0.0, 0.0], [1.0, 0.5]], dtype=np.float32)
    >>> path = write_map_page(folder / "map.html", coords, points, [folder / "a.png"], neighbours)
    >>> "https://" in path.read_text() or "http://" in path.read_text()
    False
    >>> data = read_map_page(path)
    >>> data["points"] == points, data["coords"].tolist(), data["neighbours"].tolist()
    (True, [[0.0, 0.0], [1.0, 0.5]], [[0, 1], [1, 0]])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from .._optional import require
from ..errors import InputError
from ._map_point import MapPoint
from ._patch_images import embed_images
from .data import read_json_block
from .template import render_page

__all__ = [
    "DATA_ID",
    "MapPoint",
    "map_page_data",
    "map_page_html",
    "read_map_page",
    "umap_coords",
    "write_map_page",
]

DATA_ID = "patch-map-data"
FORMAT = "dense-readout-patch-map/1"
COLOUR_MODES = ("group", "top1")


def umap_coords(vectors: np.ndarray, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """An ``N×2`` float32 UMAP embedding of ``N×D`` vectors (cosine metric), fixed by ``seed``.

    Needs umap-learn (``pip install 'dense-readout[patches]'``); its first call in a
    process compiles numba code (tens of seconds). Fewer than ``n_neighbors + 2``
    vectors is an :class:`~dense_readout.errors.InputError`.

    Example:
        >>> umap_coords(np.ones((5, 8)), n_neighbors=15)
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: a UMAP with n_neighbors=15 needs at least 17 vectors, got 5; pass more vectors or a smaller n_neighbors (at least 2).
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] < 1:
        raise InputError(f"vectors must be an N×D array, got shape {array.shape}.")
    if n_neighbors < 2:
        raise InputError(f"n_neighbors must be at least 2, got {n_neighbors}.")
    if array.shape[0] < n_neighbors + 2:
        raise InputError(
            f"a UMAP with n_neighbors={n_neighbors} needs at least {n_neighbors + 2} vectors, "
            f"got {array.shape[0]}; pass more vectors or a smaller n_neighbors (at least 2)."
        )
    if not np.isfinite(array).all():
        raise InputError("vectors contain NaN or Inf; drop those rows before the UMAP.")
    umap = require("umap", extra="patches", purpose="the patch map's UMAP projection")
    reducer = umap.UMAP(
        n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed, n_jobs=1
    )
    return np.asarray(reducer.fit_transform(array), dtype=np.float32)


def write_map_page(
    out: Path,
    coords: np.ndarray,
    points: Sequence[MapPoint],
    image_paths: Sequence[str | Path],
    neighbours: np.ndarray,
    *,
    title: str = "Patch map",
    colour_by: str = "group",
    thumb_size: int = 64,
    image_side: int = 256,
    margin: float = 0.25,
    quality: int = 85,
    image_quality: int = 75,
    exif_transpose: bool = True,
) -> Path:
    """Write the interactive map page to ``out`` (atomically) and return its path.

    ``coords`` is ``N×2`` (e.g. :func:`umap_coords`), ``points`` the ``N`` patches,
    ``neighbours`` an ``N×k`` integer array of indices into ``points`` (``-1`` = none).
    ``colour_by`` is the colouring the page opens with: ``"group"`` (image class) or
    ``"top1"`` (the readout's top-1 class of the cell; some point must have one).
    Images are loaded as :func:`~dense_readout.images.load_image` does, with
    ``exif_transpose`` as when the boxes were computed. Inconsistent inputs are an
    :class:`~dense_readout.errors.InputError` naming the problem; an unreadable image
    an :class:`~dense_readout.errors.ImageLoadError` naming the file.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "map.html"
        >>> write_map_page(out, np.zeros((1, 2)), [MapPoint(0, (0, 0), (0, 0, 1, 1))], [],
        ...                np.zeros((1, 0), dtype=int))
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: points[0].image = 0 is out of range: there are 0 image_paths.
    """
    data = map_page_data(
        coords,
        points,
        image_paths,
        neighbours,
        title=title,
        colour_by=colour_by,
        thumb_size=thumb_size,
        image_side=image_side,
        margin=margin,
        quality=quality,
        image_quality=image_quality,
        exif_transpose=exif_transpose,
    )
    return write_atomic(out, map_page_html(data))


def map_page_html(data: dict[str, Any]) -> str:
    """The page's HTML around its data (as :func:`map_page_data` returns it).

    Example:
        >>> page = map_page_html({"title": "a </script> b"})
        >>> page.startswith("<!DOCTYPE html>"), page.count("</script>")
        (True, 2)
    """
    title = data["title"] or "Patch map"
    return render_page("patch_map", title=title, data=data, data_id=DATA_ID, ensure_ascii=False)


def map_page_data(  # long: validation then one flat dict literal, the page's whole schema
    coords: np.ndarray,
    points: Sequence[MapPoint],
    image_paths: Sequence[str | Path],
    neighbours: np.ndarray,
    *,
    title: str = "Patch map",
    colour_by: str = "group",
    thumb_size: int = 64,
    image_side: int = 256,
    margin: float = 0.25,
    quality: int = 85,
    image_quality: int = 75,
    exif_transpose: bool = True,
) -> dict[str, Any]:
    """The JSON object the page embeds (arguments as in :func:`write_map_page`).

    Coordinates are stored as the shortest decimals of their float32 values, so
    :func:`read_map_page` gives back ``coords.astype(np.float32)`` exactly; classes
    are stored once per name (most frequent first) with an index per point.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "g.png"
        >>> Image.new("RGB", (40, 20)).save(path)
        >>> pts = [MapPoint(0, (0, 0), (0, 0, 20, 20), top1="b"), MapPoint(0, (0, 1), (20, 0, 40, 20))]
        >>> data = map_page_data(np.zeros((2, 2)), pts, [path], np.array([[1], [0]]), colour_by="top1")
        >>> data["top1_names"], data["points"]["top1"], data["points"]["group"], data["groups"]
        (['b'], [0, -1], [-1, -1], [])
    """
    if colour_by not in COLOUR_MODES:
        raise InputError(
            f"colour_by must be one of {', '.join(map(repr, COLOUR_MODES))}, got {colour_by!r}."
        )
    array = _check_coords(coords, len(points))
    links = _check_neighbours(neighbours, len(points))
    _check_points(points, len(image_paths))
    if colour_by == "top1" and all(p.top1 is None for p in points):
        raise InputError("colour_by='top1' but no point has a top1 class; use colour_by='group'.")
    if thumb_size < 8 or image_side < 16 or not 0 <= margin <= 4:
        raise InputError(
            f"thumb_size must be ≥ 8, image_side ≥ 16 and margin in [0, 4]; "
            f"got {thumb_size}, {image_side}, {margin}."
        )
    if not (1 <= quality <= 95 and 1 <= image_quality <= 95):
        raise InputError(f"JPEG qualities must be in [1, 95], got {quality}, {image_quality}.")
    groups, group_index = _categories([p.group for p in points])
    top1_names, top1_index = _categories([p.top1 for p in points])
    images, thumbs = embed_images(
        points,
        image_paths,
        thumb_size,
        image_side,
        margin,
        (quality, image_quality),
        exif_transpose,
    )
    return {
        "format": FORMAT,
        "title": title,
        "colour_by": colour_by,
        "coords": [[float(str(x)), float(str(y))] for x, y in array],
        "points": {
            "image": [int(p.image) for p in points],
            "cell": [[int(p.cell[0]), int(p.cell[1])] for p in points],
            "box": [[int(c) for c in p.box] for p in points],
            "group": group_index,
            "top1": top1_index,
        },
        "groups": groups,
        "top1_names": top1_names,
        "neighbours": links.tolist(),
        "images": images,
        "thumbs": thumbs,
    }


def read_map_page(html: str | Path) -> dict[str, Any]:
    """The data of a map page (its HTML text or file), with arrays and points rebuilt.

    ``coords`` comes back as an ``N×2`` float32 array, ``neighbours`` as ``N×k`` int64
    and ``points`` as a list of :class:`MapPoint` equal to those written.

    Example:
        >>> block = '<script type="application/json" id="patch-map-data">{}</script>'
        >>> read_map_page(block)
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: not a patch map page: it has no 'dense-readout-patch-map/1' data.
    """
    data = read_json_block(html, DATA_ID, "a patch map page")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a patch map page: it has no {FORMAT!r} data.")
    columns = data["points"]
    groups, top1 = data["groups"], data["top1_names"]
    data["points"] = [
        MapPoint(
            image,
            (cell[0], cell[1]),
            (box[0], box[1], box[2], box[3]),
            groups[g] if g >= 0 else None,
            top1[t] if t >= 0 else None,
        )
        for image, cell, box, g, t in zip(
            columns["image"],
            columns["cell"],
            columns["box"],
            columns["group"],
            columns["top1"],
            strict=True,
        )
    ]
    data["coords"] = np.array(data["coords"], dtype=np.float32).reshape(-1, 2)
    data["neighbours"] = np.array(data["neighbours"], dtype=np.int64).reshape(
        len(columns["image"]), -1
    )
    return data


def _check_coords(coords: np.ndarray, count: int) -> np.ndarray:
    array = np.asarray(coords)
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"coords must be an N×2 array, got shape {array.shape}.")
    if array.shape[0] != count:
        raise InputError(
            f"coords has {array.shape[0]} rows but there are {count} points; pass one row per point."
        )
    if count == 0:
        raise InputError("no points to map: pass at least one point.")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError("coords contain NaN or Inf (or values beyond float32's range).")
    return array


def _check_neighbours(neighbours: np.ndarray, count: int) -> np.ndarray:
    array = np.asarray(neighbours)
    if array.ndim != 2 or array.shape[0] != count:
        raise InputError(
            f"neighbours must be an N×k array with N = {count} points, got shape {array.shape}."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"neighbours must hold integer indices, got dtype {array.dtype}.")
    bad = np.argwhere((array < -1) | (array >= count))
    if len(bad):
        i, j = (int(n) for n in bad[0])
        raise InputError(
            f"neighbours[{i}, {j}] = {int(array[i, j])} is out of range: indices into points "
            f"must be in [0, {count}) (or -1 for no neighbour)."
        )
    return array.astype(np.int64)


def _check_points(points: Sequence[MapPoint], images: int) -> None:
    for i, point in enumerate(points):
        if not 0 <= point.image < images:
            raise InputError(
                f"points[{i}].image = {point.image} is out of range: "
                f"there are {images} image_paths."
            )
        x0, y0, x1, y1 = point.box
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"points[{i}].box = {point.box} is empty: need x0 < x1 and y0 < y1.")


def _categories(values: Sequence[str | None]) -> tuple[list[str], list[int]]:
    """Distinct names, most frequent first (ties by name), and each value's index (-1: None)."""
    counts = Counter(str(v) for v in values if v is not None)
    names = sorted(counts, key=lambda name: (-counts[name], name))
    index = {name: k for k, name in enumerate(names)}
    return names, [index[str(v)] if v is not None else -1 for v in values]
