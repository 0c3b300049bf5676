"""``.npy`` files: headers read without unpickling, whole loads, and memory maps.

A ``.npy`` header says the shape and dtype; it is checked before anything is read
(pickles refused, never loaded; a file shorter than its header promises refused as
truncated before anything is allocated). Tiled jobs stream ``.npy`` files box by box
(:mod:`deconv_cli.stackfile`).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from deconv_cli import fs
from deconv_cli.atomic import PathLike
from deconv_cli.errors import InputError
from deconv_cli.formats import (
    NUMPY,
    check_dtype,
    check_image_shape,
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
