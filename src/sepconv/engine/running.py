"""Box (moving-average) passes in constant time: compensated running sums.

``box_pass(x, axis, size, origin, mode, cval)`` computes
``scipy.ndimage.correlate1d(x, np.full(size, 1 / size), axis, mode=mode, cval=cval,
origin=origin)`` with O(1) work per output whatever ``size``; ``box`` chains such passes over
several axes (the constant-mode ``cval`` carried as :func:`sepconv.job.carry` says) and fuses
the last two axes.

The running sum
    Output ``i`` of a pass with ``k = size`` and ``off = k // 2 + origin`` averages the padded
    line at positions ``i - off .. i - off + k - 1``; a position maps to an input index (or to
    ``cval``) through ``_modes.extension_table``. The first window of each line (or of each
    chunk of a line, for parallel work) is summed directly, as the *multiplicity* of every
    input index in it: a window longer than the axis (``size`` > n, every mode, repeated
    reflection or wrapping) costs O(n), not O(size). Then ``S(i + 1) = S(i) + p[i - off + k] -
    p[i - off]`` and each output is ``S(i) / k`` (a division, so integer sums give correctly
    rounded means: scipy's ``test_uniform_filter1d_roundoff_errors``).

Accuracy
    A plain running sum drifts: a value 1e10 entering and leaving the window leaves its
    rounding error (1e-6) in every later output. Here the sum is a float64 pair ``(S, C)``
    updated by error-free transformations (Knuth's TwoSum; Dekker's TwoProduct for a
    multiplicity above one), so ``S + C`` is the window's exact sum up to the rounding of
    ``C``, a second-order term: the error stays at or below that of a direct sum, for float32
    data too (float64 accumulators always). Measured (``tests/test_running.py``; the module
    report) against scipy in float64.
    ``fastmath={'contract'}`` only: TwoSum has no product to contract and must never be
    reassociated.

Memory order
    * an outer axis (not the last): the state ``(S, C)`` is a tile of a row; each step adds
      the entering row and subtracts the leaving row (AXPY-like, contiguous), parallel over
      (outer index, chunk of the axis, tile of the row);
    * the last axis: ``_LANES`` lines at once, one SIMD lane each (a running sum along one
      line is a chain of dependent additions), parallel over blocks of lines;
    * the last two axes together (``box``): the column pass produces ``_LANES`` rows at a
      time into a per-thread float64 buffer (transposed: one lane per row), which the row
      pass consumes at once; the intermediate never goes to memory and is never rounded to
      the output type.

NaN and Inf
    A running sum would carry a NaN (or ``inf - inf``) to the end of the line. The result here
    is that of the direct correlation, pass by pass (scipy's ``correlate1d`` with the box
    weights): NaN where the window holds a NaN or infinities of both signs, +-Inf where it
    holds infinities of one sign. Each unit of work (a tile, a block of lines, a chunk of rows)
    first runs the fast kernel; non-finite values make its final state non-finite (NaN and Inf
    stick to a sum), and then the unit runs again *counting* the NaN, +Inf and -Inf in the
    window (the sum takes only the finite values), so MRI-like data with NaN backgrounds stays
    O(1) per output. A finite sum that overflows float64 (data near 1e308) makes the whole
    pass fall back to the direct engine (``numba_cpu.separable``), which scales each term by
    ``1 / size`` before adding.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .._modes import extension_table, normalize_mode
from ..job import Job, carry
from . import numba_cpu
from ._shared import split, tile_units, transpose_out, unit

__all__ = ["FUSE_MAX_WIDTH", "box", "box_pass"]

_FM = {"contract"}
_LANES = 32  # lines swept together along the last axis (the SIMD direction)
_TILE = 1024  # row elements per state tile in outer-axis passes
_TT = 64  # positions per tile of the block transposes
#: Widest last axis fused with the axis before it (the per-thread buffer is 64 bytes a column).
FUSE_MAX_WIDTH = 1 << 14
_SPLIT = 134217729.0  # 2**27 + 1, Dekker's splitter for float64


# ----------------------------------------------------------------------------------------------
# error-free arithmetic
# ----------------------------------------------------------------------------------------------


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _two_sum(a, b):  # pragma: no cover - compiled
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _two_prod(a, b):  # pragma: no cover - compiled
    """``(p, e)`` with ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker, no FMA)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _add(s, c, v, mul):  # pragma: no cover - compiled
    """The pair ``(s, c)`` plus ``mul * v`` (``mul`` a positive integer as a float)."""
    if mul == 1.0:
        s, e = _two_sum(s, v)
        return s, c + e
    p, ep = _two_prod(mul, v)
    s, e = _two_sum(s, p)
    return s, c + (e + ep)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _slide(s, t, a, b):  # pragma: no cover - compiled
    """The pair ``(s, t)`` plus ``a - b`` (``a`` enters the window, ``b`` leaves it): the
    difference exact as ``d + ed``, then added by TwoSum."""
    d, ed = _two_sum(a, -b)
    s, es = _two_sum(s, d)
    return s, t + (es + ed)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _emit_slide(S, C, c, a, b, fk, dst, d0, d1, col):  # pragma: no cover - compiled
    """``dst[d0, d1, col] = (S[c] + C[c]) / k``, then the pair of column ``c`` slides by
    ``a - b``: the fast loop's body, written once (inlined: a call per step would pass every
    array's fields, which costs more than the step itself for a short row of lanes)."""
    s0 = S[c]
    t0 = C[c]
    dst[d0, d1, col] = (s0 + t0) / fk
    S[c], C[c] = _slide(s0, t0, a, b)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _count(v, mul, nn, npos, nneg):  # pragma: no cover - compiled
    """Counts of NaN, +Inf and -Inf after adding ``mul`` copies of the non-finite ``v``."""
    m = np.int64(mul)
    if v != v:
        return nn + m, npos, nneg
    if v > 0:
        return nn, npos + m, nneg
    return nn, npos, nneg + m


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _mean(s, c, nn, npos, nneg, fk):  # pragma: no cover - compiled
    """The output of a window: NaN, +-Inf from the counts, else ``(s + c) / k``."""
    if nn > 0 or (npos > 0 and nneg > 0):
        return np.nan
    if npos > 0:
        return np.inf
    if nneg > 0:
        return -np.inf
    return (s + c) / fk


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _finite(v):  # pragma: no cover - compiled
    return v - v == 0.0


