"""Tiled A, Aᵀ and invert against the untiled operator; the memory estimate."""

from __future__ import annotations

import itertools
import subprocess
import sys

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


# -- tiled invert ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    from skimage import data

    return data.camera()[::4, ::4] / 255.0  # 128x128


def blur(scene, boundary: str, sigma: float = 0.01):
    """``(y, kernel, geometry, unknown)``: the scene blurred by a gaussian (11x11), noisy."""
    from deconv_cli.kernels import load_kernel

    kernel = load_kernel("gaussian:sigma=1.5").array
    unknown = boundary == "unknown"
    geometry = Geometry.create(boundary="reflect" if unknown else boundary)
    y = ConvOperator(kernel, scene.shape, geometry).forward(scene)
    return y + sigma * rng(9).standard_normal(y.shape), kernel, geometry, unknown


def untiled(y, kernel, geometry, method, options, unknown=False):
    from deconv_cli.inversion import build_problem, invert

    problem = build_problem(kernel, y.shape, geometry, unknown_boundary=unknown)
    return invert(y, problem, method, options)


class Recorder:
    """Wraps ``deconv_cli.inversion.invert`` to record the method and options of each call."""

    def __init__(self, monkeypatch):
        import deconv_cli.inversion

        self.calls = []
        real = deconv_cli.inversion.invert

        def record(blurred, problem, method, options, **kwargs):
            result = real(blurred, problem, method, options, **kwargs)
            self.calls.append((method, options, result))
            return result

        monkeypatch.setattr(deconv_cli.inversion, "invert", record)


def test_one_tile_is_the_untiled_invert(scene):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    expected = untiled(y, kernel, geometry, "wiener", RestoreOptions())
    result = tiled_invert(y, kernel, geometry, "wiener", RestoreOptions(), 128)
    np.testing.assert_array_equal(result.image, expected.image)
    assert result.params == expected.params


# Closed forms (reflect: DCT, wrap: FFT) reach ~1e-7 at the default margin (33 pixels);
# CG (nearest, unknown) stops at a relative normal-equation residual of 1e-6.
LINEAR_CASES = [
    ("reflect", "wiener", 1e-5),
    ("reflect", "tikhonov", 1e-5),
    ("wrap", "wiener", 1e-5),
    ("wrap", "tikhonov", 1e-4),
    ("nearest", "wiener", 1e-3),
    ("unknown", "wiener", 1e-3),
]


@pytest.mark.parametrize(
    "boundary,method,tolerance", LINEAR_CASES, ids=[f"{b}-{m}" for b, m, _ in LINEAR_CASES]
)
def test_tiled_linear_inverse_matches_untiled(scene, boundary, method, tolerance):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, unknown = blur(scene, boundary)
    options = RestoreOptions(nsr=0.01, reg=0.01)
    expected = untiled(y, kernel, geometry, method, options, unknown).image
    result = tiled_invert(y, kernel, geometry, method, options, 32, unknown_boundary=unknown)
    assert result.params["tiles"] == "16 of 32x32, margin 33"
    assert np.abs(result.image - expected).max() <= tolerance


def test_the_error_falls_with_the_margin(scene):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    options = RestoreOptions(nsr=0.01)
    expected = untiled(y, kernel, geometry, "wiener", options).image
    errors = [
        np.abs(
            tiled_invert(y, kernel, geometry, "wiener", options, 32, margin=m).image - expected
        ).max()
        for m in (0, 11, 22, 33)
    ]
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 1e-2 and errors[-1] < 1e-6


def test_wrap_window_round_the_whole_period_is_exact(scene):
    # 64 + 2 * 40 >= 128: each window is the whole (unrolled) period, for every method
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "wrap")
    options = RestoreOptions(lam=1e-3, iterations=10, tol=0)
    expected = untiled(y, kernel, geometry, "tv", options).image
    result = tiled_invert(y, kernel, geometry, "tv", options, 64, margin=40)
    np.testing.assert_allclose(result.image, expected, rtol=0, atol=1e-12)


def test_automatic_parameter_is_chosen_once_and_given_to_every_tile(scene, monkeypatch):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    expected = untiled(y, kernel, geometry, "wiener", RestoreOptions())
    recorder = Recorder(monkeypatch)
    result = tiled_invert(y, kernel, geometry, "wiener", RestoreOptions(), 32)
    (_, pilot_options, pilot), *tiles = recorder.calls
    assert pilot_options.nsr is None and len(tiles) == 16
    assert {options.nsr for _, options, _ in tiles} == {pilot.params["nsr"]}
    # a 128x128 image is its own parameter crop: the untiled choice
    assert result.params["nsr"] == expected.params["nsr"]
    assert result.params["tile_parameters"] == "chosen on the central 128x128 window"


