"""How many threads the FFTs use: an explicit setting, like ``scipy.fft.set_workers``.

``with workers(n):`` sets it for a block; :func:`set_workers` for the process (a
batch worker); otherwise ``DECONV_FFT_WORKERS`` or every core this process may use.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from deconv_cli.errors import DeconvError

_SETTING: list[int] = []  # a stack: the innermost ``workers`` block wins
_PROCESS: dict[str, int | None] = {"workers": None}


def _check(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DeconvError(f"FFT workers: `{n}` must be a whole number of threads >= 1")
    return n


@contextmanager
def workers(n: int):
    """Run the block with ``n`` FFT threads (nested blocks: the innermost wins)."""
    _SETTING.append(_check(n))
    try:
        yield n
    finally:
        _SETTING.pop()


def set_workers(n: int | None) -> None:
    """Set the FFT threads of this process outside any block (``None``: back to default)."""
    _PROCESS["workers"] = None if n is None else _check(n)


def fft_workers() -> int:
    """Threads for scipy.fft: the setting, else ``DECONV_FFT_WORKERS``, else every core
    this process may use."""
    if _SETTING:
        return _SETTING[-1]
    if _PROCESS["workers"] is not None:
        return _PROCESS["workers"]
    env = os.environ.get("DECONV_FFT_WORKERS")
    if env and env.strip():
        try:
            return max(1, int(env.strip()))
        except ValueError:
            raise DeconvError(
                f"DECONV_FFT_WORKERS: `{env}` is not a whole number of threads "
                "(unset it to use every core this process may use)"
            ) from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def blas_threads(n: int):
    """Run the block with ``n`` BLAS/LAPACK threads (threadpoolctl), then restore them.

    Batched small SVDs (``np.linalg.svd`` on a stack of matrices) gain nothing from
    OpenBLAS threads and lose a lot on a busy machine: each small call wakes and
    waits for its threads (figures in :func:`deconv_cli.models_analysis.analyze_layer`).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(_check(n), user_api="blas"):
        yield n