# ----------------------------------------------------------------------------------------------
# a row of running sums: the state (S, C) of ``m`` columns and its NaN/Inf counts
# (no array slices in these loops: a slice costs an atomic reference count in numba)
# ----------------------------------------------------------------------------------------------


@njit(fastmath=_FM, cache=True, nogil=True)
def _init(S, C, NN, NP, NM, x, o, c0, m, idx, mul, e0, e1, cval, track):  # pragma: no cover
    """The state of a window from its entries ``idx[e0:e1]`` (rows of ``x[o]``, -1 for
    ``cval``) with multiplicities ``mul``: columns ``c0 .. c0 + m`` of the sum."""
    u0 = np.uint64(c0)
    for c in range(np.uint64(m)):
        S[c] = 0.0
        C[c] = 0.0
        NN[c] = 0
        NP[c] = 0
        NM[c] = 0
    for e in range(e0, e1):
        src = idx[e]
        w = mul[e]
        if src < 0:
            if track and not _finite(cval):
                n0, p0, m0 = _count(cval, w, 0, 0, 0)
                for c in range(np.uint64(m)):
                    NN[c] += n0
                    NP[c] += p0
                    NM[c] += m0
            else:
                for c in range(np.uint64(m)):
                    S[c], C[c] = _add(S[c], C[c], cval, w)
        elif track:
            for c in range(np.uint64(m)):
                v = np.float64(x[o, src, u0 + c])
                if _finite(v):
                    S[c], C[c] = _add(S[c], C[c], v, w)
                else:
                    NN[c], NP[c], NM[c] = _count(v, w, NN[c], NP[c], NM[c])
        elif w == 1.0:
            for c in range(np.uint64(m)):
                s, e = _two_sum(S[c], np.float64(x[o, src, u0 + c]))
                S[c] = s
                C[c] += e
        else:
            for c in range(np.uint64(m)):
                S[c], C[c] = _add(S[c], C[c], np.float64(x[o, src, u0 + c]), w)


@njit(fastmath=_FM, cache=True, nogil=True)
def _emit_step(S, C, x, o, c0, m, je, jl, fk, dst, d0, d1):  # pragma: no cover - compiled
    """``dst[d0, d1, c0 + c] = (S + C) / k``, then add row ``je`` of ``x[o]`` and subtract
    row ``jl``: the fast path (no NaN/Inf counts, no cval; one loop per function, or LLVM
    stops vectorising it)."""
    u0 = np.uint64(c0)
    for c in range(np.uint64(m)):
        a = np.float64(x[o, je, u0 + c])
        _emit_slide(S, C, c, a, np.float64(x[o, jl, u0 + c]), fk, dst, d0, d1, u0 + c)


@njit(fastmath=_FM, cache=True, nogil=True)
def _emit_step_cval(S, C, x, o, c0, m, ie, il, cval, fk, dst, d0, d1):  # pragma: no cover
    """``_emit_step`` where the entering or the leaving row is ``cval`` (index -1)."""
    u0 = np.uint64(c0)
    je = max(ie, 0)
    jl = max(il, 0)
    ce = ie < 0
    cl = il < 0
    for c in range(np.uint64(m)):
        a = cval if ce else np.float64(x[o, je, u0 + c])
        b = cval if cl else np.float64(x[o, jl, u0 + c])
        _emit_slide(S, C, c, a, b, fk, dst, d0, d1, u0 + c)


