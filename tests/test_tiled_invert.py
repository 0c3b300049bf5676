"""The tiled invert against the untiled one (tolerances, margins, parameters chosen once),
and the processing transforms and commands with --tile."""

from __future__ import annotations

import numpy as np
import pytest

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import ConvOperator, Geometry


def rng(seed=0):
    return np.random.default_rng(seed)


def relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


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
    from deconv_cli.tiled_invert import tiled_invert

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
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel, geometry, unknown = blur(scene, boundary)
    options = RestoreOptions(nsr=0.01, reg=0.01)
    expected = untiled(y, kernel, geometry, method, options, unknown).image
    result = tiled_invert(y, kernel, geometry, method, options, 32, unknown_boundary=unknown)
    assert result.params["tiles"] == "16 of 32x32, margin 33"
    assert np.abs(result.image - expected).max() <= tolerance


def test_the_error_falls_with_the_margin(scene):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiled_invert import tiled_invert

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
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel, geometry, _ = blur(scene, "wrap")
    options = RestoreOptions(lam=1e-3, iterations=10, tol=0)
    expected = untiled(y, kernel, geometry, "tv", options).image
    result = tiled_invert(y, kernel, geometry, "tv", options, 64, margin=40)
    np.testing.assert_allclose(result.image, expected, rtol=0, atol=1e-12)


def test_automatic_parameter_is_chosen_once_and_given_to_every_tile(scene, monkeypatch):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiled_invert import tiled_invert

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
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    recorder = Recorder(monkeypatch)
    result = tiled_invert(y, kernel, geometry, "richardson-lucy", RestoreOptions(), 64)
    (_, _, pilot), *tiles = recorder.calls
    assert "discrepancy_iteration" in pilot.params
    assert all(o.tol == 0 and o.iterations == pilot.iterations for _, o, _ in tiles)
    assert result.iterations == pilot.iterations


def test_auto_picks_its_method_once(scene, monkeypatch):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiled_invert import tiled_invert

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
    from deconv_cli.tiled_invert import tiled_invert

    geometry = Geometry.create(**flags)
    with pytest.raises(GeometryError, match="tile: a tiled invert needs `mode=same`, stride 1"):
        tiled_invert(np.ones((20, 20)), np.ones((3, 3)), geometry, "wiener", RestoreOptions(), 8)


def test_tile_margin_must_be_non_negative():
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiled_invert import tiled_invert

    with pytest.raises(DeconvError, match=r"^margin: `-1` must be a whole number"):
        tiled_invert(
            np.ones((20, 20)), np.ones((3, 3)), Geometry(), "wiener", RestoreOptions(), 8, margin=-1
        )


def test_tiled_invert_streams_between_files(scene, tmp_path):
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.stackfile import open_stack, write_stack
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel, geometry, _ = blur(scene, "reflect")
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    stream = open_stack(tmp_path / "y.npy").data
    options = RestoreOptions(nsr=0.01)
    expected = tiled_invert(y.astype(np.float32), kernel, geometry, "wiener", options, 48).image

    def fill(allocate):
        out = allocate(stream.shape, stream.dtype)
        tiled_invert(stream, kernel, geometry, "wiener", options, 48, out=out)

    write_stack(tmp_path / "x.npy", fill, axes="YX")
    written = np.load(tmp_path / "x.npy")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, expected)


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
    from deconv_cli.tiled_invert import tiled_invert

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
    from deconv_cli.tiled_invert import tiled_invert

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


TILED_JOBS = {  # flags, output suffix, streamed between the files
    "uint8 input": ([], ".npy", True),
    "float32 output": (["--dtype", "float32"], ".npy", True),
    "uint8 output": (["--dtype", "uint8"], ".npy", True),
    "2-D tif output": (["--dtype", "float64"], ".tif", False),
    "noise": (["--noise", "gaussian:sigma=0.1", "--seed", "3"], ".npy", False),
}


