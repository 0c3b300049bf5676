"""Pictures: the inferno table, colour bars, the montage, the spectrum picture and figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deconv_cli import pictures
from deconv_cli.analysis import analyze
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.spectrum import spectrum_picture, transfer_db

# -- the colour table ---------------------------------------------------------------------


def test_inferno_is_matplotlibs_table():
    matplotlib = pytest.importorskip("matplotlib")
    from deconv_cli.inferno import INFERNO

    cmap = matplotlib.colormaps["inferno"]
    assert len(INFERNO) == cmap.N == 256
    assert np.array_equal(np.asarray(INFERNO), np.asarray(cmap.colors))


def test_colourize_maps_levels_as_matplotlib_does():
    matplotlib = pytest.importorskip("matplotlib")
    levels = np.concatenate([np.linspace(0, 1, 1001), [-0.5, 1.5, 255.5 / 256, 1 / 256]])
    expected = np.rint(matplotlib.colormaps["inferno"](levels)[:, :3] * 255)
    np.testing.assert_array_equal(pictures.colourize(levels), expected)


def test_colourize_by_hand():
    # entry min(floor(256 v), 255): 0 -> first, 1 -> last; NaN as 0
    table = pictures.inferno_table()
    out = pictures.colourize(np.array([0.0, 1.0, 0.5, 1 / 256 - 1e-12, np.nan]))
    assert (
        out.tolist()
        == [table[0].tolist(), table[255].tolist(), table[128].tolist()] + [table[0].tolist()] * 2
    )
    # the first entry is matplotlib's (0.001462, 0.000466, 0.013866) rounded, the last pale
    assert table[0].tolist() == [0, 0, 4] and table[255].tolist() == [252, 255, 164]


def test_inferno_is_monotonic_in_brightness():
    luminance = pictures.inferno_table().astype(float) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(luminance) >= 0) and luminance[-1] > luminance[0] + 200


# -- text, colour bars, montage -----------------------------------------------------------


def test_text_block_draws_different_text_differently():
    a = pictures.text_block(["wiener", "PSNR 27.31 dB"], 128)
    b = pictures.text_block(["tv", "PSNR 27.31 dB"], 128)
    assert a.shape == (2 * pictures.LINE_HEIGHT + 2 * pictures.PAD, 128, 3)
    assert (a != pictures.BACKGROUND).any() and not np.array_equal(a, b)
    # the same second line: the same pixels there
    rows = slice(pictures.PAD + pictures.LINE_HEIGHT, a.shape[0])
    assert np.array_equal(a[rows], b[rows])


def test_colour_bar_beside_the_picture():
    picture = np.full((120, 50, 3), 7, dtype=np.uint8)
    out = pictures.with_colour_bar(picture, "0", "0.1", "|difference|")
    assert out.shape == (120, 50 + pictures.GAP + pictures.BAR_WIDTH + pictures.LABEL_WIDTH, 3)
    assert np.array_equal(out[:, :50], picture)
    top = pictures.LINE_HEIGHT + 2 * pictures.PAD
    left = 50 + pictures.GAP
    bar = out[top:, left + pictures.BAR_WIDTH // 2]
    n = bar.shape[0]
    levels = 1 - np.arange(n) / (n - 1)
    table = pictures.inferno_table()
    expected = table[np.minimum(np.floor(levels * 256), 255).astype(int)]
    np.testing.assert_array_equal(bar, expected)
    assert bar[0].tolist() == table[255].tolist() and bar[-1].tolist() == table[0].tolist()
    labels = out[:, left + pictures.BAR_WIDTH :]
    assert (labels != pictures.BACKGROUND).sum() > 50  # the title and the two values


def test_rescale_shrinks_by_block_means():
    from skimage.transform import downscale_local_mean

    tile = np.random.default_rng(0).random((13, 10, 3))
    expected = downscale_local_mean(tile[:12, :9], (3, 3, 1))
    np.testing.assert_allclose(pictures.rescale(tile, -3), expected, rtol=1e-14)
    grey = tile[:, :, 0]
    expected = downscale_local_mean(grey[:12, :9], (3, 3))
    np.testing.assert_allclose(pictures.rescale(grey, -3), expected, rtol=1e-14)
    assert pictures.rescale(tile, 2).shape == (26, 20, 3)
    assert pictures.scale_factor([(40, 30), (20, 20)]) == 4  # 40 -> 160 >= 128
    assert pictures.scale_factor([(1200, 30)]) == -3  # 1200 -> 400 <= 512
    assert pictures.scale_factor([(300, 300)]) == 1


def test_montage_layout_pixels_and_captions():
    rng = np.random.default_rng(1)
    grey = rng.random((150, 100))
    rgb = rng.random((150, 100, 3)) * 1.4 - 0.2  # clipped to [0, 1]
    four = rng.random((60, 50, 4))  # four channels: a 2x2 grid of grey tiles
    panels = [(grey, ["grey"]), (rgb, ["rgb", "PSNR 20.00 dB"]), (four, ["four"])]
    out = pictures.montage(panels, columns=2)
    caption = 2 * pictures.LINE_HEIGHT + 2 * pictures.PAD
    gap, cell_w, cell_h = pictures.GAP, 128, 150 + caption
    assert out.shape == (2 * (cell_h + gap) + gap, 2 * (cell_w + gap) + gap, 3)
    offset = gap + (cell_w - 100) // 2
    grey8 = np.rint(grey * 255)
    np.testing.assert_array_equal(out[gap : gap + 150, offset : offset + 100, 1], grey8)
    left = gap + cell_w + gap + (cell_w - 100) // 2
    np.testing.assert_array_equal(
        out[gap : gap + 150, left : left + 100], np.rint(np.clip(rgb, 0, 1) * 255)
    )
    top = gap + cell_h + gap
    tile = out[top : top + 120, offset : offset + 100, 0]
    np.testing.assert_array_equal(tile[:60, 50:], np.rint(four[:, :, 1] * 255))
    np.testing.assert_array_equal(tile[60:, :50], np.rint(four[:, :, 2] * 255))
    strips = [
        out[t + 150 : t + cell_h, c : c + cell_w]
        for t, c in ((gap, gap), (gap, 2 * gap + cell_w), (top, gap))
    ]
    assert all((s != pictures.BACKGROUND).sum() > 30 for s in strips)
    assert not any(np.array_equal(strips[i], strips[j]) for i in range(3) for j in range(i))


# -- spectrum ------------------------------------------------------------------------------


def test_transfer_picture_marks_the_zeros():
    op = ConvOperator(load_kernel("box:size=4").array, (8, 8), Geometry(boundary="wrap"))
    result = analyze(op)
    picture = spectrum_picture(op, result)
    assert picture.dtype == np.uint8 and picture.shape == (256, 256, 3)
    cyan = np.all(picture[::32, ::32] == [0, 255, 255], axis=2)
    magnitude = np.fft.fftshift(np.abs(np.fft.fft2(np.ones((4, 4)) / 16, s=(8, 8))))
    np.testing.assert_array_equal(cyan, magnitude < 1e-12)


def test_bank_picture_is_the_singular_value_distribution():
    bank = np.random.default_rng(15).standard_normal((3, 2, 3, 3))
    op = ConvOperator(bank, (8, 8, 2), Geometry(boundary="wrap"))
    picture = spectrum_picture(op, analyze(op))
    assert picture.dtype == np.uint8 and picture.shape == (256, 512, 3)
    # sorted largest first: the filled height never grows from left to right
    filled = (picture[:250] != picture[0, -1]).any(axis=2).sum(axis=0)
    assert np.all(np.diff(filled) <= 1)


def test_spectrum_figure_is_labelled_and_shows_the_data():
    pytest.importorskip("matplotlib")
    from deconv_cli.spectrum import figure_rgb, spectrum_figure

    kernel = load_kernel("motion:length=5,angle=30").array
    op = ConvOperator(kernel, (12, 10), Geometry(boundary="wrap"))
    result = analyze(op, noise_sigma=0.01)
    fig = spectrum_figure(op, result)
    left, right, bar = fig.axes  # the colour bar is added last
    assert "cycles/pixel" in left.get_xlabel() and "cycles/pixel" in left.get_ylabel()
    assert "dB" in bar.get_ylabel()
    # the image is 20·log10 |DFT| of the kernel on the 12x10 grid, zero frequency centred
    magnitude = np.fft.fftshift(np.abs(np.fft.fft2(kernel, s=(12, 10))))
    shown = left.images[0].get_array()
    floor = 20 * math.log10(result.rank_tolerance * magnitude.max())
    np.testing.assert_allclose(shown, np.maximum(20 * np.log10(magnitude), floor), atol=1e-9)
    assert left.images[0].get_extent() == pytest.approx([-0.55, 0.45, -13 / 24, 11 / 24])
    # the noise floor: a line on the colour bar at 20·log10(0.01) = -40 dB
    assert any(np.allclose(line.get_ydata(), -40) for line in bar.lines)
    # right: the singular values of the circulant operator (a dense SVD) and the noise level
    dense = np.stack([op.forward(e.reshape(12, 10)).ravel() for e in np.eye(120)], axis=1)
    singular = np.linalg.svd(dense, compute_uv=False)
    curve, noise = right.lines[0], right.lines[1]
    np.testing.assert_allclose(
        curve.get_ydata(), np.maximum(singular, singular[0] * result.rank_tolerance), rtol=1e-9
    )
    assert np.allclose(noise.get_ydata(), 0.01) and right.get_yscale() == "log"
    picture = figure_rgb(fig)
    assert picture.dtype == np.uint8 and picture.shape == (440, 1100, 3)


def test_transfer_db_frequencies_are_cycles_per_pixel():
    op = ConvOperator(load_kernel("box:size=3").array, (4, 6), Geometry(boundary="wrap"))
    db, fy, fx, _ = transfer_db(op, 1e-12)
    assert fy.tolist() == [-0.5, -0.25, 0.0, 0.25]
    np.testing.assert_allclose(fx, [-0.5, -1 / 3, -1 / 6, 0, 1 / 6, 1 / 3])
    assert db[2, 3] == pytest.approx(0.0)  # the kernel sums to 1