def test_richardson_lucy_runs_the_pilots_discrepancy_count_on_every_tile(scene, monkeypatch):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    recorder = Recorder(monkeypatch)
    result = tiled_invert(y, kernel, geometry, "richardson-lucy", RestoreOptions(), 64)
    (_, _, pilot), *tiles = recorder.calls
    assert "discrepancy_iteration" in pilot.params
    assert all(o.tol == 0 and o.iterations == pilot.iterations for _, o, _ in tiles)
    assert result.iterations == pilot.iterations


def test_auto_picks_its_method_once(scene, monkeypatch):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    recorder = Recorder(monkeypatch)
    result = tiled_invert(y, kernel, geometry, "auto", RestoreOptions(iterations=5), 64)
    (method, _, pilot), *tiles = recorder.calls
    assert method == "auto" and pilot.method == result.method == "tv"
    assert {m for m, _, _ in tiles} == {"tv"}
    assert {o.lam for _, o, _ in tiles} == {pilot.params["lam"]}


@pytest.mark.parametrize(
    "flags",
    [{"mode": "full"}, {"stride": 2}, {"padding": 1}],
    ids=["full", "stride", "padding"],
)
def test_tiled_invert_refuses_other_geometries(flags):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    geometry = Geometry.create(**flags)
    with pytest.raises(GeometryError, match="--tile: a tiled invert needs --mode same, stride 1"):
        tiled_invert(np.ones((20, 20)), np.ones((3, 3)), geometry, "wiener", RestoreOptions(), 8)


def test_tile_margin_must_be_non_negative():
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    with pytest.raises(DeconvError, match=r"^margin: `-1` must be a whole number"):
        tiled_invert(
            np.ones((20, 20)), np.ones((3, 3)), Geometry(), "wiener", RestoreOptions(), 8, margin=-1
        )


def test_tiled_invert_between_memory_mapped_files(scene, tmp_path):
    from deconv_cli.npyfile import map_npy, write_npy_mapped
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    mapped = map_npy(tmp_path / "y.npy")
    options = RestoreOptions(nsr=0.01)
    expected = tiled_invert(y.astype(np.float32), kernel, geometry, "wiener", options, 48).image

    def fill(allocate):
        out = allocate(mapped.shape, mapped.dtype)
        tiled_invert(mapped, kernel, geometry, "wiener", options, 48, out=out)

    write_npy_mapped(tmp_path / "x.npy", fill)
    written = np.load(tmp_path / "x.npy")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, expected)


# -- io: memory maps ----------------------------------------------------------------------


def test_map_npy_maps_floats_and_defers_the_rest(tmp_path):
    from deconv_cli.npyfile import map_npy

    np.save(tmp_path / "f.npy", np.ones((4, 5, 2)))
    np.save(tmp_path / "u.npy", np.ones((4, 5), dtype=np.uint8))
    mapped = map_npy(tmp_path / "f.npy")
    assert isinstance(mapped, np.memmap) and mapped.shape == (4, 5, 2)
    assert map_npy(tmp_path / "u.npy") is None


def test_map_npy_refuses_nan_and_pickles(tmp_path):
    from deconv_cli.errors import InputError
    from deconv_cli.npyfile import map_npy

    bad = np.zeros((6, 4))
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="has 1 NaN/Inf pixels"):
        map_npy(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never loaded"):
        map_npy(tmp_path / "obj.npy")


def test_write_npy_mapped_is_atomic(tmp_path):
    from deconv_cli.errors import OutputError
    from deconv_cli.npyfile import write_npy_mapped

    target = tmp_path / "out.npy"

    def fail(allocate):
        allocate((3, 3), np.float64)[:] = 1
        raise RuntimeError("disk on fire")

    with pytest.raises(OutputError, match="disk on fire"):
        write_npy_mapped(target, fail)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="nothing was computed"):
        write_npy_mapped(target, lambda allocate: None)
    assert list(tmp_path.iterdir()) == []
    write_npy_mapped(target, lambda allocate: allocate((3, 3), np.float64).fill(2.0))
    np.testing.assert_array_equal(np.load(target), np.full((3, 3), 2.0))
    with pytest.raises(OutputError, match="exists; use --overwrite"):
        write_npy_mapped(target, lambda allocate: allocate((3, 3), np.float64))