@njit(fastmath=_FM, cache=True, nogil=True)
def _emit(S, C, fk, dst, d0, d1, c0, m):  # pragma: no cover - compiled
    """``dst[d0, d1, c0 + c] = (S + C) / k`` (the last output of a sweep)."""
    u0 = np.uint64(c0)
    for c in range(np.uint64(m)):
        dst[d0, d1, u0 + c] = (S[c] + C[c]) / fk


@njit(fastmath=_FM, cache=True, nogil=True)
def _advance(S, C, NN, NP, NM, x, o, c0, m, ie, il, cval, fk, dst, d0, d1, more, track):
    """Emit output ``dst[d0, d1, c0:c0 + m]`` of the state, then (``more``) move the window
    by one: add row ``ie`` of ``x[o]``, subtract row ``il`` (-1: ``cval``)."""
    if track:
        _emit_track(S, C, NN, NP, NM, fk, dst, d0, d1, c0, m)
        if more:
            _step_track(S, C, NN, NP, NM, x, o, c0, m, ie, il, cval)
    elif not more:
        _emit(S, C, fk, dst, d0, d1, c0, m)
    elif ie >= 0 and il >= 0:
        _emit_step(S, C, x, o, c0, m, ie, il, fk, dst, d0, d1)
    else:
        _emit_step_cval(S, C, x, o, c0, m, ie, il, cval, fk, dst, d0, d1)


@njit(fastmath=_FM, cache=True, nogil=True)
def _emit_track(S, C, NN, NP, NM, fk, dst, d0, d1, c0, m):  # pragma: no cover - compiled
    """``dst[d0, d1, c0 + c]``: the window's mean, or NaN/+-Inf from its counts."""
    u0 = np.uint64(c0)
    for c in range(np.uint64(m)):
        dst[d0, d1, u0 + c] = _mean(S[c], C[c], NN[c], NP[c], NM[c], fk)


@njit(fastmath=_FM, cache=True, nogil=True)
def _step_track(S, C, NN, NP, NM, x, o, c0, m, ie, il, cval):  # pragma: no cover - compiled
    """Add row ``ie`` and subtract row ``il`` of ``x[o]`` (-1: ``cval``), non-finite values
    counted instead of summed."""
    u0 = np.uint64(c0)
    je = max(ie, 0)
    jl = max(il, 0)
    for c in range(np.uint64(m)):
        a = cval if ie < 0 else np.float64(x[o, je, u0 + c])
        b = cval if il < 0 else np.float64(x[o, jl, u0 + c])
        if _finite(a):
            s, e = _two_sum(S[c], a)
            S[c] = s
            C[c] += e
        else:
            NN[c], NP[c], NM[c] = _count(a, 1.0, NN[c], NP[c], NM[c])
        if _finite(b):
            s, e = _two_sum(S[c], -b)
            S[c] = s
            C[c] += e
        else:
            n0, p0, m0 = _count(b, 1.0, 0, 0, 0)
            NN[c] -= n0
            NP[c] -= p0
            NM[c] -= m0


@njit(fastmath=_FM, cache=True, nogil=True)
def _sweep(
    S, C, NN, NP, NM, x, o, c0, m, idx, mul, e0, e1, r0, r1, enter, leave, cval, fk, track,
    dst, d0, ring, out, oo, row0,
):  # pragma: no cover - compiled  # fmt: skip
    """Outputs ``r0 .. r1`` along axis 1 of ``x[o]`` (columns ``c0 .. c0 + m``); the first
    window from the entries ``e0 .. e1``. Output ``i`` goes to ``dst[d0, i, c0 + c]``, or
    with ``ring`` to ``dst[d0, (i - r0) % _TT, c]``, flushed transposed into
    ``out[oo, row0 + c, i]`` (the lines of a block). Returns whether a state ended
    non-finite (a NaN/Inf entered; in ``track`` mode: the finite sum overflowed).

    The fast loop's body is inlined here (``_emit_slide``), not called.
    """
    _init(S, C, NN, NP, NM, x, o, c0, m, idx, mul, e0, e1, cval, track)
    u0 = np.uint64(c0)
    j0 = r0
    for i in range(r0, r1):
        r = i - j0 if ring else i
        if i + 1 == r1:
            if track:
                _emit_track(S, C, NN, NP, NM, fk, dst, d0, r, c0, m)
            else:
                for c in range(np.uint64(m)):
                    dst[d0, r, u0 + c] = (S[c] + C[c]) / fk
        elif track:
            _emit_track(S, C, NN, NP, NM, fk, dst, d0, r, c0, m)
            _step_track(S, C, NN, NP, NM, x, o, c0, m, enter[i], leave[i], cval)
        elif enter[i] >= 0 and leave[i] >= 0:
            je = enter[i]
            jl = leave[i]
            for c in range(np.uint64(m)):
                a = np.float64(x[o, je, u0 + c])
                _emit_slide(S, C, c, a, np.float64(x[o, jl, u0 + c]), fk, dst, d0, r, u0 + c)
        else:
            _emit_step_cval(S, C, x, o, c0, m, enter[i], leave[i], cval, fk, dst, d0, r)
        if ring and (r == _TT - 1 or i + 1 == r1):
            transpose_out(dst, m, r + 1, out, oo, row0, j0)
            j0 = i + 1
    return _bad(S, C, m)


