"""The error JPEG compression leaves in decoded pixels, from its quantization tables.

JPEG codes each 8×8 block of the luma Y and the chroma Cb, Cr (JFIF; Pillow subsamples
the chroma 2×2 by default) by its orthonormal DCT, each coefficient rounded to a
multiple of its table's step ``q``. The error is not white and is mostly gone from the
finest wavelet band, but the steps say how large it is. :func:`jpeg_error` estimates
its variance per pixel; :func:`jpeg_tables_from_file` reads the steps from a file;
without them the steps are recognized from the pixels (Fan & de Queiroz 2003).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np

BLOCK = 8
MIN_BLOCKS = 16
CROP = 1024  # the central crop (on the 16-pixel grid of 4:2:0 blocks) looked at: 25 MB
# the JPEG standard's tables (Annex K), natural order; libjpeg scales them by quality
LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
).reshape(8, 8)  # fmt: skip
CHROMA = np.full((8, 8), 99.0)
CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
# low AC frequencies where the steps are recognized: u + v ≤ 4, not the DC
DETECT = [(u, v) for u in range(5) for v in range(5) if 0 < u + v <= 4]
DETECT_MIN = 5  # frequencies with a recognized step > 1 to call the data JPEG
NEAR = 0.8  # share of nonzero coefficients within the tolerance of a multiple of q
TOL = 1.0  # tolerance: decoded pixels are rounded (coefficient noise std ≈ 0.3)
MAX_STEP = 120
KEPT_MIN = 0.01  # frequencies with 1% of coefficients kept bound the noise before compression
T_GRID = np.geomspace(1e-3, 1e2, 400)  # λq values for the Laplacian fit


@dataclass(frozen=True)
class JpegTables:
    """A JPEG file's quantization steps (8×8, natural order, pixel units 0–255).

    Attributes
    ----------
    luma : ndarray (8, 8)
    chroma : ndarray (8, 8) or None
        None for a greyscale file.
    subsampling : tuple of int
        The chroma's subsampling factors (rows, columns): (2, 2) for 4:2:0.
    """

    luma: np.ndarray
    chroma: np.ndarray | None = None
    subsampling: tuple[int, int] = (1, 1)


def jpeg_tables_from_file(path: str | PathLike) -> JpegTables | None:
    """The quantization tables of a JPEG file, or None if ``path`` is not a readable JPEG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or not image.quantization:
                return None
            tables = {
                k: np.asarray(v, dtype=np.float64).reshape(8, 8)
                for k, v in image.quantization.items()
            }
            layers = getattr(image, "layer", [])
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    luma = tables[min(tables)]
    if len(layers) < 3:
        return JpegTables(luma=luma)
    (_, h0, v0, _), (_, h1, v1, t1) = layers[0], layers[1]
    chroma = tables.get(t1, luma)
    return JpegTables(luma=luma, chroma=chroma, subsampling=(max(1, v0 // v1), max(1, h0 // h1)))


def standard_tables(quality: int) -> JpegTables:
    """libjpeg's tables for ``quality`` (1–100) with 4:2:0 chroma: what Pillow writes."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality

    def scaled(table):
        return np.clip(np.floor((table * scale + 50) / 100), 1, 255)

    return JpegTables(luma=scaled(LUMA), chroma=scaled(CHROMA), subsampling=(2, 2))


def jpeg_error(stack: np.ndarray, tables: JpegTables | None = None) -> tuple[float, str] | None:
    """The variance per pixel of the JPEG error in ``stack`` (H×W×C, values ``k/255``)
    and a name (``"jpeg q≈90"``), or None for data that is not JPEG-decoded.

    Notes
    -----
    The block DCT is orthonormal, so a block's squared pixel error is the sum of its
    64 coefficient errors: per pixel, the mean over frequencies of ``E[(c - q·round(c/q))²]``.
    Each AC coefficient is modelled as Laplacian, ``p(c) = λ/2·exp(-λ|c|)`` (Lam &
    Goodman 2000), ``λ`` fitted by maximum likelihood to the decoded indices
    ``round(c/q)``: coarse steps on a spread-out coefficient give the uniform ``q²/12``,
    coefficients rounded to 0 give their own (smaller) variance. The DC term:
    ``min(q²/12, var)``. Noise present before the compression stays where a coefficient
    is kept: its variance, bounded by the smallest fitted ``2/λ²`` among frequencies with
    at least 1% kept, is added in proportion to the share kept. Colour: the errors of Y,
    Cb and Cr (subsampled planes averaged 2×2 as libjpeg does) go to R, G, B through the
    JFIF matrix, taken as independent;
    the detail the chroma subsampling itself removed is not seen (it is gone from the
    data) and is not counted. The decoder's rounding to 8 bits adds ``1/12``.
    Without ``tables``, each step of the low frequencies is the largest ``q`` whose
    multiples hold 80% of the nonzero coefficients (Fan & de Queiroz 2003), and the
    tables are the standard ones at the quality that fits them best; only data whose
    8×8 grid starts at the first pixel is recognized. Large images: the central
    1024×1024 crop (on the block grid).

    References
    ----------
    Z. Fan, R. L. de Queiroz, "Identification of bitmap compression history: JPEG
    detection and quantizer estimation", IEEE TIP 12(2), 2003. E. Y. Lam, J. W. Goodman,
    "A mathematical analysis of the DCT coefficient distributions for images", IEEE TIP
    9(10), 2000.
    """
    h, w = stack.shape[:2]
    top, left = (max(0, n - CROP) // 2 // 16 * 16 for n in (h, w))
    pixels = np.asarray(stack[top : top + CROP, left : left + CROP], dtype=np.float64) * 255
    colour = pixels.shape[-1] == 3
    luma = _ycbcr(pixels)[0] if colour else pixels[..., 0]
    if min(luma.shape) < BLOCK or luma.shape[0] // BLOCK * (luma.shape[1] // BLOCK) < MIN_BLOCKS:
        return None
    if tables is None:
        tables = _recognize(_blocks(luma))
        if tables is None:
            return None
    quality = _quality(tables.luma)
    name = "jpeg" if quality is None else f"jpeg q≈{quality}"
    vy = _plane_error(_blocks(luma), tables.luma)
    if not colour or tables.chroma is None:
        return (vy + 1 / 12) / 255**2, name
    _, cb, cr = _ycbcr(pixels)
    sy, sx = tables.subsampling
    vb, vr = (_plane_error(_blocks(_downsample(p, sy, sx)), tables.chroma) for p in (cb, cr))
    rgb = vy + np.array([1.402**2 * vr, 0.344136**2 * vb + 0.714136**2 * vr, 1.772**2 * vb])
    return float(np.mean(rgb) + 1 / 12) / 255**2, name


def _ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i] for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, (b - y) / 1.772, (r - y) / 1.402


def _downsample(plane: np.ndarray, sy: int, sx: int) -> np.ndarray:
    h, w = plane.shape[0] // sy * sy, plane.shape[1] // sx * sx
    return plane[:h, :w].reshape(h // sy, sy, w // sx, sx).mean(axis=(1, 3))


def _blocks(plane: np.ndarray) -> np.ndarray:
    """The orthonormal DCT of the whole 8×8 blocks of ``plane``, shape (n, 8, 8)."""
    from scipy.fft import dctn

    h, w = plane.shape[0] // BLOCK * BLOCK, plane.shape[1] // BLOCK * BLOCK
    blocks = plane[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(-1, BLOCK, BLOCK)
    return dctn(blocks - 128, axes=(1, 2), norm="ortho")


def _plane_error(coefficients: np.ndarray, table: np.ndarray) -> float:
    """Mean over the 64 frequencies of the expected squared error of the decoded
    coefficients about the noise-free ones."""
    n = len(coefficients)
    if n == 0:
        return 0.0
    errors = np.zeros((8, 8))
    dc = coefficients[:, 0, 0]
    errors[0, 0] = min(table[0, 0] ** 2 / 12, float(np.var(dc)))
    kept = np.zeros((8, 8))
    spread = np.full((8, 8), np.inf)
    for u in range(8):
        for v in range(8):
            if u or v:
                q = table[u, v]
                index = np.abs(np.round(coefficients[:, u, v] / q))
                t = _fit_t(index)
                errors[u, v] = q**2 * _laplacian_error(t)
                kept[u, v] = np.mean(index > 0)
                if kept[u, v] >= KEPT_MIN:
                    spread[u, v] = 2 * (q / t) ** 2
    noise = float(spread.min()) if np.isfinite(spread).any() else 0.0
    return float(np.mean(errors + noise * kept))


def _fit_t(index: np.ndarray) -> float:
    """Maximum-likelihood ``t = λq`` of a Laplacian from its quantized indices ``|k|``.

    ``P(k = 0) = 1 - e^{-t/2}``, ``P(|k| = j ≥ 1) = e^{-t(j - 1/2)} (1 - e^{-t})``. With
    every index 0 the likelihood grows without bound: ``t = ∞``, no error counted.
    """
    n = len(index)
    zeros = int(np.count_nonzero(index == 0))
    if zeros == n:
        return np.inf
    t = T_GRID
    total = float(np.sum(index[index > 0] - 0.5))
    loglik = zeros * np.log1p(-np.exp(-t / 2)) + (n - zeros) * np.log1p(-np.exp(-t)) - t * total
    return float(t[np.argmax(loglik)])


def _laplacian_error(t: float) -> float:
    """``E[(c - round(c))²]`` for a Laplacian ``c`` of rate ``t`` (step 1)."""
    if not np.isfinite(t):
        return 0.0
    e = np.linspace(-0.5, 0.5, 401)
    zero = np.trapezoid(e**2 * t / 2 * np.exp(-t * np.abs(e)), e)
    rest = t * np.exp(-t) / -np.expm1(-t) * np.trapezoid(e**2 * np.exp(-t * e), e)
    return float(zero + rest)


def _recognize(coefficients: np.ndarray) -> JpegTables | None:
    """The standard tables whose luma steps fit the steps seen in the low frequencies,
    or None when fewer than 5 frequencies show a step above 1 (not JPEG data)."""
    seen = {}
    for u, v in DETECT:
        c = coefficients[:, u, v]
        c = c[np.abs(c) > TOL]
        if len(c) < 20:
            continue
        for q in range(MAX_STEP, 1, -1):
            tol = min(TOL, q / 4)
            if np.mean(np.abs(c - q * np.round(c / q)) < tol) >= NEAR:
                seen[(u, v)] = q
                break
    if len(seen) < DETECT_MIN:
        return None
    best = min(range(1, 101), key=lambda quality: _misfit(standard_tables(quality).luma, seen))
    return standard_tables(best)


def _misfit(table: np.ndarray, seen: dict) -> float:
    return float(sum(abs(np.log(table[uv] / q)) for uv, q in seen.items()))


def _quality(luma: np.ndarray) -> int | None:
    """The libjpeg quality whose standard luma table is ``luma``, if one is (±1 step)."""
    for quality in range(1, 101):
        if np.all(np.abs(standard_tables(quality).luma - luma) <= 1):
            return quality
    return None
