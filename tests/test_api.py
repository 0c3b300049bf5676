"""The public Python API (``deconv_cli.api``): each function against the command line on the
same input (an independent path, through click) and against independent oracles (scipy,
skimage.metrics, dense matrices, the dot test); keyword-only signatures; errors that name
the parameter."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from oracles import dense
from scipy import ndimage, signal

import deconv_cli
import deconv_cli.api
import deconv_cli.operators
from deconv_cli import (
    ConvOperator,
    analyze,
    compare,
    convolve,
    invert,
    load_kernel,
    read_image,
    transpose,
    write_image,
)
from deconv_cli.cli import main
from deconv_cli.errors import DeconvError, OutputError

ROOT = Path(__file__).resolve().parents[1]
API_FUNCTIONS = [
    convolve,
    transpose,
    invert,
    analyze,
    compare,
    load_kernel,
    read_image,
    write_image,
]


def cli(*args) -> str:
    """Run ``deconv ARGS`` through click; return its standard output."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def cli_stderr(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result.stderr


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# --------------------------------------------------------------------------- the package


def test_every_public_name_is_exported_and_is_the_api_object():
    expected = {
        "convolve",
        "transpose",
        "invert",
        "analyze",
        "compare",
        "ConvOperator",
        "dottest",
        "load_kernel",
        "read_image",
        "write_image",
        "__version__",
    }
    assert set(deconv_cli.__all__) == expected
    for name in expected - {"__version__", "ConvOperator", "dottest"}:
        assert getattr(deconv_cli, name) is getattr(deconv_cli.api, name)
    assert deconv_cli.ConvOperator is deconv_cli.operators.ConvOperator
    assert deconv_cli.dottest is deconv_cli.operators.dottest


