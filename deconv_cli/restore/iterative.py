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
elementwise passes.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.operators import ConvOperator, fast_length, fft_workers
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
            raise DeconvError(f"--iterations: `{self.iterations}` must be at least 1")
        if tol is not None and not tol >= 0:
            raise DeconvError(f"--tol: `{tol}` must be 0 (run every iteration) or positive")
        if noise_sigma is not None and not noise_sigma >= 0:
            raise DeconvError(f"--noise-sigma: `{noise_sigma}` must be non-negative")
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
    on the periodic grid for one 2-D kernel (kernel spectrum and buffers kept), else
    ``op`` itself."""
    if op.is_bank:
        return op.forward, op.adjoint
    grid = GridOperator(op)

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


@register(
    "cgls",
    "least squares by conjugate gradients (any geometry; minimum norm where not injective)",
    options=("iterations", "tol", "noise_sigma", "callback"),
    iterative=True,
)
def _cgls_method(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    return cgls(
        blurred,
        op,
        iterations=options.iterations,
        tol=options.tol,
        noise_sigma=options.noise_sigma,
        callback=options.callback,
    )


@register(
    "lsqr",
    "least squares by LSQR (any geometry; minimum norm where not injective)",
    options=("iterations", "tol", "noise_sigma", "callback"),
    iterative=True,
)
def _lsqr_method(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    return lsqr(
        blurred,
        op,
        iterations=options.iterations,
        tol=options.tol,
        noise_sigma=options.noise_sigma,
        callback=options.callback,
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


class GridOperator:
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
        if op.is_bank:
            raise DeconvError("GridOperator needs a 2-D kernel, not a kernel bank")
        self.op = op
        self.dtype = op.dtype
        self.channels = op.input_shape[2] if len(op.input_shape) == 3 else 1
        h, w = op.input_shape[:2]
        top, left = op.pads[0][0], op.pads[1][0]
        self.padded = op.padded_shape
        self.grid = (fast_length(self.padded[0]), fast_length(self.padded[1]))
        shape = (self.channels,) + self.grid
        self.transforms = _Transforms(shape, self.dtype)
        kernel = op.effective[0, 0]
        spectrum = _kernel_spectrum(kernel, self.grid)
        spectrum *= 1 / (self.grid[0] * self.grid[1])  # the inverse transforms are unnormalized
        self.kernel_spectrum = spectrum.astype(self.transforms.spectrum.dtype, copy=False)
        self.conj_spectrum = np.conj(self.kernel_spectrum)
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

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x`` for a ``C×H×W`` array (a copy)."""
        self.image[...] = x
        return self.forward().copy()

    def apply_adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y`` for a ``C×H'×W'`` array (a copy)."""
        self.data[...] = y
        return self.adjoint().copy()


def _kernel_spectrum(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of ``kernel`` placed at the grid's origin (float64 maths)."""
    import scipy.fft

    rows = scipy.fft.rfft(kernel, n=grid[1], axis=1)
    return scipy.fft.fft(rows, n=grid[0], axis=0, overwrite_x=True)
