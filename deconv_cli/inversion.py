"""True deconvolution of one image: build the inverse problem, run a method, report.

The inverse problem is ``A x ≈ y`` with the operator of the same kernel and flags
that produced ``y``. With ``--boundary unknown`` (real photographs) the observed
``y`` is modelled as the ``valid`` part of the blur of a larger unknown scene: the
method solves for the scene, extended by the kernel's extent, with the data term
only on the observed pixels, and the observed frame of it is returned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import (
    ConvOperator,
    Geometry,
    as_bank,
    effective_kernel,
    input_shape_for,
)
from deconv_cli.restore import RestoreOptions, RestoreResult, check_options, get_method

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Problem:
    """The operator to invert and the frame of its solution that is returned."""

    op: ConvOperator
    frame: tuple[slice, ...]  # where the observed image lies in the solution, per spatial axis

    def crop(self, x: np.ndarray) -> np.ndarray:
        return x[self.frame]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of the returned (cropped) solution."""
        full = self.op.input_shape
        spatial = tuple(len(range(n)[f]) for n, f in zip(full, self.frame, strict=False))
        return spatial + full[len(self.frame) :]


def build_problem(
    kernel: np.ndarray,
    observed_shape: tuple[int, ...],
    geometry: Geometry,
    *,
    unknown_boundary: bool = False,
    output_shape: tuple[int, ...] | None = None,
    dtype=np.float64,
    spatial: int = 2,
) -> Problem:
    """The operator whose forward image has ``observed_shape`` (``spatial`` axes, then
    channels).

    ``unknown_boundary`` extends the unknown image by the kernel's extent and
    observes only the ``valid`` part of its blur (``geometry.mode`` must be ``same``,
    with no stride or padding: the observed image *is* the frame).
    """
    if unknown_boundary:
        if geometry.mode != "same" or geometry.padding or set(geometry.stride) != {1}:
            raise GeometryError(
                "`unknown` models a crop of a larger blurred scene: it takes mode `same` "
                "(the default), no padding and no stride",
                parameter="boundary",
            )
        if as_bank(kernel, spatial)[1]:
            raise GeometryError(
                "`unknown` is for blur kernels, not kernel banks", parameter="boundary"
            )
        k = effective_kernel(kernel, geometry, spatial).shape[2:]
        extended = tuple(n + m - 1 for n, m in zip(observed_shape, k, strict=False))
        valid = replace(geometry, mode="valid", boundary="constant")
        op = ConvOperator(
            kernel, extended + observed_shape[spatial:], valid, spatial=spatial, dtype=dtype
        )
        # the frame of the "same" convention: the kernel centre's offset
        starts = [m // 2 if geometry.correlate else (m - 1) // 2 for m in k]
        frame = tuple(slice(a, a + n) for a, n in zip(starts, observed_shape, strict=False))
        return Problem(op, frame)
    shape = input_shape_for(kernel, observed_shape, geometry, output_shape, spatial=spatial)
    op = ConvOperator(kernel, shape, geometry, spatial=spatial, dtype=dtype)
    return Problem(op, (slice(None),) * spatial)


@dataclass
class IterationRecord:
    """One row of the iteration history (``--history``)."""

    iteration: int
    residual: float
    psnr: float | None
    ssim: float | None
    seconds: float


class Monitor:
    """The per-iteration callback: measures against a reference, keeps the history.

    ``on_iteration`` (e.g. a progress bar) is called with each record.
    """

    def __init__(
        self,
        problem: Problem,
        reference: np.ndarray | None = None,
        on_iteration: Callable[[IterationRecord], None] | None = None,
    ) -> None:
        self.problem = problem
        self.reference = reference
        self.on_iteration = on_iteration
        self.records: list[IterationRecord] = []
        self.start = time.perf_counter()

    def __call__(self, iteration: int, x: np.ndarray, residual: float) -> None:
        psnr = ssim = None
        if self.reference is not None:
            from deconv_cli.metrics import compute_metrics

            reference, estimate = self.reference, self.problem.crop(x)
            if self.problem.op.spatial == 3 and estimate.ndim == 3:  # the metrics' Z×Y×X×C
                reference, estimate = reference[..., None], estimate[..., None]
            values = compute_metrics(reference, estimate, ["psnr", "ssim"])
            psnr, ssim = values["psnr"], values["ssim"]
        record = IterationRecord(
            iteration, float(residual), psnr, ssim, time.perf_counter() - self.start
        )
        self.records.append(record)
        if self.on_iteration is not None:
            self.on_iteration(record)


def check_magnitude(data: np.ndarray, dtype: np.dtype) -> None:
    """Refuse data beyond ``1e-8 · sqrt(largest float)`` in magnitude (1.8e11 in float32,
    1.3e146 in float64): the methods square and sum it (norms, noise variances), and
    beyond that internal errors and NaN results were measured (values near 1e200)."""
    limit = math.sqrt(float(np.finfo(dtype).max)) * 1e-8
    top = max(float(data.max()), -float(data.min())) if data.size else 0.0
    if top > limit:
        raise DeconvError(
            f"the blurred image's values reach {top:.3g}; invert works with magnitudes up to "
            f"{limit:.2g} in {np.dtype(dtype).name} (their squares must stay finite): "
            "scale the data down"
        )


def invert(
    blurred: np.ndarray,
    problem: Problem,
    method: str,
    options: RestoreOptions,
    *,
    source_dtype: np.dtype | None = None,
) -> RestoreResult:
    """Run ``method`` on ``A x ≈ blurred`` and return the observed frame of the solution.

    When the data was stored as integers and the method is the exact inverse, a note
    predicts how much the quantization noise is amplified.
    """
    chosen = get_method(method)
    if not np.all(np.isfinite(blurred)):
        raise DeconvError("the blurred image has NaN or Inf values")
    check_magnitude(blurred, problem.op.dtype)
    check_options(options, blurred)
    result = chosen.function(blurred.astype(problem.op.dtype, copy=False), problem.op, options)
    result.image = problem.crop(result.image)
    if source_dtype is not None and np.dtype(source_dtype).kind == "u":
        if result.method == "inverse":
            from deconv_cli.spectral import amplification_note, quantization_sigma

            bits = np.iinfo(source_dtype).bits
            note = amplification_note(
                problem.op, quantization_sigma(bits), source=f"{bits}-bit quantization noise"
            )
            if note:
                result.notes.append(f"warning: {note}")
    return result
