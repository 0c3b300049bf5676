"""Pictures of an operator's spectrum: ``deconv analyze --spectrum PATH``.

With matplotlib installed (``pip install deconv-cli[plot]``), :func:`spectrum_figure`
draws a labelled figure: for a single kernel, the magnitude of its transfer
function in dB over the frequencies (cycles/pixel, zero at the centre) with a
colour bar, the noise floor drawn as a cyan contour and marked on the bar; and, in
every case, the sorted singular values against the noise level. Matplotlib is
imported only here, inside the functions, with its Agg canvas (no window, no
global backend change).

Without matplotlib, :func:`spectrum_picture` draws the raw picture with the inferno
table (no axes): the transfer function on a log scale, zeros in cyan; or the sorted
singular values of a kernel bank as bars.

The noise floor is the data's noise level σ: a singular value ``σᵢ < σ`` passes a
unit component of the image weaker than the noise, which the exact inverse then
amplifies by ``1/σᵢ``.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.analysis import Analysis, single_kernel
from deconv_cli.errors import DeconvError, mention
from deconv_cli.operators import ConvOperator

PLOT_HINT = "`pip install deconv-cli[plot]` gives the labelled figure"
_ZERO_COLOUR = np.array([0, 255, 255], dtype=np.uint8)
_GRID_COLOUR = np.array([70, 70, 70], dtype=np.uint8)
_MIN_PICTURE = 256
DB_BELOW_NOISE = 40  # the colour scale's bottom, below the noise floor (darker is black)


def has_matplotlib() -> bool:
    """Whether matplotlib can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or None entry in sys.modules
        return False


def write_spectrum(
    path, op: ConvOperator, analysis: Analysis, *, overwrite: bool = False, inputs=()
) -> bool:
    """Write the labelled figure (with matplotlib) or the raw picture, as 8-bit RGB.

    Returns True for the labelled figure.
    """
    from deconv_cli.io import write_image

    labelled = has_matplotlib()
    rgb = figure_rgb(spectrum_figure(op, analysis)) if labelled else spectrum_picture(op, analysis)
    # write_image takes values on the [0, 1] scale; rint(k / 255 · 255) gives k back exactly.
    write_image(path, rgb / 255.0, dtype="uint8", overwrite=overwrite, inputs=inputs)
    return labelled


# -- the labelled figure (matplotlib) -------------------------------------------------------


