"""The image formats deconv reads and writes: one registry, and the checks drawn from it.

Every command asks this module: :func:`deconv_cli.io.read_image` picks a reader by
the file's first bytes (:func:`sniff`), :func:`deconv_cli.io.write_image` a writer by
the extension (:func:`by_extension`); folder scans (``convolve DIR``, ``compare DIR
DIR``) and kernel image files accept :data:`READ_EXTENSIONS`; ``--format`` and output
names accept :data:`WRITE_EXTENSIONS`.

The formats are :data:`FORMATS` (PNG, JPEG, BMP, TIFF, NumPy written and read; GIF,
WebP, PNM read only); the table in ``docs/conventions.md`` shows them, and a test keeps
the two equal.

Readers and writers are named as ``"module:function"`` and imported when first used
(as imageio's plugins), so the registry costs nothing to import. A file whose first
bytes match no format here is handed to Pillow, which reads many more (that is how a
``.ico`` given by name is read); scans of folders take only the extensions above.

Pixel types read: ``bool, uint8, uint16, float16, float32, float64``
(:data:`READ_DTYPES`); others have an ambiguous scale and are refused. Images are
H×W or H×W×C with C ≤ :data:`MAX_CHANNELS` in image files; the checks here are made
on the file's header, before decoding (:func:`check_image_shape`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli.config import MAX_PIXELS_ENV
from deconv_cli.errors import InputError, OutputError, choice_error, mention

MAX_CHANNELS = 4
OUTPUT_DTYPES = ("uint8", "uint16", "float32", "float64")
READ_DTYPES = ("bool", "uint8", "uint16", "float16", "float32", "float64")

_U8, _U16, _F32, _F64 = (np.dtype(n) for n in OUTPUT_DTYPES)


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes
    ----------
    name : str
        As messages say it (``"PNG"``).
    extensions : tuple of str
        Lower-case, with the dot; the first is the one ``--format`` writes.
    magic : bytes
        A regular expression the file's first bytes match.
    reader : str
        ``"module:function"``: ``function(path, head, limit, max_channels)`` returns
        ``(array, has_alpha)``, having checked the header with
        :func:`check_image_shape` before decoding.
    writer : str or None
        ``"module:function"``: ``function(tmp_path, pixels, has_alpha)``; None: read only.
    dtypes : tuple of numpy.dtype
        The pixel types written.
    fallback : numpy.dtype or None
        Written when the dtype implied by the input is not in ``dtypes``.
    channels : tuple of int or None
        The channel counts written, alpha included; None: any.
    data_channels : tuple of int or None
        The counts that may all be data (no alpha); PNG's 2 and 4 are always +alpha.
    alpha : bool
        Whether an alpha channel is stored (and read back as alpha).
    """

    name: str
    extensions: tuple[str, ...]
    magic: bytes
    reader: str
    writer: str | None = None
    dtypes: tuple[np.dtype, ...] = ()
    fallback: np.dtype | None = None
    channels: tuple[int, ...] | None = None
    data_channels: tuple[int, ...] | None = None
    alpha: bool = False

    @property
    def writable(self) -> bool:
        """Whether deconv writes this format (else it only reads it)."""
        return self.writer is not None

    def matches(self, head: bytes) -> bool:
        """Whether data starting with ``head`` is in this format."""
        return re.match(self.magic, head, re.DOTALL) is not None

    def read(self, path: Path, head: bytes, limit: int, max_channels: int | None):
        """``(array, has_alpha)`` from ``path``, whose first bytes are ``head``; the shape
        is checked against ``limit`` (H×W) and ``max_channels`` before decoding."""
        return _resolve(self.reader)(path, head, limit, max_channels)

    def write(self, tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
        """Encode ``pixels`` (already of a dtype and channel count this format holds)
        into ``tmp``; ``has_alpha``: the last channel is alpha."""
        _resolve(self.writer)(tmp, pixels, has_alpha)


def _resolve(name: str):
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


_CODECS = "deconv_cli.codecs"
_NPY = "deconv_cli.npyfile"

PNG = Format(
    "PNG", (".png",), rb"\x89PNG\r\n\x1a\n", f"{_CODECS}:read_png", f"{_CODECS}:write_png",
    (_U8, _U16), _U16, (1, 2, 3, 4), (1, 3), alpha=True,
)  # fmt: skip
JPEG = Format(
    "JPEG", (".jpg", ".jpeg"), rb"\xff\xd8\xff", f"{_CODECS}:read_pillow",
    f"{_CODECS}:write_jpeg", (_U8,), _U8, (1, 3), (1, 3),
)  # fmt: skip
BMP = Format(
    "BMP", (".bmp",), rb"BM", f"{_CODECS}:read_pillow", f"{_CODECS}:write_bmp",
    (_U8,), _U8, (1, 3), (1, 3),
)  # fmt: skip
TIFF = Format(
    "TIFF", (".tif", ".tiff"), rb"II\*\x00|MM\x00\*|II\+\x00|MM\x00\+", f"{_CODECS}:read_tiff",
    f"{_CODECS}:write_tiff", (_U8, _U16, _F32, _F64), _F64, (1, 2, 3, 4), (1, 2, 3, 4),
    alpha=True,
)  # fmt: skip
NUMPY = Format(
    "NumPy", (".npy",), rb"\x93NUMPY", f"{_NPY}:read_npy", f"{_NPY}:write_npy",
    (_U8, _U16, _F32, _F64), _F64,
)  # fmt: skip
GIF = Format("GIF", (".gif",), rb"GIF8[79]a", f"{_CODECS}:read_pillow")
WEBP = Format("WebP", (".webp",), rb"RIFF....WEBP", f"{_CODECS}:read_pillow")
PNM = Format("PNM", (".pbm", ".pgm", ".ppm", ".pnm"), rb"P[1-6]\s", f"{_CODECS}:read_pillow")

FORMATS: tuple[Format, ...] = (PNG, JPEG, BMP, TIFF, NUMPY, GIF, WEBP, PNM)
"""Every format, in the order messages list them."""

PILLOW = Format("Pillow", (), rb"(?!)", f"{_CODECS}:read_pillow")
"""What a file matching no magic is given to: Pillow reads many formats not listed."""

READ_EXTENSIONS = tuple(ext for fmt in FORMATS for ext in fmt.extensions)
WRITE_EXTENSIONS = tuple(ext for fmt in FORMATS if fmt.writable for ext in fmt.extensions)
FORMAT_NAMES = {
    ext[1:]: fmt.extensions[0] for fmt in FORMATS if fmt.writable for ext in fmt.extensions
}
"""``--format`` names (``png``, ``jpeg``, ``tiff``...) -> the extension written."""

_BY_EXTENSION = {ext: fmt for fmt in FORMATS for ext in fmt.extensions}


def by_extension(path: str | Path) -> Format | None:
    """The format a file name's extension names (any case), or None."""
    return _BY_EXTENSION.get(Path(path).suffix.lower())


def sniff(head: bytes) -> Format | None:
    """The format of data starting with ``head`` (its first 64 bytes), or None."""
    return next((fmt for fmt in FORMATS if fmt.matches(head)), None)


# --------------------------------------------------------------------------- input checks


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape) if len(shape) else "()"


