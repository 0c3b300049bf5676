"""Exact tiled A and Aᵀ against the untiled operator (2-D and 3-D), memory maps, and the
commands with --tile."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import BOUNDARIES, ConvOperator, Geometry
from deconv_cli.tiles import tiled_adjoint, tiled_forward


def rng(seed=0):
    return np.random.default_rng(seed)


def relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# -- exact tiles ---------------------------------------------------------------------

MODES = {
    "same": ("same", None),
    "full": ("full", None),
    "valid": ("valid", None),
    "pad2x1": (None, "2x1"),
}
KERNELS = {"odd3x3": (3, 3), "even4x5": (4, 5)}
# tile 2: smaller than the kernel; 5: does not divide the sides; 100: one tile
TILES = [2, 5, 100]
CASES = list(itertools.product(BOUNDARIES, MODES, [1, 2, 3], [1, 2], KERNELS))


@pytest.mark.parametrize(
    "boundary,mode,stride,dilation,kernel_name",
    CASES,
    ids=[f"{b}-{m}-s{s}-d{d}-{k}" for b, m, s, d, k in CASES],
)
def test_tiled_forward_and_adjoint_equal_untiled(boundary, mode, stride, dilation, kernel_name):
    r = rng(1)
    kernel = r.random(KERNELS[kernel_name])
    mode_value, padding = MODES[mode]
    geometry = Geometry.create(
        mode=mode_value, padding=padding, boundary=boundary, stride=stride, dilation=dilation
    )
    op = ConvOperator(kernel, (13, 11, 2), geometry)
    x, y = r.standard_normal(op.input_shape), r.standard_normal(op.output_shape)
    forward, adjoint = op.forward(x), op.adjoint(y)
    for tile in TILES:
        assert relative_gap(tiled_forward(op, x, tile), forward) <= 1e-12, tile
        assert relative_gap(tiled_adjoint(op, y, tile), adjoint) <= 1e-12, tile


BANK_CASES = list(itertools.product(BOUNDARIES, [1, 2], [(3, 2), (1, 2)]))


@pytest.mark.parametrize(
    "boundary,stride,channels",
    BANK_CASES,
    ids=[f"{b}-s{s}-out{c[0]}in{c[1]}" for b, s, c in BANK_CASES],
)
def test_tiled_kernel_bank_equals_untiled(boundary, stride, channels):
    r = rng(2)
    kernel = r.standard_normal(channels + (3, 2))
    geometry = Geometry.create(padding=1, boundary=boundary, stride=stride, correlate=True)
    op = ConvOperator(kernel, (9, 8, channels[1]), geometry)
    x, y = r.standard_normal(op.input_shape), r.standard_normal(op.output_shape)
    for tile in (1, 3, 50):
        assert relative_gap(tiled_forward(op, x, tile), op.forward(x)) <= 1e-12
        assert relative_gap(tiled_adjoint(op, y, tile), op.adjoint(y)) <= 1e-12


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", ["same", "full"])
def test_kernel_larger_than_the_image(boundary, mode):
    # the padding reflects (or wraps) several times over the image
    r = rng(3)
    kernel = r.random((9, 7))
    op = ConvOperator(kernel, (4, 3), Geometry.create(mode=mode, boundary=boundary))
    x, y = r.random(op.input_shape), r.random(op.output_shape)
    for tile in (1, 2):
        assert relative_gap(tiled_forward(op, x, tile), op.forward(x)) <= 1e-12
        assert relative_gap(tiled_adjoint(op, y, tile), op.adjoint(y)) <= 1e-12


@pytest.mark.parametrize("shape", [(17, 12), (17, 12, 3)], ids=["grey", "rgb"])
@pytest.mark.parametrize("correlate", [False, True], ids=["convolve", "correlate"])
def test_two_d_kernel_on_grey_and_colour_images(shape, correlate):
    r = rng(4)
    op = ConvOperator(r.random((4, 3)), shape, Geometry.create(correlate=correlate))
    x, y = r.random(op.input_shape), r.random(op.output_shape)
    assert relative_gap(tiled_forward(op, x, 5), op.forward(x)) <= 1e-12
    assert relative_gap(tiled_adjoint(op, y, 5), op.adjoint(y)) <= 1e-12


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tiled_adjoint_is_the_adjoint_of_tiled_forward(boundary):
    r = rng(5)
    geometry = Geometry.create(mode="full", boundary=boundary, stride=2, dilation=2)
    op = ConvOperator(r.random((3, 4)), (15, 14, 2), geometry)
    x, y = r.standard_normal(op.input_shape), r.standard_normal(op.output_shape)
    ax, aty = tiled_forward(op, x, 4), tiled_adjoint(op, y, 4)
    scale = np.linalg.norm(ax) * np.linalg.norm(y)
    assert abs(np.vdot(ax, y) - np.vdot(x, aty)) <= 1e-12 * scale


def test_float32_is_computed_in_float32():
    r = rng(6)
    x = r.random((40, 30)).astype(np.float32)
    op = ConvOperator(r.random((5, 5)), x.shape, Geometry.create(), dtype=np.float32)
    tiled = tiled_forward(op, x, 16)
    assert tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, op.forward(x), rtol=1e-5)
    assert tiled_adjoint(op, x, 16).dtype == np.float32


def test_memory_mapped_input_and_output(tmp_path):
    r = rng(7)
    x = r.random((50, 40, 2))
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    op = ConvOperator(r.random((3, 5)), x.shape, Geometry.create(boundary="wrap"))
    out = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", shape=op.output_shape)
    assert tiled_forward(op, mapped, 16, out=out) is out
    out.flush()
    assert relative_gap(np.load(tmp_path / "y.npy"), op.forward(x)) <= 1e-12


def test_tiled_convolve_equals_untiled_on_4096_float64():
    from deconv_cli.kernels import load_kernel

    x = rng(8).random((4096, 4096))
    op = ConvOperator(load_kernel("disk:radius=5").array, x.shape, Geometry.create())
    assert relative_gap(tiled_forward(op, x, 1000), op.forward(x)) <= 1e-12


@pytest.mark.parametrize("tile", [0, -3, 2.5, True], ids=str)
def test_tile_must_be_a_positive_integer(tile):
    op = ConvOperator(np.ones((3, 3)), (8, 8))
    with pytest.raises(DeconvError, match=r"^tile: `.*` must be a whole number"):
        tiled_forward(op, np.zeros((8, 8)), tile)


def test_shapes_are_checked():
    op = ConvOperator(np.ones((3, 3)), (8, 8), Geometry.create(mode="valid"))
    with pytest.raises(GeometryError, match="the image has shape 8x9"):
        tiled_forward(op, np.zeros((8, 9)), 4)
    with pytest.raises(GeometryError, match="the data has shape 8x8"):
        tiled_adjoint(op, np.zeros((8, 8)), 4)
    with pytest.raises(GeometryError, match="the output array has shape 8x8, the result 6x6"):
        tiled_forward(op, np.zeros((8, 8)), 4, out=np.zeros((8, 8)))


# -- 3-D tiles ---------------------------------------------------------------------------

CASES_3D = list(itertools.product(BOUNDARIES, ["same", "full", "valid"], [1, 2]))


@pytest.mark.parametrize(
    "boundary,mode,stride", CASES_3D, ids=[f"{b}-{m}-s{s}" for b, m, s in CASES_3D]
)
def test_tiled_3d_forward_and_adjoint_equal_untiled(boundary, mode, stride):
    from deconv_cli.operators import Convolution

    r = rng(11)
    bank = r.random((1, 1, 5, 3, 4))  # an anisotropic, even-sided PSF
    geometry = Geometry.create(mode=mode, boundary=boundary, stride=(stride,) * 3)
    op = Convolution(bank, (9, 12, 10, 1), geometry)
    x, y = r.standard_normal(op.input_shape), r.standard_normal(op.output_shape)
    forward, adjoint = op.forward(x), op.adjoint(y)
    # (2, 5, 3): smaller than the kernel on z, not dividing any side; 4: one side per axis
    for tile in [(2, 5, 3), 4, (100, 100, 100)]:
        assert relative_gap(tiled_forward(op, x, tile), forward) <= 1e-12, tile
        assert relative_gap(tiled_adjoint(op, y, tile), adjoint) <= 1e-12, tile


def test_tiled_3d_equals_scipy_ndimage_convolve():
    from scipy import ndimage

    from deconv_cli.operators import Convolution

    r = rng(12)
    psf = r.random((7, 5, 5))
    x = r.random((20, 24, 24))
    op = Convolution(psf[None, None], x.shape + (1,), Geometry.create(boundary="mirror"))
    tiled = tiled_forward(op, x[..., None], (6, 10, 10))[..., 0]
    assert relative_gap(tiled, ndimage.convolve(x, psf, mode="mirror")) <= 1e-12


def test_3d_tile_must_name_every_axis_or_one():
    from deconv_cli.operators import Convolution

    op = Convolution(np.ones((1, 1, 3, 3, 3)), (8, 8, 8, 1))
    with pytest.raises(DeconvError, match=r"^tile: `4x4` must be .* one per spatial axis \(3\)"):
        tiled_forward(op, np.zeros(op.input_shape), (4, 4))


@pytest.mark.parametrize(
    "text,tile", [("64", 64), ("16x64x64", (16, 64, 64)), ("8X32", (8, 32))], ids=str
)
def test_parse_tile(text, tile):
    from deconv_cli.tiles import parse_tile

    assert parse_tile(text) == tile


@pytest.mark.parametrize("text", ["0", "x", "4x0x4", "1x2x3x4", "-2"])
def test_parse_tile_refuses(text):
    from deconv_cli.tiles import parse_tile

    with pytest.raises(DeconvError, match="^tile: .* must be N, HxW or ZxYxX"):
        parse_tile(text)


# -- FFT sizes ---------------------------------------------------------------------------


def _smallest_smooth(n: int) -> int:
    """Brute force: the smallest m >= n of the form 2^a 3^b 5^c with c <= 1."""
    m = n
    while True:
        k = m
        for p in (2, 3):
            while k % p == 0:
                k //= p
        if k in (1, 5):
            return m
        m += 1


def test_fft_lengths_are_5_smooth_never_rounded_to_a_power_of_two():
    from deconv_cli.operators import fast_length

    for n in range(1, 2200):
        assert fast_length(n) == _smallest_smooth(n), n
    # the trackers' complaint: 348 planes and a 15-plane PSF padded to 512 (here 384)
    assert fast_length(348 + 14) == 384
    assert fast_length(513) == 540 and fast_length(1025) == 1080


def test_3d_fft_engine_pads_to_5_smooth_lengths():
    from deconv_cli.operators import Convolution

    op = Convolution(np.ones((1, 1, 15, 15, 15)), (50, 130, 130, 1), engine="fft")
    # padded 64 x 144 x 144 (reflect, same), all already 5-smooth: no rounding up
    assert op._engine.size == (64, 144, 144)
    op = Convolution(np.ones((1, 1, 15, 15, 15)), (51, 131, 131, 1), engine="fft")
    # 65 -> 72 = 2^3 3^2; 145 -> 160 = 2^5 5 (150 = 2 3 5^2 has two factors 5: slower)
    assert op._engine.size == (72, 160, 160)


def test_cli_tile_per_axis_equals_untiled_and_bad_tiles_are_one_line(tmp_path):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    np.save(tmp_path / "x.npy", rng(13).random((40, 30)))
    runner = CliRunner()
    base = ["convolve", str(tmp_path / "x.npy"), "-k", "gaussian:sigma=2", "-q"]
    assert runner.invoke(main, [*base, "-o", str(tmp_path / "a.npy")]).exit_code == 0
    tiled = runner.invoke(main, [*base, "-o", str(tmp_path / "b.npy"), "--tile", "7x11"])
    assert tiled.exit_code == 0, tiled.output
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert relative_gap(b, a) <= 1e-12
    bad = runner.invoke(main, [*base, "-o", str(tmp_path / "c.npy"), "--tile", "4x0"])
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and "must be N, HxW or ZxYxX" in bad.stderr
