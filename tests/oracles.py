"""Independent oracles shared by the tests: operators as dense matrices."""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

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


# The boundary rules as numpy.pad modes, written here independently of the package.
NUMPY_MODES = {
    "constant": "constant",
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
}


def oracle(bank, x, groups, geometry, d):
    """``A x`` by scipy.signal on the padded array, strided, summed over each group."""
    dilation, stride = geometry.dilation[:1] * d, geometry.stride[:d]
    extent = tuple(s * (k - 1) + 1 for s, k in zip(dilation, bank.shape[2:], strict=True))
    k = np.zeros(bank.shape[:2] + extent)
    k[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in dilation)] = bank
    pads = []
    for n in extent:
        if geometry.padding is not None:
            pads.append((geometry.padding[0],) * 2)
        elif geometry.mode == "full":
            pads.append((n - 1, n - 1))
        elif geometry.mode == "valid":
            pads.append((0, 0))
        else:
            before = n // 2 if geometry.correlate else (n - 1) // 2
            pads.append((before, n - 1 - before))
    xp = np.pad(x, pads + [(0, 0)], mode=NUMPY_MODES[geometry.boundary])
    apply = signal.correlate if geometry.correlate else signal.convolve
    co, cig = bank.shape[:2]
    outputs = []
    for o in range(co):
        g = o // (co // groups)
        total = sum(apply(xp[..., g * cig + i], k[o, i], mode="valid") for i in range(cig))
        outputs.append(total[tuple(slice(None, None, s) for s in stride)])
    return np.stack(outputs, axis=-1)
