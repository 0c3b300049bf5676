"""Seeded noise models for simulated data: ``gaussian:sigma=S`` and ``poisson:peak=P``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import DeconvError

_PARAMS = {"gaussian": "sigma", "poisson": "peak"}
# numpy's Poisson sampler refuses means above about 9.2e18 (int64 counts); stay well below.
_MAX_POISSON_MEAN = 1e18


@dataclass(frozen=True)
class Noise:
    """White gaussian noise of std ``sigma``, or Poisson counts of ``peak`` photons for 1.0."""

    kind: str
    value: float

    def describe(self) -> str:
        return f"{self.kind}:{_PARAMS[self.kind]}={self.value:g}"

    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return a noisy copy of ``y`` (same dtype).

        Raises
        ------
        DeconvError
            The noise cannot be drawn for this data (a Poisson mean above 1e18
            photons) or overflows the data's dtype.
        """
        if self.kind == "gaussian":
            with np.errstate(over="ignore", invalid="ignore"):
                noisy = (y + self.value * rng.standard_normal(y.shape)).astype(y.dtype, copy=False)
        else:
            mean = np.clip(y, 0, None) * self.value
            top = float(mean.max(initial=0.0))
            if not top < _MAX_POISSON_MEAN:
                raise DeconvError(
                    f"--noise: `{self.describe()}`: the brightest pixel would count {top:.3g} "
                    f"photons, more than Poisson noise can be drawn for ({_MAX_POISSON_MEAN:.0e}); "
                    "give a smaller peak"
                )
            noisy = (rng.poisson(mean) / self.value).astype(y.dtype, copy=False)
        if not np.isfinite(noisy).all():
            raise DeconvError(
                f"--noise: `{self.describe()}` overflows {y.dtype} (the noisy data is not "
                "finite); give a smaller value"
            )
        return noisy


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