@njit(cache=True, nogil=True, inline="always")
def _state(width):  # pragma: no cover - compiled
    """A thread's row of ``width`` states: the pair ``(S, C)`` and the NaN, +Inf, -Inf counts."""
    nn = np.zeros(width, dtype=np.int64)
    return np.zeros(width), np.zeros(width), nn, np.zeros_like(nn), np.zeros_like(nn)


@njit(fastmath=_FM, cache=True, nogil=True)
def _bad(S, C, m):  # pragma: no cover - compiled
    """Whether any state is non-finite (NaN and Inf stick to a sum)."""
    z = 0.0
    for c in range(np.uint64(m)):
        z += (S[c] + C[c]) * 0.0
    return z != 0.0


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _outer_pass(
    x, out, fk, cval, ptr, idx, mul, starts, enter, leave, track, todo, bad, nthreads
):  # pragma: no cover - compiled
    """Pass along axis 1 of ``x`` (outer, n, inner); units (outer, chunk of n, tile)."""
    nchunk = starts.shape[0] - 1
    units, ntiles, width = tile_units(x, nchunk, _TILE)
    nthreads, per = split(units, nthreads)
    for th in prange(nthreads):
        S, C, NN, NP, NM = _state(width)
        for u in range(th * per, min(units, (th + 1) * per)):
            if not todo[u]:
                continue
            o, ch, c0, m = unit(u, nchunk, ntiles, _TILE, x.shape[2])
            bad[u] = _sweep(
                S, C, NN, NP, NM, x, o, c0, m, idx, mul, ptr[ch], ptr[ch + 1],
                starts[ch], starts[ch + 1], enter, leave, cval, fk, track, out, o,
                False, out, o, 0,
            )  # fmt: skip


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _long_pass(
    x, out, fk, cval, ptr, idx, mul, starts, enter, leave, track, todo, bad, nthreads
):  # pragma: no cover - compiled
    """Pass along axis 1 of ``x`` (lines, n) for lines too long for a block buffer; units
    (line, chunk of n), the state in registers. Fast path only (``track`` is ignored): a unit
    that meets NaN/Inf (``bad``) is recomputed by ``_outer_pass`` counting them."""
    lines = x.shape[0]
    nchunk = starts.shape[0] - 1
    units = lines * nchunk
    nthreads, per = split(units, nthreads)
    for th in prange(nthreads):
        for u in range(th * per, min(units, (th + 1) * per)):
            if not todo[u]:
                continue
            line = u // nchunk
            ch = u - line * nchunk
            if starts[ch + 1] == starts[ch]:
                continue
            s = 0.0
            t = 0.0
            for e in range(ptr[ch], ptr[ch + 1]):
                j = idx[e]
                s, t = _add(s, t, cval if j < 0 else np.float64(x[line, max(j, 0)]), mul[e])
            r1 = starts[ch + 1]
            for i in range(starts[ch], r1 - 1):
                out[line, i] = (s + t) / fk
                ie = enter[i]
                il = leave[i]
                a = cval if ie < 0 else np.float64(x[line, max(ie, 0)])
                b = cval if il < 0 else np.float64(x[line, max(il, 0)])
                s, t = _slide(s, t, a, b)
            out[line, r1 - 1] = (s + t) / fk
            bad[u] = not _finite(s + t)


