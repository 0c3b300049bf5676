"""``auto``: pick a method from the operator and the estimated noise, and say why."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from deconv_cli.noise_model import estimate_noise
from deconv_cli.operators import ConvOperator, diagonal_basis
from deconv_cli.operators.grid import channel_first, noise_planes
from deconv_cli.restore import Footprint, RestoreOptions, RestoreResult, get_method, register

EXACT_RMSE = 1e-3
"""Use the exact inverse when it is predicted to recover the image to this RMSE."""


def choose(blurred, op: ConvOperator, noise_sigma: float) -> tuple[str, str]:
    """``(method, reason)`` for data ``blurred`` with white noise of std ``noise_sigma``.

    The exact inverse where ``A`` is injective and its predicted error at this noise
    level is below :data:`EXACT_RMSE`; otherwise total-variation deconvolution, which
    reached the best quality of all methods in measurements (docs/performance.md), or
    least squares (CGLS) for conv-layer banks, whose channels TV does not couple.

    Volumes: Tikhonov with λ by GCV where a fast transform diagonalizes ``A`` (a
    ``wrap`` boundary; ``reflect`` with a kernel symmetric about each axis, as
    microscope PSFs): its closed form scored as TV on the bundled stack (27.2 against
    27.0 dB PSNR) about 17 times faster. Elsewhere (the ``unknown`` boundary, an
    asymmetric measured PSF) Tikhonov needs conjugate gradients (minutes), while TV's
    splitting stays Fourier-fast: TV. On a blob phantom cut from a thicker volume
    (48×128×128, anisotropic 15³ PSF, ``--boundary unknown``, 10², 10³ and 10⁴
    photons at the peak) TV reached 25.9, 28.5 and 30.2 dB, against 22.0, 24.0 and
    25.9 dB for Richardson-Lucy stopped by its Poisson discrepancy rule (within
    0.05 dB of its best iteration), at 2-8 times RL's time
    (``benchmarks/bench_volumes.py levels``, docs/guide/volumes.md).
    """
    from deconv_cli.analysis import null_space
    from deconv_cli.spectral import predicted_inverse_rmse

    nullity, _, reason = null_space(op)
    if nullity == 0:
        rmse = predicted_inverse_rmse(op, noise_sigma)
        if rmse is not None and rmse <= EXACT_RMSE:
            return "inverse", (
                f"A is injective and the noise (σ≈{noise_sigma:.2g}) is amplified to an "
                f"RMSE of only ≈{rmse:.1g}"
            )
        why = (
            f"noise σ≈{noise_sigma:.2g} would be amplified to an RMSE of ≈{rmse:.2g} by "
            "the exact inverse"
            if rmse is not None
            else f"noise σ≈{noise_sigma:.2g}"
        )
    else:
        why = f"A has a null space ({reason})"
    if op.is_bank and not get_method("tv").banks:
        return "cgls", f"{why}; a kernel bank: least squares (minimum norm where not injective)"
    if op.spatial == 3:
        basis = diagonal_basis(op)
        if basis is not None:
            return "tikhonov", (
                f"{why}; a volume whose blur the {basis.upper()} diagonalizes: Tikhonov, "
                "λ by GCV in closed form (as good as tv, faster)"
            )
        return "tv", (
            f"{why}; a volume no fast transform diagonalizes (the unknown boundary, an "
            "asymmetric PSF): total variation, λ by the discrepancy principle"
        )
    return "tv", (
        f"{why}; total variation, λ by the discrepancy principle (by held-out blocks on "
        "JPEG data: lam_rule says which)"
    )


@register(
    "auto",
    "picks inverse, tv, cgls or (volumes with a fast diagonalization) tikhonov from the "
    "operator and the estimated noise, and says why",
    options=("noise_sigma", "iterations", "tol"),
    automatic=("noise_sigma",),
    iterative=True,  # it may pick tv or cgls: their iterations show progress
    memory=Footprint(28.0, bank=17.0),  # tv's, least squares' for kernel banks
)
def auto(blurred, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    """Run the method :func:`choose` picks; the result's notes say which and why.

    The estimated noise level decides between the methods; it is passed on to the
    exact inverse and to least squares (whose discrepancy rule stops on it). ``tv``
    sets its own level (the noise model's where a JPEG or 8-bit floor dominates, else
    its GCV fit's: :func:`deconv_cli.restore.tv_lambda.automatic_lam`) unless the user gives it.
    """
    sigma, noise = options.noise_sigma, None
    if sigma is None:
        planes = noise_planes(channel_first(np.asarray(blurred), op.spatial))
        noise = estimate_noise(planes, jpeg_tables=options.jpeg_tables)
        sigma = noise.sigma
    method, reason = choose(blurred, op, sigma)
    chosen = get_method(method)
    given = options if method == "tv" else replace(options, noise_sigma=sigma)
    result = chosen.function(blurred, op, given)
    result.notes.insert(0, f"auto picked {method}: {reason}")
    if noise is not None:
        result.notes.insert(1, f"noise estimated: {noise.describe()}")
    return result
