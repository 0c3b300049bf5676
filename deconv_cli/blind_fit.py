"""Parametric blind kernels and the confidence of a blind estimate.

A parametric family (``gaussian`` σ, ``disk`` radius, ``motion`` length and angle) is
fitted to the data directly: its parameters minimize the L0 MAP energy

    ``E(θ) = ‖blur_valid(x_θ, k(θ)) − y‖² + λ·#{|∇x_θ|² ≥ λ}``

over the observed pixels, with ``x_θ`` the latent image for ``k(θ)`` (:func:`fit_family`
says from where and within which bounds: the energy also falls towards no blur).

The confidence is how much sharper the estimate makes the image than no deblurring
(a delta), by the normalized sparsity of the latent image's gradients (see
:func:`confidence`); the same figure for the Gaussian with the estimate's second
moments is given beside it. The MAP energy is not used for this: it is lowest for no
deblurring at all (Levin et al. 2009).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli import blind
from deconv_cli.errors import DeconvError

FAMILIES = ("free", "gaussian", "disk", "motion")
FIT_LAMBDA = 1e-3
"""The L0 weight of the energy the parametric fits and the confidence compare."""


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


def _start(family: str, free: np.ndarray) -> np.ndarray:
    """Parameters from the second moments of the free kernel's strong taps (those above
    1/4 of its peak: the faint scattered ones inflate the moments)."""
    along, across, angle = moments(np.where(free >= free.max() / 4, free, 0) / free.sum())
    if family == "gaussian":
        return np.array([max(math.sqrt((along**2 + across**2) / 2), 0.3)])
    if family == "disk":  # a uniform disc of radius R has variance R²/4 on each axis
        return np.array([max(math.sqrt(2 * (along**2 + across**2)), 0.5)])
    return np.array([max(math.sqrt(12) * along, 1.0), angle])  # a bar: variance L²/12


def _limits(family: str, bound: tuple[int, int], start: np.ndarray) -> list[tuple[float, float]]:
    """The search box: gaussian and disk over their whole range within the bound;
    motion within 30% of the starting length and 20° of the best angle of a grid (the energy of a
    motion blur falls again towards length 0, the no-blur solution MAP prefers:
    Levin et al. 2009)."""
    side = min(bound)
    if family == "gaussian":
        return [(0.3, side / 6)]
    if family == "disk":
        return [(0.5, (side - 1) / 2)]
    length, angle = start
    return [(max(1.0, 0.7 * length), min(float(side), 1.3 * length)), (angle - 20, angle + 20)]


def fit_family(family: str, gray: np.ndarray, estimate: blind.BlindEstimate) -> Fit:
    """Fit ``family``'s parameters to ``gray``: minimize :func:`energy` over them by
    bounded Nelder-Mead, from the best of a grid (gaussian, disk: over their range;
    motion: over the angle, at the length of the free ``estimate``'s moments)."""
    from scipy.optimize import minimize

    if family not in FAMILIES[1:]:
        raise DeconvError(f"--family: `{family}` is not one of {', '.join(FAMILIES)}")
    bound = estimate.bound
    theta = _start(family, estimate.kernel)
    limits = _limits(family, bound, theta)

    def cost(t: np.ndarray) -> float:
        return energy(gray, family_kernel(family, t, bound), FIT_LAMBDA)

    if family == "motion":  # the angle of the strong taps is unreliable: a 10° grid first
        angles = np.arange(0, 180, 10.0)
        best = angles[int(np.argmin([cost(np.array([theta[0], a])) for a in angles]))]
        theta = np.array([theta[0], best])
        limits = _limits(family, bound, theta)
    else:
        grid = np.geomspace(*limits[0], 12)
        theta = np.array([grid[int(np.argmin([cost(np.array([v])) for v in grid]))]])
    found = minimize(
        cost,
        theta,
        method="Nelder-Mead",
        bounds=limits,
        options={"xatol": 0.05, "fatol": 1e-6},
    )
    spec, params = _spec(family, found.x)
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


def energy(gray: np.ndarray, kernel: np.ndarray, lam: float) -> float:
    """The L0 MAP energy ``‖blur_valid(x, k) − y‖² + λ·#{|∇x|² ≥ λ}`` at the latent
    image ``x`` for ``k``, over the observed pixels."""
    x, k = _latent(gray, kernel, lam)
    gx, gy = blind._gradients(x)
    edges = int((gx[:-1] ** 2 + gy[:, :-1] ** 2 >= lam).sum())
    return float(((blind.blur_valid(x, k) - gray) ** 2).sum()) + lam * edges


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
    sigma = _start("gaussian", kernel)[0]
    side = 2 * math.ceil(3 * sigma) + 1
    gauss = 1 - sparsity(gray, family_kernel("gaussian", [sigma], (side, side))) / delta
    basis = (
        f"sparsity gain over no deblurring; the moment-matched gaussian (σ={sigma:.2f}) {gauss:.2f}"
    )
    return min(max(mine, 0.0), 1.0), basis
