"""The automatic weight of total-variation deconvolution (``tv``): λ from the data.

Morozov's discrepancy principle on a central crop (:func:`automatic_lam`), and on JPEG
data cross-validation on held-out blocks (:func:`held_out_lam`); the maths, the
measurements and the rules tried and rejected are in docs/deblur.md. Each evaluation
of a λ is a full solve of :func:`deconv_cli.restore.tv.tv_deconvolve` on the crop.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import data_scale
from deconv_cli.restore.tv import DEFAULT_TOL, kernel_gain, noise_tol, tv_deconvolve

PILOT = 256
"""The automatic ``λ`` is chosen on a central crop of at most this side."""
NOISE_FLOOR = 1e-6
"""The smallest noise level used by the automatic ``λ``, relative to the data scale."""
HELD_OUT = 4
"""The side of the blocks :func:`held_out_lam` holds out."""
HELD_OUT_SIDE = 128
HELD_OUT_STEP = 4.0
""":func:`held_out_lam` runs on a central crop of at most this side, λ in steps of 4:
2× steps on the 256² crop cost 16 final solves on a 300×451 JPEG (this, about 6)."""
FLOOR_DROP = 0.2
"""The discrepancy search stops lowering λ when a 4× step lowers ``log ‖r‖²`` by less."""


def automatic_lam(
    blurred: np.ndarray, op: ConvOperator, noise_sigma: float | None, jpeg_tables=None
) -> tuple[float, float, str]:
    """``(λ, σ, rule)``: the automatic TV weight, by the discrepancy principle, or on
    JPEG data by cross-validation.

    Morozov's discrepancy principle: ``‖A x_λ − y‖² = m σ²`` (``m`` data samples).
    The residual grows with λ; it is solved for on a central crop of at most
    :data:`PILOT` pixels a side, modelled as a crop of a larger blurred scene (the
    ``unknown`` boundary: exact for any boundary of the whole), by bracketing in
    factors of 4 from ``10 σ² g/s`` (``g`` the kernel gain, :func:`kernel_gain`) and
    interpolating ``log ‖r‖²`` linearly in ``log λ``, every solve a full run of
    :func:`tv_deconvolve`. Where no crop model exists (strides) the whole problem is
    solved instead. Where a 4× smaller λ lowers ``log ‖r‖²`` by less than
    :data:`FLOOR_DROP`, the residual is at its floor and the larger λ is kept.

    σ is ``noise_sigma``; or, where a JPEG or 8-bit floor dominates the data's noise, the
    noise model's level (:func:`deconv_cli.noise_model.floor_noise`: such an error is
    not white and the fit below reads it low); else the noise level the Tikhonov-GCV
    fit of the crop implies (:func:`deconv_cli.restore.parameter_rules.gcv_noise_sigma`),
    which counts white and Poisson noise; at least :data:`NOISE_FLOOR` times the data
    scale.

    On JPEG data (the noise model's kind; an image, not a volume) the discrepancy's
    target is unreliable: the blur model fits part of JPEG's error, the residual
    reaches ``m σ²`` only at a λ 2-40× too large. There λ is cross-validated instead
    (:func:`held_out_lam`, from ``10 σ² g/s``), which needs no noise level.

    Measured: the λ with the best PSNR (a sweep scored on the truth) left residuals
    of 0.78-1.17 m σ² on camera, text, coins, gravel and cell crops with gaussian,
    disk, motion and shake blurs at σ 0.001-0.05, so the rule errs towards the
    larger λ, whose cost is the smaller (see docs/deblur.md).
    """
    scale = data_scale(blurred)
    y, pilot = _pilot(blurred, op)
    sigma, source, jpeg = noise_sigma, "given", False
    if sigma is None:
        from deconv_cli.noise_model import floor_noise
        from deconv_cli.operators.grid import channel_first, noise_planes
        from deconv_cli.restore.parameter_rules import gcv_noise_sigma

        # a volume's planes (and channels) as the 2-D estimate's channels
        planes = blurred if op.spatial == 2 else noise_planes(channel_first(blurred, 3))
        floor = floor_noise(planes, jpeg_tables=jpeg_tables)
        if floor is not None:
            sigma, source = floor.sigma, f"the noise model's, {floor.kind}"
            jpeg = floor.kind.startswith("jpeg")
        else:
            sigma, source = gcv_noise_sigma(y.astype(np.float64), pilot), "from GCV's fit"
    sigma = max(float(sigma), NOISE_FLOOR * scale)
    tol = noise_tol(DEFAULT_TOL, sigma, y)
    start = 10 * sigma**2 * kernel_gain(pilot) / scale
    if jpeg and op.spatial == 2 and pilot is not op:
        crop, small = _pilot(blurred, op, HELD_OUT_SIDE)
        if min(crop.shape[:2]) >= 4 * HELD_OUT:  # at least two blocks each way of each kind
            corner = [(n - c) // 2 for n, c in zip(blurred.shape[:2], crop.shape[:2], strict=True)]
            lam = held_out_lam(crop, small, start, tol, corner)
            side = "×".join(map(str, crop.shape[:2]))
            rule = (
                f"cross-validated on held-out {HELD_OUT}×{HELD_OUT} blocks of a {side} crop "
                f"(JPEG data, σ = {sigma:.3g}: {source})"
            )
            return lam, sigma, rule
    lam, problem = _discrepancy(y, pilot, start, sigma, tol)
    return lam, sigma, _describe(sigma, source, problem)


def _discrepancy(
    y: np.ndarray, pilot: ConvOperator, lam: float, sigma: float, tol: float
) -> tuple[float, str | None]:
    """``(λ, problem)``: the discrepancy search of :func:`automatic_lam` on the crop,
    from ``lam``."""
    target = y.size * sigma**2

    def log_ratio(lam: float) -> float:
        x = tv_deconvolve(y, pilot, lam=lam, tol=tol).image
        r = pilot.forward(x) - y
        return math.log(max(float(np.vdot(r, r)), 1e-300) / target)

    value = log_ratio(lam)
    step = 4.0 if value < 0 else 0.25
    for _ in range(8):
        other = lam * step
        other_value = log_ratio(other)
        if (other_value < 0) != (value < 0):
            break
        if step < 1 and value - other_value < FLOOR_DROP:
            # a 4× smaller λ hardly lowers the residual: it is at its floor (the noise
            # level is underestimated, or the data holds what the model cannot fit)
            return lam, "the residual's floor is above m·σ²"
        lam, value = other, other_value
    else:
        return lam, "no bracket found"
    # interpolate log-linearly between the bracket's ends
    a, b = math.log(lam), math.log(other)
    fraction = value / (value - other_value)
    return math.exp(a + fraction * (b - a)), None


def held_out_lam(y: np.ndarray, op: ConvOperator, lam: float, tol: float, corner=(0, 0)) -> float:
    """The λ that best predicts held-out data: cross-validation on ``HELD_OUT``-blocks.

    The image's ``HELD_OUT × HELD_OUT`` blocks (counted from ``corner``, the crop's
    place in the data, so that they align with JPEG's 8×8 grid) are split as a
    checkerboard: ``x_λ`` is fitted to the kept half only (:func:`tv_deconvolve`'s
    ``mask``), and scored by ``CV(λ) = ‖(A x_λ − y)_H‖²`` on the held-out half ``H``.
    Where the held-out noise is independent of the kept, ``E CV(λ) = ‖(A x_λ − A x)_H‖²
    + |H| σ²``: the prediction error, whatever the noise's level, distribution or
    dependence on the signal. ``λ`` moves from the given value by factors of
    :data:`HELD_OUT_STEP` while ``CV`` falls; the result is the largest λ whose ``CV``
    is within one standard error of the minimum's (the one-standard-error rule of
    Breiman, Friedman, Olshen & Stone 1984; the error over the held-out blocks,
    ``√B · std(CV_b)``), ``log λ`` interpolated linearly in ``CV``: the minimum alone
    chose λ up to 8× too small (cell, disk 2, JPEG q75: a flat ``CV`` around it),
    and a too small λ costs the more.

    Blocks, not single pixels: JPEG's error is correlated within its 8×8 blocks, and
    a pixel predicted from its neighbours' data shares their error (a checkerboard of
    pixels chose λ 16× too small on astronaut, gaussian σ 1, JPEG q75); 8×8 blocks
    left holes the prior fills, and chose λ 4× too large (see docs/deblur.md).
    """
    from scipy.ndimage import uniform_filter

    spatial = tuple(np.indices(y.shape[:2]))
    blocks = sum((i + c) // HELD_OUT for i, c in zip(spatial, corner, strict=True))
    keep = np.broadcast_to((blocks % 2 == 0).reshape(y.shape[:2] + (1,) * (y.ndim - 2)), y.shape)
    # the start sees the kept data only: the held-out samples by a local mean of the kept
    size = (2 * HELD_OUT + 1,) * 2 + (1,) * (y.ndim - 2)
    weight = uniform_filter(keep.astype(np.float64), size)
    mean = uniform_filter(np.where(keep, y, 0.0), size) / np.maximum(weight, 1e-12)
    start = np.where(keep, y, mean).astype(y.dtype)
    held = ~keep

    # each held-out block's label (the block's index in the crop), over its channels
    label = (spatial[0] + corner[0]) // HELD_OUT * (y.shape[1] + HELD_OUT) + (
        (spatial[1] + corner[1]) // HELD_OUT
    )
    label = np.broadcast_to(label.reshape(label.shape + (1,) * (y.ndim - 2)), y.shape)[held]
    _, label = np.unique(label, return_inverse=True)
    tried: dict[float, np.ndarray] = {}  # λ: each held-out block's squared error

    def cv(value: float) -> float:
        if value not in tried:
            x = tv_deconvolve(start, op, lam=value, tol=tol, mask=keep).image
            r = (op.forward(x) - y)[held]
            tried[value] = np.bincount(label, weights=np.square(r, dtype=np.float64))
        return float(tried[value].sum())

    factor = HELD_OUT_STEP
    step = 1 / factor if cv(lam / factor) < cv(lam) else factor
    best = lam * min(step, 1.0)
    for _ in range(8):
        if cv(best * step) >= cv(best):
            break
        best *= step
    # the one-standard-error rule: the largest λ whose CV is within the standard error
    # of the minimum's (over the held-out blocks)
    errors = tried[best]
    limit = cv(best) + math.sqrt(errors.size) * float(np.std(errors, ddof=1))
    chosen = best
    for value in sorted(v for v in tried if v > best):
        if cv(value) > limit:  # log λ interpolated linearly in CV up to the limit
            t = (limit - cv(chosen)) / (cv(value) - cv(chosen))
            return chosen * (value / chosen) ** t
        chosen = value
    return chosen


def _describe(sigma: float, source: str, problem: str | None) -> str:
    text = f"discrepancy ‖Ax−y‖² = m·σ², σ = {sigma:.3g} ({source}) on a ≤{PILOT}²-sample crop"
    if problem:
        text += f"; {problem}"
    return text


def _pilot(
    blurred: np.ndarray, op: ConvOperator, side: int = PILOT
) -> tuple[np.ndarray, ConvOperator]:
    """The central crop of the data and its operator (a ``valid`` blur of a larger
    scene), or the whole problem where the geometry has no such crop model.

    The crop has at most ``side`` (:data:`PILOT`) samples along each spatial axis and
    ``side²`` in all: the axes in increasing length, each at most the ``k``-th root of
    what the others leave (``k`` the axes still to size); a 2-D image's is
    ``≤ side × side``.
    """
    g = op.geometry
    d = op.spatial
    if any(s != 1 for s in g.axes(d)[0]) or op.is_bank:
        return blurred, op
    sides = list(blurred.shape[:d])
    budget = float(side**2)
    for rank, axis in enumerate(sorted(range(d), key=lambda a: sides[a])):
        sides[axis] = min(sides[axis], side, int(budget ** (1 / (d - rank)) + 1e-9))
        budget /= sides[axis]
    starts = [(n - s) // 2 for n, s in zip(blurred.shape[:d], sides, strict=True)]
    crop = blurred[tuple(slice(a, a + s) for a, s in zip(starts, sides, strict=True))]
    kernel = op.effective[0, 0]
    spatial = zip(crop.shape[:d], kernel.shape, strict=True)
    shape = tuple(n + k - 1 for n, k in spatial) + crop.shape[d:]
    geometry = Geometry.create(mode="valid", boundary="constant", correlate=g.correlate)
    pilot = ConvOperator(kernel, shape, geometry, spatial=d, dtype=op.dtype)
    return np.ascontiguousarray(crop), pilot
