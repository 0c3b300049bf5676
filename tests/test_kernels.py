"""Kernel families, spec parsing and kernel files, against hand formulas and scipy."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from deconv_cli.errors import KernelError
from deconv_cli.kernels import Kernel, family_table, load_kernel

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FAMILIES = ["gaussian", "box", "disk", "motion", "shake", "laplacian", "identity", "widefield"]


def rng(seed=0):
    return np.random.default_rng(seed)


def delta(shape):
    d = np.zeros(shape)
    d[shape[0] // 2, shape[1] // 2] = 1.0
    return d


def supersampled_disk(radius, half, n=100):
    """Pixel coverage of a disc by brute force: an n x n grid of points per pixel."""
    offsets = (np.arange(n) + 0.5) / n - 0.5
    cover = np.zeros((2 * half + 1, 2 * half + 1))
    for i, row in enumerate(range(-half, half + 1)):
        for j, col in enumerate(range(-half, half + 1)):
            yy, xx = np.meshgrid(row + offsets, col + offsets)
            cover[i, j] = np.mean(xx**2 + yy**2 < radius**2)
    return cover


# --------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.5, 2.0, 3.3], ids=lambda s: f"sigma{s}")
def test_gaussian_equals_scipy_filter_of_a_delta(sigma):
    kernel = load_kernel(f"gaussian:sigma={sigma}")
    side = 2 * math.ceil(3 * sigma) + 1
    assert kernel.array.shape == (side, side)
    # gaussian_filter truncates at `radius` and normalizes each 1-D factor: same kernel.
    oracle = ndimage.gaussian_filter(delta((side, side)), sigma, mode="constant", radius=side // 2)
    np.testing.assert_allclose(kernel.array, oracle, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "spec, sigmas",
    [
        ("gaussian:sigma=3,sigma_y=1", (1, 3)),
        ("gaussian:sigma=3,sigma_y=1,angle=90", (3, 1)),
        ("gaussian:sigma=3,sigma_y=1,angle=180", (1, 3)),
        ("gaussian:sigma=1,sigma_y=2", (2, 1)),
    ],
    ids=["along-x", "along-y", "angle180", "sigma_y-larger"],
)
def test_anisotropic_gaussian_equals_scipy_per_axis_sigmas(spec, sigmas):
    kernel = load_kernel(spec).array
    side = 2 * math.ceil(3 * max(sigmas)) + 1
    assert kernel.shape == (side, side)
    oracle = ndimage.gaussian_filter(delta(kernel.shape), sigmas, mode="constant", radius=side // 2)
    np.testing.assert_allclose(kernel, oracle, rtol=0, atol=1e-15)


@pytest.mark.parametrize("angle", [30, -20, 135], ids=lambda a: f"angle{a}")
def test_rotated_gaussian_equals_covariance_formula(angle):
    sigma, sigma_y = 3.0, 1.2
    kernel = load_kernel(f"gaussian:sigma={sigma},sigma_y={sigma_y},angle={angle}").array
    side = kernel.shape[0]
    c = (side - 1) / 2
    rows, cols = np.mgrid[0:side, 0:side]
    p = np.stack([cols - c, c - rows], axis=-1)  # (x right, y up)
    t = math.radians(angle)
    along = np.array([math.cos(t), math.sin(t)])
    across = np.array([-math.sin(t), math.cos(t)])
    cov = sigma**2 * np.outer(along, along) + sigma_y**2 * np.outer(across, across)
    g = np.exp(-0.5 * np.einsum("...i,ij,...j->...", p, np.linalg.inv(cov), p))
    np.testing.assert_allclose(kernel, g / g.sum(), rtol=1e-12, atol=1e-17)


def test_rotated_gaussian_points_counter_clockwise_as_displayed():
    kernel = load_kernel("gaussian:sigma=4,sigma_y=1,angle=45").array
    c = kernel.shape[0] // 2
    # 45 degrees CCW on screen: up-right (row - 3, col + 3) lies on the long axis.
    assert kernel[c - 3, c + 3] > 10 * kernel[c - 3, c - 3]


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("gaussian", (7, 7)),
        ("gaussian:sigma=2", (13, 13)),
        ("gaussian:sigma=1,sigma_y=4", (25, 25)),
        ("gaussian:sigma=2,size=7", (7, 7)),
        ("gaussian:sigma=2,size=6", (6, 6)),
        ("gaussian:sigma=2,size=9x5", (9, 5)),
    ],
    ids=["bare", "default-size", "larger-sigma-sets-size", "size", "even-size", "rect-size"],
)
def test_gaussian_size(spec, shape):
    assert load_kernel(spec).array.shape == shape


def test_gaussian_explicit_size_is_truncated_and_renormalized():
    kernel = load_kernel("gaussian:sigma=2,size=7").array
    x = np.arange(-3, 4)
    g = np.exp(-(x**2) / 8)
    np.testing.assert_allclose(kernel, np.outer(g, g) / np.outer(g, g).sum(), rtol=1e-13)


# --------------------------------------------------------------------------- sums, symmetry

BLUR_SPECS = [
    "gaussian:sigma=1.7",
    "gaussian:sigma=2,sigma_y=0.7,angle=33",
    "box:size=4x7",
    "disk:radius=4.3",
    "disk:radius=0.4",
    "motion:length=12,angle=17",
    "motion:length=0.5",
]


@pytest.mark.parametrize("spec", BLUR_SPECS, ids=BLUR_SPECS)
def test_blur_families_sum_to_one_and_are_nonnegative(spec):
    kernel = load_kernel(spec)
    assert math.isclose(kernel.array.sum(), 1.0, rel_tol=1e-12)
    assert kernel.array.min() >= 0


SYMMETRIC_SPECS = [
    "gaussian:sigma=2.2",
    "gaussian:sigma=2,size=6x9",
    "box:size=5x3",
    "disk:radius=3.6",
]


@pytest.mark.parametrize("spec", SYMMETRIC_SPECS, ids=SYMMETRIC_SPECS)
def test_symmetric_families_are_symmetric_about_both_axes(spec):
    k = load_kernel(spec).array
    np.testing.assert_array_equal(k, k[::-1, :])
    np.testing.assert_array_equal(k, k[:, ::-1])


@pytest.mark.parametrize(
    "spec", ["gaussian:sigma=2.2", "disk:radius=3.6"], ids=["gaussian", "disk"]
)
def test_isotropic_families_are_symmetric_about_the_diagonal(spec):
    k = load_kernel(spec).array
    np.testing.assert_allclose(k, k.T, rtol=0, atol=1e-17)


@pytest.mark.parametrize(
    "spec, expected",
    [("box:size=3", np.full((3, 3), 1 / 9)), ("box:size=2x4", np.full((2, 4), 1 / 8))],
    ids=["square", "rect-HxW"],
)
def test_box(spec, expected):
    np.testing.assert_allclose(load_kernel(spec).array, expected, rtol=1e-15)


# --------------------------------------------------------------------------- disk


@pytest.mark.parametrize("radius", [2.0, 3.5, 7.0], ids=lambda r: f"r{r}")
def test_disk_covers_the_disc_area(radius):
    k = load_kernel(f"disk:radius={radius}").array
    # The centre pixel is fully inside, so 1 / max is the coverage sum before normalization.
    assert math.isclose(1 / k.max(), math.pi * radius**2, rel_tol=3e-3)


@pytest.mark.parametrize("radius", [1.3, 2.0, 2.7], ids=lambda r: f"r{r}")
def test_disk_matches_brute_force_coverage(radius):
    k = load_kernel(f"disk:radius={radius}").array
    half = k.shape[0] // 2
    oracle = supersampled_disk(radius, half)
    np.testing.assert_allclose(k / k.max(), oracle, rtol=0, atol=0.02)


@pytest.mark.parametrize(
    "radius, side", [(0.4, 1), (1.0, 3), (2.0, 5), (2.5, 5), (2.6, 7)], ids=lambda v: str(v)
)
def test_disk_support_is_the_odd_bounding_square(radius, side):
    assert load_kernel(f"disk:radius={radius}").array.shape == (side, side)


# --------------------------------------------------------------------------- motion


def test_motion_horizontal_odd_length_is_equal_taps():
    np.testing.assert_allclose(load_kernel("motion:length=9").array, np.full((1, 9), 1 / 9))


def test_motion_even_length_has_half_end_taps():
    expected = np.array([[0.5, 1, 1, 1, 0.5]]) / 4
    np.testing.assert_allclose(load_kernel("motion:length=4,angle=0").array, expected)


def test_motion_vertical():
    np.testing.assert_allclose(
        load_kernel("motion:length=7,angle=90").array, np.full((7, 1), 1 / 7)
    )


@pytest.mark.parametrize("angle", [0, 30, 45, 63, 117, 200], ids=lambda a: f"angle{a}")
def test_motion_is_point_symmetric_with_odd_support(angle):
    k = load_kernel(f"motion:length=10,angle={angle}").array
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=0, atol=1e-17)


def test_motion_45_runs_bottom_left_to_top_right():
    k = load_kernel("motion:length=7,angle=45").array
    c = k.shape[0] // 2
    anti_diagonal, diagonal = np.trace(k[:, ::-1]), np.trace(k) - k[c, c]
    assert anti_diagonal > 0.5 and diagonal == 0
    assert k[0, 0] == 0 and k[-1, -1] == 0


@pytest.mark.parametrize(
    "angle, other, flip",
    [(30, 210, "none"), (30, -30, "rows"), (30, 150, "cols")],
    ids=["opposite-direction", "mirror-rows", "mirror-cols"],
)
def test_motion_angle_symmetries(angle, other, flip):
    a = load_kernel(f"motion:length=11,angle={angle}").array
    b = load_kernel(f"motion:length=11,angle={other}").array
    b = {"none": b, "rows": b[::-1, :], "cols": b[:, ::-1]}[flip]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("angle", [15, 30, 60, 100], ids=lambda a: f"angle{a}")
def test_motion_principal_axis_follows_the_angle(angle):
    k = load_kernel(f"motion:length=21,angle={angle}").array
    h, w = k.shape
    rows, cols = np.mgrid[0:h, 0:w]
    x, y = cols - (w - 1) / 2, (h - 1) / 2 - rows
    assert abs((k * x).sum()) < 1e-12 and abs((k * y).sum()) < 1e-12
    cov = np.array([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    axis = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180
    assert abs(axis - angle % 180) < 0.5


# --------------------------------------------------------------------------- laplacian, identity


# --------------------------------------------------------------------------- shake


SHAKES = [(13, 0), (21, 5), (27, 11), (16, 2)]


@pytest.mark.parametrize("size, seed", SHAKES, ids=[f"size{n}-seed{s}" for n, s in SHAKES])
def test_shake_is_a_centred_normalized_blur_within_its_size(size, seed):
    k = load_kernel(f"shake:size={size},seed={seed}").array
    assert k.shape == (size, size)
    assert math.isclose(k.sum(), 1.0, rel_tol=1e-12) and k.min() >= 0
    rows, cols = np.indices(k.shape)
    centre = (size - 1) / 2
    assert abs((k * rows).sum() - centre) <= 0.5 and abs((k * cols).sum() - centre) <= 0.5
    # it reaches the border of its support on some side, and is a path, not a dot
    touched = np.flatnonzero(k.any(axis=0)), np.flatnonzero(k.any(axis=1))
    assert any(t[0] == 0 or t[-1] == size - 1 for t in touched)
    assert np.count_nonzero(k > 1e-3) >= size // 2


def test_shake_is_the_bilinear_splat_of_its_trajectory():
    """Rebuild the kernel point by point from the trajectory (hand-written splatting)."""
    from deconv_cli.kernels import shake_trajectory

    size = 15
    path = shake_trajectory(4)
    path = path - path.mean()
    half = (size - 1) / 2
    path = path * half / max(np.abs(path.real).max(), np.abs(path.imag).max())
    expected = np.zeros((size + 1, size + 1))
    for z in path:
        col, row = min(max(z.real + half, 0), size - 1), min(max(half - z.imag, 0), size - 1)
        r, c = int(row), int(col)
        fr, fc = row - r, col - c
        expected[r, c] += (1 - fr) * (1 - fc)
        expected[r, c + 1] += (1 - fr) * fc
        expected[r + 1, c] += fr * (1 - fc)
        expected[r + 1, c + 1] += fr * fc
    assert expected[size].sum() + expected[:, size].sum() == 0
    expected = expected[:size, :size] / path.size
    np.testing.assert_allclose(load_kernel("shake:size=15,seed=4").array, expected, atol=1e-14)


def test_shake_is_deterministic_per_seed():
    a, b = load_kernel("shake:size=19,seed=7").array, load_kernel("shake:size=19,seed=7").array
    np.testing.assert_array_equal(a, b)
    others = [load_kernel(f"shake:size=19,seed={s}").array for s in (0, 1, 8)]
    assert all(np.abs(a - o).sum() > 0.5 for o in others)  # different paths, not a jitter


def test_shake_trajectory_has_constant_speed():
    from deconv_cli.kernels import SHAKE_SAMPLES, shake_trajectory

    steps = np.abs(np.diff(shake_trajectory(9)))
    np.testing.assert_allclose(steps, 1 / (SHAKE_SAMPLES - 1), rtol=1e-12)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("laplacian", [[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        ("laplacian:neighbors=8", [[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
        ("identity", [[1]]),
        ("identity:size=3x5", [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]),
    ],
    ids=["laplacian", "laplacian8", "identity", "identity-3x5"],
)
def test_fixed_kernels(spec, expected):
    np.testing.assert_array_equal(load_kernel(spec).array, np.array(expected, dtype=float))


def test_identity_size_is_a_centred_delta():
    np.testing.assert_array_equal(load_kernel("identity:size=5").array, delta((5, 5)))


# --------------------------------------------------------------------------- Kernel, specs


@pytest.mark.parametrize(
    "spec, description",
    [
        ("gaussian:sigma=2", "gaussian:sigma=2,size=13"),
        ("gaussian: sigma = 2.5 , size=5x7,", "gaussian:sigma=2.5,size=5x7"),
        ("Gaussian:sigma=2,sigma_y=1,angle=30", "gaussian:sigma=2,sigma_y=1,angle=30,size=13"),
        ("box:size=5x3", "box:size=5x3"),
        ("box:size=5x5", "box:size=5"),
        ("disk", "disk:radius=3"),
        ("motion:length=9,angle=30", "motion:length=9,angle=30"),
        ("laplacian", "laplacian"),
        ("identity:size=3", "identity:size=3"),
    ],
    ids=["gaussian", "spaces-trailing-comma", "anisotropic", "box-rect", "box-square",
         "disk-bare", "motion", "laplacian", "identity"],
)  # fmt: skip
def test_description_is_a_canonical_spec(spec, description):
    kernel = load_kernel(spec)
    assert kernel.description == description
    assert kernel.family == description.partition(":")[0]
    np.testing.assert_array_equal(load_kernel(description).array, kernel.array)


def test_kernel_array_is_read_only_float64_c_contiguous():
    kernel = load_kernel("box:size=3")
    a = kernel.array
    assert a.dtype == np.float64 and a.flags.c_contiguous and not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    assert not kernel.is_bank and kernel.spatial_shape == (3, 3)


def test_kernel_constructor_copies_and_freezes():
    source = np.arange(6, dtype=np.int32).reshape(2, 3)[:, ::-1]
    kernel = Kernel(source, "test", None)
    source[0, 0] = 99
    assert kernel.array[0, 0] == 2 and kernel.array.dtype == np.float64
    assert not kernel.array.flags.writeable and kernel.array.flags.c_contiguous


def test_kernel_constructor_refuses_5d_and_takes_a_3d_volume():
    with pytest.raises(KernelError, match=r"shape \(2, 2, 2, 2, 2\)"):
        Kernel(np.ones((2, 2, 2, 2, 2)), "test", None)
    assert Kernel(np.ones((2, 2, 2)), "test", None).is_volume


def test_family_table_lists_every_family_with_params():
    table = family_table()
    assert [row["name"] for row in table] == FAMILIES
    params = {row["name"]: [p[0] for p in row["params"]] for row in table}
    assert params["gaussian"] == ["sigma", "size", "sigma_y", "angle", "sigma_z"]
    assert params["motion"] == ["length", "angle"]
    gaussian = table[0]
    assert ("size", "2*ceil(3*sigma)+1") == gaussian["params"][1][:2]
    assert all(row["summary"] for row in table)


def test_normalize_on_a_family_blur_is_unchanged():
    a = load_kernel("disk:radius=2").array
    np.testing.assert_allclose(load_kernel("disk:radius=2", normalize=True).array, a, rtol=1e-15)


# --------------------------------------------------------------------------- files


def test_npy_round_trip_is_exact_and_not_normalized(tmp_path):
    data = rng(1).random((7, 5)).astype(np.float32)
    path = tmp_path / "psf.npy"
    np.save(path, data)
    kernel = load_kernel(str(path))
    np.testing.assert_array_equal(kernel.array, data.astype(np.float64))
    assert kernel.family is None
    assert kernel.description == f"file {path} (7x5)"


def test_npy_normalize_divides_by_the_sum(tmp_path):
    data = rng(2).random((4, 4))
    np.save(tmp_path / "psf.npy", data)
    kernel = load_kernel(str(tmp_path / "psf.npy"), normalize=True)
    np.testing.assert_allclose(kernel.array, data / data.sum(), rtol=1e-15)
    assert kernel.description.endswith("(4x4, normalized)")


def test_npy_one_dimensional_is_a_row(tmp_path):
    np.save(tmp_path / "row.npy", np.array([1.0, 2.0, 3.0]))
    assert load_kernel(str(tmp_path / "row.npy")).array.shape == (1, 3)


def test_npy_bank(tmp_path):
    bank = rng(3).standard_normal((3, 2, 4, 5))
    np.save(tmp_path / "bank.npy", bank)
    kernel = load_kernel(str(tmp_path / "bank.npy"))
    assert kernel.is_bank and kernel.spatial_shape == (4, 5)
    np.testing.assert_array_equal(kernel.array, bank)
    assert kernel.description.endswith("(3x2x4x5)")


def test_zero_sum_file_is_kept_as_stored(tmp_path):
    sobel = np.array([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.save(tmp_path / "sobel.npy", sobel)
    np.testing.assert_array_equal(load_kernel(str(tmp_path / "sobel.npy")).array, sobel)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("k.csv", "1,2,3\n4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
        ("k.txt", "# a comment\n1 2\n3   4\n", [[1, 2], [3, 4]]),
        ("k.csv", "0.5, -1e-2\n2.0, 3\n", [[0.5, -0.01], [2, 3]]),
        ("col.txt", "1\n2\n3\n", [[1], [2], [3]]),
        ("row.txt", "1 2 3\n", [[1, 2, 3]]),
    ],
    ids=["comma", "whitespace-comment", "spaces-after-comma", "single-column", "single-row"],
)
def test_text_files(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    np.testing.assert_array_equal(load_kernel(str(tmp_path / name)).array, expected)


def test_png_uint8_is_scaled_by_255(tmp_path):
    img = rng(4).integers(0, 256, (6, 5), dtype=np.uint8)
    iio.imwrite(tmp_path / "psf.png", img)
    np.testing.assert_allclose(load_kernel(str(tmp_path / "psf.png")).array, img / 255.0)


def test_png_uint16_is_scaled_by_65535(tmp_path):
    img = rng(5).integers(1, 65536, (4, 4), dtype=np.uint16)
    iio.imwrite(tmp_path / "psf.png", img)
    np.testing.assert_allclose(load_kernel(str(tmp_path / "psf.png")).array, img / 65535.0)


def test_rgb_png_becomes_gray_by_channel_mean(tmp_path):
    img = rng(6).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "psf.png", img)
    expected = img.astype(float).mean(axis=2) / 255.0
    np.testing.assert_allclose(load_kernel(str(tmp_path / "psf.png")).array, expected, rtol=1e-14)


def test_float_tiff_is_read_exactly(tmp_path):
    img = rng(7).random((5, 5)).astype(np.float32)
    iio.imwrite(tmp_path / "psf.tif", img)
    np.testing.assert_array_equal(load_kernel(str(tmp_path / "psf.tif")).array, img)


class _Trap:
    """Unpickling this creates a file: proof that the loader unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "evil.npy", np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    pattern = r"kernel file `.*evil\.npy`: .* holds Python objects \(pickled\)"
    with pytest.raises(KernelError, match=pattern):
        load_kernel(str(tmp_path / "evil.npy"))
    assert not marker.exists()


