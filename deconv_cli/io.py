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
H×W, by default; set the environment variable ``DECONV_MAX_PIXELS`` to change it).

Writing
-------
:func:`write_image` chooses the format from the extension (``.png .jpg .jpeg .bmp
.tif .tiff .npy``). Integer outputs are ``round(x · max)`` clipped to ``[0, max]``
(``numpy.rint``: ties to even) and the number of clipped pixels is reported; float
outputs are written exactly. Every write is atomic and refuses to replace an input,
or an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """The pixel limit (H×W) for reading: ``DECONV_MAX_PIXELS`` or ``2**28``."""
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
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError as err:
        raise InputError(f"`{path}`: no such file") from err
    except IsADirectoryError as err:
        raise InputError(f"`{path}` is a directory, not an image file") from err
    except PermissionError as err:
        raise InputError(f"`{path}`: permission denied") from err
    except OSError as err:
        raise InputError(f"`{path}` cannot be opened: {err.strerror or err}") from err
    if path.is_dir():  # pragma: no cover - platforms where open() accepts directories
        raise InputError(f"`{path}` is a directory, not an image file")
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


def _reason(err: BaseException) -> str:
    """A one-line reason from a decoder exception (the innermost cause is the useful one)."""
    seen = _chain(err)[-1]
    if type(seen).__name__ in ("UnidentifiedImageError", "TiffFileError", "InitializationError"):
        return "not a recognised image format, or corrupt"
    text = " ".join(str(seen).split()) or type(seen).__name__
    return text if len(text) <= 200 else text[:197] + "..."


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
        raise InputError(
            f"`{path}` has {shape[2]} channels (shape {_shape_text(shape)}); "
            f"at most {max_channels} are supported, channels last"
        )
    pixels = shape[0] * shape[1]
    if pixels > limit:
        raise InputError(_too_large(path, limit, shape))


def _too_large(path: Path, limit: int, shape: Sequence[int]) -> str:
    return (
        f"`{path}` has {shape[0] * shape[1]:,} pixels ({_shape_text(shape[:2])}), above the "
        f"limit of {limit:,}; set {MAX_PIXELS_ENV} to a larger number to read it"
    )


def _read_npy(path: Path, head: bytes, limit: int, max_channels: int | None) -> np.ndarray:
    """Read a ``.npy`` file without ever unpickling it; shape checked from the header."""
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
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                shape, dtype = None, None
    except Exception as err:
        raise InputError(f"`{path}` has a corrupt .npy header: {_reason(err)}") from err
    if dtype is not None:
        if dtype.hasobject:
            raise InputError(
                f"`{path}` holds Python objects (pickled), which are never loaded; "
                "save a plain numeric array"
            )
        _check_dtype(path, dtype)
        _check_shape(path, shape, limit, max_channels)
    return load_npy(path)


def load_npy(path: PathLike) -> np.ndarray:
    """Load one ``.npy`` array with ``allow_pickle=False``: pickled data is refused.

    No shape or dtype policy: callers (images, kernels) apply their own.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise InputError(
                f"`{path}` holds Python objects (pickled), which are never loaded; "
                "save a plain numeric array"
            ) from err
        raise InputError(f"`{path}` is truncated or corrupt: {_reason(err)}") from err
    except Exception as err:
        raise InputError(f"`{path}` is truncated or corrupt: {_reason(err)}") from err
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of an npz
        raise InputError(f"`{path}` is not a single array")
    return array


def _read_tiff(path: Path, limit: int, max_channels: int | None) -> tuple[np.ndarray, bool]:
    """Read a one-page TIFF with tifffile; palette, CMYK, LZW, JPEG-in-TIFF go to Pillow."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = [page for page in tif.pages if not getattr(page, "is_reduced", False)]
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


def _read_pillow(path: Path, limit: int, max_channels: int | None) -> tuple[np.ndarray, bool]:
    """Read with imageio's Pillow plugin: the header first (shape, frames), then the pixels."""
    import imageio.v3 as iio

    try:
        with _pillow_guard_off(), iio.imopen(path, "r", plugin="pillow") as file:
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
        data = array.astype(np.float32)
    else:
        data = array.astype(np.float64)
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


def _output_dtype(path: Path, fmt: tuple, data: np.ndarray, dtype, source_dtype) -> np.dtype:
    """``dtype`` if given (it must fit the format), else the implied dtype adapted to it."""
    name, holds, fallback, _ = fmt
    requested = parse_dtype(dtype)
    if requested is not None:
        if requested not in holds:
            kinds = " or ".join(d.name for d in holds)
            hint = "write .tif or .npy for float output"
            if requested.kind != "f":
                hint = "write .png or .tif for 16-bit output"
            raise OutputError(f"`{path}`: {name} holds {kinds}, not {requested.name}; {hint}")
        return requested
    implied = _implied_dtype(source_dtype if source_dtype is not None else data.dtype)
    if implied in holds:
        return implied
    return fallback


