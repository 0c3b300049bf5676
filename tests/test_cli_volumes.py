"""The commands on volumes through the CLI (``--axes``, TIFF stacks): scipy.ndimage in 3-D,
dot tests through the files, the refusals of ambiguous or contradicting axes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage

from deconv_cli.cli import main

BOUNDARIES = ["constant", "reflect", "mirror", "nearest", "wrap"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture
def kernel(tmp_path):
    """An asymmetric 3-D kernel with an even side (the centring rule of scipy.ndimage)."""
    k = rng(1).random((3, 4, 5))
    np.save(tmp_path / "k.npy", k)
    return tmp_path / "k.npy", k


@pytest.mark.parametrize(
    ("boundary", "correlate"), [(b, i % 2 == 1) for i, b in enumerate(BOUNDARIES)]
)
def test_convolve_zyx_and_zyxc_npy_equal_ndimage(tmp_path, kernel, boundary, correlate):
    path, k = kernel
    x = rng(2).random((7, 9, 8, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x0.npy", x[..., 0])
    flags = ["-k", path, "--boundary", boundary, "-q"] + ["--correlate"] * correlate
    oracle = ndimage.correlate if correlate else ndimage.convolve
    for name, axes, data in (("x0", "ZYX", x[..., :1]), ("x", "ZYXC", x)):
        out = tmp_path / f"{name}_y.npy"
        result = run("convolve", tmp_path / f"{name}.npy", "--axes", axes, "-o", out, *flags)
        assert result.exit_code == 0, result.output
        y = np.load(out)
        expected = np.stack(
            [oracle(data[..., c], k, mode=boundary) for c in range(data.shape[-1])], axis=-1
        )
        np.testing.assert_allclose(y, expected[..., 0] if axes == "ZYX" else expected, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_convolve_a_tiff_stack_keeps_axes_and_voxel_size(tmp_path, boundary):
    stack = rng(3).random((6, 10, 9)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "s.tif", stack, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"},
    )  # fmt: skip
    spec = "gaussian:sigma=1,sigma_z=0.7"
    result = run(
        "convolve", tmp_path / "s.tif", "-k", spec, "--boundary", boundary,
        "--stride", "1x2x1", "-o", tmp_path / "o.tif", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.5)
        y = tif.series[0].asarray()
        assert tif.pages.first.tags["YResolution"].value[1] / tif.pages.first.tags[
            "YResolution"
        ].value[0] == pytest.approx(0.4)  # every 2nd row: rows twice as far apart
    from deconv_cli.kernels import load_kernel

    k = load_kernel(spec, volume=True).array
    expected = ndimage.convolve(stack.astype(np.float64), k, mode=boundary)[:, ::2]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize(
    "flags",
    [
        ["--stride", "2x1x2", "--boundary", "reflect"],
        ["--dilation", "1x2x1", "--mode", "full", "--correlate"],
        ["--padding", "1x2x0", "--stride", "2", "--boundary", "wrap"],
        ["--padding", "2", "--dilation", "2x1x1", "--boundary", "mirror"],
        ["--mode", "valid", "--stride", "1x3x2"],
    ],
    ids=["stride", "dilation-full", "padding-stride-wrap", "padding-dilation", "valid-stride"],
)
def test_transpose_is_the_adjoint_of_convolve_through_the_files(tmp_path, kernel, flags):
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ with A and Aᵀ each computed by the command on .npy files."""
    path, _ = kernel
    x = rng(4).standard_normal((9, 11, 10, 2))
    np.save(tmp_path / "x.npy", x)
    common = ["-k", path, "--axes", "ZYXC", *flags, "-q"]
    assert run("convolve", tmp_path / "x.npy", "-o", tmp_path / "ax.npy", *common).exit_code == 0
    ax = np.load(tmp_path / "ax.npy")
    y = rng(5).standard_normal(ax.shape)
    np.save(tmp_path / "y.npy", y)
    shape = "x".join(map(str, x.shape[:3]))
    result = run(
        "transpose", tmp_path / "y.npy", "--output-shape", shape, "-o", tmp_path / "aty.npy",
        *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    aty = np.load(tmp_path / "aty.npy")
    assert aty.shape == x.shape
    lhs, rhs = np.vdot(ax, y), np.vdot(x, aty)
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)


@pytest.mark.parametrize(
    ("axes", "kernel", "per_plane"),
    [
        ("ZYX", "gaussian:sigma=1", lambda planes: planes),  # a 2-D kernel blurs each plane
        ("CYX", "box:size=3", lambda planes: np.moveaxis(planes, 0, -1)),  # channels first
    ],
)
def test_planes_by_their_axes(tmp_path, axes, kernel, per_plane):
    from deconv_cli.kernels import load_kernel

    x = rng(6).random((3, 9, 8))
    np.save(tmp_path / "x.npy", x)
    result = run(
        "convolve", tmp_path / "x.npy", "--axes", axes, "-k", kernel,
        "-o", tmp_path / "y.npy", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    k = load_kernel(kernel).array
    expected = per_plane(np.stack([ndimage.convolve(p, k, mode="reflect") for p in x]))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-12)


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deconv: error:"), result.output
    return lines[0]


