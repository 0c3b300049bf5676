"""The convolution operator against scipy, torch and dot tests."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, signal

from deconv_cli.errors import GeometryError
from deconv_cli.operators import (
    BOUNDARIES,
    ConvOperator,
    Geometry,
    fast_length,
    input_shape_for,
    separable_factors,
)

ENGINES = ["direct", "taps", "fft"]
KERNEL_SHAPES = {"odd3x3": (3, 3), "even4x4": (4, 4), "rect2x5": (2, 5), "rect5x2": (5, 2)}


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("engine", ENGINES + ["separable"])
@pytest.mark.parametrize("correlate", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kshape", KERNEL_SHAPES.values(), ids=KERNEL_SHAPES.keys())
def test_same_mode_equals_ndimage(kshape, boundary, correlate, engine):
    r = rng(1)
    x = r.random((13, 11))
    if engine == "separable":
        kernel = np.outer(r.random(kshape[0]), r.random(kshape[1]))
    else:
        kernel = r.random(kshape)
    geometry = Geometry.create(boundary=boundary, correlate=correlate)
    op = ConvOperator(kernel, x.shape, geometry, engine=engine)
    oracle = (ndimage.correlate if correlate else ndimage.convolve)(x, kernel, mode=boundary)
    np.testing.assert_allclose(op.forward(x), oracle, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("correlate", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("mode", ["full", "valid"])
@pytest.mark.parametrize("kshape", KERNEL_SHAPES.values(), ids=KERNEL_SHAPES.keys())
def test_full_and_valid_equal_scipy_signal(kshape, mode, correlate, engine):
    r = rng(2)
    x = r.random((12, 9))
    kernel = r.random(kshape)
    geometry = Geometry.create(mode=mode, boundary="constant", correlate=correlate)
    op = ConvOperator(kernel, x.shape, geometry, engine=engine)
    oracle = (signal.correlate2d if correlate else signal.convolve2d)(x, kernel, mode=mode)
    assert op.output_shape == oracle.shape
    np.testing.assert_allclose(op.forward(x), oracle, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", ["reflect", "wrap", "nearest"])
def test_full_mode_pads_by_kernel_extent_with_the_rule(boundary):
    r = rng(3)
    x, kernel = r.random((10, 8)), r.random((3, 4))
    padded = np.pad(
        x,
        ((2, 2), (3, 3)),
        mode={"reflect": "symmetric", "wrap": "wrap", "nearest": "edge"}[boundary],
    )
    oracle = signal.convolve2d(padded, kernel, mode="valid")
    op = ConvOperator(kernel, x.shape, Geometry.create(mode="full", boundary=boundary))
    np.testing.assert_allclose(op.forward(x), oracle, atol=1e-12)


@pytest.mark.parametrize("stride", [(2, 2), (3, 1), (2, 3)], ids=str)
@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_stride_is_the_stride1_result_subsampled(mode, stride):
    r = rng(4)
    x, kernel = r.random((14, 13)), r.random((3, 4))
    dense = ConvOperator(kernel, x.shape, Geometry.create(mode=mode)).forward(x)
    op = ConvOperator(
        kernel, x.shape, Geometry.create(mode=mode, stride=f"{stride[0]}x{stride[1]}")
    )
    np.testing.assert_allclose(op.forward(x), dense[:: stride[0], :: stride[1]], atol=1e-13)


def test_dilation_equals_a_kernel_with_zeros_inserted():
    r = rng(5)
    x, kernel = r.random((15, 15)), r.random((3, 3))
    dilated = np.zeros((5, 5))
    dilated[::2, ::2] = kernel
    op = ConvOperator(kernel, x.shape, Geometry.create(dilation=2, boundary="mirror"))
    np.testing.assert_allclose(
        op.forward(x), ndimage.convolve(x, dilated, mode="mirror"), atol=1e-12
    )


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_kernel_larger_than_image_in_same_mode_matches_ndimage(boundary):
    r = rng(6)
    x, kernel = r.random((4, 5)), r.random((9, 7))
    op = ConvOperator(kernel, x.shape, Geometry.create(boundary=boundary))
    np.testing.assert_allclose(
        op.forward(x), ndimage.convolve(x, kernel, mode=boundary), atol=1e-12
    )


def test_two_d_kernel_applies_to_every_channel():
    r = rng(7)
    x, kernel = r.random((9, 10, 3)), r.random((3, 3))
    y = ConvOperator(kernel, x.shape, Geometry.create()).forward(x)
    for c in range(3):
        np.testing.assert_allclose(
            y[:, :, c], ndimage.convolve(x[:, :, c], kernel, mode="reflect"), atol=1e-12
        )


def test_float32_is_computed_in_float32():
    r = rng(8)
    x = r.random((20, 20)).astype(np.float32)
    kernel = r.random((5, 5))
    for engine in ENGINES:
        y = ConvOperator(
            kernel, x.shape, Geometry.create(), dtype=np.float32, engine=engine
        ).forward(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(
            y, ndimage.convolve(x.astype(float), kernel, mode="reflect"), rtol=1e-5
        )


# -- adjoint --------------------------------------------------------------------


def dot_test(op: ConvOperator, seed=0) -> float:
    """Relative gap between <A x, y> and <x, Aᵀ y> for random x, y."""
    r = rng(seed)
    x = r.standard_normal(op.input_shape)
    y = r.standard_normal(op.output_shape)
    ax, aty = op.forward(x), op.adjoint(y)
    lhs, rhs = np.vdot(ax, y), np.vdot(x, aty)
    # The last term keeps the scale honest where A is (nearly) zero, e.g. a dilated
    # kernel whose taps all fall in the zero padding; the FFT then leaves only rounding.
    scale = max(
        np.linalg.norm(ax) * np.linalg.norm(y),
        np.linalg.norm(x) * np.linalg.norm(aty),
        np.linalg.norm(x) * np.linalg.norm(y) * np.abs(op.kernel).max(),
    )
    return abs(lhs - rhs) / scale


GEOMETRY_MODES = [("same", None), ("full", None), ("valid", None), (None, "1"), (None, "2x1")]
ADJOINT_CASES = list(
    itertools.product(KERNEL_SHAPES.items(), BOUNDARIES, GEOMETRY_MODES, [1, 2, 3], [1, 2], ENGINES)
)


@pytest.mark.parametrize(
    "kernel_case,boundary,mode_padding,stride,dilation,engine",
    ADJOINT_CASES,
    ids=[f"{k[0]}-{b}-{m or 'pad' + p}-s{s}-d{d}-{e}" for k, b, (m, p), s, d, e in ADJOINT_CASES],
)
def test_adjoint_dot_test(kernel_case, boundary, mode_padding, stride, dilation, engine):
    mode, padding = mode_padding
    kernel = rng(9).random(kernel_case[1])
    geometry = Geometry.create(
        mode=mode, padding=padding, boundary=boundary, stride=stride, dilation=dilation
    )
    op = ConvOperator(kernel, (12, 11, 2), geometry, engine=engine)
    assert dot_test(op) < 1e-12


@pytest.mark.parametrize("engine", ["separable"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_separable_adjoint_dot_test(boundary, stride, engine):
    kernel = np.outer(rng(10).random(4), rng(11).random(3))
    op = ConvOperator(
        kernel, (13, 12), Geometry.create(boundary=boundary, stride=stride), engine=engine
    )
    assert dot_test(op) < 1e-12


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("stride", [1, 2])
def test_bank_adjoint_dot_test(boundary, stride, engine):
    kernel = rng(12).standard_normal((3, 2, 3, 2))
    geometry = Geometry.create(padding=1, boundary=boundary, stride=stride, correlate=True)
    op = ConvOperator(kernel, (9, 8, 2), geometry, engine=engine)
    assert op.output_shape[2] == 3
    assert dot_test(op) < 1e-12


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    boundary=st.sampled_from(BOUNDARIES),
    mode=st.sampled_from(["same", "full", "valid"]),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    correlate=st.booleans(),
    engine=st.sampled_from(ENGINES),
)
def test_properties_over_random_shapes(
    h, w, kh, kw, boundary, mode, stride, dilation, correlate, engine
):
    geometry = Geometry.create(
        mode=mode, boundary=boundary, stride=stride, dilation=dilation, correlate=correlate
    )
    kernel = rng(h * 100 + w).standard_normal((kh, kw))
    try:
        op = ConvOperator(kernel, (h, w), geometry, engine=engine)
    except GeometryError:
        # only valid mode can have no output: the dilated kernel exceeds the image
        assert mode == "valid" and (dilation * (kh - 1) + 1 > h or dilation * (kw - 1) + 1 > w)
        return
    # adjointness
    assert dot_test(op) < 1e-11
    # linearity
    r = rng(1)
    a, b = r.standard_normal(op.input_shape), r.standard_normal(op.input_shape)
    np.testing.assert_allclose(op.forward(2 * a - b), 2 * op.forward(a) - op.forward(b), atol=1e-10)
    # the shape round trip of transpose
    assert input_shape_for(kernel, op.output_shape, geometry, (h, w)) == (h, w)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(kh=st.integers(1, 6), kw=st.integers(1, 6), correlate=st.booleans())
def test_delta_reproduces_the_kernel(kh, kw, correlate):
    kernel = rng(kh * 7 + kw).standard_normal((kh, kw))
    delta = np.zeros((1, 1))
    delta[0, 0] = 1
    op = ConvOperator(
        kernel, (1, 1), Geometry.create(mode="full", correlate=correlate, boundary="constant")
    )
    expected = kernel[::-1, ::-1] if correlate else kernel
    np.testing.assert_allclose(op.forward(delta), expected, atol=1e-14)


# -- conv layers: torch is the oracle -----------------------------------------------

TORCH_CASES = [
    # (C_out, C_in, kh, kw, stride, padding, dilation, H, W)
    (4, 1, 2, 2, 2, 0, 1, 8, 8),
    (3, 2, 3, 3, 1, 1, 1, 7, 9),
    (2, 3, 3, 2, 2, 1, 2, 11, 10),
    (5, 2, 4, 4, 3, 2, 1, 13, 12),
]


@pytest.mark.parametrize(
    "case", TORCH_CASES, ids=lambda c: "co{}-ci{}-k{}x{}-s{}-p{}-d{}".format(*c[:7])
)
@pytest.mark.parametrize("engine", ENGINES)
def test_bank_equals_torch_conv2d_and_conv_transpose2d(case, engine):
    torch = pytest.importorskip("torch")
    co, ci, kh, kw, s, p, d, h, w = case
    r = rng(13)
    kernel = r.standard_normal((co, ci, kh, kw))
    x = r.standard_normal((h, w, ci))
    geometry = Geometry.create(correlate=True, boundary="constant", padding=p, stride=s, dilation=d)
    op = ConvOperator(kernel, x.shape if ci > 1 else x.shape[:2], geometry, engine=engine)
    tx = torch.from_numpy(x.transpose(2, 0, 1)[None])
    tk = torch.from_numpy(kernel)
    oracle = torch.nn.functional.conv2d(tx, tk, stride=s, padding=p, dilation=d)[0].numpy()
    y = op.forward(x if ci > 1 else x[:, :, 0])
    np.testing.assert_allclose(
        y.reshape(oracle.shape[1], oracle.shape[2], co), oracle.transpose(1, 2, 0), atol=1e-12
    )
    # transpose: conv_transpose2d with the output shape chosen explicitly
    ty = torch.from_numpy(oracle[None])
    out_pad = [
        h - ((oracle.shape[1] - 1) * s - 2 * p + d * (kh - 1) + 1),
        w - ((oracle.shape[2] - 1) * s - 2 * p + d * (kw - 1) + 1),
    ]
    back = torch.nn.functional.conv_transpose2d(
        ty, tk, stride=s, padding=p, dilation=d, output_padding=out_pad
    )[0].numpy()
    shape = input_shape_for(kernel, y.shape, geometry, (h, w))
    transposed = ConvOperator(kernel, shape, geometry, engine=engine).adjoint(y)
    np.testing.assert_allclose(transposed.reshape(h, w, ci), back.transpose(1, 2, 0), atol=1e-12)


# -- shapes, engines, errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,padding,stride,n,k,expected_out",
    [
        ("same", None, 1, 10, 3, 10),
        ("full", None, 1, 10, 3, 12),
        ("valid", None, 1, 10, 3, 8),
        (None, 2, 1, 10, 3, 12),
        ("same", None, 2, 10, 3, 5),
        ("same", None, 3, 10, 3, 4),
        ("valid", None, 2, 10, 4, 4),
    ],
)
def test_output_shapes_follow_the_formulas(mode, padding, stride, n, k, expected_out):
    op = ConvOperator(
        np.ones((k, k)), (n, n), Geometry.create(mode=mode, padding=padding, stride=stride)
    )
    assert op.output_shape == (expected_out, expected_out)


def test_input_shape_for_stride_picks_smallest_and_accepts_requested():
    kernel = np.ones((3, 3))
    geometry = Geometry.create(stride=2)
    # same mode, stride 2: inputs 9 and 10 both give 5 outputs
    assert input_shape_for(kernel, (5, 5), geometry) == (9, 9)
    assert input_shape_for(kernel, (5, 5), geometry, (10, 9)) == (10, 9)
    with pytest.raises(GeometryError, match="9..10"):
        input_shape_for(kernel, (5, 5), geometry, (11, 9))


def test_separable_factors_detects_rank_one():
    col, row = separable_factors(np.outer([1.0, 2, 1], [1.0, 0, -1]))
    np.testing.assert_allclose(np.outer(col, row), np.outer([1.0, 2, 1], [1.0, 0, -1]))
    assert separable_factors(np.eye(3)) is None
    r = rng(16)
    for kernel in (
        -np.outer(r.random(5), r.random(3)),  # a negative largest entry
        np.outer(r.standard_normal(4), r.standard_normal(6)),
        r.random((1, 7)),
        np.outer([0.0, 1.0, 0.0], [2.0, -1.0]),
    ):
        col, row = separable_factors(kernel)
        np.testing.assert_allclose(np.outer(col, row), kernel, rtol=0, atol=1e-15)
    near = np.outer(r.random(5), r.random(5)) + 1e-6 * np.outer(r.random(5), r.random(5))[::-1]
    assert np.linalg.matrix_rank(near, tol=1e-9) == 2 and separable_factors(near) is None


def test_auto_engine_uses_separable_for_gaussian_and_fft_for_large_dense():
    g = np.exp(-(np.arange(-7, 8) ** 2) / 8.0)
    assert ConvOperator(np.outer(g, g), (256, 256)).engine == "separable"
    big = rng(14).random((41, 41))
    assert ConvOperator(big, (256, 256)).engine == "fft"
    assert ConvOperator(rng(15).random((3, 3)), (256, 256)).engine == "direct"


def test_auto_engine_prices_float32_transforms_below_float64():
    """scipy.ndimage computes in float64 for float32 data too, while float32 transforms
    cost about half: a 7×7 disk (45 taps) on 2048² goes to the FFT in float32 only."""
    disk = (np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.7) * 1.0
    assert np.count_nonzero(disk) == 45
    shape = (2048, 2048)
    assert ConvOperator(disk, shape, dtype=np.float32).engine == "fft"
    assert ConvOperator(disk, shape, dtype=np.float64).engine == "direct"


@pytest.mark.parametrize("boundary", ["reflect", "constant", "wrap"])
def test_dilated_kernel_runs_as_sparse_taps_and_equals_ndimage(boundary):
    """A dilated kernel is costed by its non-zero taps, not its extent (ndimage's offset
    table grows with the extent squared: a 3×3 box at dilation 1000 ran for hours)."""
    x = rng(16).random((64, 64, 2))
    kernel = rng(17).random((3, 3))
    op = ConvOperator(kernel, x.shape, Geometry.create(boundary=boundary, dilation=20))
    assert op.engine == "taps"
    dilated = np.zeros((41, 41))
    dilated[::20, ::20] = kernel
    expected = ndimage.convolve(x, dilated[:, :, None], mode=boundary)
    np.testing.assert_allclose(op.forward(x), expected, rtol=1e-12, atol=1e-12)
    y = rng(18).random(op.output_shape)
    assert np.vdot(op.forward(x), y) == pytest.approx(np.vdot(x, op.adjoint(y)), rel=1e-12)
    assert ConvOperator(kernel, (64, 64), Geometry.create(dilation=1000)).engine == "taps"


@pytest.mark.parametrize("n", [1, 7, 100, 1025, 2062, 2110])
def test_fast_length_is_smooth_and_not_smaller(n):
    m = fast_length(n)
    assert m >= n
    r = m
    for p in (2, 3):
        while r % p == 0:
            r //= p
    assert r in (1, 5)
    assert m < 2 * n or n == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "sideways"}, "^mode: `sideways` is not one of"),
        ({"boundary": "bounce"}, "^boundary: `bounce` is not one of"),
        ({"stride": "0"}, "^stride: `0` must be"),
        ({"stride": "2x"}, "^stride: `2x` is not an integer"),
        ({"dilation": "-1"}, "^dilation: `-1` must be"),
        ({"padding": "1", "mode": "same"}, "^padding: implies `valid`"),
    ],
)
def test_geometry_errors_name_the_parameter_and_value(kwargs, message):
    """The library names its keywords; the command line shows them as flags."""
    with pytest.raises(GeometryError, match=message.replace("(", r"\(")) as caught:
        Geometry.create(**kwargs)
    assert caught.value.parameter == next(iter(kwargs))


def test_boundary_aliases():
    assert Geometry.create(boundary="zero").boundary == "constant"
    assert Geometry.create(boundary="replicate").boundary == "nearest"
    assert Geometry.create(boundary="periodic").boundary == "wrap"


def test_valid_mode_with_kernel_larger_than_image_is_an_error():
    with pytest.raises(GeometryError, match="larger than the image"):
        ConvOperator(np.ones((9, 9)), (5, 5), Geometry.create(mode="valid"))


def test_bank_channel_mismatch_is_an_error():
    with pytest.raises(GeometryError, match="takes 2 input channels but the image has 3"):
        ConvOperator(np.ones((1, 2, 3, 3)), (8, 8, 3), Geometry.create())
