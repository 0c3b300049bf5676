"""Seeded noise models for simulated data, and the noise level estimated from data.

A noise SPEC is one step ``kind:param=value`` or several joined by ``+``, applied
left to right, as a camera does (photon and read noise, then 8-bit JPEG):
``gaussian:sigma=0.01+jpeg:quality=90``.

gaussian:sigma=S
    White gaussian noise of standard deviation ``S`` (on the data's scale).
poisson:peak=P
    Photon (shot) noise: a pixel of value ``v`` counts ``Poisson(P·v)`` photons and
    becomes ``count/P``; ``P`` is the photon count of a pixel of value 1 (negative
    values count 0). Its std at ``v`` is ``sqrt(v/P)``: signal-dependent.
quantize:bits=B
    Rounding to the grid of ``1/(2^B − 1)`` (``B`` from 1 to 32), not clipped, so
    negative outputs are quantized too; on [0, 1] data ``B = 8`` is what 8-bit files
    hold. Std ``q/√12``, ``q`` the grid step.
jpeg:quality=Q
    The data stored as an 8-bit JPEG at quality ``Q`` (1-100) and decoded: values on
    the [0, 1] scale become ``round(255·v)`` clipped to 0-255 (as ``uint8`` images are
    written), are encoded in memory with Pillow's defaults (standard tables, 4:2:0
    chroma subsampling for colour, as most cameras store photographs) and decoded
    back to ``value/255``. Grey (H×W, H×W×1) or RGB (H×W×3) data. Its error depends
    on the content (block artefacts, lost fine detail): it has no std by model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import DeconvError

_PARAMS = {"gaussian": "sigma", "poisson": "peak", "quantize": "bits", "jpeg": "quality"}
_WHOLE = {"quantize": (1, 32), "jpeg": (1, 100)}  # steps whose value is a whole number in range
_FORMS = "`gaussian:sigma=S`, `poisson:peak=P`, `quantize:bits=B` or `jpeg:quality=Q`"
# numpy's Poisson sampler refuses means above about 9.2e18 (int64 counts); stay well below.
_MAX_POISSON_MEAN = 1e18


@dataclass(frozen=True)
class NoiseStep:
    """One noise model: ``kind`` (gaussian, poisson, quantize, jpeg) and its ``value``."""

    kind: str
    value: float

    def describe(self) -> str:
        return f"{self.kind}:{_PARAMS[self.kind]}={self.value:g}"

    def sigma(self, clean: np.ndarray) -> float | None:
        """The std this step adds to ``clean`` by its model; ``None`` for JPEG."""
        if self.kind == "gaussian":
            return self.value
        if self.kind == "poisson":
            return math.sqrt(float(np.mean(np.clip(clean, 0, None))) / self.value)
        if self.kind == "quantize":
            from deconv_cli.spectral import quantization_sigma

            return quantization_sigma(int(self.value))
        return None

    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return a noisy copy of ``y`` (same dtype)."""
        if self.kind == "gaussian":
            with np.errstate(over="ignore", invalid="ignore"):
                return (y + self.value * rng.standard_normal(y.shape)).astype(y.dtype, copy=False)
        if self.kind == "poisson":
            mean = np.clip(y, 0, None) * self.value
            top = float(mean.max(initial=0.0))
            if not top < _MAX_POISSON_MEAN:
                raise DeconvError(
                    f"`{self.describe()}`: the brightest pixel would count {top:.3g} "
                    f"photons, more than Poisson noise can be drawn for ({_MAX_POISSON_MEAN:.0e}); "
                    "give a smaller peak",
                    parameter="noise",
                )
            return (rng.poisson(mean) / self.value).astype(y.dtype, copy=False)
        if self.kind == "quantize":
            levels = 2 ** int(self.value) - 1
            with np.errstate(over="ignore", invalid="ignore"):
                return (np.round(y * levels) / levels).astype(y.dtype, copy=False)
        return _jpeg(y, int(self.value), self.describe())


def _jpeg(y: np.ndarray, quality: int, spec: str) -> np.ndarray:
    """``y`` written as an 8-bit JPEG at ``quality`` in memory and read back."""
    import imageio.v3 as iio

    grey = y.ndim == 2 or (y.ndim == 3 and y.shape[2] == 1)
    if not grey and not (y.ndim == 3 and y.shape[2] == 3):
        raise DeconvError(
            f"`{spec}`: JPEG holds grey (H×W) or RGB (H×W×3) data, not shape "
            f"{'×'.join(map(str, y.shape))}",
            parameter="noise",
        )
    pixels = np.clip(np.rint((y.reshape(y.shape[:2]) if grey else y) * 255), 0, 255)
    encoded = iio.imwrite("<bytes>", pixels.astype(np.uint8), extension=".jpg", quality=quality)
    decoded = iio.imread(encoded, extension=".jpg")
    return (decoded.reshape(y.shape) / 255).astype(y.dtype, copy=False)


@dataclass(frozen=True)
class Noise:
    """Noise steps applied in order, each to the previous one's output."""

    steps: tuple[NoiseStep, ...]

    def describe(self) -> str:
        return "+".join(step.describe() for step in self.steps)

    def sigma(self, clean: np.ndarray) -> float | None:
        """The std of the noise added to ``clean`` by the models, ``sqrt(Σ σ_k²)``
        (independent steps); ``None`` when a step (JPEG) has no std by model."""
        sigmas = [step.sigma(clean) for step in self.steps]
        return None if None in sigmas else math.hypot(*sigmas)

    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return a noisy copy of ``y`` (same dtype); the steps draw from ``rng`` in order.

        Raises
        ------
        DeconvError
            The noise cannot be drawn for this data (a Poisson mean above 1e18
            photons, JPEG data that is not grey or RGB) or overflows the data's dtype.
        """
        noisy = y
        for step in self.steps:
            noisy = step.apply(noisy, rng)
        if not np.isfinite(noisy).all():
            raise DeconvError(
                f"`{self.describe()}` overflows {y.dtype} (the noisy data is not "
                "finite); give a smaller value",
                parameter="noise",
            )
        return noisy


def parse_noise(spec: str | None) -> Noise | None:
    """Parse a noise SPEC (see the module notes; ``None`` -> no noise).

    Raises
    ------
    DeconvError
        An unknown kind, a wrong parameter name, or a value out of its range.
    """
    if spec is None:
        return None
    # `+` joins steps; a `+` before a digit is an exponent's sign (1e+5)
    return Noise(tuple(_parse_step(part, spec) for part in re.split(r"\+(?=[A-Za-z])", spec)))


def _parse_step(part: str, spec: str) -> NoiseStep:
    kind, _, rest = part.strip().partition(":")
    if kind not in _PARAMS:
        raise DeconvError(f"`{part}` in `{spec}` is not {_FORMS}", parameter="noise")
    name, _, value = rest.partition("=")
    if name != _PARAMS[kind]:
        raise DeconvError(
            f"`{part}`: {kind} noise takes `{_PARAMS[kind]}=VALUE`", parameter="noise"
        )
    try:
        number = float(value)
    except ValueError:
        raise DeconvError(f"`{value}` in `{part}` is not a number", parameter="noise") from None
    if kind in _WHOLE:
        low, high = _WHOLE[kind]
        if not (number.is_integer() and low <= number <= high):
            raise DeconvError(
                f"`{part}`: the {name} must be a whole number from {low} to {high}",
                parameter="noise",
            )
    elif not math.isfinite(number) or number < 0 or (kind == "poisson" and number == 0):
        raise DeconvError(
            f"`{part}`: the {name} must be a finite positive number", parameter="noise"
        )
    return NoiseStep(kind, number)
