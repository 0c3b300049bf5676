"""Least squares for any geometry: CGLS and LSQR; the fast periodic-grid operator.

``cgls`` and ``lsqr`` need only ``A`` and ``Aᵀ`` (``op.forward`` / ``op.adjoint``),
so they handle every geometry the operator does: boundaries, modes, strides,
dilations, explicit padding and conv-layer kernel banks. Started from ``x₀ = 0``
their iterates stay in the range of ``Aᵀ``, so where ``A`` is not injective they
converge to the minimum-norm least-squares solution.

:class:`GridOperator` is the same operator for one 2-D kernel, computed on a
periodic grid large enough that circular correlation equals the linear one. The
Richardson-Lucy and TV methods run on it: it keeps the kernel spectrum and every
buffer across iterations, so an iteration costs its Fourier transforms plus a few
elementwise passes. :class:`SpatialGridOperator` has the same layout and calls and
computes in space, cheaper for thin and small kernels (a motion blur along an axis:
box sums); :func:`grid_operator` picks one of the two by an operation count
(Richardson-Lucy uses it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.operators import _DIRECT_TABLE_NS, ConvOperator, fast_length, fft_workers
from deconv_cli.restore import RestoreOptions, RestoreResult, register

DEFAULT_ITERATIONS = 200


def default_tol(dtype: np.dtype) -> float:
    """Default tolerance on ``‖Aᵀr‖ / ‖Aᵀy‖``: near the precision of ``dtype``."""
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-8


_SUBSCRIPTS = {n: "abcd"[:n] + "," + "abcd"[:n] + "->" for n in range(1, 5)}


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``⟨a, b⟩`` of two arrays of one shape, without BLAS threads.

    OpenBLAS's ``ddot`` runs threads for long vectors and stalls (100-1000x slower)
    when another process holds the cores; ``einsum`` does not thread. ``sdot``
    (float32, contiguous) does not thread and is the fastest, so it is kept.
    """
    if a.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous:
        return float(np.vdot(a, b))
    return float(np.einsum(_SUBSCRIPTS[a.ndim], a, b))


def _norm(a: np.ndarray) -> float:
    return math.sqrt(dot(a, a))


class _Stop:
    """The stopping rule of the least-squares solvers.

    ``tol = 0`` runs every iteration; else stop when ``‖Aᵀr‖/‖Aᵀy‖ ≤ tol`` (default
    near the precision of the dtype) or, when a noise level σ is given and ``tol``
    is not, when ``‖r‖² ≤ m σ²`` (the discrepancy principle: early stopping is then
    the regularization).
    """

    def __init__(self, op, iterations, tol, noise_sigma) -> None:
        self.iterations = DEFAULT_ITERATIONS if iterations is None else int(iterations)
        if self.iterations < 1:
            raise DeconvError(f"`{self.iterations}` must be at least 1", parameter="iterations")
        if tol is not None and not tol >= 0:
            raise DeconvError(
                f"`{tol}` must be 0 (run every iteration) or positive", parameter="tol"
            )
        if noise_sigma is not None and not noise_sigma >= 0:
            raise DeconvError(f"`{noise_sigma}` must be non-negative", parameter="noise_sigma")
        self.discrepancy = None
        if tol is None and noise_sigma is not None:
            self.discrepancy = float(noise_sigma) ** 2 * math.prod(op.output_shape)
        self.tol = default_tol(op.dtype) if tol is None else float(tol)
        self.params = {"iterations": self.iterations, "x0": "0 (minimum-norm solution)"}
        if self.discrepancy is not None:
            self.params["stop"] = f"‖Ax−y‖² ≤ m·σ² (σ = {noise_sigma:g}) or ‖Aᵀr‖/‖Aᵀy‖ ≤ tol"
        self.params["tol"] = self.tol
        self.met = False

    def __call__(self, normal: float, residual2: float) -> bool:
        """Whether to stop after an iteration with these residuals."""
        if self.tol == 0:
            return False
        met = normal <= self.tol or (self.discrepancy is not None and residual2 <= self.discrepancy)
        self.met = self.met or met
        return met

    def finish(self, name, x, op, y, k, normal, breakdown) -> RestoreResult:
        residual = _norm(op.forward(x) - y) / max(_norm(y), np.finfo(float).tiny)
        converged = None if self.tol == 0 else (self.met or breakdown)
        result = RestoreResult(
            image=x,
            method=name,
            params=dict(self.params),
            iterations=k,
            residual=residual,
            converged=converged,
        )
        if converged is False:
            result.notes.append(
                f"stopped at the iteration cap ({self.iterations}) with ‖Aᵀr‖/‖Aᵀy‖ = "
                f"{normal:.2e} > tol {self.tol:g}; raise --iterations or --tol, or use a "
                "regularized method"
            )
        return result


