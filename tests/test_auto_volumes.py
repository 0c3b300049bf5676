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