@pytest.mark.parametrize("case", TILED_JOBS)
def test_tiled_jobs_stream_or_run_in_memory_with_the_untiled_values(tmp_path, case):
    """Integer data (scaled box by box), another --dtype (encoded box by box) stream
    between the files; a 2-D image format, or noise drawn for the whole image, read the
    image into memory. Either way the values are the untiled ones."""
    import imageio.v3 as iio

    x = rng(11).random((40, 50))
    source = tmp_path / "x.npy"
    np.save(source, (x * 255).astype(np.uint8) if case == "uint8 input" else x)
    extra, suffix, streamed = TILED_JOBS[case]
    flags = ["-k", "gaussian:sigma=1", *extra, "-o"]
    untiled = deconv("convolve", source, *flags, tmp_path / f"untiled{suffix}")
    tiled = deconv("convolve", source, *flags, tmp_path / f"tiled{suffix}", "--tile", "16")
    assert untiled.exit_code == tiled.exit_code == 0, tiled.output
    assert ("memory-mapped" in tiled.output) == streamed
    read = np.load if suffix == ".npy" else iio.imread
    a, b = read(tmp_path / f"tiled{suffix}"), read(tmp_path / f"untiled{suffix}")
    assert a.dtype == b.dtype
    assert relative_gap(a.astype(np.float64), b.astype(np.float64)) <= 1e-6


# -- 3-D ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack():
    from scipy import ndimage

    from deconv_cli.kernels import load_kernel

    r = rng(20)
    x = ndimage.gaussian_filter(r.random((20, 72, 72)), 2)
    x = (x - x.min()) / np.ptp(x)
    kernel = load_kernel("gaussian:sigma=1,sigma_z=1.2", volume=True).array  # 9x7x7
    op = ConvOperator(kernel, x.shape, Geometry(), spatial=3)
    y = np.clip(op.forward(x) + 0.001 * r.standard_normal(x.shape), 0, None)
    return y, kernel


def rms_gap(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


@pytest.mark.parametrize(
    "method,options,tolerance",
    [("wiener", {"nsr": 1e-3}, 1e-6), ("richardson-lucy", {"iterations": 5, "tol": 0}, 5e-4)],
    ids=["wiener", "richardson-lucy"],
)
def test_tiled_3d_invert_within_its_tolerance(stack, method, options, tolerance):
    # measured: wiener 1.5e-7, richardson-lucy (5 it) 1.2e-4 relative RMS of the untiled
    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.restore import RestoreOptions
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel = stack
    opts = RestoreOptions(**options)
    whole = invert(y, build_problem(kernel, y.shape, Geometry(), spatial=3), method, opts).image
    tiled = tiled_invert(y, kernel, Geometry(), method, opts, (10, 24, 24), spatial=3)
    assert tiled.params["tiles"] == "18 of 10x24x24, margin 27x21x21"
    assert rms_gap(tiled.image, whole) <= tolerance
    if method == "wiener":  # a thin margin leaves the cut sides' error in
        thin = tiled_invert(y, kernel, Geometry(), method, opts, (10, 24, 24), margin=4, spatial=3)
        assert rms_gap(thin.image, whole) > 100 * rms_gap(tiled.image, whole)


def test_cli_tiled_3d_convolve_between_memory_maps_equals_untiled(tmp_path):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    np.save(tmp_path / "v.npy", rng(21).random((12, 30, 26)))
    base = ["convolve", str(tmp_path / "v.npy"), "--axes", "ZYX"]
    base += ["-k", "gaussian:sigma=1.2,sigma_z=2", "--boundary", "wrap"]
    runner = CliRunner()
    assert runner.invoke(main, [*base, "-o", str(tmp_path / "a.npy"), "-q"]).exit_code == 0
    tiled = runner.invoke(main, [*base, "-o", str(tmp_path / "b.npy"), "--tile", "5x16x10"])
    assert tiled.exit_code == 0, tiled.output
    assert "tiles: 5x16x10 (exact, memory-mapped)" in tiled.stderr
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert relative_gap(b, a) <= 1e-12