def _fast(op: ConvOperator):
    """``(A, Aᵀ)`` as functions on arrays of the operator's layout, returning new arrays:
    on a grid for one 2-D kernel (:func:`grid_operator`: FFT or spatial, buffers kept),
    else ``op`` itself."""
    if op.is_bank:
        return op.forward, op.adjoint
    grid = grid_operator(op)

    def forward(x: np.ndarray) -> np.ndarray:
        grid.image[...] = grid.internal(x)
        return np.array(grid.external(grid.forward(), op.output_shape), order="C")

    def adjoint(y: np.ndarray) -> np.ndarray:
        grid.data[...] = grid.internal(y)
        return np.array(grid.external(grid.adjoint(), op.input_shape), order="C")

    return forward, adjoint


def cgls(
    blurred: np.ndarray,
    op: ConvOperator,
    *,
    iterations: int | None = None,
    tol: float | None = None,
    noise_sigma: float | None = None,
    callback=None,
) -> RestoreResult:
    """Least squares ``min ‖A x − y‖`` by conjugate gradients on the normal equations.

    Parameters
    ----------
    blurred : ndarray, shape ``op.output_shape``
    op : ConvOperator
    iterations : int, optional
        Maximum iterations (default 200).
    tol : float, optional
        Stop when ``‖Aᵀ(y − A x)‖ ≤ tol · ‖Aᵀ y‖``; ``0`` runs exactly
        ``iterations``. Default ``1e-8`` (float64) or ``1e-4`` (float32).
    noise_sigma : float, optional
        With ``tol`` not given, also stop once ``‖y − A x‖² ≤ m σ²`` (the discrepancy
        principle): on noisy data the early iterates are the useful ones.
    callback : callable, optional
        ``callback(k, x, ‖y − A x‖ / ‖y‖)`` after each iteration.

    Returns
    -------
    RestoreResult

    Notes
    -----
    The CGLS recurrences (Björck, *Numerical Methods for Least Squares Problems*,
    §7.4), from ``x₀ = 0``, ``r₀ = y``, ``s₀ = p₁ = Aᵀy``::

        q = A p,  α = ‖s‖² / ‖q‖²,  x += α p,  r −= α q,
        s = Aᵀ r,  β = ‖s_new‖² / ‖s‖²,  p = s + β p

    One ``A`` and one ``Aᵀ`` per iteration. The iterates stay in ``range(Aᵀ)``, so the
    limit is the minimum-norm least-squares solution. On noisy, ill-conditioned data
    that limit amplifies the noise (semi-convergence): give ``noise_sigma`` or a
    small ``iterations``, or use a regularized method.
    """
    stop = _Stop(op, iterations, tol, noise_sigma)
    forward, adjoint = _fast(op)
    y = np.asarray(blurred, dtype=op.dtype)
    x = np.zeros(op.input_shape, dtype=op.dtype)
    r = y.copy()
    s = adjoint(r)
    p = s.copy()
    gamma = dot(s, s)
    norm_s0 = math.sqrt(gamma)
    norm_y = max(_norm(y), np.finfo(float).tiny)
    if norm_s0 == 0:
        return stop.finish("cgls", x, op, y, 0, 0.0, True)
    normal, k, breakdown = 1.0, 0, False
    for k in range(1, stop.iterations + 1):
        q = forward(p)
        qq = dot(q, q)
        if qq == 0:
            breakdown = True
            break
        alpha = gamma / qq
        x += alpha * p
        r -= alpha * q
        s = adjoint(r)
        gamma_new = dot(s, s)
        normal = math.sqrt(gamma_new) / norm_s0
        residual2 = dot(r, r)
        if callback is not None:
            callback(k, x, math.sqrt(residual2) / norm_y)
        breakdown = gamma_new == 0
        if stop(normal, residual2) or breakdown:
            break
        p *= gamma_new / gamma
        p += s
        gamma = gamma_new
    return stop.finish("cgls", x, op, y, k, normal, breakdown)


