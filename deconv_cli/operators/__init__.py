"""The convolution operator ``A = S ∘ V ∘ P`` and every plan computing it.

One operator, for 1, 2 or 3 spatial axes, from which each execution plan is
derived. Module map:

``geometry``
    :class:`Geometry` (mode, boundary, per-axis stride/dilation/padding), the
    padding extent of an axis, the effective (dilated, flipped) kernel bank.
``padding``
    ``P`` and its adjoint ``Pᵀ`` (fill and fold), written once for any number of
    axes from one index map per axis; used by the operator, the grid plans and the
    tiles.
``cost``
    The one cost model (one set of measured constants) choosing a plan, and the
    fast FFT lengths.
``threads``
    FFT threads as an explicit setting: ``with workers(n):``.
``diagonal``
    :func:`diagonal_basis`: the one decision whether the DFT (``wrap``) or the
    DCT-II (``reflect``, symmetric kernel) diagonalizes ``A``, with the maths.
``engines``
    The plans of :class:`Convolution` on ``(*spatial, C)`` arrays: direct
    (``scipy.ndimage``), sparse taps, separable 1-D passes, N-D FFT.
``core``
    :class:`Convolution` (explicit axes, a bank ``(C_out, C_in/groups, *k)`` with
    ``groups``) and :class:`ConvOperator` (the commands' image layout: ``H×W[×C]``,
    a 2-D kernel per channel or a 4-D bank), :func:`input_shape_for`.
``linear``
    The algebra: ``A.T``/``A.H``, ``A @ x``, ``A @ B``, ``A + B``, ``c * A``, a scipy
    ``LinearOperator`` view, and :func:`dottest`.
``grid``, ``spatial``
    The plans the iterative solvers run on (Richardson-Lucy, TV, CGLS): the
    operator of one kernel (1-3 spatial axes, any number of channels) on a grid with
    every buffer kept, by FFT (:class:`GridOperator`) or in space
    (:class:`SpatialGridOperator`), derived from the operator's :class:`Convolution`
    by :func:`grid_operator`.

The tiles (:mod:`deconv_cli.tiles`) apply a ``valid`` operator per window gathered
through the padding's index map; the dense matrix and the spectral
diagonalizations (:mod:`deconv_cli.analysis`, :mod:`deconv_cli.spectral`) are
computed from the operator.
"""

from deconv_cli.operators.core import Convolution, ConvOperator, input_shape_for
from deconv_cli.operators.cost import fast_length
from deconv_cli.operators.diagonal import diagonal_basis, is_symmetric_kernel
from deconv_cli.operators.engines import ENGINES, separable_factors
from deconv_cli.operators.geometry import (
    BOUNDARIES,
    BOUNDARY_ALIASES,
    MODES,
    Geometry,
    as_bank,
    check_extent,
    effective_kernel,
    parse_pair,
)
from deconv_cli.operators.linear import LinearMap, dottest
from deconv_cli.operators.threads import fft_workers, set_workers, workers

__all__ = [
    "BOUNDARIES",
    "BOUNDARY_ALIASES",
    "ENGINES",
    "MODES",
    "ConvOperator",
    "Convolution",
    "Geometry",
    "LinearMap",
    "as_bank",
    "check_extent",
    "diagonal_basis",
    "dottest",
    "effective_kernel",
    "fast_length",
    "fft_workers",
    "input_shape_for",
    "is_symmetric_kernel",
    "parse_pair",
    "separable_factors",
    "set_workers",
    "workers",
]
