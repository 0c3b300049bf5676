"""The exact inverse and the pseudo-inverse.

``inverse`` recovers ``x`` from ``y = A x`` exactly where ``A`` is injective: by
division in the basis that diagonalizes ``A`` (FFT for ``wrap``, DCT-II for
``reflect`` with a symmetric kernel), otherwise by least squares to machine
tolerance (LSQR, right-preconditioned by a diagonalizable stand-in). Where ``A`` has
a null space the data cannot determine ``x``, and it refuses.

``pinv`` is the Moore-Penrose pseudo-inverse, truncated at ``rcond``: the
minimum-norm least-squares solution, which exists for every operator.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.analysis import null_space
from deconv_cli.errors import DeconvError, GeometryError, NotInvertibleError, mention
from deconv_cli.operators import Convolution, ConvOperator
from deconv_cli.operators.grid import convolution_of, one_kernel
from deconv_cli.restore import Footprint, RestoreOptions, RestoreResult, check, register
from deconv_cli.spectral import (
    Diagonal,
    amplification_note,
    approximate,
    diagonalize,
    inverse_amplification,
    rank_tolerance,
)

DEFAULT_LSQR_ITERATIONS = 5000
PRECONDITIONER_FLOOR = 1e-6
"""The preconditioner divides by ``sqrt(|λ|² + (floor·max|λ|)²)``: near-zeros of the
stand-in (which the exact operator may not share) are not amplified without bound."""


def check_data(blurred: np.ndarray, op: ConvOperator) -> np.ndarray:
    """``blurred`` as an array of ``op.dtype``, checked: ``op.output_shape`` and finite.

    Raises
    ------
    GeometryError
        For a shape other than ``op.output_shape``.
    DeconvError
        For NaN or Inf values.
    """
    y = np.asarray(blurred)
    if y.shape != op.output_shape:
        raise GeometryError(
            f"the data has shape {'x'.join(map(str, y.shape))} but the operator maps to "
            f"{'x'.join(map(str, op.output_shape))}"
        )
    y = y.astype(op.dtype, copy=False)
    # One reduction instead of a boolean pass; a sum can overflow, so check again then.
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.add.reduce(y, axis=None))
    if not math.isfinite(total) and not np.isfinite(y).all():
        raise DeconvError("the data contains NaN or Inf values; deconvolution needs finite data")
    return y


def relative_residual(op: ConvOperator, x: np.ndarray, y: np.ndarray) -> float:
    """``‖A x - y‖ / ‖y‖`` (``‖A x‖`` when ``y`` is zero)."""
    r = op.forward(x).astype(np.float64) - y
    scale = float(np.linalg.norm(y)) or 1.0
    return float(np.linalg.norm(r)) / scale


@register(
    "inverse",
    "exact inverse: FFT/DCT division or exact least squares; refuses if A has a null space",
    options=("iterations", "tol", "noise_sigma"),
    memory=Footprint(17.0, diagonal=7.0),
    roundtrip=0,
)
def inverse(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    """The exact inverse ``x = A⁻¹ y`` (least squares ``A⁺ y`` for injective, tall ``A``).

    Parameters
    ----------
    blurred : ndarray
        The data ``y``, shape ``op.output_shape``.
    op : ConvOperator or Convolution
        Any geometry, 1 to 3 spatial axes (arrays ``*spatial`` or ``*spatial × C``).
    options : RestoreOptions
        ``iterations`` and ``tol`` bound the least-squares path (LSQR; default
        5000 iterations, tolerance 1e-14 on LSQR's ``atol``/``btol``);
        ``noise_sigma`` (if given) adds a note on the predicted noise amplification.

    Raises
    ------
    NotInvertibleError
        Where ``A`` has a null space (``valid`` mode, strides, fewer output than input
        channels, spectral zeros): the message gives the reason and its dimension.

    Notes
    -----
    Diagonalizable operators (:func:`deconv_cli.spectral.diagonalize`):
    ``x = T⁻¹(T y / λ)``. Others: LSQR on ``A R⁻¹`` with ``R⁻¹`` the inverse square
    root of the stand-in's ``AᵀA`` (:func:`deconv_cli.spectral.approximate`), so the
    solution is the same least-squares solution, reached in far fewer iterations.
    """
    y = check_data(blurred, op)
    nullity, exact, reason = null_space(op)
    if nullity > 0:
        raise _refusal(op, nullity, exact, reason)
    amplification = inverse_amplification(op)
    diagonal = diagonalize(op)
    if diagonal is not None:
        x = diagonal.apply(y, 1.0 / _eigenvalues64(diagonal))
        result = RestoreResult(
            image=x.astype(op.dtype, copy=False),
            method="inverse",
            params={"solver": _solver_name(diagonal)},
        )
    else:
        result = _least_squares(op, y, options, precondition=True, rcond=None)
        result.method = "inverse"
        result.notes.insert(0, f"least squares (no fast diagonalization); null space: {reason}")
    result.residual = relative_residual(op, result.image, y)
    if amplification is not None:
        result.params["noise_amplification"] = float(f"{amplification:.3g}")
    if options.noise_sigma:
        note = amplification_note(op, options.noise_sigma)
        if note:
            result.notes.append(note)
    return result


@register(
    "pinv",
    f"pseudo-inverse truncated at {mention('rcond')}: the minimum-norm least-squares solution",
    options=("rcond", "iterations", "tol", "noise_sigma"),
)
def pinv(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    """The truncated pseudo-inverse ``x = A⁺ y``: minimum-norm least squares.

    Parameters
    ----------
    blurred, op
        As for :func:`inverse`.
    options : RestoreOptions
        ``rcond``: singular values ``σ <= rcond · σ_max`` are treated as zero
        (default ``max(m, n) · eps``, the rank tolerance, so ``pinv`` equals
        ``inverse`` wherever that exists). ``iterations``/``tol`` bound LSQR.

    Notes
    -----
    Diagonalizable operators: ``x = T⁻¹(f · T y)`` with ``f = 1/λ`` where
    ``|λ| > rcond · max|λ|`` and 0 elsewhere, exactly the truncated SVD. Others:
    LSQR from ``x₀ = 0`` without damping or preconditioning, whose iterates stay in
    the range of ``Aᵀ`` and so converge to the minimum-norm solution; ``rcond``
    becomes LSQR's ``conlim = 1/rcond`` (it stops once its estimate of the
    condition number of the part of ``A`` explored exceeds that).
    """
    y = check_data(blurred, op)
    check("rcond", options.rcond)
    rcond = float(rank_tolerance(op) if options.rcond is None else options.rcond)
    diagonal = diagonalize(op)
    if diagonal is None:
        result = _least_squares(op, y, options, precondition=False, rcond=rcond)
        result.method = "pinv"
        result.residual = relative_residual(op, result.image, y)
        return result
    eigenvalues = _eigenvalues64(diagonal)
    magnitude = np.abs(eigenvalues)
    keep = magnitude > rcond * magnitude.max()
    filter = np.zeros_like(eigenvalues)
    filter[keep] = 1.0 / eigenvalues[keep]
    x = diagonal.apply(y, filter).astype(op.dtype, copy=False)
    weights = np.broadcast_to(diagonal.weights, magnitude.shape)
    dropped = int(round(float(weights[~keep].sum()))) * _channels(op)
    result = RestoreResult(
        image=x,
        method="pinv",
        params={"solver": _solver_name(diagonal), "rcond": rcond, "truncated": dropped},
        residual=relative_residual(op, x, y),
    )
    total = math.prod(diagonal.shape)
    kept_amplification = math.sqrt(float(np.sum(weights[keep] / magnitude[keep] ** 2)) / total)
    result.params["noise_amplification"] = float(f"{kept_amplification:.3g}")
    if dropped:
        result.notes.append(
            f"{dropped} of {op.shape[1]} spectral components with |λ| <= {rcond:.2g}·max|λ| "
            "set to zero (minimum-norm solution)"
        )
    if options.noise_sigma and options.noise_sigma * kept_amplification >= 1e-3:
        rmse = options.noise_sigma * kept_amplification
        result.notes.append(
            f"noise (σ≈{options.noise_sigma:.2g}) is amplified ≈{kept_amplification:.1e}× "
            f"by the kept components: expect RMSE ≈ {rmse:.2g}"
            + (
                f"; raise {mention('rcond')} or use {mention('method', 'tikhonov')}"
                if rmse >= 0.01
                else ""
            )
        )
    return result


def _eigenvalues64(diagonal: Diagonal) -> np.ndarray:
    return diagonal.eigenvalues.astype(np.complex128 if diagonal.kind == "fft" else np.float64)


def _channels(op: ConvOperator) -> int:
    return convolution_of(op).input_shape[-1] if one_kernel(op) else 1


def _solver_name(diagonal: Diagonal) -> str:
    return "FFT division" if diagonal.kind == "fft" else "DCT-II division"


def _refusal(op: ConvOperator, nullity: int, exact: bool, reason: str) -> NotInvertibleError:
    size = f"{nullity}" if exact else f"at least {nullity}"
    return NotInvertibleError(
        f"{mention('method', 'inverse')}: A is not injective, its null space has dimension "
        f"{size} (of {op.shape[1]} unknowns): {reason}; the data cannot determine those "
        f"components, use {mention('method', 'pinv')} or cgls (minimum-norm least squares) or "
        "a regularized method (tikhonov, wiener, tv)"
    )


def _least_squares(
    op: ConvOperator,
    y: np.ndarray,
    options: RestoreOptions,
    *,
    precondition: bool,
    rcond: float | None,
) -> RestoreResult:
    """LSQR in float64 on ``A`` (or ``A R⁻¹``); ``conlim = 1/rcond`` (none when ``None``)."""
    from scipy.sparse.linalg import LinearOperator, lsqr

    check("iterations", options.iterations)
    check("tol", options.tol)
    iterations = DEFAULT_LSQR_ITERATIONS if options.iterations is None else options.iterations
    tol = 1e-14 if options.tol is None else float(options.tol)
    if op.dtype == np.float64:
        op64 = op
    else:  # the same operator in float64 (its layout flattens as the core's)
        core = convolution_of(op)
        op64 = Convolution(core.bank, core.input_shape, core.geometry, groups=core.groups)
    a = op64.as_linear_operator()
    stand_in = approximate(op64) if precondition else None
    if stand_in is not None:
        magnitude = np.abs(stand_in.eigenvalues)
        root = np.sqrt(magnitude**2 + (PRECONDITIONER_FLOOR * magnitude.max()) ** 2)
        shape = op64.input_shape

        def r_inv(v: np.ndarray) -> np.ndarray:
            return stand_in.apply(v.reshape(shape), 1.0 / root).ravel()

        solve_on = LinearOperator(
            a.shape,
            matvec=lambda z: a.matvec(r_inv(z)),
            rmatvec=lambda v: r_inv(a.rmatvec(v)),
            dtype=np.float64,
        )
    else:
        solve_on = a
    conlim = 1e300 if rcond is None else (1.0 / rcond if rcond > 0 else 1e300)
    z, istop, itn = lsqr(
        solve_on,
        y.astype(np.float64).ravel(),
        atol=tol,
        btol=tol,
        conlim=conlim,
        iter_lim=int(iterations),
    )[:3]
    x = r_inv(z) if stand_in is not None else z
    image = x.reshape(op.input_shape).astype(op.dtype, copy=False)
    solver = "LSQR" + (f" ({stand_in.kind.upper()}-preconditioned)" if stand_in else "")
    params: dict[str, object] = {"solver": solver, "tol": tol}
    if rcond is not None:
        params["rcond"] = rcond
    result = RestoreResult(image=image, method="", params=params, iterations=int(itn))
    if istop == 7:
        result.converged = False
        result.notes.append(
            f"LSQR stopped at the iteration cap ({iterations}) before reaching tol {tol:g}; "
            f"raise {mention('iterations')} or use a regularized method"
        )
    elif istop == 3:
        result.converged = True
        result.notes.append(
            f"LSQR stopped where its condition estimate exceeded 1/rcond = {conlim:.2g} "
            "(regularization by truncation)"
        )
    else:
        result.converged = True
    return result
