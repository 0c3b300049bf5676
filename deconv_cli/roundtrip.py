"""The whole experiment on one image: blur, add noise, quantize, then undo it every way.

:func:`roundtrip` blurs a sharp image ``x`` with the operator ``A`` (``y = A x``),
optionally adds seeded noise and rounds ``y`` to a bit depth, then recovers ``x``
with the transpose ``Aᵀ y`` (which restores the shape, not the values) and with each
requested inversion method, and measures every result against ``x`` (PSNR, SSIM,
RMSE on the [0, 1] scale, unclipped) and the time it took. The operator's
:func:`~deconv_cli.analysis.analyze` verdict, for the same noise level, comes with it.

Choices
-------
- Quantization rounds ``y`` to the grid of ``1/(2^bits − 1)`` without clipping to
  [0, 1], so kernel banks with negative outputs are quantized too.
- The noise level given to the analysis and to the methods is the known one:
  ``sqrt(σ_noise² + σ_q²)`` with ``σ_q = q/√12``; Poisson noise counts as white noise
  of ``sqrt(mean(y)/peak)``; JPEG noise (no std by model) as the RMS of the error it
  made. Without noise or quantization, the methods estimate it
  and the analysis assumes float64 rounding (``eps/√12``).
- ``cgls`` and ``lsqr`` have no regularization but their iteration count; with a
  known noise level they stop at the discrepancy principle, the first iteration with
  ``‖A x − y‖ <= σ·sqrt(m)``.
- ``inverse`` is not run where the analysis finds ``A`` not invertible: its row says
  why instead of giving numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deconv_cli import fs
from deconv_cli.analysis import Analysis, analyze, jsonable
from deconv_cli.errors import DeconvError, NotInvertibleError, OutputError, mention
from deconv_cli.noise import Noise, NoiseStep
from deconv_cli.operators import ConvOperator, Geometry

FLOAT64_ROUNDING = float(np.finfo(np.float64).eps / math.sqrt(12))


@dataclass
class RoundtripRow:
    """One recovery of the image: its scores against the original, or why it was not run."""

    method: str
    psnr: float | None = None
    ssim: float | None = None
    rmse: float | None = None
    seconds: float | None = None
    note: str = ""
    image: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The JSON row: ``method, psnr, ssim, rmse, seconds, note``."""
        return {
            "method": self.method,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "rmse": self.rmse,
            "seconds": self.seconds,
            "note": self.note,
        }


@dataclass
class Roundtrip:
    """Everything :func:`roundtrip` did: the data, the analysis and one row per recovery."""

    original: np.ndarray
    blurred: np.ndarray
    operator: ConvOperator
    analysis: Analysis
    rows: list[RoundtripRow]
    noise: str
    noise_sigma: float | None

    @property
    def verdict(self) -> str:
        return self.analysis.verdict

    def as_dict(self) -> dict[str, Any]:
        """``{"verdict", "noise", "noise_sigma", "analysis", "rows"}``, JSON-able."""
        return {
            "verdict": self.verdict,
            "noise": self.noise,
            "noise_sigma": self.noise_sigma,
            "analysis": self.analysis.as_dict(),
            "rows": [jsonable(row.as_dict()) for row in self.rows],
        }


def check_methods(names: Sequence[str] | None) -> list[str]:
    """Validated method names, in the order given (default: the registry's
    :func:`~deconv_cli.restore.roundtrip_methods`)."""
    from deconv_cli.restore import get_method, roundtrip_methods

    if not names:
        return list(roundtrip_methods())
    chosen = []
    for name in names:
        get_method(name)  # raises, listing the registered methods
        if name not in chosen:
            chosen.append(name)
    return chosen


def degrade(
    op: ConvOperator,
    image: np.ndarray,
    *,
    noise: Noise | None = None,
    seed: int | None = None,
    bits: int | None = None,
) -> tuple[np.ndarray, float | None, str]:
    """``y = A x`` with noise and quantization; the noise level it adds, and a description."""
    clean = op.forward(image)
    steps = noise.steps if noise is not None else ()
    if bits is not None:
        if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= 32:
            raise DeconvError(f"`{bits}` must be a whole number from 1 to 32", parameter="bits")
        steps += (NoiseStep("quantize", int(bits)),)
    if not steps:
        return clean, None, "none (float64 data)"
    chain = Noise(steps)
    y = chain.apply(clean, np.random.default_rng(seed))
    drawn = any(step.kind in ("gaussian", "poisson") for step in steps)
    sigma = chain.sigma(clean)
    if sigma is None:  # JPEG: no std by model; the error it made is known here
        sigma = float(np.sqrt(np.mean(np.square(y - clean))))
    return y, sigma, chain.describe() + (f" (seed {seed})" if drawn else "")