def lsqr(
    blurred: np.ndarray,
    op: ConvOperator,
    *,
    iterations: int | None = None,
    tol: float | None = None,
    noise_sigma: float | None = None,
    callback=None,
) -> RestoreResult:
    """Least squares ``min ‖A x − y‖`` by LSQR (Golub-Kahan bidiagonalization).

    Same parameters and stopping rules as :func:`cgls`. Mathematically equivalent to
    CGLS; more robust in floating point on ill-conditioned problems.

    Notes
    -----
    Paige and Saunders, "LSQR: an algorithm for sparse linear equations and sparse
    least squares", ACM TOMS 8 (1982), without damping. ``‖y − A x_k‖ = φ̄`` and
    ``‖Aᵀ(y − A x_k)‖ = φ̄ α |c|`` come from the recurrences, at no extra cost.
    """
    stop = _Stop(op, iterations, tol, noise_sigma)
    forward, adjoint = _fast(op)
    y = np.asarray(blurred, dtype=op.dtype)
    x = np.zeros(op.input_shape, dtype=op.dtype)
    norm_y = _norm(y)
    beta = norm_y
    u = y / beta if beta > 0 else y.copy()
    v = adjoint(u)
    alpha = _norm(v)
    if beta == 0 or alpha == 0:
        return stop.finish("lsqr", x, op, y, 0, 0.0, True)
    v /= alpha
    w = v.copy()
    phibar, rhobar = beta, alpha
    norm_s0 = alpha * beta
    normal, k, breakdown = 1.0, 0, False
    for k in range(1, stop.iterations + 1):
        u = forward(v) - alpha * u
        beta = _norm(u)
        if beta > 0:
            u /= beta
        v = adjoint(u) - beta * v
        alpha = _norm(v)
        if alpha > 0:
            v /= alpha
        rho = math.hypot(rhobar, beta)
        c, s = rhobar / rho, beta / rho
        theta = s * alpha
        rhobar = -c * alpha
        phi = c * phibar
        phibar = s * phibar
        x += (phi / rho) * w
        w *= -theta / rho
        w += v
        normal = phibar * alpha * abs(c) / norm_s0
        if callback is not None:
            callback(k, x, phibar / norm_y)
        breakdown = alpha == 0 or phibar == 0
        if stop(normal, phibar**2) or breakdown:
            break
    return stop.finish("lsqr", x, op, y, k, normal, breakdown)


def _least_squares_method(name: str, summary: str, solver, roundtrip: int | None) -> None:
    """Register ``solver`` (:func:`cgls` or :func:`lsqr`), whose keywords are the options'."""
    options = ("iterations", "tol", "noise_sigma")

    @register(
        name,
        summary,
        options=options,
        iterative=True,
        # the discrepancy rule stops it when the noise level is known
        stops_by_data=lambda given: given.tol is None and given.noise_sigma is not None,
        roundtrip=roundtrip,
    )
    def method(blurred: np.ndarray, op: ConvOperator, given: RestoreOptions) -> RestoreResult:
        keywords = {field: getattr(given, field) for field in (*options, "callback")}
        return solver(blurred, op, **keywords)


_least_squares_method(
    "cgls",
    "least squares by conjugate gradients (any geometry; minimum norm where not injective)",
    cgls,
    roundtrip=5,
)
_least_squares_method(
    "lsqr", "least squares by LSQR (any geometry; minimum norm where not injective)", lsqr, None
)


# -- the operator on a periodic grid ---------------------------------------------------


