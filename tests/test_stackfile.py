"""Stacks streamed box by box between files (deconv_cli/stackfile.py): reads equal to the
scaled voxels, writes encoded as the whole-volume writers encode, tiled commands equal
to the untiled ones, and memory bounded by the tiles, not the stack."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from deconv_cli.cli import main
from deconv_cli.errors import InputError, OutputError
from deconv_cli.stackfile import open_stack, write_stack


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_imagej(path, data, spacing=(0.25, 0.1, 0.1), **options):
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        metadata={"axes": "ZYX", "spacing": spacing[0], "unit": "um"},
        resolution=(1 / spacing[2], 1 / spacing[1]),
        **options,
    )


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32", "float64"])
def test_npy_boxes_are_the_scaled_voxels(tmp_path, dtype):
    raw = rng(1).random((6, 10, 12, 2))
    if dtype.startswith("uint"):
        top = np.iinfo(dtype).max
        raw = np.rint(raw * top).astype(dtype)
        truth = raw.astype(np.float64) / top  # the scale read_volume documents
    else:
        raw = raw.astype(dtype)
        truth = raw
    np.save(tmp_path / "s.npy", raw)
    image = open_stack(tmp_path / "s.npy", axes="ZYXC")
    stack = image.data
    assert image.axes == "ZYXC" and image.source_dtype == np.dtype(dtype)
    assert stack.shape == raw.shape
    assert stack.dtype == (np.float32 if dtype == "float32" else np.float64)
    np.testing.assert_array_equal(stack[1:4, 2:9, 5:12], truth[1:4, 2:9, 5:12])
    np.testing.assert_array_equal(stack[...], truth)
    picks = [np.array([2, 1, 0, 0, 1]), np.array([9, 8, 9]), np.array([3, 4, 5, 5, 4])]
    np.testing.assert_array_equal(stack[np.ix_(*picks)], truth[np.ix_(*picks)])


def test_tiff_stacks_read_as_read_volume_reads_them(tmp_path):
    from deconv_cli.volumes import read_volume

    raw = rng(2).integers(0, 65536, (5, 9, 11), dtype=np.uint16)
    write_imagej(tmp_path / "s.tif", raw)
    image = open_stack(tmp_path / "s.tif")
    whole = read_volume(tmp_path / "s.tif")
    assert image.axes == whole.axes == "ZYX"
    np.testing.assert_allclose(image.spacing, whole.spacing)
    np.testing.assert_array_equal(image.data[...], whole.data)
    np.testing.assert_array_equal(image.data[1:3, 4:9, 0:2], whole.data[1:3, 4:9, 0:2])
    write_imagej(tmp_path / "z.tif", raw, compression="zlib")  # not one contiguous block
    assert open_stack(tmp_path / "z.tif") is None
    np.save(tmp_path / "c.npy", raw.astype(np.float32)[None])
    assert open_stack(tmp_path / "c.npy", axes="CZYX") is None  # axes not in Z, Y, X, C order


def test_nan_and_pickles_are_refused_before_the_work(tmp_path):
    bad = np.zeros((6, 4, 5))
    bad[2, 1, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="NaN/Inf"):
        open_stack(tmp_path / "nan.npy", axes="ZYX")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never loaded"):
        open_stack(tmp_path / "obj.npy")


def test_write_stack_is_atomic(tmp_path):
    target = tmp_path / "out.npy"

    def fail(allocate):
        allocate((3, 3), np.dtype(np.float64))[:] = 1
        raise RuntimeError("disk on fire")

    with pytest.raises(OutputError, match="disk on fire"):
        write_stack(target, fail, axes="YX")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="nothing was computed"):
        write_stack(target, lambda allocate: None, axes="YX")
    assert list(tmp_path.iterdir()) == []

    def twos(allocate):
        allocate((3, 3), np.dtype(np.float64))[...] = 2.0

    write_stack(target, twos, axes="YX")
    np.testing.assert_array_equal(np.load(target), np.full((3, 3), 2.0))
    with pytest.raises(OutputError, match="exists; use `overwrite=True`"):
        write_stack(target, twos, axes="YX")


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.npy"])
def test_boxes_are_encoded_as_the_whole_volume_writer_encodes(tmp_path, name):
    from deconv_cli.volumes import read_volume, write_volume

    values = rng(3).normal(0.5, 0.4, (6, 8, 10))  # some outside [0, 1]: clipped
    spacing = (0.3, 0.1, 0.12)
    whole = write_volume(
        tmp_path / f"whole-{name}", values, axes="ZYX", spacing=spacing, dtype="uint16"
    )

    def fill(allocate):
        out = allocate(values.shape, values.dtype)
        out[:4, :, :5] = values[:4, :, :5]
        out[:4, :, 5:] = values[:4, :, 5:]
        out[4:] = values[4:]

    streamed = write_stack(tmp_path / name, fill, axes="ZYX", spacing=spacing, dtype="uint16")
    assert streamed.dtype == whole.dtype == np.uint16
    assert streamed.clipped == whole.clipped == int(np.count_nonzero((values < 0) | (values > 1)))
    if name.endswith(".npy"):
        np.testing.assert_array_equal(np.load(tmp_path / name), np.load(tmp_path / f"whole-{name}"))
        return
    a, b = read_volume(tmp_path / name), read_volume(tmp_path / f"whole-{name}")
    np.testing.assert_array_equal(a.data, b.data)
    assert a.axes == b.axes == "ZYX"
    np.testing.assert_allclose(a.spacing, spacing, rtol=1e-6)


def deconv(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


PSF = "gaussian:sigma=1,sigma_z=1.5"


@pytest.mark.parametrize(
    "job",
    [
        ["convolve"],
        ["transpose", "--boundary", "wrap"],
        ["invert", "-m", "wiener", "--nsr", "1e-3"],
    ],
    ids=lambda job: job[0],
)
def test_uint16_tiff_stack_through_tiles_equals_the_untiled_run(tmp_path, job):
    from scipy import ndimage

    truth = ndimage.gaussian_filter(rng(4).random((20, 40, 36)), 2)
    raw = np.rint((truth - truth.min()) / np.ptp(truth) * 60000).astype(np.uint16)
    write_imagej(tmp_path / "s.tif", raw)
    flags = [*job[1:], "-k", PSF, "-q"]
    whole = deconv(job[0], tmp_path / "s.tif", *flags, "-o", tmp_path / "whole.tif")
    tiled = deconv(
        job[0], tmp_path / "s.tif", *flags, "--tile", "8x16x16", "-o", tmp_path / "tiled.tif"
    )
    assert whole.exit_code == tiled.exit_code == 0, tiled.output
    with (
        tifffile.TiffFile(tmp_path / "tiled.tif") as t,
        tifffile.TiffFile(tmp_path / "whole.tif") as w,
    ):
        assert t.is_imagej and t.imagej_metadata["spacing"] == w.imagej_metadata["spacing"]
        a, b = t.asarray(), w.asarray()
    assert a.dtype == b.dtype == np.uint16
    gap = np.abs(a.astype(np.int64) - b.astype(np.int64)).max()
    assert gap <= 1  # the untiled values to rounding (and, invert, the margins' 1e-6)


def traced_peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("command", ["convolve", "invert"])
def test_a_streamed_tiled_job_holds_tiles_not_the_stack(tmp_path, monkeypatch, command):
    """The 1 GiB-in-4 GiB target scaled down: numpy's allocations (traced by tracemalloc)
    of a tiled job do not grow with the stack (4 times the voxels), and stay a fraction
    of the untiled job's, which holds the stack."""
    from deconv_cli import tiled_invert
    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import Geometry
    from deconv_cli.process import Convolve, Invert, process_file
    from deconv_cli.restore import RestoreOptions

    # the pilot crop (a fixed 1024² voxels, the whole of a small stack) scaled down too
    monkeypatch.setattr(tiled_invert, "PILOT_VOXELS", 16**3)
    kernel = load_kernel(PSF, volume=True)

    def peak(shape, tile):
        source = tmp_path / f"{shape[0]}.tif"
        if not source.exists():
            write_imagej(source, rng(5).integers(1000, 60000, shape, dtype=np.uint16))
        if command == "convolve":
            job = Convolve(kernel, Geometry.create(), tile=tile)
        else:
            job = Invert(
                kernel,
                Geometry.create(),
                "wiener",
                RestoreOptions(nsr=0.01),
                tile=tile,
                tile_margin=6 if tile else None,
            )
        output = tmp_path / f"{shape[0]}-{'tiled' if tile else 'whole'}.tif"
        tracemalloc.start()
        try:
            process_file(source, output, job)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = (24, 48, 48), (48, 96, 48)  # both with interior tiles: the largest windows
    tile = (8, 16, 16)
    tiled_small, tiled_large = peak(small, tile), peak(large, tile)
    whole = peak(large, None)
    assert whole > np.prod(large) * 8  # tracemalloc sees numpy's arrays: the float64 stack
    assert tiled_large < 1.25 * tiled_small, (tiled_small, tiled_large)
    assert tiled_large < whole / 2, (tiled_large, whole)
    if command == "convolve":
        a, b = (tifffile.imread(tmp_path / f"48-{n}.tif").astype(int) for n in ("tiled", "whole"))
        assert np.abs(a - b).max() <= 1