def roundtrip(
    image: np.ndarray,
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    noise: Noise | None = None,
    seed: int | None = None,
    bits: int | None = None,
    methods: Sequence[str] | None = None,
    on_method: Callable[[str], None] | None = None,
    spatial: int = 2,
) -> Roundtrip:
    """Blur ``image`` (+ noise, + quantization), recover it every way, measure each result.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray, or a volume (Z, H, W[, C])
        The sharp image ``x`` on the [0, 1] scale (computed in float64).
    kernel : ndarray
        A 2-D kernel, a 3-D one (volumes) or a ``(C_out, C_in, kh, kw)`` bank, as stored.
    geometry : Geometry
    noise : Noise, optional
        Added to ``A x`` with ``np.random.default_rng(seed)``.
    bits : int, optional
        Round the data to this many bits (see the module notes).
    methods : sequence of str, optional
        Registered inversion methods (default: those the registry marks for roundtrip).
    on_method : callable, optional
        Called with each method's name before it runs (for progress output).
    spatial : {2, 3}
        The spatial axes of ``image`` (3: a volume, measured as the metrics measure
        volumes; methods that take 2-D images only are not run).

    Returns
    -------
    Roundtrip
        The ``blurred`` row first (the data ``y`` scored as it is, when it has the
        image's shape: the baseline every method must beat), then the transpose
        row, then one row per method, in the order given.
    """
    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.restore import RestoreOptions, get_method

    names = check_methods(methods)
    x = np.asarray(image, dtype=np.float64)
    if np.ndim(kernel) == 4 and np.shape(kernel)[1] == 1 and x.ndim == 3 and x.shape[2] == 1:
        # A bank's size-one channel axis is dropped (so the inverse problem recovers H×W):
        # measure against the same H×W.
        x = x[:, :, 0]
    op = ConvOperator(kernel, x.shape, geometry, spatial=spatial)
    y, sigma, description = degrade(op, x, noise=noise, seed=seed, bits=bits)
    if sigma is None:
        analysis = analyze(
            op, noise_sigma=FLOAT64_ROUNDING, noise_source="float64 rounding (no noise)"
        )
    else:
        analysis = analyze(op, noise_sigma=sigma, noise_source=f"the data's noise ({description})")

    volume = spatial == 3
    rows = [_baseline(x, y, volume)]
    start = time.perf_counter()
    transposed = op.adjoint(y)
    note = "Aᵀy as is: restores the shape, not the values"
    if _orthogonal(analysis):
        note = "Aᵀy as is: every singular value is 1 (A is orthogonal), so Aᵀ = A⁻¹"
    rows.append(
        _scored(
            RoundtripRow("transpose", note=note),
            x,
            transposed,
            time.perf_counter() - start,
            volume,
        )
    )
    problem = build_problem(
        kernel, y.shape, geometry, output_shape=x.shape[:spatial], spatial=spatial
    )
    for name in names:
        if on_method is not None:
            on_method(name)
        if spatial == 3 and not get_method(name).volumes:
            rows.append(RoundtripRow(name, note="not run: it takes 2-D images"))
            continue
        if name == "inverse" and not analysis.invertible:
            rows.append(RoundtripRow(name, note=f"not run: A is not invertible: {_why(analysis)}"))
            continue
        start = time.perf_counter()
        try:
            result = invert(y, problem, name, RestoreOptions(noise_sigma=sigma))
            recovered, notes = result.image, list(result.notes)
        except NotInvertibleError as err:
            rows.append(RoundtripRow(name, note=f"refused: {err}"))
            continue
        except DeconvError as err:
            rows.append(RoundtripRow(name, note=f"failed: {err}"))
            continue
        seconds = time.perf_counter() - start
        row = _scored(RoundtripRow(name), x, recovered, seconds, volume)
        if name == "inverse" and analysis.predicted_rmse is not None:
            # replaces the method's own warning, which says the same
            notes = [n for n in notes if "amplified" not in n]
            notes.insert(
                0,
                f"{analysis.verdict}: predicted RMSE {_number(analysis.predicted_rmse)}, "
                f"measured {_number(row.rmse)}",
            )
        row.note = "; ".join(filter(None, [*notes, row.note]))
        rows.append(row)
    return Roundtrip(x, y, op, analysis, rows, description, sigma)


def _baseline(original: np.ndarray, data: np.ndarray, volume: bool) -> RoundtripRow:
    """The ``blurred`` row: the data itself scored against the image, the gain's zero."""
    row = RoundtripRow("blurred", note="the data y as is: the score of doing nothing")
    if data.shape != original.shape:
        row.image = data
        row.note = f"not scored: the data is {_dims(data.shape)}, the image {_dims(original.shape)}"
        return row
    return _scored(row, original, data, None, volume)