def _check_channels(path: Path, name: str, shape: tuple[int, ...]) -> None:
    channels = 1 if len(shape) == 2 else shape[2]
    allowed = {"PNG": (1, 2, 3, 4), "TIFF": (1, 2, 3, 4), "JPEG": (1, 3), "BMP": (1, 3)}
    if name in allowed and channels not in allowed[name]:
        counts = ", ".join(str(c) for c in allowed[name])
        raise OutputError(
            f"`{path}`: {name} holds {counts} channels, not {channels}; write .npy instead"
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
    ext = path.suffix.lower()
    if ext not in _FORMATS:
        supported = ", ".join(f"`{e}`" for e in WRITE_EXTENSIONS)
        raise OutputError(
            f"`{path}`: unknown output format `{path.suffix or '(no extension)'}`; "
            f"use one of {supported}"
        )
    _check_target(path, overwrite, inputs)
    fmt = _FORMATS[ext]
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
    channels = (1 if data.ndim == 2 else data.shape[2]) + (alpha is not None)
    _check_channels(path, name, (*data.shape[:2], channels) if channels > 1 else data.shape[:2])

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
        pixels = data.astype(out_dtype)
        if alpha is not None:
            alpha = alpha.astype(out_dtype)
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
    import imageio.v3 as iio

    iio.imwrite(tmp, pixels, plugin="pillow", extension=".png")


def _write_jpeg(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    import imageio.v3 as iio

    iio.imwrite(tmp, pixels, plugin="pillow", extension=".jpg", quality=95, subsampling=0)


def _write_bmp(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    import imageio.v3 as iio

    iio.imwrite(tmp, pixels, plugin="pillow", extension=".bmp")


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


def _check_target(path: Path, overwrite: bool, inputs: Sequence[PathLike]) -> None:
    """Refuse an input, a directory, an existing file (without overwrite), a missing folder."""
    _check_not_input(path, inputs)
    if path.is_dir():
        raise OutputError(f"`{path}` is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"`{path}` exists; use --overwrite")
    if not path.parent.is_dir():
        raise OutputError(f"`{path}`: directory `{path.parent}` does not exist")


def _new_file_mode(path: Path) -> int:
    """Permissions for the output: the replaced file's, else the umask's default."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


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
        directory is missing or unwritable, or ``write`` failed. The temporary file
        is removed on every failure.
    """
    path = Path(path)
    _check_target(path, overwrite, inputs)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".deconv-", suffix=path.suffix)
    except OSError as err:
        raise OutputError(
            f"`{path}`: cannot write in `{directory}`: {err.strerror or err}"
        ) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, (DeconvError, MemoryError)) or not isinstance(err, Exception):
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _reason(err)
        raise OutputError(f"`{path}` cannot be written: {reason}") from err
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def resolve_outputs(
    inputs: Sequence[PathLike], output: PathLike, *, suffix: str | None = None
) -> list[Path]:
    """Map inputs to output paths: ``output`` is a file (one input) or a directory.

    Parameters
    ----------
    inputs : sequence of paths
        The input files, in order.
    output : str or PathLike
        A file for one input; a directory (created if missing) for several, or an
        existing directory (or a name ending in ``/``) for one.
    suffix : str, optional
        Extension for outputs in a directory (``".npy"`` or ``"npy"``); default the
        input's own. A file output keeps the extension it names.

    Returns
    -------
    list of Path
        One output per input: ``output`` itself, or ``output / (stem + ext)``.

    Raises
    ------
    OutputError
        Several inputs with ``output`` an existing file or a name with an image
        extension; two inputs mapping to one output; an output that is an input;
        the directory cannot be created.
    """
    sources = [Path(p) for p in inputs]
    target = Path(output)
    if not sources:
        return []
    if suffix is not None and suffix and not suffix.startswith("."):
        suffix = "." + suffix
    as_dir = str(output).endswith(("/", os.sep)) or target.is_dir()
    if len(sources) > 1 and not as_dir:
        if target.exists():
            raise OutputError(
                f"-o `{target}` is a file but {len(sources)} inputs were given; "
                "give a directory for several inputs"
            )
        if target.suffix.lower() in _FORMATS:
            raise OutputError(
                f"-o `{target}` looks like a file name but {len(sources)} inputs were given; "
                "give a directory for several inputs"
            )
        as_dir = True
    if not as_dir:
        outputs = [target]
    else:
        outputs = [target / f"{src.stem}{suffix or src.suffix}" for src in sources]
        seen: dict[str, Path] = {}
        for src, out in zip(sources, outputs, strict=True):
            key = os.path.normcase(str(out))
            if key in seen:
                raise OutputError(
                    f"inputs `{seen[key]}` and `{src}` would both be written to `{out}`; "
                    "rename one or process them separately"
                )
            seen[key] = src
    for out in outputs:
        _check_not_input(out, sources)
    if as_dir:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(
                f"-o `{target}`: cannot create the directory: {err.strerror or err}"
            ) from err
    return outputs
