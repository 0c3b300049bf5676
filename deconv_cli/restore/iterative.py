"""Least squares for any geometry: CGLS and LSQR.

``cgls`` and ``lsqr`` need only ``A`` and ``Aᵀ`` (``op.forward`` / ``op.adjoint``),
so they handle every geometry the operator does: boundaries, modes, strides,
dilations, explicit padding and conv-layer kernel banks. Started from ``x₀ = 0``
their iterates stay in the range of ``Aᵀ``, so where ``A`` is not injective they
converge to the minimum-norm least-squares solution.

For one kernel (1, 2 or 3 spatial axes) they run on the operator's grid plan
(:func:`deconv_cli.operators.grid.grid_operator`: FFT or spatial, buffers kept).
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.errors import mention
from deconv_cli.operators import ConvOperator
from deconv_cli.operators.grid import grid_operator, one_kernel
from deconv_cli.restore import RestoreOptions, RestoreResult, check, register

DEFAULT_ITERATIONS = 200


def default_tol(dtype: np.dtype) -> float:
    """Default tolerance on ``‖Aᵀr‖ / ‖Aᵀy‖``: near the precision of ``dtype``."""
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-8


_SUBSCRIPTS = {n: "abcde"[:n] + "," + "abcde"[:n] + "->" for n in range(1, 6)}


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``⟨a, b⟩`` of two arrays of one shape, without BLAS threads.

    OpenBLAS's ``ddot`` runs threads for long vectors and stalls (100-1000x slower)
    when another process holds the cores; ``einsum`` does not thread. ``sdot``
    (float32, contiguous) does not thread and is the fastest, so it is kept.
    """
    if a.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous:
        return float(np.vdot(a, b))
    return float(np.einsum(_SUBSCRIPTS[a.ndim], a, b))


def norm(a: np.ndarray) -> float:
    """``‖a‖``, by :func:`dot`."""
    return math.sqrt(dot(a, a))


class _Stop:
    """The stopping rule of the least-squares solvers.

    ``tol = 0`` runs every iteration; else stop when ``‖Aᵀr‖/‖Aᵀy‖ ≤ tol`` (default
    near the precision of the dtype) or, when a noise level σ is given and ``tol``
    is not, when ``‖r‖² ≤ m σ²`` (the discrepancy principle: early stopping is then
    the regularization).
    """

    def __init__(self, op, iterations, tol, noise_sigma) -> None:
        for name, value in (("iterations", iterations), ("tol", tol), ("noise_sigma", noise_sigma)):
            check(name, value)
        self.iterations = DEFAULT_ITERATIONS if iterations is None else int(iterations)
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
        residual = norm(op.forward(x) - y) / max(norm(y), np.finfo(float).tiny)
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
                f"{normal:.2e} > tol {self.tol:g}; raise {mention('iterations')} or "
                f"{mention('tol')}, or use a "
                "regularized method"
            )
        return result


def _fast(op: ConvOperator):
    """``(A, Aᵀ)`` as functions on arrays of the operator's layout, returning new arrays:
    on a grid for one kernel (:func:`grid_operator`: FFT or spatial, buffers kept),
    else ``op`` itself: for a bank, and where the cost model chose sparse taps (a dilated
    kernel, whose grid would span its whole extent: at dilation 1000 on a 64² image, a
    2160² FFT grid against 9 taps of 64² samples each)."""
    if not one_kernel(op) or op.engine == "taps":
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
    op : ConvOperator or Convolution
        Any geometry, 1 to 3 spatial axes (arrays ``*spatial`` or ``*spatial × C``).
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
    norm_y = max(norm(y), np.finfo(float).tiny)
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
    norm_y = norm(y)
    beta = norm_y
    u = y / beta if beta > 0 else y.copy()
    v = adjoint(u)
    alpha = norm(v)
    if beta == 0 or alpha == 0:
        return stop.finish("lsqr", x, op, y, 0, 0.0, True)
    v /= alpha
    w = v.copy()
    phibar, rhobar = beta, alpha
    norm_s0 = alpha * beta
    normal, k, breakdown = 1.0, 0, False
    for k in range(1, stop.iterations + 1):
        u = forward(v) - alpha * u
        beta = norm(u)
        if beta > 0:
            u /= beta
        v = adjoint(u) - beta * v
        alpha = norm(v)
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