class _Transforms:
    """Unnormalized real 2-D FFTs over the last two axes, into reused buffers.

    Uses scipy's pocketfft bindings directly when they are there (they write into
    a given output and invert in place, which saves a copy and an allocation per
    transform), else the public ``scipy.fft``.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.workers = fft_workers()
        complex_dtype = np.result_type(dtype, np.complex64)
        self.spectrum = np.empty(shape[:-1] + (shape[-1] // 2 + 1,), dtype=complex_dtype)
        try:
            from scipy.fft._pocketfft import pypocketfft
        except ImportError:  # pragma: no cover - depends on the scipy build
            pypocketfft = None
        self._pocketfft = pypocketfft

    def forward(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``rfft2(a)`` into ``out`` (default: the shared spectrum buffer), returned."""
        out = self.spectrum if out is None else out
        if self._pocketfft is not None:
            return self._pocketfft.r2c(
                a, axes=(-2, -1), forward=True, inorm=0, out=out, nthreads=self.workers
            )
        import scipy.fft

        out[...] = scipy.fft.rfft2(a, axes=(-2, -1), workers=self.workers)
        return out

    def inverse(self, spectrum: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Unnormalized ``irfft2`` into ``out``; overwrites ``spectrum``."""
        if self._pocketfft is not None:
            pf = self._pocketfft
            pf.c2c(
                spectrum, axes=(-2,), forward=False, inorm=0, out=spectrum, nthreads=self.workers
            )
            return pf.c2r(
                spectrum,
                axes=(-1,),
                lastsize=self.shape[-1],
                forward=False,
                inorm=0,
                out=out,
                nthreads=self.workers,
            )
        import scipy.fft

        out[...] = scipy.fft.irfft2(
            spectrum, s=self.shape[-2:], axes=(-2, -1), norm="forward", workers=self.workers
        )
        return out


class _Grid(ABC):
    """The layout the grid operators share: ``A = S ∘ V ∘ P`` on a ``C × H × W`` grid.

    The padded image ``P x`` sits at the top-left of the grid (padding filled by the
    boundary rule; a zero padding may be left implicit), the valid correlation ``V``
    is anchored at the top-left, and ``S`` keeps the strided valid samples. Use: write
    the image into :attr:`image` (a view of the grid), call ``forward()`` (returns a
    view of ``A x``); write data into :attr:`data` (a view) and call ``adjoint()``
    (returns a view of ``Aᵀ y``). The returned views are overwritten by the next call.
    """

    def _place(self, op: ConvOperator, grid: tuple[int, int], corner=None) -> None:
        """Buffers and views; the image's top-left ``corner`` in the grid (default: after
        the padding)."""
        if op.is_bank:
            raise DeconvError(f"{type(self).__name__} needs a 2-D kernel, not a kernel bank")
        self.op = op
        self.dtype = op.dtype
        self.channels = op.input_shape[2] if len(op.input_shape) == 3 else 1
        h, w = op.input_shape[:2]
        top, left = corner or (op.pads[0][0], op.pads[1][0])
        self.padded = op.padded_shape
        self.grid = grid
        shape = (self.channels,) + self.grid
        self._image_grid = np.zeros(shape, dtype=self.dtype)
        self._data_grid = np.zeros(shape, dtype=self.dtype)
        self._result = np.empty(shape, dtype=self.dtype)
        self.interior = (slice(None), slice(top, top + h), slice(left, left + w))
        h1, w1 = op.stride1_shape
        sh, sw = op.geometry.stride
        self.observed = (slice(None), slice(0, h1, sh), slice(0, w1, sw))
        self.image = self._image_grid[self.interior]
        self.data = self._data_grid[self.observed]
        self._maps = self._border_maps(op)

    @staticmethod
    def _border_maps(op: ConvOperator):
        """Per axis: (border index, source index) pairs of the padding, or None."""
        from deconv_cli.operators import _NUMPY_PAD

        boundary = op.geometry.boundary
        maps = []
        for axis, (before, after) in enumerate(op.pads):
            n = op.input_shape[axis]
            if boundary == "constant" or not before + after:
                maps.append(None)
                continue
            source = np.pad(np.arange(n), (before, after), mode=_NUMPY_PAD[boundary]) + before
            border = np.r_[0:before, before + n : before + n + after]
            maps.append(list(zip(border.tolist(), source[border].tolist(), strict=True)))
        return maps

    # -- layout ---------------------------------------------------------------------

    @staticmethod
    def internal(a: np.ndarray) -> np.ndarray:
        """An ``H×W[×C]`` array as a ``C×H×W`` view."""
        return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)

    @staticmethod
    def external(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A ``C×H×W`` array as an ``H×W[×C]`` view of the operator's ``shape``."""
        return a[0] if len(shape) == 2 else np.moveaxis(a, 0, -1)

    # -- the operator ---------------------------------------------------------------

    def fill_padding(self, grid: np.ndarray) -> None:
        """``P``: fill the padding around the image in ``grid`` by the boundary rule."""
        rows, cols = self._maps
        hp = self.padded[0]
        if rows is not None:
            cs = self.interior[2]
            for dst, src in rows:
                grid[:, dst, cs] = grid[:, src, cs]
        if cols is not None:
            for dst, src in cols:
                grid[:, :hp, dst] = grid[:, :hp, src]

    def fold_padding(self, grid: np.ndarray) -> np.ndarray:
        """``Pᵀ``: add the padding of ``grid`` onto the pixels it copies; the image view."""
        rows, cols = self._maps
        wp = self.padded[1]
        if rows is not None:
            for src, dst in rows:
                grid[:, dst, :wp] += grid[:, src, :wp]
        if cols is not None:
            rs = self.interior[1]
            for src, dst in cols:
                grid[:, rs, dst] += grid[:, rs, src]
        return grid[self.interior]

    @abstractmethod
    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a view of a buffer."""

    @abstractmethod
    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x`` for a ``C×H×W`` array (a copy)."""
        self.image[...] = x
        return self.forward().copy()

    def apply_adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y`` for a ``C×H'×W'`` array (a copy)."""
        self.data[...] = y
        return self.adjoint().copy()


class GridOperator(_Grid):
    """``A`` for one 2-D kernel (any boundary, mode, padding, stride, dilation), on a grid.

    ``A = S ∘ V ∘ P``: the padded image ``P x`` is placed at the top-left of a
    periodic grid of fast FFT lengths at least the padded size, where the valid
    correlation ``V`` is a circular one (no wrap-around reaches the valid
    outputs), and ``S`` keeps the strided valid samples. Arrays are channel-first
    (``C × H × W``) inside; :meth:`internal` / :meth:`external` convert.

    Use: write the image into :attr:`image` (a view of the grid), call
    :meth:`forward` (returns a view of ``A x``); write data into :attr:`data` (a
    view) and call :meth:`adjoint` (returns a view of ``Aᵀ y``). The returned views
    are overwritten by the next call.
    """

    def __init__(self, op: ConvOperator) -> None:
        padded = op.padded_shape
        self._place(op, (fast_length(padded[0]), fast_length(padded[1])))
        self.transforms = _Transforms((self.channels,) + self.grid, self.dtype)
        kernel = op.effective[0, 0]
        spectrum = _kernel_spectrum(kernel, self.grid)
        spectrum *= 1 / (self.grid[0] * self.grid[1])  # the inverse transforms are unnormalized
        self.kernel_spectrum = spectrum.astype(self.transforms.spectrum.dtype, copy=False)
        self.conj_spectrum = np.conj(self.kernel_spectrum)

    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a (strided) view of a buffer."""
        self.fill_padding(self._image_grid)
        spectrum = self.transforms.forward(self._image_grid)
        spectrum *= self.conj_spectrum
        self.transforms.inverse(spectrum, self._result)
        return self._result[self.observed]

    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""
        spectrum = self.transforms.forward(self._data_grid)
        spectrum *= self.kernel_spectrum
        return self.fold_padding(self.transforms.inverse(spectrum, self._result))

    def scale_adjoint(self, factor: float) -> None:
        """From now on :meth:`adjoint` computes ``factor · Aᵀ y`` (no extra pass)."""
        self.kernel_spectrum = self.kernel_spectrum * factor


