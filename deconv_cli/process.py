"""One image through one operator: read, apply ``A`` / ``Aᵀ`` / an inverse, write.

The processing commands (convolve, transpose, invert) differ only in the
*transform* they apply to the image data; reading, output dtype, alpha handling
and the atomic write are shared here.

The layout is explicit: an image read with its axes (:func:`deconv_cli.volumes.read_volume`:
``YX``, ``YXC``, ``ZYX``, ``ZYXC``, from ``--axes`` or the file's metadata) has 2 or 3
spatial axes, and the operator is built with that many (``ConvOperator(...,
spatial=)``). A volume's result is written with its axes and voxel size
(:func:`deconv_cli.volumes.write_volume`; a stride changes the voxel size).

Above ~500 lines because the three transforms and the one file-processing path they
share (read with axes, check before the work, write with alpha or voxel size) are one
idea; a transform in another module would import its reading and writing back.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, mention
from deconv_cli.formats import check_shape, parse_dtype
from deconv_cli.inversion import IterationRecord, Monitor, build_problem, invert
from deconv_cli.io import Image, write_image
from deconv_cli.kernels import Kernel
from deconv_cli.memory import check_memory
from deconv_cli.noise import Noise
from deconv_cli.operators import ConvOperator, Geometry, input_shape_for
from deconv_cli.restore import RestoreOptions, RestoreResult
from deconv_cli.stackfile import Allocate, open_stack, write_stack
from deconv_cli.volumes import check_volume_format, read_volume, write_volume


@dataclass
class Outcome:
    """What a transform did to one image: its result and lines for the summary.

    ``restored`` is an inversion's :class:`~deconv_cli.restore.RestoreResult`, the
    numbers behind ``details``, for library callers (``data`` is the image to write).
    """

    data: np.ndarray
    operator: ConvOperator
    details: dict[str, str] = field(default_factory=dict)
    restored: RestoreResult | None = None


@dataclass
class ItemReport:
    """What was done for one input file."""

    input: Path
    output: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    engine: str
    seconds: float
    clipped: int
    output_dtype: str
    details: dict[str, str]


class Transform(ABC):
    """What a processing command does to the data of one image.

    Subclasses are dataclasses of plain values, so a batch can send them to
    worker processes.
    """

    tile: int | None = None
    forward: ClassVar[bool] = False  # the result is A x (a stride multiplies the voxel size)
    volumes: ClassVar[bool] = True  # takes volumes (3 spatial axes)

    @abstractmethod
    def __call__(self, image: Image, data: np.ndarray, allocate: Allocate | None = None) -> Outcome:
        """The result of the command on ``data`` (the pixels of ``image``).

        With ``tile`` and ``allocate`` (the output file of :func:`process_file`,
        :func:`deconv_cli.stackfile.write_stack`), the tiles are written into
        ``allocate(shape, dtype, stride=, clip=)`` and ``data`` may be read from a file
        box by box too: memory stays bounded by the tile.
        """

    def mappable(self) -> bool:
        """Whether the result can be computed tile by tile, streamed between files."""
        return self.tile is not None

    @abstractmethod
    def result_shape(self, shape: tuple[int, ...], spatial: int = 2) -> tuple[int, ...]:
        """The shape of the result for data of ``shape`` with ``spatial`` spatial axes
        (checked before the work)."""

    def check_layout(self, image: Image) -> int:
        """The spatial axes of ``image`` (2 or 3), refused before the work when the
        kernel has more, or the command takes 2-D images only."""
        spatial = kernel_layout(self.kernel, image.axes, f"`{image.path}`")
        if spatial == 3 and not self.volumes:
            raise GeometryError(
                f"`{image.path}` is a volume (axes {image.axes}); this command takes 2-D images",
                parameter="axes",
            )
        return spatial


def kernel_layout(kernel: Kernel, axes: str, what: str) -> int:
    """The spatial axes of data with ``axes`` (2 or 3); a 3-D volume kernel on a 2-D
    image is refused (``what`` names the data)."""
    spatial = spatial_axes(axes)
    if kernel.is_volume and spatial == 2:
        shape = "x".join(map(str, kernel.array.shape))
        raise GeometryError(
            f"kernel `{kernel.description}` is a 3-D volume kernel ({shape}) but {what} is "
            f"2-D (axes {axes}); give a volume: a TIFF stack, or a .npy with "
            f"{mention('axes', 'ZYX')}"
        )
    return spatial


def spatial_axes(axes: str) -> int:
    """The number of spatial axes in an axes string (``ZYXC`` -> 3)."""
    return len(axes.replace("C", ""))


def result_axes(shape: tuple[int, ...], spatial: int) -> str:
    """The axes of a result of ``shape`` with ``spatial`` spatial axes, in ``Z, Y, X, C``
    order (a bank may add or drop the channel axis)."""
    return "ZYX"[3 - spatial :] + "C" * (len(shape) - spatial)


def compute_dtype(image: Image, dtype: str | None) -> np.dtype:
    """float32 when the data or the requested output is float32, else float64."""
    if image.data.dtype == np.float32 or parse_dtype(dtype) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def process_file(
    path: Path,
    output: Path,
    transform: Transform,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    inputs: tuple[Path, ...] = (),
    axes: str | None = None,
) -> ItemReport:
    """Read ``path``, apply the transform built for it, write ``output`` atomically.

    ``axes`` are the input's as stored (``--axes``; :func:`deconv_cli.volumes.read_volume`).
    A tiled job from a ``.npy`` or a contiguous TIFF stack, axes stored in ``Z, Y, X, C``
    order, to a ``.npy`` (or a TIFF, without channels) streams between the two files
    (:mod:`deconv_cli.stackfile`): neither the image nor the result is ever in memory.
    """
    start = time.perf_counter()
    inputs = inputs or (path,)
    streamed = _streamed(path, output, transform, dtype, axes)
    if streamed is not None:
        image, spatial = streamed
        outcomes = []

        def fill(allocate: Allocate) -> None:
            outcomes.append(transform(image, image.data, allocate))

        done = write_stack(
            output,
            fill,
            axes=image.axes,
            spacing=image.spacing,
            forward=transform.forward,
            dtype=dtype,
            source_dtype=image.source_dtype,
            overwrite=overwrite,
            inputs=inputs,
        )
        outcome = outcomes[0]
        written, clipped, output_dtype = done.path, done.clipped, done.dtype
        details = dict(outcome.details)
        if spatial == 3 and image.spacing is not None:
            details["voxel size"] = _voxel_size(_result_spacing(image, outcome, transform.forward))
    else:
        image = read_volume(path, axes=axes, max_channels=transform.kernel.max_channels)
        spatial = transform.check_layout(image)
        result = transform.result_shape(image.data.shape, spatial)
        if spatial == 2:
            check_shape(output, result, _keeps_alpha(image, result))  # before the work
        else:
            check_volume_format(output, dtype)
        outcome = transform(image, _compute_data(image, dtype))
        write = _write if spatial == 2 else _write_volume
        written, clipped, output_dtype, details = write(
            output, image, outcome, dtype, overwrite, inputs, transform.forward
        )
    return ItemReport(
        input=Path(path),
        output=written,
        input_shape=image.data.shape,
        output_shape=outcome.data.shape,
        engine=outcome.operator.engine,
        seconds=time.perf_counter() - start,
        clipped=clipped,
        output_dtype=str(output_dtype),
        details=details,
    )


def _streamed(path, output, transform: Transform, dtype: str | None, axes: str | None):
    """``(image, spatial axes)`` with ``image.data`` read from ``path`` box by box, when
    the job can stream between the files (:mod:`deconv_cli.stackfile`), else None;
    the output's format checked before the work."""
    suffix = Path(output).suffix.lower()
    if not transform.mappable() or suffix not in (".npy", ".tif", ".tiff"):
        return None
    requested = parse_dtype(dtype)
    image = open_stack(
        path,
        axes=axes,
        dtype=np.float32 if requested == np.float32 else None,
        max_channels=transform.kernel.max_channels,
    )
    if image is None or (suffix != ".npy" and "C" in image.axes):
        return None
    spatial = transform.check_layout(image)
    result = transform.result_shape(image.data.shape, spatial)
    if spatial == 2:
        check_shape(output, result)  # before the work
    else:
        check_volume_format(output, dtype)
    if suffix != ".npy" and (spatial != 3 or len(result) != spatial):
        return None  # a TIFF image, or a bank's channels (stored as planes): written whole
    return image, spatial


