"""Parametric blind kernels and the confidence of a blind estimate.

A parametric family (``gaussian`` σ, ``disk`` radius, ``motion`` length and angle) is
fitted by maximum marginal likelihood: the image is modelled as Gaussian with a power
spectrum falling as ``|ω|^(−2p)`` and the noise as white, both with their levels (and
``p``) fitted too, and the kernel's parameters maximize the likelihood of the data's
spectrum (:class:`MarginalLikelihood`; Lagendijk, Biemond & Boekee 1990). Unlike the MAP
energy ``‖k * x − y‖² + λ‖∇x‖₀`` at its best ``x``, which is lowest for no blur at all
(Levin et al. 2009), the likelihood integrates over the images and so penalizes a
too small kernel as much as a too large one.

The confidence is how much sharper the estimate makes the image than no deblurring
(a delta), by the normalized sparsity of the latent image's gradients (see
:func:`confidence`); the same figure for the Gaussian with the estimate's second
moments is given beside it.

References
----------
R. L. Lagendijk, J. Biemond, D. E. Boekee, "Identification and restoration of noisy
blurred images using the expectation-maximization algorithm", IEEE TASSP 38(7), 1990.
L. Moisan, "Periodic plus smooth image decomposition", JMIV 39(2), 2011.
A. Levin, Y. Weiss, F. Durand, W. T. Freeman, "Understanding and evaluating blind
deconvolution algorithms", CVPR 2009.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli import blind
from deconv_cli.errors import DeconvError

FAMILIES = ("free", "gaussian", "disk", "motion")
P_RANGE = (0.5, 1.5)
"""The range of the image model's exponent ``p`` (power spectrum ``∝ |ω|^(−2p)``):
natural images measure ``2p`` = 1.88 ± 0.43 (van der Schaaf & van Hateren 1996); left
free over a wider range, ``p`` trades off against a Gaussian's σ."""
FIT_LAMBDA = 1e-3
"""The L0 weight of the latent images the confidence compares."""


@dataclass
class Fit:
    """A parametric kernel: its spec (usable with ``-k``), parameters and array."""

    spec: str
    params: dict[str, float]
    kernel: np.ndarray


def moments(kernel: np.ndarray) -> tuple[float, float, float]:
    """``(along, across, angle)``: the standard deviations along and across the kernel's
    principal axis, and that axis' angle in degrees CCW (y up), in [0, 180)."""
    rows, cols = np.indices(kernel.shape)
    x = cols - float((cols * kernel).sum())
    y = -(rows - float((rows * kernel).sum()))  # y up the screen
    cov = np.array(
        [
            [(kernel * x * x).sum(), (kernel * x * y).sum()],
            [(kernel * x * y).sum(), (kernel * y * y).sum()],
        ]
    )
    values, vectors = np.linalg.eigh(cov)
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1])) % 180
    return math.sqrt(max(values[1], 0)), math.sqrt(max(values[0], 0)), angle


def _spec(family: str, theta: np.ndarray) -> tuple[str, dict[str, float]]:
    if family == "gaussian":
        params = {"sigma": round(float(theta[0]), 2)}
    elif family == "disk":
        params = {"radius": round(float(theta[0]), 2)}
    else:
        params = {"length": round(float(theta[0]), 1), "angle": round(float(theta[1]) % 180, 1)}
    return f"{family}:" + ",".join(f"{k}={v:g}" for k, v in params.items()), params


def family_kernel(family: str, theta, bound: tuple[int, int]) -> np.ndarray:
    """The family's kernel for parameters ``theta``, centred in a ``bound`` array
    (cropped to it where larger)."""
    from deconv_cli.kernels import load_kernel

    spec, _ = _spec(family, np.asarray(theta, dtype=float))
    if family == "gaussian":
        spec += f",size={bound[0]}x{bound[1]}"
    k = load_kernel(spec).array
    out = np.zeros(bound)
    h, w = min(k.shape[0], bound[0]), min(k.shape[1], bound[1])
    top, left = (k.shape[0] - h) // 2, (k.shape[1] - w) // 2
    r, c = (bound[0] - h) // 2, (bound[1] - w) // 2
    out[r : r + h, c : c + w] = k[top : top + h, left : left + w]
    return out / out.sum()


def _moment_sigma(kernel: np.ndarray) -> float:
    """The σ of the Gaussian with the second moments of the kernel's strong taps (those
    above 1/4 of its peak: the faint scattered ones inflate the moments)."""
    along, across, _ = moments(np.where(kernel >= kernel.max() / 4, kernel, 0) / kernel.sum())
    return max(math.sqrt((along**2 + across**2) / 2), 0.3)


