"""Zarr and OME-Zarr stacks, and ``A x`` / ``Aᵀ y`` chunk by chunk on Dask.

Reading (:func:`open_zarr`)
    A Zarr array, or an OME-Zarr image (a group whose ``multiscales`` metadata, v0.4
    or v0.5, names its full-resolution array, its axes and its voxel size). A plain
    array's axes are given (``axes="ZYX"``) or read from xarray's
    ``_ARRAY_DIMENSIONS``; a 2-D array is ``YX``. Nothing is read until computed:
    the result is a Dask array in ``Z, Y, X, C`` order, on the float scale of
    :func:`deconv_cli.io.scaled` (unsigned integers divided by their maximum).
Writing (:func:`write_zarr`)
    An OME-Zarr v0.4 image (Zarr format 2: what most viewers read): the array at
    ``0`` in regular chunks (the input's largest block per axis), the axes and the
    voxel size (µm) in ``multiscales``. Written into a hidden directory beside the
    target and renamed into place when complete, so a reader never sees a
    half-written stack.
Chunked operators (:func:`chunked`)
    ``dask.array.map_overlap`` with the kernel's extent as depth: each chunk, with
    ``k − 1`` neighbouring voxels on each side (round the period for ``wrap``), is
    seen in the whole stack's coordinates and its block of ``A x`` or ``Aᵀ y`` is
    computed by :class:`deconv_cli.tiles.Tiler`, the exact tiles' code. The result
    equals the whole-volume operator to rounding for every boundary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, InputError, OutputError, mention
from deconv_cli.tiles import SHAPE_KEEPING, Tiler

MISSING = (
    "Zarr stacks need zarr and dask: pip install 'deconv-cli[zarr]' "
    "(or: pip install zarr 'dask[array]')"
)
_SPATIAL_UNITS = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, None: 1.0}


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Zarr store (a directory ending ``.zarr``, or holding
    Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and (
        path.suffix.lower() == ".zarr"
        or any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))
    )


def _imports():
    try:
        import dask.array as da
        import zarr
    except ImportError as err:
        raise DeconvError(MISSING) from err
    return da, zarr


@dataclass
class ZarrVolume:
    """A lazily read stack: ``data`` (Dask, ``Z, Y, X, C`` order, float scale), its
    ``axes``, ``spacing`` (µm per spatial axis, or None) and stored ``source_dtype``."""

    data: object
    axes: str
    spacing: tuple[float, ...] | None
    source_dtype: np.dtype


def open_zarr(path: str | os.PathLike, *, axes: str | None = None) -> ZarrVolume:
    """Open a Zarr array or OME-Zarr image as a lazy volume.

    Parameters
    ----------
    path : str or PathLike
        The store (a directory).
    axes : str, optional
        The stored axes of a plain array (e.g. ``"ZYX"``), or to override OME's.

    Returns
    -------
    ZarrVolume

    Raises
    ------
    InputError
        Not a Zarr store, axes not known or not Z/Y/X/C, a pixel type deconv does not
        read.
    """
    from deconv_cli import formats
    from deconv_cli.volumes import AXES, parse_axes

    da, zarr = _imports()
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a non-store
        raise InputError(f"`{path}` is not a Zarr store ({type(err).__name__}: {err})") from err
    stored, spacing = None, None
    if isinstance(node, zarr.Group):
        node, stored, spacing = _ome_image(path, node)
    if axes is not None:
        stored = parse_axes(axes, node.ndim)
    elif stored is None:
        names = node.attrs.get("_ARRAY_DIMENSIONS")
        if names is not None:
            stored = parse_axes("".join(str(n)[:1] for n in names), node.ndim)
        elif node.ndim == 2:
            stored = "YX"
        else:
            raise InputError(
                f"`{path}` is a {node.ndim}-D Zarr array without axes metadata; give "
                f"{mention('axes')} (e.g. ZYX, ZYXC)"
            )
    formats.check_dtype(Path(path), node.dtype)
    array = da.from_zarr(node)
    if "T" in stored:  # OME images are TCZYX: one time point is a volume
        if node.shape[stored.index("T")] != 1:
            raise InputError(f"`{path}` is a time series; deconv reads Z, Y, X and channels")
        array = array[(slice(None),) * stored.index("T") + (0,)]
        stored = stored.replace("T", "")
    if set(stored) - set(AXES):
        raise InputError(f"`{path}` has axes `{stored}`; deconv reads Z, Y, X and channels")
    order = "".join(a for a in AXES if a in stored)
    array = da.moveaxis(array, [stored.index(a) for a in order], list(range(len(order))))
    source = np.dtype(node.dtype)
    if source.kind == "u" or source == np.bool_:
        top = 1 if source == np.bool_ else np.iinfo(source).max
        array = array.astype(np.float64) / top
    elif source.itemsize > 4:
        array = array.astype(np.float64)
    else:
        array = array.astype(np.float32)
    if spacing is not None:
        spacing = tuple(spacing[a] for a in order if a != "C")
    return ZarrVolume(array, order, spacing, source)


def _ome_image(path, group):
    """The full-resolution array of an OME-Zarr group, its axes and voxel size by axis."""
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise InputError(f"`{path}` is a Zarr group without OME `multiscales` metadata")
    scale = multiscales[0]
    dataset = scale["datasets"][0]
    names = [a["name"] if isinstance(a, dict) else a for a in scale.get("axes", [])]
    stored = "".join(n[:1].upper() for n in names) if names else None
    units = [a.get("unit") if isinstance(a, dict) else None for a in scale.get("axes", [])]
    spacing = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale" and stored is not None:
            factors = [_SPATIAL_UNITS.get(u, 1.0) for u in units]
            spacing = {
                a: float(s) * f
                for a, s, f in zip(stored, transform["scale"], factors, strict=True)
                if a in "ZYX"
            }
    return group[dataset["path"]], stored, spacing


def write_zarr(
    path: str | os.PathLike,
    data,
    *,
    axes: str,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
    compute: dict | None = None,
) -> Path:
    """Write a (Dask) volume as an OME-Zarr v0.4 image, atomically.

    Parameters
    ----------
    path : str or PathLike
        The target directory (conventionally ending ``.zarr``).
    data : dask or numpy array
        Axes ``axes`` in ``Z, Y, X, C`` order; stored as OME's ``c, z, y, x``.
    axes : str
    spacing : sequence of float, optional
        µm per spatial axis.
    overwrite : bool
        Replace an existing target.
    compute : dict, optional
        Keywords for ``dask.compute`` (e.g. ``scheduler=``).

    Returns
    -------
    Path
        ``path``.
    """
    da, zarr = _imports()
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"`{path}` exists; use {mention('overwrite', True)} to replace it")
    data = da.asarray(data)
    ome = ("C" + axes.replace("C", "")) if "C" in axes else axes
    data = da.moveaxis(data, [axes.index(a) for a in ome], list(range(len(ome))))
    # Each Dask block must fill whole Zarr chunks: two blocks writing parts of one
    # chunk would each read, modify and write it back, and one of the writes is lost
    # (threads or processes alike). Regular blocks of the largest size are the chunks.
    chunks = tuple(max(c) for c in data.chunks)
    data = data.rechunk(chunks)
    tmp = path.parent / f".deconv-{os.getpid()}-{path.name}"
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        target = root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)
        scale = [1.0] * len(ome)
        if spacing is not None:
            sizes = dict(zip(axes.replace("C", ""), spacing, strict=True))
            scale = [sizes.get(a, 1.0) for a in ome]
        root.attrs["multiscales"] = [
            {
                "version": "0.4",
                "axes": [
                    {"name": "c", "type": "channel"}
                    if a == "C"
                    else {"name": a.lower(), "type": "space", "unit": "micrometer"}
                    for a in ome
                ],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ]
        da.store(data, target, lock=False, **(compute or {}))
        if path.exists():
            old = path.parent / f".deconv-{os.getpid()}-old-{path.name}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


class _Embedded:
    """A chunk with its overlap, indexed in the whole array's coordinates.

    ``starts`` are the whole-array indices of the chunk's first element per spatial
    axis (before the start for a periodic overlap); indices are taken modulo the
    whole array's length, so a periodic overlap reads the far side's voxels.
    """

    def __init__(self, block: np.ndarray, starts: Sequence[int], shape: tuple[int, ...]):
        self.block, self.starts, self.shape = block, starts, shape

    def __getitem__(self, key) -> np.ndarray:
        local = []
        for a, k in enumerate(key):
            n = self.shape[a]
            index = np.arange(n)[k] if isinstance(k, slice) else np.asarray(k).reshape(-1)
            local.append((index - self.starts[a]) % n)
        return self.block[np.ix_(*local)]


def chunked(op, x, *, adjoint: bool = False):
    """``A x`` (or ``Aᵀ x``) of a Dask array, chunk by chunk with ``map_overlap``.

    Parameters
    ----------
    op : ConvOperator or Convolution
        A shape-keeping operator (``same`` mode, stride 1, no padding); spatial axes
        first, then channels.
    x : dask.array.Array, shape ``op.input_shape``
    adjoint : bool
        Compute ``Aᵀ x`` instead.

    Returns
    -------
    dask.array.Array
        Lazy, with ``x``'s chunks (channels in one chunk): equal to ``op.forward`` /
        ``op.adjoint`` of the whole array to rounding.

    Notes
    -----
    The depth is ``k − 1`` voxels per axis (``k`` the effective kernel extent): a
    chunk ``[s, e)`` of ``A x`` reads the padded positions ``[s − before, e + after)``
    and one of ``Aᵀ y`` the data ``[s − after, e + before)`` and, near an edge, the
    data whose taps fold back onto it through the boundary rule, all within
    ``k − 1`` voxels of the chunk or of the edge. ``map_overlap`` adds no boundary
    (``none``): the chunk's own boundary rule is the whole stack's, applied by the
    tiles' index maps; ``wrap`` takes the overlap round the period (``periodic``).
    """
    from dask.array.overlap import ensure_minimum_chunksize

    da, _ = _imports()
    tiler = Tiler(op)
    d = tiler.ndim
    if tuple(op.input_shape) != tuple(op.output_shape):
        raise GeometryError(
            f"chunked processing keeps the stack's shape: use {SHAPE_KEEPING} "
            f"(got `{op.geometry.describe()}`)"
        )
    if tuple(x.shape) != tuple(op.input_shape):
        raise GeometryError(f"the stack has shape {x.shape}, the operator {op.input_shape}")
    depth = [k - 1 for k in tiler.extent] + [0] * (x.ndim - d)
    chunks = [
        ensure_minimum_chunksize(max(depth[a], 1), x.chunks[a]) if a < d else (x.shape[a],)
        for a in range(x.ndim)
    ]
    x = x.rechunk(tuple(chunks)).astype(tiler.core.dtype)
    periodic = op.geometry.boundary == "wrap"
    compute = tiler.adjoint_block if adjoint else tiler.forward_block

    def block(chunk: np.ndarray, block_info=None) -> np.ndarray:
        location = block_info[None]["array-location"][:d]
        starts = [
            s - (depth[a] if periodic else min(depth[a], s)) for a, (s, _) in enumerate(location)
        ]
        return compute(_Embedded(chunk, starts, x.shape), location)

    return da.map_overlap(
        block,
        x,
        depth={a: depth[a] for a in range(x.ndim)},
        boundary={a: "periodic" if periodic and a < d else "none" for a in range(x.ndim)},
        trim=False,
        chunks=x.chunks,
        dtype=tiler.core.dtype,
        meta=np.empty((0,) * x.ndim, dtype=tiler.core.dtype),
    )


def chunked_bytes(op, chunks: Sequence[Sequence[int]], workers: int, itemsize: int) -> int:
    """The peak memory of :func:`chunked` on ``workers`` threads: each holds a chunk with
    its overlap and the work of the tiles' window (:data:`deconv_cli.memory.COPIES`)."""
    from deconv_cli.memory import COPIES, FIXED_BYTES

    tiler = Tiler(op)
    window = 1
    for a, sizes in enumerate(chunks):
        window *= max(sizes) + (2 * (tiler.extent[a] - 1) if a < tiler.ndim else 0)
    return FIXED_BYTES + int(workers * (COPIES["convolve"] + 2) * window * itemsize)


