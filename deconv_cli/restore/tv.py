"""Total-variation deconvolution, exact for every boundary.

(Over 500 lines: the two iterations, for a free and a padded grid, share the grid
layout and the shrinkage. The automatic weight is in
:mod:`deconv_cli.restore.tv_lambda`.)

Solves ``min_x ½‖A x − y‖² + λ TV(x)`` with the isotropic TV of each channel (over the
spatial axes: an image's two, a volume's three) and ``A`` the operator itself, whatever
its boundary, mode, padding, stride or dilation, including the ``unknown`` boundary (a
``valid`` operator on an extended image). The automatic ``λ`` follows Morozov's
discrepancy principle, computed on a central crop
(:func:`~deconv_cli.restore.tv_lambda.automatic_lam`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from deconv_cli.errors import DeconvError, mention
from deconv_cli.operators import ConvOperator
from deconv_cli.operators.grid import GridOperator
from deconv_cli.restore import (
    Footprint,
    RestoreOptions,
    RestoreResult,
    check,
    data_scale,
    register,
)
from deconv_cli.restore.iterative import dot

DEFAULT_ITERATIONS = 300
DEFAULT_TOL = 3e-4
NOISE_TOL = 0.02
"""With a noise level σ known or estimated, the default ``tol`` is at most
``NOISE_TOL · σ / rms(y)``: the iterates stop once a step changes the image by less
than 2% of the noise per pixel. At low noise the splitting converges slowly while its
steps still matter (16-bit camera data, gaussian σ 1: 39.8 dB at the 24th iteration,
where a relative change 3·10⁻⁴ stopped it; 43.0 dB at 300), at σ ≥ 0.01 the fixed
``tol`` binds (the README tour case: 26.89 dB at 14 iterations, 26.91 at 120)."""
ADMM_ITERATIONS = 500
ADMM_TOL = 1e-4
"""The defaults for an image padded by ``wrap`` or ``constant`` (ADMM, :class:`_ADMM`)."""
EXACT_BOUNDARIES = ("wrap", "constant")
"""Padding rules kept exactly (by ADMM): they state a fact about the scene (periodic, or
zero outside) that the free extension does not reproduce. The rules that continue the
image (``reflect``, ``mirror``, ``nearest``) are solved on the free padded grid."""
BETA_START = 1.0
BETA_FACTOR = 5.0
"""The continuation: the splitting weight ``β`` (relative to the data scale ``s``)
doubles each iteration from ``BETA_START`` to ``β_max = BETA_FACTOR / √(λ/s)`` (within
16-8192), then stays there. The shrinkage threshold is ``s/β``. A smaller final
``β`` for a larger λ: measured on camera, text and coins crops, the iterates then
approached the TV minimizer fastest."""
RHO_MIN = 1e-3
"""The smallest splitting weight ``ρ = λβ/s``: below it the first ``v``-steps are nearly
an inverse filter of the filled data and blow up (measured: a noiseless 64² gaussian
blur at λ/s = 10⁻⁷ reached 4.6 dB in 300 iterations from ``β = 1``, 29.4 dB in 60 with
this floor)."""


def tv_deconvolve(
    blurred: np.ndarray,
    op: ConvOperator,
    *,
    lam: float | None = None,
    iterations: int | None = None,
    tol: float | None = None,
    noise_sigma: float | None = None,
    jpeg_tables=None,
    callback=None,
    mask: np.ndarray | None = None,
) -> RestoreResult:
    """Total-variation deconvolution: ``min_x ½‖A x − y‖² + λ TV(x)``.

    Parameters
    ----------
    blurred : ndarray, shape ``op.output_shape``
    op : ConvOperator
        One kernel, any geometry, on an image or a volume (``spatial=3``; a 2-D kernel
        there blurs each plane); kernel banks are not supported.
    lam : float, optional
        The TV weight λ. ``None``: by the discrepancy principle (``tv_lambda.automatic_lam``)
        with the noise level ``noise_sigma``, or estimated from the data; on JPEG
        data by cross-validation.
    iterations : int, optional
        Maximum iterations (default 60; 500 for a padded image).
    tol : float, optional
        Once the continuation is complete, stop when an iteration changes ``x`` by less
        than ``tol`` (relative, default ``3e-4``; ``1e-4`` for a padded image); ``0``
        runs exactly ``iterations``.
    noise_sigma : float, optional
        Known noise level for the automatic λ.
    jpeg_tables : JpegTables, optional
        The quantization tables of the JPEG file the data came from, for the noise level
        of the automatic λ (``tv_lambda.automatic_lam``).
    callback : callable, optional
        ``callback(k, x, ‖A x − y‖ / ‖y‖)`` after each iteration (``x`` is a view of
        a work buffer; the residual is that of the iterate before its last update).
    mask : ndarray of bool, shape ``op.output_shape``, optional
        The data term only on the samples where ``mask`` is true (the others are
        unknowns, filled by the model as the unobserved border is); ``λ`` must be given.
        The free grid only (not ``wrap`` or ``constant`` padding).

    Returns
    -------
    RestoreResult

    Notes
    -----
    Half-quadratic splitting with continuation (Krishnan and Fergus, "Fast image
    deconvolution using hyper-Laplacian priors", NIPS 2009) on a periodic grid with
    the masked-data splitting for the boundary (Almeida and Figueiredo, IEEE TIP 22,
    2013; Matakos, Ramani and Fessler, IEEE TIP 22, 2013). With ``A = S ∘ V ∘ P`` the
    padded image ``v = P x`` sits on a grid where the valid correlation ``V`` is a
    circular one ``C``; ``M`` keeps the observed samples. The iteration alternates::

        u = M y + (I − M) C v                      (the unobserved samples: filled)
        e += ∇v − d,  d = shrink(∇v + e, s/β)      (isotropic, pointwise)
        v = (CᵀC + ρ ∇ᵀ∇)⁻¹ (Cᵀu + ρ ∇ᵀ(d − e)),  ρ = λβ/s   (one Fourier division)

    The first three steps minimize ``½‖u − C v‖² + λ Σ|d| + ρ/2 ‖d − ∇v + e‖²`` in
    turn, with ``u`` equal to ``y`` where observed: its minimum over ``u`` is
    ``½‖M C v − y‖²``, so the data term is exact. ``β`` doubles each iteration up to
    ``β_max`` (:data:`BETA_FACTOR`), the half-quadratic continuation; the scaled dual
    ``e`` (rescaled when ``β`` changes) makes the fixed point the TV minimizer at any
    ``β`` (ADMM once ``β`` is fixed). TV counts the differences inside the image only
    (``d = ∇v + e`` elsewhere: no cost). This runs where the padding is empty
    (``--boundary unknown``, ``valid`` mode): ``v`` is free on the whole grid. A
    padded image (``P x`` by a boundary rule) adds the constraint ``v = E P x``, kept
    exactly by ADMM (:class:`_ADMM`, from the data placed on the image, up to 500
    iterations). The splitting starts from the data placed on the
    image and blended periodically across the rest of the grid. Four FFTs of the grid
    per iteration.
    """
    if op.is_bank:
        raise DeconvError("tv needs one kernel; for a kernel bank use cgls, lsqr or tikhonov")
    exact = any(p != (0, 0) for p in op.pads) and op.geometry.boundary in EXACT_BOUNDARIES
    for name, value in (("iterations", iterations), ("tol", tol), ("lam", lam)):
        check(name, value)
    if mask is not None and (exact or lam is None):
        raise DeconvError(
            "tv's mask needs a given lam and a free grid (not wrap or constant padding)"
        )
    if iterations is None:
        iterations = ADMM_ITERATIONS if exact else DEFAULT_ITERATIONS
    iterations = int(iterations)
    default_tol = tol is None
    tol = (ADMM_TOL if exact else DEFAULT_TOL) if tol is None else float(tol)
    params: dict[str, object] = {}
    sigma = noise_sigma
    if lam is None:
        from deconv_cli.restore.tv_lambda import automatic_lam  # it solves with this module

        lam, sigma, rule = automatic_lam(np.asarray(blurred), op, noise_sigma, jpeg_tables)
        params["lam"] = lam
        params["lam_rule"] = rule
    else:
        lam = float(lam)
        params["lam"] = lam
    if default_tol and sigma is not None:
        tol = noise_tol(tol, sigma, blurred)
    params.update(iterations=iterations, tol=tol)
    free, frame = (op, (slice(None),) * op.spatial) if exact else _free_operator(op)
    grid = GridOperator(free)
    y = np.ascontiguousarray(grid.internal(np.asarray(blurred, dtype=op.dtype)))
    # the solvers see A/g and y/g (the same minimizer with λ/g²): their weights and
    # schedule assume an image on the data's scale
    gain = kernel_gain(op)
    if gain != 1:
        grid.kernel_spectrum *= grid.kernel_spectrum.real.dtype.type(1 / gain)
        y = y / y.dtype.type(gain)
    if exact:
        solver = _ADMM(grid, y, lam / gain**2, data_scale(y), (1.0, 1.0, 1.0))
        params["solver"] = f"ADMM (image padded by `{op.geometry.boundary}`)"
    else:
        solver = _HQS(grid, y, lam / gain**2, data_scale(y))
        if mask is not None:
            solver.mask = np.ascontiguousarray(grid.internal(np.asarray(mask, dtype=bool)))
        params["solver"] = "half-quadratic splitting"
    norm_y = max(math.sqrt(dot(y, y)), np.finfo(float).tiny)
    converged = False
    change = float("inf")
    k = 0
    for k in range(1, iterations + 1):
        change = solver.step()
        if callback is not None:
            image = grid.external(solver.x, free.input_shape)[frame]
            callback(k, image, solver.residual / norm_y)
        if tol > 0 and k > 1 and solver.settled and change <= tol:
            converged = True
            break
    residual = solver.final_residual() / norm_y
    image = np.ascontiguousarray(grid.external(solver.image(), free.input_shape)[frame])
    result = RestoreResult(
        image=image,
        method="tv",
        params=params,
        iterations=k,
        residual=residual,
        converged=converged if tol > 0 else None,
    )
    if tol > 0 and not converged:
        result.notes.append(
            f"stopped at the iteration cap ({iterations}) with a relative change "
            f"{change:.2e} > tol {tol:g}"
        )
    return result


class _HQS:
    """The splitting's state on the grid, channel-first, in the operator's dtype.

    ``3 + 2d`` grid arrays for ``d`` spatial axes (seven on an image): ``v``, ``C v``
    (which holds ``u`` during a step), the split ``t`` and the scaled dual ``e`` (one
    per axis) and one work array; the two half-spectra of the ``v``-step live in two of
    the ``t`` buffers (their rows padded to ``2 (W//2 + 1)`` samples) once ``t`` is spent,
    and the next ``v`` is written into the work array, whose buffer then swaps with
    ``v``'s. With the kernel's half-spectrum and the data: about 9.5 image-sized arrays
    on an image (no divisor is stored: :meth:`_divide`). The elementwise steps run in
    place or in row blocks.
    """

    def __init__(self, grid: GridOperator, y: np.ndarray, lam: float, scale: float) -> None:
        self.grid = grid
        self.y = y
        self.lam = lam
        self.scale = scale
        dtype = grid.dtype
        shape = (grid.channels,) + grid.grid
        self.n = math.prod(grid.grid)
        self.symbols = _symbols(grid.grid, dtype)
        # |K|² is the square of the kernel spectrum (which holds the 1/n of the inverse) × n
        self.tiny = dtype.type(1e-12 * float(np.abs(grid.kernel_spectrum).max() * self.n) ** 2)
        self.region = grid.interior
        self.mask = None  # the data term on every observed sample (tv_deconvolve's mask)
        # the data placed on the image, blended across the rest of the grid
        self.v = _blend_fill(_placed(grid, y), shape)
        self.cv = np.empty(shape, dtype=dtype)
        # t = ∇v + e, then d − e, one array per axis; two of its buffers hold the
        # half-spectra during the v-step
        last = grid.grid[-1]
        padded = shape[:-1] + (2 * (last // 2 + 1),)
        buffers = [np.empty(padded, dtype=dtype) for _ in range(max(grid.ndim, 2))]
        self.t = [b[..., :last] for b in buffers[: grid.ndim]]
        self.spectra = tuple(b.view(grid.kernel_spectrum.dtype) for b in buffers[:2])
        self.e = [np.zeros(shape, dtype=dtype) for _ in range(grid.ndim)]  # scaled duals
        self.work = np.empty(shape, dtype=dtype)
        relative = max(lam / scale, 1e-30)
        start = max(BETA_START, RHO_MIN / relative)
        self.beta = start / 2  # the first step doubles it
        self.beta_max = max(min(max(BETA_FACTOR / math.sqrt(relative), 16.0), 8192.0), start)
        spectrum = grid.transforms.forward(self.v, out=self.spectra[0])
        _times_conjugate(spectrum, grid.kernel_spectrum, spectrum)
        grid.transforms.inverse(spectrum, self.cv)

    @property
    def x(self) -> np.ndarray:
        """The image: a view of ``v``, overwritten by the next step."""
        return self.v[self.region]

    def _divide(self, spectrum: np.ndarray, tv_part: np.ndarray, rho: float, rows: int = 64):
        """The ``v``-step in the Fourier domain, in row blocks (no divisor is stored):
        ``V = (K·U + T) / (|K|² + ρ |∇|²)`` into ``spectrum`` and ``C v``'s spectrum
        ``K̄·V`` into ``tv_part`` (``K`` the kernel spectrum, the symbol of ``Cᵀ``;
        ``U``, ``T`` the spectra of ``u`` and of the TV part)."""
        kernel = self.grid.kernel_spectrum
        first, *others = self.symbols
        dtype = first.dtype.type
        n, rho = dtype(self.n), dtype(rho)
        tail = rho * sum(others)  # the symbols of the axes after the first, broadcast
        lead = (slice(None),) * (spectrum.ndim - kernel.ndim)  # the channel axis
        for top in range(0, kernel.shape[0], rows):
            block = slice(top, top + rows)  # along the first spatial axis
            k = kernel[block]
            den = np.abs(k)
            den *= n
            np.square(den, out=den)
            den += rho * first[block]
            den += tail
            np.maximum(den, self.tiny, out=den)
            s = spectrum[lead + (block,)]
            s *= k  # Cᵀu
            s += tv_part[lead + (block,)]
            s /= den
            np.multiply(s, np.conj(k), out=tv_part[lead + (block,)])

    @property
    def settled(self) -> bool:
        """Whether the continuation is complete."""
        return self.beta >= self.beta_max

    @property
    def residual(self) -> float:
        """``‖M C v − y‖``."""
        return math.sqrt(_distances(self.cv[self.grid.observed], self.y)[0])

    def final_residual(self) -> float:
        """``‖A x − y‖`` of the current ``x`` (``C v`` is that of ``x``'s ``v``)."""
        return self.residual

    def step(self) -> float:
        """One iteration; returns the relative change of ``x``.

        Scaled ADMM on ``d = ∇v`` with the penalty ``ρ = λβ/s``: ``d = shrink(∇v + e)``,
        ``e ← ∇v + e − d``, then ``v`` from ``d − e``; both pointwise in ``t = ∇v + e``:
        ``e = t − d`` and ``d − e = 2d − t``.
        """
        g = self.grid
        dtype = g.dtype.type
        beta = min(2 * self.beta, self.beta_max)
        if beta != self.beta:  # the scaled dual follows the weight
            for e in self.e:
                e *= dtype(self.beta / beta)
        # u: the data where observed, C v elsewhere (in place of C v)
        if self.mask is None:
            self.cv[g.observed] = self.y
        else:
            np.copyto(self.cv[g.observed], self.y, where=self.mask)
        t = _grad(self.v, self.t)
        for ti, ei in zip(t, self.e, strict=True):
            ti += ei
        r = self.region
        _split([ti[r] for ti in t], [ei[r] for ei in self.e], self.scale / beta)
        rhs = _grad_adjoint(t, self.work)
        rho = self.lam * beta / self.scale
        rhs *= dtype(rho / self.n)
        fft = g.transforms
        spectrum, other = self.spectra  # t is spent: its buffers hold the spectra
        fft.forward(self.cv, out=spectrum)
        fft.forward(rhs, out=other)
        # exactly (∇ᵀ has no mean): rounding times a huge ρ would drift
        other[(slice(None),) + (0,) * g.ndim] = 0
        self._divide(spectrum, other, rho)
        self.beta = beta
        new = fft.inverse(spectrum, self.work)  # rhs is spent
        fft.inverse(other, self.cv)
        self.cv *= dtype(self.n)
        change, norm = _distances(new[r], self.v[r])
        self.v, self.work = new, self.v
        return math.sqrt(change / max(norm, 1e-300))

    def image(self) -> np.ndarray:
        """The image (a copy), after the work buffers are released: the last call."""
        self.t = self.spectra = self.e = self.work = self.cv = None
        return self.x.copy()


def _times_conjugate(a: np.ndarray, b: np.ndarray, out: np.ndarray, rows: int = 64) -> None:
    """``out = a · conj(b)`` in blocks of ``rows`` along the first spatial axis (``b``
    broadcast over ``a``'s leading axes): the conjugate is never stored whole."""
    lead = (slice(None),) * (a.ndim - b.ndim)
    for top in range(0, b.shape[0], rows):
        block = slice(top, top + rows)
        np.multiply(a[lead + (block,)], np.conj(b[block]), out=out[lead + (block,)])


def _distances(a: np.ndarray, b: np.ndarray, rows: int = 64) -> tuple[float, float]:
    """``(‖a − b‖², ‖a‖²)`` in row blocks (no image-sized temporary)."""
    distance = norm = 0.0
    for top in range(0, a.shape[-2], rows):
        block = (Ellipsis, slice(top, top + rows), slice(None))
        diff = a[block] - b[block]
        distance += dot(diff, diff)
        norm += dot(a[block], a[block])
    return distance, norm


def _split(ts: list, es: list, threshold: float, rows: int = 64) -> None:
    """In place on the image region: ``d = shrink(t)`` (isotropic soft shrinkage by
    ``threshold`` of the differences inside the image, ``|t|`` over the spatial axes),
    ``e = t − d``, ``t ← 2d − t``; ``ts[i]``, ``es[i]`` along spatial axis ``i``.

    The last sample of ``ts[i]`` along its axis crosses the image's edge: no cost there,
    ``d = t`` (``e = 0``). Blocks of rows of the first spatial axis keep the temporaries
    small.
    """
    d = len(ts)
    h = ts[0].shape[1]
    for top in range(0, h, rows):
        block = (slice(None), slice(top, min(top + rows, h)))
        # the edge samples of each axis in this block (the first axis: in the last block)
        edges = [
            (Ellipsis, -1) + (slice(None),) * (d - 1 - axis) if axis or top + rows >= h else None
            for axis in range(d)
        ]
        t = [ti[block] for ti in ts]
        magnitude = np.zeros(t[0].shape, dtype=t[0].dtype)
        for ti, edge in zip(t, edges, strict=True):
            square = np.square(ti)
            if edge is not None:
                square[edge] = 0
            magnitude += square
        np.sqrt(magnitude, out=magnitude)
        np.maximum(magnitude, magnitude.dtype.type(1e-30), out=magnitude)
        # f = max(1 − t/|g|, 0) as max(|g| − t, 0)/|g|: no overflow where |g| is tiny
        f = np.subtract(magnitude, magnitude.dtype.type(threshold))
        np.maximum(f, 0, out=f)
        f /= magnitude
        for ti, ei, edge in zip(t, es, edges, strict=True):
            keep = f.copy()
            if edge is not None:
                keep[edge] = 1
            np.subtract(1, keep, out=magnitude)
            np.multiply(magnitude, ti, out=ei[block])
            keep *= 2
            keep -= 1
            ti *= keep


def _symbols(grid: tuple[int, ...], dtype) -> list[np.ndarray]:
    """The symbol of ``∇ᵀ∇`` (periodic forward differences) per spatial axis on the
    real half-spectrum, ``4 sin²(π k / G)``, each shaped to broadcast along its axis."""
    d = len(grid)
    symbols = []
    for axis, size in enumerate(grid):
        length = size // 2 + 1 if axis == d - 1 else size
        symbol = (4 * np.sin(np.pi * np.arange(length) / size) ** 2).astype(dtype)
        symbols.append(symbol.reshape((-1,) + (1,) * (d - 1 - axis)))
    return symbols


def kernel_gain(op: ConvOperator) -> float:
    """``g = Σ|k|``, the kernel's largest gain (``‖A‖ ≤ g``, equal for a kernel ≥ 0 on a
    periodic grid): 1 for a blur that keeps the mean."""
    return float(np.abs(op.effective).sum()) or 1.0


def _free_operator(op: ConvOperator) -> tuple[ConvOperator, tuple[slice, ...]]:
    """The operator on the padded image with every padded pixel an unknown (``valid``
    mode, same kernel, stride and dilation), and the frame of ``op``'s image in it."""
    d = op.spatial
    if all(p == (0, 0) for p in op.pads):
        return op, (slice(None),) * d
    geometry = replace(op.geometry, mode="valid", boundary="constant", padding=None)
    shape = op.padded_shape + op.input_shape[d:]
    free = ConvOperator(op.kernel, shape, geometry, spatial=d, dtype=op.dtype)
    spatial = op.input_shape[:d]
    return free, tuple(slice(b, b + n) for (b, _), n in zip(op.pads, spatial, strict=True))


def _blend_fill(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` at the top-left of a periodic grid of ``shape``, the rest of each line a
    linear blend from its last sample to its first (no jump across the wrap)."""
    out = x
    for axis in range(1, x.ndim):
        n, size = x.shape[axis], shape[axis]
        position = np.arange(size)
        t = np.clip((position - (n - 1)) / (size - n + 1), 0, 1)
        last = np.minimum(position, n - 1)
        first = np.where(position >= n, 0, last)
        a, b = np.take(out, last, axis=axis), np.take(out, first, axis=axis)
        t = t.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
        out = a + (b - a) * t
    return np.ascontiguousarray(out, dtype=x.dtype)


def _along(axis: int, ndim: int, index) -> tuple:
    """``index`` on array axis ``axis`` of ``ndim`` (every other axis whole)."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - 1 - axis)


def _grad(v: np.ndarray, out: list) -> list:
    """Periodic forward differences of ``C × *spatial`` ``v`` along each spatial axis,
    into ``out`` (one array per axis, the first spatial axis first)."""
    for axis, g in enumerate(out, start=v.ndim - len(out)):
        at = lambda index, axis=axis: _along(axis, v.ndim, index)  # noqa: E731
        np.subtract(v[at(slice(1, None))], v[at(slice(None, -1))], out=g[at(slice(None, -1))])
        np.subtract(v[at(slice(None, 1))], v[at(slice(-1, None))], out=g[at(slice(-1, None))])
    return out


def _grad_adjoint(p: list, out: np.ndarray) -> np.ndarray:
    """``∇ᵀp = Σ_axes (p[k − 1] − p[k])`` (periodic) into ``out``: the adjoint of
    :func:`_grad` (the last axis first, then the others added)."""
    first = out.ndim - len(p)
    for i, axis in enumerate(reversed(range(first, out.ndim))):
        q = p[axis - first]
        at = lambda index, axis=axis: _along(axis, out.ndim, index)  # noqa: E731
        head, rest = at(slice(None, 1)), at(slice(1, None))
        wrap, before = at(slice(-1, None)), at(slice(None, -1))
        if i == 0:
            np.subtract(q[wrap], q[head], out=out[head])
            np.subtract(q[before], q[rest], out=out[rest])
        else:
            out[head] += q[wrap]
            out[head] -= q[head]
            out[rest] += q[before]
            out[rest] -= q[rest]
    return out


class _ADMM:
    """The ADMM iteration for a padded image (``P ≠ I``); every array on the grid.

    The splitting of the module's notes with ``v = E P x`` as a third constraint
    (``E`` places the padded image on the grid, zero elsewhere): the ``x`` step is
    ``(PᵀP)⁻¹Pᵀ`` (a diagonal fold), which keeps the boundary rule exact.

    Scaled duals ``a, (ex, ey), q`` of the constraints ``u = C v``, ``d = ∇v``,
    ``v = E P x``; penalties ``ρ_u = ρ_v = max(√λ', 0.003)`` and ``ρ_d = 5 λ'`` with
    ``λ' = λ / s`` (measured on camera crops: within a factor 3 of the fastest fixed
    choice for λ' from 1e-5 to 1e-3; the floor keeps λ → 0, least squares, converging).
    """

    def __init__(self, grid: GridOperator, y: np.ndarray, lam: float, scale: float, rho) -> None:
        self.grid = grid
        self.y = y
        self.lam = lam
        dtype = grid.dtype
        shape = (grid.channels,) + grid.grid
        n = math.prod(grid.grid)
        relative = max(lam / scale, 1e-8)
        self.rho_u = rho[0] * max(math.sqrt(relative), 3e-3)
        self.rho_d = rho[1] * 5 * relative
        self.rho_v = rho[2] * max(math.sqrt(relative), 3e-3)
        # Fourier multipliers; the kernel spectrum holds the 1/n of the unnormalized inverse
        kernel = grid.kernel_spectrum.astype(np.complex128) * n
        laplacian = sum(_symbols(grid.grid, np.float64))
        den = self.rho_u * np.abs(kernel) ** 2 + self.rho_d * laplacian + self.rho_v
        self.inv_den = (1 / (den * n)).astype(dtype)
        self.data_weight = dtype.type(self.rho_u * n)  # ρu Cᵀ: the kernel spectrum × ρu n
        # the image region R on the grid; the last difference along each axis crosses
        # its edge (no cost there)
        self.region = grid.interior
        self.edges = [_along(1 + axis, 1 + grid.ndim, -1) for axis in range(grid.ndim)]
        # (PᵀP)⁻¹: one over the number of copies of each pixel
        ones = np.zeros(shape, dtype=dtype)
        ones[self.region] = 1
        grid.fill_padding(ones)
        self.inv_counts = 1 / grid.fold_padding(ones).copy()
        # start from the data placed on the image, every constraint satisfied
        self.x = _placed(grid, y)
        self.ev = np.zeros(shape, dtype=dtype)  # E P x
        self._place(self.x)
        self.v = self.ev.copy()
        self.cv = np.empty(shape, dtype=dtype)
        self.spectrum2 = np.empty_like(grid.transforms.spectrum)
        self._correlate(self.v, self.cv)
        self.u = self.cv.copy()
        self.d = _grad(self.v, [np.empty(shape, dtype) for _ in range(grid.ndim)])
        self.g = [np.empty(shape, dtype) for _ in range(grid.ndim)]  # d − e, then ∇v
        self.a = np.zeros(shape, dtype=dtype)
        self.e = [np.zeros(shape, dtype=dtype) for _ in range(grid.ndim)]
        self.q = np.zeros(shape, dtype=dtype)
        self.work = np.empty(shape, dtype=dtype)
        self.residual = float("nan")
        self.settled = True  # no continuation

    def _correlate(self, v: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``C v`` into ``out`` (the solver's spectrum buffers; ``C`` has the grid's 1/n)."""
        spectrum = self.grid.transforms.forward(v, out=self.spectrum2)
        _times_conjugate(spectrum, self.grid.kernel_spectrum, spectrum)
        return self.grid.transforms.inverse(spectrum, out)

    def final_residual(self) -> float:
        """``‖A x − y‖`` of the current ``x`` (``E P x`` is :attr:`ev`)."""
        cv = self._correlate(self.ev, self.work)
        return math.sqrt(_distances(cv[self.grid.observed], self.y)[0])

    def image(self) -> np.ndarray:
        """The image ``x`` (the solver's own array)."""
        return self.x

    def _place(self, x: np.ndarray) -> None:
        self.ev[self.region] = x
        self.grid.fill_padding(self.ev)

    def step(self) -> float:
        """One iteration; returns the relative change of ``x``."""
        g = self.grid
        t = g.transforms
        w = self.work
        # v: (ρu CᵀC + ρd ∇ᵀ∇ + ρv) v = ρu Cᵀ(u − a) + ρd ∇ᵀ(d − e) + ρv (E P x − q)
        np.subtract(self.u, self.a, out=w)
        spectrum = t.forward(w)
        spectrum *= self.grid.kernel_spectrum
        spectrum *= self.data_weight
        for gi, di, ei in zip(self.g, self.d, self.e, strict=True):
            np.subtract(di, ei, out=gi)
        rhs = _grad_adjoint(self.g, np.empty_like(w))
        rhs *= self.rho_d
        np.subtract(self.ev, self.q, out=w)
        w *= self.rho_v
        rhs += w
        spectrum += t.forward(rhs, out=self.spectrum2)
        spectrum *= self.inv_den
        _times_conjugate(spectrum, g.kernel_spectrum, self.spectrum2)
        self.spectrum2 *= self.spectrum2.real.dtype.type(math.prod(g.grid))
        v = t.inverse(spectrum, self.v)
        cv = t.inverse(self.spectrum2, self.cv)
        # u: the data on the observed samples, C v + a elsewhere
        np.add(cv, self.a, out=self.u)
        u_obs, cv_obs = self.u[g.observed], cv[g.observed]
        r = cv_obs - self.y
        self.residual = math.sqrt(dot(r, r))
        u_obs *= self.rho_u
        u_obs += self.y
        u_obs /= 1 + self.rho_u
        # d: isotropic shrinkage of ∇v + e on the differences inside the image
        grad = _grad(v, self.g)
        for di, gi, ei in zip(self.d, grad, self.e, strict=True):
            np.add(gi, ei, out=di)
        inside = [di[self.region] for di in self.d]
        magnitude = np.zeros(inside[0].shape, dtype=v.dtype)
        for t, edge in zip(inside, self.edges, strict=True):
            square = np.square(t)
            square[edge] = 0
            magnitude += square
        np.sqrt(magnitude, out=magnitude)
        np.maximum(magnitude, 1e-30, out=magnitude)
        # max(1 − t/|d|, 0) as max(|d| − t, 0)/|d|: no overflow where |d| is tiny
        shrink = np.maximum(magnitude - magnitude.dtype.type(self.lam / self.rho_d), 0)
        shrink /= magnitude
        for t, edge in zip(inside, self.edges, strict=True):
            factor = shrink.copy()
            factor[edge] = 1
            t *= factor
        # x = (PᵀP)⁻¹ Pᵀ (v + q), then E P x
        np.add(v, self.q, out=w)
        x = g.fold_padding(w)
        x *= self.inv_counts
        distance, norm = _distances(x, self.x)
        change = math.sqrt(distance / max(norm, 1e-300))
        np.copyto(self.x, x)
        x = self.x
        self._place(x)
        # dual ascent
        self.a += cv
        self.a -= self.u
        for gi, di, ei in zip(grad, self.d, self.e, strict=True):
            gi -= di
            ei += gi
        self.q += v
        self.q -= self.ev
        return change


def _placed(grid: GridOperator, y: np.ndarray) -> np.ndarray:
    """The data ``C × *spatial'`` shifted onto the image ``C × *spatial``, edge-extended
    or cropped.

    Datum ``i`` sees the pixels around ``i + centre − pad`` (per axis); for a stride
    ``s`` around ``s·i + centre − pad``. Each pixel takes the nearest such datum.
    """
    op = grid.op
    stride, _, _ = op.geometry.axes(grid.ndim)
    index = []
    for axis in range(grid.ndim):
        k = op.effective.shape[2 + axis]
        centre = k // 2 if op.geometry.correlate else (k - 1) // 2
        shift = centre - op.pads[axis][0]
        pixels = np.arange(op.input_shape[axis])
        nearest = np.rint((pixels - shift) / stride[axis]).astype(int)
        index.append(np.clip(nearest, 0, y.shape[1 + axis] - 1))
    return np.ascontiguousarray(y[(slice(None),) + np.ix_(*index)])


# -- the automatic weight ------------------------------------------------------------------


def noise_tol(tol: float, sigma: float, y: np.ndarray) -> float:
    """``min(tol, NOISE_TOL · σ / rms(y))`` (:data:`NOISE_TOL`)."""
    rms = math.sqrt(max(float(np.mean(np.square(y, dtype=np.float64))), 1e-300))
    return min(tol, NOISE_TOL * float(sigma) / rms)


@register(
    "tv",
    f"total-variation deconvolution by half-quadratic splitting ({mention('lam')} or by the "
    "discrepancy principle)",
    options=("lam", "iterations", "tol", "noise_sigma"),
    automatic=("lam", "noise_sigma"),
    iterative=True,
    # traced, 512²/1024² gaussian σ 2 (float32 and float64): the splitting 9.1 copies of
    # the image, the exact ADMM (`wrap`, `constant`) 27.5
    memory=Footprint(28.0),
    banks=False,
    roundtrip=4,
)
def _tv_method(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    return tv_deconvolve(
        blurred,
        op,
        lam=options.lam,
        iterations=options.iterations,
        tol=options.tol,
        noise_sigma=options.noise_sigma,
        jpeg_tables=options.jpeg_tables,
        callback=options.callback,
    )
