"""Image files: bad inputs give ImageLoadError naming the file; image modes convert as documented.

Expected pixels are computed independently from the arrays written to disk
(formulas for alpha compositing, CMYK and bit-depth scaling), not from
``load_image`` itself.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dense_readout import Preprocess, load_image
from dense_readout.errors import DenseReadoutError, ImageLoadError

RNG = np.random.default_rng(0)


def rgb_array(height: int = 24, width: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_png16(path: Path, array: np.ndarray) -> Path:
    """Minimal 16-bit PNG writer (gray, gray+alpha, RGB, RGBA), independent of PIL."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


# -- unreadable files -----------------------------------------------------------------
def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.jpg"
    with pytest.raises(ImageLoadError, match="nowhere.jpg: no such file"):
        load_image(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_not_an_image(tmp_path, content):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="fake.jpg: not a readable image"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(rgb_array(64, 64)).save(whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\{suffix}: cannot decode image.*truncated"):
        load_image(cut)


def test_errors_are_the_package_errors(tmp_path):
    """One except clause catches every load failure; OSError users are served too."""
    with pytest.raises(DenseReadoutError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(OSError):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.fromarray(rgb_array(40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2 × limit → PIL refuses
    with pytest.raises(ImageLoadError, match="huge.png: too large"):
        load_image(path)


# -- documented conversions ----------------------------------------------------------
def test_rgb_is_unchanged(tmp_path):
    array = rgb_array()
    Image.fromarray(array).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb.png")), array)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_grayscale_is_replicated(tmp_path, suffix):
    gray = rgb_array()[..., 0]
    path = tmp_path / f"gray{suffix}"
    Image.fromarray(gray).save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    image = load_image(path)
    out = np.asarray(image)
    assert image.mode == "RGB" and out.shape == (*gray.shape, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    tolerance = 0 if suffix == ".png" else 3  # JPEG is lossy
    assert np.abs(out[..., 0].astype(int) - gray.astype(int)).max() <= tolerance


def test_one_bit_image(tmp_path):
    bits = rgb_array()[..., 0] > 127
    Image.fromarray(bits).save(tmp_path / "bw.png")
    out = np.asarray(load_image(tmp_path / "bw.png"))
    np.testing.assert_array_equal(out[..., 1], np.where(bits, 255, 0))


def test_rgba_is_composited_on_white(tmp_path):
    colour = rgb_array()
    alpha = RNG.integers(0, 256, colour.shape[:2], dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    Image.fromarray(np.dstack([colour, alpha])).save(tmp_path / "rgba.png")
    out = np.asarray(load_image(tmp_path / "rgba.png")).astype(float)
    a = alpha[..., None] / 255.0
    expected = colour * a + 255.0 * (1 - a)
    assert np.abs(out - expected).max() <= 1.0
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == tuple(colour[0, 1].astype(float))


def test_palette_with_transparency_and_gray_alpha(tmp_path):
    gray = rgb_array()[..., 0]
    alpha = np.zeros_like(gray)
    Image.fromarray(np.dstack([gray, alpha])).convert("LA").save(tmp_path / "la.png")
    assert (np.asarray(load_image(tmp_path / "la.png")) == 255).all()  # fully transparent → white
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=1)
    assert (np.asarray(load_image(tmp_path / "p.png")) == 255).all()


def test_cmyk_uses_the_subtractive_formula(tmp_path):
    cmyk = RNG.integers(0, 256, (16, 20, 4), dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.tif")
    out = np.asarray(load_image(tmp_path / "cmyk.tif")).astype(float)
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    expected = (255 - c) * (255 - k) / 255
    assert np.abs(out - expected).max() <= 1.0


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    Image.fromarray(rgb_array()).convert("CMYK").save(tmp_path / "cmyk.jpg")
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.mode == "RGB" and image.size == (32, 24)


def test_16bit_grayscale_png_scales_full_range(tmp_path):
    values = RNG.integers(0, 65536, (24, 32)).astype(np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    out = np.asarray(load_image(write_png16(tmp_path / "g16.png", values)))
    np.testing.assert_array_equal(out[..., 0], np.round(values / 65535 * 255).astype(np.uint8))
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_dark_grayscale_is_not_stretched(tmp_path):
    """A dim 16-bit image stays dim (full-range scaling, not min–max)."""
    values = RNG.integers(0, 1000, (24, 32)).astype(np.uint16)
    out = np.asarray(load_image(write_png16(tmp_path / "dark.png", values)))
    assert out.max() <= round(999 / 65535 * 255)


def test_16bit_rgb_png_keeps_the_high_byte(tmp_path):
    values = RNG.integers(0, 65536, (24, 32, 3)).astype(np.uint16)
    out = np.asarray(load_image(write_png16(tmp_path / "rgb16.png", values)))
    np.testing.assert_array_equal(out, (values >> 8).astype(np.uint8))


def test_16bit_rgba_png(tmp_path):
    values = RNG.integers(0, 65536, (24, 32, 4)).astype(np.uint16)
    values[..., 3] = 65535  # opaque: compositing leaves the colour
    out = np.asarray(load_image(write_png16(tmp_path / "rgba16.png", values)))
    np.testing.assert_array_equal(out, (values[..., :3] >> 8).astype(np.uint8))


def test_16bit_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    gray = RNG.integers(0, 65536, (24, 32)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g16.tif", gray)
    out = np.asarray(load_image(tmp_path / "g16.tif"))
    np.testing.assert_array_equal(out[..., 0], np.round(gray / 65535 * 255).astype(np.uint8))
    colour = RNG.integers(0, 65536, (24, 32, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", colour)
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "rgb16.tif")), (colour >> 8).astype(np.uint8)
    )


def test_float_tiff_in_unit_range_and_outside(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    unit = RNG.random((24, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", unit)
    out = np.asarray(load_image(tmp_path / "unit.tif"))
    np.testing.assert_array_equal(
        out[..., 0], np.round(unit.astype(np.float64) * 255).astype(np.uint8)
    )
    wide = (unit * 40 - 7).astype(np.float32)  # not in [0, 1]: min–max
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    out = np.asarray(load_image(tmp_path / "wide.tif")).astype(int)
    expected = np.round((wide - wide.min()) / (wide.max() - wide.min()) * 255)
    assert np.abs(out[..., 0] - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_float_tiff_with_nan_is_refused(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = RNG.random((8, 8)).astype(np.float32)
    values[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values)
    with pytest.raises(ImageLoadError, match="nan.tif.*NaN"):
        load_image(tmp_path / "nan.tif")


def test_32bit_integer_image_in_8bit_range(tmp_path):
    values = RNG.integers(0, 256, (24, 32)).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    out = np.asarray(load_image(tmp_path / "i32.tif"))
    np.testing.assert_array_equal(out[..., 0], values.astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:6, :6] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(array).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    out = np.asarray(load_image(tmp_path / "phone.jpg")).astype(int)
    assert out.shape == (40, 20, 3)
    assert out[:5, -5:, 0].mean() > 200 and out[:5, -5:, 1].mean() < 50  # now top-right
    assert out[:5, :5, 0].mean() < 50


def test_exif_orientation_can_be_skipped_for_the_stored_frame(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:6, :6] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    out = np.asarray(load_image(tmp_path / "phone.jpg", exif_transpose=False)).astype(int)
    assert out.shape == (20, 40, 3)  # as stored, not rotated
    assert out[:5, :5, 0].mean() > 200 and out[:5, :5, 1].mean() < 50  # still top-left
    assert load_image(tmp_path / "phone.jpg", exif_transpose=False).mode == "RGB"


def test_animated_gif_gives_the_first_frame(tmp_path):
    first, second = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    Image.fromarray(first).save(
        tmp_path / "anim.gif", save_all=True, append_images=[Image.fromarray(second)]
    )
    assert (np.asarray(load_image(tmp_path / "anim.gif")) == 0).all()


def test_every_mode_reaches_the_model_as_a_finite_rgb_tensor(tmp_path):
    """Grayscale, RGBA, CMYK and 16-bit files all preprocess to 3×224×224 finite tensors."""
    base = rgb_array(60, 80)
    paths = []
    Image.fromarray(base[..., 0]).save(p := tmp_path / "g.png")
    paths.append(p)
    Image.fromarray(np.dstack([base, base[..., 0]])).save(p := tmp_path / "a.png")
    paths.append(p)
    Image.fromarray(base).convert("CMYK").save(p := tmp_path / "c.jpg")
    paths.append(p)
    paths.append(write_png16(tmp_path / "s.png", base[..., 0].astype(np.uint16) * 257))
    preprocess = Preprocess()
    for path in paths:
        tensor = preprocess(load_image(path))
        assert tuple(tensor.shape) == (3, 224, 224), path
        assert bool(tensor.isfinite().all()), path