def periodic_spectrum(gray: np.ndarray) -> np.ndarray:
    """``rfft2`` of the periodic component of ``gray`` (Moisan 2011): ``gray`` minus the
    smooth image whose Laplacian is the jump across the crop's opposite edges, so the
    spectrum has no cross of leaked boundary energy.

    With ``v`` the jumps on the border pixels, the smooth part is
    ``S = V / (2 cos(2πq/M) + 2 cos(2πr/N) − 4)`` (``S₀₀ = 0``).
    """
    from scipy.fft import rfft2

    m, n = gray.shape
    v = np.zeros_like(gray)
    v[0, :] += gray[-1, :] - gray[0, :]
    v[-1, :] -= gray[-1, :] - gray[0, :]
    v[:, 0] += gray[:, -1] - gray[:, 0]
    v[:, -1] -= gray[:, -1] - gray[:, 0]
    q = np.arange(m)[:, None]
    r = np.arange(n // 2 + 1)[None, :]
    den = 2 * np.cos(2 * np.pi * q / m) + 2 * np.cos(2 * np.pi * r / n) - 4
    den[0, 0] = 1
    smooth = rfft2(v) / den
    smooth[0, 0] = 0
    return rfft2(gray) - smooth


class MarginalLikelihood:
    """``−log p(y | k)`` of a Gaussian image model, the image's hyperparameters
    profiled out.

    The sharp image is modelled as Gaussian with the power spectrum
    ``a·|D(ω)|^(−2p)`` (``|D|² = 4 sin²(ω₁/2) + 4 sin²(ω₂/2)``: natural images fall
    about as ``1/|ω|²``, ``p ≈ 1``), the noise as white with variance ``s``. Each
    frequency of the data is then independent,
    ``Y(ω) ~ CN(0, v(ω))``, ``v = s + a |K(ω)|² |D(ω)|^(−2p)``, and

        ``−log p(y | k) = min_{a, s, p} Σ_ω log v(ω) + |Y(ω)|² / v(ω)``

    (up to a constant; ``Y`` the periodic component's spectrum, the mean excluded).
    Unlike the MAP energy it does not favour no blur: a too small kernel leaves the
    data's fall-off at high frequencies unexplained, a too large one its detail.
    """

    def __init__(self, gray: np.ndarray):
        self.shape = gray.shape
        self.power = np.abs(periodic_spectrum(gray)) ** 2 / gray.size
        m, n = gray.shape
        q = np.arange(m)[:, None]
        r = np.arange(n // 2 + 1)[None, :]
        d2 = 4 * np.sin(np.pi * q / m) ** 2 + 4 * np.sin(np.pi * r / n) ** 2
        d2[0, 0] = 1
        self.log_d2 = np.log(d2)
        self.weight = np.full(self.power.shape, 2.0)  # rfft2: the half-plane counts twice
        self.weight[:, 0] = 1
        if n % 2 == 0:
            self.weight[:, -1] = 1
        self.weight[0, 0] = 0
        self._start: np.ndarray | None = None

    def __call__(self, kernel: np.ndarray) -> float:
        from scipy.optimize import minimize

        k2 = np.abs(blind._psf2otf(kernel, self.shape)) ** 2
        w, power, log_d2 = self.weight, self.power, self.log_d2

        def cost(h: np.ndarray) -> tuple[float, np.ndarray]:
            signal = math.exp(h[0]) * k2 * np.exp(-h[2] * log_d2)
            v = math.exp(h[1]) + signal
            slope = w * (1 - power / v) / v
            value = float((w * (np.log(v) + power / v)).sum())
            grad = [
                (slope * signal).sum(),
                (slope * (v - signal)).sum(),
                -(slope * signal * log_d2).sum(),
            ]
            return value, np.array(grad)

        if self._start is None:
            level = float(np.median(power * np.exp(log_d2) / np.maximum(k2, 1e-12)))
            self._start = np.array([math.log(level), math.log(float(np.median(power))), 1.0])
        found = minimize(
            cost, self._start, jac=True, method="L-BFGS-B", bounds=[(-40, 20), (-40, 20), P_RANGE]
        )
        self._start = found.x  # warm start: neighbouring kernels have close hyperparameters
        return float(found.fun)


def fit_family(family: str, gray: np.ndarray, bound: tuple[int, int]) -> Fit:
    """Fit ``family``'s parameters to ``gray`` by maximum marginal likelihood
    (:class:`MarginalLikelihood`) within ``bound``.

    Gaussian σ in [0.3, side/6] and disk radius in [0.5, (side − 1)/2]: the best of a
    20-point geometric grid, refined by bounded Brent between its neighbours. Motion:
    lengths from 3 px to the side every 1.5 px, at each length angles ``180°/⌈2L⌉``
    apart (the bar's end moves by about one pixel), the three best refined by bounded
    Nelder-Mead.
    """
    from scipy.optimize import minimize, minimize_scalar

    if family not in FAMILIES[1:]:
        raise DeconvError(f"`{family}` is not one of {', '.join(FAMILIES)}", parameter="family")
    likelihood = MarginalLikelihood(gray)
    side = min(bound)

    def cost(theta) -> float:
        return likelihood(family_kernel(family, theta, bound))

    if family == "motion":
        grid = [
            (length, angle, 180 / max(18, math.ceil(2 * length)))
            for length in np.arange(3, side + 0.1, 1.5)
            for angle in np.arange(0, 180, 180 / max(18, math.ceil(2 * length)))
        ]
        scores = np.array([cost([length, angle]) for length, angle, _ in grid])
        refined = []
        for i in np.argsort(scores)[:3]:
            length, angle, step = grid[i]
            found = minimize(
                cost,
                [length, angle],
                method="Nelder-Mead",
                bounds=[(1.0, float(side)), (angle - 2 * step, angle + 2 * step)],
                options={
                    "xatol": 0.02,
                    "fatol": 1e-3,
                    "initial_simplex": [
                        [length, angle],
                        [length + 1, angle],
                        [length, angle + step / 2],
                    ],
                },
            )
            refined.append((float(found.fun), found.x))
        theta = min(refined, key=lambda pair: pair[0])[1]
    else:
        low, high = (0.3, side / 6) if family == "gaussian" else (0.5, (side - 1) / 2)
        grid = np.geomspace(low, high, 20)
        i = int(np.argmin([cost([v]) for v in grid]))
        found = minimize_scalar(
            lambda v: cost([v]),
            bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
            method="bounded",
            options={"xatol": 0.01},
        )
        theta = np.array([found.x])
    spec, params = _spec(family, theta)
    from deconv_cli.kernels import load_kernel

    return Fit(spec, params, load_kernel(spec).array)


def _latent(gray: np.ndarray, kernel: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x, k)``: the L0 latent image of ``gray`` for ``kernel`` (on the observed crop's
    extended domain) and the kernel centred in an odd array."""
    kernel = blind.center_kernel(kernel)
    pad = max(kernel.shape)
    shape = tuple(s | 1 for s in kernel.shape)
    k = np.zeros(shape)
    k[: kernel.shape[0], : kernel.shape[1]] = kernel
    padded = blind.periodic_pad(gray, pad)
    return blind._extended(blind.latent_l0(padded, k, lam), pad, gray.shape, shape), k


def sparsity(gray: np.ndarray, kernel: np.ndarray) -> float:
    """``‖∇x‖₁ / (‖∇x‖₂ √n)`` of the latent image ``x`` for ``kernel``: Krishnan et al.'s
    normalized sparsity (2011), lower for sharper images (blur raises it), and unlike
    the MAP energy not lowest for no deblurring at all."""
    x, _ = _latent(gray, kernel, FIT_LAMBDA)
    gx, gy = blind._gradients(x)
    g = np.hypot(gx[:-1], gy[:, :-1])
    norm = math.sqrt(float((g * g).sum()) * g.size)
    return float(g.sum()) / norm if norm > 0 else 1.0


def confidence(gray: np.ndarray, kernel: np.ndarray) -> tuple[float, str]:
    """``(confidence, basis)``: ``1 − s(k̂)/s(δ)``, how much sparser (sharper) the
    image's gradients become with ``kernel`` than with no deblurring (:func:`sparsity`),
    clipped to [0, 1]; the basis adds the same figure for the Gaussian with the
    kernel's second moments."""
    delta = sparsity(gray, np.ones((1, 1)))
    mine = 1 - sparsity(gray, kernel) / delta
    sigma = _moment_sigma(kernel)
    side = 2 * math.ceil(3 * sigma) + 1
    gauss = 1 - sparsity(gray, family_kernel("gaussian", [sigma], (side, side))) / delta
    basis = (
        f"sparsity gain over no deblurring; the moment-matched gaussian (σ={sigma:.2f}) {gauss:.2f}"
    )
    return min(max(mine, 0.0), 1.0), basis
