"""NaN and Inf through any plan, with the result of the direct correlation.

The direct correlation ``sum_j K[j] * x[i + j]`` over the kernel's non-zero taps is NaN where it
reads a NaN (or infinities of both signs, after the taps' signs), +Inf or -Inf where it reads
infinities of one sign only, and finite elsewhere. Other plans change that: the FFT spreads one
NaN over the whole output, and separable terms read NaN through a factor's zero (a tap the
kernel does not have) or cancel ``+Inf - Inf`` into NaN where the kernel reads one infinity.
Non-finite data is normal (MRI backgrounds, masked astronomy), so plans never see it:

1. ``split``: the non-finite values are set to 0 and remembered (as is a non-finite ``cval``);
   the plan runs on finite data.
2. ``patch``: every output that a non-finite value reaches is set from three *counts*: the
   correlation of the indicator arrays (NaN, +Inf, -Inf) with the kernel's support (by sign of
   the taps). Counts are small integers, exact after rounding whatever method computes them.

Cost: one ``isfinite`` pass when the data is finite; otherwise one to four extra correlations
of indicator arrays (FFT or direct, whichever is cheaper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from ..job import dense_job
from .fft import fft
from .numba_cpu import direct

__all__ = ["Nonfinite", "all_finite", "patch", "split"]

#: Non-zero taps above which the indicator counts use the FFT instead of direct correlation.
_FFT_TAPS = 32


@dataclass(frozen=True)
class Nonfinite:
    """Where the data (and the constant-mode ``cval``) is NaN, +Inf or -Inf."""

    nan: np.ndarray | None
    pos: np.ndarray | None
    neg: np.ndarray | None
    cval: float


def split(x: np.ndarray, cval: float) -> tuple[np.ndarray, float, Nonfinite | None]:
    """``(finite data, finite cval, what was taken out)``; ``None`` when all was finite.

    ``x`` is a floating-point work array; it is not modified (a copy is made when needed).
    """
    finite = x.dtype.kind != "f" or all_finite(x)
    if finite and math.isfinite(cval):
        return x, cval, None

    def where(mask: np.ndarray) -> np.ndarray | None:
        return mask.astype(x.dtype) if mask.any() else None

    if finite:
        info = Nonfinite(None, None, None, cval)
        return x, 0.0, info
    nan = np.isnan(x)
    pos = x == np.inf
    neg = x == -np.inf
    x0 = np.where(nan | pos | neg, x.dtype.type(0), x)
    info = Nonfinite(where(nan), where(pos), where(neg), cval)
    return x0, (cval if math.isfinite(cval) else 0.0), info


def all_finite(x: np.ndarray) -> bool:
    """Whether a float array holds no NaN/Inf (one parallel read, no temporary)."""
    if x.dtype.newbyteorder("=") not in (np.float32, np.float64):  # float16: no numba type
        return bool(np.isfinite(x).all())
    if not (x.flags.c_contiguous and x.dtype.isnative):
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    flat = x.reshape(-1)
    return bool(_all_finite(flat, numba.get_num_threads()))


@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
def _all_finite(flat, nthreads):  # pragma: no cover - compiled
    """``sum(v * 0)`` per block is 0 for finite values and NaN as soon as one is NaN/Inf (a
    reduction that vectorises, unlike a test with an early exit: ``reassoc`` lets the sum be
    reordered; NaN and Inf keep their IEEE meaning)."""
    n = flat.shape[0]
    nthreads = max(1, min(nthreads, n // 65536 + 1))
    per = (n + nthreads - 1) // nthreads
    bad = np.zeros(nthreads, dtype=np.bool_)
    for th in prange(nthreads):
        acc = flat.dtype.type(0)
        for i in range(th * per, min(n, (th + 1) * per)):
            acc += flat[i] * 0
        bad[th] = acc != 0
    return not bad.any()


def _count(
    ind: np.ndarray | None,
    cval_in: bool,
    support: np.ndarray,
    shape: Sequence[int],
    dtype: np.dtype,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
) -> np.ndarray | None:
    """How many non-zero taps of ``support`` read a marked value, per output (or None: 0)."""
    if not support.any() or (ind is None and not cval_in):
        return None
    src = ind if ind is not None else np.zeros(shape, dtype=dtype)
    c = 1.0 if cval_in else 0.0
    if np.count_nonzero(support) > _FFT_TAPS:
        counts = fft(src, dense_job(support, axes, origins, modes, c, "fft"))
    else:
        counts = direct(src, dense_job(support.astype(dtype), axes, origins, modes, c, "direct"))
    return counts > 0.5


def patch(
    result: np.ndarray,
    info: Nonfinite,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
) -> np.ndarray:
    """Set the outputs that non-finite data reaches through ``kernel``'s taps (in place)."""
    constant = any(modes[a] == "constant" for a in axes)
    c = info.cval if constant else 0.0
    args = (result.shape, result.dtype, axes, origins, modes)
    nonzero = kernel != 0
    plus, minus = kernel > 0, kernel < 0
    nan = _count(info.nan, math.isnan(c), nonzero, *args)
    if info.pos is not None or info.neg is not None or math.isinf(c):
        p_plus = _count(info.pos, c == np.inf, plus, *args)
        n_minus = _count(info.neg, c == -np.inf, minus, *args)
        p_minus = _count(info.pos, c == np.inf, minus, *args)
        n_plus = _count(info.neg, c == -np.inf, plus, *args)
        up = _union(p_plus, n_minus)
        down = _union(p_minus, n_plus)
        if up is not None:
            result[up] = np.inf
        if down is not None:
            result[down] = -np.inf
        if up is not None and down is not None:
            result[up & down] = np.nan
    if nan is not None:
        result[nan] = np.nan
    return result


def _union(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a | b