def _compute_data(image: Image, dtype: str | None) -> np.ndarray:
    """The pixels in :func:`compute_dtype`; refuses float64 data float32 cannot hold (the
    cast would turn them into Inf)."""
    target = compute_dtype(image, dtype)
    data = image.data
    if data.dtype != target and data.size:
        top = max(float(data.max()), -float(data.min()))
        limit = float(np.finfo(target).max)
        if top > limit:
            raise DeconvError(
                f"`{image.path}`: values reach {top:.3g}, beyond {target.name} "
                f"(±{limit:.3g}): {mention('dtype', target.name)} cannot hold them; use float64"
            )
    return data.astype(target, copy=False)


def _keeps_alpha(image: Image, shape: tuple[int, ...]) -> bool:
    """Alpha is carried through unfiltered, when the result still has its pixel grid."""
    return image.alpha is not None and tuple(shape[:2]) == image.alpha.shape


def _write(output, image: Image, outcome: Outcome, dtype, overwrite, inputs, forward):
    """Write an in-memory result: the file, pixels clipped, dtype, and summary lines."""
    keep_alpha = _keeps_alpha(image, outcome.data.shape)
    details = dict(outcome.details)
    if image.alpha is not None and not keep_alpha:
        details["alpha"] = "dropped (the output has another shape)"
    # `.npy` is the exact format: it keeps the computed floats unless --dtype says otherwise.
    source_dtype = None if Path(output).suffix.lower() == ".npy" else image.source_dtype
    result = write_image(
        output,
        outcome.data,
        dtype=dtype,
        source_dtype=source_dtype,
        alpha=image.alpha if keep_alpha else None,
        overwrite=overwrite,
        inputs=inputs,
    )
    if result.alpha_dropped:
        details["alpha"] = f"dropped ({Path(output).suffix.lower()} has no alpha channel)"
    return result.path, result.clipped, result.dtype, details