@njit(fastmath=_FM, cache=True, nogil=True)
def _transpose_in(x, o, row0, nl, buf):  # pragma: no cover - compiled
    """``buf[0, j, ln] = x[o, row0 + ln, j]`` for ``ln < nl`` (tiles of ``_TT`` positions)."""
    n = x.shape[2]
    for j0 in range(0, n, _TT):
        u0 = np.uint64(j0)
        for ln in range(nl):
            for j in range(np.uint64(min(_TT, n - j0))):
                buf[0, u0 + j, ln] = x[o, row0 + ln, u0 + j]


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _lines_pass(
    x, out, fk, cval, idx, mul, enter, leave, lanes, track, todo, bad, nthreads
):  # pragma: no cover - compiled
    """Pass along axis 2 of ``x`` (outer, lines, n); units: blocks of ``lanes`` lines,
    copied transposed into a per-thread buffer and swept as its columns."""
    outer, lines, n = x.shape
    per_o = (lines + lanes - 1) // lanes
    units = outer * per_o
    nthreads, per = split(units, nthreads)
    for th in prange(nthreads):
        S, C, NN, NP, NM = _state(lanes)
        buf = np.zeros((1, n, lanes), dtype=x.dtype)  # the lines as they are
        ring = np.zeros((1, _TT, lanes))
        for u in range(th * per, min(units, (th + 1) * per)):
            if not todo[u]:
                continue
            o = u // per_o
            row0 = (u - o * per_o) * lanes
            nl = min(lanes, lines - row0)
            _transpose_in(x, o, row0, nl, buf)
            bad[u] = _sweep(
                S, C, NN, NP, NM, buf, 0, 0, nl, idx, mul, 0, idx.shape[0], 0, n, enter, leave,
                cval, fk, track, ring, 0, True, out, o, row0,
            )  # fmt: skip


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _fused_pass(
    x, out, fk0, cv0, ptr0, idx0, mul0, starts, enter0, leave0,
    fk1, cv1, idx1, mul1, enter1, leave1, lanes, track, todo, bad, nthreads,
):  # pragma: no cover - compiled  # fmt: skip
    """Passes along axes 1 and 2 of ``x`` (outer, n0, n1), fused; units (outer, chunk of n0).

    The column pass writes ``lanes`` intermediate rows (float64, never rounded to the output
    type) transposed into ``buf``, which the row pass sweeps as its columns at once; the
    intermediate never goes to memory.
    """
    outer = x.shape[0]
    n1 = x.shape[2]
    nchunk = starts.shape[0] - 1
    units = outer * nchunk
    nthreads, per = split(units, nthreads)
    for th in prange(nthreads):
        S0, C0, NN0, NP0, NM0 = _state(n1)
        blk = np.zeros((1, lanes, n1))
        buf = np.zeros((1, n1, lanes))
        ring = np.zeros((1, _TT, lanes))
        S1, C1, NN1, NP1, NM1 = _state(lanes)
        for u in range(th * per, min(units, (th + 1) * per)):
            if not todo[u]:
                continue
            o = u // nchunk
            ch = u - o * nchunk
            r0 = starts[ch]
            r1 = starts[ch + 1]
            _init(
                S0, C0, NN0, NP0, NM0, x, o, 0, n1, idx0, mul0, ptr0[ch], ptr0[ch + 1], cv0, track
            )
            flag = False
            base = r0
            for i in range(r0, r1):
                lane = i - base
                more = i + 1 < r1
                ie = enter0[i] if more else 0
                il = leave0[i] if more else 0
                _advance(
                    S0, C0, NN0, NP0, NM0, x, o, 0, n1, ie, il, cv0, fk0, blk, 0, lane, more, track
                )
                if lane == lanes - 1 or not more:
                    _transpose_in(blk, 0, 0, lane + 1, buf)
                    flag |= _sweep(
                        S1, C1, NN1, NP1, NM1, buf, 0, 0, lane + 1, idx1, mul1, 0, idx1.shape[0],
                        0, n1, enter1, leave1, cv1, fk1, track, ring, 0, True, out, o, base,
                    )  # fmt: skip
                    base = i + 1
            bad[u] = flag or _bad(S0, C0, n1)


# ----------------------------------------------------------------------------------------------
# windows: which input indices (and how often) each first window reads
# ----------------------------------------------------------------------------------------------


def _period(n: int, mode: str) -> int:
    """The period of the padded line (wrap, reflect, mirror); 0 for nearest and constant."""
    if mode == "wrap":
        return n
    if mode == "reflect":
        return 2 * n
    if mode == "mirror":
        return max(1, 2 * n - 2)
    return 0