# Cost of computing A (or Aᵀ) once, in nanoseconds per grid sample, measured with float32
# and float64 arrays on this project's 2-core machine (512-2048 px images, scipy 1.17);
# only the ordering matters. A 1-D pass along columns reads strided lines: it costs more.
_FFT_NS_PER_LOG2 = {np.dtype(np.float32): 0.4, np.dtype(np.float64): 0.65}  # 2 transforms
_FFT_CALL_NS = 80e3  # and per application
_PASS_CALL_NS = 10e3  # a spatial pass, per application
_SPATIAL_MARGIN = 0.7  # spatial only where the model says it costs less than this × the FFT
_LINE_NS = (1.0, 0.45)  # scipy.ndimage.correlate1d along rows: fixed, per tap
_SYMMETRIC = 0.75  # the per-tap cost for symmetric taps (ndimage folds them)
_RUNNING_NS = 2.3  # scipy.ndimage.uniform_filter1d along rows, any length
_FLAT_NS = 0.18  # one elementwise pass over a flat array
_EDGE_NS = 200.0  # a line pass's two edge strips: per line, besides their correlation
_CHUNK = 1 << 15  # samples a box-sum pass computes at a time (its buffers stay in cache)
_COLUMN_FACTOR = 1.3  # along columns instead of rows
_DIRECT_NS = (3.0, 0.8)  # scipy.ndimage.correlate (2-D): fixed, per non-zero tap
_EQUAL_RTOL = 1e-12  # taps this close (relative to the largest) count as equal
_MAX_CORRECTIONS = 2  # a box sum's taps that may differ (anti-aliased ends); else correlate1d


