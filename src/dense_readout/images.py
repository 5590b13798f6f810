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
* A file above PIL's decompression-bomb *warning* limit (``Image.MAX_IMAGE_PIXELS``,
  89.5 million pixels) is loaded with one :class:`ImageWarning` naming it instead of
  PIL's ``DecompressionBombWarning``; above twice the limit it is an error.

:func:`full_view` and :func:`crop_region` give the two views ``dense-readout explain``
offers: the whole photo resized, or the centre crop and where it lies in the photo.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

__all__ = ["ImageWarning", "crop_region", "full_view", "load_image", "to_rgb", "upsampling_note"]


class ImageWarning(UserWarning):
    """An image was loaded, but with a caveat the message names (very large, upsampled).

    Example:
        >>> import os, tempfile, warnings
        >>> from PIL import Image
        >>> from dense_readout.images import ImageWarning, load_image
        >>> path = os.path.join(tempfile.mkdtemp(), "big.png")
        >>> Image.new("RGB", (40, 40)).save(path)
        >>> limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, 1000  # pretend 1,600 px is huge
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     image = load_image(path)  # loaded anyway, with the caveat
        >>> Image.MAX_IMAGE_PIXELS = limit
        >>> image.size, [w.category.__name__ for w in caught]
        ((40, 40), ['ImageWarning'])
        >>> "1,600 pixels" in str(caught[0].message)
        True
    """


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image = _decode(path, exif_transpose)
        for warning in caught:
            if issubclass(warning.category, Image.DecompressionBombWarning):
                pixels = f"{image.width} x {image.height} = {image.width * image.height:,} pixels"
                warnings.warn(
                    f"{path}: {pixels}, above PIL's decompression-bomb warning limit "
                    f"({Image.MAX_IMAGE_PIXELS:,}); loaded anyway, check that you trust the file.",
                    ImageWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return image
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


def _decode(path: Path, exif_transpose: bool) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: truncated files fail here, not later
        if not exif_transpose:
            return to_rgb(image)
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright if upright is not None else image)


def full_view(
    image: Image.Image, size: int, multiple: int = 32, max_ratio: float = 8.0
) -> Image.Image:
    """The whole ``image`` resized so that its shorter side is ``size`` (any aspect ratio).

    The longer side is rounded to a multiple of ``multiple`` (the network stride, so
    every cell covers whole pixels; the aspect ratio moves by at most half a stride)
    and capped at ``max_ratio × size``. Smaller images are upsampled (see
    :func:`upsampling_note`).

    Example:
        >>> from PIL import Image
        >>> full_view(Image.new("RGB", (451, 300)), 224).size
        (352, 224)
    """
    width, height = image.size
    scale = size / min(width, height)
    longer = max(width, height) * scale
    longer = min(max_ratio * size, max(multiple, round(longer / multiple) * multiple))
    new = (int(longer), size) if width >= height else (size, int(longer))
    return image.resize(new, Image.Resampling.BICUBIC)


def crop_region(size: Sequence[int], resize: int, crop: int) -> tuple[float, float, float, float]:
    """Where ``Preprocess.geometry``'s centre crop lies in an image of ``size`` = (width, height).

    Returns ``(left, top, right, bottom)`` in the image's own pixels.

    Example:
        >>> tuple(round(v, 1) for v in crop_region((451, 300), resize=224, crop=224))
        (74.9, 0.0, 374.7, 300.0)
    """
    width, height = size
    scale = resize / min(width, height)
    new_w, new_h = max(crop, round(width * scale)), max(crop, round(height * scale))
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)


def upsampling_note(image: Image.Image, size: int) -> str | None:
    """A sentence when ``image`` is smaller than the model input ``size``, else ``None``.

    Example:
        >>> from PIL import Image
        >>> upsampling_note(Image.new("RGB", (100, 56)), 224)
        'the image (100 x 56 px) is smaller than the model input (224 px): upsampled 4.0x'
        >>> upsampling_note(Image.new("RGB", (300, 300)), 224) is None
        True
    """
    shorter = min(image.size)
    if shorter >= size:
        return None
    return (
        f"the image ({image.width} x {image.height} px) is smaller than the model input "
        f"({size} px): upsampled {size / shorter:.1f}x"
    )


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