def _write_volume(output, image: Image, outcome: Outcome, dtype, overwrite, inputs, forward):
    """Write a volume result with its axes and voxel size (``A x`` samples every
    ``stride``-th voxel: its voxels are ``stride`` times larger; ``Aᵀ y`` and the
    inverses the reverse)."""
    spacing = _result_spacing(image, outcome, forward)
    source_dtype = None if Path(output).suffix.lower() == ".npy" else image.source_dtype
    result = write_volume(
        output,
        outcome.data,
        axes=result_axes(outcome.data.shape, outcome.operator.spatial),
        spacing=spacing,
        dtype=dtype,
        source_dtype=source_dtype,
        overwrite=overwrite,
        inputs=inputs,
    )
    details = dict(outcome.details)
    if spacing is not None:
        details["voxel size"] = _voxel_size(spacing)
    return result.path, result.clipped, result.dtype, details


def _result_spacing(image: Image, outcome: Outcome, forward: bool):
    """The result's voxel size: ``A x`` samples every ``stride``-th voxel, so its voxels
    are ``stride`` times larger; ``Aᵀ y`` and the inverses the reverse."""
    if image.spacing is None:
        return None
    stride = outcome.operator.core.stride
    return tuple(d * s if forward else d / s for d, s in zip(image.spacing, stride, strict=True))


def _voxel_size(spacing) -> str:
    return " x ".join(f"{d:.4g}" for d in spacing) + " µm (z y x)"


