"""The N-D operator against independent oracles: the dot test for every geometry, and
the forward image against scipy.signal (and torch's conv layers when installed).

One case per (axes, boundary) pair runs every extent (same, full, valid, padding)
with every kernel (odd, even, rank one), cycling stride × dilation, the bank kind
(one kernel, shared over channels, a full bank, a grouped bank) and
convolution/correlation, on every engine that applies.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from oracles import oracle

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import (
    BOUNDARIES,
    Convolution,
    ConvOperator,
    Geometry,
    LinearMap,
    dottest,
)

SHAPES = {1: (9,), 2: (8, 7), 3: (7, 7, 7)}
KERNELS = {"odd": (3, 3, 3), "even": (4, 2, 4), "rank-one": (3, 4, 2)}
EXTENTS = ["same", "full", "valid", "padding"]
BANKS = {  # (C_out, C_in/groups, groups, channels): one kernel, shared, bank, grouped
    "single": (1, 1, 1, 1),
    "shared": (3, 1, 3, 3),
    "bank": (2, 3, 1, 3),
    "grouped": (4, 1, 2, 2),
}


def make_bank(kind: str, bank: str, d: int, rng) -> tuple[np.ndarray, int, int]:
    co, cig, groups, channels = BANKS[bank]
    shape = KERNELS[kind][:d]
    if kind == "rank-one":
        one = rng.standard_normal(shape[0])
        for n in shape[1:]:
            one = np.multiply.outer(one, rng.standard_normal(n))
    else:
        one = rng.standard_normal(shape)
    if bank == "shared":
        return np.broadcast_to(one, (co, cig) + shape), groups, channels
    if bank == "single":
        return one[None, None], groups, channels
    return rng.standard_normal((co, cig) + shape), groups, channels


def cases(offset: int):
    """Every extent with every kernel; stride × dilation, the bank kind and correlation
    cycle along, shifted by ``offset`` (so that across the axis counts and boundaries
    each pair of them meets)."""
    steps = [(1, 1), (2, 2), (1, 2), (2, 1)]
    for i, (extent, kind) in enumerate(itertools.product(EXTENTS, KERNELS)):
        j = i + offset
        stride, dilation = steps[(j + i // 3) % 4]
        yield extent, stride, dilation, kind, list(BANKS)[(j + 1) // 3 % 4], bool(j // 2 % 2)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_geometry_is_adjoint_and_matches_scipy(d, boundary):
    rng = np.random.default_rng(d * 10 + BOUNDARIES.index(boundary))
    checked = 0
    for extent, stride, dilation, kind, bank_kind, correlate in cases(
        d + 3 * BOUNDARIES.index(boundary)
    ):
        bank, groups, channels = make_bank(kind, bank_kind, d, rng)
        geometry = Geometry.create(
            mode=None if extent == "padding" else extent,
            boundary=boundary,
            correlate=correlate,
            stride=(stride,) + (1,) * (d - 1),  # a different stride on the first axis
            dilation=dilation,
            padding=(2,) * d if extent == "padding" else None,
        )
        shape = SHAPES[d] + (channels,)
        x = rng.standard_normal(shape)
        expected = oracle(bank, x, groups, geometry, d)
        engines = ["direct", "taps", "fft"]
        if bank_kind in ("single", "shared") and kind == "rank-one":
            engines.append("separable")
        for engine in engines:
            op = Convolution(bank, shape, geometry, groups=groups, engine=engine)
            assert op.engine == engine
            np.testing.assert_allclose(op.forward(x), expected, atol=1e-10, err_msg=engine)
            assert dottest(op, rng=rng, rtol=1e-10) <= 1e-10
            checked += 1
    assert checked >= 12 * 3


def test_separable_engine_needs_a_shared_rank_one_kernel():
    bank = np.random.default_rng(0).standard_normal((2, 3, 3, 3))
    with pytest.raises(GeometryError, match="separable"):
        Convolution(bank, (8, 8, 3), engine="separable")


@pytest.mark.parametrize(
    ("bank", "shape", "groups", "match"),
    [
        (np.ones((2, 1, 3)), (9, 1, 1), 1, "spatial axes"),  # 1-D bank, 2-D input
        (np.ones((3, 1, 3, 3)), (8, 8, 3), 2, "groups"),  # 3 outputs in 2 groups
        (np.ones((2, 2, 3, 3)), (8, 8, 3), 1, "input channels"),
        (np.ones((1, 1, 3, 3, 3, 3)), (5, 5, 5, 5, 1), 1, "1 to 3 spatial axes"),
    ],
)
def test_the_constructor_takes_explicit_axes_and_says_what_is_wrong(bank, shape, groups, match):
    with pytest.raises(GeometryError, match=match):
        Convolution(bank, shape, groups=groups)


def test_a_geometry_for_two_axes_does_not_apply_to_three():
    geometry = Geometry.create(stride="2x3")
    with pytest.raises(GeometryError, match="stride: "):
        Convolution(np.ones((1, 1, 3, 3, 3)), (8, 8, 8, 1), geometry)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_against_torch_conv_layers(d):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(d)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}.get(
        d, torch.nn.functional.conv3d
    )
    for groups, (co, cig), stride, dilation, pad in itertools.product(
        (1, 2), ((4, 1), (2, 3)), (1, 2), (1, 2), (0, 1)
    ):
        bank = rng.standard_normal((co, cig) + (3, 2, 3)[:d])
        shape = SHAPES[d] + (cig * groups,)
        geometry = Geometry.create(
            boundary="constant", correlate=True, stride=stride, dilation=dilation, padding=pad
        )
        op = Convolution(bank, shape, geometry, groups=groups)
        x = rng.standard_normal(shape)
        expected = conv(
            torch.from_numpy(np.moveaxis(x, -1, 0)[None]),
            torch.from_numpy(bank),
            stride=stride,
            dilation=dilation,
            padding=pad,
            groups=groups,
        )[0].numpy()
        np.testing.assert_allclose(op.forward(x), np.moveaxis(expected, 0, -1), atol=1e-10)


# -- the algebra -------------------------------------------------------------------


def small_ops():
    rng = np.random.default_rng(4)
    a = ConvOperator(rng.standard_normal((3, 3)), (6, 7), Geometry.create(boundary="wrap"))
    b = ConvOperator(rng.standard_normal((2, 3)), (6, 7), Geometry.create(boundary="mirror"))
    return rng, a, b


def test_adjoint_product_sum_and_scaling_compute_what_they_say():
    rng, a, b = small_ops()
    x, y = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    np.testing.assert_allclose(a.T @ y, a.adjoint(y))
    np.testing.assert_allclose(a.H @ y, a.adjoint(y))
    assert a.T.T is a
    np.testing.assert_allclose((a @ b) @ x, a.forward(b.forward(x)))
    np.testing.assert_allclose((a @ b).T @ y, b.adjoint(a.adjoint(y)))
    np.testing.assert_allclose((a + b) @ x, a.forward(x) + b.forward(x))
    np.testing.assert_allclose((a - b) @ x, a.forward(x) - b.forward(x))
    np.testing.assert_allclose((2.5 * a) @ x, 2.5 * a.forward(x))
    np.testing.assert_allclose((a * 2.5).T @ y, 2.5 * a.adjoint(y))
    normal = a.T @ a + 0.5 * (b.T @ b)
    assert dottest(normal, rng=1) < 1e-12
    # the normal operator is symmetric positive semi-definite: ⟨x, N x⟩ ≥ 0
    assert float(np.vdot(x, normal @ x)) >= 0


def test_the_scipy_view_is_the_flattened_operator():
    rng, a, _ = small_ops()
    view = a.as_linear_operator()
    x, y = rng.standard_normal(42), rng.standard_normal(42)
    np.testing.assert_allclose(view.matvec(x), a.forward(x.reshape(6, 7)).ravel())
    np.testing.assert_allclose(view.rmatvec(y), a.adjoint(y.reshape(6, 7)).ravel())
    assert view.shape == (42, 42)


def test_composition_refuses_mismatched_shapes():
    rng, a, _ = small_ops()
    c = ConvOperator(rng.standard_normal((3, 3)), (5, 5))
    with pytest.raises(GeometryError, match="composing"):
        _ = a @ c
    with pytest.raises(GeometryError, match="adding"):
        _ = a + c


def test_dottest_fails_on_a_wrong_adjoint():
    _, a, _ = small_ops()

    class Wrong(LinearMap):
        input_shape, output_shape, dtype = a.input_shape, a.output_shape, a.dtype

        def forward(self, x):
            return a.forward(x)

        def adjoint(self, y):  # the forward in place of the adjoint: not symmetric
            return a.forward(y)

    with pytest.raises(DeconvError, match="dot test"):
        dottest(Wrong(), rng=0)


# -- the array namespace seam ----------------------------------------------------------


@pytest.mark.parametrize("boundary", ["reflect", "wrap", "constant"])
@pytest.mark.parametrize("bank_kind", ["shared", "grouped", "bank"])
def test_the_fft_plan_computes_in_the_inputs_array_namespace(bank_kind, boundary):
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(9)
    bank, groups, channels = make_bank("odd", bank_kind, 2, rng)
    geometry = Geometry.create(boundary=boundary, stride="2x1", dilation=2)
    shape = SHAPES[2] + (channels,)
    op = Convolution(bank, shape, geometry, groups=groups, engine="fft")
    x = rng.standard_normal(shape)
    y = rng.standard_normal(op.output_shape)
    ax, aty = op.forward(xps.asarray(x)), op.adjoint(xps.asarray(y))
    assert ax.__array_namespace__() is xps and aty.__array_namespace__() is xps
    ax, aty = np.from_dlpack(ax), np.from_dlpack(aty)
    np.testing.assert_allclose(ax, oracle(bank, x, groups, geometry, 2), atol=1e-10)
    assert abs(np.vdot(ax, y) - np.vdot(x, aty)) <= 1e-10 * np.linalg.norm(ax) * np.linalg.norm(y)


def test_the_numpy_only_engines_refuse_other_arrays():
    xps = pytest.importorskip("array_api_strict")
    op = Convolution(np.ones((1, 1, 3, 3)), (8, 8, 1), engine="direct")
    with pytest.raises(GeometryError, match="engine `fft`"):
        op.forward(xps.asarray(np.ones((8, 8, 1))))


def test_fft_workers_is_an_explicit_setting(monkeypatch):
    from deconv_cli.operators import fft_workers, set_workers, workers

    monkeypatch.setenv("DECONV_FFT_WORKERS", "3")
    assert fft_workers() == 3
    try:
        set_workers(2)
        assert fft_workers() == 2
        with workers(1):
            assert fft_workers() == 1
            with workers(4):
                assert fft_workers() == 4
            assert fft_workers() == 1
        assert fft_workers() == 2
    finally:
        set_workers(None)
    assert fft_workers() == 3
    with pytest.raises(DeconvError, match="FFT workers"), workers(0):
        pass
