"""Zarr stacks and chunked A / Aᵀ on Dask: equal to the whole-volume operator (and to
scipy.ndimage) to rounding for every boundary; OME-Zarr axes and voxel size kept."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deconv_cli.errors import DeconvError, GeometryError, InputError
from deconv_cli.operators import BOUNDARIES, Convolution, Geometry

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from deconv_cli.zarrio import chunked, open_zarr, write_zarr  # noqa: E402


def relative_gap(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


CASES = list(itertools.product(BOUNDARIES, [(5, 3, 4), (3, 3, 3)]))


@pytest.mark.parametrize(
    "boundary,extent", CASES, ids=[f"{b}-{'x'.join(map(str, k))}" for b, k in CASES]
)
def test_chunked_forward_and_adjoint_equal_the_whole_volume(boundary, extent):
    r = np.random.default_rng(3)
    op = Convolution(r.random((1, 1) + extent), (13, 17, 11, 1), Geometry.create(boundary=boundary))
    x = r.standard_normal(op.input_shape)
    # chunks of 4-6 voxels: smaller than twice the depth, not dividing the sides
    lazy = da.from_array(x, chunks=(5, 6, 4, 1))
    forward = chunked(op, lazy).compute(scheduler="sync")
    adjoint = chunked(op, lazy, adjoint=True).compute(scheduler="sync")
    assert relative_gap(forward, op.forward(x)) <= 1e-12
    assert relative_gap(adjoint, op.adjoint(x)) <= 1e-12


def test_chunked_equals_scipy_ndimage_with_channels():
    from scipy import ndimage

    r = np.random.default_rng(4)
    psf = r.random((5, 5, 5))
    x = r.random((16, 20, 20, 2))
    bank = np.broadcast_to(psf, (2, 1, 5, 5, 5))
    op = Convolution(bank, x.shape, Geometry.create(boundary="nearest"), groups=2)
    got = chunked(op, da.from_array(x, chunks=(8, 10, 10, 1))).compute(scheduler="threads")
    for c in range(2):
        expected = ndimage.convolve(x[..., c], psf, mode="nearest")
        assert relative_gap(got[..., c], expected) <= 1e-12


def test_chunked_refuses_a_geometry_that_changes_the_shape():
    op = Convolution(np.ones((1, 1, 3, 3, 3)), (8, 8, 8, 1), Geometry.create(mode="valid"))
    with pytest.raises(GeometryError, match="keeps the stack's shape"):
        chunked(op, da.zeros((8, 8, 8, 1)))


def test_a_zarr_stack_through_the_chunked_operator_equals_the_in_memory_result(tmp_path):
    r = np.random.default_rng(5)
    stack = (r.random((12, 24, 20)) * 65535).astype(np.uint16)
    store = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=stack.shape, chunks=(4, 8, 8), dtype="u2"
    )
    store[...] = stack
    store.attrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"]
    volume = open_zarr(tmp_path / "in.zarr")
    assert volume.axes == "ZYX" and volume.source_dtype == np.uint16
    psf = r.random((1, 1, 7, 3, 3))
    op = Convolution(psf, stack.shape + (1,), Geometry.create(boundary="mirror"))
    result = chunked(op, volume.data[..., None])[..., 0]
    out = write_zarr(tmp_path / "out.zarr", result, axes="ZYX", spacing=(0.3, 0.1, 0.1))
    written = open_zarr(out)
    assert written.axes == "ZYX" and written.spacing == pytest.approx((0.3, 0.1, 0.1))
    whole = op.forward(stack[..., None] / 65535.0)[..., 0]
    assert relative_gap(np.asarray(written.data), whole) <= 1e-12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr"]  # no temp
    with pytest.raises(DeconvError, match="exists; use `overwrite=True`"):
        write_zarr(out, result, axes="ZYX")


def test_ome_zarr_axes_order_and_a_single_time_point(tmp_path):
    r = np.random.default_rng(6)
    data = r.random((1, 2, 5, 6, 7)).astype(np.float32)  # t, c, z, y, x
    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=data.shape)[...] = data
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "t", "type": "time"},
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "nanometer"},
                {"name": "x", "type": "space", "unit": "nanometer"},
            ],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1, 1, 0.5, 65.0, 65.0]}
                    ],
                }
            ],
        }
    ]
    volume = open_zarr(tmp_path / "img.zarr")
    assert volume.axes == "ZYXC"
    assert volume.spacing == pytest.approx((0.5, 0.065, 0.065))
    np.testing.assert_array_equal(np.asarray(volume.data), np.moveaxis(data[0], 0, -1))


def test_a_3d_zarr_array_without_axes_is_refused_naming_axes(tmp_path):
    zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 5, 6), dtype="f4")
    with pytest.raises(InputError, match="without axes metadata; give `axes`"):
        open_zarr(tmp_path / "a.zarr")
    assert open_zarr(tmp_path / "a.zarr", axes="ZYX").axes == "ZYX"


def test_convolve_and_transpose_commands_on_a_zarr_stack(tmp_path):
    from click.testing import CliRunner

    from deconv_cli.cli import main
    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import ConvOperator

    r = np.random.default_rng(7)
    stack = r.random((14, 40, 36)).astype(np.float32)
    store = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=stack.shape, chunks=(7, 16, 16), dtype="f4"
    )
    store[...] = stack
    spec = "gaussian:sigma=1.2,sigma_z=2"
    op = ConvOperator(
        load_kernel(spec, volume=True).array,
        stack.shape,
        Geometry.create(boundary="wrap"),
        spatial=3,
        dtype=np.float32,
    )
    runner = CliRunner()
    for command, expected in (("convolve", op.forward(stack)), ("transpose", op.adjoint(stack))):
        out = tmp_path / f"{command}.zarr"
        args = [command, str(tmp_path / "in.zarr"), "--axes", "ZYX", "-k", spec]
        result = runner.invoke(main, [*args, "--boundary", "wrap", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert f"{out}: chunks:" in result.stderr
        got = np.asarray(open_zarr(out).data)
        assert got.dtype == np.float32 and relative_gap(got, expected) <= 1e-5
    refused = runner.invoke(main, ["invert", str(tmp_path / "in.zarr"), "-k", spec, "-o", "x"])
    assert refused.exit_code == 2 and "by convolve or transpose" in refused.stderr
    tiled = runner.invoke(main, [*args, "--tile", "8", "-o", str(tmp_path / "t.zarr")])
    assert tiled.exit_code == 2 and "give no --tile" in tiled.stderr


def test_blocks_straddling_zarr_chunks_are_written_whole_by_many_threads(tmp_path):
    """Blocks that each cover half of two Zarr chunks (as map_overlap leaves after
    ensure_minimum_chunksize) written by 16 threads: each block used to read, modify
    and write back a shared chunk without a lock, and writes were lost (10 runs out
    of 10 here before the fix). Every value must land."""
    import dask

    a = np.random.default_rng(3).random((2, 40, 48)).astype(np.float32) + 1
    x = da.from_array(a, chunks=((2,), (10,) + (5,) * 6, (12,) + (6,) * 6))
    with dask.config.set(scheduler="threads", num_workers=16):
        write_zarr(tmp_path / "out.zarr", x, axes="ZYX")
    np.testing.assert_array_equal(np.asarray(open_zarr(tmp_path / "out.zarr").data), a)


def _block(tiler, x, block, adjoint):
    return (tiler.adjoint_block if adjoint else tiler.forward_block)(x, block)


@pytest.mark.parametrize("engine", ["direct", "fft"])
def test_one_tiler_shared_by_many_threads_equals_the_serial_blocks(engine):
    """The chunked path's threads share one Tiler, its cache of window operators and
    their lazily built kernel spectra: blocks of every size computed by 8 threads at
    once from a cold cache equal the same blocks computed one by one."""
    from concurrent.futures import ThreadPoolExecutor

    from deconv_cli.tiles import Tiler

    r = np.random.default_rng(5)
    x = r.random((12, 20, 18, 2))
    geometry = Geometry.create(boundary="reflect")
    op = Convolution(r.random((2, 2, 5, 3, 4)), x.shape, geometry, engine=engine)
    blocks = [
        ((z, z + dz), (y, y + dy), (0, 18))
        for dz in (3, 4, 12)
        for z in range(0, 12 - dz + 1, dz)
        for dy, y in ((5, 0), (7, 5), (8, 12))
    ] * 4

    for adjoint in (False, True):
        serial = [_block(Tiler(op), x, b, adjoint) for b in blocks]
        shared = Tiler(op)
        with ThreadPoolExecutor(8) as pool:
            threaded = list(
                pool.map(
                    _block,
                    [shared] * len(blocks),
                    [x] * len(blocks),
                    blocks,
                    [adjoint] * len(blocks),
                )
            )
        for s, t in zip(serial, threaded, strict=True):
            np.testing.assert_array_equal(t, s)