# -- the processing transforms ------------------------------------------------------------


def _image(data):
    from pathlib import Path

    from deconv_cli.io import Image

    return Image(data=data, alpha=None, source_dtype=np.dtype(np.float64), path=Path("in.npy"))


def test_transforms_with_tile(scene):
    from deconv_cli.kernels import load_kernel
    from deconv_cli.process import Convolve, Invert, Transpose
    from deconv_cli.restore import RestoreOptions

    kernel = load_kernel("gaussian:sigma=1.5")
    geometry = Geometry.create(boundary="wrap", stride=2)
    op = ConvOperator(kernel.array, scene.shape, geometry)
    blurred = Convolve(kernel, geometry, tile=20)(_image(scene), scene)
    assert blurred.details["tiles"] == "20x20 (exact)"
    assert relative_gap(blurred.data, op.forward(scene)) <= 1e-12
    back = Transpose(kernel, geometry, output_shape=(128, 128), tile=20)
    back = back(_image(blurred.data), blurred.data)
    assert relative_gap(back.data, op.adjoint(blurred.data)) <= 1e-12
    y, array, same, _ = blur(scene, "reflect")
    invert = Invert(kernel, same, "wiener", RestoreOptions(nsr=0.01), tile=32, tile_margin=11)
    outcome = invert(_image(y), y)
    assert "16 of 32x32, margin 11" in outcome.details["parameters"]


def test_invert_tile_flag_errors(scene):
    from deconv_cli.kernels import load_kernel
    from deconv_cli.process import Invert
    from deconv_cli.restore import RestoreOptions

    kernel, options = load_kernel("gaussian:sigma=1.5"), RestoreOptions()
    with pytest.raises(GeometryError, match="^tile_margin: .* give `tile` too"):
        Invert(kernel, Geometry(), "wiener", options, tile_margin=3)(_image(scene), scene)
    with pytest.raises(GeometryError, match="^tile: `reference` and `history`"):
        Invert(kernel, Geometry(), "wiener", options, reference=scene, tile=32)(
            _image(scene), scene
        )


# -- the commands with --tile ------------------------------------------------------------


def deconv(*args):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def no_whole_reads(monkeypatch):
    """Make reading a whole image fail: a job that still succeeds ran on memory maps."""
    import deconv_cli.process

    def refuse(*args, **kwargs):
        raise AssertionError("the whole image was read into memory")

    monkeypatch.setattr(deconv_cli.process, "read_volume", refuse)


@pytest.mark.parametrize("command", ["convolve", "transpose"])
def test_tiled_command_between_npy_files_is_memory_mapped_and_exact(
    tmp_path, command, no_whole_reads
):
    from scipy import ndimage

    from deconv_cli.kernels import load_kernel

    x = rng(10).random((70, 90))
    np.save(tmp_path / "x.npy", x)
    flags = ["-k", "disk:radius=3", "--boundary", "wrap", "--tile", "32"]
    result = deconv(command, tmp_path / "x.npy", *flags, "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert "memory-mapped" in result.output
    # a symmetric kernel: A = Aᵀ = scipy's periodic convolution
    expected = ndimage.convolve(x, load_kernel("disk:radius=3").array, mode="wrap")
    assert relative_gap(np.load(tmp_path / "y.npy"), expected) <= 1e-12


def test_tiled_invert_between_npy_files_equals_the_in_memory_tiles(scene, tmp_path, no_whole_reads):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    flags = ["-k", "gaussian:sigma=1.5", "-m", "wiener", "--nsr", "0.01", "--tile", "48"]
    result = deconv("invert", tmp_path / "y.npy", *flags, "-o", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    written = np.load(tmp_path / "x.npy")
    expected = tiled_invert(
        y.astype(np.float32), kernel, geometry, "wiener", RestoreOptions(nsr=0.01), 48
    )
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, expected.image)


def test_tiled_richardson_lucy_returns_zero_on_windows_without_light():
    """A dark region larger than a tile's window: RL would refuse that window's data (no
    positive value); its fixed point for y = 0 is 0, and the lit tiles are unaffected."""
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import tiled_invert

    y = np.zeros((64, 64))
    y[:, 40:] = rng(13).random((64, 24)) + 0.1
    options = RestoreOptions(iterations=5, tol=0)
    kernel = np.ones((3, 3)) / 9
    result = tiled_invert(y, kernel, Geometry(), "richardson-lucy", options, 16, margin=2)
    assert np.all(result.image[:, :16] == 0) and np.isfinite(result.image).all()
    lit = tiled_invert(y[:, 32:], kernel, Geometry(), "richardson-lucy", options, 16, margin=2)
    np.testing.assert_allclose(result.image[:, 48:], lit.image[:, 16:], rtol=1e-9)


def test_tiled_invert_reports_progress_per_tile(tmp_path):
    np.save(tmp_path / "y.npy", rng(12).random((64, 64)))
    flags = ["-k", "gaussian:sigma=1", "-m", "wiener", "--nsr", "0.01", "--tile", "16"]
    shown = deconv("invert", tmp_path / "y.npy", *flags, "-o", tmp_path / "x.npy")
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stderr.splitlines() if line.startswith("tile ")]
    # the first tile, then each tile that completes another tenth of the 16
    assert lines == [f"tile {k}/16" for k in (1, 2, 4, 5, 7, 8, 10, 12, 13, 15, 16)]
    quiet = deconv("invert", tmp_path / "y.npy", *flags, "-q", "-o", tmp_path / "q.npy")
    assert quiet.exit_code == 0 and quiet.output == ""