def test_invert_and_compare_are_the_functions_after_the_library_is_imported():
    """A submodule named like a public function would replace it in the package on import."""
    code = (
        "import deconv_cli.process, deconv_cli.comparison, deconv_cli.cli;"
        "from deconv_cli import invert, compare;"
        "print(callable(invert), callable(compare), invert.__module__, compare.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "deconv_cli.api", "deconv_cli.api"]


def test_importing_the_package_imports_nothing_heavy():
    code = (
        "import sys, deconv_cli;"
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'scipy', 'deconv_cli.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="frobnicate"):
        deconv_cli.frobnicate  # noqa: B018


@pytest.mark.parametrize("function", API_FUNCTIONS, ids=lambda f: f.__name__)
def test_everything_after_the_data_is_keyword_only(function):
    positional = {"analyze": 1, "load_kernel": 1, "read_image": 1}.get(function.__name__, 2)
    params = list(inspect.signature(function).parameters.values())
    kinds = [p.kind for p in params]
    keyword = inspect.Parameter.KEYWORD_ONLY
    assert kinds[:positional] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * positional
    assert kinds[positional:] == [keyword] * (len(params) - positional)
    assert len(params) > positional
    with pytest.raises(TypeError, match="positional argument"):
        function(*[None] * (positional + 1))


def test_the_geometry_keywords_are_named_like_the_flags():
    flags = ["mode", "boundary", "correlate", "stride", "dilation", "padding"]
    for function in (convolve, transpose, invert, analyze):
        assert set(flags) <= set(inspect.signature(function).parameters), function.__name__


# --------------------------------------------------------------------------- convolve


@pytest.mark.parametrize("boundary", ["constant", "reflect", "mirror", "nearest", "wrap"])
@pytest.mark.parametrize("correlate", [False, True], ids=["convolution", "correlation"])
def test_convolve_is_scipy_ndimage(rng, boundary, correlate):
    x = rng.random((17, 14, 3))
    k = rng.random((5, 3))
    y = convolve(x, k, boundary=boundary, correlate=correlate, stride=(2, 3))
    filt = ndimage.correlate if correlate else ndimage.convolve
    expected = np.stack([filt(x[..., c], k, mode=boundary) for c in range(3)], axis=-1)
    np.testing.assert_allclose(y, expected[::2, ::3], rtol=1e-12, atol=1e-14)


def test_convolve_full_and_valid_are_scipy_signal(rng):
    x, k = rng.random((20, 23)), rng.random((4, 7))
    np.testing.assert_allclose(
        convolve(x, k, mode="full", boundary="constant"), signal.convolve2d(x, k), rtol=1e-12
    )
    np.testing.assert_allclose(
        convolve(x, k, mode="valid", dilation=2),
        signal.convolve2d(x, np.kron(k, [[1, 0], [0, 0]])[:-1, :-1], mode="valid"),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "flags, keywords",
    [
        ([], {}),
        (["--boundary", "wrap", "--stride", "2"], {"boundary": "wrap", "stride": 2}),
        (
            ["--padding", "2", "--correlate", "--dilation", "2"],
            {"padding": 2, "correlate": True, "dilation": 2},
        ),
        (
            ["--noise", "gaussian:sigma=0.05+quantize:bits=6", "--seed", "4"],
            {"noise": "gaussian:sigma=0.05+quantize:bits=6", "seed": 4},
        ),
    ],
    ids=["default", "wrap-stride", "padding-dilation", "noise"],
)
def test_convolve_equals_the_cli(tmp_path, rng, flags, keywords):
    x = rng.random((24, 20))
    np.save(tmp_path / "x.npy", x)
    spec = "motion:length=7,angle=20"
    cli("convolve", tmp_path / "x.npy", "-k", spec, *flags, "-o", tmp_path / "y.npy", "-q")
    assert np.array_equal(convolve(x, spec, **keywords), np.load(tmp_path / "y.npy"))


def test_convolve_keeps_float32_and_maps_banks(rng):
    x = rng.random((10, 12, 2)).astype(np.float32)
    bank = rng.random((3, 2, 3, 3))
    y = convolve(x, bank, correlate=True, mode="valid")
    assert y.dtype == np.float32 and y.shape == (8, 10, 3)
    for out in range(3):
        expected = sum(
            signal.correlate2d(x[..., i].astype(np.float64), bank[out, i], mode="valid")
            for i in range(2)
        )
        np.testing.assert_allclose(y[..., out], expected, rtol=1e-5)


# --------------------------------------------------------------------------- transpose


@pytest.mark.parametrize(
    "keywords",
    [
        {},
        {"boundary": "wrap", "stride": 2},
        {"boundary": "mirror", "dilation": (2, 1), "correlate": True},
        {"padding": (1, 2), "boundary": "nearest", "stride": (3, 2)},
        {"mode": "full", "boundary": "constant"},
        {"mode": "valid", "stride": 2},
    ],
    ids=["default", "wrap-stride", "mirror-dilation", "padding-stride", "full", "valid-stride"],
)
def test_transpose_passes_the_dot_test(rng, keywords):
    x = rng.random((15, 13))
    k = rng.random((4, 3))
    ax = convolve(x, k, **keywords)
    y = rng.random(ax.shape)
    aty = transpose(y, k, output_shape=x.shape, **keywords)
    assert aty.shape == x.shape
    assert np.vdot(ax, y) == pytest.approx(np.vdot(x, aty), rel=1e-12)


def test_transpose_is_the_dense_matrix_transpose(rng):
    k = rng.random((3, 3))
    op = ConvOperator(k, (6, 5), deconv_cli.operators.Geometry.create(boundary="reflect"))
    y = rng.random((6, 5))
    np.testing.assert_allclose(transpose(y, k).ravel(), dense(op).T @ y.ravel(), rtol=1e-12)


def test_transpose_equals_the_cli(tmp_path, rng):
    y = rng.random((9, 11))
    np.save(tmp_path / "y.npy", y)
    flags = ["-k", "motion:length=5,angle=45", "--stride", "2", "--output-shape", "18x22"]
    cli("transpose", tmp_path / "y.npy", *flags, "-o", tmp_path / "x.npy", "-q")
    x = transpose(y, "motion:length=5,angle=45", stride=2, output_shape="18x22")
    assert np.array_equal(x, np.load(tmp_path / "x.npy"))


# --------------------------------------------------------------------------- invert


def test_invert_inverse_recovers_a_wrap_blur_exactly(rng):
    x = rng.random((32, 30))
    y = signal.fftconvolve(np.pad(x, 3, mode="wrap"), load_kernel("gaussian:sigma=1").array)
    y = y[6:-6, 6:-6]  # scipy's circular blur, not deconv's
    result = invert(y, "gaussian:sigma=1", boundary="wrap", method="inverse")
    assert result.method == "inverse"
    assert np.abs(result.image - x).max() < 1e-8


@pytest.mark.parametrize(
    "method, options, flags",
    [
        ("tikhonov", {}, []),
        ("wiener", {"nsr": 0.01}, ["--nsr", "0.01"]),
        ("richardson-lucy", {"iterations": 7, "tol": 0}, ["--iterations", "7", "--tol", "0"]),
        ("auto", {}, []),
    ],
)
def test_invert_equals_the_cli_and_reports_what_it_does(tmp_path, rng, method, options, flags):
    x = rng.random((28, 28))
    y = convolve(x, "disk:radius=2", noise="gaussian:sigma=0.01", seed=1)
    np.save(tmp_path / "y.npy", y)
    stderr = cli_stderr(
        "invert", tmp_path / "y.npy", "-k", "disk:radius=2", "-m", method, *flags,
        "-o", tmp_path / "x.npy",
    )  # fmt: skip
    result = invert(y, "disk:radius=2", method=method, **options)
    assert np.array_equal(result.image, np.load(tmp_path / "x.npy"))
    summary = " ".join(stderr.split())
    assert result.method in summary
    for name, value in result.params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        assert f"{name}={shown}" in summary
    for note in result.notes:
        assert " ".join(note.split()) in summary
    if method == "auto":
        assert result.notes, "auto says why it chose"
    if method == "richardson-lucy":
        assert result.iterations == 7


def test_invert_reads_what_an_image_file_knows(tmp_path, rng):
    """An Image read from a JPEG brings its quantization tables, as on the command line."""
    x = ndimage.gaussian_filter(rng.random((40, 40)), 2)
    y = convolve(x, "gaussian:sigma=1", noise="jpeg:quality=60", seed=0)
    write_image(tmp_path / "y.png", y, dtype="uint8")  # same pixels, no JPEG tables
    from PIL import Image as Pillow

    Pillow.fromarray(np.rint(y * 255).astype(np.uint8)).save(tmp_path / "y.jpg", quality=60)
    cli("invert", tmp_path / "y.jpg", "-k", "gaussian:sigma=1", "-o", tmp_path / "x.npy", "-q")
    result = invert(read_image(tmp_path / "y.jpg"), "gaussian:sigma=1")
    assert np.array_equal(result.image, np.load(tmp_path / "x.npy"))


def test_invert_unknown_boundary_equals_the_cli(tmp_path, rng):
    scene = rng.random((40, 40))
    y = convolve(scene, "box:size=3", mode="valid")
    np.save(tmp_path / "y.npy", y)
    cli(
        "invert", tmp_path / "y.npy", "-k", "box:size=3", "--boundary", "unknown", "-m", "cgls",
        "--iterations", "20", "-o", tmp_path / "x.npy", "-q",
    )  # fmt: skip
    result = invert(y, "box:size=3", boundary="unknown", method="cgls", iterations=20)
    assert result.image.shape == y.shape
    assert np.array_equal(result.image, np.load(tmp_path / "x.npy"))


def test_invert_calls_back_each_iteration_with_the_reference_metrics(rng):
    from skimage.metrics import peak_signal_noise_ratio

    x = rng.random((24, 24))
    y = convolve(x, "gaussian:sigma=1")
    records = []
    result = invert(
        y,
        "gaussian:sigma=1",
        method="richardson-lucy",
        iterations=5,
        tol=0,
        reference=x,
        callback=records.append,
    )
    assert [r.iteration for r in records] == [1, 2, 3, 4, 5] == list(range(1, 6))
    assert records[-1].psnr == pytest.approx(
        peak_signal_noise_ratio(x, result.image, data_range=1), rel=1e-9
    )


def test_invert_clip_limits_the_result(rng):
    y = convolve(rng.random((20, 20)), "gaussian:sigma=1.5", noise="gaussian:sigma=0.05", seed=2)
    free = invert(y, "gaussian:sigma=1.5", method="wiener", nsr=1e-4)
    clipped = invert(y, "gaussian:sigma=1.5", method="wiener", nsr=1e-4, clip=True)
    assert free.image.min() < 0 or free.image.max() > 1
    np.testing.assert_array_equal(clipped.image, np.clip(free.image, 0, 1))


# --------------------------------------------------------------------------- analyze


def test_analyze_equals_the_cli_json():
    flags = ["-k", "motion:length=5", "--shape", "12x10", "--noise-sigma", "0.01"]
    expected = json.loads(cli("analyze", *flags, "--boundary", "mirror", "--format", "json"))
    found = analyze("motion:length=5", shape=(12, 10), boundary="mirror", noise_sigma=0.01)
    assert json.loads(json.dumps(found.as_dict())) == expected


@pytest.mark.parametrize(
    "keywords",
    [{"boundary": "reflect"}, {"mode": "valid"}, {"boundary": "wrap", "stride": 2}],
    ids=["reflect", "valid", "wrap-stride"],
)
def test_analyze_is_the_dense_svd(rng, keywords):
    k = rng.random((3, 4))
    found = analyze(k, shape=(9, 8), **keywords)
    op = ConvOperator(k, (9, 8), deconv_cli.operators.Geometry.create(**keywords))
    s = np.linalg.svd(dense(op), compute_uv=False)
    rank = int(np.sum(s > max(dense(op).shape) * np.finfo(float).eps * s[0]))
    assert found.rank == rank and found.nullity == 72 - rank
    assert found.sigma_max == pytest.approx(s[0], rel=1e-9)
    assert found.sigma_min == pytest.approx(s[rank - 1], rel=1e-6)


# --------------------------------------------------------------------------- compare


def test_compare_is_skimage_metrics(rng):
    from skimage import metrics as sk

    ref = rng.random((20, 18, 3))
    cand = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1)
    found = compare(ref, cand)
    assert found["psnr"] == pytest.approx(sk.peak_signal_noise_ratio(ref, cand, data_range=1))
    assert found["ssim"] == pytest.approx(
        sk.structural_similarity(ref, cand, data_range=1, channel_axis=-1)
    )
    assert found["mse"] == pytest.approx(sk.mean_squared_error(ref, cand))
    assert found["nrmse"] == pytest.approx(sk.normalized_root_mse(ref, cand))
    assert found["max_error"] == pytest.approx(np.abs(ref - cand).max())


def test_compare_equals_the_cli_json(tmp_path, rng):
    ref = rng.random((16, 16)) * 255
    cand = ref + rng.normal(0, 2, ref.shape)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "cand.npy", cand)
    out = cli(
        "compare", tmp_path / "ref.npy", tmp_path / "cand.npy", "--data-range", "255",
        "--ignore-border", "2", "--format", "json", "-q",
    )  # fmt: skip
    row = json.loads(out)[0]
    found = compare(ref, cand, data_range=255, ignore_border=2)
    assert found == {name: row[name] for name in found}
    assert list(found) == ["mse", "rmse", "nrmse", "psnr", "ssim", "mae", "max_error"]


