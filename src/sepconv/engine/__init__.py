"""Execution engines.

``numba_cpu`` runs separable / low-rank filters as 1-D passes (the last two axes fused) and
direct correlation as a multithreaded shift-and-add; ``fixed`` runs 8/16-bit images into
their own dtype on quantised taps (one fused pass, one rounding); ``running`` runs box passes
in constant time; ``recursive`` runs Gaussian passes as IIR filters (an approximation, chosen
only within a caller's ``tol``); ``fft`` runs large dense kernels through ``scipy.fft`` with
worker threads. ``threads(workers)`` scopes the thread count of all of them. The backends
choose among them (``sepconv.backends.numpy``), so speed work changes this package and that
module only.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator

import numba

from . import fixed, nonfinite, running
from .fft import fft, fft_pass
from .numba_cpu import direct, round_saturate, separable

__all__ = [
    "check_workers",
    "default_workers",
    "direct",
    "fft",
    "fft_pass",
    "fixed",
    "nonfinite",
    "round_saturate",
    "running",
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
