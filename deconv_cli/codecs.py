"""Decoders and encoders of the image formats (tifffile, imagecodecs, Pillow through imageio).

The registry (:mod:`deconv_cli.formats`) names these functions; :mod:`deconv_cli.io`
calls them. A reader checks the header (:func:`deconv_cli.formats.check_image_shape`)
before it decodes a pixel, and turns every decoder failure into one
:class:`~deconv_cli.errors.InputError` line; a writer encodes into a temporary file
that :func:`deconv_cli.atomic.atomic_write` renames into place.

Library choices (measured, see ``docs/development.md``): Pillow reads and writes
8-bit images and 16-bit greyscale PNG, but has no 16-bit colour mode (Pillow 13 cuts
16-bit colour PNGs to 8 bits and cannot write them), so 16-bit grey+alpha, RGB and
RGBA PNGs go through imagecodecs (libpng), exact both ways; it replaced pypng (pure
Python), which decoded them 4.4x slower and encoded them no faster. TIFF is
tifffile's (float pages, alpha tags; compressed pages decoded by imagecodecs);
palette and CMYK TIFFs go to Pillow.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from pathlib import Path

import numpy as np

from deconv_cli import fs
from deconv_cli.errors import InputError
from deconv_cli.formats import check_dtype, check_image_shape

# Pillow modes that imageio would return in a form we cannot use as is.
_PILLOW_CONVERT = {
    "PA": "RGBA",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "RGBX": "RGB",
    "RGBa": "RGBA",
    "La": "LA",
}


@contextlib.contextmanager
def tifffile_quiet():
    """Collect tifffile's logged complaints instead of printing them on stderr.

    Yields the list of messages, for the error when the file turns out unreadable.
    """
    import logging

    logger = logging.getLogger("tifffile")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(" ".join(record.getMessage().split()))

    handler = Collect(level=logging.WARNING)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def decode_error(path: Path, err: BaseException) -> InputError:
    return InputError(f"`{path}` cannot be read as an image: {fs.describe(err)}")


def main_pages(tif) -> list:
    """A TIFF's pages that are not reduced-resolution copies (thumbnails)."""
    return [page for page in tif.pages if not getattr(page, "is_reduced", False)]


def read_tiff(
    path: Path, head: bytes, limit: int, max_channels: int | None
) -> tuple[np.ndarray, bool]:
    """Read a one-page TIFF with tifffile; palette, CMYK, LZW, JPEG-in-TIFF go to Pillow."""
    import tifffile

    try:
        with tifffile_quiet() as complaints, tifffile.TiffFile(path) as tif:
            pages = main_pages(tif)
            if not pages:
                detail = f": {complaints[0]}" if complaints else ""
                raise InputError(f"`{path}` is a corrupt TIFF, no readable page{detail}")
            if len(pages) != 1:
                raise InputError(
                    f"`{path}` holds {len(pages)} TIFF pages; deconv reads one image per "
                    "file (save each page separately)"
                )
            page = pages[0]
            photometric = int(page.photometric)
            if photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
                return read_pillow(path, b"", limit, max_channels)
            axes = page.axes
            shape = dict(zip(axes, page.shape, strict=True))
            if set(axes) - {"Y", "X", "S"}:
                raise InputError(
                    f"`{path}` is a TIFF volume with axes `{axes}`; "
                    "deconv reads 2-D images (H×W or H×W×C)"
                )
            check_image_shape(
                path, tuple(shape[a] for a in "YXS" if a in shape), limit, max_channels
            )
            check_dtype(path, page.dtype)
            alpha_flags = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
            has_alpha = bool(page.extrasamples) and int(page.extrasamples[-1]) in alpha_flags
            array = page.asarray()
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise decode_error(path, err) from err
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    return array, has_alpha


def read_png(path: Path, head: bytes, limit: int, max_channels: int | None):
    """Read a PNG: 16-bit grey+alpha, RGB and RGBA with imagecodecs (exactly), the rest
    with Pillow."""
    if _png_is_16bit_colour(head):
        return _read_png16(path, head, limit, max_channels)
    return read_pillow(path, head, limit, max_channels)