def test_compare_of_images_read_from_files_uses_their_scale(tmp_path, rng):
    ref = rng.random((12, 12))
    write_image(tmp_path / "a.png", ref, dtype="uint16")
    write_image(tmp_path / "b.png", ref, dtype="uint8")
    found = compare(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))
    a = np.rint(ref * 65535) / 65535
    b = np.rint(ref * 255) / 255
    assert found["max_error"] == pytest.approx(np.abs(a - b).max())


# --------------------------------------------------------------------------- kernels, files


def test_load_kernel_equals_kernels_show_save(tmp_path):
    cli("kernels", "show", "motion:length=9,angle=30", "--save", tmp_path / "k.npy")
    kernel = load_kernel("motion:length=9,angle=30")
    assert np.array_equal(kernel.array, np.load(tmp_path / "k.npy"))
    assert load_kernel(tmp_path / "k.npy").description.startswith("file")
    assert np.array_equal(load_kernel(tmp_path / "k.npy").array, kernel.array)


def test_load_kernel_takes_arrays_as_kernel_files_are_read():
    assert load_kernel(np.array([1, 2, 1]), normalize=True).array.tolist() == [[0.25, 0.5, 0.25]]
    assert load_kernel(np.ones((2, 1, 3, 3))).is_bank


def test_write_image_is_atomic_and_never_overwrites_by_default(tmp_path, rng):
    path = tmp_path / "x.tif"
    first = rng.random((6, 7)).astype(np.float32)
    assert write_image(path, first).dtype == np.float32
    before = path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        write_image(path, first + 1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]  # no temporary left
    write_image(path, first + 1, overwrite=True)
    np.testing.assert_array_equal(read_image(path).data, first + 1)