class _Workspace:
    """A scratch array kept between calls, grown as needed."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def get(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        a = self.array
        if a is None or a.dtype != dtype or a.shape[0] < shape[0] or a.shape[1] < shape[1]:
            self.array = a = np.empty(shape, dtype=dtype)
        return a[: shape[0], : shape[1]]


class _LinePass:
    """``dst[i] = Σ_j t[j] · src[i + j + shift]`` along ``axis``, zero outside ``src``.

    Three ways, the cheapest for the taps and the line length ``n``: ``correlate1d``;
    for equal taps, a running sum (``uniform_filter1d``, a chain of dependent
    additions, whose cost does not grow with ``k``); or, where most taps share one
    value ``c`` (a box; a motion blur along an axis, whose two anti-aliased ends
    differ), ``c`` times a box sum plus a shifted multiply-add for each other tap. The box sum
    of ``k`` taps takes ``log2 k`` doublings (``W₂ₘ[i] = Wₘ[i] + Wₘ[i + m]``) and one
    step per other set bit of ``k`` (``Wₘ₊₁[i] = Wₘ[i] + src[i + m]``), each a
    vectorized pass over the whole flat array. Flat, the sums near the ends of a line
    (the first ``−shift`` and last ``k − 1 + shift`` samples) read the next line:
    those are recomputed by ``correlate1d`` on the edge strips. ``scipy.ndimage``
    sums in float64; the box sum in the arrays' dtype.
    """

    def __init__(self, taps: np.ndarray, axis: int, shift: int, dtype: np.dtype, n: int) -> None:
        self.taps = np.asarray(taps, dtype=np.float64)
        self.axis = axis
        self.size = k = self.taps.size
        self.shift = shift
        self.origin = -(k // 2) - shift  # scipy.ndimage's centre convention
        self.dtype = dtype
        self.length = n
        self.common = float(np.median(self.taps))
        rest = self.taps - self.common
        others = np.flatnonzero(np.abs(rest) > _EQUAL_RTOL * np.abs(self.taps).max())
        self.corrections = [(int(j), float(rest[j])) for j in others]
        factor = _COLUMN_FACTOR if axis == -2 else 1.0
        per_tap = _LINE_NS[1] * (_SYMMETRIC if np.array_equal(taps, taps[::-1]) else 1.0)
        costs = {"correlate": factor * (_LINE_NS[0] + per_tap * k)}
        if self.common != 0 and not others.size:
            costs["running"] = factor * _RUNNING_NS
        if self.common != 0 and k - 1 < n and len(others) <= _MAX_CORRECTIONS:
            steps = (k.bit_length() - 1) + (k.bit_count() - 1) + 1 + 2 * len(others)
            edges = (2 * k * costs["correlate"] + _EDGE_NS) / n
            costs["box"] = _FLAT_NS * steps + edges
        self.method = min(costs, key=costs.get)
        self.cost = costs[self.method]
        self.setup = 0.0
        self.workspace = _Workspace()  # the operator shares one among its passes

    def scaled(self, factor: float) -> _LinePass:
        """The same pass with every tap times ``factor``."""
        scaled = _LinePass(self.taps * factor, self.axis, self.shift, self.dtype, self.length)
        scaled.workspace = self.workspace
        return scaled

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        from scipy import ndimage

        n = src.shape[self.axis]
        before, after = -self.shift, self.size - 1 + self.shift  # edge samples per line
        if self.method == "running":
            ndimage.uniform_filter1d(
                src, self.size, self.axis, output=dst, mode="constant", origin=self.origin
            )
            scale = self.dtype.type(self.common * self.size)
            if scale != 1:
                dst *= scale
            return
        if self.method == "correlate" or before + after >= n:
            ndimage.correlate1d(
                src, self.taps, self.axis, output=dst, mode="constant", origin=self.origin
            )
            return
        self._box(src.reshape(-1), dst.reshape(-1), 1 if self.axis == -1 else src.shape[-1])
        self._edges(src, dst, n, before, after)

    def _box(self, x: np.ndarray, out: np.ndarray, step: int) -> None:
        """The flat pass (wrong near the ends of the lines), in chunks of ``_CHUNK`` outputs
        that stay in cache; ``step``: the flat distance between two taps."""
        k, size = self.size, x.size
        halo = (k - 1) * step
        chunk = max(_CHUNK, 4 * halo)
        buffers = self.workspace.get((3, chunk + halo), self.dtype)
        padded, spare = buffers[2], None
        common = self.dtype.type(self.common)
        for a in range(0, size, chunk):
            b = min(a + chunk, size)
            lo, hi = a + self.shift * step, b + self.shift * step + halo
            if lo >= 0 and hi <= size:
                local = x[lo:hi]
            else:  # the first or last chunk: zeros outside ``x``
                local = padded[: hi - lo]
                local[...] = 0
                local[max(0, -lo) : min(hi, size) - lo] = x[max(0, lo) : min(hi, size)]
            window, spare = self._window(local, step, b - a, buffers)
            np.multiply(window[: b - a], common, out=out[a:b])
            for j, weight in self.corrections:
                tmp = spare[: b - a]
                np.multiply(local[j * step : j * step + b - a], self.dtype.type(weight), out=tmp)
                out[a:b] += tmp

    def _window(self, x: np.ndarray, step: int, count: int, buffers: np.ndarray):
        """``W[i] = Σ_{t<k} x[i + t·step]`` for ``i < count`` (``x`` holds ``count + (k−1)
        step`` samples), and a free buffer: both rows of ``buffers``."""
        ping, pong = buffers[0], buffers[1]
        window, m = x, 1
        for bit in bin(self.size)[3:]:
            valid = count + (self.size - 2 * m) * step  # W₂ₘ is needed this far
            np.add(window[:valid], window[m * step : m * step + valid], out=ping[:valid])
            window, m, ping, pong = ping, 2 * m, pong, ping
            if bit == "1":
                valid = count + (self.size - m - 1) * step
                window[:valid] += x[m * step : m * step + valid]
                m += 1
        return window, ping

    def _edges(self, src: np.ndarray, dst: np.ndarray, n: int, before: int, after: int) -> None:
        """Recompute the first ``before`` and last ``after`` samples of every line."""
        from scipy import ndimage

        axis, k = self.axis, self.size

        def along(a, part):
            index = [slice(None)] * a.ndim
            index[axis] = part
            return a[tuple(index)]

        if before:
            edge = along(src, slice(0, min(n, k - 1)))  # the samples these outputs read
            along(dst, slice(0, before))[...] = along(
                ndimage.correlate1d(edge, self.taps, axis, mode="constant", origin=self.origin),
                slice(0, before),
            )
        if after:
            first = max(0, n - after + self.shift)
            edge = along(src, slice(first, n))
            along(dst, slice(n - after, n))[...] = along(
                ndimage.correlate1d(edge, self.taps, axis, mode="constant", origin=self.origin),
                slice(n - after - first, n - first),
            )


class _DirectPass:
    """``dst[:, i, j] = Σ_ab K[a, b] · src[:, i + a + s, j + b + t]`` by ``ndimage.correlate``
    (zero taps skipped), zero outside ``src``; ``(s, t)`` is ``shift``."""

    def __init__(self, kernel: np.ndarray, shift: tuple[int, int]) -> None:
        self.kernel = np.asarray(kernel, dtype=np.float64)
        kh, kw = self.kernel.shape
        self.origin = (0, -(kh // 2) - shift[0], -(kw // 2) - shift[1])
        self.shift = shift
        self.cost = _DIRECT_NS[0] + _DIRECT_NS[1] * np.count_nonzero(self.kernel)
        # ndimage's offset table spans the whole extent: a dilated kernel makes it explode
        self.setup = _DIRECT_TABLE_NS * (kh * kw) ** 2

    def scaled(self, factor: float) -> _DirectPass:
        return _DirectPass(self.kernel * factor, self.shift)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        from scipy import ndimage

        ndimage.correlate(src, self.kernel[None], output=dst, mode="constant", origin=self.origin)


def _spatial_layout(op: ConvOperator):
    """``(corner, grid, shift)`` of the spatial grid: the image's top-left corner, the grid
    shape, and the forward correlation's offset per axis (in ``[1 − k, 0]``).

    A ``constant`` boundary pads with zeros, which the passes' zero fill gives: the
    image goes at the top-left where the offset allows (in ``same`` mode, stride 1,
    image, data and grid coincide: contiguous arrays, no padding). Other boundaries
    get the padded image, filled and folded by :meth:`_Grid.fill_padding` /
    :meth:`_Grid.fold_padding`.
    """
    kh, kw = op.effective.shape[2:]
    (top, _), (left, _) = op.pads
    h, w = op.input_shape[:2]
    h1, w1 = op.stride1_shape
    if op.geometry.boundary == "constant":
        corner = (max(0, top - kh + 1), max(0, left - kw + 1))
        grid = (max(corner[0] + h, h1), max(corner[1] + w, w1))
    else:
        corner, grid = (top, left), op.padded_shape
    return corner, grid, (corner[0] - top, corner[1] - left)


def _spatial_passes(op: ConvOperator, shift: tuple[int, int], grid: tuple[int, int]):
    """``(forward, adjoint)`` pass lists computing ``V`` and ``Vᵀ`` on the spatial grid:
    one line pass for a kernel of one row or column, two for a rank-one kernel, else
    one 2-D pass; whichever of the last two costs less."""
    from deconv_cli.operators import separable_factors

    kernel = op.effective[0, 0]
    kh, kw = kernel.shape
    back = (1 - kh - shift[0], 1 - kw - shift[1])  # the adjoint's offsets (flipped taps)
    dtype = op.dtype
    if kh == 1 or kw == 1:
        axis, taps = (-1, kernel[0]) if kh == 1 else (-2, kernel[:, 0])
        return (
            [_LinePass(taps, axis, shift[axis], dtype, grid[axis])],
            [_LinePass(taps[::-1], axis, back[axis], dtype, grid[axis])],
        )
    direct = ([_DirectPass(kernel, shift)], [_DirectPass(kernel[::-1, ::-1], back)])
    factors = separable_factors(kernel)
    if factors is None:
        return direct
    column, row = factors
    total = column.sum()
    if total != 0:  # the gain on the second pass: a box's first pass needs no scaling
        column, row = column / total, row * total
    h, w = grid
    separable = (
        [_LinePass(column, -2, shift[0], dtype, h), _LinePass(row, -1, shift[1], dtype, w)],
        [
            _LinePass(row[::-1], -1, back[1], dtype, w),
            _LinePass(column[::-1], -2, back[0], dtype, h),
        ],
    )
    return min(
        direct, separable, key=lambda passes: sum(p.cost * h * w + p.setup for p in passes[0])
    )


class SpatialGridOperator(_Grid):
    """:class:`GridOperator`'s operator, layout and calls, computed in space.

    The grid holds the padded image, or for a ``constant`` boundary just the image
    and the data (the zero padding is implicit): no FFT lengths, no wrap-around.
    ``V`` and ``Vᵀ`` are correlations with a zero fill, as one 1-D pass (a kernel of
    one row or column), two (a rank-one kernel) or one 2-D pass (``ndimage.correlate``,
    zero taps skipped); a 1-D pass whose taps are mostly equal runs as a box sum
    (:class:`_LinePass`). For a thin or small kernel this costs less than two FFTs
    (:func:`grid_operator` chooses). ``scale_adjoint`` costs no extra pass.
    """

    def __init__(self, op: ConvOperator, plan=None) -> None:
        corner, grid, shift = _spatial_layout(op)
        self.forward_passes, self.adjoint_passes = plan or _spatial_passes(op, shift, grid)
        both = self.forward_passes + self.adjoint_passes
        workspace = _Workspace()
        for p in both:
            p.workspace = workspace
        strided = any(getattr(p, "axis", 0) == -2 and p.method != "box" for p in both)
        if strided and grid[1] * op.dtype.itemsize % 1024 == 0:
            grid = (grid[0], grid[1] + 16)  # lines k·1 KiB apart alias in the cache: 1.5-3x slower
        self._place(op, grid, corner)
        shape = (self.channels,) + self.grid
        self._between = np.empty(shape, dtype=self.dtype) if len(both) > 2 else None

    def _run(self, passes, src: np.ndarray) -> np.ndarray:
        if len(passes) == 2:
            passes[0](src, self._between)
            src = self._between
        passes[-1](src, self._result)
        return self._result

    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a (strided) view of a buffer."""
        self.fill_padding(self._image_grid)
        return self._run(self.forward_passes, self._image_grid)[self.observed]

    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""
        return self.fold_padding(self._run(self.adjoint_passes, self._data_grid))

    def scale_adjoint(self, factor: float) -> None:
        """From now on :meth:`adjoint` computes ``factor · Aᵀ y``."""
        self.adjoint_passes[-1] = self.adjoint_passes[-1].scaled(factor)


