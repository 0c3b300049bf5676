"""Read and write images and arrays: dtype scaling, validation, alpha, clipping.

The formats, their extensions, magic bytes, dtypes and channels are the registry's
(:mod:`deconv_cli.formats`); their decoders and encoders are in
:mod:`deconv_cli.codecs` and :mod:`deconv_cli.npyfile`. This module is the policy
between files and arrays.

Reading
-------
:func:`read_image` recognises the format from the file's first bytes, so a misnamed
file is read correctly or refused with a clear message. Pixel values: ``uint8`` is
divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1; floats are kept as they
are (``float16`` widened to ``float32``). The data is ``float64``, or ``float32``
when the file held ``float32`` or ``float16``. Other pixel types (signed integers,
``uint32``, ``uint64``, complex, ...) are refused: their scale is ambiguous, so
convert them to float first.

Shapes: H×W or H×W×C with 1 ≤ C ≤ 4 (channels last); H×W×1 stays as read. In image
files a 2- or 4-channel image is grey+alpha or RGBA (TIFF: when its ExtraSamples tag
says alpha): the alpha channel is split off into :attr:`Image.alpha`, carried through
unfiltered and written back by :func:`write_image` when the caller passes it.
``.npy`` arrays are never split: every channel is data.

Refused with an :class:`~deconv_cli.errors.InputError`: missing files, directories,
pipes and devices, empty, truncated or corrupt files, multi-frame or multi-page
files, pickled ``.npy``, NaN/Inf pixels, and images above the pixel limit
(:attr:`deconv_cli.config.Config.max_pixels`, ``2**28`` H×W by default). The limit is
checked on the file's header, before any pixel is decoded, so a small file that
decodes to gigapixels (a decompression bomb) costs nothing.

Writing
-------
:func:`write_image` chooses the format from the extension. Integer outputs are
``round(x · max)`` clipped to ``[0, max]`` (``numpy.rint``: ties to even) and the
number of clipped pixels is reported; float outputs are written exactly. Every write
is atomic (:func:`deconv_cli.atomic.atomic_write`) and refuses to replace an input,
or an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli import config, formats, fs
from deconv_cli.atomic import PathLike, atomic_write
from deconv_cli.errors import OutputError
from deconv_cli.formats import (
    MAX_CHANNELS,
    check_dtype,
    check_image_shape,
    nonfinite_error,
    nonfinite_pixels,
    shape_text,
)


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
    axes : str
        What each axis of ``data`` is, in order: ``"YX"``, ``"YXC"``, or for a volume
        (:func:`deconv_cli.volumes.read_volume`) ``"ZYX"``, ``"ZYXC"``.
    spacing : tuple of float or None
        The voxel size in µm along each spatial axis of ``axes`` (C excluded), from
        the file's metadata; None when the file does not say.
    """

    data: np.ndarray
    alpha: np.ndarray | None
    source_dtype: np.dtype
    path: Path
    axes: str = ""
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.axes:
            self.axes = "YXC"[: self.data.ndim]


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
# --------------------------------------------------------------------------- reading