def test_an_image_round_trips_with_its_type_and_alpha(tmp_path, rng):
    rgba = (rng.random((5, 6, 4)) * 255).astype(np.uint8)
    from PIL import Image as Pillow

    Pillow.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    image = read_image(tmp_path / "in.png")
    assert image.alpha is not None and image.data.shape == (5, 6, 3)
    written = write_image(tmp_path / "out.png", image)
    assert written.dtype == np.uint8
    assert np.array_equal(np.asarray(Pillow.open(tmp_path / "out.png")), rgba)


# --------------------------------------------------------------------------- errors


def _names(message: str, parameter: str) -> bool:
    """The message names ``parameter``, as a word or as its flag (``noise_sigma`` or
    ``--noise-sigma``)."""
    pattern = parameter.replace("_", "[-_]")
    return re.search(rf"(?<![\w-])(--)?{pattern}(?![\w-])", message) is not None


X = np.full((16, 16), 0.5)

BAD_CALLS = {
    "mode": lambda: convolve(X, "box:size=3", mode="sideways"),
    "boundary": lambda: convolve(X, "box:size=3", boundary="unknown"),
    "stride": lambda: convolve(X, "box:size=3", stride=0),
    "dilation": lambda: transpose(X, "box:size=3", dilation="two"),
    "padding": lambda: convolve(X, "box:size=3", padding=1, mode="same"),
    "noise": lambda: convolve(X, "box:size=3", noise="salt:amount=1"),
    "seed": lambda: convolve(X, "box:size=3", noise="gaussian:sigma=0.1", seed=-1),
    "image": lambda: convolve((X * 255).astype(np.uint8), "box:size=3"),
    "data": lambda: invert(np.where(X > 0, np.nan, X), "box:size=3"),
    "output_shape": lambda: transpose(X, "box:size=3", stride=2, output_shape="big"),
    "method": lambda: invert(X, "box:size=3", method="magic"),
    "lam": lambda: invert(X, "box:size=3", method="tikhonov", lam=1.0),
    "reg": lambda: invert(X, "box:size=3", method="tikhonov", reg=-1.0),
    "iterations": lambda: invert(X, "box:size=3", method="cgls", iterations=0),
    "tol": lambda: invert(X, "box:size=3", method="cgls", tol=float("nan")),
    "noise_sigma": lambda: invert(X, "box:size=3", noise_sigma=1e9),
    "shape": lambda: analyze("box:size=3", shape=(0, 4)),
    "bits": lambda: analyze("box:size=3", shape=(8, 8), bits=40),
    "metrics": lambda: compare(X, X, metrics=["psnr", "beauty"]),
    "data_range": lambda: compare(X, X, data_range=0),
    "ignore_border": lambda: compare(X, X, ignore_border=-1),
    "spec": lambda: load_kernel(3.5),
    "kernel": lambda: convolve(X, np.full((3, 3), np.inf)),
}


@pytest.mark.parametrize("parameter", list(BAD_CALLS))
def test_a_bad_argument_raises_a_deconv_error_naming_it(parameter):
    with pytest.raises(DeconvError) as caught:
        BAD_CALLS[parameter]()
    message = str(caught.value)
    assert "\n" not in message
    assert _names(message, parameter), message


def test_no_function_modifies_its_inputs(rng):
    x = rng.random((12, 12)).astype(np.float32)
    k = rng.random((3, 3))
    saved = x.copy(), k.copy()
    y = convolve(x, k)
    transpose(y, k)
    invert(y, k, method="richardson-lucy", iterations=3, clip=True, reference=x)
    compare(x, np.clip(y, 0, 1))
    np.testing.assert_array_equal(x, saved[0])
    np.testing.assert_array_equal(k, saved[1])


def test_the_guide_examples_run():
    """docs/api.md, the API's guide, is a doctest: every example runs and prints what the
    page says."""
    import doctest

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    path = str(ROOT / "docs" / "api.md")
    result = doctest.testfile(path, module_relative=False, optionflags=flags, encoding="utf-8")
    assert result.failed == 0
    assert result.attempted >= 30
