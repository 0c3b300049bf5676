"""3-D kernels: the widefield Born & Wolf PSF against hand-computed facts and an
independent quadrature, gaussian with sigma_z against scipy.ndimage, the spec family."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import integrate, ndimage, special

from deconv_cli.cli import main
from deconv_cli.errors import KernelError
from deconv_cli.kernels import load_kernel
from deconv_cli.psf import widefield_psf

# NA 0.8 dry objective, green light: an Airy radius of 0.38 µm, axial zero at 1.56 µm.
OPTICS = {"na": 0.8, "wavelength": 0.5, "n": 1.0}


def centre(psf: np.ndarray) -> tuple[int, int, int]:
    return tuple(n // 2 for n in psf.shape)


def test_in_focus_plane_is_the_airy_pattern():
    dxy = 0.05
    psf = widefield_psf(**OPTICS, dxy=dxy, dz=0.2, shape=(5, 41, 41))
    cz, cy, cx = centre(psf)
    plane = psf[cz] / psf[cz, cy, cx]
    y, x = np.mgrid[-20:21, -20:21] * dxy
    v = 2 * math.pi / OPTICS["wavelength"] * OPTICS["na"] * np.hypot(y, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(v > 0, (2 * special.j1(v) / v) ** 2, 1.0)
    np.testing.assert_allclose(plane, airy, atol=1e-9)


def test_first_dark_ring_at_0_61_lambda_over_na():
    dxy = 0.02
    psf = widefield_psf(**OPTICS, dxy=dxy, dz=0.2, shape=(1, 1, 61))
    profile = psf[0, 0, 30:]
    first_minimum = next(i for i in range(1, len(profile) - 1) if profile[i] < profile[i + 1])
    expected = 0.61 * OPTICS["wavelength"] / OPTICS["na"]
    assert abs(first_minimum * dxy - expected) <= dxy


def test_on_axis_profile_is_sinc_squared_with_its_first_zero_at_2_n_lambda_over_na2():
    dz = 0.05
    psf = widefield_psf(**OPTICS, dxy=0.1, dz=dz, shape=(121, 1, 1))
    z = (np.arange(121) - 60) * dz
    k = 2 * math.pi / OPTICS["wavelength"]
    u = k * OPTICS["na"] ** 2 * z / (2 * OPTICS["n"])
    axis = psf[:, 0, 0] / psf[60, 0, 0]
    np.testing.assert_allclose(axis, np.sinc(u / (2 * math.pi)) ** 2, atol=1e-9)
    first_zero = next(i for i in range(61, 120) if axis[i] < axis[i + 1]) - 60
    expected = 2 * OPTICS["n"] * OPTICS["wavelength"] / OPTICS["na"] ** 2
    assert abs(first_zero * dz - expected) <= dz


def test_symmetric_in_z_and_laterally_and_sums_to_one():
    psf = widefield_psf(**OPTICS, dxy=0.1, dz=0.3, shape=(15, 13, 13))
    np.testing.assert_allclose(psf, psf[::-1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(psf, psf[:, ::-1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(psf, np.swapaxes(psf, 1, 2), rtol=0, atol=1e-15)
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert psf.argmax() == np.ravel_multi_index(centre(psf), psf.shape)


def born_wolf_quad(r: float, z: float, *, na, wavelength, n) -> float:
    """|∫₀¹ J0(k·NA·r·ρ) exp(-i·k·NA²·z·ρ²/(2n)) ρ dρ|² by adaptive quadrature."""
    k = 2 * math.pi / wavelength
    u = k * na**2 * z / (2 * n)

    def part(f):
        return integrate.quad(
            lambda rho: special.j0(k * na * r * rho) * f(u * rho**2) * rho, 0, 1, limit=200
        )[0]

    return part(math.cos) ** 2 + part(math.sin) ** 2


def test_defocused_voxels_agree_with_an_independent_quadrature():
    dxy, dz = 0.1, 0.4
    psf = widefield_psf(**OPTICS, dxy=dxy, dz=dz, shape=(11, 15, 15))
    cz, cy, cx = centre(psf)
    peak = born_wolf_quad(0.0, 0.0, **OPTICS)
    for iz, iy, ix in [(0, 0, 0), (2, 3, 1), (1, 7, 5), (4, 2, 6), (5, 4, 0)]:
        expected = born_wolf_quad(math.hypot(iy * dxy, ix * dxy), iz * dz, **OPTICS) / peak
        got = psf[cz + iz, cy + iy, cx + ix] / psf[cz, cy, cx]
        assert got == pytest.approx(expected, abs=1e-8)


def test_widefield_spec_defaults_and_spacing():
    kernel = load_kernel("widefield:na=0.8,wavelength=0.5,n=1,dxy=0.1,dz=0.4", volume=True)
    # 4 Airy radii: ceil(4 * 0.61 * 0.5 / 0.08) = 16; 3 axial zeros: ceil(6 * 0.5 / 0.64 / 0.4) = 12
    assert kernel.array.shape == (25, 33, 33)
    assert kernel.spacing == (0.4, 0.1, 0.1)
    assert kernel.description.endswith("size=33,depth=25")
    again = load_kernel(kernel.description, volume=True)
    np.testing.assert_array_equal(again.array, kernel.array)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("widefield:na=0.8", "missing wavelength, n, dxy, dz"),
        ("widefield:na=1.2,wavelength=0.5,n=1,dxy=0.1,dz=0.4", "must be below the immersion"),
        ("widefield:na=0.8,wavelength=0.5,n=1,dxy=0.1,dz=0.4,depth=0", "depth=`0` must be >= 1"),
        ("widefield:na=0.8,wavelength=0.5,n=1,dxy=0.001,dz=0.001", "above the limit"),
    ],
    ids=["missing", "na-above-n", "depth-zero", "too-many-voxels"],
)
def test_widefield_spec_refusals(spec, message):
    with pytest.raises(KernelError, match=message):
        load_kernel(spec, volume=True)


def test_gaussian_sigma_z_is_the_separable_3d_gaussian():
    kernel = load_kernel("gaussian:sigma=1.2,sigma_z=2.5", volume=True)
    assert kernel.array.shape == (17, 9, 9)
    delta = np.zeros(kernel.array.shape)
    delta[8, 4, 4] = 1
    oracle = ndimage.gaussian_filter(delta, (2.5, 1.2, 1.2), mode="constant", radius=(8, 4, 4))
    np.testing.assert_allclose(kernel.array, oracle, atol=1e-15)
    assert kernel.description == "gaussian:sigma=1.2,sigma_z=2.5,size=9"


@pytest.mark.parametrize(
    "spec", ["gaussian:sigma=1,sigma_z=2", "widefield:na=0.8,wavelength=0.5,n=1,dxy=0.1,dz=0.4"]
)
def test_volume_kernels_are_refused_where_2d_images_are_processed(spec):
    with pytest.raises(KernelError, match=r"is a 3-D volume kernel .*processes 2-D images"):
        load_kernel(spec)


def test_convolve_with_a_volume_kernel_exits_2_with_one_line(tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((8, 8)))
    result = CliRunner().invoke(
        main,
        ["convolve", str(tmp_path / "in.npy"), "-k", "gaussian:sigma=1,sigma_z=1", "-o",
         str(tmp_path / "out.npy")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "3-D volume kernel" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.npy").exists()


def test_kernels_show_prints_central_and_axial_slices_and_saves_a_stack(tmp_path):
    import tifffile

    spec = "widefield:na=0.8,wavelength=0.5,n=1,dxy=0.1,dz=0.4,size=9,depth=7"
    out = tmp_path / "psf.tif"
    result = CliRunner().invoke(main, ["kernels", "show", spec, "--save", str(out)])
    assert result.exit_code == 0, result.output
    assert "[plane z=3 of 7, y x]" in result.output
    assert "[axial slice y=4 of 9, z x]" in result.output
    kernel = load_kernel(spec, volume=True)
    with tifffile.TiffFile(out) as tif:
        np.testing.assert_array_equal(tif.series[0].asarray(), kernel.array)
        assert tif.series[0].axes == "ZYX"
        pixels = tif.ome_metadata
    for axis, size in (("Z", 0.4), ("Y", 0.1), ("X", 0.1)):
        assert f'PhysicalSize{axis}="{size}"' in pixels


def test_kernel_file_tiff_stack_is_a_volume_kernel(tmp_path):
    import tifffile

    stack = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "psf.tif", stack, photometric="minisblack")
    kernel = load_kernel(str(tmp_path / "psf.tif"), volume=True)
    np.testing.assert_array_equal(kernel.array, stack.astype(np.float64))
    with pytest.raises(KernelError, match="3-D volume kernel"):
        load_kernel(str(tmp_path / "psf.tif"))