def read_image(
    path: PathLike, *, max_channels: int | None = MAX_CHANNELS, max_pixels: int | None = None
) -> Image:
    """Read an image or ``.npy`` array, scaled to float and validated.

    Parameters
    ----------
    path : str or PathLike
        The file to read; the format is recognised from its first bytes.
    max_channels : int or None, optional
        The most channels accepted (default 4); None accepts any number, for
        ``.npy`` feature maps of conv layers.
    max_pixels : int, optional
        The largest H×W read; default: :func:`deconv_cli.config.current`'s.

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
    head = fs.read_head(path)
    limit = config.current().max_pixels if max_pixels is None else max_pixels
    fmt = formats.NUMPY if path.suffix.lower() == ".npy" else formats.sniff(head)
    array, has_alpha = (fmt or formats.PILLOW).read(path, head, limit, max_channels)
    return _to_image(path, array, has_alpha, limit, max_channels)


def _to_image(
    path: Path, array: np.ndarray, has_alpha: bool, limit: int, max_channels: int | None
) -> Image:
    """Validate a decoded array, scale it to float, check finiteness, split alpha."""
    array = np.asarray(array)
    check_dtype(path, array.dtype)
    check_image_shape(path, array.shape, limit, max_channels)
    data, source = scaled(path, array)
    alpha = None
    if has_alpha and data.ndim == 3 and data.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(data[:, :, -1])
        data = np.ascontiguousarray(data[:, :, 0] if data.shape[2] == 2 else data[:, :, :3])
    return Image(data=data, alpha=alpha, source_dtype=source, path=path)


def scaled(path: Path, array: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """``(data, source dtype)``: ``array`` (of a checked pixel type) on the float scale,
    refused when it holds NaN/Inf."""
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
        bad = nonfinite_pixels(data)
        if bad:
            raise nonfinite_error(path, bad)
    return data, source


# --------------------------------------------------------------------------- writing


def encode(
    path: Path, values: np.ndarray, dtype: np.dtype, channels: bool | None = None
) -> tuple[np.ndarray, int]:
    """``(values as dtype, positions clipped)``: floats as they are; for an integer
    ``dtype``, ``round(values · max)`` clipped to [0, max], NaN/Inf refused.

    ``channels``: whether the last axis holds channels, counted once per position
    (default: a 3-D array's does).

    Raises
    ------
    OutputError
        NaN/Inf values for an integer ``dtype``.
    """
    if dtype.kind != "u":
        return values.astype(dtype, copy=False), 0  # written as is, never modified
    if not np.isfinite(values).all():
        raise OutputError(
            f"`{path}`: the result has NaN/Inf values, which {dtype.name} cannot "
            "hold; write .npy or a float TIFF to inspect it"
        )
    top = np.iinfo(dtype).max
    rounded = np.rint(np.asarray(values, dtype=np.float64) * top)
    outside = (rounded < 0) | (rounded > top)
    if outside.ndim == 3 if channels is None else channels:
        outside = outside.any(axis=-1)
    return np.clip(rounded, 0, top).astype(dtype), int(np.count_nonzero(outside))


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
    fmt = formats.check_format(path, dtype)
    fs.check_target(path, overwrite=overwrite, inputs=inputs)
    data = np.asarray(data)
    if data.ndim not in (2, 3) or 0 in data.shape:
        raise OutputError(
            f"`{path}`: cannot write an array of shape {shape_text(data.shape)}; "
            "images are H×W or H×W×C"
        )
    if not (
        np.issubdtype(data.dtype, np.floating)
        or np.issubdtype(data.dtype, np.integer)
        or data.dtype == np.bool_
    ):
        raise OutputError(f"`{path}`: cannot write pixel type `{data.dtype.name}`")
    implied = source_dtype if source_dtype is not None else data.dtype
    out_dtype = formats.output_dtype(fmt, dtype, implied)

    alpha_dropped = False
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != data.shape[:2]:
            raise OutputError(
                f"`{path}`: alpha shape {shape_text(alpha.shape)} does not match the image "
                f"shape {shape_text(data.shape[:2])}"
            )
        if not fmt.alpha:
            alpha, alpha_dropped = None, True
    if fmt is not formats.NUMPY and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    formats.check_shape(path, data.shape, alpha is not None)

    pixels, clipped = encode(path, data, out_dtype)
    if alpha is not None:
        alpha, _ = encode(path, alpha, out_dtype)
    if alpha is not None:
        base = pixels if pixels.ndim == 3 else pixels[:, :, None]
        pixels = np.concatenate([base, alpha[:, :, None]], axis=2)
    has_alpha = alpha is not None

    def write(tmp: Path) -> None:
        fmt.write(tmp, np.ascontiguousarray(pixels), has_alpha)

    atomic_write(path, write, overwrite=overwrite, inputs=inputs)
    return WriteResult(path=path, dtype=out_dtype, clipped=clipped, alpha_dropped=alpha_dropped)
