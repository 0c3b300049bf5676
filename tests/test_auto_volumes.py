"""``auto`` on volumes: Tikhonov where a fast transform diagonalizes the blur, TV where
none does (the unknown boundary, an asymmetric PSF); the diagonalization checked
against dense matrices in ``tests/test_diagonal_basis.py``."""

from __future__ import annotations

import numpy as np
import pytest

from deconv_cli.operators import Geometry


def psf(asymmetric: bool) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(-2, 3),) * 3, indexing="ij")
    kernel = np.exp(-(z**2) / 4 - (y**2 + x**2) / 2)
    if asymmetric:
        kernel *= np.exp(0.3 * x)  # a tilted bead image
    return kernel / kernel.sum()


@pytest.mark.parametrize(
    "boundary, unknown, asymmetric, method",
    [
        ("reflect", False, False, "tikhonov"),
        ("wrap", False, True, "tikhonov"),
        ("reflect", True, False, "tv"),
        ("reflect", False, True, "tv"),
    ],
    ids=["reflect-symmetric", "wrap", "unknown", "reflect-asymmetric"],
)
def test_auto_on_volumes(boundary, unknown, asymmetric, method):
    # imported here: importing a method module at collection would register the
    # methods out of their order (the registry lists them in the order registered)
    from deconv_cli.inversion import build_problem
    from deconv_cli.restore.auto import choose

    problem = build_problem(
        psf(asymmetric),
        (12, 16, 16),
        Geometry.create(boundary=boundary),
        unknown_boundary=unknown,
        spatial=3,
    )
    data = np.full(problem.op.output_shape, 0.5)
    chosen, reason = choose(data, problem.op, 0.01)
    assert chosen == method
    assert "a volume" in reason


def test_auto_reads_a_volumes_noise_plane_by_plane():
    # A Z×Y×X volume's noise is estimated on its Y×X planes: Poisson noise drawn at 100
    # photons per unit is found as such, with its gain 1/100 (read as H×W×channels, the
    # 6-row "images" hid the signal dependence).
    import re

    from scipy import ndimage

    from deconv_cli.inversion import build_problem
    from deconv_cli.restore import RestoreOptions, get_method

    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(rng.random((6, 96, 96)), 2)
    x = (x - x.min()) / (x.max() - x.min())
    blurred = rng.poisson(x * 100) / 100
    problem = build_problem(
        psf(False), blurred.shape, Geometry.create(boundary="reflect"), spatial=3
    )
    result = get_method("auto").function(blurred, problem.op, RestoreOptions())
    noted = next(note for note in result.notes if note.startswith("noise estimated"))
    gain = float(re.search(r"gain = ([0-9.e-]+)", noted).group(1))
    assert "poisson" in noted and abs(gain - 0.01) < 0.002, noted
