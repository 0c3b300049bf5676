"""Stacks streamed box by box between files: the input and output of tiled commands.

A tiled job (``--tile``) reads its boxes straight from the input file and writes each
box of the result straight into the output file, so that neither the stack nor its
result is ever in memory, not even as a memory map of a whole file: each read or
write maps only the planes it touches, and only while it runs. Memory is then the
tiles' work, whatever the stack's size (a 1 GiB uint16 stack in a 4 GiB address
space: ``docs/guide/volumes.md``).

Input (:func:`open_stack`)
    A ``.npy`` (any pixel type deconv reads), or a TIFF stack whose first series is
    one contiguous uncompressed block (what tifffile and ImageJ write), its axes in
    ``Z, Y, X, C`` order. Voxels are scaled as :func:`deconv_cli.io.scaled` scales
    them (uint16 / 65535...), box by box; float files are checked for NaN/Inf before
    the work, in slabs.
Output (:func:`write_stack`)
    A ``.npy``, or a TIFF (ImageJ hyperstack; OME-TIFF for float64 or a name ending
    ``.ome.tif``) for a result without channels, with the voxel size. Each box is
    encoded as :func:`deconv_cli.io.encode` encodes a whole result (integers rounded
    and clipped, the clipped voxels counted), into a temporary file renamed into
    place when complete (:func:`deconv_cli.atomic.atomic_write`).
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli import config, formats, fs
from deconv_cli.atomic import atomic_write
from deconv_cli.errors import InputError, OutputError
from deconv_cli.io import Image, PathLike, encode

SLAB_BYTES = 64 << 20
"""Bytes of a file read at once when a float input is checked for NaN/Inf."""


class StackReader:
    """A stack's voxels in a file, read box by box on the float scale.

    Slices like a read-only array of ``shape`` and ``dtype`` (the computation's
    float type) with keys of slices (step 1), or of index arrays per axis as
    ``np.ix_`` makes them (outer indexing): a box, or a box's rows picked by index.
    Each read maps the planes of the box's bounding range only while it copies them.
    """

    def __init__(
        self, path: Path, offset: int, shape: tuple[int, ...], stored: np.dtype, dtype
    ) -> None:
        self.path, self.offset, self.shape = Path(path), int(offset), tuple(shape)
        self.stored, self.dtype, self.ndim = np.dtype(stored), np.dtype(dtype), len(shape)
        self.top = np.iinfo(self.stored).max if self.stored.kind == "u" else None

    def _planes(self, start: int, stop: int) -> np.memmap:
        return _map(self.path, self.offset, self.shape, self.stored, start, stop, "r")

    def _scaled(self, box: np.ndarray) -> np.ndarray:
        """As :func:`deconv_cli.io.scaled` computes it, then in ``dtype``."""
        kind = self.stored.kind
        if kind == "u":
            box = box.astype(np.float64) / self.top
        elif kind == "b":
            box = box.astype(np.float64)
        return np.array(box, dtype=self.dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            key = ()
        key = key + (slice(None),) * (self.ndim - len(key))
        spans, picks = [], []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("a stack is read in boxes: slices of step 1")
                spans.append((start, max(start, stop)))
                picks.append(None)
            else:
                index = np.asarray(k).reshape(-1)
                low = int(index.min()) if index.size else 0
                spans.append((low, int(index.max()) + 1 if index.size else 0))
                picks.append(index - low)
        planes = self._planes(*spans[0])
        box = self._scaled(planes[(slice(None),) + tuple(slice(a, b) for a, b in spans[1:])])
        del planes
        if all(p is None for p in picks):
            return box
        index = [np.arange(n) if p is None else p for p, n in zip(picks, box.shape, strict=True)]
        return box[np.ix_(*index)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[...] if dtype is None else self[...].astype(dtype)


def _map(path, offset, shape, dtype, start: int, stop: int, mode: str) -> np.memmap:
    """The planes ``[start, stop)`` along the first axis of a C-ordered array in a file."""
    plane = math.prod(shape[1:]) * dtype.itemsize
    return np.memmap(
        path,
        dtype=dtype,
        mode=mode,
        offset=offset + start * plane,
        shape=(stop - start,) + shape[1:],
    )


def open_stack(
    path: PathLike,
    *,
    axes: str | None = None,
    dtype: np.dtype | None = None,
    max_channels: int | None = formats.MAX_CHANNELS,
) -> Image | None:
    """Open a stack to read box by box, or None when its file does not allow it.

    Parameters
    ----------
    path : str or PathLike
        A ``.npy`` or a TIFF.
    axes : str, optional
        As for :func:`deconv_cli.volumes.read_volume`; they must be stored in
        ``Z, Y, X, C`` order (else None: the file is read whole).
    dtype : numpy dtype, optional
        float32 to compute in float32 (``--dtype float32``); default as
        :func:`deconv_cli.process.compute_dtype` picks (float32 for float32 or float16
        files, else float64).
    max_channels : int or None
        As for :func:`deconv_cli.volumes.read_volume`, for a ``.npy`` without axes.

    Returns
    -------
    Image or None
        ``data`` a :class:`StackReader`, axes in ``Z, Y, X, C`` order, the voxel size;
        None for other formats, a one-page TIFF, a compressed or scattered TIFF, axes
        stored in another order, or a ``.npy`` of a header version numpy cannot map.

    Raises
    ------
    InputError
        As :func:`deconv_cli.volumes.read_volume` (the same checks, on the header),
        and NaN/Inf voxels in a float file.
    """
    from deconv_cli.volumes import AXES, check_voxels, parse_axes

    path = Path(path)
    head = fs.read_head(path)
    fmt = formats.NUMPY if path.suffix.lower() == ".npy" else formats.sniff(head)
    if fmt is formats.NUMPY:
        found = _npy_layout(path, head, axes, max_channels)
    elif fmt is formats.TIFF:
        found = _tiff_layout(path, axes)
    else:
        return None
    if found is None:
        return None
    shape, stored, spacing, source, offset = found
    if stored != "".join(a for a in AXES if a in stored):
        return None
    if 0 in shape:
        raise InputError(f"`{path}` is empty (shape {formats.shape_text(shape)})")
    if fmt is formats.NUMPY and axes is not None:
        check_voxels(path, parse_axes(axes, len(shape)), shape)
    if dtype is None:
        dtype = np.float32 if source.kind == "f" and source.itemsize <= 4 else np.float64
    reader = StackReader(path, offset, shape, source, dtype)
    if source.kind == "f":
        _check_finite(reader)
    if spacing is not None:
        spacing = tuple(spacing[a] for a in stored if a != "C")
        spacing = spacing if all(s is not None for s in spacing) else None
    return Image(reader, None, source.newbyteorder("="), path, axes=stored, spacing=spacing)


def _npy_layout(path: Path, head: bytes, axes: str | None, max_channels):
    from deconv_cli.npyfile import npy_header
    from deconv_cli.volumes import parse_axes

    shape, dtype = npy_header(path, head)
    if dtype is None:
        return None
    formats.check_dtype(path, dtype)
    if axes is None:
        formats.check_image_shape(path, shape, config.current().max_pixels, max_channels)
        stored = "YX" if len(shape) == 2 else "YXC"
    else:
        stored = parse_axes(axes, len(shape))
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )  # npy_header returned None for other versions
        _, fortran, _ = header(fh)
        offset = fh.tell()
    return None if fortran else (tuple(shape), stored, None, dtype, offset)


def _tiff_layout(path: Path, axes: str | None):
    from deconv_cli.codecs import decode_error
    from deconv_cli.volumes import _open_tiff, tiff_layout

    try:
        with _open_tiff(path) as tif:
            layout = tiff_layout(tif, path, axes)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise decode_error(path, err) from err
    if layout is None or layout.offset is None:
        return None
    return layout.shape, layout.axes, layout.spacing, layout.dtype, layout.offset


def _check_finite(reader: StackReader) -> None:
    step = max(1, SLAB_BYTES // max(1, math.prod(reader.shape[1:]) * reader.stored.itemsize))
    bad = 0
    for start in range(0, reader.shape[0], step):
        planes = reader._planes(start, min(reader.shape[0], start + step))
        bad += int(np.count_nonzero(~np.isfinite(planes)))
        del planes
    if bad:
        raise formats.nonfinite_error(reader.path, bad)


class StackWriter:
    """The result's file being written: ``writer[box] = values`` encodes a box
    (:func:`deconv_cli.io.encode`; clipped to [0, 1] first with ``clip``) and stores it.

    ``clipped`` counts the voxels an integer type clipped; ``shape`` and ``dtype``
    (the stored type) are the file's.
    """

    def __init__(self, name: Path, tmp: Path, offset, shape, dtype, *, clip, channels) -> None:
        self.name, self.tmp, self.offset = name, tmp, offset
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.clip, self.channels, self.clipped = clip, channels, 0

    def __setitem__(self, key, values) -> None:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            key = ()
        key = key + (slice(None),) * (self.ndim - len(key))
        spans = [k.indices(n)[:2] for k, n in zip(key, self.shape, strict=True)]
        box = tuple(b - a for a, b in spans)
        values = np.broadcast_to(values, box)
        if self.clip:
            values = np.clip(values, 0, 1)
        pixels, clipped = encode(self.name, values, self.dtype, channels=self.channels)
        self.clipped += clipped
        planes = _map(self.tmp, self.offset, self.shape, self.dtype, *spans[0], "r+")
        planes[(slice(None),) + tuple(slice(a, b) for a, b in spans[1:])] = pixels
        del planes  # unmapped; the pages reach the disk with the file's fsync


Allocate = Callable[..., StackWriter]
"""``allocate(shape, dtype, *, stride=None, clip=False)``: the writer of a result of
``shape`` computed in ``dtype`` (see :func:`write_stack`)."""


@dataclass
class Written:
    """What :func:`write_stack` wrote: the file, its pixel type, the voxels clipped."""

    path: Path
    dtype: np.dtype
    clipped: int


def write_stack(
    path: PathLike,
    fill: Callable[[Allocate], None],
    *,
    axes: str,
    spacing: Sequence[float] | None = None,
    forward: bool = False,
    dtype: str | np.dtype | None = None,
    source_dtype: np.dtype | None = None,
    overwrite: bool = False,
    inputs: Sequence[PathLike] = (),
) -> Written:
    """Write a result box by box: ``fill(allocate)`` gets its writer and fills it.

    Parameters
    ----------
    path : str or PathLike
        ``.npy``, or ``.tif``/``.tiff`` for a result without channels.
    fill : callable
        ``fill(allocate)`` calls ``allocate(shape, dtype, *, stride=None, clip=False)``
        once, when it knows the result's shape (``dtype``: the computation's), and
        sets every box of the :class:`StackWriter` returned.
    axes : str
        The result's axes in ``Z, Y, X, C`` order, as the input's (``YX``...).
    spacing : sequence of float, optional
        The input's voxel size (µm per spatial axis); ``stride`` given to ``allocate``
        multiplies it (``forward``: ``A x`` samples every s-th voxel) or divides it.
    dtype, source_dtype, overwrite, inputs
        As :func:`deconv_cli.volumes.write_volume`: the stored type is ``dtype``, else
        the source's (a TIFF; a ``.npy`` keeps the computed floats), else the
        computation's.

    Returns
    -------
    Written

    Raises
    ------
    OutputError
        As :func:`deconv_cli.atomic.atomic_write`; ``fill`` not calling ``allocate``,
        or calling it twice; a TIFF with channels (write ``.npy``).
    """
    path = Path(path)
    fmt = formats.check_format(path, dtype)
    if fmt not in (formats.NUMPY, formats.TIFF) or (fmt is formats.TIFF and "C" in axes):
        raise OutputError(
            f"`{path}`: a streamed result is written to .npy, or .tif without channels"
        )
    writers: list[StackWriter] = []

    def write(tmp: Path) -> None:
        def allocate(shape, computed, *, stride=None, clip=False) -> StackWriter:
            if writers:
                raise OutputError(f"`{path}`: allocate was called twice")
            implied = source_dtype if fmt is formats.TIFF and source_dtype is not None else computed
            stored = formats.output_dtype(fmt, dtype, implied)
            sizes = _spacing(spacing, stride, forward)
            offset = _create(fmt, tmp, path, tuple(shape), stored, axes, sizes)
            writer = StackWriter(path, tmp, offset, shape, stored, clip=clip, channels="C" in axes)
            writers.append(writer)
            return writer

        fill(allocate)
        if not writers:
            raise OutputError(f"`{path}`: nothing was computed to write")

    atomic_write(path, write, overwrite=overwrite, inputs=inputs)
    return Written(path, writers[0].dtype, writers[0].clipped)


def _spacing(spacing, stride, forward: bool):
    if spacing is None or stride is None:
        return spacing
    return tuple(d * s if forward else d / s for d, s in zip(spacing, stride, strict=True))


def _create(fmt, tmp: Path, path: Path, shape, dtype: np.dtype, axes: str, spacing) -> int:
    """Write the file's header, reserve its pixels' blocks; the pixels' offset."""
    if fmt is formats.NUMPY:
        with open(tmp, "wb") as fh:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
            np.lib.format.write_array_header_2_0(fh, {**header, "shape": shape})
            offset = fh.tell()
    else:
        offset = _create_tiff(tmp, path, shape, dtype, axes, spacing)
    _reserve(tmp, offset + math.prod(shape) * dtype.itemsize)
    return offset


def _create_tiff(tmp: Path, path: Path, shape, dtype: np.dtype, axes: str, spacing) -> int:
    import tifffile

    from deconv_cli.volumes import tiff_options

    sizes = dict(zip(axes, spacing, strict=True)) if spacing is not None else {}
    options = tiff_options(path, dtype, axes, sizes)
    offset, _ = tifffile.imwrite(tmp, shape=shape, dtype=dtype, returnoffset=True, **options)
    return offset


def _reserve(tmp: Path, size: int) -> None:
    """Give the file its blocks now (``posix_fallocate``).

    The file is sparse: a page written through a map on a full file system would
    kill the process with SIGBUS, leaving the temporary file behind. Reserving the
    blocks first turns that into ENOSPC here, an error like any other write's.
    """
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - macOS, Windows
        with open(tmp, "r+b") as fh:
            fh.truncate(size)
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # unsupported: a plain file
            raise
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
