"""``analyze`` on volumes: every exact path's singular values equal the SVD of the
operator's matrix built with scipy.ndimage on a tiny volume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from deconv_cli.analysis import analyze
from deconv_cli.cli import main
from deconv_cli.operators import ConvOperator, Geometry

SHAPE = (4, 5, 6)


def rng(seed=0):
    return np.random.default_rng(seed)


def ndimage_matrix(kernel, shape, mode, *, stride=(1, 1, 1), correlate=False):
    """``same``-mode convolution (correlation) of one kernel, then every stride-th
    output sample, as a matrix built with scipy.ndimage on unit volumes."""
    filter = ndimage.correlate if correlate else ndimage.convolve
    n = math.prod(shape)
    columns = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        out = filter(e.reshape(shape), kernel, mode=mode)
        columns.append(out[tuple(slice(None, None, s) for s in stride)].ravel())
    return np.stack(columns, axis=1)


def singular_values(op):
    result = analyze(op)
    assert result.exact["sigma_min"] and result.singular_values is not None
    return result, result.sorted_singular_values()


def assert_same(values, matrix):
    expected = np.linalg.svd(matrix, compute_uv=False)
    full = np.zeros(max(matrix.shape[1], expected.size))
    full[: expected.size] = expected  # the null space's zeros, for wide operators
    got = np.zeros_like(full)
    got[: values.size] = values
    np.testing.assert_allclose(np.sort(got), np.sort(full), atol=1e-10 * expected[0])


@pytest.mark.parametrize(
    ("boundary", "kernel", "stride", "path"),
    [
        ("wrap", rng(1).random((3, 3, 2)), (1, 1, 1), "FFT"),
        ("wrap", rng(2).random((2, 3, 3)), (2, 1, 2), "FFT"),
        (
            "nearest",
            np.multiply.outer(np.multiply.outer([1.0, 2, 0.5], [0.3, 1, 2]), [1.0, -1, 3]),
            (1, 1, 1),
            "Kronecker",
        ),
        ("constant", rng(3).random((3, 2, 3)), (1, 1, 1), "dense SVD of the operator"),
        ("mirror", rng(4).random((3, 3, 3)), (2, 1, 1), "dense SVD of the operator"),
        (
            "reflect",
            np.multiply.outer(np.multiply.outer([1.0, 3, 1], [1.0, 2, 1]), [0.5, 1, 0.5])
            + np.pad([[[1.0]]], 1),  # symmetric about each axis, not separable
            (1, 1, 1),
            "DCT",
        ),
    ],
    ids=["fft", "fft-stride", "kronecker", "dense", "dense-stride", "dct"],
)
def test_exact_paths_on_a_volume_equal_a_dense_svd(boundary, kernel, stride, path):
    geometry = Geometry.create(boundary=boundary, stride="x".join(map(str, stride)))
    op = ConvOperator(kernel, SHAPE, geometry, spatial=3)
    result, values = singular_values(op)
    assert path in result.method
    assert_same(values, ndimage_matrix(kernel, SHAPE, boundary, stride=stride))


def test_a_kernel_bank_on_a_volume_by_per_frequency_svds():
    bank = rng(5).random((2, 3, 2, 3, 2))  # C_out, C_in, kz, ky, kx
    geometry = Geometry.create(boundary="wrap", correlate=True)
    op = ConvOperator(bank, SHAPE + (3,), geometry, spatial=3)
    result, values = singular_values(op)
    assert "per-frequency SVD of the 2×3 matrices" in result.method
    matrix = np.block(
        [
            [ndimage_matrix(bank[o, c], SHAPE, "wrap", correlate=True) for c in range(3)]
            for o in range(2)
        ]
    )
    assert_same(values, matrix)
    assert result.nullity == math.prod(SHAPE)  # 2 outputs for 3 inputs at every frequency


def test_a_2d_kernel_on_a_volume_analyzes_each_plane():
    kernel = rng(6).random((3, 2))
    op = ConvOperator(kernel, SHAPE, Geometry.create(boundary="reflect"), spatial=3)
    _, values = singular_values(op)
    assert_same(values, ndimage_matrix(kernel[None], SHAPE, "reflect"))


def test_cli_analyze_a_volume_shape_and_a_tiff_stack(tmp_path):
    import tifffile

    kernel = rng(7).random((3, 3, 3))
    np.save(tmp_path / "k.npy", kernel)
    expected = np.linalg.svd(ndimage_matrix(kernel, SHAPE, "wrap"), compute_uv=False)
    tifffile.imwrite(
        tmp_path / "s.tif", np.zeros(SHAPE, np.uint16), imagej=True, metadata={"axes": "ZYX"}
    )
    shape_args = ["--shape", "6x4x5", "--axes", "XZY"]  # given in the order of --axes
    for source in (shape_args, [tmp_path / "s.tif"]):
        result = CliRunner().invoke(
            main,
            ["analyze", *map(str, source), "-k", str(tmp_path / "k.npy"), "--boundary", "wrap"]
            + ["-f", "json"],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["input_shape"] == list(SHAPE) and report["rank"] == math.prod(SHAPE)
        assert report["sigma_max"] == pytest.approx(expected[0], rel=1e-10)
        assert report["sigma_min"] == pytest.approx(expected[-1], rel=1e-8)
    assert "16-bit" in report["noise_source"]  # the stack's bit depth