def grid_operator(op: ConvOperator, engine: str = "auto") -> GridOperator | SpatialGridOperator:
    """The grid operator of ``op`` (one 2-D kernel): by FFT or in space.

    ``engine``: ``"fft"``, ``"spatial"``, or ``"auto"``: spatial where an operation
    count says it costs less than 0.7 times the FFTs per application (the FFTs'
    cost, ``0.4 ns · log2 G`` a sample of a grid of ``G`` samples in float32, 0.65 in
    float64, varies with the lengths' factors; the margin keeps close calls on the
    FFT). Constants measured on this project's machine (above). Spatial wins for a
    thin kernel (a motion blur along an axis: a box sum, 1.5-2 ns a sample at 512²,
    against about 7 for the FFTs) and a small rank-one one (a box; in float64 a
    gaussian of σ ≤ 1); the FFT for larger gaussians and most non-separable kernels.
    """
    if engine == "fft":
        return GridOperator(op)
    if engine == "spatial":
        return SpatialGridOperator(op)
    if engine != "auto":
        raise DeconvError(f"grid engine: `{engine}` is not one of auto, fft, spatial")
    _, grid, shift = _spatial_layout(op)
    plan = _spatial_passes(op, shift, grid)
    samples = grid[0] * grid[1] * (op.input_shape[2] if len(op.input_shape) == 3 else 1)
    spatial = sum(p.cost * samples + _PASS_CALL_NS + p.setup for p in plan[0])
    hp, wp = op.padded_shape
    size = fast_length(hp) * fast_length(wp)
    fft = _FFT_NS_PER_LOG2[op.dtype] * math.log2(size) * size * samples / (grid[0] * grid[1])
    fft += _FFT_CALL_NS
    return SpatialGridOperator(op, plan) if spatial < _SPATIAL_MARGIN * fft else GridOperator(op)


def _kernel_spectrum(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of ``kernel`` placed at the grid's origin (float64 maths)."""
    import scipy.fft

    rows = scipy.fft.rfft(kernel, n=grid[1], axis=1)
    return scipy.fft.fft(rows, n=grid[0], axis=0, overwrite_x=True)