def check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse a pixel type not in :data:`READ_DTYPES`."""
    if np.dtype(dtype).newbyteorder("=").name not in READ_DTYPES:
        allowed = ", ".join(READ_DTYPES)
        raise InputError(
            f"`{path}` has pixel type `{np.dtype(dtype).name}`; supported: {allowed} "
            "(convert it to float32 TIFF or float .npy first)"
        )


def check_image_shape(
    path: Path, shape: Sequence[int], limit: int, max_channels: int | None
) -> None:
    """Refuse shapes that are not H×W or H×W×C, empty, or above the pixel limit.

    These are the 2-D rules, for files read without axes: a ``.npy`` whose shape
    they do not settle (3-D with more than ``max_channels`` last: a stack? channels
    first?; 4-D or more) is refused naming ``--axes``, never guessed; an image format
    says which axis holds channels.
    """
    shape = tuple(int(n) for n in shape)
    npy = path.suffix.lower() == ".npy"
    wanted = "images must be H×W or H×W×C (channels last)"
    if len(shape) not in (2, 3):
        extra = "; save one image per file" if len(shape) > 3 else ""
        if npy and len(shape) > 3:
            extra = f"; give {mention('axes')} for a volume (e.g. {mention('axes', 'ZYXC')})"
        raise InputError(f"`{path}` has {len(shape)}-D shape {shape_text(shape)}; {wanted}{extra}")
    if 0 in shape:
        raise InputError(f"`{path}` is empty (shape {shape_text(shape)})")
    if len(shape) == 3 and max_channels is not None and shape[2] > max_channels:
        if not npy:
            raise InputError(
                f"`{path}` has {shape[2]} channels (shape {shape_text(shape)}); images have "
                f"at most {max_channels}"
            )
        raise InputError(
            f"`{path}`: a 3-D array of shape {shape_text(shape)} is ambiguous: an image is "
            f"H×W×C with at most {max_channels} channels, last; give {mention('axes')} "
            "(ZYX for a stack, CYX for channels first, YXC for more channels)"
        )
    pixels = shape[0] * shape[1]
    if pixels > limit:
        channels = shape[2] if len(shape) > 2 else 1
        nbytes = pixels * channels * 8
        size = f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
        raise InputError(
            f"`{path}` has {pixels:,} pixels ({shape_text(shape[:2])}), above the "
            f"limit of {limit:,}; set {MAX_PIXELS_ENV} or {mention('max_pixels', pixels)} to "
            f"read it, if you trust the file (it needs {size} as float64)"
        )


def nonfinite_pixels(values: np.ndarray) -> int:
    """H×W positions where at least one channel of ``values`` is NaN or ±Inf."""
    finite = np.isfinite(values)
    return int(np.count_nonzero(~finite.all(axis=2) if finite.ndim == 3 else ~finite))


def nonfinite_error(path: Path, bad: int) -> InputError:
    return InputError(
        f"`{path}` has {bad:,} NaN/Inf pixels; deconv needs finite values "
        "(replace them first, e.g. with numpy.nan_to_num)"
    )


# --------------------------------------------------------------------------- output checks


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
        raise choice_error(OutputError, "dtype", name, OUTPUT_DTYPES) from err
    if text not in OUTPUT_DTYPES:
        raise choice_error(OutputError, "dtype", name, OUTPUT_DTYPES)
    return np.dtype(text)


def check_format(path: str | Path, dtype: str | np.dtype | None = None) -> Format:
    """The format to write ``path`` in; refused, before any work, when its extension is
    not a format deconv writes, or ``dtype`` is one its format cannot hold.

    Raises
    ------
    OutputError
        One line naming the path, what is wrong and what to write instead.
    """
    path = Path(path)
    fmt = by_extension(path)
    if fmt is None or not fmt.writable:
        supported = ", ".join(f"`{e}`" for e in WRITE_EXTENSIONS)
        raise OutputError(
            f"`{path}`: unknown output format `{path.suffix or '(no extension)'}`; "
            f"use one of {supported}"
        )
    requested = parse_dtype(dtype)
    if requested is not None and requested not in fmt.dtypes:
        kinds = " or ".join(d.name for d in fmt.dtypes)
        hint = "write .tif or .npy for float output"
        if requested.kind != "f":
            hint = "write .png or .tif for 16-bit output"
        raise OutputError(f"`{path}`: {fmt.name} holds {kinds}, not {requested.name}; {hint}")
    return fmt


def output_dtype(fmt: Format, dtype, implied: np.dtype) -> np.dtype:
    """``dtype`` if given (:func:`check_format` checked it fits), else the dtype that
    keeps the input (bool -> uint8, float16 -> float32) when ``fmt`` holds it, else
    ``fmt.fallback``."""
    requested = parse_dtype(dtype)
    if requested is not None:
        return requested
    implied = np.dtype(implied).newbyteorder("=")
    if implied == np.bool_:
        implied = _U8
    elif implied == np.float16:
        implied = _F32
    elif implied.name not in OUTPUT_DTYPES:
        raise choice_error(OutputError, "output dtype", implied.name, OUTPUT_DTYPES)
    return implied if implied in fmt.dtypes else fmt.fallback


def check_shape(path: str | Path, shape: tuple[int, ...], alpha: bool = False) -> None:
    """Refuse a result of ``shape`` (plus an alpha channel to keep) that the format of
    ``path`` cannot hold: called before the work as well as on writing.

    Raises
    ------
    OutputError
        One line naming the path, the channels the format holds and what to write instead.
    """
    path = Path(path)
    fmt = check_format(path)
    alpha = alpha and fmt.alpha  # formats without alpha drop it
    data = 1 if len(shape) == 2 or (fmt is not NUMPY and shape[2] == 1) else shape[2]
    channels = data + alpha
    if fmt.channels is not None and channels not in fmt.channels:
        counts = ", ".join(str(c) for c in fmt.channels)
        instead = ".tif or .npy" if channels in TIFF.channels else ".npy"
        raise OutputError(
            f"`{path}`: {fmt.name} holds {counts} channels, not {channels}; write {instead} instead"
        )
    if not alpha and fmt.data_channels is not None and channels not in fmt.data_channels:
        # The format has no way to say "2 (or 4) channels of data": its last one is alpha.
        raise OutputError(
            f"`{path}`: {fmt.name} stores {channels} channels as "
            f"{'grey' if channels == 2 else 'RGB'}+alpha, but this result has {channels} "
            "data channels; write .tif or .npy"
        )