class _Extension:
    """Input index of any padded position of an axis of ``n`` samples (-1: cval), read off
    ``extension_table``: one period of it for the periodic modes (built once), its first
    and last positions for the others (every position before 0 reads what -1 reads, every
    one after n - 1 what n reads). Positions inside the line map to themselves."""

    def __init__(self, n: int, mode: str) -> None:
        self.n, self.mode, self.period = n, mode, _period(n, mode)
        self._table: np.ndarray | None = None

    def map(self, p: np.ndarray) -> np.ndarray:
        if self._table is None:
            if self.period:  # positions 0 .. period - 1 (offset 0)
                k = max(1, self.period - self.n + 1)
                self._table = extension_table(self.n, k, 0, self.mode)[: self.period]
            else:  # positions -1 .. n + 1
                self._table = extension_table(self.n, 3, 1, self.mode)
        if self.period:
            return self._table[np.mod(p, self.period)]
        return self._table[np.clip(p, -1, self.n) + 1]

    def __call__(self, start: int, length: int) -> np.ndarray:
        """Indices of the positions ``start .. start + length - 1``."""
        n = self.n
        out = np.arange(start, start + max(length, 0), dtype=np.int64)
        lo = min(max(-start, 0), len(out))  # leading positions before 0
        hi = min(max(start + len(out) - n, 0), len(out))  # trailing positions after n - 1
        if lo:
            out[:lo] = self.map(out[:lo])
        if hi:
            out[len(out) - hi :] = self.map(out[len(out) - hi :])
        return out

    def window(self, k: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, mul)``: the window of ``k`` positions from ``start`` as input indices (-1
        for cval) and their multiplicities; at most ``min(k, 2 n + 2)`` entries however long
        the window (a window of ``q`` whole periods reads each index of a period ``q`` times
        more)."""
        n, period = self.n, self.period
        if period and k >= period:
            q, r = divmod(k, period)
            counts = np.zeros(n, dtype=np.int64)
            np.add.at(counts, self(0, period), q)
            np.add.at(counts, self(start, r), 1)
            idx = np.nonzero(counts)[0].astype(np.int64)
            return idx, counts[idx].astype(np.float64)
        if period:
            idx, mul = np.unique(self(start, k), return_counts=True)
            return idx.astype(np.int64), mul.astype(np.float64)
        # nearest, constant: the positions inside the line once each, those before and
        # after it as one entry each (what -1 or n reads, times how many there are)
        lo, hi = max(start, 0), min(start + k, n)
        parts = [np.arange(lo, max(lo, hi), dtype=np.int64)]
        muls = [np.ones(len(parts[0]))]
        for p, count in ((-1, min(max(-start, 0), k)), (n, min(max(start + k - n, 0), k))):
            if count:
                parts.append(self.map(np.array([p], dtype=np.int64)).astype(np.int64))
                muls.append(np.array([float(count)]))
        return np.concatenate(parts), np.concatenate(muls)


class _Axis:
    """Everything a pass along one axis needs: first windows per chunk, entering/leaving."""

    def __init__(self, n: int, k: int, origin: int, mode: str, nchunk: int) -> None:
        off = k // 2 + origin
        self.fk = float(k)
        self.starts = np.linspace(0, n, nchunk + 1).round().astype(np.int64)
        ext = _Extension(n, mode)
        wins = [ext.window(k, int(r) - off) for r in self.starts[:-1]]
        self.ptr = np.cumsum([0] + [len(w[0]) for w in wins]).astype(np.int64)
        self.idx = np.concatenate([w[0] for w in wins])
        self.mul = np.concatenate([w[1] for w in wins])
        # after output i the window gains position i - off + k and loses i - off
        self.enter = ext(k - off, n - 1)
        self.leave = ext(-off, n - 1)


def _chunks(n: int, units: int, nthreads: int) -> int:
    """Chunks along an axis so that every thread has work (``units`` other units), at least
    ``_LANES`` outputs each. A chunk starts with a direct sum of ``min(k, 2 n)`` rows, each
    cheaper than a step (one add, no output), so splitting pays even for ``k`` near ``n``."""
    want = -(-nthreads // max(1, units))
    return max(1, min(want, n // _LANES))


# ----------------------------------------------------------------------------------------------
# drivers
# ----------------------------------------------------------------------------------------------


def _run_units(
    kernel: Any, units: int, args: tuple, counting: Any = None, counting_args: tuple = ()
) -> bool:
    """Run ``kernel`` fast over every unit, then ``counting`` (default: ``kernel``) in
    ``track`` mode, counting NaN/Inf, over the units whose state ended non-finite. Returns
    whether a finite sum overflowed there (the caller then falls back to the direct engine).
    """
    nthreads = numba.get_num_threads()
    todo = np.ones(units, dtype=np.bool_)
    bad = np.zeros(units, dtype=np.bool_)
    kernel(*args, False, todo, bad, nthreads)
    if not bad.any():
        return False
    overflow = np.zeros(units, dtype=np.bool_)
    if counting is None:
        counting, counting_args = kernel, args
    counting(*counting_args, True, bad, overflow, nthreads)
    return bool(overflow.any())


def _check(
    x: Any, out: np.ndarray | None, dtype: Any, name: str = "box_pass"
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: x must be a numpy array, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name}: x must have at least one axis, got a 0-D array")
    if not (x.flags.c_contiguous and x.dtype.isnative):
        raise ValueError(f"{name}: x must be C-contiguous in native byte order")
    if not (x.dtype.kind in "iu" or x.dtype in (np.float32, np.float64)):
        raise TypeError(
            f"{name}: x dtype must be float32, float64 or an integer type, got {x.dtype}"
        )
    if dtype is None:
        dtype = out.dtype if out is not None else x.dtype if x.dtype.kind == "f" else np.float64
    dt = np.dtype(dtype)
    if out is not None:
        if out.shape != x.shape:
            raise ValueError(f"{name}: out must have x's shape {x.shape}, got {out.shape}")
        if out.dtype != dt:
            raise ValueError(f"{name}: out dtype {out.dtype} differs from dtype {dt}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(f"{name}: out must be a writeable C-contiguous array")
        if np.shares_memory(out, x):
            raise ValueError(f"{name}: out must not overlap x")
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dt}")
    if out is None:
        out = np.empty(x.shape, dtype=dt)
    return x, out


def _size(size: Any) -> int:
    try:
        k = operator.index(size)
    except TypeError:
        raise TypeError(f"size must be an int, got {size!r}") from None
    if isinstance(size, bool) or k < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    return k


def _origin(origin: Any, k: int) -> int:
    try:
        o = operator.index(origin)
    except TypeError:
        raise TypeError(f"origin must be an int, got {origin!r}") from None
    if not -(k // 2) <= o <= (k - 1) // 2:
        raise ValueError(
            f"origin must be between {-(k // 2)} and {(k - 1) // 2} for size {k}, got {o}"
        )
    return o


def _pass(
    src: np.ndarray, dst: np.ndarray, axis: int, k: int, origin: int, mode: str, cval: float
) -> None:
    """One pass from ``src`` into ``dst`` (both C-contiguous, same shape)."""
    n = src.shape[axis]
    inner = math.prod(src.shape[axis + 1 :])
    outer = src.size // (n * inner)
    nthreads = numba.get_num_threads()
    args: tuple[Any, ...]
    if inner == 1 and n <= FUSE_MAX_WIDTH:  # lines: blocks of lines swept as columns
        ax = _Axis(n, k, origin, mode, 1)
        shape = (1, outer, n)
        args = (src.reshape(shape), dst.reshape(shape), ax.fk, cval, ax.idx, ax.mul)
        args += (ax.enter, ax.leave, _LANES)
        overflow = _run_units(_lines_pass, -(-outer // _LANES), args)
    elif inner == 1:  # long lines: one state per (line, chunk), in registers
        nchunk = _chunks(n, outer, nthreads)
        ax = _Axis(n, k, origin, mode, nchunk)
        tables = (ax.fk, cval, ax.ptr, ax.idx, ax.mul, ax.starts, ax.enter, ax.leave)
        args = (src.reshape(outer, n), dst.reshape(outer, n), *tables)
        shape3 = (outer, n, 1)  # units counting NaN/Inf: the general kernel, one column
        counting_args = (src.reshape(shape3), dst.reshape(shape3), *tables)
        overflow = _run_units(_long_pass, outer * nchunk, args, _outer_pass, counting_args)
    else:  # an outer axis: rows as AXPY-like updates, tiles of the row
        ntiles = -(-inner // _TILE)
        nchunk = _chunks(n, outer * ntiles, nthreads)
        ax = _Axis(n, k, origin, mode, nchunk)
        shape3 = (outer, n, inner)
        args = (src.reshape(shape3), dst.reshape(shape3), ax.fk, cval, ax.ptr, ax.idx, ax.mul)
        args += (ax.starts, ax.enter, ax.leave)
        overflow = _run_units(_outer_pass, outer * nchunk * ntiles, args)
    if overflow:
        _direct(src, dst, [(axis, k, origin, mode)], cval)


def _fused(src: np.ndarray, dst: np.ndarray, p0: tuple, p1: tuple, cval: float) -> None:
    """Passes ``p0`` (axis ndim-2) and ``p1`` (axis ndim-1), fused, from src into dst."""
    (_, k0, o0, m0), (_, k1, o1, m1) = p0, p1
    n0, n1 = src.shape[-2], src.shape[-1]
    outer = src.size // (n0 * n1)
    nchunk = _chunks(n0, outer, numba.get_num_threads())
    a0 = _Axis(n0, k0, o0, m0, nchunk)
    a1 = _Axis(n1, k1, o1, m1, 1)
    c1 = carry(cval, _weights(k0))
    shape3 = (outer, n0, n1)
    args = (
        src.reshape(shape3),
        dst.reshape(shape3),
        a0.fk,
        float(cval),
        a0.ptr,
        a0.idx,
        a0.mul,
        a0.starts,
        a0.enter,
        a0.leave,
        a1.fk,
        float(c1),
        a1.idx,
        a1.mul,
        a1.enter,
        a1.leave,
        _LANES,
    )
    if _run_units(_fused_pass, outer * nchunk, args):
        _direct(src, dst, [p0, p1], cval)


def _weights(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def _direct(src: np.ndarray, dst: np.ndarray, passes: Sequence[tuple], cval: float) -> None:
    """The direct engine's passes (O(size) each): the fallback when a running sum overflows."""
    term = (1.0, tuple((a, _weights(k), o) for a, k, o, _ in passes))
    job = Job((term,), {a: m for a, _, _, m in passes}, cval)
    numba_cpu.separable(src, job, out=dst, dtype=dst.dtype)


