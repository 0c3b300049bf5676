"""Which fast orthogonal transform diagonalizes ``A``: the one decision, one tolerance.

``A = S ∘ V ∘ P`` applies one kernel ``k`` (the effective, dilated and flipped one,
``V`` a cross-correlation) to every channel. Write ``b`` for the padding before the
image on an axis of ``n`` samples; then in ``same`` mode, stride 1,
``(A x)[i] = Σ_a k[a] x̃[i + a − b]`` with ``x̃`` the boundary's extension of ``x``.

- ``wrap``: ``x̃[j] = x[j mod n]``, so ``A`` is circulant (block circulant with
  circulant blocks in 2-D): it commutes with the cyclic shift, whose eigenvectors
  are the Fourier modes. ``A = F⁻¹ diag(λ) F`` with ``F`` the DFT and
  ``λ = F(A e₀)``, for any kernel (any size, even or odd, dilated or not).
- ``reflect`` (half-sample symmetric, ``numpy.pad(mode="symmetric")``, Neumann):
  ``x̃`` is the even, ``2n``-periodic extension of ``x`` about ``−½``. If ``k`` has
  odd sides and is symmetric about each axis, ``same`` mode centres it
  (``b = (K − 1)/2``), the correlation of an even periodic sequence with a centred
  even kernel is again even and ``2n``-periodic, so ``A`` maps the half-sample-even
  sequences to themselves; their Fourier modes are the DCT-II basis vectors
  ``cos(π m (2i + 1) / 2n)``. Hence ``A = Cᵀ diag(λ) C`` with ``C`` the orthonormal
  DCT-II and ``λ = C(A e₀) / C(e₀)``; ``A`` is symmetric (``Aᵀ = A``). An asymmetric
  or even-sided kernel breaks the evenness: no DCT diagonalizes it.

In both cases ``A`` is normal, ``Aᵀ1 = A1 = (Σk)·1``, and its singular values are
``|λ|``. Everything else — other boundaries, ``full``/``valid`` modes or explicit
padding, strides, a bank mixing channels or applying different kernels — gets ``None``
from :func:`diagonal_basis`. A bank that applies one kernel to each channel alike is
``I ⊗ A`` over its channels: the same diagonal acts on each.
The rule is conservative in two corners, left to the general path: ``nearest``
padding one sample repeats ``x[0]`` as ``reflect`` does, and explicit ``wrap``
padding ``(K − 1)/2`` is ``same`` mode; there the DCT or the DFT diagonalizes ``A``
too (the dense tests show the first).
"""

from __future__ import annotations

import numpy as np

from deconv_cli.operators.grid import one_kernel

SYMMETRY_RTOL = 1e-13
"""A kernel is symmetric when each flip differs from it by at most this times its peak."""


def is_symmetric_kernel(kernel: np.ndarray) -> bool:
    """Whether an N-D kernel has odd sides and equals its flip along each axis.

    Within ``SYMMETRY_RTOL · max|k|`` (rounding of a kernel built in floating point).
    """
    if any(n % 2 == 0 for n in kernel.shape):
        return False
    tol = SYMMETRY_RTOL * np.max(np.abs(kernel))
    return all(np.max(np.abs(kernel - np.flip(kernel, axis))) <= tol for axis in range(kernel.ndim))


def diagonal_basis(op) -> str | None:
    """The fast orthogonal basis in which ``op`` is diagonal (module docstring).

    Parameters
    ----------
    op : ConvOperator or Convolution
        Its ``geometry`` and its bank decide: the bank must apply one kernel to every
        channel alike, mixing none (:func:`~deconv_cli.operators.geometry.shared_kernel`:
        a 2-D kernel on an RGB image, a depthwise bank of one kernel, a ``C × C``
        diagonal bank), never judged from the arrays' number of axes.

    Returns
    -------
    {"fft", "dct"} or None
        ``"fft"``: ``wrap``, ``same``, stride 1, one shared kernel; ``"dct"``:
        ``reflect``, same conditions, and a kernel with odd sides symmetric about
        each axis; else ``None``. The diagonal then acts on each channel alike.
    """
    g = op.geometry
    same_grid = g.mode == "same" and g.padding is None and all(s == 1 for s in g.stride)
    if not one_kernel(op) or not same_grid:
        return None
    if g.boundary == "wrap":
        return "fft"
    if g.boundary == "reflect" and is_symmetric_kernel(op.effective[0, 0]):
        return "dct"
    return None
