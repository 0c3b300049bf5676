"""The grid plans (FFT and spatial) in 1-D, 2-D and 3-D against a dense matrix built
from numpy.pad and scipy.signal (``oracles.oracle``), and the dot test.

Each (axes, boundary, extent) case runs every kernel kind (odd, even, thin along one
axis, rank one), cycling stride, dilation, correlation and the channel count, on the
FFT plan and the spatial plan with each way its line passes can run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from oracles import oracle

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import BOUNDARIES, Convolution, ConvOperator, Geometry, LinearMap
from deconv_cli.operators import dottest as operator_dottest
from deconv_cli.operators.grid import GridOperator, grid_operator
from deconv_cli.operators.spatial import SpatialGridOperator, spatial_layout, spatial_passes

SHAPES = {1: (11,), 2: (7, 8), 3: (5, 6, 5)}
EXTENTS = ["same", "full", "valid", "padding"]


def kernel_of(kind: str, d: int, rng) -> np.ndarray:
    if kind == "odd":
        return rng.random((3,) * d)
    if kind == "even":
        return rng.random((2, 4, 2)[:d])
    if kind == "thin":  # long along the last axis only: one line pass
        return np.r_[0.5, np.ones(3), 0.25].reshape((1,) * (d - 1) + (5,)) / 4
    one = rng.random(3)
    for n in (4, 2)[: d - 1]:
        one = np.multiply.outer(one, rng.random(n))
    return one


def dense(kernel, shape, geometry, d) -> np.ndarray:
    n = int(np.prod(shape))
    bank, groups = np.broadcast_to(kernel, (shape[-1], 1) + kernel.shape), shape[-1]
    columns = [
        oracle(bank, np.eye(n)[i].reshape(shape), groups, geometry, d).ravel() for i in range(n)
    ]
    return np.array(columns).T


def spatial_plan(op, method: str | None) -> SpatialGridOperator:
    """The spatial plan with its line passes run ``method``'s way where they can."""
    corner, grid, shift = spatial_layout(op)
    plan = spatial_passes(op, shift, grid)
    for p in plan[0] + plan[1]:
        if method is None or not getattr(p, "common", 0):
            continue
        if method == "running" and p.corrections:
            continue
        p.method = method
    return SpatialGridOperator(op, plan)


CASES = list(itertools.product(SHAPES, BOUNDARIES, EXTENTS))
COMBINATIONS = list(itertools.product([1, 2], [1, 2], [False, True], [1, 2]))


@pytest.mark.parametrize("d, boundary, extent", CASES, ids=[f"{d}d-{b}-{e}" for d, b, e in CASES])
def test_grid_plans_equal_the_dense_matrix(d, boundary, extent):
    rng = np.random.default_rng(d * 100 + BOUNDARIES.index(boundary) * 10 + len(extent))
    if extent == "valid" and boundary != "constant":
        pytest.skip("a valid mode pads nothing: the boundary has no effect")
    case = CASES.index((d, boundary, extent))
    checked = 0
    for j, kind in enumerate(("odd", "even", "thin", "rank-one")):
        # every combination reaches every kernel kind over the cases (5 is prime to 16)
        stride, dilation, correlate, channels = COMBINATIONS[(5 * case + j) % 16]
        kernel = kernel_of(kind, d, rng)
        flags = dict(
            boundary=boundary, stride=(stride,) * d, dilation=dilation, correlate=correlate
        )
        if extent == "padding":
            flags["padding"] = 2
        else:
            flags["mode"] = extent
        geometry = Geometry.create(**flags)
        shape = SHAPES[d] + (channels,)
        bank = np.broadcast_to(kernel, (channels, 1) + kernel.shape)
        try:
            op = Convolution(bank, shape, geometry, groups=channels)
        except GeometryError:  # a dilated kernel longer than a valid mode's image
            continue
        checked += 1
        matrix = dense(kernel, shape, geometry, d)
        x, y = rng.standard_normal(shape), rng.standard_normal(op.output_shape)
        expected_ax = (matrix @ x.ravel()).reshape(op.output_shape)
        expected_aty = (matrix.T @ y.ravel()).reshape(shape)
        plans = {"fft": GridOperator(op)}
        for method in (None, "correlate", "running", "box"):
            plans[f"spatial-{method}"] = spatial_plan(op, method)
        for name, plan in plans.items():
            ax = plan.external(plan.apply(plan.internal(x)), op.output_shape)
            aty = plan.external(plan.apply_adjoint(plan.internal(y)), shape)
            message = f"{kind} {name} {flags} C={channels}"
            np.testing.assert_allclose(ax, expected_ax, atol=1e-12, err_msg=message)
            np.testing.assert_allclose(aty, expected_aty, atol=1e-12, err_msg=message)
    assert checked >= 2


class _PlanMap(LinearMap):
    """A grid plan as a :class:`LinearMap` on the operator's layout, for the dot test."""

    def __init__(self, plan, op) -> None:
        self.plan, self.op = plan, op
        self.input_shape, self.output_shape, self.dtype = op.input_shape, op.output_shape, op.dtype

    def forward(self, x):
        return self.plan.external(self.plan.apply(self.plan.internal(x)), self.output_shape)

    def adjoint(self, y):
        return self.plan.external(self.plan.apply_adjoint(self.plan.internal(y)), self.input_shape)


@pytest.mark.parametrize("engine", ["fft", "spatial"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_grid_plans_pass_the_dot_test_on_larger_arrays(d, engine):
    """Sizes where a dense matrix would be large: a 3-D gaussian on 24×40×36 voxels."""
    rng = np.random.default_rng(d)
    shape = {1: (500,), 2: (60, 70), 3: (24, 40, 36)}[d]
    t = np.exp(-(np.arange(-3, 4) ** 2) / 4.0)
    kernel = t
    for _ in range(d - 1):
        kernel = np.multiply.outer(kernel, t)
    for boundary in ("reflect", "constant"):
        op = Convolution(kernel[None, None], shape + (1,), Geometry.create(boundary=boundary))
        plan = grid_operator(op, engine)
        assert plan.ndim == d
        assert operator_dottest(_PlanMap(plan, op), rng=rng, rtol=1e-12) < 1e-12
        x = rng.standard_normal(op.input_shape)
        np.testing.assert_allclose(_PlanMap(plan, op).forward(x), op.forward(x), atol=1e-12)


def test_grid_plan_of_a_conv_operator_keeps_its_layout():
    """``ConvOperator`` (H×W, a 2-D kernel) and its ``Convolution`` (H×W×1) give the same
    plan; the layout follows the operator's shapes."""
    rng = np.random.default_rng(4)
    op = ConvOperator(rng.random((3, 5)), (9, 10), Geometry.create(boundary="mirror"))
    x = rng.random(op.input_shape)
    for plan in (GridOperator(op), GridOperator(op.core)):
        assert plan.internal(x).shape == (1, 9, 10)
    plan = GridOperator(op)
    np.testing.assert_allclose(
        plan.external(plan.apply(plan.internal(x)), op.output_shape), op.forward(x), atol=1e-12
    )


def test_grid_plans_refuse_a_bank_mixing_channels():
    bank = np.random.default_rng(5).random((2, 3, 3, 3, 3))
    op = Convolution(bank, (6, 6, 6, 3), Geometry.create())
    for make in (GridOperator, SpatialGridOperator):
        with pytest.raises(DeconvError, match="one kernel applied to every channel"):
            make(op)
