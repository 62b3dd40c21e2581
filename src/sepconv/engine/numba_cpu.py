"""numba CPU engine: one 1-D correlation pass along any axis of an N-D array.

The array is viewed as ``(outer, n, inner)`` with ``n`` the filtered axis. Output row
``(o, i)`` is ``sum_j w[j] * x[o, table[i + j], :]`` (``cval`` where ``table`` is -1): an AXPY
of contiguous rows when ``inner > 1``; along the last axis each line is padded into a buffer
and accumulated tap by tap (again an AXPY over the contiguous line).
Rows are distributed over threads with ``prange``; nothing is transposed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._modes import extension_table

__all__ = ["correlate_pass"]


@njit(parallel=True, cache=True, nogil=True)
def _pass_rows(x, w, table, cval, out):  # pragma: no cover - compiled
    outer, n, inner = x.shape
    k = w.shape[0]
    for t in prange(outer * n):
        o = t // n
        i = t - o * n
        row = out[o, i]
        for c in range(inner):
            row[c] = 0.0
        for j in range(k):
            wj = w[j]
            src = table[i + j]
            if src < 0:
                v = wj * cval
                for c in range(inner):
                    row[c] += v
            else:
                xr = x[o, src]
                for c in range(inner):
                    row[c] += wj * xr[c]


@njit(parallel=True, cache=True, nogil=True)
def _pass_lines(x, w, table, cval, out):  # pragma: no cover - compiled
    lines, n = x.shape
    k = w.shape[0]
    m = n + k - 1
    for o in prange(lines):
        buf = np.empty(m, dtype=x.dtype)
        line = x[o]
        for p in range(m):
            src = table[p]
            buf[p] = cval if src < 0 else line[src]
        res = out[o]
        w0 = w[0]
        for i in range(n):
            res[i] = buf[i] * w0
        for j in range(1, k):  # AXPY over the contiguous line: vectorises
            wj = w[j]
            for i in range(n):
                res[i] += buf[i + j] * wj


def correlate_pass(
    x: np.ndarray, weights: np.ndarray, axis: int, offset: int, mode: str, cval: float
) -> np.ndarray:
    """Correlate the C-contiguous float array ``x`` with 1-D ``weights`` along ``axis``.

    ``offset`` is the index of the kernel tap that sits on the output sample
    (``len(weights) // 2 + origin``); ``mode`` is a canonical mode name. Returns a new
    C-contiguous array of ``x``'s shape and dtype.
    """
    shape = x.shape
    n = shape[axis]
    out = np.empty(shape, dtype=x.dtype)
    if x.size == 0:
        return out
    w = np.ascontiguousarray(weights, dtype=x.dtype)
    table = extension_table(n, w.shape[0], offset, mode)
    c = x.dtype.type(cval)
    inner = 1
    for s in shape[axis + 1 :]:
        inner *= s
    outer = x.size // (n * inner)
    if inner == 1:
        _pass_lines(x.reshape(outer, n), w, table, c, out.reshape(outer, n))
    else:
        _pass_rows(x.reshape(outer, n, inner), w, table, c, out.reshape(outer, n, inner))
    return out
