"""Tests for deconv_cli.io: reading, scaling, writing, atomic writes, output paths.

Oracles: files are made and checked with imageio, tifffile, pypng, Pillow and numpy
directly, and expected values are computed by hand.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import png
import pytest
import tifffile
from PIL import Image as PILImage

from deconv_cli import atomic, codecs, config, formats, io
from deconv_cli.errors import DeconvError, InputError, OutputError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def _png16(path: Path, array: np.ndarray) -> None:
    """Write a 16-bit PNG with pypng (Pillow cannot write 16-bit colour)."""
    height, width = array.shape[:2]
    planes = 1 if array.ndim == 2 else array.shape[2]
    writer = png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16)
    with open(path, "wb") as fh:
        writer.write(fh, array.reshape(height, -1))


def _read_png16(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    assert info["bitdepth"] == 16
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, -1)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- reading: scaling


def test_uint8_scaled_by_255(tmp_path):
    raw = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", raw)
    image = io.read_image(tmp_path / "a.png")
    assert image.data.dtype == np.float64
    assert image.source_dtype == np.uint8
    np.testing.assert_array_equal(image.data, [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]])
    assert image.alpha is None
    assert image.path == tmp_path / "a.png"


def test_uint16_scaled_by_65535(tmp_path):
    raw = np.array([[0, 13107, 65535]], dtype=np.uint16)
    iio.imwrite(tmp_path / "a.png", raw)
    image = io.read_image(tmp_path / "a.png")
    assert image.source_dtype == np.uint16
    assert image.data.dtype == np.float64
    np.testing.assert_array_equal(image.data, [[0.0, 0.2, 1.0]])


def test_bool_png_reads_as_zero_one(tmp_path):
    raw = np.array([[True, False], [False, True]])
    iio.imwrite(tmp_path / "b.png", raw)
    image = io.read_image(tmp_path / "b.png")
    assert image.source_dtype == np.bool_
    assert image.data.dtype == np.float64
    np.testing.assert_array_equal(image.data, [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=["f32", "f64"])
def test_float_tiff_kept_exactly(tmp_path, rng, dtype):
    raw = (rng.standard_normal((7, 5, 3)) * 10).astype(dtype)
    tifffile.imwrite(tmp_path / "f.tif", raw, photometric="rgb")
    image = io.read_image(tmp_path / "f.tif")
    assert image.data.dtype == np.dtype(dtype)
    assert image.source_dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image.data, raw)


def test_float16_npy_widened_to_float32(tmp_path):
    raw = np.array([[0.5, -2.0], [1.25, 3.0]], dtype=np.float16)
    np.save(tmp_path / "h.npy", raw)
    image = io.read_image(tmp_path / "h.npy")
    assert image.data.dtype == np.float32
    assert image.source_dtype == np.float16
    np.testing.assert_array_equal(image.data, [[0.5, -2.0], [1.25, 3.0]])


def test_npy_values_kept_exactly_and_never_split(tmp_path, rng):
    raw = rng.standard_normal((4, 6, 4))
    np.save(tmp_path / "x.npy", raw)
    image = io.read_image(tmp_path / "x.npy")
    assert image.alpha is None
    assert image.data.dtype == np.float64
    np.testing.assert_array_equal(image.data, raw)


def test_npy_hx_wx1_stays_three_dimensional(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 4, 1)))
    assert io.read_image(tmp_path / "x.npy").data.shape == (3, 4, 1)


def test_big_endian_npy_becomes_native(tmp_path):
    raw = np.arange(6, dtype=">f8").reshape(2, 3)
    np.save(tmp_path / "be.npy", raw)
    image = io.read_image(tmp_path / "be.npy")
    assert image.source_dtype == np.dtype("float64")
    assert image.data.dtype.isnative
    np.testing.assert_array_equal(image.data, np.arange(6.0).reshape(2, 3))


def test_uint8_npy_scaled(tmp_path):
    np.save(tmp_path / "u.npy", np.array([[0, 255]], dtype=np.uint8))
    image = io.read_image(tmp_path / "u.npy")
    assert image.source_dtype == np.uint8
    np.testing.assert_array_equal(image.data, [[0.0, 1.0]])


def test_jpeg_and_bmp_read(tmp_path, rng):
    raw = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.bmp", raw)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.bmp").data, raw / 255)
    iio.imwrite(tmp_path / "a.jpg", raw)
    expected = iio.imread(tmp_path / "a.jpg")
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.jpg").data, expected / 255)


def test_format_recognised_from_content_not_name(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", raw)
    os.replace(tmp_path / "a.png", tmp_path / "really-a-png.tif")
    np.testing.assert_array_equal(io.read_image(tmp_path / "really-a-png.tif").data, raw / 255)


def test_16bit_rgb_png_read_exactly(tmp_path, rng):
    raw = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    _png16(tmp_path / "c.png", raw)
    image = io.read_image(tmp_path / "c.png")
    assert image.source_dtype == np.uint16
    np.testing.assert_array_equal(image.data, raw / 65535)


def test_palette_png_becomes_rgb(tmp_path, rng):
    rgb = PILImage.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    rgb.convert("P").save(tmp_path / "p.png")
    expected = np.asarray(PILImage.open(tmp_path / "p.png").convert("RGB"))
    image = io.read_image(tmp_path / "p.png")
    assert image.alpha is None
    np.testing.assert_array_equal(image.data, expected / 255)


def test_palette_png_with_transparency_splits_alpha(tmp_path):
    indices = np.array([[0, 1], [1, 2]], dtype=np.uint8)
    pal = PILImage.fromarray(indices, mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    pal.save(tmp_path / "p.png", transparency=1)
    image = io.read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image.alpha, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(image.data[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(image.data[1, 1], [0.0, 0.0, 1.0])


def test_cmyk_jpeg_becomes_rgb(tmp_path, rng):
    rgb = PILImage.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    expected = np.asarray(PILImage.open(tmp_path / "c.jpg").convert("RGB"))
    image = io.read_image(tmp_path / "c.jpg")
    assert image.data.shape == (6, 5, 3)
    assert image.alpha is None
    np.testing.assert_array_equal(image.data, expected / 255)


def test_planar_tiff_read_channels_last(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "s.tif", np.moveaxis(raw, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(io.read_image(tmp_path / "s.tif").data, raw / 255)


def test_lzw_tiff_read(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    PILImage.fromarray(raw).save(tmp_path / "l.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(io.read_image(tmp_path / "l.tif").data, raw / 255)


def test_tiff_four_unspecified_channels_are_data(tmp_path, rng):
    raw = rng.random((4, 5, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "u.tif", raw, photometric="rgb", extrasamples=(0,))
    image = io.read_image(tmp_path / "u.tif")
    assert image.alpha is None
    np.testing.assert_array_equal(image.data, raw)


def test_single_frame_gif_read(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.gif", raw)
    expected = iio.imread(tmp_path / "a.gif", index=0)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.gif").data, expected / 255)


# --------------------------------------------------------------------------- reading: alpha


def test_rgba_png_alpha_split(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", raw)
    image = io.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image.data, raw[:, :, :3] / 255)
    np.testing.assert_array_equal(image.alpha, raw[:, :, 3] / 255)


def test_gray_alpha_png_alpha_split(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 2), dtype=np.uint8)
    iio.imwrite(tmp_path / "la.png", raw)
    image = io.read_image(tmp_path / "la.png")
    assert image.data.shape == (5, 6)
    np.testing.assert_array_equal(image.data, raw[:, :, 0] / 255)
    np.testing.assert_array_equal(image.alpha, raw[:, :, 1] / 255)


def test_float_tiff_alpha_split(tmp_path, rng):
    raw = rng.random((4, 5, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", raw, photometric="rgb", extrasamples=(2,))
    image = io.read_image(tmp_path / "a.tif")
    assert image.alpha.dtype == np.float32
    np.testing.assert_array_equal(image.data, raw[:, :, :3])
    np.testing.assert_array_equal(image.alpha, raw[:, :, 3])


# --------------------------------------------------------------------------- reading: errors


def _write_truncated_png(path: Path, rng) -> None:
    iio.imwrite(path, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_truncated_tiff(path: Path, rng) -> None:
    tifffile.imwrite(path, rng.random((32, 32)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_truncated_npy(path: Path, rng) -> None:
    np.save(path, rng.random((32, 32)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "missing": (lambda p, rng: None, "no such file"),
    "directory": (lambda p, rng: p.mkdir(), "is a directory"),
    "empty": (lambda p, rng: p.write_bytes(b""), "is empty"),
    "text-named-png": (lambda p, rng: p.write_text("hello\n"), "not a recognised image"),
    "truncated-png": (_write_truncated_png, "cannot be read as an image"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_unreadable_png_is_input_error(tmp_path, rng, case):
    make, reason = BAD_FILES[case]
    path = tmp_path / "x.png"
    make(path, rng)
    with pytest.raises(InputError) as info:
        io.read_image(path)
    message = str(info.value)
    assert f"`{path}`" in message
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, make",
    [("x.tif", _write_truncated_tiff), ("x.npy", _write_truncated_npy)],
    ids=["tiff", "npy"],
)
def test_truncated_files_are_input_errors(tmp_path, rng, name, make):
    make(tmp_path / name, rng)
    with pytest.raises(InputError, match=r"`.*x\.(tif|npy)`"):
        io.read_image(tmp_path / name)


def test_text_named_npy(tmp_path):
    (tmp_path / "x.npy").write_text("1 2 3\n")
    with pytest.raises(InputError, match="not a .npy file"):
        io.read_image(tmp_path / "x.npy")


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickle_named_npy_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    (tmp_path / "x.npy").write_bytes(pickle.dumps(_Tripwire(sentinel)))
    with pytest.raises(InputError, match="pickled"):
        io.read_image(tmp_path / "x.npy")
    assert not sentinel.exists()


def test_object_array_npy_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    array = np.empty((2, 2), dtype=object)
    array[0, 0] = _Tripwire(sentinel)
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    with pytest.raises(InputError, match="pickled"):
        io.read_image(tmp_path / "x.npy")
    assert not sentinel.exists()


def test_npz_named_npy(tmp_path):
    with open(tmp_path / "x.npy", "wb") as fh:
        np.savez(fh, a=np.ones((2, 2)))
    with pytest.raises(InputError, match="npz"):
        io.read_image(tmp_path / "x.npy")


def test_nan_pixels_counted(tmp_path):
    raw = np.zeros((4, 4))
    raw[0, 0] = np.nan
    raw[1, 2] = np.inf
    raw[3, 3] = -np.inf
    np.save(tmp_path / "x.npy", raw)
    with pytest.raises(InputError, match=r"`.*x\.npy` has 3 NaN/Inf pixels"):
        io.read_image(tmp_path / "x.npy")


def test_nan_counted_per_pixel_not_per_channel(tmp_path):
    raw = np.zeros((3, 3, 3), dtype=np.float32)
    raw[0, 0, :2] = np.nan
    raw[2, 1, 2] = np.inf
    tifffile.imwrite(tmp_path / "x.tif", raw, photometric="rgb")
    with pytest.raises(InputError, match="has 2 NaN/Inf pixels"):
        io.read_image(tmp_path / "x.tif")


BAD_ARRAYS = {
    "4-D": (np.zeros((2, 3, 4, 1)), "4-D"),
    "1-D": (np.zeros(5), "1-D"),
    "zero-size": (np.zeros((0, 4)), "is empty"),
    "5-channels": (np.zeros((3, 4, 5)), "shape 3×4×5 is ambiguous"),
    "channels-first": (np.zeros((3, 16, 16)), "shape 3×16×16 is ambiguous"),
    "int16": (np.zeros((3, 4), dtype=np.int16), "`int16`"),
    "uint32": (np.zeros((3, 4), dtype=np.uint32), "`uint32`"),
    "int64": (np.zeros((3, 4), dtype=np.int64), "`int64`"),
    "complex": (np.zeros((3, 4), dtype=np.complex128), "`complex128`"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS), ids=list(BAD_ARRAYS))
def test_bad_npy_arrays_are_input_errors(tmp_path, case):
    array, fragment = BAD_ARRAYS[case]
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InputError) as info:
        io.read_image(tmp_path / "x.npy")
    assert fragment in str(info.value)
    assert "`" in str(info.value)


def test_unsupported_dtype_message_lists_supported(tmp_path):
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((3, 4), dtype=np.int16))
    with pytest.raises(InputError, match=r"`int16`; supported: bool, uint8, uint16"):
        io.read_image(tmp_path / "x.tif")


def test_max_channels_none_accepts_feature_maps(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4, 8)))
    assert io.read_image(tmp_path / "x.npy", max_channels=None).data.shape == (3, 4, 8)


def test_multi_frame_gif_refused(tmp_path, rng):
    frames = rng.integers(0, 256, (3, 5, 6, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.gif", list(frames))
    with pytest.raises(InputError, match="3 frames"):
        io.read_image(tmp_path / "a.gif")


def test_multi_page_tiff_refused(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((5, 6), np.float32))
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((5, 6), np.float32), append=True)
    with pytest.raises(InputError, match="2 TIFF pages"):
        io.read_image(tmp_path / "m.tif")


# --------------------------------------------------------------------------- pixel limit


@pytest.mark.parametrize(
    "name, make",
    [
        ("a.png", lambda p: iio.imwrite(p, np.zeros((16, 16), np.uint8))),
        ("a.npy", lambda p: np.save(p, np.zeros((16, 16)))),
        ("a.tif", lambda p: tifffile.imwrite(p, np.zeros((16, 16), np.float32))),
        ("c.png", lambda p: _png16(p, np.zeros((16, 16, 3), np.uint16))),
    ],
    ids=["png", "npy", "tiff", "png16-rgb"],
)
def test_pixel_limit_from_environment(tmp_path, monkeypatch, name, make):
    make(tmp_path / name)
    monkeypatch.setenv("DECONV_MAX_PIXELS", "200")
    expected = r"256 pixels \(16×16\), above the limit of 200; set DECONV_MAX_PIXELS"
    with pytest.raises(InputError, match=expected):
        io.read_image(tmp_path / name)
    monkeypatch.setenv("DECONV_MAX_PIXELS", "256")
    assert io.read_image(tmp_path / name).data.shape[:2] == (16, 16)


def test_pixel_limit_far_exceeded_never_decodes(tmp_path, monkeypatch):
    from PIL import ImageFile

    iio.imwrite(tmp_path / "a.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setenv("DECONV_MAX_PIXELS", "100")

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels decoded before the limit was checked")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(InputError, match=r"1,600 pixels \(40×40\), above the limit of 100"):
            io.read_image(tmp_path / "a.png")
    assert PILImage.MAX_IMAGE_PIXELS is not None
    monkeypatch.delenv("DECONV_MAX_PIXELS")
    assert io.read_image(tmp_path / "a.png").data.shape == (40, 40)


def test_default_pixel_limit(monkeypatch):
    monkeypatch.delenv("DECONV_MAX_PIXELS", raising=False)
    assert config.current().max_pixels == 2**28


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"], ids=["word", "zero", "neg", "float"])
def test_bad_pixel_limit_value(tmp_path, monkeypatch, value):
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    monkeypatch.setenv("DECONV_MAX_PIXELS", value)
    with pytest.raises(InputError, match="DECONV_MAX_PIXELS"):
        io.read_image(tmp_path / "a.npy")


# --------------------------------------------------------------------------- writing: round trips


def test_uint8_png_round_trip_exact(tmp_path, rng):
    raw = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    result = io.write_image(tmp_path / "o.png", raw / 255, source_dtype=np.uint8)
    assert result.dtype == np.uint8
    assert result.clipped == 0
    assert result.path == tmp_path / "o.png"
    written = iio.imread(tmp_path / "o.png")
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written, raw)


def test_uint16_gray_png_round_trip_exact(tmp_path, rng):
    raw = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    iio.imwrite(tmp_path / "in.png", raw)
    image = io.read_image(tmp_path / "in.png")
    io.write_image(tmp_path / "o.png", image.data, source_dtype=image.source_dtype)
    written = iio.imread(tmp_path / "o.png")
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written, raw)


@pytest.mark.parametrize("channels", [2, 3, 4], ids=["LA", "RGB", "RGBA"])
def test_uint16_colour_png_round_trip_exact(tmp_path, rng, channels):
    raw = rng.integers(0, 65536, (5, 6, channels), dtype=np.uint16)
    _png16(tmp_path / "in.png", raw)
    image = io.read_image(tmp_path / "in.png")
    result = io.write_image(
        tmp_path / "o.png", image.data, source_dtype=image.source_dtype, alpha=image.alpha
    )
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(_read_png16(tmp_path / "o.png"), raw)


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=["f32", "f64"])
def test_float_tiff_round_trip_exact(tmp_path, rng, dtype):
    raw = (rng.standard_normal((6, 5, 3)) * 3).astype(dtype)
    result = io.write_image(tmp_path / "o.tif", raw)
    assert result.dtype == np.dtype(dtype)
    assert result.clipped == 0
    written = tifffile.imread(tmp_path / "o.tif")
    assert written.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(written, raw)
    np.testing.assert_array_equal(io.read_image(tmp_path / "o.tif").data, raw)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_integer_tiff_round_trip_exact(tmp_path, rng, dtype):
    top = np.iinfo(dtype).max
    raw = rng.integers(0, top + 1, (6, 5), dtype=dtype)
    io.write_image(tmp_path / "o.tif", raw / top, dtype=dtype)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif"), raw)


def test_npy_round_trip_exact_float64(tmp_path, rng):
    raw = rng.standard_normal((6, 5))
    result = io.write_image(tmp_path / "o.npy", raw)
    assert result.dtype == np.float64
    loaded = np.load(tmp_path / "o.npy", allow_pickle=False)
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, raw)


def test_npy_keeps_many_channels_and_hx_wx1(tmp_path):
    io.write_image(tmp_path / "a.npy", np.ones((3, 4, 9)))
    io.write_image(tmp_path / "b.npy", np.ones((3, 4, 1)))
    assert np.load(tmp_path / "a.npy").shape == (3, 4, 9)
    assert np.load(tmp_path / "b.npy").shape == (3, 4, 1)


def test_bmp_round_trip_exact(tmp_path, rng):
    raw = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    io.write_image(tmp_path / "o.bmp", raw / 255)
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.bmp"), raw)


def test_jpeg_written_as_close_uint8(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    result = io.write_image(tmp_path / "o.jpg", ramp)
    assert result.dtype == np.uint8
    written = iio.imread(tmp_path / "o.jpg")
    assert written.dtype == np.uint8
    assert np.abs(written / 255 - ramp).max() < 4 / 255


def test_float_output_not_clipped(tmp_path):
    raw = np.array([[-0.5, 0.25], [1.5, 2.0]], dtype=np.float32)
    result = io.write_image(tmp_path / "o.tif", raw)
    assert result.clipped == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif"), raw)


# --------------------------------------------------------------------------- rounding, clipping


def test_rounding_to_nearest(tmp_path):
    data = np.array([[0.3, 0.7, 100.4, 100.6, 254.6]]) / 255
    io.write_image(tmp_path / "o.png", data, dtype="uint8")
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), [[0, 1, 100, 101, 255]])


def test_clip_count_hand_computed_gray(tmp_path):
    # -0.1 -> -25.5 -> clipped; 1.2 -> 306 -> clipped; 1 + 0.4/255 -> 255.4 rounds to 255:
    # not clipped; -0.4/255 rounds to 0: not clipped.
    data = np.array([[-0.1, 0.0, 0.4], [1.0, 1.2, 1.0 + 0.4 / 255], [-0.4 / 255, 0.5, 0.2]])
    result = io.write_image(tmp_path / "o.png", data, dtype="uint8")
    assert result.clipped == 2
    np.testing.assert_array_equal(
        iio.imread(tmp_path / "o.png"), [[0, 0, 102], [255, 255, 255], [0, 128, 51]]
    )


def test_clip_count_is_per_pixel(tmp_path):
    data = np.full((2, 2, 3), 0.5)
    data[0, 0] = [-1.0, 2.0, 0.5]  # two channels clipped: one pixel
    data[1, 1] = [0.5, 0.5, 1.5]
    result = io.write_image(tmp_path / "o.png", data, dtype="uint8")
    assert result.clipped == 2
    written = iio.imread(tmp_path / "o.png")
    np.testing.assert_array_equal(written[0, 0], [0, 255, 128])
    np.testing.assert_array_equal(written[1, 1], [128, 128, 255])


def test_clip_uint16(tmp_path):
    data = np.array([[1.5, 0.2, -3.0]])
    result = io.write_image(tmp_path / "o.png", data, dtype="uint16")
    assert result.clipped == 2
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), [[65535, 13107, 0]])


def test_non_finite_to_integer_refused(tmp_path):
    data = np.array([[0.1, np.nan]])
    with pytest.raises(OutputError, match="NaN/Inf"):
        io.write_image(tmp_path / "o.png", data)
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- writing: dtype choice


@pytest.mark.parametrize(
    "name, source, expected",
    [
        ("o.png", "uint16", "uint16"),
        ("o.png", "float32", "uint16"),
        ("o.png", "bool", "uint8"),
        ("o.jpg", "uint16", "uint8"),
        ("o.bmp", "float64", "uint8"),
        ("o.tif", "uint8", "uint8"),
        ("o.tif", "float16", "float32"),
        ("o.npy", "uint16", "uint16"),
        ("o.npy", "float32", "float32"),
    ],
    ids=lambda v: str(v),
)
def test_output_dtype_follows_source_adapted_to_format(tmp_path, name, source, expected):
    result = io.write_image(tmp_path / name, np.full((4, 4), 0.5), source_dtype=np.dtype(source))
    assert result.dtype == np.dtype(expected)
    if name.endswith(".npy"):
        assert np.load(tmp_path / name).dtype == np.dtype(expected)
    elif name.endswith(".tif"):
        assert tifffile.imread(tmp_path / name).dtype == np.dtype(expected)
    else:
        assert iio.imread(tmp_path / name).dtype == np.dtype(expected)


def test_output_dtype_defaults_to_data_dtype(tmp_path):
    result = io.write_image(tmp_path / "o.tif", np.zeros((3, 3), np.float32))
    assert result.dtype == np.float32


def test_explicit_dtype_beats_source(tmp_path):
    result = io.write_image(
        tmp_path / "o.tif", np.zeros((3, 3)), dtype="float32", source_dtype=np.uint8
    )
    assert result.dtype == np.float32
    assert tifffile.imread(tmp_path / "o.tif").dtype == np.float32


@pytest.mark.parametrize(
    "name, dtype, hint",
    [("o.png", "float32", ".tif or .npy"), ("o.jpg", "uint16", ".png or .tif")],
    ids=["float-png", "uint16-jpeg"],
)
def test_explicit_dtype_the_format_cannot_hold(tmp_path, name, dtype, hint):
    with pytest.raises(OutputError, match=rf"not {dtype}; write {hint}"):
        io.write_image(tmp_path / name, np.zeros((3, 3)), dtype=dtype)


@pytest.mark.parametrize("name", ["o.gif", "o.xyz", "noext"], ids=["gif", "xyz", "none"])
def test_unknown_extension_lists_supported(tmp_path, name):
    with pytest.raises(OutputError, match=r"`\.png`, `\.jpg`.*`\.npy`"):
        io.write_image(tmp_path / name, np.zeros((3, 3)))


def test_too_many_channels_for_png(tmp_path):
    with pytest.raises(OutputError, match="write .npy"):
        io.write_image(tmp_path / "o.png", np.zeros((3, 3, 5)))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("uint8", "uint8"),
        ("UINT16", "uint16"),
        (" float32 ", "float32"),
        ("float64", "float64"),
        (np.dtype("float32"), "float32"),
    ],
    ids=["u8", "upper", "spaces", "f64", "dtype"],
)
def test_parse_dtype(value, expected):
    assert formats.parse_dtype(value) == np.dtype(expected)


def test_parse_dtype_none():
    assert formats.parse_dtype(None) is None


@pytest.mark.parametrize("value", ["int16", "float", "u8", "", "bool"])
def test_parse_dtype_rejects(value):
    with pytest.raises(OutputError, match=r"^dtype: .* is not one of `uint8`, `uint16`"):
        formats.parse_dtype(value)


# --------------------------------------------------------------------------- writing: alpha


def test_rgba_png_alpha_rejoined_exactly(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "in.png", raw)
    image = io.read_image(tmp_path / "in.png")
    io.write_image(
        tmp_path / "o.png", image.data, source_dtype=image.source_dtype, alpha=image.alpha
    )
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), raw)


def test_gray_alpha_png_rejoined_exactly(tmp_path, rng):
    raw = rng.integers(0, 256, (5, 6, 2), dtype=np.uint8)
    iio.imwrite(tmp_path / "in.png", raw)
    image = io.read_image(tmp_path / "in.png")
    io.write_image(tmp_path / "o.png", image.data, alpha=image.alpha, source_dtype=np.uint8)
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), raw)


def test_tiff_alpha_rejoined_with_alpha_tag(tmp_path, rng):
    data = rng.random((4, 5, 3)).astype(np.float32)
    alpha = rng.random((4, 5)).astype(np.float32)
    io.write_image(tmp_path / "o.tif", data, alpha=alpha)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        page = tif.pages[0]
        assert tuple(int(e) for e in page.extrasamples) == (2,)
        written = page.asarray()
    np.testing.assert_array_equal(written, np.dstack([data, alpha]))


def test_alpha_dropped_for_jpeg(tmp_path):
    result = io.write_image(tmp_path / "o.jpg", np.zeros((4, 4, 3)), alpha=np.ones((4, 4)))
    assert result.alpha_dropped
    assert iio.imread(tmp_path / "o.jpg").shape == (4, 4, 3)


def test_alpha_converted_to_output_dtype(tmp_path):
    data = np.zeros((1, 2))
    alpha = np.array([[1.0, 0.2]])
    io.write_image(tmp_path / "o.png", data, alpha=alpha, dtype="uint16")
    np.testing.assert_array_equal(_read_png16(tmp_path / "o.png")[..., 1], [[65535, 13107]])


def test_alpha_shape_mismatch(tmp_path):
    with pytest.raises(OutputError, match="alpha shape"):
        io.write_image(tmp_path / "o.png", np.zeros((4, 4)), alpha=np.ones((3, 4)))


# --------------------------------------------------------------------------- atomic writes


def test_failing_writer_leaves_no_temp_file(tmp_path):
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(OutputError, match=r"`.*o\.png` cannot be written: disk on fire"):
        atomic.atomic_write(tmp_path / "o.png", write, overwrite=False)
    assert _listing(tmp_path) == []


def test_failing_writer_keeps_existing_output(tmp_path):
    (tmp_path / "o.png").write_bytes(b"old")

    def write(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left on device"):
        atomic.atomic_write(tmp_path / "o.png", write, overwrite=True)
    assert _listing(tmp_path) == ["o.png"]
    assert (tmp_path / "o.png").read_bytes() == b"old"


def test_interrupt_removes_temp_file_and_propagates(tmp_path):
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(tmp_path / "o.npy", write, overwrite=False)
    assert _listing(tmp_path) == []


def test_failing_format_writer_in_write_image(tmp_path, monkeypatch):
    def broken(tmp, pixels, has_alpha):
        Path(tmp).write_bytes(b"half a png")
        raise ValueError("encoder exploded")

    monkeypatch.setattr(codecs, "write_png", broken)
    with pytest.raises(OutputError, match="encoder exploded"):
        io.write_image(tmp_path / "o.png", np.zeros((3, 3)))
    assert _listing(tmp_path) == []


def test_temp_file_is_beside_output_with_same_extension(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"ok")

    atomic.atomic_write(tmp_path / "o.tif", write, overwrite=False)
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".deconv-")
    assert seen[0].suffix == ".tif"
    assert _listing(tmp_path) == ["o.tif"]


def test_new_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_image(tmp_path / "o.npy", np.zeros((2, 2)))
    finally:
        os.umask(old)
    assert (tmp_path / "o.npy").stat().st_mode & 0o777 == 0o644


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "o.npy").write_bytes(b"old")
    with pytest.raises(OutputError, match=r"`.*o\.npy` exists; use `overwrite=True`"):
        io.write_image(tmp_path / "o.npy", np.ones((2, 2)))
    assert (tmp_path / "o.npy").read_bytes() == b"old"
    io.write_image(tmp_path / "o.npy", np.ones((2, 2)), overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.ones((2, 2)))


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink"])
def test_never_writes_over_an_input(tmp_path, spelling):
    source = tmp_path / "in.npy"
    np.save(source, np.zeros((2, 2)))
    (tmp_path / "sub").mkdir()
    target = {
        "same": source,
        "dotdot": tmp_path / "sub" / ".." / "in.npy",
        "symlink": tmp_path / "sub" / "link.npy",
    }[spelling]
    if spelling == "symlink":
        target.symlink_to(source)
    with pytest.raises(OutputError, match="is an input"):
        io.write_image(target, np.ones((2, 2)), overwrite=True, inputs=[source])
    np.testing.assert_array_equal(np.load(source), np.zeros((2, 2)))


def test_missing_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        io.write_image(tmp_path / "nope" / "o.png", np.zeros((2, 2)))


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"`.*file` is a file, not a directory"):
        io.write_image(tmp_path / "file" / "o.png", np.zeros((2, 2)))


def test_output_is_a_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        io.write_image(tmp_path / "d.png", np.zeros((2, 2)), overwrite=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write in"):
            io.write_image(locked / "o.png", np.zeros((2, 2)))
    finally:
        locked.chmod(0o700)


def test_unwritable_directory_simulated(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # creating the temporary file
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OutputError, match=r"cannot write in `.*`: permission denied"):
        io.write_image(tmp_path / "o.png", np.zeros((2, 2)))


def test_errors_are_deconv_errors():
    assert issubclass(InputError, DeconvError)
    assert issubclass(OutputError, DeconvError)


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize(
    "name, shape, dtype",
    [
        ("camera.png", (256, 256), "uint8"),
        ("astronaut.png", (256, 256, 3), "uint8"),
        ("camera16.png", (256, 256), "uint16"),
    ],
    ids=["camera", "astronaut", "camera16"],
)
def test_samples_read(name, shape, dtype):
    image = io.read_image(SAMPLES / name)
    assert image.data.shape == shape
    assert image.source_dtype == np.dtype(dtype)
    assert 0.0 <= image.data.min() and image.data.max() <= 1.0


def test_sample_16bit_uses_more_than_8_bits():
    raw = iio.imread(SAMPLES / "camera16.png")
    assert raw.dtype == np.uint16
    assert np.unique(raw).size > 256
