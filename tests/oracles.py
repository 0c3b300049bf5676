"""Independent oracles shared by the tests: operators as dense matrices."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deconv_cli.operators import ConvOperator


def dense(op: ConvOperator) -> np.ndarray:
    """The operator as a matrix, column ``j`` = ``A e_j`` (``e_j`` the j-th unit image)."""
    n = op.shape[1]
    columns = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        columns.append(op.forward(e.reshape(op.input_shape)).ravel())
    return np.stack(columns, axis=1)


def dense_ndimage(kernel: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """``same``-mode convolution as a matrix, built with scipy.ndimage (not the code)."""
    n = shape[0] * shape[1]
    columns = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        columns.append(ndimage.convolve(e.reshape(shape), kernel, mode=mode).ravel())
    return np.stack(columns, axis=1)
