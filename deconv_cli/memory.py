"""The memory a job needs, and the memory there is: refuse before the work what would
not fit, and suggest a ``--tile`` that does.

:func:`estimate_bytes` predicts a job's peak allocation from measured peaks (in
image-sized arrays: :data:`COPIES`, or the ``invert`` method's registry footprint),
for 2-D images and volumes alike (the image size is its voxel count), tiled or not;
:func:`check_memory` refuses a job that would not fit in :func:`available_bytes`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from deconv_cli.errors import DeconvError, mention
from deconv_cli.operators import ConvOperator, Geometry, diagonal_basis
from deconv_cli.restore import get_method
from deconv_cli.tiled_invert import default_margin, pilot_shape, tileable
from deconv_cli.tiles import SHAPE_KEEPING, Tile, Tiler, describe_tile, dims, tile_sides

MEMINFO = Path("/proc/meminfo")
STATUS = Path("/proc/self/status")
CGROUP_FILES = (
    # (limit, usage, stat, the stat's reclaimable page-cache key): cgroup v2, then v1
    (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory.current"),
        Path("/sys/fs/cgroup/memory.stat"),
        "inactive_file",
    ),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.stat"),
        "total_inactive_file",
    ),
)

COPIES = {"convolve": 8.0, "transpose": 8.0}
"""Peak allocated memory of an untiled ``convolve`` or ``transpose``, in image-sized
arrays of the computation's dtype (the larger of the image and the data, channels
included): the largest slope measured by ``benchmarks/bench_tiles.py calibrate``
(1024² and 2048², float64 and float32, a gaussian and a motion blur), rounded up.
Float32 jobs keep some float64 work arrays, hence the same counts for both. An
``invert`` method's count is its registry entry's
(:attr:`deconv_cli.restore.Method.memory`)."""
FIXED_BYTES = 100 << 20
"""Allocations that do not grow with the image (spectra samples, crops, buffers)."""
SUGGESTED_TILES = (4096, 2048, 1024, 512, 256)
"""The ``--tile`` sides suggested for an image; a volume's go on to 128 and 64."""


def available_bytes() -> int | None:
    """Memory this process can still allocate, or ``None`` when unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (else free pages from ``os.sysconf``), or
    the room left under the cgroup's memory limit (limit − usage + reclaimable page
    cache; cgroup v2, else v1), or under this process's address-space limit (``ulimit
    -v``: limit − ``VmSize``), whichever is lowest.
    """
    found = [v for v in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if v is not None]
    return min(found) if found else None


def _rlimit_room() -> int | None:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, limit - int(line.split()[1]) * 1024)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return None


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    for limit_file, usage_file, stat_file, reclaimable in CGROUP_FILES:
        try:
            text = limit_file.read_text().strip()
            if text == "max" or int(text) >= 1 << 60:  # no limit
                continue
            limit, usage = int(text), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        cache = 0
        try:
            for line in stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == reclaimable:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + cache)
    return None


def _copies(command: str, method: str | None, op: ConvOperator, unknown: bool) -> float:
    """The job's peak memory in image-sized arrays: :data:`COPIES`, or the method's
    footprint (an unknown method is an error)."""
    if command != "invert":
        return COPIES[command]
    footprint = get_method(method).memory
    diagonal = not unknown and diagonal_basis(op) is not None
    return footprint(diagonal=diagonal, bank=op.is_bank)


