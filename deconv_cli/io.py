"""Read and write images and arrays: dtype scaling, validation, atomic writes.

Reading
-------
:func:`read_image` reads PNG (8- and 16-bit, grey, grey+alpha, RGB, RGBA, palette),
JPEG, BMP, GIF and the other formats Pillow reads (through ``imageio.v3``), TIFF
(through ``tifffile``: uint8, uint16, float32, float64, one page) and ``.npy``
(``np.load(..., allow_pickle=False)``; a pickled file is refused, never unpickled).
The format is recognised from the file's first bytes, so a misnamed file is read
correctly or refused with a clear message.

Pixel values: ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1;
floats are kept as they are (``float16`` widened to ``float32``). The data is
``float64``, or ``float32`` when the file held ``float32`` or ``float16``. Other
pixel types (signed integers, ``uint32``, ``uint64``, complex, ...) are refused: their
scale is ambiguous, so convert them to float first.

Shapes: H×W or H×W×C with 1 ≤ C ≤ 4 (channels last); H×W×1 stays as read. In image
files a 2- or 4-channel image is grey+alpha or RGBA (TIFF: when its ExtraSamples tag
says alpha): the alpha channel is split off into :attr:`Image.alpha`, carried through
unfiltered and written back by :func:`write_image` when the caller passes it.
``.npy`` arrays are never split: every channel is data.

Refused with an :class:`~deconv_cli.errors.InputError`: missing files, directories,
empty, truncated or corrupt files, multi-frame or multi-page files, pickled ``.npy``,
NaN/Inf pixels, and images above the pixel limit (``2**28`` = 268,435,456 pixels,
H×W, by default; set the environment variable ``DECONV_MAX_PIXELS``, or
``deconv --max-pixels N``, to change it). The limit is checked on the file's header,
before any pixel is decoded, so a small file that decodes to gigapixels (a
decompression bomb) costs nothing; a ``.npy`` whose header promises more data than
the file holds is refused as truncated before anything is allocated. Pipes, devices
and sockets are refused: the reader opens a file more than once.

Writing
-------
:func:`write_image` chooses the format from the extension (``.png .jpg .jpeg .bmp
.tif .tiff .npy``). Integer outputs are ``round(x · max)`` clipped to ``[0, max]``
(``numpy.rint``: ties to even) and the number of clipped pixels is reported; float
outputs are written exactly. Every write is atomic and refuses to replace an input,
or an existing file unless ``overwrite=True``.

Inside :func:`protect_inputs` (every ``deconv`` command runs in one), every file this
process has read is an input too, and no file is written twice.

Temporary files are named ``.deconv-PID-HOST-XXXXXXXX.EXT`` beside the output. A
process killed before its rename (SIGKILL, power loss) leaves one behind; the next
write into that directory removes those of processes that no longer exist on this
host (and only those: the name must match, the file be a regular file owned by the
same user, the host be this one and the process gone).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import socket
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli import fs
from deconv_cli.errors import DeconvError, InputError, OutputError, choice_error

PathLike = str | os.PathLike

DEFAULT_MAX_PIXELS = 2**28
MAX_PIXELS_ENV = "DECONV_MAX_PIXELS"
MAX_CHANNELS = 4

OUTPUT_DTYPES = ("uint8", "uint16", "float32", "float64")
READ_DTYPES = ("bool", "uint8", "uint16", "float16", "float32", "float64")

_U8, _U16, _F32, _F64 = (np.dtype(n) for n in OUTPUT_DTYPES)

# Extension -> (format name, dtypes it holds, dtype used when the implied one does not fit,
# whether it holds an alpha channel).
_FORMATS: dict[str, tuple[str, tuple[np.dtype, ...], np.dtype, bool]] = {
    ".png": ("PNG", (_U8, _U16), _U16, True),
    ".jpg": ("JPEG", (_U8,), _U8, False),
    ".jpeg": ("JPEG", (_U8,), _U8, False),
    ".bmp": ("BMP", (_U8,), _U8, False),
    ".tif": ("TIFF", (_U8, _U16, _F32, _F64), _F64, True),
    ".tiff": ("TIFF", (_U8, _U16, _F32, _F64), _F64, True),
    ".npy": ("NumPy", (_U8, _U16, _F32, _F64), _F64, True),
}
WRITE_EXTENSIONS = tuple(_FORMATS)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
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


@dataclass
class Image:
    """An image read from disk, scaled to float.

    Attributes
    ----------
    data : (H, W) or (H, W, C) ndarray
        Pixel values: float64, or float32 when the file held float32/float16.
        Integer files are scaled to [0, 1]; the alpha channel is removed.
    alpha : (H, W) ndarray or None
        The alpha channel on the same scale and dtype as ``data``, or None.
        It is carried through unfiltered; callers write it back only when the
        output keeps the input's spatial shape.
    source_dtype : numpy.dtype
        The pixel type stored in the file (uint8, uint16, float32, bool, ...).
    path : Path
        The path the image was read from.
    """

    data: np.ndarray
    alpha: np.ndarray | None
    source_dtype: np.dtype
    path: Path


@dataclass
class WriteResult:
    """What :func:`write_image` wrote.

    Attributes
    ----------
    path : Path
        The file written.
    dtype : numpy.dtype
        The pixel type written.
    clipped : int
        Pixels (H×W positions, alpha excluded) with at least one channel clipped to
        the integer range; 0 for float outputs.
    alpha_dropped : bool
        True when an alpha channel was given but the format (JPEG, BMP) has none.
    """

    path: Path
    dtype: np.dtype
    clipped: int
    alpha_dropped: bool = False


# --------------------------------------------------------------------------- reading


def max_pixels() -> int:
    """The pixel limit (H×W) for reading: ``DECONV_MAX_PIXELS`` or ``2**28``.

    ``deconv --max-pixels N`` sets the variable for the command (and any worker
    process it starts), through :func:`pixel_limit`.
    """
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_PIXELS_ENV}: `{raw}` is not a positive whole number of pixels")
    return value


@contextlib.contextmanager
def pixel_limit(limit: int | None):
    """Set the pixel limit to ``limit`` (None: leave it) while the context is active.

    The limit lives in the ``DECONV_MAX_PIXELS`` environment variable, so worker
    processes started inside the context inherit it.
    """
    if limit is None:
        yield
        return
    if int(limit) <= 0:
        raise InputError(f"--max-pixels: `{limit}` is not a positive whole number of pixels")
    saved = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(int(limit))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = saved


def read_image(path: PathLike, *, max_channels: int | None = MAX_CHANNELS) -> Image:
    """Read an image or ``.npy`` array, scaled to float and validated.

    Parameters
    ----------
    path : str or PathLike
        The file to read; the format is recognised from its first bytes.
    max_channels : int or None, optional
        The most channels accepted (default 4); None accepts any number, for
        ``.npy`` feature maps of conv layers.

    Returns
    -------
    Image
        ``data`` (H, W) or (H, W, C), float64 or float32; ``alpha`` split off from
        grey+alpha and RGBA image files.

    Raises
    ------
    InputError
        The file is missing, unreadable, corrupt, pickled, of an unsupported pixel
        type or shape, above the pixel limit, or holds NaN/Inf pixels.
    """
    path = Path(path)
    head = _read_head(path)
    limit = max_pixels()
    if path.suffix.lower() == ".npy" or head.startswith(_NPY_MAGIC):
        array = _read_npy(path, head, limit, max_channels)
        has_alpha = False
    elif head.startswith(_TIFF_MAGICS):
        array, has_alpha = _read_tiff(path, limit, max_channels)
    elif head.startswith(_PNG_MAGIC) and _png_is_16bit_colour(head):
        array, has_alpha = _read_png16(path, limit, max_channels)
    else:
        array, has_alpha = _read_pillow(path, limit, max_channels)
    return _to_image(path, array, has_alpha, limit, max_channels)


def _read_head(path: Path) -> bytes:
    """The first bytes of ``path``, turning every reason it cannot be read into one line."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # open() below says why
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise InputError(
            f"`{path}` is not a regular file (a pipe, device or socket); save it to a file first"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError as err:
        raise InputError(f"`{path}`: no such file") from err
    except IsADirectoryError as err:
        raise InputError(f"`{path}` is a directory, not an image file") from err
    except OSError as err:
        raise fs.error(err, path, InputError) from err
    if path.is_dir():  # pragma: no cover - platforms where open() accepts directories
        raise InputError(f"`{path}` is a directory, not an image file")
    note_input(path)
    if not head:
        raise InputError(f"`{path}` is empty (0 bytes)")
    return head


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes, outermost first (imageio wraps the decoder's exception)."""
    chain = [err]
    while len(chain) < 20:
        last = chain[-1]
        nxt = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if nxt is None:
            break
        chain.append(nxt)
    return chain


_TRUNCATED = re.compile(
    r"truncated|failed to read \d+ bytes|ends? early|end of (file|stream)", re.I
)


def _reason(err: BaseException) -> str:
    """A one-line reason from a decoder exception (the innermost cause is the useful one)."""
    seen = _chain(err)[-1]
    text = " ".join(str(seen).split()) or type(seen).__name__
    if type(seen).__name__ in ("UnidentifiedImageError", "TiffFileError", "InitializationError"):
        return "not a recognised image format, or corrupt"
    struct_error = type(seen).__name__ == "error" and type(seen).__module__ == "struct"
    if struct_error or isinstance(seen, EOFError):
        return "truncated (the file ends early)"
    if _TRUNCATED.search(text) and "truncated" not in text.lower():
        text = f"truncated ({text})"
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _tifffile_quiet():
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


def _decode_error(path: Path, err: BaseException) -> InputError:
    return InputError(f"`{path}` cannot be read as an image: {_reason(err)}")


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape) if len(shape) else "()"


def _check_shape(path: Path, shape: Sequence[int], limit: int, max_channels: int | None) -> None:
    """Refuse shapes that are not H×W or H×W×C, empty, or above the pixel limit."""
    shape = tuple(int(n) for n in shape)
    wanted = "images must be H×W or H×W×C (channels last)"
    if len(shape) not in (2, 3):
        extra = "; save one image per file" if len(shape) > 3 else ""
        raise InputError(f"`{path}` has {len(shape)}-D shape {_shape_text(shape)}; {wanted}{extra}")
    if 0 in shape:
        raise InputError(f"`{path}` is empty (shape {_shape_text(shape)})")
    if len(shape) == 3 and max_channels is not None and shape[2] > max_channels:
        if path.suffix.lower() != ".npy":  # an image format says which axis holds channels
            raise InputError(
                f"`{path}` has {shape[2]} channels (shape {_shape_text(shape)}); images have "
                f"at most {max_channels}"
            )
        raise InputError(
            f"`{path}`: a 3-D array of shape {_shape_text(shape)} is ambiguous: an image is "
            f"H×W×C with at most {max_channels} channels, last; a stack or a channels-first "
            "array would need --axes, which this version does not have"
        )
    pixels = shape[0] * shape[1]
    if pixels > limit:
        raise InputError(_too_large(path, limit, shape))


def _too_large(path: Path, limit: int, shape: Sequence[int]) -> str:
    pixels = shape[0] * shape[1]
    channels = shape[2] if len(shape) > 2 else 1
    return (
        f"`{path}` has {pixels:,} pixels ({_shape_text(shape[:2])}), above the "
        f"limit of {limit:,}; set {MAX_PIXELS_ENV} or `deconv --max-pixels {pixels}` to "
        f"read it, if you trust the file (it needs {_bytes_text(pixels * channels * 8)} "
        "as float64)"
    )


def _bytes_text(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def _read_npy(path: Path, head: bytes, limit: int, max_channels: int | None) -> np.ndarray:
    """Read a ``.npy`` file without ever unpickling it; shape checked from the header."""
    shape, dtype = _npy_header(path, head)
    if dtype is not None:
        _check_dtype(path, dtype)
        _check_shape(path, shape, limit, max_channels)
    return load_npy(path)


def _npy_header(path: Path, head: bytes) -> tuple[tuple[int, ...] | None, np.dtype | None]:
    """Shape and dtype from a ``.npy`` header, refusing pickles and truncated files.

    The file's size is checked against the header before any data is read, so a
    small file whose header declares a huge array allocates nothing.
    """
    if not head.startswith(_NPY_MAGIC):
        if head.startswith(b"\x80"):  # the pickle protocol 2+ opcode
            raise InputError(
                f"`{path}` holds pickled Python data, which is never loaded; "
                "save a plain array with np.save(..., allow_pickle=False)"
            )
        if head.startswith(b"PK"):
            raise InputError(f"`{path}` is an .npz archive; save one array with np.save")
        raise InputError(f"`{path}` is not a .npy file (no NumPy header)")
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            # numpy parses the header with ast.literal_eval (safe); a corrupt one may
            # hold backslashes, which Python warns about: the error below says enough.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return None, None
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
    except Exception as err:
        raise InputError(f"`{path}` has a corrupt .npy header: {_reason(err)}") from err
    if dtype.hasobject:
        raise InputError(
            f"`{path}` holds Python objects (pickled), which are never loaded; "
            "save a plain numeric array"
        )
    if any(n < 0 for n in shape):
        raise InputError(f"`{path}` has a corrupt .npy header: negative shape {shape}")
    needed = math.prod(shape) * dtype.itemsize
    if size - offset < needed:
        raise InputError(
            f"`{path}` is truncated: its header promises {_shape_text(shape)} "
            f"{dtype.name} ({needed:,} bytes of data), the file holds {max(size - offset, 0):,}"
        )
    return shape, dtype


def load_npy(path: PathLike) -> np.ndarray:
    """Load one ``.npy`` array with ``allow_pickle=False``: pickled data is refused.

    No shape or dtype policy: callers (images, kernels) apply their own. The header
    is checked first: pickles and files shorter than their header says are refused
    before anything is allocated.
    """
    path = Path(path)
    _npy_header(path, _read_head(path))
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise InputError(
                f"`{path}` holds Python objects (pickled), which are never loaded; "
                "save a plain numeric array"
            ) from err
        raise InputError(f"`{path}` is truncated or corrupt: {_reason(err)}") from err
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise InputError(f"`{path}` is truncated or corrupt: {_reason(err)}") from err
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of an npz
        raise InputError(f"`{path}` is not a single array")
    return array


def _read_tiff(path: Path, limit: int, max_channels: int | None) -> tuple[np.ndarray, bool]:
    """Read a one-page TIFF with tifffile; palette, CMYK, LZW, JPEG-in-TIFF go to Pillow."""
    import tifffile

    try:
        with _tifffile_quiet() as complaints, tifffile.TiffFile(path) as tif:
            pages = [page for page in tif.pages if not getattr(page, "is_reduced", False)]
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
                return _read_pillow(path, limit, max_channels)
            axes = page.axes
            shape = dict(zip(axes, page.shape, strict=True))
            if set(axes) - {"Y", "X", "S"}:
                raise InputError(
                    f"`{path}` is a TIFF volume with axes `{axes}`; "
                    "deconv reads 2-D images (H×W or H×W×C)"
                )
            _check_shape(path, tuple(shape[a] for a in "YXS" if a in shape), limit, max_channels)
            _check_dtype(path, page.dtype)
            alpha_flags = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
            has_alpha = bool(page.extrasamples) and int(page.extrasamples[-1]) in alpha_flags
            try:
                array = page.asarray()
            except ValueError as err:
                if "imagecodecs" in str(err):
                    return _read_pillow(path, limit, max_channels)
                raise
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise _decode_error(path, err) from err
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    return array, has_alpha


def _png_is_16bit_colour(head: bytes) -> bool:
    """Whether a PNG header says 16-bit grey+alpha, RGB or RGBA (which Pillow cuts to 8 bits)."""
    if len(head) < 26 or head[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = head[24], head[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _read_png16(path: Path, limit: int, max_channels: int | None) -> tuple[np.ndarray, bool]:
    """Read a 16-bit colour or grey+alpha PNG with pypng, exactly."""
    import png

    try:
        with open(path, "rb") as fh:
            reader = png.Reader(file=fh)
            reader.preamble()
            _check_shape(path, (reader.height, reader.width, reader.planes), limit, max_channels)
            width, height, rows, info = reader.asDirect()
            planes = info["planes"]
            array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
            array = array.reshape(height, width, planes)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise _decode_error(path, err) from err
    if planes == 1:
        array = array[:, :, 0]
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


def _read_pillow(path: Path, limit: int, max_channels: int | None) -> tuple[np.ndarray, bool]:
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
            _check_shape(path, shape, limit, max_channels)
            meta = file.metadata(index=0, exclude_applied=False)
            mode = meta.get("mode")
            convert = _PILLOW_CONVERT.get(mode)
            if mode == "P":
                convert = "RGBA" if "transparency" in meta else None
            array = file.read(index=0, mode=convert)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise _decode_error(path, err) from err
    has_alpha = array.ndim == 3 and array.shape[2] in (2, 4)
    return array, has_alpha


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if np.dtype(dtype).newbyteorder("=").name not in READ_DTYPES:
        allowed = ", ".join(READ_DTYPES)
        raise InputError(
            f"`{path}` has pixel type `{np.dtype(dtype).name}`; supported: {allowed} "
            "(convert it to float32 TIFF or float .npy first)"
        )


def _to_image(
    path: Path, array: np.ndarray, has_alpha: bool, limit: int, max_channels: int | None
) -> Image:
    """Validate a decoded array, scale it to float, check finiteness, split alpha."""
    array = np.asarray(array)
    _check_dtype(path, array.dtype)
    _check_shape(path, array.shape, limit, max_channels)
    source = array.dtype.newbyteorder("=")
    if source == np.bool_:
        data = array.astype(np.float64)
    elif source.kind == "u":
        data = array.astype(np.float64) / np.iinfo(source).max
    elif source.itemsize <= 4:
        data = array.astype(np.float32, copy=False)  # arrays read are fresh: no copy
    else:
        data = array.astype(np.float64, copy=False)
    if source.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(np.count_nonzero(~finite.all(axis=2) if finite.ndim == 3 else ~finite))
            raise InputError(
                f"`{path}` has {bad:,} NaN/Inf pixels; deconv needs finite values "
                "(replace them first, e.g. with numpy.nan_to_num)"
            )
    alpha = None
    if has_alpha and data.ndim == 3 and data.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(data[:, :, -1])
        data = np.ascontiguousarray(data[:, :, 0] if data.shape[2] == 2 else data[:, :, :3])
    return Image(data=data, alpha=alpha, source_dtype=source, path=path)


# --------------------------------------------------------------------------- writing


def parse_dtype(name: str | np.dtype | None) -> np.dtype | None:
    """Parse an output dtype name: ``uint8``, ``uint16``, ``float32`` or ``float64``.

    Parameters
    ----------
    name : str, numpy.dtype or None
        The name (case-insensitive) or dtype; None means "not given".

    Returns
    -------
    numpy.dtype or None

    Raises
    ------
    OutputError
        The name is not one of the four output dtypes.
    """
    if name is None:
        return None
    try:
        text = np.dtype(name).name if not isinstance(name, str) else name.strip().lower()
    except TypeError as err:
        raise choice_error(OutputError, "--dtype", name, OUTPUT_DTYPES) from err
    if text not in OUTPUT_DTYPES:
        raise choice_error(OutputError, "--dtype", name, OUTPUT_DTYPES)
    return np.dtype(text)


def _implied_dtype(source: np.dtype) -> np.dtype:
    """The output dtype that keeps a source dtype: bool -> uint8, float16 -> float32."""
    source = np.dtype(source).newbyteorder("=")
    if source == np.bool_:
        return _U8
    if source == np.float16:
        return _F32
    if source.name in OUTPUT_DTYPES:
        return source
    raise choice_error(OutputError, "output dtype", source.name, OUTPUT_DTYPES)


def check_format(path: PathLike, dtype: str | np.dtype | None = None) -> None:
    """Refuse, before any work, an output whose extension is not a format deconv writes,
    or a ``--dtype`` its format cannot hold.

    Raises
    ------
    OutputError
        One line naming the path, what is wrong and what to write instead.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _FORMATS:
        supported = ", ".join(f"`{e}`" for e in WRITE_EXTENSIONS)
        raise OutputError(
            f"`{path}`: unknown output format `{path.suffix or '(no extension)'}`; "
            f"use one of {supported}"
        )
    name, holds, _, _ = _FORMATS[ext]
    requested = parse_dtype(dtype)
    if requested is not None and requested not in holds:
        kinds = " or ".join(d.name for d in holds)
        hint = "write .tif or .npy for float output"
        if requested.kind != "f":
            hint = "write .png or .tif for 16-bit output"
        raise OutputError(f"`{path}`: {name} holds {kinds}, not {requested.name}; {hint}")


def _output_dtype(path: Path, fmt: tuple, data: np.ndarray, dtype, source_dtype) -> np.dtype:
    """``dtype`` if given (:func:`check_format` checked it fits), else the implied dtype
    adapted to the format."""
    _, holds, fallback, _ = fmt
    requested = parse_dtype(dtype)
    if requested is not None:
        return requested
    implied = _implied_dtype(source_dtype if source_dtype is not None else data.dtype)
    if implied in holds:
        return implied
    return fallback


def check_shape(path: PathLike, shape: tuple[int, ...], alpha: bool = False) -> None:
    """Refuse a result of ``shape`` (plus an alpha channel to keep) that the format of
    ``path`` cannot hold: called before the work as well as on writing.

    Raises
    ------
    OutputError
        One line naming the path, the channels the format holds and what to write instead.
    """
    path = Path(path)
    name, _, _, holds_alpha = _FORMATS[path.suffix.lower()]
    alpha = alpha and holds_alpha  # formats without alpha drop it
    data = 1 if len(shape) == 2 or (name != "NumPy" and shape[2] == 1) else shape[2]
    channels = data + alpha
    allowed = {"PNG": (1, 2, 3, 4), "TIFF": (1, 2, 3, 4), "JPEG": (1, 3), "BMP": (1, 3)}
    if name in allowed and channels not in allowed[name]:
        counts = ", ".join(str(c) for c in allowed[name])
        instead = ".tif or .npy" if channels in allowed["TIFF"] else ".npy"
        raise OutputError(
            f"`{path}`: {name} holds {counts} channels, not {channels}; write {instead} instead"
        )
    if name == "PNG" and not alpha and channels in (2, 4):
        # PNG has no way to say "2 (or 4) channels of data": its last one is alpha.
        raise OutputError(
            f"`{path}`: PNG stores {channels} channels as {'grey' if channels == 2 else 'RGB'}"
            f"+alpha, but this result has {channels} data channels; write .tif or .npy"
        )


def _to_integer(values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """Round ``values · max`` and clip to [0, max]; count pixels with a clipped channel."""
    top = np.iinfo(dtype).max
    scaled = np.rint(np.asarray(values, dtype=np.float64) * top)
    outside = (scaled < 0) | (scaled > top)
    clipped = int(np.count_nonzero(outside.any(axis=2) if outside.ndim == 3 else outside))
    return np.clip(scaled, 0, top).astype(dtype), clipped


def write_image(
    path: PathLike,
    data: np.ndarray,
    *,
    dtype: str | np.dtype | None = None,
    source_dtype: np.dtype | None = None,
    alpha: np.ndarray | None = None,
    overwrite: bool = False,
    inputs: Sequence[PathLike] = (),
) -> WriteResult:
    """Write an image or array atomically, in the format its extension names.

    Parameters
    ----------
    path : str or PathLike
        Output file: ``.png .jpg .jpeg .bmp .tif .tiff .npy``.
    data : (H, W) or (H, W, C) ndarray
        Values on the [0, 1] scale for integer outputs; any real values for float
        outputs. ``.npy`` takes any number of channels.
    dtype : str or numpy.dtype, optional
        Output dtype (uint8, uint16, float32, float64); it must fit the format.
    source_dtype : numpy.dtype, optional
        The input's dtype, kept when ``dtype`` is not given and the format holds it
        (bool writes uint8, float16 writes float32). Without either, ``data.dtype``.
        An implied dtype the format cannot hold becomes uint16 for PNG, uint8 for
        JPEG/BMP.
    alpha : (H, W) ndarray, optional
        Alpha channel on the same scale as ``data``, appended as the last channel
        (dropped for JPEG and BMP, reported in ``alpha_dropped``).
    overwrite : bool, optional
        Replace an existing file (never an input).
    inputs : sequence of paths, optional
        The inputs, which are never overwritten.

    Returns
    -------
    WriteResult
        Path, dtype written, pixels clipped, whether alpha was dropped.

    Raises
    ------
    OutputError
        Unknown extension, dtype or channels the format cannot hold, non-finite
        values for an integer output, an existing file or an input in the way, or
        the file cannot be written.
    """
    path = Path(path)
    check_format(path, dtype)
    _check_target(path, overwrite, inputs)
    fmt = _FORMATS[path.suffix.lower()]
    name, _, _, holds_alpha = fmt
    data = np.asarray(data)
    if data.ndim not in (2, 3) or 0 in data.shape:
        raise OutputError(
            f"`{path}`: cannot write an array of shape {_shape_text(data.shape)}; "
            "images are H×W or H×W×C"
        )
    if not (
        np.issubdtype(data.dtype, np.floating)
        or np.issubdtype(data.dtype, np.integer)
        or data.dtype == np.bool_
    ):
        raise OutputError(f"`{path}`: cannot write pixel type `{data.dtype.name}`")
    out_dtype = _output_dtype(path, fmt, data, dtype, source_dtype)

    alpha_dropped = False
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != data.shape[:2]:
            raise OutputError(
                f"`{path}`: alpha shape {_shape_text(alpha.shape)} does not match the image "
                f"shape {_shape_text(data.shape[:2])}"
            )
        if not holds_alpha:
            alpha, alpha_dropped = None, True
    if name != "NumPy" and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    check_shape(path, data.shape, alpha is not None)

    clipped = 0
    if out_dtype.kind == "u":
        for values in (data, alpha):
            if values is not None and not np.isfinite(values).all():
                raise OutputError(
                    f"`{path}`: the result has NaN/Inf values, which {out_dtype.name} cannot "
                    "hold; write .npy or a float TIFF to inspect it"
                )
        pixels, clipped = _to_integer(data, out_dtype)
        if alpha is not None:
            alpha, _ = _to_integer(alpha, out_dtype)
    else:
        pixels = data.astype(out_dtype, copy=False)  # written as is, never modified
        if alpha is not None:
            alpha = alpha.astype(out_dtype, copy=False)
    if alpha is not None:
        base = pixels if pixels.ndim == 3 else pixels[:, :, None]
        pixels = np.concatenate([base, alpha[:, :, None]], axis=2)
    has_alpha = alpha is not None

    def write(tmp: Path) -> None:
        _WRITERS[name](tmp, np.ascontiguousarray(pixels), has_alpha)

    atomic_write(path, write, overwrite=overwrite, inputs=inputs)
    return WriteResult(path=path, dtype=out_dtype, clipped=clipped, alpha_dropped=alpha_dropped)


def _write_png(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        import png  # Pillow cannot write 16-bit grey+alpha, RGB or RGBA

        height, width, planes = pixels.shape
        writer = png.Writer(
            width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16
        )
        with open(tmp, "wb") as fh:
            writer.write_array(fh, pixels.reshape(-1))
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


def _write_jpeg(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    _pillow_write(tmp, pixels, ".jpg", quality=95, subsampling=0)


def _write_bmp(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    _pillow_write(tmp, pixels, ".bmp")


def _write_tiff(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
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


def _write_npy(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    np.save(tmp, pixels, allow_pickle=False)


_WRITERS: dict[str, Callable[[Path, np.ndarray, bool], None]] = {
    "PNG": _write_png,
    "JPEG": _write_jpeg,
    "BMP": _write_bmp,
    "TIFF": _write_tiff,
    "NumPy": _write_npy,
}


# --------------------------------------------------------------------------- paths


class _Guard:
    """Files read and written while :func:`protect_inputs` is active."""

    def __init__(self) -> None:
        self.read: dict[tuple[int, int], Path] = {}
        self.written: dict[tuple[int, int], Path] = {}


_guard: _Guard | None = None


@contextlib.contextmanager
def protect_inputs():
    """While active, no file this process has read is replaced, and none is written twice.

    Every ``deconv`` command runs inside one, so an output path that happens to
    name an input (an image, a kernel file, ``--reference``), or two outputs that
    name one file, are refused whatever option they came from. Files are known by
    device and inode, so other spellings and links of one file are caught too.
    Nested use keeps the outer record.
    """
    global _guard
    if _guard is not None:
        yield
        return
    _guard = _Guard()
    try:
        yield
    finally:
        _guard = None


def note_input(path: PathLike) -> None:
    """Record ``path`` as an input of the running command (see :func:`protect_inputs`)."""
    if _guard is None:
        return
    with contextlib.suppress(OSError):
        info = os.stat(path)
        _guard.read.setdefault((info.st_dev, info.st_ino), Path(path))


def _check_guard(path: Path) -> None:
    if _guard is None:
        return
    try:
        info = os.stat(path)
    except OSError:
        return
    key = (info.st_dev, info.st_ino)
    if key in _guard.read:
        raise OutputError(
            f"`{path}` is an input of this command{_alias(path, _guard.read[key])}; "
            "refusing to write over it (choose another output)"
        )
    if key in _guard.written:
        raise OutputError(
            f"`{path}` was already written by this command{_alias(path, _guard.written[key])}; "
            "two outputs name one file (choose distinct paths)"
        )


def _alias(path: Path, other: Path) -> str:
    return "" if str(path) == str(other) else f" (as `{other}`)"


def _note_written(path: Path) -> None:
    if _guard is None:
        return
    with contextlib.suppress(OSError):
        info = os.stat(path)
        _guard.written[(info.st_dev, info.st_ino)] = path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (samefile when both exist, else resolved paths)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _check_not_input(path: Path, inputs: Sequence[PathLike]) -> None:
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(
                f"`{path}` is an input; refusing to write over it (choose another output)"
            )


def check_target(path: PathLike, *, overwrite: bool, inputs: Sequence[PathLike] = ()) -> None:
    """Refuse an output path before any work: see :func:`atomic_write` for the rules.

    Raises
    ------
    OutputError
        ``path`` is an input (given, or read in :func:`protect_inputs`), a
        directory, a pipe or device, exists without ``overwrite``, or its
        directory is missing, unwritable or full (:func:`deconv_cli.fs.check_writable_file`).
    """
    _check_target(Path(path), overwrite, inputs)


def _check_target(path: Path, overwrite: bool, inputs: Sequence[PathLike]) -> None:
    """Refuse an input, a directory, an existing file (without overwrite), a pipe or device,
    a missing, unwritable or full directory."""
    fs.probe(path)  # a name too long, a parent that is a file: said before the comparisons
    _check_not_input(path, inputs)
    _check_guard(path)
    fs.check_writable_file(path, overwrite=overwrite)


def _new_file_mode(path: Path) -> int:
    """Permissions for the output: the replaced file's, else the umask's default."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


# Temporary files: ".deconv-PID-HOST-XXXXXXXX.EXT" (XXXXXXXX random, as tempfile.mkstemp).
TEMP_PREFIX = ".deconv-"
_TEMP_NAME = re.compile(r"\.deconv-(?P<pid>[0-9]+)-(?P<host>[A-Za-z0-9._-]+)-[a-z0-9_]{8}(\.\w+)?")
_cleaned: set[str] = set()


def _host() -> str:
    """This host's name as it appears in temporary file names."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "localhost"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (it may be another user's)."""
    if pid <= 0:
        return True  # not a process id: never treat the file as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_temp_files(directory: PathLike) -> list[Path]:
    """Temporary files in ``directory`` left by ``deconv`` processes that no longer exist.

    Only regular files named ``.deconv-PID-HOST-XXXXXXXX[.EXT]``, owned by this
    user, whose HOST is this host and whose process PID is gone, other than this
    process's own.
    """
    directory = Path(directory)
    host, me, uid = _host(), os.getpid(), os.geteuid() if hasattr(os, "geteuid") else None
    stale = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == me or _pid_alive(pid):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
            continue
        stale.append(directory / entry.name)
    return sorted(stale)


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Remove :func:`stale_temp_files` from ``directory``; return those removed."""
    removed = []
    for path in stale_temp_files(directory):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _clean_once(directory: Path) -> None:
    """Remove stale temporary files the first time this process writes in ``directory``."""
    key = os.path.realpath(directory)
    if key in _cleaned:
        return
    _cleaned.add(key)
    remove_stale_temp_files(directory)


_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def _out_of_space(err: BaseException) -> bool:
    """ENOSPC, EFBIG, EDQUOT, or numpy's report of a short write (the same, seen late)."""
    if not isinstance(err, OSError):
        return False
    return err.errno in _FULL or bool(re.search(r"\d+ requested and \d+ written", str(err)))


_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # as tempfile.mkstemp's


def _temporary_name(directory: Path, suffix: str) -> Path:
    """``.deconv-PID-HOST-XXXXXXXX.EXT`` in ``directory``: only this process uses its PID."""
    random = "".join(secrets.choice(_NAME_CHARACTERS) for _ in range(8))
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{_host()}-{random}{suffix}"


def _create(tmp: Path) -> bool:
    """Create ``tmp`` (mode 0600), or return False when the name is taken."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def atomic_write(
    path: PathLike,
    write: Callable[[Path], None],
    *,
    overwrite: bool,
    inputs: Sequence[PathLike] = (),
) -> None:
    """Write a file atomically: to a temporary file beside it, fsync, then rename.

    Parameters
    ----------
    path : str or PathLike
        The final file.
    write : callable
        ``write(tmp_path)`` writes the whole file to ``tmp_path`` (same extension).
    overwrite : bool
        Replace ``path`` if it exists (never when it is one of ``inputs``).
    inputs : sequence of paths, optional
        Files that must never be replaced.

    Raises
    ------
    OutputError
        ``path`` is an input, exists without ``overwrite``, is a directory, its
        directory is missing or unwritable, or ``write`` failed (a full disk
        included). The temporary file is removed on every failure.

    Notes
    -----
    The temporary file is ``.deconv-PID-HOST-XXXXXXXX`` plus the output's extension.
    Before the first write into a directory, temporary files there of processes
    that no longer exist are removed (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    _check_target(path, overwrite, inputs)
    directory = path.parent
    _clean_once(directory)
    # The name is known before the file exists, so that a signal landing at any moment
    # (just after the creation included) finds the cleanup below in place.
    tmp, created = _temporary_name(directory, path.suffix), False
    try:
        while not _create(tmp):
            tmp = _temporary_name(directory, path.suffix)
        created = True
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _new_file_mode(path))
        _check_guard(path)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()  # ours even if `created` was not set yet: the name holds our pid
        if isinstance(err, (DeconvError, MemoryError)) or not isinstance(err, Exception):
            raise
        if not created and isinstance(err, OSError):
            raise OutputError(f"`{path}`: cannot write in `{directory}`: {fs.reason(err)}") from err
        reason = fs.reason(err) if isinstance(err, OSError) and err.errno else _reason(err)
        if any(_out_of_space(e) for e in _chain(err)):
            if not (isinstance(err, OSError) and err.errno):  # numpy's short write
                reason = "a write was cut short"
            reason += " (the disk is full or a file size limit was reached; nothing was written)"
        raise OutputError(f"`{path}` cannot be written: {reason}") from err
    _note_written(path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------- memory maps


def map_npy(path: PathLike, *, max_channels: int | None = None) -> np.ndarray | None:
    """A read-only memory map of a float ``.npy`` image, to process it in tiles.

    The header is validated as :func:`read_image` validates it (no pickles, pixel
    type, shape, pixel limit, truncation) and the values are checked to be finite,
    reading the file in blocks, so memory stays bounded whatever the image's size.

    Parameters
    ----------
    path : str or PathLike
        A ``.npy`` file.
    max_channels : int or None, optional
        The most channels accepted (default: any number).

    Returns
    -------
    numpy.memmap or None
        The array (H, W) or (H, W, C) as stored, float32 or float64; ``None`` when
        the values need scaling (integers, bool, float16) or the header is of an
        unknown version: read those with :func:`read_image`.
    """
    path = Path(path)
    shape, dtype = _npy_header(path, _read_head(path))
    if dtype is None:
        return None
    _check_dtype(path, dtype)
    _check_shape(path, shape, max_pixels(), max_channels)
    if dtype.newbyteorder("=") not in (_F32, _F64):
        return None
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    block = max(1, (64 << 20) // max(1, array[0].nbytes))
    bad = 0
    for start in range(0, array.shape[0], block):
        finite = np.isfinite(array[start : start + block])
        bad += int(np.count_nonzero(~finite.all(axis=2) if finite.ndim == 3 else ~finite))
    if bad:
        raise InputError(
            f"`{path}` has {bad:,} NaN/Inf pixels; deconv needs finite values "
            "(replace them first, e.g. with numpy.nan_to_num)"
        )
    return array


def _reserve(tmp: Path, array: np.memmap) -> None:
    """Give the memory-mapped file its blocks now (``posix_fallocate``).

    The file is sparse: a page written through the map on a full file system would
    kill the process with SIGBUS, leaving the temporary file behind. Reserving the
    blocks first turns that into ENOSPC here, an error like any other write's.
    """
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - macOS, Windows
        return
    size = array.offset + array.nbytes
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # unsupported: a plain map
            raise
    finally:
        os.close(fd)


def write_npy_mapped(
    path: PathLike,
    fill: Callable[[Callable[[tuple[int, ...], np.dtype], np.ndarray]], None],
    *,
    overwrite: bool = False,
    inputs: Sequence[PathLike] = (),
) -> Path:
    """Write a ``.npy`` file atomically through a memory map that ``fill`` fills.

    ``fill(allocate)`` calls ``allocate(shape, dtype)`` once, when it knows the
    result's shape, and writes the returned memory map piece by piece (e.g.
    :func:`deconv_cli.tiles.tiled_invert` with ``out=``), so the result never needs
    to be in memory at once. The map is of a temporary file renamed into place when
    ``fill`` returns, as :func:`atomic_write` does (and with its refusals).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputError
        As :func:`atomic_write`; also when ``fill`` did not call ``allocate``.
    """
    maps = []

    def write(tmp: Path) -> None:
        def allocate(shape: tuple[int, ...], dtype) -> np.ndarray:
            if maps:
                raise OutputError(f"`{path}`: allocate was called twice")
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=shape)
            _reserve(tmp, array)
            maps.append(array)
            return array

        fill(allocate)
        if not maps:
            raise OutputError(f"`{path}`: nothing was computed to write")
        maps[0].flush()

    atomic_write(path, write, overwrite=overwrite, inputs=inputs)
    return Path(path)