IN_MEMORY = {
    "uint8 input": ([], ".npy"),
    "float32 output": (["--dtype", "float32"], ".npy"),
    "tif output": (["--dtype", "float64"], ".tif"),
    "noise": (["--noise", "gaussian:sigma=0.1", "--seed", "3"], ".npy"),
}


@pytest.mark.parametrize("case", IN_MEMORY)
def test_tiled_jobs_that_need_the_whole_image_run_in_memory(tmp_path, case):
    """Integer data (scaled), another --dtype, another format, or noise drawn for the
    whole image: the job reads the image into memory and gives the untiled values."""
    import imageio.v3 as iio

    x = rng(11).random((40, 50))
    source = tmp_path / "x.npy"
    np.save(source, (x * 255).astype(np.uint8) if case == "uint8 input" else x)
    extra, suffix = IN_MEMORY[case]
    flags = ["-k", "gaussian:sigma=1", *extra, "-o"]
    untiled = deconv("convolve", source, *flags, tmp_path / f"untiled{suffix}")
    tiled = deconv("convolve", source, *flags, tmp_path / f"tiled{suffix}", "--tile", "16")
    assert untiled.exit_code == tiled.exit_code == 0, tiled.output
    assert "memory-mapped" not in tiled.output
    read = np.load if suffix == ".npy" else iio.imread
    a, b = read(tmp_path / f"tiled{suffix}"), read(tmp_path / f"untiled{suffix}")
    assert a.dtype == b.dtype
    assert relative_gap(a.astype(np.float64), b.astype(np.float64)) <= 1e-6


# -- memory -------------------------------------------------------------------------------


def test_available_bytes_reads_meminfo_and_the_cgroup_limit(tmp_path, monkeypatch):
    from deconv_cli import tiles

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4000 kB\nMemAvailable: 1000 kB\n")
    limit, usage, stat = (tmp_path / name for name in ("max", "current", "stat"))
    limit.write_text("500000\n")
    usage.write_text("100000\n")
    stat.write_text("anon 7\ninactive_file 50000\n")
    monkeypatch.setattr(tiles, "MEMINFO", meminfo)
    monkeypatch.setattr(tiles, "CGROUP_FILES", ((limit, usage, stat, "inactive_file"),))
    assert tiles.available_bytes() == 500000 - 100000 + 50000  # below 1000 kB
    limit.write_text("max\n")  # no limit: MemAvailable
    assert tiles.available_bytes() == 1000 * 1024


def test_estimate_grows_with_the_image_and_tiles_bound_it():
    from deconv_cli.tiles import FIXED_BYTES, estimate_bytes

    kernel, geometry = np.ones((13, 13)) / 169, Geometry()

    def estimate(n, **kwargs):
        return estimate_bytes("invert", (n, n), kernel, geometry, method="wiener", **kwargs)

    assert estimate(4096) - FIXED_BYTES == pytest.approx(4 * (estimate(2048) - FIXED_BYTES))
    tiled = [estimate(n, tile=512, mapped=True) for n in (4096, 8192)]
    assert tiled[0] == tiled[1] < estimate(2048)
    # unmapped, the tiled job holds the data, the result and the result's written copy
    assert estimate(8192, tile=512) - tiled[1] == 3 * 8192**2 * 8
    slow = estimate_bytes("invert", (1024, 1024), np.triu(kernel), geometry, method="wiener")
    assert slow > estimate(1024)  # CG (a kernel the DCT does not diagonalize)


