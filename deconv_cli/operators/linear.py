"""Linear-operator algebra on arrays: adjoints, products, sums, scaling, and the dot test.

A :class:`LinearMap` maps arrays of ``input_shape`` to arrays of ``output_shape``
(``forward`` / ``adjoint``). ``A.T`` (= ``A.H``, the operators are real) is the
adjoint, ``A @ x`` applies, ``A @ B`` composes, ``A + B`` and ``c * A`` combine, and
:meth:`LinearMap.as_linear_operator` is a ``scipy.sparse.linalg.LinearOperator``
view on flattened vectors. :func:`dottest` checks ``⟨A x, y⟩ = ⟨x, Aᵀ y⟩``.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError


class LinearMap:
    """The algebra shared by every operator; subclasses define the attributes
    ``input_shape``, ``output_shape``, ``dtype`` and the methods ``forward``, ``adjoint``."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: equations and unknowns of the flattened operator."""
        return math.prod(self.output_shape), math.prod(self.input_shape)

    @property
    def T(self) -> LinearMap:  # noqa: N802 - the usual name of a transpose
        """The adjoint ``Aᵀ`` as an operator."""
        return _Adjoint(self)

    H = T

    def __matmul__(self, other):
        if isinstance(other, LinearMap):
            return _Product(self, other)
        return self.forward(other)

    def __add__(self, other: LinearMap) -> LinearMap:
        if not isinstance(other, LinearMap):
            return NotImplemented
        return _Sum(self, other)

    def __mul__(self, factor) -> LinearMap:
        if not isinstance(factor, Real):
            return NotImplemented
        return _Scaled(self, float(factor))

    __rmul__ = __mul__

    def __neg__(self) -> LinearMap:
        return _Scaled(self, -1.0)

    def __sub__(self, other: LinearMap) -> LinearMap:
        return self + (-other)

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` on flattened vectors."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            self.shape,
            matvec=lambda v: np.ravel(self.forward(np.reshape(v, self.input_shape))),
            rmatvec=lambda v: np.ravel(self.adjoint(np.reshape(v, self.output_shape))),
            dtype=self.dtype,
        )


def _check_shapes(what: str, left: tuple[int, ...], right: tuple[int, ...]) -> None:
    if tuple(left) != tuple(right):
        raise GeometryError(
            f"{what}: shapes {'x'.join(map(str, left))} and {'x'.join(map(str, right))} differ"
        )


class _Adjoint(LinearMap):
    def __init__(self, op: LinearMap) -> None:
        self.op = op
        self.input_shape, self.output_shape = op.output_shape, op.input_shape
        self.dtype = op.dtype

    def forward(self, x):
        return self.op.adjoint(x)

    def adjoint(self, y):
        return self.op.forward(y)

    @property
    def T(self) -> LinearMap:  # noqa: N802
        return self.op


class _Product(LinearMap):
    """``A B``: ``B`` first."""

    def __init__(self, a: LinearMap, b: LinearMap) -> None:
        _check_shapes("composing operators", a.input_shape, b.output_shape)
        self.a, self.b = a, b
        self.input_shape, self.output_shape = b.input_shape, a.output_shape
        self.dtype = np.result_type(a.dtype, b.dtype)

    def forward(self, x):
        return self.a.forward(self.b.forward(x))

    def adjoint(self, y):
        return self.b.adjoint(self.a.adjoint(y))


class _Sum(LinearMap):
    def __init__(self, a: LinearMap, b: LinearMap) -> None:
        _check_shapes("adding operators (inputs)", a.input_shape, b.input_shape)
        _check_shapes("adding operators (outputs)", a.output_shape, b.output_shape)
        self.a, self.b = a, b
        self.input_shape, self.output_shape = a.input_shape, a.output_shape
        self.dtype = np.result_type(a.dtype, b.dtype)

    def forward(self, x):
        return self.a.forward(x) + self.b.forward(x)

    def adjoint(self, y):
        return self.a.adjoint(y) + self.b.adjoint(y)


class _Scaled(LinearMap):
    def __init__(self, op: LinearMap, factor: float) -> None:
        self.op, self.factor = op, factor
        self.input_shape, self.output_shape, self.dtype = op.input_shape, op.output_shape, op.dtype

    def forward(self, x):
        return self.factor * self.op.forward(x)

    def adjoint(self, y):
        return self.factor * self.op.adjoint(y)


def dottest(op: LinearMap, *, rng=None, rtol: float | None = None) -> float:
    """Check that ``op.adjoint`` is the adjoint of ``op.forward`` on random arrays.

    ``|⟨A x, y⟩ − ⟨x, Aᵀ y⟩| ≤ rtol · ‖A x‖ ‖y‖`` for standard normal ``x`` and ``y``
    (the Cauchy-Schwarz bound of either side, so the test is scale-free).

    Parameters
    ----------
    op : LinearMap
    rng : numpy.random.Generator or int, optional
        The random source (a seed is accepted).
    rtol : float, optional
        Default ``1e-4`` for a float32 operator, ``1e-10`` otherwise.

    Returns
    -------
    float
        The relative mismatch.

    Raises
    ------
    DeconvError
        When the mismatch exceeds ``rtol``.
    """
    rng = np.random.default_rng(rng)
    if rtol is None:
        rtol = 1e-4 if np.dtype(op.dtype) == np.float32 else 1e-10
    x = rng.standard_normal(op.input_shape)
    y = rng.standard_normal(op.output_shape)
    ax = np.asarray(op.forward(x), dtype=np.float64)
    aty = np.asarray(op.adjoint(y), dtype=np.float64)
    lhs, rhs = float(np.vdot(ax, y)), float(np.vdot(x, aty))
    scale = max(float(np.linalg.norm(ax) * np.linalg.norm(y)), np.finfo(float).tiny)
    mismatch = abs(lhs - rhs) / scale
    if not mismatch <= rtol:
        raise DeconvError(
            f"dot test: ⟨A x, y⟩ = {lhs:.12g} but ⟨x, Aᵀ y⟩ = {rhs:.12g} "
            f"(relative mismatch {mismatch:.2e} > rtol {rtol:g})"
        )
    return mismatch