@dataclass
class Convolve(Transform):
    """``y = A x``, plus seeded noise when asked."""

    kernel: Kernel
    geometry: Geometry
    noise: Noise | None = None
    seed: int | None = None
    tile: int | None = None
    forward: ClassVar[bool] = True

    def mappable(self) -> bool:
        return self.tile is not None and self.noise is None  # noise is drawn for the whole image

    def _operator(self, shape: tuple[int, ...], spatial: int, dtype=np.float64) -> ConvOperator:
        return self.kernel.operator(shape, self.geometry, spatial=spatial, dtype=dtype)

    def result_shape(self, shape: tuple[int, ...], spatial: int = 2) -> tuple[int, ...]:
        return self._operator(shape, spatial).output_shape

    def __call__(self, image: Image, x: np.ndarray, allocate: Allocate | None = None) -> Outcome:
        spatial = spatial_axes(image.axes)
        check_memory(
            "convolve",
            x.shape,
            self.kernel.array,
            self.geometry,
            dtype=x.dtype,
            tile=self.tile,
            mapped=allocate is not None,
            spatial=spatial,
            groups=self.kernel.groups,
        )
        op = self._operator(x.shape, spatial, x.dtype)
        details = {}
        if self.tile is None:
            y = op.forward(x)
        else:
            from deconv_cli.tiles import tiled_forward

            out = allocate(op.output_shape, op.dtype, stride=op.core.stride) if allocate else None
            y = tiled_forward(op, x, self.tile, out=out)
            details["tiles"] = _tiles(self.tile, allocate)
        if self.noise is not None:
            y = self.noise.apply(y, np.random.default_rng(self.seed))
            details["noise"] = f"{self.noise.describe()} (seed {self.seed})"
        return Outcome(y, op, details)


@dataclass
class Transpose(Transform):
    """``x = Aᵀ y``, the exact adjoint of :class:`Convolve` with the same flags."""

    kernel: Kernel
    geometry: Geometry
    output_shape: tuple[int, ...] | None = None
    tile: int | None = None

    def result_shape(self, shape: tuple[int, ...], spatial: int = 2) -> tuple[int, ...]:
        return input_shape_for(
            self.kernel.array, shape, self.geometry, self.output_shape, spatial=spatial,
            groups=self.kernel.groups,
        )  # fmt: skip

    def __call__(self, image: Image, y: np.ndarray, allocate: Allocate | None = None) -> Outcome:
        spatial = spatial_axes(image.axes)
        check_memory(
            "transpose",
            y.shape,
            self.kernel.array,
            self.geometry,
            dtype=y.dtype,
            tile=self.tile,
            mapped=allocate is not None,
            spatial=spatial,
            groups=self.kernel.groups,
        )
        op = self.kernel.operator(
            self.result_shape(y.shape, spatial), self.geometry, spatial=spatial, dtype=y.dtype
        )
        if self.tile is None:
            return Outcome(op.adjoint(y), op)
        from deconv_cli.tiles import tiled_adjoint

        out = allocate(op.input_shape, op.dtype, stride=op.core.stride) if allocate else None
        x = tiled_adjoint(op, y, self.tile, out=out)
        return Outcome(x, op, {"tiles": _tiles(self.tile, allocate)})