@pytest.mark.parametrize(
    "command,method",
    [("convolve", None), ("transpose", None), ("invert", "wiener"), ("invert", "tv")],
    ids=["convolve", "transpose", "wiener", "tv"],
)
def test_estimate_bounds_the_traced_peak(command, method):
    # tracemalloc sees numpy's allocations: an independent measure of the peak
    import tracemalloc

    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.kernels import load_kernel
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiles import FIXED_BYTES, estimate_bytes

    kernel, geometry = load_kernel("gaussian:sigma=2").array, Geometry()
    y = rng(10).random((512, 512))
    op = ConvOperator(kernel, y.shape, geometry)
    problem = build_problem(kernel, y.shape, geometry)
    run = {
        "convolve": lambda: op.forward(y),
        "transpose": lambda: op.adjoint(y),
        "invert": lambda: invert(y, problem, method, RestoreOptions(iterations=3)),
    }[command]
    run()  # imports and caches outside the trace
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    scaled = estimate_bytes(command, y.shape, kernel, geometry, method=method) - FIXED_BYTES
    assert peak <= scaled <= 3 * peak


def test_check_memory_suggests_a_tile_that_fits(monkeypatch):
    from deconv_cli import tiles

    kernel, geometry = np.ones((13, 13)) / 169, Geometry()
    args = ("invert", (8192, 8192), kernel, geometry)
    need = tiles.estimate_bytes(*args, method="wiener")
    room = need * 4 // 5  # the data, the result and its copy (3 of 4.5 arrays) fit
    monkeypatch.setattr(tiles, "available_bytes", lambda: room)
    with pytest.raises(DeconvError) as caught:
        tiles.check_memory(*args, method="wiener")
    message = str(caught.value)
    assert message.startswith(
        f"invert --method wiener on a 8192x8192 float64 image needs about {need / 1e9:.1f} GB "
        f"of memory, {room / 1e9:.1f} GB is available; use --tile "
    )
    size = int(message.split("--tile ")[1].split()[0])
    assert tiles.estimate_bytes(*args, method="wiener", tile=size) <= room
    assert "\n" not in message
    monkeypatch.setattr(tiles, "available_bytes", lambda: need)
    assert tiles.check_memory(*args, method="wiener") == need
    monkeypatch.setattr(tiles, "available_bytes", lambda: None)  # unknown: no check
    assert tiles.check_memory(*args, method="wiener") == need


def test_check_memory_suggests_memory_maps_when_holding_the_image_cannot_fit():
    from deconv_cli.tiles import check_memory, estimate_bytes

    args = ("invert", (8192, 8192), np.ones((13, 13)) / 169, Geometry())
    image = 8192 * 8192 * 8
    mapped = estimate_bytes(*args, method="wiener", tile=1024, mapped=True)
    assert mapped < image  # the tiles' work is far below one image
    for tile in (None, 1024):
        with pytest.raises(DeconvError, match="with float .npy input and output") as caught:
            check_memory(*args, method="wiener", tile=tile, available=image)
        size = int(str(caught.value).split("use --tile ")[1].split()[0])
        assert estimate_bytes(*args, method="wiener", tile=size, mapped=True) <= image
    assert check_memory(*args, method="wiener", tile=1024, mapped=True, available=image) == mapped


def test_check_memory_without_a_way_out():
    from deconv_cli.tiles import check_memory

    kernel = np.ones((3, 3))
    strided = Geometry.create(stride=2)
    with pytest.raises(DeconvError, match="--tile works for invert only with --mode same"):
        check_memory("invert", (4096, 4096), kernel, strided, method="cgls", available=10**6)
    with pytest.raises(
        DeconvError, match=r"; even --tile 256 needs about .*: free memory or process a smaller"
    ):
        check_memory("convolve", (4096, 4096), kernel, Geometry(), available=10**6)


def test_the_memory_estimate_counts_the_address_space_limit(tmp_path):
    """Under `ulimit -v` the job is refused before the work with the estimate, not by a
    MemoryError part-way ("not enough memory", as before this limit was counted)."""
    import resource

    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((12, 12)))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "-m", "deconv_cli", "convolve", str(tmp_path / "tiny.npy")]
        + ["-k", "box:size=3", "--padding", "6000", "-o", str(tmp_path / "out.npy"), "-q"],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "needs about" in result.stderr and "GB is available" in result.stderr, result.stderr
    available = float(result.stderr.split("GB of memory, ")[1].split(" GB")[0])
    assert available <= 3.3  # the address-space room (3 GiB), not the free memory
    assert not (tmp_path / "out.npy").exists()
