"""Loading image files into RGB PIL images, with clear errors and documented conversions.

Conversions (documented in docs/cli.md and docs/concepts.md):

* EXIF orientation is applied (a phone photo comes out upright), unless
  ``exif_transpose=False``: then the pixels come in the stored frame, the one that
  ImageNet-style box annotations and the file header's size refer to (the
  benchmark loads images this way).
* Grayscale is replicated to three channels. 8-bit (``L``, ``1``) as is; 16-bit
  (``I;16*``) scaled from the full 0..65535 range; 32-bit integer ``I`` as 8-bit
  if its values lie in 0..255, as 16-bit if in 0..65535, else min–max; float
  ``F`` as [0, 1] if its values lie there, else min–max. NaN/Inf is an error.
* 16-bit RGB(A) files (PNG, TIFF) are read by PIL as 8-bit: the high byte.
* RGBA/LA/P-with-transparency is composited on white.
* CMYK and YCbCr go through PIL's RGB conversion; a multi-frame file (GIF)
  gives its first frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

__all__ = ["load_image", "to_rgb"]


def load_image(path: str | Path, *, exif_transpose: bool = True) -> Image.Image:
    """Open ``path`` and return an upright RGB image; raise :class:`ImageLoadError` if impossible.

    ``exif_transpose=False`` skips the EXIF orientation and returns the pixels as
    stored (for annotations made in the stored frame, such as ILSVRC's boxes).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from dense_readout import load_image
        >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
        >>> Image.new("L", (8, 8), 128).save(path)
        >>> load_image(path).mode
        'RGB'
        >>> exif = Image.Exif(); exif[0x0112] = 6  # orientation 6: display rotated 90° clockwise
        >>> rotated = os.path.join(tempfile.mkdtemp(), "phone.jpg")
        >>> Image.new("RGB", (40, 20)).save(rotated, exif=exif)
        >>> load_image(rotated).size, load_image(rotated, exif_transpose=False).size
        ((20, 40), (40, 20))
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file.")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image file.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated files fail here, not later
            if not exif_transpose:
                return to_rgb(image)
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright if upright is not None else image)
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{path}: not a readable image (unknown format, a variant PIL cannot decode such as "
            "a float RGB TIFF, or corrupt data); convert it to PNG or JPEG."
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"{path}: too large to load safely ({error}); downscale it first."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(
            f"{path}: cannot decode image ({error}); the file may be truncated."
        ) from None


def _unit_range(array: np.ndarray, mode: str) -> np.ndarray:
    """Grayscale values of a wide mode mapped to [0, 1] by the rules in the module docstring."""
    if not np.isfinite(array).all():
        raise ImageLoadError(f"The {mode} image contains NaN or Inf values.")
    low, high = float(array.min()), float(array.max())
    if mode.startswith("I;16"):
        return array / 65535.0
    if mode == "I" and low >= 0 and high <= 255:
        return array / 255.0
    if mode == "I" and low >= 0 and high <= 65535:
        return array / 65535.0
    if mode == "F" and low >= 0 and high <= 1:
        return array
    return np.zeros_like(array) if high <= low else (array - low) / (high - low)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules).

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> from dense_readout.images import to_rgb
        >>> sixteen = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
        >>> to_rgb(sixteen).getpixel((0, 0))
        (255, 255, 255)
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        scaled = _unit_range(np.asarray(image, dtype=np.float64), mode)
        gray = Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
