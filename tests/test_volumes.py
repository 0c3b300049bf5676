"""Volumes on disk: TIFF stacks, ImageJ hyperstacks and OME-TIFF written by tifffile
itself, ``.npy`` with axes; writing read back with tifffile."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from deconv_cli import config
from deconv_cli.errors import InputError, OutputError
from deconv_cli.io import read_image
from deconv_cli.volumes import parse_axes, read_volume, write_volume


def rng(seed=0):
    return np.random.default_rng(seed)


def test_imagej_hyperstack_axes_and_voxel_size(tmp_path):
    stored = rng().integers(0, 65536, (4, 2, 5, 6), dtype=np.uint16)  # Z C Y X
    tifffile.imwrite(
        tmp_path / "h.tif",
        stored,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.2),
        metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um"},
    )
    image = read_volume(tmp_path / "h.tif")
    assert image.axes == "ZYXC"
    np.testing.assert_array_equal(image.data, np.moveaxis(stored, 1, -1) / 65535)
    assert image.source_dtype == np.uint16
    assert image.spacing == pytest.approx((0.5, 0.2, 0.25))


def test_ome_tiff_axes_and_physical_sizes(tmp_path):
    stored = rng().random((3, 5, 4)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "v.ome.tif",
        stored,
        ome=True,
        photometric="minisblack",
        metadata={
            "axes": "ZYX",
            "PhysicalSizeZ": 300.0,
            "PhysicalSizeZUnit": "nm",
            "PhysicalSizeY": 0.1,
            "PhysicalSizeX": 0.1,
        },
    )
    image = read_volume(tmp_path / "v.ome.tif")
    assert image.axes == "ZYX" and image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data, stored)
    assert image.spacing == pytest.approx((0.3, 0.1, 0.1))


def test_plain_multipage_tiff_pages_are_z(tmp_path):
    pages = rng().random((3, 4, 5)).astype(np.float32)
    with tifffile.TiffWriter(tmp_path / "p.tif") as tif:
        for page in pages:
            tif.write(page, photometric="minisblack", metadata=None)
    image = read_volume(tmp_path / "p.tif")
    assert image.axes == "ZYX" and image.spacing is None
    np.testing.assert_array_equal(image.data, pages)


def test_a_one_page_tiff_is_read_as_an_image(tmp_path):
    rgba = rng().integers(0, 256, (4, 5, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=("unassalpha",))
    image, expected = read_volume(tmp_path / "a.tif"), read_image(tmp_path / "a.tif")
    assert image.axes == "YXC" and image.alpha is not None
    np.testing.assert_array_equal(image.data, expected.data)


def test_time_series_is_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "t.tif", np.zeros((2, 3, 4, 5), np.uint8), imagej=True,
        metadata={"axes": "TZYX"},
    )  # fmt: skip
    with pytest.raises(InputError, match=r"TIFF with axes `TZYX`.*one time point"):
        read_volume(tmp_path / "t.tif")


def test_npy_with_axes_is_transposed_to_zyxc(tmp_path):
    stored = rng().random((2, 3, 4, 5))  # C Z Y X
    np.save(tmp_path / "v.npy", stored)
    image = read_volume(tmp_path / "v.npy", axes="czyx")
    assert image.axes == "ZYXC" and image.spacing is None
    np.testing.assert_array_equal(image.data, np.moveaxis(stored, 0, -1))


def test_npy_without_axes_keeps_the_image_rules(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((4, 5, 3)))
    assert read_volume(tmp_path / "rgb.npy").axes == "YXC"
    np.save(tmp_path / "stack.npy", np.zeros((16, 64, 64)))
    with pytest.raises(InputError, match="`axes`"):
        read_volume(tmp_path / "stack.npy")


@pytest.mark.parametrize(
    ("axes", "ndim", "message"),
    [("ZYQ", 3, "not an axes string"), ("ZZX", 3, "not an axes string"),
     ("ZY", 2, "not an axes string"), ("ZYX", 4, "names 3 axes but the array has 4")],
    ids=["unknown-letter", "repeated", "no-x", "wrong-count"],
)  # fmt: skip
def test_parse_axes_refusals(axes, ndim, message):
    with pytest.raises(InputError, match=message):
        parse_axes(axes, ndim)


def test_voxel_limit_is_checked_from_the_header(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 8, 8)))
    with config.use(max_pixels=255), pytest.raises(InputError, match="256 voxels"):
        read_volume(tmp_path / "v.npy", axes="ZYX")


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_write_imagej_keeps_axes_and_spacing(tmp_path, dtype):
    data = rng().random((3, 4, 5, 2))
    result = write_volume(
        tmp_path / "o.tif", data, axes="ZYXC", spacing=(0.5, 0.2, 0.25), dtype=dtype
    )
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata["spacing"] == 0.5 and tif.imagej_metadata["unit"] == "um"
        x_res = tif.pages.first.tags["XResolution"].value
        assert x_res[1] / x_res[0] == pytest.approx(0.25)
        stored = np.moveaxis(tif.series[0].asarray(), 1, -1)
    expected = np.rint(data * 65535) if dtype == "uint16" else data.astype(np.float32)
    np.testing.assert_array_equal(stored, expected)
    assert result.dtype == np.dtype(dtype) and result.clipped == 0
    back = read_volume(tmp_path / "o.tif")
    assert back.axes == "ZYXC" and back.spacing == pytest.approx((0.5, 0.2, 0.25))


def test_write_float64_is_ome_and_a_last_axis_of_3_is_not_rgb(tmp_path):
    data = rng().random((3, 4, 3)) * 3 - 1
    write_volume(tmp_path / "o.tif", data, axes="ZYX", spacing=(1.0, 0.1, 0.1))
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.series[0].asarray(), data)
    assert read_volume(tmp_path / "o.tif").spacing == pytest.approx((1.0, 0.1, 0.1))


def test_write_uint8_counts_clipped_voxels(tmp_path):
    data = np.full((2, 3, 4), 0.5)
    data[0, 0, :2] = [-0.1, 1.2]
    result = write_volume(tmp_path / "o.tif", data, axes="ZYX", dtype="uint8")
    assert result.clipped == 2


@pytest.mark.parametrize(
    ("name", "axes", "spacing", "message"),
    [("o.png", "ZYX", None, "PNG holds 2-D images"),
     ("o.tif", "YXZ", None, "do not describe"),
     ("o.tif", "ZYX", (1.0, 1.0), "does not match axes `ZYX`")],
    ids=["png", "order", "spacing"],
)  # fmt: skip
def test_write_refusals_write_nothing(tmp_path, name, axes, spacing, message):
    with pytest.raises(OutputError, match=message):
        write_volume(tmp_path / name, np.zeros((2, 3, 4)), axes=axes, spacing=spacing)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("boundary", ["constant", "reflect", "mirror", "nearest", "wrap"])
def test_a_stack_read_convolved_by_the_nd_operator_and_written_equals_scipy(tmp_path, boundary):
    """A ZYX TIFF stack and a widefield PSF through the N-D operator (3 spatial axes, one
    channel) and back to disk: scipy.ndimage.convolve on the same arrays, per boundary."""
    from scipy import ndimage

    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import Convolution, Geometry

    stack = rng(1).random((9, 12, 11)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "in.tif", stack, imagej=True, resolution=(10, 10),
        metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"},
    )  # fmt: skip
    image = read_volume(tmp_path / "in.tif")
    psf = load_kernel(
        "widefield:na=0.8,wavelength=0.5,n=1,dxy=0.1,dz=0.3,size=5,depth=7", volume=True
    )
    op = Convolution(
        psf.array[None, None], image.data.shape + (1,), Geometry.create(boundary=boundary)
    )
    blurred = op.forward(image.data[..., None])[..., 0]
    write_volume(tmp_path / "out.tif", blurred, axes=image.axes, spacing=image.spacing)
    back = read_volume(tmp_path / "out.tif")
    assert back.axes == "ZYX" and back.spacing == pytest.approx((0.3, 0.1, 0.1))
    oracle = ndimage.convolve(stack.astype(np.float64), psf.array, mode=boundary)
    np.testing.assert_allclose(back.data, oracle, rtol=0, atol=1e-6)


def test_psnr_and_ssim_of_volumes_equal_skimage_in_3d():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from deconv_cli.metrics import compute_metrics

    truth = rng(2).random((9, 10, 11, 2))
    noisy = truth + 0.05 * rng(3).standard_normal(truth.shape)
    got = compute_metrics(truth, noisy, ["psnr", "ssim"])
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, noisy, data_range=1.0))
    per_channel = [
        structural_similarity(truth[..., c], noisy[..., c], data_range=1.0) for c in (0, 1)
    ]
    assert got["ssim"] == pytest.approx(np.mean(per_channel), rel=1e-12)
    one = compute_metrics(truth[..., :1], noisy[..., :1], ["ssim"])["ssim"]
    assert one == pytest.approx(per_channel[0], rel=1e-12)


def test_ssim_of_a_thin_volume_is_refused():
    from deconv_cli.metrics import ssim

    with pytest.raises(InputError, match=r"at least 7×7.*got 6×8×8"):
        ssim(np.zeros((6, 8, 8, 1)), np.zeros((6, 8, 8, 1)))


def test_imagej_channels_of_one_plane_are_an_image_with_channels(tmp_path):
    stored = rng(4).integers(0, 256, (2, 5, 6), dtype=np.uint8)  # C Y X, two pages
    tifffile.imwrite(tmp_path / "c.tif", stored, imagej=True, metadata={"axes": "CYX"})
    image = read_volume(tmp_path / "c.tif")
    assert image.axes == "YXC"
    np.testing.assert_array_equal(image.data, np.moveaxis(stored, 0, -1) / 255)
