"""A contact sheet of retrieved patches: each shown in its source image with the cell outlined.

Each tile is the cell's neighbourhood in its source image (one cell of context on
every side, clipped to the image) with the cell outlined; a thumbnail of the whole
source image with the same outline sits in the tile's corner. The first tile is the
query (blue outline), then the hits (red), labelled with rank and similarity.

Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> from dense_readout.patches.index_query import Hit, QueryResult
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.new("RGB", (64, 48), "gray").save(path)
    >>> hit = Hit(0, 0, path, (0, 1), (32, 0, 64, 24), 0.9)
    >>> sheet = contact_sheet(QueryResult(path, [(0, 1)], (32, 0, 64, 24), [hit, hit]))
    >>> sheet.size
    (640, 248)
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from ..errors import ImageLoadError
from ..images import load_image
from .index_query import QueryResult

__all__ = ["contact_sheet"]

TILE = 200  # px, the square each patch is drawn in
CAPTION = 28  # px of text under each tile
QUERY_COLOUR, HIT_COLOUR = (30, 110, 230), (220, 30, 30)


def contact_sheet(
    result: QueryResult, columns: int = 5, tile: int = TILE, picture: Image.Image | None = None
) -> Image.Image:
    """The query and its hits as one RGB image, ``columns`` tiles per row.

    ``picture`` is the query image when ``result.path`` is not a file to load.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> from dense_readout.patches import Hit, QueryResult, contact_sheet
        >>> with tempfile.TemporaryDirectory() as root:
        ...     path = os.path.join(root, "a.png")
        ...     Image.new("RGB", (64, 48), "gray").save(path)
        ...     hit = Hit(0, 0, path, (0, 1), (32, 0, 64, 24), 0.9)
        ...     sheet = contact_sheet(QueryResult(path, [(0, 1)], (32, 0, 64, 24), [hit, hit]), columns=3, tile=100)
        >>> sheet.mode, 3 * 100 < sheet.width < 4 * 100  # three 100 px tiles and margins in a row
        ('RGB', True)
    """
    entries = [(result.path, result.box, "query", QUERY_COLOUR)]
    entries += [
        (hit.path, hit.box, f"#{rank} {hit.similarity:.3f}", HIT_COLOUR)
        for rank, hit in enumerate(result.hits, start=1)
    ]
    columns = max(1, min(columns, len(entries)))
    rows = -(-len(entries) // columns)
    gap = 10
    sheet = Image.new(
        "RGB", (columns * (tile + gap) + gap, rows * (tile + CAPTION + gap) + gap), "white"
    )
    draw = ImageDraw.Draw(sheet)
    cache: dict[str, Image.Image | None] = {result.path: picture} if picture else {}
    for number, (path, box, label, colour) in enumerate(entries):
        x = gap + (number % columns) * (tile + gap)
        y = gap + (number // columns) * (tile + CAPTION + gap)
        if path not in cache:
            cache[path] = _open(path)
        source = cache[path]
        if source is not None:
            sheet.paste(_tile(source, box, colour, tile), (x, y))
        else:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), outline=(150, 150, 150))
            draw.text((x + 8, y + tile // 2), "image unreadable", fill=(120, 120, 120))
        name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
        draw.text((x, y + tile + 2), label, fill=colour)
        draw.text((x, y + tile + 14), name[-32:], fill=(60, 60, 60))
    return sheet


def _open(path: str) -> Image.Image | None:
    try:
        return load_image(path)
    except ImageLoadError:
        return None


def _tile(source: Image.Image, box: Sequence[int], colour: tuple, tile: int) -> Image.Image:
    """The cell with one cell of context around it, scaled to ``tile``, plus a thumbnail."""
    x0, y0, x1, y1 = box
    width, height = max(1, x1 - x0), max(1, y1 - y0)
    side = max(width, height, min(3 * max(width, height), *source.size))  # context in the image
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(max(0, min(cx - side / 2, source.width - side)))
    top = int(max(0, min(cy - side / 2, source.height - side)))
    crop = source.crop((left, top, left + side, top + side))
    scale = tile / side
    patch = crop.resize((tile, tile), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(patch)
    outline = ((x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale)
    draw.rectangle(outline, outline=colour, width=3)
    thumb = source.copy()
    thumb.thumbnail((tile // 3, tile // 3))
    factor = thumb.width / source.width
    ImageDraw.Draw(thumb).rectangle(
        (x0 * factor, y0 * factor, x1 * factor, y1 * factor), outline=colour, width=2
    )
    draw.rectangle(
        (tile - thumb.width - 3, tile - thumb.height - 3, tile - 1, tile - 1), fill="white"
    )
    patch.paste(thumb, (tile - thumb.width - 2, tile - thumb.height - 2))
    return patch
