"""One image through one operator: read, apply ``A`` / ``Aᵀ`` / an inverse, write.

The processing commands (convolve, transpose, invert) differ only in the
*transform* they apply to the image data; reading, output dtype, alpha handling
and the atomic write are shared here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deconv_cli.io import Image, parse_dtype, read_image, write_image
from deconv_cli.kernels import Kernel
from deconv_cli.noise import Noise
from deconv_cli.operators import ConvOperator, Geometry, input_shape_for


@dataclass
class Outcome:
    """What a transform did to one image: its result and lines for the summary."""

    data: np.ndarray
    operator: ConvOperator
    details: dict[str, str] = field(default_factory=dict)


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


Transform = Callable[[np.ndarray], Outcome]


def compute_dtype(image: Image, dtype: str | None) -> np.dtype:
    """float32 when the data or the requested output is float32, else float64."""
    if image.data.dtype == np.float32 or parse_dtype(dtype) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def process_file(
    path: Path,
    output: Path,
    make_transform: Callable[[Image], Transform],
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    inputs: tuple[Path, ...] = (),
) -> ItemReport:
    """Read ``path``, apply the transform built for it, write ``output`` atomically."""
    start = time.perf_counter()
    image = read_image(path, max_channels=None)  # conv-layer feature maps have many channels
    data = image.data.astype(compute_dtype(image, dtype), copy=False)
    outcome = make_transform(image)(data)
    # Alpha is carried through unfiltered, when the result still has its pixel grid.
    keep_alpha = image.alpha is not None and outcome.data.shape[:2] == image.alpha.shape
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
        inputs=inputs or (path,),
    )
    return ItemReport(
        input=Path(path),
        output=result.path,
        input_shape=image.data.shape,
        output_shape=outcome.data.shape,
        engine=outcome.operator.engine,
        seconds=time.perf_counter() - start,
        clipped=result.clipped,
        output_dtype=str(result.dtype),
        details=details,
    )


def convolver(
    kernel: Kernel,
    geometry: Geometry,
    *,
    noise: Noise | None = None,
    seed: int | None = None,
) -> Callable[[Image], Transform]:
    """The ``convolve`` transform: ``y = A x`` (plus seeded noise when asked)."""

    def make(image: Image) -> Transform:
        def apply(x: np.ndarray) -> Outcome:
            op = ConvOperator(kernel.array, x.shape, geometry, dtype=x.dtype)
            y = op.forward(x)
            details = {}
            if noise is not None:
                y = noise.apply(y, np.random.default_rng(seed))
                details["noise"] = f"{noise.describe()} (seed {seed})"
            return Outcome(y, op, details)

        return apply

    return make


def transposer(
    kernel: Kernel, geometry: Geometry, *, output_shape: tuple[int, int] | None = None
) -> Callable[[Image], Transform]:
    """The ``transpose`` transform: ``x = Aᵀ y``, the exact adjoint of ``convolve``."""

    def make(image: Image) -> Transform:
        def apply(y: np.ndarray) -> Outcome:
            shape = input_shape_for(kernel.array, y.shape, geometry, output_shape)
            op = ConvOperator(kernel.array, shape, geometry, dtype=y.dtype)
            return Outcome(op.adjoint(y), op)

        return apply

    return make
