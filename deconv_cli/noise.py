"""Seeded noise models for simulated data: ``gaussian:sigma=S`` and ``poisson:peak=P``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import DeconvError

_PARAMS = {"gaussian": "sigma", "poisson": "peak"}


@dataclass(frozen=True)
class Noise:
    """White gaussian noise of std ``sigma``, or Poisson counts of ``peak`` photons for 1.0."""

    kind: str
    value: float

    def describe(self) -> str:
        return f"{self.kind}:{_PARAMS[self.kind]}={self.value:g}"

    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return a noisy copy of ``y`` (same dtype)."""
        if self.kind == "gaussian":
            noisy = y + self.value * rng.standard_normal(y.shape)
        else:
            noisy = rng.poisson(np.clip(y, 0, None) * self.value) / self.value
        return noisy.astype(y.dtype, copy=False)


def parse_noise(spec: str | None) -> Noise | None:
    """Parse ``gaussian:sigma=S`` or ``poisson:peak=P`` (``None`` -> no noise)."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    if kind not in _PARAMS:
        raise DeconvError(f"--noise: `{spec}` is not `gaussian:sigma=S` or `poisson:peak=P`")
    name, _, value = rest.partition("=")
    if name != _PARAMS[kind]:
        raise DeconvError(f"--noise: `{spec}`: {kind} noise takes `{_PARAMS[kind]}=VALUE`")
    try:
        number = float(value)
    except ValueError:
        raise DeconvError(f"--noise: `{value}` in `{spec}` is not a number") from None
    if not np.isfinite(number) or number < 0 or (kind == "poisson" and number == 0):
        raise DeconvError(f"--noise: `{spec}`: the {name} must be a finite positive number")
    return Noise(kind, number)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white gaussian noise in ``image``, estimated from its wavelets.

    Uses ``skimage.restoration.estimate_sigma`` (Donoho's median absolute deviation of
    the finest diagonal wavelet coefficients), averaged over channels.
    """
    from skimage.restoration import estimate_sigma

    channel_axis = -1 if image.ndim == 3 else None
    sigma = estimate_sigma(
        image.astype(np.float64, copy=False), channel_axis=channel_axis, average_sigmas=True
    )
    return float(sigma)