def transfer_db(op: ConvOperator, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``20·log10 |H|`` of a single kernel on the image grid, zero frequency centred.

    Returns the dB values (zeros, ``|H| <= rtol·max``, at the floor), the vertical and
    horizontal frequencies (cycles/pixel, ascending) and the floor in dB.
    """
    kernel = op.effective[0, 0]
    h, w = op.input_shape[:2]
    size = (max(h, kernel.shape[0]), max(w, kernel.shape[1]))
    magnitude = np.fft.fftshift(np.abs(np.fft.fft2(kernel, s=size)))
    top = float(magnitude.max())
    floor = 20 * math.log10(max(rtol * top, np.finfo(np.float64).tiny))
    with np.errstate(divide="ignore"):
        db = np.maximum(20 * np.log10(magnitude), floor)
    fy = np.fft.fftshift(np.fft.fftfreq(size[0]))
    fx = np.fft.fftshift(np.fft.fftfreq(size[1]))
    return db, fy, fx, floor


def _singular_values(op: ConvOperator, analysis: Analysis) -> tuple[np.ndarray, str]:
    values = analysis.sorted_singular_values()
    if values is not None:
        return values, "singular values σᵢ"
    if single_kernel(op):
        kernel = op.effective[0, 0]
        magnitude = np.abs(np.fft.fft2(kernel, s=op.input_shape[:2])).ravel()
        return np.sort(magnitude)[::-1], "|H| sorted (the circular stand-in's σᵢ)"
    raise DeconvError(
        "the singular values of this kernel bank are not computed at this size (only "
        f"estimates of the extremes); use {mention('boundary', 'wrap')} or a smaller "
        f"{mention('shape')}",
        parameter="spectrum",
    )


def spectrum_figure(op: ConvOperator, analysis: Analysis):
    """A matplotlib ``Figure``: |H| in dB (single kernels) and the sorted singular values.

    Left (single kernels): ``20·log10 |H(fy, fx)|`` over the frequencies in
    cycles/pixel, a colour bar in dB from :data:`DB_BELOW_NOISE` dB below the noise
    floor (or from the smallest value) to the top, the noise floor ``20·log10 σ`` as
    a cyan contour and a cyan line on the bar. Right: the singular values from the largest, on a log
    scale, with the noise level σ and the rank tolerance as horizontal lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    single = single_kernel(op)
    sigma = analysis.noise_sigma
    fig = Figure(figsize=(11, 4.4) if single else (6, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if single else 1, squeeze=False)[0]
    if single:
        ax = axes[0]
        db, fy, fx, floor = transfer_db(op, analysis.rank_tolerance)
        dy, dx = (fy[1] - fy[0]) if fy.size > 1 else 1, (fx[1] - fx[0]) if fx.size > 1 else 1
        extent = (fx[0] - dx / 2, fx[-1] + dx / 2, fy[0] - dy / 2, fy[-1] + dy / 2)
        noise_db = 20 * math.log10(sigma) if sigma > 0 else floor
        low = max(float(db.min()), noise_db - DB_BELOW_NOISE)
        image = ax.imshow(
            db, cmap="inferno", origin="lower", extent=extent, aspect="auto", vmin=low
        )
        bar = fig.colorbar(image, ax=ax)
        bar.set_label("|H| (dB); cyan: the noise floor")
        if db.min() < noise_db < db.max():
            ax.contour(fx, fy, db, levels=[noise_db], colors="cyan", linewidths=1)
        bar.ax.axhline(noise_db, color="cyan", linewidth=2)
        ax.set_xlabel("horizontal frequency fx (cycles/pixel)")
        ax.set_ylabel("vertical frequency fy (cycles/pixel)")
        ax.set_title(f"transfer function; noise floor {noise_db:.1f} dB")
    ax = axes[-1]
    values, what = _singular_values(op, analysis)
    top = float(values[0]) if values.size else 1.0
    shown = np.maximum(values, analysis.rank_tolerance * top)
    ax.semilogy(np.arange(1, values.size + 1), shown, color="black", label=what)
    ax.axhline(sigma, color="tab:cyan", linestyle="--", label=f"noise σ = {sigma:.3g}")
    ax.axhline(
        analysis.rank_tolerance * top, color="grey", linestyle=":", label="rank tolerance (zero)"
    )
    ax.set_xlabel("index i (largest first)")
    ax.set_ylabel("σᵢ")
    ax.set_title("sorted singular values")
    fig.suptitle(f"{analysis.verdict} (noise σ = {sigma:.3g})")
    ax.legend(loc="lower left", fontsize="small")
    return fig


def figure_rgb(fig) -> np.ndarray:
    """A drawn matplotlib figure as an ``(h, w, 3)`` uint8 array (its Agg canvas)."""
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba())[:, :, :3]


# -- the raw picture (no matplotlib) --------------------------------------------------------


def spectrum_picture(op: ConvOperator, analysis: Analysis) -> np.ndarray:
    """A picture of ``op``'s spectrum as an ``(h, w, 3)`` uint8 RGB array, without axes.

    A single kernel: the magnitude of its transfer function (the DFT of the effective
    kernel on the image grid), zero frequency at the centre, log scale from the
    smallest nonzero value (black) to the maximum (pale yellow); zeros (at or below
    ``rank_tolerance · max``) in cyan. A kernel bank: the singular values sorted from
    the largest (left) to the smallest (right), log scale upwards from the smallest
    nonzero one, a grey line per decade down from the largest, zeros as a cyan band
    along the bottom.
    """
    if single_kernel(op):
        return _transfer_picture(op, analysis.rank_tolerance)
    values = analysis.sorted_singular_values()
    if values is None:
        _singular_values(op, analysis)  # raises, saying why
    return _distribution_picture(values, analysis.rank_tolerance)


def _log_levels(values: np.ndarray, top: float, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Levels in [0, 1] on a log scale from the smallest nonzero value to ``top``, and
    the zero mask (``values <= rtol·top``)."""
    zero = values <= rtol * top
    floor = float(values[~zero].min()) if (~zero).any() else top
    floor = min(floor, top / 10) if top > 0 else 1.0
    span = math.log10(top / floor) if top > 0 else 1.0
    level = np.log10(np.maximum(values, floor) / floor) / span
    return np.clip(level, 0.0, 1.0), zero


def _transfer_picture(op: ConvOperator, rtol: float) -> np.ndarray:
    from deconv_cli.pictures import colourize

    kernel = op.effective[0, 0]
    h, w = op.input_shape[:2]
    size = (max(h, kernel.shape[0]), max(w, kernel.shape[1]))
    magnitude = np.fft.fftshift(np.abs(np.fft.fft2(kernel, s=size)))
    level, zero = _log_levels(magnitude, float(magnitude.max()), rtol)
    rgb = colourize(level)
    rgb[zero] = _ZERO_COLOUR
    factor = max(1, math.ceil(_MIN_PICTURE / min(size)))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _distribution_picture(values: np.ndarray, rtol: float) -> np.ndarray:
    from deconv_cli.pictures import colourize

    width, height, band = 512, 256, 6
    top = float(values[0]) if values.size else 0.0
    picked = values[np.round(np.linspace(0, values.size - 1, width)).astype(np.intp)]
    level, zero = _log_levels(picked, top, rtol)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:] = colourize(0.0)
    usable = height - band
    nonzero = values[values > rtol * top]
    floor = min(float(nonzero.min()), top / 10) if nonzero.size else top / 10
    decades = math.log10(top / floor) if top > 0 else 1.0
    rows = np.arange(usable)[:, None]
    heights = np.round(level * (usable - 1)).astype(np.intp)
    filled = rows >= (usable - 1 - heights)[None, :]
    colour = colourize(1 - rows / max(usable - 1, 1))
    colour = np.broadcast_to(colour, (usable, width, 3))
    canvas = rgb[:usable]
    canvas[filled & ~zero[None, :]] = colour[filled & ~zero[None, :]]
    for d in range(1, int(decades) + 1):
        row = int(round(d / decades * (usable - 1)))  # d decades below the largest
        canvas[row] = canvas[row] // 2 + _GRID_COLOUR // 2
    rgb[usable:, zero] = _ZERO_COLOUR
    return rgb