@pytest.mark.parametrize("command", ["convolve", "transpose", "invert"])
def test_a_3d_npy_without_axes_is_refused_naming_axes(tmp_path, command):
    np.save(tmp_path / "s.npy", np.zeros((16, 32, 32)))
    line = one_error_line(
        run(command, tmp_path / "s.npy", "-k", "gaussian:sigma=1", "-o", tmp_path / "o.npy")
    )
    assert "16×32×32 is ambiguous" in line and "--axes" in line
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    ("axes", "needle"),
    [("ZYXC", "contradicts"), ("YX", "contradicts"), ("CYX", "contradicts")],
)
def test_axes_contradicting_tiff_metadata_is_refused(tmp_path, axes, needle):
    for name, kwargs in (
        ("ij.tif", {"imagej": True, "metadata": {"axes": "ZYX"}}),
        ("ome.tif", {"ome": True, "metadata": {"axes": "ZYX"}}),
    ):
        tifffile.imwrite(tmp_path / name, np.zeros((3, 8, 8), np.float32), **kwargs)
        result = run(
            "convolve", tmp_path / name, "--axes", axes, "-k", "box:size=3",
            "-o", tmp_path / "o.tif",
        )  # fmt: skip
        line = one_error_line(result)
        assert line.startswith("deconv: error: --axes:") and needle in line and "ZYX" in line
        assert not (tmp_path / "o.tif").exists()


def test_axes_may_name_the_pages_of_a_plain_multipage_tiff(tmp_path):
    pages = rng(8).random((3, 8, 9)).astype(np.float32)
    with tifffile.TiffWriter(tmp_path / "p.tif") as tif:
        for page in pages:
            tif.write(page, photometric="minisblack", metadata=None)
    result = run(
        "convolve", tmp_path / "p.tif", "--axes", "CYX", "-k", "box:size=3",
        "-o", tmp_path / "o.npy", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = np.stack([ndimage.convolve(p, np.ones((3, 3)) / 9, mode="reflect") for p in pages])
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), np.moveaxis(expected, 0, -1), 1e-6)


def test_layout_refusals_before_the_work(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 8, 8)))
    np.save(tmp_path / "i.npy", np.zeros((8, 8)))
    volume_kernel = "gaussian:sigma=1,sigma_z=1"
    cases = [
        (["i.npy", "-k", volume_kernel], "is a 3-D volume kernel"),
        (["v.npy", "--axes", "ZYX", "-k", "box:size=3"], "PNG holds 2-D images"),
        (["v.npy", "--axes", "ZY", "-k", "box:size=3"], "is not an axes string"),
        (["v.npy", "--axes", "YX", "-k", "box:size=3"], "names 2 axes but the array has 3"),
        (["v.npy", "--axes", "ZYX", "-k", "box:size=3", "--stride", "2x3"], "gives 2 axes"),
    ]
    for args, needle in cases:
        args[0] = tmp_path / args[0]
        line = one_error_line(run("convolve", *args, "-o", tmp_path / "o.png"))
        assert needle in line, line
    assert not (tmp_path / "o.png").exists()


def test_compare_volumes_equals_skimage_metrics_in_3d(tmp_path):
    """The whole row over every voxel (SSIM with a 7×7×7 window), a row per channel of
    the volume, a row per plane (2-D metrics on the plane), as skimage.metrics computes."""
    import json

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    truth = rng(9).random((8, 12, 10, 2))
    noisy = np.clip(truth + 0.05 * rng(10).standard_normal(truth.shape), 0, 1)
    np.save(tmp_path / "t.npy", np.moveaxis(truth, -1, 0))  # stored C Z Y X
    tifffile.imwrite(
        tmp_path / "n.tif",
        np.moveaxis(noisy, -1, 1).astype(np.float32),
        imagej=True,
        metadata={"axes": "ZCYX"},
    )
    result = run(
        "compare", tmp_path / "t.npy", tmp_path / "n.tif", "--axes", "CZYX", "-m", "psnr,ssim",
        "--per-channel", "--per-slice", "-f", "json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["channel"], r["z"]) for r in rows] == [(None, None), (0, None), (1, None)] + [
        (None, z) for z in range(8)
    ]
    noisy = noisy.astype(np.float32).astype(np.float64)  # as the ImageJ TIFF stored it
    assert rows[0]["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, noisy, data_range=1))
    per_channel = [
        structural_similarity(truth[..., c], noisy[..., c], data_range=1) for c in (0, 1)
    ]
    assert rows[0]["ssim"] == pytest.approx(np.mean(per_channel), rel=1e-10)
    for c in (0, 1):
        assert rows[1 + c]["ssim"] == pytest.approx(per_channel[c], rel=1e-10)
    for z in range(8):
        expected = structural_similarity(truth[z], noisy[z], data_range=1, channel_axis=-1)
        assert rows[3 + z]["ssim"] == pytest.approx(expected, rel=1e-10)
        assert rows[3 + z]["psnr"] == pytest.approx(
            peak_signal_noise_ratio(truth[z], noisy[z], data_range=1)
        )


def test_compare_a_volume_with_an_image_is_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "s.tif", np.zeros((3, 8, 8), np.float32), imagej=True, metadata={"axes": "ZYX"}
    )
    np.save(tmp_path / "s.npy", np.zeros((3, 8, 8)))
    line = one_error_line(run("compare", tmp_path / "s.tif", tmp_path / "s.npy"))
    assert "compare a volume with a volume" in line and "--axes" in line