def box_pass(
    x: np.ndarray,
    axis: int,
    size: int,
    origin: int = 0,
    mode: str = "reflect",
    cval: float = 0.0,
    out: np.ndarray | None = None,
    dtype: Any = None,
) -> np.ndarray:
    """Moving average of ``size`` samples along ``axis``, in O(1) work per output.

    Equals ``scipy.ndimage.correlate1d(x, np.full(size, 1 / size), axis, mode=mode,
    cval=cval, origin=origin)`` up to rounding (and its NaN/Inf pattern exactly), for every
    mode (scipy's names), origin and size, including sizes longer than the axis.

    ``x`` is a C-contiguous float32/float64 or integer array (read directly, no converted
    copy); the result has ``dtype`` (float32 or float64; default ``x.dtype`` for float input,
    float64 for integers) and goes into ``out`` (C-contiguous, not overlapping ``x``) or a new
    array. Sums are float64 and compensated whatever the dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv.engine.running import box_pass
    >>> box_pass(np.array([2.0, 8, 0, 4, 1, 9, 9, 0]), 0, 3)
    array([4.        , 3.33333333, 4.        , 1.66666667, 4.66666667, 6.33333333,
           6.        , 3.        ])
    """
    x, out = _check(x, out, dtype)
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {axis!r}") from None
    if not -x.ndim <= ax < x.ndim:
        raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim - 1}] for a {x.ndim}-D x, got {ax}")
    ax %= x.ndim
    k = _size(size)
    o = _origin(origin, k)
    mode = normalize_mode(mode)
    if x.size == 0:
        return out
    if k == 1:
        np.copyto(out, x, casting="unsafe")
        return out
    _pass(x, out, ax, k, o, mode, float(cval))
    return out


