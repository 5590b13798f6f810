"""Label PNGs in the PASCAL VOC convention: palette mode, VOC colours, 255 = void.

Labels above 254 (ImageNet's 1000 classes) do not fit a palette; they are written as
16-bit greyscale PNGs (value = label, 255 still void is then ambiguous, so void is
written as 65535).

Example:
    >>> import numpy as np, tempfile
    >>> path = save_label_png(tempfile.mkdtemp() + "/a.png", np.array([[0, 1], [15, 255]]))
    >>> from PIL import Image
    >>> image = Image.open(path); image.mode, np.asarray(image).tolist()
    ('P', [[0, 1], [15, 255]])
    >>> voc_palette()[3:6]  # label 1 (aeroplane in VOC) is dark red
    [128, 0, 0]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .seeds import IGNORE

__all__ = ["read_label_png", "save_label_png", "voc_palette"]


def voc_palette() -> list[int]:
    """The 256-colour VOC palette (bit-interleaved label bits; 255 is cream, ``224,224,192``).

    Example:
        >>> from dense_readout.pseudo_labels import voc_palette
        >>> palette = voc_palette()
        >>> len(palette), palette[3:6], palette[-3:]  # label 1 is dark red, 255 (void) cream
        (768, [128, 0, 0], [224, 224, 192])
    """
    palette = []
    for label in range(256):
        red = green = blue = 0
        value = label
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [red, green, blue]
    return palette


def save_label_png(path: str | Path, labels: np.ndarray) -> Path:
    """Write ``labels`` (``H×W`` ints, ``255`` void) as a VOC palette PNG (16-bit above 254).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from dense_readout.pseudo_labels import save_label_png
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = save_label_png(os.path.join(folder, "seed.png"), np.array([[0, 1], [15, 255]]))
        ...     print(Image.open(path).mode)
        P
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.max(initial=0) < IGNORE or set(np.unique(labels[labels >= IGNORE])) <= {IGNORE}:
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(voc_palette())
    else:
        wide = np.where(labels == IGNORE, 65535, labels).astype(np.uint16)
        image = Image.fromarray(wide)  # uint16 → mode "I;16"
    image.save(path)
    return path


def read_label_png(path: str | Path) -> np.ndarray:
    """A label PNG back as ``H×W`` int64 (16-bit void 65535 → 255).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from dense_readout.pseudo_labels import read_label_png, save_label_png
        >>> labels = np.array([[0, 300], [15, 255]])  # a label above 254 needs the 16-bit form
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     again = read_label_png(save_label_png(os.path.join(folder, "seed.png"), labels))
        >>> again.tolist() == labels.tolist(), again.dtype
        (True, dtype('int64'))
    """
    array = np.asarray(Image.open(path)).astype(np.int64)
    array[array == 65535] = IGNORE
    return array