@dataclass
class Invert(Transform):
    """Solve ``A x ≈ y`` with a registered method.

    ``on_iteration`` (a progress display), ``on_tile`` (``on_tile(done, total)`` after
    each tile of a ``tile`` run) and ``history`` (a list receiving the per-iteration
    records) are for single-process runs.
    """

    kernel: Kernel
    geometry: Geometry
    method: str
    options: RestoreOptions
    unknown_boundary: bool = False
    output_shape: tuple[int, ...] | None = None
    reference: np.ndarray | None = None
    clip: bool = False
    on_iteration: Callable[[IterationRecord], None] | None = None
    history: list[IterationRecord] | None = None
    tile: int | None = None
    tile_margin: int | None = None
    on_tile: Callable[[int, int], None] | None = None

    def __post_init__(self) -> None:
        """Refuse options that conflict when the command is built, before any item runs."""
        from deconv_cli.restore import get_method

        check_kernel = get_method(self.method).check_kernel
        if check_kernel is not None:
            check_kernel(self.kernel.array)
        if self.tile is None:
            if self.tile_margin is not None:
                raise GeometryError(
                    "sets the margin of the tiles; give `tile` too", parameter="tile_margin"
                )
            return
        if self.reference is not None or self.history is not None:
            raise GeometryError(
                "`reference` and `history` follow the iterations of one solve, which a tiled "
                "invert does not have; run without tiles",
                parameter="tile",
            )
        from deconv_cli.tiled_invert import check_tiled_geometry

        check_tiled_geometry(self.geometry)

    def _problem(self, shape: tuple[int, ...], spatial: int, dtype=np.float64):
        return build_problem(
            self.kernel.array,
            shape,
            self.geometry,
            unknown_boundary=self.unknown_boundary,
            output_shape=self.output_shape,
            dtype=dtype,
            spatial=spatial,
            groups=self.kernel.groups,
        )

    def result_shape(self, shape: tuple[int, ...], spatial: int = 2) -> tuple[int, ...]:
        return self._problem(shape, spatial).image_shape

    def __call__(self, image: Image, y: np.ndarray, allocate: Allocate | None = None) -> Outcome:
        spatial = spatial_axes(image.axes)
        check_memory(
            "invert",
            y.shape,
            self.kernel.array,
            self.geometry,
            method=self.method,
            dtype=y.dtype,
            unknown_boundary=self.unknown_boundary,
            tile=self.tile,
            margin=self.tile_margin,
            mapped=allocate is not None,
            spatial=spatial,
            groups=self.kernel.groups,
        )
        problem = self._problem(y.shape, spatial, y.dtype)
        options = replace(self.options, jpeg_tables=_jpeg_tables(image))
        if self.tile is not None:
            from deconv_cli.tiled_invert import tiled_invert

            result = tiled_invert(
                y,
                self.kernel.array,
                self.geometry,
                self.method,
                options,
                self.tile,
                margin=self.tile_margin,
                unknown_boundary=self.unknown_boundary,
                out=allocate(problem.image_shape, problem.op.dtype, clip=self.clip)
                if allocate
                else None,
                source_dtype=image.source_dtype,
                on_tile=self.on_tile,
                spatial=spatial,
                groups=self.kernel.groups,
            )
            if self.clip and allocate is None:  # the file's writer clips what it stores
                np.clip(result.image, 0, 1, out=result.image)
            return Outcome(result.image, problem.op, describe_result(result), result)
        if self.reference is not None and self.reference.shape != problem.image_shape:
            raise GeometryError(
                f"has shape {_shape(self.reference.shape)}, the recovered image "
                f"{_shape(problem.image_shape)}",
                parameter="reference",
            )
        # Without a reference, history or progress display, no callback: iterative
        # methods then skip the per-iteration residual.
        watched = any(v is not None for v in (self.reference, self.history, self.on_iteration))
        monitor = Monitor(problem, self.reference, self.on_iteration) if watched else None
        options = replace(options, callback=monitor)
        result = invert(y, problem, self.method, options, source_dtype=image.source_dtype)
        if self.history is not None:
            self.history.extend(monitor.records)
        x = np.clip(result.image, 0, 1) if self.clip else result.image
        return Outcome(x, problem.op, describe_result(result), result)


def _jpeg_tables(image: Image):
    """The quantization tables of an 8-bit input read from a JPEG file, else None."""
    if image.source_dtype != np.uint8:
        return None
    from deconv_cli.noise_jpeg import jpeg_tables_from_file

    return jpeg_tables_from_file(image.path)


def describe_result(result: RestoreResult) -> dict[str, str]:
    """Summary lines for an inversion: method, parameters, iterations, residual, notes."""
    details = {"method": result.method}
    if result.params:
        details["parameters"] = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.params.items()
        )
    if result.iterations is not None:
        state = {True: "converged", False: "NOT converged", None: ""}[result.converged]
        details["iterations"] = f"{result.iterations} {state}".strip()
    if result.residual is not None:
        details["relative residual"] = f"{result.residual:.3e}"
    for i, note in enumerate(result.notes, 1):
        details[f"note {i}" if len(result.notes) > 1 else "note"] = note
    return details


def _tiles(tile, allocate: Allocate | None) -> str:
    from deconv_cli.tiles import describe_tile

    return f"{describe_tile(tile)} (exact{', memory-mapped' if allocate else ''})"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
