"""Singular values of operators too large for an exact path: ``σ_max`` by ARPACK,
an upper bound on ``σ_min`` by LOBPCG (:mod:`deconv_cli.analysis`, path 4)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from deconv_cli.analysis.exact import dense_matrix
from deconv_cli.operators import ConvOperator

SVDS_TOL = 1e-6
"""Relative tolerance of the ARPACK estimate of ``σ_max`` for large operators."""

LOBPCG_ITERATIONS = 40
"""LOBPCG iterations bounding ``σ_min`` from above for large operators."""

_WEAKEST_STARTS = 4  # LOBPCG start vectors from the stand-in's weakest frequencies


def sigma_max(op: ConvOperator, seed: int) -> float:
    """``σ_max`` by ARPACK's ``svds`` to :data:`SVDS_TOL` (a dense norm when tiny)."""
    from scipy.sparse.linalg import svds

    a = op.as_linear_operator()
    if min(a.shape) < 3:
        return float(np.linalg.norm(dense_matrix(op), 2))
    v0 = np.random.default_rng(seed).standard_normal(min(a.shape))
    value = svds(a, k=1, which="LM", tol=SVDS_TOL, v0=v0, return_singular_vectors=False)
    return float(value[0])


def sigma_min_bound(op: ConvOperator, iterations: int, seed: int) -> float:
    """An upper bound on the smallest (m-th, for wide ``A``) singular value.

    Every Rayleigh quotient ``‖A v‖ / ‖v‖`` is at least ``σ_min``; LOBPCG on the
    Gram matrix drives it down. Tall operators start from the weakest frequencies of
    the diagonalizable stand-in (:func:`deconv_cli.spectral.approximate`). The bound
    can be far above ``σ_min`` when the smallest singular vectors sit at the
    boundary, which is why it is reported as a bound.
    """
    from scipy.sparse.linalg import LinearOperator, lobpcg

    from deconv_cli.spectral import approximate

    a = op.as_linear_operator()
    m, n = a.shape
    tall = m >= n
    dim = n if tall else m
    apply = a.matvec if tall else a.rmatvec

    def quotient(v: np.ndarray) -> float:
        norm = float(np.linalg.norm(v))
        return float(np.linalg.norm(apply(v))) / norm if norm > 0 else math.inf

    def gram(v: np.ndarray) -> np.ndarray:
        v = np.ravel(v)
        return a.rmatvec(a.matvec(v)) if tall else a.matvec(a.rmatvec(v))

    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal(dim)]
    stand_in = approximate(op, dtype=np.float64) if tall else None
    if stand_in is not None:
        magnitude = np.abs(stand_in.eigenvalues)
        for index in np.argsort(magnitude, axis=None)[:_WEAKEST_STARTS]:
            coefficient = np.zeros(magnitude.shape, dtype=stand_in.eigenvalues.dtype)
            coefficient[np.unravel_index(index, magnitude.shape)] = 1.0
            starts.append(stand_in.inverse_transform(coefficient).ravel())
    else:
        starts += [rng.standard_normal(dim) for _ in range(2)]
    best = min(quotient(v) for v in starts)
    block = np.column_stack(starts)
    if dim > 5 * block.shape[1]:
        g = LinearOperator((dim, dim), matvec=gram, dtype=np.float64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, vectors = lobpcg(g, block, largest=False, maxiter=iterations, tol=1e-30)
            best = min([best] + [quotient(v) for v in np.asarray(vectors).T])
        except (np.linalg.LinAlgError, ValueError, ArithmeticError):
            pass
    return best
