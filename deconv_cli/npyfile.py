"""``.npy`` files: headers read without unpickling, whole loads, and memory maps.

A ``.npy`` header says the shape and dtype; it is checked before anything is read
(pickles refused, never loaded; a file shorter than its header promises refused as
truncated before anything is allocated). :func:`map_npy` and
:func:`write_npy_mapped` let the tiler read and write images larger than memory.
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deconv_cli import config, fs
from deconv_cli.atomic import PathLike, atomic_write
from deconv_cli.errors import InputError, OutputError
from deconv_cli.formats import (
    NUMPY,
    check_dtype,
    check_image_shape,
    nonfinite_error,
    nonfinite_pixels,
    shape_text,
)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def read_npy(
    path: Path, head: bytes, limit: int, max_channels: int | None
) -> tuple[np.ndarray, bool]:
    """Read a ``.npy`` image without ever unpickling it; shape checked from the header.

    Its channels are never alpha (``has_alpha`` is False): every channel is data.
    """
    shape, dtype = npy_header(path, head)
    if dtype is not None:
        check_dtype(path, dtype)
        check_image_shape(path, shape, limit, max_channels)
    return load_npy(path), False


def npy_header(path: Path, head: bytes) -> tuple[tuple[int, ...] | None, np.dtype | None]:
    """Shape and dtype from a ``.npy`` header, refusing pickles and truncated files.

    The file's size is checked against the header before any data is read, so a
    small file whose header declares a huge array allocates nothing.
    """
    if not NUMPY.matches(head):
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
        raise InputError(f"`{path}` has a corrupt .npy header: {fs.describe(err)}") from err
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
            f"`{path}` is truncated: its header promises {shape_text(shape)} "
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
    npy_header(path, fs.read_head(path))
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise InputError(
                f"`{path}` holds Python objects (pickled), which are never loaded; "
                "save a plain numeric array"
            ) from err
        raise InputError(f"`{path}` is truncated or corrupt: {fs.describe(err)}") from err
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise InputError(f"`{path}` is truncated or corrupt: {fs.describe(err)}") from err
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of an npz
        raise InputError(f"`{path}` is not a single array")
    return array


def write_npy(tmp: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    np.save(tmp, pixels, allow_pickle=False)


# --------------------------------------------------------------------------- memory maps


def map_npy(
    path: PathLike, *, max_channels: int | None = None, axes: str | None = None
) -> np.ndarray | None:
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
    axes : str, optional
        The stored axes of a volume (``--axes``, e.g. ``ZYX``): the shape must have as
        many, and the voxels (channels excluded) count against the pixel limit.

    Returns
    -------
    numpy.memmap or None
        The array (H, W) or (H, W, C) as stored, float32 or float64; ``None`` when
        the values need scaling (integers, bool, float16) or the header is of an
        unknown version: read those with :func:`read_image`.
    """
    path = Path(path)
    shape, dtype = npy_header(path, fs.read_head(path))
    if dtype is None:
        return None
    check_dtype(path, dtype)
    if axes is None:
        check_image_shape(path, shape, config.current().max_pixels, max_channels)
    else:
        from deconv_cli.volumes import check_voxels, parse_axes

        check_voxels(path, parse_axes(axes, len(shape)), shape)
    if dtype.newbyteorder("=") not in _FLOATS:
        return None
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    block = max(1, (64 << 20) // max(1, array[0].nbytes))
    bad = sum(
        nonfinite_pixels(array[start : start + block]) for start in range(0, array.shape[0], block)
    )
    if bad:
        raise nonfinite_error(path, bad)
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
    :func:`deconv_cli.tiled_invert.tiled_invert` with ``out=``), so the result never needs
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
