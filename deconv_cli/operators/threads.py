"""How many threads the FFTs use: an explicit setting, like ``scipy.fft.set_workers``.

``with workers(n):`` sets it for a block; :func:`set_workers` for the process (a
batch worker); otherwise ``DECONV_FFT_WORKERS`` or every core this process may use.
The analyses' SVDs run on :data:`SVD_THREADS` BLAS threads (:func:`blas_threads`).
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


SVD_THREADS = 1
"""BLAS/LAPACK threads for the analyses' SVDs: :func:`deconv_cli.analysis.analyze` and
:func:`~deconv_cli.analysis.null_space` (``analyze KERNEL``, the null space checked
before an exact inverse) and ``analyze MODEL``'s layers.

One, by measurement: OpenBLAS's threads gain little on these calls and lose a lot on
a busy machine, where each call wakes and waits for its threads. Times with 1 and 2
threads alternated in one process, 5 pairs each (2 cores, load average 15-26), median
ratio ``t(1 thread) / t(2 threads)``: the stacked complex SVDs of a 16-channel bank's
per-frequency matrices (2112 of 16×16) 0.85 (0.46-0.57 s against 0.54-1.17 s); 45
stacked 128×128 complex SVDs 0.01 (0.44-1.16 s against 37-168 s); scipy ``svdvals``
of a dense 2048×2048 matrix (the dense path's largest) 0.14 (11-21 s against 59-148
s) and of a 512×512 one (a Kronecker factor) 0.05 (0.27-0.47 s against 5.4-17.9 s).
``analyze MODEL`` (ResNet-18 at 224×224×3, load 6-7): 59 s wall (34 s CPU) with one
thread, 9 min 50 s (353 s CPU) with OpenBLAS's default two; stacked complex64 SVDs, 3
pairs at load 7: 1740 of 64×64 1.05, 45 of 512×512 0.11. Not
measured on an idle machine, where two threads may gain on the largest dense SVDs.
"""


@contextmanager
def blas_threads(n: int = SVD_THREADS):
    """Run the block (or, as a decorator, the function) with ``n`` BLAS/LAPACK threads
    (threadpoolctl), then restore them; by default :data:`SVD_THREADS`."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(_check(n), user_api="blas"):
        yield n
