"""Execution engines.

``numba_cpu`` runs separable / low-rank filters as 1-D passes (the last two axes fused) and
direct correlation as a multithreaded shift-and-add; ``fft`` runs large dense kernels through
``scipy.fft`` with worker threads. ``threads(workers)`` scopes the thread count of both. The
filters module only calls ``separable``, ``direct``, ``fft`` and ``round_saturate``, so
speed work changes this package only.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator

import numba

from . import nonfinite
from .fft import fft
from .numba_cpu import direct, round_saturate, separable

__all__ = [
    "check_workers",
    "default_workers",
    "direct",
    "fft",
    "nonfinite",
    "round_saturate",
    "separable",
    "threads",
]


def default_workers() -> int:
    """All cores numba may use (``NUMBA_NUM_THREADS`` caps it)."""
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


def check_workers(workers: object) -> int:
    """``None`` -> all cores; otherwise an int between 1 and NUMBA_NUM_THREADS."""
    if workers is None:
        return default_workers()
    try:
        n = operator.index(workers)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"workers must be None or a positive int, got {workers!r}") from None
    if isinstance(workers, bool) or not 1 <= n <= default_workers():
        raise ValueError(
            f"workers must be between 1 and {default_workers()} (NUMBA_NUM_THREADS), "
            f"got {workers!r}"
        )
    return n


@contextlib.contextmanager
def threads(workers: int) -> Iterator[int]:
    """Run numba kernels with ``workers`` threads inside the block (thread-local setting)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(workers)
    try:
        yield workers
    finally:
        numba.set_num_threads(previous)