def bank_spectrum_bytes(op, itemsize: int) -> int:
    """Bytes the FFT engine keeps for a kernel bank: its spectrum and the conjugate.

    A bank that is not one shared kernel (:func:`~deconv_cli.operators.geometry.shared_kernel`)
    is transformed once per operator, ``C_out · C_in/groups`` kernels at the padded
    grid's fast lengths (a half spectrum along the last axis), complex of twice the
    computation's ``itemsize``; the adjoint keeps the conjugate beside it. A large bank's
    spectra outweigh the image many times over (``C_out · C_in/groups`` against ``C``
    image-sized arrays). 0 for another engine or a shared kernel (one image-sized
    spectrum at most, within :data:`COPIES`).
    """
    from deconv_cli.operators import fast_length
    from deconv_cli.operators.grid import convolution_of

    core = convolution_of(op)
    if core.engine != "fft" or core.shared:
        return 0
    co, cig = core.effective.shape[:2]
    size = [fast_length(n) for n in core.padded_shape]
    frequencies = math.prod(size[:-1]) * (size[-1] // 2 + 1)
    return 2 * co * cig * frequencies * 2 * itemsize


def _whole_operator(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    unknown: bool,
    spatial: int,
    groups: int,
) -> ConvOperator:
    """The untiled job's operator; ``shape`` is the input's (image, or data)."""
    if command == "convolve":
        return ConvOperator(kernel, shape, geometry, spatial=spatial, groups=groups)
    if command == "transpose":
        from deconv_cli.operators import input_shape_for

        shape = input_shape_for(kernel, shape, geometry, spatial=spatial, groups=groups)
        return ConvOperator(kernel, shape, geometry, spatial=spatial, groups=groups)
    from deconv_cli.inversion import build_problem

    return build_problem(
        kernel, shape, geometry, unknown_boundary=unknown, spatial=spatial, groups=groups
    ).op


def estimate_bytes(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    method: str | None = None,
    dtype=np.float64,
    unknown_boundary: bool = False,
    tile: Tile | None = None,
    margin: int | tuple[int, ...] | None = None,
    mapped: bool = False,
    spatial: int = 2,
    groups: int = 1,
) -> int:
    """The peak memory a job allocates, in bytes (an estimate from measured peaks).

    Parameters
    ----------
    command : {"convolve", "transpose", "invert"}
    shape : tuple of int
        The input's shape: the image for ``convolve``, the data otherwise; a volume's
        spatial axes first (``spatial`` of them), then channels.
    kernel, geometry, groups
        As for the command (``groups``: a grouped bank's, :class:`ConvOperator`'s).
    method : str, optional
        The ``invert`` method (required for ``invert``).
    dtype : numpy dtype
        The computation's dtype (float32 or float64).
    unknown_boundary : bool
        ``invert --boundary unknown``.
    tile, margin : int or tuple of int, optional
        Estimate the tiled job: the input, the result and the copy of it written to
        the file, plus the work of one window (for ``invert``, of the larger of a
        tile's window and the parameter crop).
    mapped : bool
        The tiled job's input and output are files streamed box by box: not counted.
    spatial : {2, 3}
        The spatial axes of ``shape`` (3: a volume).

    Returns
    -------
    int
        :data:`FIXED_BYTES` plus :data:`COPIES` image-sized arrays of the command, or
        the footprint of the ``invert`` method, the image being the larger of the input
        and the output.

    Raises
    ------
    DeconvError
        ``method`` is not a registered method (for ``invert``).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    op = _whole_operator(command, shape, kernel, geometry, unknown_boundary, spatial, groups)
    itemsize = np.dtype(dtype).itemsize
    copies = _copies(command, method, op, unknown_boundary)
    d = spatial
    lengths, lengths_out = op.input_shape[:d], op.output_shape[:d]
    channels = max(math.prod(op.input_shape[d:]), math.prod(op.output_shape[d:]))
    if tile is None:
        voxels = max(math.prod(lengths), math.prod(lengths_out))
        spectra = bank_spectrum_bytes(op, itemsize)
        return FIXED_BYTES + spectra + int(copies * voxels * channels * itemsize)
    sides = tile_sides(tile, d)
    extent = op.effective.shape[2:]
    if command == "invert":
        margins = default_margin(op) if margin is None else margin
        margins = margins if isinstance(margins, tuple) else (margins,) * d
        # the larger of a tile's window and the pilot crop's, per axis
        window = tuple(
            max(min(t, n), p) + 2 * m + k
            for t, n, p, m, k in zip(
                sides, lengths, pilot_shape(lengths), margins, extent, strict=True
            )
        )
    else:
        stride = geometry.axes(d)[0] if command == "convolve" else (1,) * d
        window = tuple(s * t + k for s, t, k in zip(stride, sides, extent, strict=True))
    # the input, the result, and the copy write_image makes when it converts its type
    held = math.prod(op.input_shape) + 2 * math.prod(op.output_shape)
    arrays = 0 if mapped else held * itemsize
    # The tiles keep one window operator, with its bank's spectra, per window shape; a
    # tiled invert builds one problem per tile at a time.
    tiler = Tiler(op)
    shapes = (
        [window]
        if command == "invert"
        else tiler.window_shapes(sides, adjoint=command == "transpose")
    )
    spectra = sum(bank_spectrum_bytes(tiler.window(shape), itemsize) for shape in shapes)
    # the window's own copy (gathered from the input) besides the path's work
    work = (copies + 1) * math.prod(window) * channels * itemsize
    return FIXED_BYTES + arrays + spectra + int(work)


def check_memory(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    tile: int | None = None,
    available: int | None = None,
    **job,
) -> int:
    """Refuse a job whose estimated peak memory exceeds the memory available.

    Parameters are those of :func:`estimate_bytes` (``job``: its keywords besides
    ``tile``), plus ``available`` (bytes; default :func:`available_bytes`; unknown: no
    check).

    Returns
    -------
    int
        The estimate, when it fits.

    Raises
    ------
    DeconvError
        One line: what the job needs, what is available, and a ``--tile SIZE`` whose
        estimate fits, when the command can be tiled and one does.
    """
    method, mapped = job.get("method"), job.get("mapped", False)
    need = estimate_bytes(command, shape, kernel, geometry, tile=tile, **job)
    room = available_bytes() if available is None else available
    if room is None or need <= room:
        return need
    name = f"{command} {mention('method', method)}" if method else command
    message = (
        f"{name} on a {dims(shape)} {np.dtype(job.get('dtype', np.float64)).name} image "
        f"needs about {describe_bytes(need)} of memory"
        f"{' with ' + mention('tile', describe_tile(tile)) if tile else ''}, "
        f"{describe_bytes(room)} is available"
    )
    if command == "invert" and not tileable(geometry):
        raise DeconvError(
            f"{message}; {mention('tile')} works for invert only with {SHAPE_KEEPING}: "
            "free memory or process a smaller image"
        )
    d = job.get("spatial", 2)
    largest = max(shape[:d])
    ceiling = min(tile_sides(tile, d)) if tile is not None else largest
    suggested = SUGGESTED_TILES + ((128, 64) if d == 3 else ())
    sizes = [s for s in suggested if s < largest and s < ceiling]
    tiled = None
    for size in sizes:
        tiled = estimate_bytes(command, shape, kernel, geometry, tile=size, **job)
        if tiled <= room:
            raise DeconvError(
                f"{message}; use {mention('tile', size)} (about {describe_bytes(tiled)})"
            )
    if not mapped:
        files = ".npy input and output"
        if d == 3:
            files = "a .npy or uncompressed TIFF stack in and .npy or .tif out"
        for size in [tile] * (tile is not None) + sizes:
            job["mapped"] = True
            tiled = estimate_bytes(command, shape, kernel, geometry, tile=size, **job)
            if tiled <= room:
                raise DeconvError(
                    f"{message}; use {mention('tile', _tile_flag(size))} with {files}, which "
                    f"are then streamed box by box (about {describe_bytes(tiled)})"
                )
    smaller = (
        f"; even {mention('tile', sizes[-1])} needs about {describe_bytes(tiled)}" if sizes else ""
    )
    raise DeconvError(f"{message}{smaller}: free memory or process a smaller image")


def _tile_flag(tile: Tile) -> str:
    return describe_tile(tile) if isinstance(tile, tuple) else str(tile)


def describe_bytes(nbytes: float) -> str:
    """``1.2 GB`` or ``250 MB``."""
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.0f} MB"