def _png_is_16bit_colour(head: bytes) -> bool:
    """Whether a PNG header says 16-bit grey+alpha, RGB or RGBA (which Pillow cuts to 8 bits)."""
    if len(head) < 26 or head[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = head[24], head[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


_PNG_PLANES = {2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (RGB, grey+alpha, RGBA)


def _read_png16(
    path: Path, head: bytes, limit: int, max_channels: int | None
) -> tuple[np.ndarray, bool]:
    """Read a 16-bit colour or grey+alpha PNG with imagecodecs, exactly; the size is
    checked from the IHDR chunk (width, height: big-endian at bytes 16-24) first."""
    import imagecodecs

    width, height = struct.unpack(">II", head[16:24])
    planes = _PNG_PLANES[head[25]]
    check_image_shape(path, (height, width, planes), limit, max_channels)
    try:
        array = imagecodecs.png_decode(path.read_bytes())
    except MemoryError:
        raise
    except Exception as err:
        raise decode_error(path, err) from err
    if array.dtype != np.uint16 or array.shape != (height, width, planes):
        raise InputError(f"`{path}` cannot be read as an image: its PNG header is inconsistent")
    return array, planes in (2, 4)


@contextlib.contextmanager
def _pillow_guard_off():
    """Turn off Pillow's pixel limit while reading: ours is checked on the header first."""
    from PIL import Image as PILImage

    saved = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        PILImage.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _metadata_warnings_off():
    """Pillow warns (as UserWarning) about corrupt EXIF or TIFF tags it skips: not our data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def read_pillow(
    path: Path, head: bytes, limit: int, max_channels: int | None
) -> tuple[np.ndarray, bool]:
    """Read with imageio's Pillow plugin: the header first (shape, frames), then the pixels."""
    import imageio.v3 as iio

    try:
        with (
            _pillow_guard_off(),
            _metadata_warnings_off(),
            iio.imopen(path, "r", plugin="pillow") as file,
        ):
            props = file.properties()
            shape = props.shape
            if props.is_batch:
                if props.n_images != 1:
                    raise InputError(
                        f"`{path}` holds {props.n_images} frames; deconv reads one image "
                        "per file (save each frame separately)"
                    )
                shape = shape[1:]
            check_image_shape(path, shape, limit, max_channels)
            meta = file.metadata(index=0, exclude_applied=False)
            mode = meta.get("mode")
            convert = _PILLOW_CONVERT.get(mode)
            if mode == "P":
                convert = "RGBA" if "transparency" in meta else None
            array = file.read(index=0, mode=convert)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise decode_error(path, err) from err
    has_alpha = array.ndim == 3 and array.shape[2] in (2, 4)
    return array, has_alpha


def write_png(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        import imagecodecs  # Pillow cannot write 16-bit grey+alpha, RGB or RGBA

        with open(tmp, "wb") as fh:
            fh.write(imagecodecs.png_encode(pixels))
        return
    _pillow_write(tmp, pixels, ".png")


def _pillow_write(tmp: Path, pixels: np.ndarray, extension: str, **options) -> None:
    """Encode with imageio's Pillow plugin into a file this function opens and closes.

    Given a path, imageio keeps its own handle, whose failed close (a full disk) is
    raised again from a destructor, printing a traceback at exit.
    """
    import imageio.v3 as iio

    with open(tmp, "wb") as fh:
        iio.imwrite(fh, pixels, plugin="pillow", extension=extension, **options)


def write_jpeg(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    _pillow_write(tmp, pixels, ".jpg", quality=95, subsampling=0)


def write_bmp(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    _pillow_write(tmp, pixels, ".bmp")


def write_tiff(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    import tifffile

    if pixels.ndim == 2:
        tifffile.imwrite(tmp, pixels, photometric="minisblack")
        return
    channels = pixels.shape[2]
    extra = tifffile.EXTRASAMPLE.UNASSALPHA if has_alpha else tifffile.EXTRASAMPLE.UNSPECIFIED
    tifffile.imwrite(
        tmp,
        pixels,
        photometric="rgb" if channels >= 3 else "minisblack",
        planarconfig="contig",
        extrasamples=(extra,) if channels in (2, 4) else None,
    )