def blurred_volume(tmp_path, seed=11):
    """A smooth phantom, blurred by scipy.ndimage with a wrap boundary, as ZYX .npy."""
    from deconv_cli.kernels import load_kernel

    truth = ndimage.gaussian_filter(rng(seed).random((8, 16, 16)), 1.5, mode="wrap")
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    kernel = load_kernel("gaussian:sigma=0.6,sigma_z=0.5", volume=True).array
    np.save(tmp_path / "y.npy", ndimage.convolve(truth, kernel, mode="wrap"))
    return truth


def test_invert_inverse_recovers_a_volume_and_keeps_its_voxel_size(tmp_path):
    truth = blurred_volume(tmp_path)
    spec = "gaussian:sigma=0.6,sigma_z=0.5"
    common = ["-k", spec, "--boundary", "wrap", "-m", "inverse", "-q"]
    result = run("invert", tmp_path / "y.npy", "--axes", "ZYX", "-o", tmp_path / "x.npy", *common)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), truth, atol=1e-9)
    stack = np.moveaxis(np.stack([np.load(tmp_path / "y.npy")] * 2), 0, 1)  # Z C Y X
    tifffile.imwrite(
        tmp_path / "y.tif", stack.astype(np.float32), imagej=True, resolution=(10, 10),
        metadata={"axes": "ZCYX", "spacing": 0.3, "unit": "um"},
    )  # fmt: skip
    assert run("invert", tmp_path / "y.tif", "-o", tmp_path / "x.tif", *common).exit_code == 0
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        assert tif.series[0].axes == "ZCYX" and tif.imagej_metadata["spacing"] == 0.3
        x = tif.series[0].asarray()
    np.testing.assert_allclose(x[:, 1], truth, atol=1e-4)  # float32 data


def test_invert_rl_on_a_volume_measures_its_history_in_3d(tmp_path):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    truth = blurred_volume(tmp_path)
    np.save(tmp_path / "truth.npy", truth)
    result = run(
        "invert", tmp_path / "y.npy", "--axes", "ZYX", "-k", "gaussian:sigma=0.6,sigma_z=0.5",
        "--boundary", "wrap", "-m", "richardson-lucy", "--iterations", "5", "--tol", "0",
        "--reference", tmp_path / "truth.npy", "--history", tmp_path / "h.csv",
        "-o", tmp_path / "x.npy", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    x = np.load(tmp_path / "x.npy")
    last = (tmp_path / "h.csv").read_text().strip().splitlines()[-1].split(",")
    header = (tmp_path / "h.csv").read_text().splitlines()[0].split(",")
    row = dict(zip(header, last, strict=True))
    assert float(row["psnr"]) == pytest.approx(
        peak_signal_noise_ratio(truth, x, data_range=1), abs=1e-3
    )
    assert float(row["ssim"]) == pytest.approx(
        structural_similarity(truth, x, data_range=1), abs=1e-4
    )  # a 7×7×7 window, not 8 channels of 16×16
    blurred = np.load(tmp_path / "y.npy")
    assert peak_signal_noise_ratio(truth, x, data_range=1) > peak_signal_noise_ratio(
        truth, blurred, data_range=1
    )


def test_the_default_method_on_a_volume_and_tv_refused(tmp_path):
    blurred_volume(tmp_path)
    args = [tmp_path / "y.npy", "--axes", "ZYX", "-k", "gaussian:sigma=0.6,sigma_z=0.5"]
    result = run("invert", *args, "-o", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    assert "auto picked wiener" in result.output and "a volume (tv is 2-D)" in result.output
    line = one_error_line(run("invert", *args, "-m", "tv", "-o", tmp_path / "t.npy"))
    assert "--method: `tv` takes 2-D images" in line and "richardson-lucy" in line
    assert not (tmp_path / "t.npy").exists()


def test_roundtrip_on_a_volume(tmp_path):
    import json

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    truth = blurred_volume(tmp_path)
    np.save(tmp_path / "truth.npy", truth)
    result = run(
        "roundtrip", tmp_path / "truth.npy", "--axes", "ZYX", "-k",
        "gaussian:sigma=0.6,sigma_z=0.5", "-m", "wiener,tv", "--out-dir", tmp_path / "out",
        "-f", "json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["tv"]["note"] == "not run: it takes 2-D images"
    for name in ("blurred", "wiener"):
        x = np.load(tmp_path / "out" / f"{name}.npy")
        assert x.shape == truth.shape
        assert rows[name]["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, x, data_range=1))
        assert rows[name]["ssim"] == pytest.approx(structural_similarity(truth, x, data_range=1))
    assert (tmp_path / "out" / "montage.png").exists()
