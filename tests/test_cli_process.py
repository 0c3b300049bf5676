"""`deconv convolve` and `deconv transpose` through the CLI, against scipy and dot tests."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner
from scipy import ndimage, signal

from deconv_cli.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((20, 17)))
    return path


def gauss(sigma: float, size: int) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return np.outer(g, g) / np.outer(g, g).sum()


@pytest.mark.parametrize("boundary", ["constant", "reflect", "mirror", "nearest", "wrap"])
def test_convolve_same_mode_equals_ndimage(image, tmp_path, boundary):
    out = tmp_path / "y.npy"
    result = run(
        "convolve",
        image,
        "-k",
        "gaussian:sigma=1.5,size=7",
        "--boundary",
        boundary,
        "-o",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    expected = ndimage.convolve(np.load(image), gauss(1.5, 7), mode=boundary)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-12)


def test_convolve_full_mode_with_kernel_file_equals_convolve2d(image, tmp_path):
    kernel = np.random.default_rng(1).random((3, 4))
    np.save(tmp_path / "k.npy", kernel)
    out = tmp_path / "y.npy"
    result = run(
        "convolve",
        image,
        "-k",
        tmp_path / "k.npy",
        "--mode",
        "full",
        "--boundary",
        "zero",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), signal.convolve2d(np.load(image), kernel), atol=1e-12)


def test_convolve_then_transpose_is_the_adjoint(image, tmp_path):
    flags = [
        "-k",
        "motion:length=5,angle=30",
        "--stride",
        "2",
        "--dilation",
        "2",
        "--boundary",
        "mirror",
    ]
    y = tmp_path / "y.npy"
    assert run("convolve", image, *flags, "-o", y, "-q").exit_code == 0
    r = np.random.default_rng(2)
    v = r.standard_normal(np.load(y).shape)
    np.save(tmp_path / "v.npy", v)
    assert (
        run(
            "transpose",
            tmp_path / "v.npy",
            *flags,
            "--output-shape",
            "20x17",
            "-o",
            tmp_path / "atv.npy",
            "-q",
        ).exit_code
        == 0
    )
    x = np.load(image)
    lhs = np.vdot(np.load(y), v)
    rhs = np.vdot(x, np.load(tmp_path / "atv.npy"))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_transpose_summary_says_shape_not_values(image, tmp_path):
    result = CliRunner().invoke(
        main, ["transpose", str(image), "-k", "box:size=3", "-o", str(tmp_path / "t.npy")]
    )
    assert result.exit_code == 0
    assert "restores the shape, not (in general) the values" in " ".join(result.output.split())


def test_haar_bank_conv_layer_and_its_transpose(tmp_path):
    x = np.random.default_rng(3).random((16, 12))
    np.save(tmp_path / "x.npy", x)
    flags = [
        "-k",
        SAMPLES / "haar_bank.npy",
        "--correlate",
        "--stride",
        "2",
        "--boundary",
        "constant",
        "--mode",
        "valid",
    ]
    assert (
        run("convolve", tmp_path / "x.npy", *flags, "-o", tmp_path / "c.npy", "-q").exit_code == 0
    )
    coeffs = np.load(tmp_path / "c.npy")
    assert coeffs.shape == (8, 6, 4)
    assert coeffs[0, 0, 0] == pytest.approx(x[:2, :2].sum() / 2)
    assert (
        run("transpose", tmp_path / "c.npy", *flags, "-o", tmp_path / "back.npy", "-q").exit_code
        == 0
    )
    # an orthogonal transform: the transpose is the inverse
    np.testing.assert_allclose(np.load(tmp_path / "back.npy"), x, atol=1e-12)


def test_a_one_channel_bank_takes_hxwx1_both_ways(tmp_path):
    """Regression: a (1, 1, kh, kw) bank's transpose refused the H×W×1 data its convolve
    accepts; both drop the channel axis of size one, and transpose is the adjoint."""
    rng = np.random.default_rng(8)
    bank = rng.random((1, 1, 3, 4))
    np.save(tmp_path / "bank.npy", bank)
    x, y = rng.random((12, 10, 1)), rng.random((12, 10, 1))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for command, source in (("convolve", "x.npy"), ("transpose", "y.npy")):
        done = run(
            command,
            tmp_path / source,
            "-k",
            tmp_path / "bank.npy",
            "--boundary",
            "constant",
            "-o",
            tmp_path / f"{command}.npy",
            "-q",
        )
        assert done.exit_code == 0, done.output
    ax, aty = np.load(tmp_path / "convolve.npy"), np.load(tmp_path / "transpose.npy")
    assert ax.shape == aty.shape == (12, 10)
    expected = ndimage.convolve(x[..., 0], bank[0, 0], mode="constant")
    np.testing.assert_allclose(ax, expected, atol=1e-12)
    np.testing.assert_allclose(np.vdot(ax, y[..., 0]), np.vdot(x[..., 0], aty), rtol=1e-12)


def test_png_in_png_out_keeps_uint8_and_npy_keeps_floats(tmp_path):
    source = tmp_path / "cam.png"
    shutil.copy(SAMPLES / "camera.png", source)
    assert (
        run("convolve", source, "-k", "box:size=3", "-o", tmp_path / "b.png", "-q").exit_code == 0
    )
    assert iio.imread(tmp_path / "b.png").dtype == np.uint8
    assert (
        run("convolve", source, "-k", "box:size=3", "-o", tmp_path / "b.npy", "-q").exit_code == 0
    )
    blurred = np.load(tmp_path / "b.npy")
    assert blurred.dtype == np.float64
    expected = ndimage.convolve(iio.imread(source) / 255.0, np.ones((3, 3)) / 9, mode="reflect")
    np.testing.assert_allclose(blurred, expected, atol=1e-12)
    np.testing.assert_array_equal(
        iio.imread(tmp_path / "b.png"), np.round(expected * 255).astype(np.uint8)
    )


def test_rgba_alpha_is_carried_through_unfiltered(tmp_path):
    r = np.random.default_rng(4)
    rgba = (r.random((12, 10, 4)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", rgba)
    assert (
        run(
            "convolve", tmp_path / "a.png", "-k", "box:size=3", "-o", tmp_path / "b.png", "-q"
        ).exit_code
        == 0
    )
    out = iio.imread(tmp_path / "b.png")
    assert out.shape == (12, 10, 4)
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])


def test_float32_input_stays_float32(tmp_path):
    x = np.random.default_rng(5).random((32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert (
        run(
            "convolve", tmp_path / "x.npy", "-k", "gaussian:sigma=2", "-o", tmp_path / "y.npy", "-q"
        ).exit_code
        == 0
    )
    assert np.load(tmp_path / "y.npy").dtype == np.float32
    assert (
        run(
            "convolve",
            tmp_path / "x.npy",
            "-k",
            "gaussian:sigma=2",
            "--dtype",
            "float64",
            "-o",
            tmp_path / "y64.npy",
            "-q",
        ).exit_code
        == 0
    )
    assert np.load(tmp_path / "y64.npy").dtype == np.float64


def test_noise_is_seeded_and_reproducible(image, tmp_path):
    args = ["convolve", image, "-k", "box:size=3", "--noise", "gaussian:sigma=0.1", "--seed", "7"]
    assert run(*args, "-o", tmp_path / "a.npy", "-q").exit_code == 0
    assert run(*args, "-o", tmp_path / "b.npy", "-q").exit_code == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)
    clean = ndimage.convolve(np.load(image), np.ones((3, 3)) / 9, mode="reflect")
    assert np.std(a - clean) == pytest.approx(0.1, rel=0.2)


def test_poisson_noise(image, tmp_path):
    assert (
        run(
            "convolve",
            image,
            "-k",
            "box:size=3",
            "--noise",
            "poisson:peak=100",
            "--seed",
            "1",
            "-o",
            tmp_path / "p.npy",
            "-q",
        ).exit_code
        == 0
    )
    counts = np.load(tmp_path / "p.npy") * 100
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_camera_noise_chain_is_gaussian_then_jpeg(image, tmp_path):
    spec = "gaussian:sigma=0.02+jpeg:quality=80"
    args = ["convolve", image, "-k", "box:size=3", "--noise", spec, "--seed", "5", "-q"]
    assert run(*args, "-o", tmp_path / "j.npy").exit_code == 0
    clean = ndimage.convolve(np.load(image), np.ones((3, 3)) / 9, mode="reflect")
    noisy = clean + 0.02 * np.random.default_rng(5).standard_normal(clean.shape)
    pixels = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    expected = np.asarray(PIL.Image.open(buffer)) / 255
    np.testing.assert_array_equal(np.load(tmp_path / "j.npy"), expected)


def test_several_inputs_into_a_directory(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.ones((8, 8)))
    result = run(
        "convolve",
        tmp_path / "a.npy",
        tmp_path / "b.npy",
        "-k",
        "box:size=3",
        "-o",
        tmp_path / "out",
        "-q",
    )
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy"]


BAD_INPUTS = {
    "missing-input": (["convolve", "{tmp}/nope.png", "-k", "box"], "nope.png"),
    "unknown-family": (["convolve", "{img}", "-k", "gausian"], "did you mean `gaussian`"),
    "bad-parameter": (["convolve", "{img}", "-k", "gaussian:sigma=abc"], "sigma"),
    "negative-sigma": (["convolve", "{img}", "-k", "gaussian:sigma=-1"], "sigma"),
    "all-zero-kernel": (["convolve", "{img}", "-k", "{tmp}/zero.npy"], "zero"),
    "nan-kernel": (["convolve", "{img}", "-k", "{tmp}/nan.npy"], "NaN"),
    "kernel-too-large-valid": (
        ["convolve", "{img}", "-k", "box:size=31", "--mode", "valid"],
        "larger than the image",
    ),
    "bad-mode": (["convolve", "{img}", "-k", "box", "--mode", "sideways"], "--mode"),
    "bad-boundary": (["convolve", "{img}", "-k", "box", "--boundary", "bounce"], "--boundary"),
    "bad-stride": (["convolve", "{img}", "-k", "box", "--stride", "0"], "--stride"),
    "padding-and-mode": (
        ["convolve", "{img}", "-k", "box", "--padding", "1", "--mode", "same"],
        "--padding",
    ),
    "bad-noise": (["convolve", "{img}", "-k", "box", "--noise", "salt:amount=1"], "--noise"),
    "bank-channels": (["convolve", "{img}", "-k", "{tmp}/bank.npy"], "input channels"),
    "output-is-input": (["convolve", "{img}", "-k", "box", "-o", "{img}"], "input"),
    "bad-output-shape": (
        ["transpose", "{img}", "-k", "box", "--stride", "2", "--output-shape", "90x90"],
        "--output-shape",
    ),
    "unknown-extension": (["convolve", "{img}", "-k", "box", "-o", "{tmp}/y.xyz"], ".xyz"),
}


@pytest.mark.parametrize("args,needle", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    img = tmp_path / "img.npy"
    np.save(img, np.random.default_rng(6).random((16, 16)))
    np.save(tmp_path / "zero.npy", np.zeros((3, 3)))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0, 1]]))
    np.save(tmp_path / "bank.npy", np.ones((2, 3, 3, 3)))
    before = digest(img)
    argv = [a.format(tmp=tmp_path, img=img) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out.npy")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.npy").exists()
    assert digest(img) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deconv-")]


def test_existing_output_needs_overwrite(image, tmp_path):
    out = tmp_path / "y.npy"
    np.save(out, np.zeros(3))
    before = digest(out)
    result = CliRunner().invoke(main, ["convolve", str(image), "-k", "box", "-o", str(out)])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert digest(out) == before
    assert run("convolve", image, "-k", "box", "-o", out, "--overwrite", "-q").exit_code == 0
    assert np.load(out).shape == (20, 17)


def test_help_lists_every_command_with_examples():
    result = run("--help")
    for command in ("convolve", "transpose", "compare", "kernels"):
        assert command in result.output
    for command in ("convolve", "transpose"):
        assert "Examples:" in run(command, "--help").output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from deconv_cli.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('scipy.signal', 'scipy.fft', 'skimage', 'imageio', 'scipy.ndimage')"
        " if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_installed_command_end_to_end(tmp_path):
    deconv = shutil.which("deconv", path=str(Path(sys.executable).parent))
    assert deconv, "the console script `deconv` is not installed next to this python"
    x = np.random.default_rng(7).random((24, 24))
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [
            deconv,
            "convolve",
            str(tmp_path / "x.npy"),
            "-k",
            "disk:radius=2",
            "-o",
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the summary goes to stderr
    assert "convolve" in done.stderr
    bad = subprocess.run(
        [
            deconv,
            "convolve",
            str(tmp_path / "missing.png"),
            "-k",
            "box",
            "-o",
            str(tmp_path / "z.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    module = subprocess.run(
        [sys.executable, "-m", "deconv_cli", "--version"], capture_output=True, text=True
    )
    assert module.returncode == 0 and "deconv" in module.stdout


def test_padding_correlate_and_dilation_flags(image, tmp_path):
    kernel = np.random.default_rng(8).random((3, 2))
    np.save(tmp_path / "k.npy", kernel)
    out = tmp_path / "y.npy"
    result = run(
        "convolve",
        image,
        "-k",
        tmp_path / "k.npy",
        "--padding",
        "2x1",
        "--correlate",
        "--dilation",
        "2",
        "--boundary",
        "nearest",
        "-o",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.output
    dilated = np.zeros((5, 3))
    dilated[::2, ::2] = kernel
    padded = np.pad(np.load(image), ((2, 2), (1, 1)), mode="edge")
    np.testing.assert_allclose(
        np.load(out), signal.correlate2d(padded, dilated, mode="valid"), atol=1e-12
    )


def test_sixteen_bit_png_stays_sixteen_bit_and_dtype_overrides(tmp_path):
    source = SAMPLES / "camera16.png"
    assert (
        run("convolve", source, "-k", "box:size=3", "-o", tmp_path / "b.png", "-q").exit_code == 0
    )
    assert iio.imread(tmp_path / "b.png").dtype == np.uint16
    assert (
        run(
            "convolve",
            source,
            "-k",
            "box:size=3",
            "--dtype",
            "uint8",
            "-o",
            tmp_path / "b8.png",
            "-q",
        ).exit_code
        == 0
    )
    assert iio.imread(tmp_path / "b8.png").dtype == np.uint8


def test_clipped_pixels_are_counted_in_the_summary(tmp_path):
    x = np.zeros((5, 5), dtype=np.uint8)
    x[2, 2] = 255
    iio.imwrite(tmp_path / "dot.png", x)
    result = run("convolve", tmp_path / "dot.png", "-k", "laplacian", "-o", tmp_path / "l.png")
    assert result.exit_code == 0
    # the laplacian of a single bright pixel: -4 at the centre (clipped to 0), +1 at its four
    # neighbours (1.0 fits exactly): one clipped pixel
    assert "1 pixels clipped to the uint8 range" in result.output


def test_a_job_that_would_not_fit_in_memory_is_refused_with_a_tile_size(
    image, tmp_path, monkeypatch
):
    import deconv_cli.memory

    big = tmp_path / "big.npy"
    np.save(big, np.zeros((1024, 1024)))
    monkeypatch.setattr(deconv_cli.memory, "available_bytes", lambda: 40 * 2**20)
    result = run("convolve", big, "-k", "gaussian:sigma=2", "-o", tmp_path / "y.npy")
    assert result.exit_code == 2, result.output
    assert "--tile" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("command", ["convolve", "transpose", "invert"])
def test_float64_data_float32_cannot_hold_is_refused_with_dtype_float32(tmp_path, command):
    """Regression: the cast to float32 turned 1e200 into Inf, and convolve/transpose wrote
    an all-Inf float32 file with exit 0."""
    np.save(tmp_path / "big.npy", np.full((8, 8), 1e200))
    out = tmp_path / "out.npy"
    result = run(
        command, str(tmp_path / "big.npy"), "-k", "box:size=3", "--dtype", "float32", "-o", str(out)
    )
    assert result.exit_code == 2, result.output
    assert "values reach 1e+200, beyond float32" in result.output
    assert not out.exists()
    # float64 keeps them: the same command without --dtype float32 runs (convolve, transpose)
    if command != "invert":
        assert (
            run(command, str(tmp_path / "big.npy"), "-k", "box:size=3", "-o", str(out)).exit_code
            == 0
        )
        assert np.isfinite(np.load(out)).all()


def test_operator_messages_say_flags_on_the_command_line_and_parameters_in_the_library(
    tmp_path,
):
    from deconv_cli import convolve

    np.save(tmp_path / "x.npy", np.zeros((10, 8)))
    result = run("convolve", str(tmp_path / "x.npy"), "-k", "box:size=15", "--mode", "valid",
                 "-o", str(tmp_path / "y.npy"))  # fmt: skip
    assert result.exit_code == 2
    assert "use a smaller kernel, --mode same or --mode full" in result.output
    result = run("--max-pixels", "100", "convolve", str(tmp_path / "x.npy"), "-k", "box:size=3",
                 "--padding", "40", "-o", str(tmp_path / "y.npy"))  # fmt: skip
    assert result.exit_code == 2
    assert "above the limit of 400 (4x --max-pixels)" in result.output
    with pytest.raises(ValueError, match="use a smaller kernel, `mode=same` or `mode=full`"):
        convolve(np.zeros((5, 5)), kernel="box:size=9", mode="valid")
