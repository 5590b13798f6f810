"""Loading image files into RGB PIL images, with clear errors and documented conversions.

Conversions (documented in docs/concepts.md): grayscale (L, 1, I;16, I, F) is
replicated to three channels, with 16-bit and float images rescaled from their
full range; RGBA/LA/P-with-transparency is composited on white; CMYK and YCbCr
go through PIL's RGB conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageLoadError

__all__ = ["load_image", "to_rgb"]


def load_image(path: Union[str, Path]) -> Image.Image:
    """Open ``path`` and return an RGB image; raise :class:`ImageLoadError` if impossible.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from dense_readout import load_image
        >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
        >>> Image.new("L", (8, 8), 128).save(path)
        >>> load_image(path).mode
        'RGB'
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file.")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image file.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated files fail here, not later
            return to_rgb(image)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not a readable image (unknown or corrupt format).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path}: cannot decode image ({error}); the file may be truncated.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if mode.startswith("I;16") else (float(array.min()), float(array.max()))
        scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low)
        gray = Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