def _dims(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def _orthogonal(analysis: Analysis, tol: float = 1e-9) -> bool:
    smin = analysis.sigma_min
    return (
        analysis.invertible
        and analysis.exact["sigma_min"]
        and smin is not None
        and abs(analysis.sigma_max - 1) <= tol
        and abs(smin - 1) <= tol
    )


def _why(analysis: Analysis) -> str:
    """The null space's size and its first cause, e.g. ``nullity 39; spectral zeros: ...``."""
    nullity = f"nullity {'' if analysis.exact['rank'] else '>= '}{analysis.nullity}"
    causes = [r for r in analysis.reasons[1:] if not r.startswith("the pseudo-inverse")]
    return f"{nullity}; {causes[0]}" if causes else nullity


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"


def _scored(
    row: RoundtripRow,
    original: np.ndarray,
    result: np.ndarray,
    seconds: float | None,
    volume: bool = False,
) -> RoundtripRow:
    from deconv_cli.metrics import compute_metrics

    row.image = result
    row.seconds = seconds
    if not np.all(np.isfinite(result)):
        row.note = "; ".join(filter(None, [row.note, "the result has NaN/Inf values"]))
        return row
    spatial = original.shape[:2] if original.ndim < 3 or not volume else original.shape[:3]
    names = ["psnr", "rmse"] + (["ssim"] if min(spatial) >= 7 else [])
    if volume and original.ndim == 3:  # the metrics read volumes as Z×Y×X×C
        original, result = original[..., None], result[..., None]
    values = compute_metrics(original, result, names, data_range=1.0)
    row.psnr, row.rmse, row.ssim = values["psnr"], values["rmse"], values.get("ssim")
    return row


# -- saving -------------------------------------------------------------------------------


def output_names(methods: Sequence[str]) -> list[str]:
    """The files :func:`save_outputs` may write for these methods."""
    return ["blurred.npy", "transpose.npy", *(f"{m}.npy" for m in methods), "montage.png"]


def check_out_dir(directory: str | Path, methods: Sequence[str], *, overwrite: bool) -> None:
    """Fail before any work when ``directory`` is a file or holds outputs not to be replaced."""
    directory = Path(directory)
    fs.check_directory(directory, create=True, what="out_dir")
    if overwrite:
        return
    for name in output_names(methods):
        if (directory / name).exists():
            raise OutputError(
                f"`{directory / name}` exists; use {mention('overwrite', True)} to replace it",
                parameter="out_dir",
            )


def check_montage(
    path: str | Path, out_dir: str | Path | None, *, overwrite: bool, inputs=()
) -> None:
    """Fail before any work when the montage cannot be written to ``path``, or is the
    ``montage.png`` that ``out_dir`` receives anyway."""
    from deconv_cli.fs import check_target

    if out_dir is not None and Path(path).resolve() == (Path(out_dir) / "montage.png").resolve():
        raise OutputError(
            f"`{path}` is the montage {mention('out_dir')} writes; give one or the other",
            parameter="montage",
        )
    check_target(path, overwrite=overwrite, inputs=inputs)


def save_outputs(
    result: Roundtrip, directory: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Write ``blurred.npy``, ``transpose.npy``, ``<method>.npy`` and ``montage.png``
    (:func:`write_montage`)."""
    from deconv_cli.io import write_image

    directory = Path(directory)
    fs.make_directory(directory, what="out_dir")
    written = [
        write_image(directory / f"{row.method}.npy", row.image, overwrite=overwrite).path
        for row in result.rows
        if row.image is not None
    ]
    written.append(write_montage(result, directory / "montage.png", overwrite=overwrite))
    return written


def montage_panels(result: Roundtrip) -> list[tuple[np.ndarray, list[str]]]:
    """The montage's panels: the truth, then every row with an image, each with its caption
    (the central plane of a volume).

    A caption is the row's name and its PSNR and SSIM against the truth (``—`` where
    not measured), e.g. ``["wiener", "PSNR 27.31 dB", "SSIM 0.8412"]``.
    """
    from deconv_cli.report import metric_text

    def shown(image: np.ndarray) -> np.ndarray:  # a volume's central plane
        return image[image.shape[0] // 2] if result.operator.spatial == 3 else image

    panels = [(shown(result.original), ["truth", "the sharp image"])]
    for row in result.rows:
        if row.image is not None:
            scores = [metric_text("psnr", row.psnr), metric_text("ssim", row.ssim)]
            panels.append((shown(row.image), [row.method, *scores]))
    return panels


def write_montage(result: Roundtrip, path: str | Path, *, overwrite: bool = False, inputs=()):
    """Write the labelled montage of :func:`montage_panels` as 8-bit RGB; returns its path.

    See :func:`deconv_cli.pictures.montage` for the layout: every image clipped to
    [0, 1], all rescaled by one whole factor, four panels to a row.
    """
    from deconv_cli.io import write_image
    from deconv_cli.pictures import montage

    # write_image takes values on the [0, 1] scale; rint(k / 255 · 255) gives k back exactly.
    picture = montage(montage_panels(result)) / 255.0
    return write_image(path, picture, dtype="uint8", overwrite=overwrite, inputs=inputs).path