def process_zarr(
    source: str | os.PathLike,
    output: str | os.PathLike,
    kernel: np.ndarray,
    geometry,
    *,
    adjoint: bool = False,
    axes: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    jobs: int = 1,
) -> dict[str, str]:
    """``A x`` (or ``Aᵀ x``) of a Zarr stack into an OME-Zarr image, chunk by chunk.

    Parameters
    ----------
    source, output : str or PathLike
        The input store and the output directory (an OME-Zarr image).
    kernel, geometry
        As for :class:`deconv_cli.operators.ConvOperator` (``same`` mode, stride 1).
    adjoint : bool
        ``transpose`` instead of ``convolve``.
    axes : str, optional
        The stored axes of a plain Zarr array (:func:`open_zarr`).
    dtype : {"float32", "float64"}, optional
        The output's type (default: the computation's).
    overwrite : bool
    scheduler : str, optional
        ``"local"`` (a local Dask cluster of ``jobs`` processes, or one per core), a
        scheduler's address, or None (Dask's threads in this process).
    jobs : int

    Returns
    -------
    dict
        Summary lines: shape, chunks, memory estimate, scheduler.

    Raises
    ------
    DeconvError
        Before any work: a geometry that changes the shape, an integer ``dtype``, an
        existing output without ``overwrite``, a job whose estimated memory exceeds
        the memory available.
    """
    from deconv_cli.memory import available_bytes, describe_bytes
    from deconv_cli.operators import ConvOperator

    if dtype not in (None, "float32", "float64"):
        raise OutputError(f"`{dtype}`: Zarr outputs hold float32 or float64", parameter="dtype")
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"`{output}` exists; use {mention('overwrite', True)} to replace it")
    volume = open_zarr(source, axes=axes)
    spatial = len(volume.axes.replace("C", ""))
    data = volume.data
    op = ConvOperator(kernel, data.shape, geometry, spatial=spatial, dtype=data.dtype)
    result = chunked(op, data, adjoint=adjoint)
    workers = jobs if scheduler is not None and jobs > 1 else os.cpu_count() or 1
    need = chunked_bytes(op, result.chunks, workers, result.dtype.itemsize)
    room = available_bytes()
    if room is not None and need > room:
        raise DeconvError(
            f"`{source}`: chunks of {'x'.join(str(max(c)) for c in result.chunks)} on "
            f"{workers} workers need about {describe_bytes(need)} of memory, "
            f"{describe_bytes(room)} is available; rechunk the store smaller"
        )
    if dtype is not None:
        result = result.astype(dtype)
    if scheduler is None:
        write_zarr(output, result, axes=volume.axes, spacing=volume.spacing, overwrite=overwrite)
    else:
        from deconv_cli.batch_run import dask_client

        with dask_client(scheduler, jobs):
            write_zarr(
                output, result, axes=volume.axes, spacing=volume.spacing, overwrite=overwrite
            )
    return {
        "shape": f"{'x'.join(map(str, data.shape))} ({volume.axes}), {result.dtype}",
        "chunks": "x".join(str(max(c)) for c in result.chunks) + f", {result.npartitions} of them",
        "memory estimate": describe_bytes(need),
        "scheduler": scheduler or "threads",
    }
