"""One self-contained HTML page per explained image: every cell, every class, offline.

:func:`readout_page` returns the page as a string; ``ReadoutResult.to_html`` and
``ReadoutResult._repr_html_`` (Jupyter) call it. The page holds the photo (JPEG
data URI), the full ``K×h×w`` scores (float16, see :mod:`.data` for the size and
the rounding error) and the per-cell top-5; its script and style are inline and a
Content-Security-Policy forbids every request that is not ``data:``, so it works
from ``file://`` with no network. In the page:

* hover, tap or keyboard-focus a cell (arrow keys on the picture) → its top-5
  classes with per-cell probabilities and logits;
* type or pick any class name (search box with completion over the K names) →
  that class's per-cell map over the picture with a colour bar in logit units;
* switch between label grid, class map and plain image; the readout's input
  region (the crop, or the whole photo) and its grid are drawn over the whole photo;
  with ``initial_class`` (``explain --class``) the page opens on that class's map;
* the picture is sized so that it and its colour bar fit the window's height, the
  legend of the label grid and the cell's top-5 sit beside it (one line per class);
* precomputed maps of other methods (``comparisons``) beside the readout's, with
  the time each took, when one of their classes is selected.

Example:
    >>> import timm, torch
    >>> from dense_readout import DenseReadout
    >>> from dense_readout.page import read_page, readout_page
    >>> model = timm.create_model("resnet18", num_classes=4).eval()
    >>> html = readout_page(DenseReadout(model)(torch.rand(1, 3, 64, 64)), None, list("abcd"))
    >>> html.startswith("<!DOCTYPE html>"), "http://" in html or "https://" in html
    (True, False)
    >>> read_page(html)["names"]
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import html as html_escape
from collections.abc import Sequence
from typing import Any

from PIL import Image

from .._atomic import write_atomic
from .data import DATA_ID, PageComparison, decode_scores, encode_scores, page_data, read_page
from .template import render_page

__all__ = [
    "PageComparison",
    "decode_scores",
    "encode_scores",
    "notebook_html",
    "page_data",
    "read_page",
    "readout_page",
    "write_atomic",
]


def readout_page(
    result,
    image: Image.Image | None = None,
    class_names: Sequence[str] | None = None,
    **options: Any,
) -> str:
    """The page of image ``index`` of a readout, as HTML text.

    ``options`` are those of :func:`~dense_readout.page.data.page_data`: ``index``,
    ``region`` (the readout's input box in the photo), ``title``, ``model``,
    ``random_weights``, ``comparisons``, ``initial_class``, ``notes``, ``view``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> model = timm.create_model("resnet18", num_classes=2).eval()
        >>> page = readout_page(DenseReadout(model)(torch.rand(1, 3, 32, 32)), title="x<y")
        >>> "<title>x&lt;y · dense readout</title>" in page
        True
    """
    data = page_data(result, image, class_names, **options)
    return render_page("readout", title=data["title"] or "readout", data=data, data_id=DATA_ID)


def notebook_html(page: str, height: int = 760) -> str:
    """``page`` inside an ``<iframe srcdoc>`` so that its script and ids stay its own.

    Example:
        >>> notebook_html("<p>a&b</p>").startswith('<iframe srcdoc="&lt;p&gt;a&amp;b')
        True
    """
    quoted = html_escape.escape(page, quote=True)
    return (
        f'<iframe srcdoc="{quoted}" style="width:100%;height:{height}px;border:0" '
        'sandbox="allow-scripts" title="dense readout"></iframe>'
    )