# --------------------------------------------------------------------------- samples


def test_sample_haar_bank_is_orthonormal():
    kernel = load_kernel(str(SAMPLES / "haar_bank.npy"))
    assert kernel.array.shape == (4, 1, 2, 2)
    assert set(np.unique(np.abs(kernel.array))) == {0.5}
    m = kernel.array.reshape(4, 4)
    np.testing.assert_array_equal(m @ m.T, np.eye(4))


def test_sample_motion_psf():
    kernel = load_kernel(str(SAMPLES / "psf_motion.npy"))
    assert kernel.array.shape[0] % 2 == 1 and kernel.array.shape[1] % 2 == 1
    assert math.isclose(kernel.array.sum(), 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(kernel.array, kernel.array[::-1, ::-1], atol=1e-17)


def test_sample_gaussian_csv_is_a_sigma1_gaussian():
    kernel = load_kernel(str(SAMPLES / "psf_gaussian.csv"))
    oracle = ndimage.gaussian_filter(delta((5, 5)), 1.0, mode="constant", radius=2)
    np.testing.assert_allclose(kernel.array, oracle, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- errors

SPEC_ERRORS = {
    "unknown-family": (
        "gausian:sigma=2",
        "unknown kernel family `gausian`; did you mean `gaussian`? families: gaussian, box, disk",
    ),
    "unknown-no-suggestion": ("zzz:a=1", "unknown kernel family `zzz`; families:"),
    "neither-family-nor-file": (
        "gausian",
        "kernel `gausian` is neither a kernel family nor an existing file; "
        "did you mean `gaussian`?",
    ),
    "empty": ("", "kernel spec is empty"),
    "blank": ("   ", "kernel spec is empty"),
    "unknown-param": (
        "gaussian:sigmax=2",
        "unknown parameter `sigmax`; did you mean `sigma`? parameters: sigma, size, sigma_y, angle",
    ),
    "param-of-other-family": (
        "box:radius=2",
        "kernel `box`: unknown parameter `radius`; parameters: size",
    ),
    "not-a-number": ("gaussian:sigma=abc", "sigma=`abc` is not a number"),
    "missing-equals": ("gaussian:sigma2", "parameter `sigma2` is not of the form name=value"),
    "missing-name": ("gaussian:=2", "parameter `=2` is not of the form name=value"),
    "duplicate": ("gaussian:sigma=1,sigma=2", "parameter `sigma` is given twice"),
    "zero-sigma": ("gaussian:sigma=0", "sigma=`0` must be > 0"),
    "negative-sigma_y": ("gaussian:sigma_y=-1", "sigma_y=`-1` must be > 0"),
    "nan-sigma": ("gaussian:sigma=nan", "sigma=`nan` must be a finite number"),
    "inf-angle": ("motion:angle=inf", "angle=`inf` must be a finite number"),
    "zero-size": ("box:size=0", "size=`0` must be > 0"),
    "shake-seed-negative": ("shake:seed=-1", "seed=`-1` must be a whole number >= 0"),
    "shake-seed-fraction": ("shake:seed=1.5", "seed=`1.5` must be a whole number >= 0"),
    "negative-size": ("box:size=5x-3", "size=`5x-3` must be > 0"),
    "fractional-size": ("box:size=2.5", "size=`2.5` must be a whole number"),
    "three-part-size": ("box:size=5x3x2", "size=`5x3x2` must be N or HxW"),
    "bad-size": ("gaussian:size=big", "size=`big` is not a number"),
    "zero-radius": ("disk:radius=0", "radius=`0` must be > 0"),
    "negative-length": ("motion:length=-2", "length=`-2` must be > 0"),
    "huge-size": ("box:size=5000", "size=`5000` exceeds the largest kernel side, 4097"),
    "huge-sigma": ("gaussian:sigma=1000", "sigma=`1000` needs a 6001-pixel kernel"),
    "huge-radius": ("disk:radius=3000", "radius=`3000` needs a 6001-pixel kernel"),
    "huge-length": ("motion:length=10000", "length=`10000` needs a 10001-pixel kernel"),
    "identity-even": ("identity:size=4", "size=`4` must be odd"),
    "laplacian-neighbors": ("laplacian:neighbors=6", "neighbors: `6` is not one of `4`, `8`"),
    "normalize-laplacian": ("laplacian", "cannot be normalized"),
    "missing-file": ("nope/psf.npy", "kernel file `nope/psf.npy` not found"),
    "missing-file-bare": ("missing.csv", "kernel file `missing.csv` not found"),
}


@pytest.mark.parametrize("spec, message", list(SPEC_ERRORS.values()), ids=list(SPEC_ERRORS.keys()))
def test_spec_errors(spec, message):
    with pytest.raises(KernelError) as info:
        load_kernel(spec, normalize=spec == "laplacian")
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def _write(path: Path, content) -> None:
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)


FILE_ERRORS = {
    "three-d": ("k.npy", np.ones((2, 3, 4)), "is a 3-D volume kernel (2x3x4)"),
    "five-d": ("k.npy", np.ones((1, 1, 1, 2, 2)), "4-D bank (C_out, C_in, kh, kw)"),
    "scalar": ("k.npy", np.float64(3.0), "has shape (); allowed"),
    "empty": ("k.npy", np.ones((0, 3)), "is empty (shape (0, 3))"),
    "nan": ("k.npy", np.array([[1.0, np.nan], [0, 1]]), "contains 1 NaN/Inf value(s)"),
    "inf": ("k.npy", np.array([[np.inf, -np.inf]]), "contains 2 NaN/Inf value(s)"),
    "all-zero": ("k.npy", np.zeros((3, 3)), "is all zeros"),
    "complex": ("k.npy", np.ones((2, 2), dtype=complex), "holds complex values"),
    "strings": ("k.npy", np.array([["a", "b"]]), "holds non-numeric data"),
    "text-not-numeric": ("k.csv", "1,2\n3,x\n", "is not a numeric matrix"),
    "text-ragged": ("k.txt", "1 2 3\n4 5\n", "is not a numeric matrix"),
    "text-nan": ("k.csv", "1,nan\n1,1\n", "contains 1 NaN/Inf value(s)"),
    "text-empty": ("k.txt", "# nothing\n", "is empty"),
    "suffix": ("k.foo", "1 2\n", "unsupported suffix `.foo`; use one of .npy, .csv"),
    "not-an-image": ("k.png", "not a png", "cannot be read as an image"),
}


@pytest.mark.parametrize(
    "name, content, message", list(FILE_ERRORS.values()), ids=list(FILE_ERRORS.keys())
)
def test_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    _write(path, content)
    with pytest.raises(KernelError) as info:
        load_kernel(str(path))
    text = str(info.value)
    assert f"kernel file `{path}`" in text
    assert message in text
    assert "\n" not in text


def test_zero_sum_file_cannot_be_normalized(tmp_path):
    np.save(tmp_path / "edge.npy", np.array([[1.0, -1.0]]))
    with pytest.raises(KernelError, match=r"`.*edge\.npy` sums to 0 .* cannot be normalized"):
        load_kernel(str(tmp_path / "edge.npy"), normalize=True)


def test_directory_is_not_a_kernel_file(tmp_path):
    with pytest.raises(KernelError, match="is not a regular file"):
        load_kernel(str(tmp_path))


def test_kernel_errors_are_value_errors():
    with pytest.raises(ValueError):
        load_kernel("gaussian:sigma=-1")


# --------------------------------------------------------------------------- CLI


def run(*args):
    from deconv_cli.cli import main

    return CliRunner().invoke(main, ["kernels", *args])


def test_cli_kernels_lists_every_family():
    result = run()
    assert result.exit_code == 0, result.output
    for name in FAMILIES:
        assert name in result.stdout
    assert "sigma" in result.stdout and "length" in result.stdout


def test_cli_show_prints_matrix_shape_and_sum():
    result = run("show", "box:size=3")
    assert result.exit_code == 0, result.output
    assert "box:size=3  shape 3x3" in result.stdout
    assert "sum 1" in result.stdout
    assert result.stdout.count("0.1111") == 9


def test_cli_show_zero_sum_kernel():
    result = run("show", "laplacian", "--precision", "1")
    assert result.exit_code == 0, result.output
    assert "sum 0" in result.stdout and "-4." in result.stdout


def test_cli_show_bank_prints_each_slice():
    result = run("show", str(SAMPLES / "haar_bank.npy"))
    assert result.exit_code == 0, result.output
    assert "shape 4x1x2x2" in result.stdout
    for o in range(4):
        assert f"[out {o}, in 0]" in result.stdout
    assert "-0.5" in result.stdout


def test_cli_show_save_writes_float64_npy_atomically(tmp_path):
    out = tmp_path / "psf.npy"
    result = run("show", "laplacian", "--save", str(out))
    assert result.exit_code == 0, result.output
    saved = np.load(out, allow_pickle=False)
    assert saved.dtype == np.float64
    np.testing.assert_array_equal(saved, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psf.npy"]


def test_cli_show_save_refuses_to_overwrite(tmp_path):
    out = tmp_path / "psf.npy"
    out.write_bytes(b"keep me")
    result = run("show", "box:size=3", "--save", str(out))
    assert result.exit_code == 2
    assert "exists; use --overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    result = run("show", "box:size=3", "--save", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), np.full((3, 3), 1 / 9))


@pytest.mark.parametrize(
    "target, message",
    [("psf.txt", "must end in .npy"), ("missing/psf.npy", "does not exist")],
    ids=["not-npy", "missing-folder"],
)
def test_cli_show_save_bad_target(tmp_path, target, message):
    result = run("show", "box:size=3", "--save", str(tmp_path / target))
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_show_normalize(tmp_path):
    np.save(tmp_path / "k.npy", np.array([[1.0, 3.0]]))
    result = run("show", str(tmp_path / "k.npy"), "--normalize", "--precision", "2")
    assert result.exit_code == 0, result.output
    assert "0.25" in result.stdout and "0.75" in result.stdout and "normalized" in result.stdout


def test_cli_show_bad_spec_is_one_line_exit_2():
    result = run("show", "gausian:sigma=2")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "deconv: error: unknown kernel family `gausian`; did you mean `gaussian`? "
        "families: gaussian, box, disk, motion, shake, laplacian, identity, widefield"
    ]


@pytest.mark.parametrize("args", [["--help"], ["show", "--help"]], ids=["kernels", "show"])
def test_cli_help_has_examples(args):
    result = run(*args)
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "deconv kernels show" in result.stdout