def box(
    x: np.ndarray,
    sizes: Sequence[int],
    axes: Sequence[int],
    origins: Sequence[int] | None = None,
    modes: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    out: np.ndarray | None = None,
    dtype: Any = None,
) -> np.ndarray:
    """``box_pass`` over several axes (``uniform_filter``): one pass per axis of size > 1.

    Passes run in increasing axis order, the constant-mode ``cval`` carried from pass to pass
    (``cval * sum(weights)``, :func:`sepconv.job.carry`), and the last two axes of the array
    run fused (no intermediate array) when both are filtered and the last has at most
    ``FUSE_MAX_WIDTH`` samples. ``sizes``, ``axes``, ``origins`` and ``modes`` (a string: the
    same for all) are per filtered axis. Other arguments as :func:`box_pass`; one temporary
    array of ``dtype`` for three or more passes.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv.engine.running import box
    >>> box(np.arange(9.0).reshape(3, 3), [3, 3], [0, 1])
    array([[1.33333333, 2.        , 2.66666667],
           [3.33333333, 4.        , 4.66666667],
           [5.33333333, 6.        , 6.66666667]])
    """
    x, out = _check(x, out, dtype, "box")
    axes = [operator.index(a) for a in axes]
    if any(not -x.ndim <= a < x.ndim for a in axes):
        raise ValueError(f"box: axes must be in [{-x.ndim}, {x.ndim - 1}], got {axes}")
    axes = [a % x.ndim for a in axes]
    if len(set(axes)) != len(axes):
        raise ValueError(f"box: axes must not repeat an axis, got {axes}")
    n = len(axes)
    if len(sizes) != n:
        raise ValueError(f"box: sizes must have one entry per axis ({n}), got {list(sizes)}")
    origins = [0] * n if origins is None else list(origins)
    if len(origins) != n:
        raise ValueError(f"box: origins must have one entry per axis ({n}), got {origins}")
    mlist = [modes] * n if isinstance(modes, str) else list(modes)
    if len(mlist) != n:
        raise ValueError(f"box: modes must be a mode or one per axis ({n}), got {modes!r}")
    passes = []
    for a, s, o, m in sorted(zip(axes, sizes, origins, mlist, strict=True)):
        k = _size(s)
        passes.append((a, k, _origin(o, k), normalize_mode(m)))
    passes = [p for p in passes if p[1] > 1]
    if x.size == 0:
        return out
    if not passes:
        np.copyto(out, x, casting="unsafe")
        return out
    stages: list[list[tuple]] = [[p] for p in passes]
    nd = x.ndim
    if (
        len(passes) >= 2
        and passes[-2][0] == nd - 2
        and passes[-1][0] == nd - 1
        and x.shape[-1] <= FUSE_MAX_WIDTH
    ):
        stages = [*stages[:-2], passes[-2:]]
    tmp: np.ndarray | None = None
    cur: np.ndarray = x
    c = float(cval)
    for s, stage in enumerate(stages):
        left = len(stages) - 1 - s  # stages after this one: ping-pong, ending in out
        if left % 2:
            if tmp is None:
                tmp = np.empty(x.shape, dtype=out.dtype)
            dst = tmp
        else:
            dst = out
        if len(stage) == 2:
            _fused(cur, dst, stage[0], stage[1], c)
            c = carry(carry(c, _weights(stage[0][1])), _weights(stage[1][1]))
        else:
            a, k, o, m = stage[0]
            _pass(cur, dst, a, k, o, m, c)
            c = carry(c, _weights(k))
        cur = dst
    return out
