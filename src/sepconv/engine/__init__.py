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
import importlib
import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

# scipy's FFTs need no numba; imported now, the function ``fft`` is what ``engine.fft`` names,
# not the submodule of the same name
from .fft import fft, fft_pass

if TYPE_CHECKING:
    from . import fixed, nonfinite, running
    from .numba_cpu import direct, round_saturate, separable

#: The engines, imported on first use (``engine.separable`` and the like): numba is loaded then,
#: not by importing this package, so ``sepconv.engine.triton_gpu`` (the GPU engine, which needs
#: torch and triton only) imports without numba.
_LAZY = {
    "direct": ".numba_cpu",
    "round_saturate": ".numba_cpu",
    "separable": ".numba_cpu",
    "fixed": "",
    "nonfinite": "",
    "running": "",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _LAZY[name]
    value: Any = importlib.import_module(where or f".{name}", __name__)
    if where:
        value = getattr(value, name)
    globals()[name] = value
    return value


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
    import numba

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
    import numba

    previous = numba.get_num_threads()
    if previous == workers:  # nothing to change (setting it costs microseconds per call)
        yield workers
        return
    numba.set_num_threads(workers)
    try:
        yield workers
    finally:
        numba.set_num_threads(previous)
