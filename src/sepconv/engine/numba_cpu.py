"""numba CPU engine: 1-D correlation passes, fused 2-D row passes, and direct correlation.

Every kernel works on C-contiguous arrays and writes ``out = alpha * result`` (or
``out += alpha * result`` with ``accumulate``, how low-rank terms are summed without a
temporary). Work is split over threads in contiguous blocks of output rows, so neighbouring
output rows, which read mostly the same input rows, run on the same core.

Pass along an outer axis
    The array is viewed as ``(outer, n, inner)``; output row ``(o, i)`` is
    ``sum_j w[j] * x[o, table[i + j], :]``: AXPYs over contiguous rows, tiled along ``inner`` so
    the accumulator stays in L1.
Pass along the last axis
    Each line is padded into a buffer through the extension table and accumulated tap by tap
    (again an AXPY over the contiguous line).
Fused pass over the last two axes
    For each output row, the column pass over ``k0`` input rows produces one intermediate row
    in a per-thread buffer, which the row pass turns into the output row at once: the
    intermediate never goes to memory (OpenCV's ring buffer of rows, with a ring of one).
Slab of three passes (volumes)
    A pass along the third axis from the end, joined to the fused pass over the last two: for
    each output plane, the first pass fills one plane of a per-thread buffer (the input planes
    it reads stay in cache for the next output plane) and the fused pass turns it into the
    output plane, so a 3-D filter makes no intermediate volume (256^3 float32, Gaussian
    sigma 2, 2 threads: 36.8 ms instead of 44.8 ms, and the input plus the result is all the
    memory it takes; ``benchmarks/results/vm-2026-12-05-3d-slab-blocks.md``).
Direct
    Shift-and-add over a padded copy: for each output row and each non-zero tap, an AXPY of
    the padded row at the tap's offset.

``fastmath={'contract'}`` only allows fused multiply-adds; NaN and Inf keep IEEE semantics.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .._modes import extension_table, pad, saturation_bounds
from ..job import Job, Pass, carry
from ..job import stages as job_stages

__all__ = ["direct", "round_saturate", "separable"]

_FM = {"contract"}
_TILE = 2048  # elements of ``inner`` per accumulator tile
_SHORT_ROWS = 64  # passes whose rows are shorter than this pad whole blocks instead
_SLAB_PLANES = 2  # planes per thread from which 3-D slabs replace two stages


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _rows_pass(
    x, w, sym, table, cval, out, alpha, accumulate, nthreads, flags, check
):  # pragma: no cover - compiled
    outer, n, inner = x.shape
    w.shape[0]
    total = outer * n
    nthreads = max(1, min(nthreads, total))
    per = (total + nthreads - 1) // nthreads
    direct_write = (not accumulate) and alpha == 1.0
    for th in prange(nthreads):
        tile = np.empty(min(inner, _TILE), dtype=out.dtype)
        for t in range(th * per, min(total, (th + 1) * per)):
            o = t // n
            i = t - o * n
            dst = out[o, i]
            for c0 in range(0, inner, _TILE):
                c1 = min(inner, c0 + _TILE)
                acc = dst[c0:c1] if direct_write else tile[: c1 - c0]
                _rows_taps(x, o, w, sym, table, i, cval, c0, acc)
                if not direct_write:
                    _write(dst[c0:c1], acc, alpha, accumulate)
                if check and _nonfinite(dst[c0:c1]):
                    flags[th] = 1


@njit(fastmath=_FM, cache=True, nogil=True)
def _rows_taps(x, o, w, sym, table, i, cval, c0, acc):  # pragma: no cover - compiled
    """acc = sum_j w[j] * x[o, table[i + j], c0 : c0 + len(acc)] (cval where table < 0).

    ``sym`` = 1 (symmetric) or -1 (antisymmetric) folds tap pairs: one multiply per pair.
    """
    m = acc.shape[0]
    k = w.shape[0]
    if sym == 0:
        for j in range(k):
            _row_axpy(x, o, w[j], table[i + j], cval, c0, acc, j == 0)
        return
    half = k // 2
    if k % 2 == 1:
        _row_axpy(x, o, w[half], table[i + half], cval, c0, acc, True)
    else:
        for c in range(m):
            acc[c] = 0.0
    j = 0
    while j < half:
        if sym > 0 and j + 2 <= half and _pairs_sweep(x, o, w, table, i, k, j, c0, acc):
            j += 4 if j + 4 <= half else 2
            continue
        wj = w[j]
        s1 = table[i + j]
        s2 = table[i + k - 1 - j]
        j += 1
        if s1 >= 0 and s2 >= 0:
            r1 = x[o, s1, c0 : c0 + m]
            r2 = x[o, s2, c0 : c0 + m]
            if sym > 0:
                for c in range(m):
                    acc[c] += wj * (r1[c] + r2[c])
            else:
                for c in range(m):
                    acc[c] += wj * (r1[c] - r2[c])
        else:
            _row_axpy(x, o, wj, s1, cval, c0, acc, False)
            _row_axpy(x, o, wj * sym, s2, cval, c0, acc, False)


@njit(fastmath=_FM, cache=True, nogil=True)
def _pairs_sweep(x, o, w, table, i, k, j, c0, acc):  # pragma: no cover - compiled
    """Symmetric tap pairs ``j .. j + 3`` (or ``j, j + 1`` when fewer than four are left) in
    one sweep over ``acc`` (a load and a store of ``acc`` per group, not per pair); False,
    doing nothing, where a row of the group is the constant border (``table < 0``)."""
    m = acc.shape[0]
    half = k // 2
    a0 = table[i + j]
    b0 = table[i + k - 1 - j]
    a1 = table[i + j + 1]
    b1 = table[i + k - 2 - j]
    if j + 4 <= half:
        a2 = table[i + j + 2]
        b2 = table[i + k - 3 - j]
        a3 = table[i + j + 3]
        b3 = table[i + k - 4 - j]
        if min(min(min(a0, b0), min(a1, b1)), min(min(a2, b2), min(a3, b3))) < 0:
            return False
        p0 = x[o, a0, c0 : c0 + m]
        q0 = x[o, b0, c0 : c0 + m]
        p1 = x[o, a1, c0 : c0 + m]
        q1 = x[o, b1, c0 : c0 + m]
        p2 = x[o, a2, c0 : c0 + m]
        q2 = x[o, b2, c0 : c0 + m]
        p3 = x[o, a3, c0 : c0 + m]
        q3 = x[o, b3, c0 : c0 + m]
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        for c in range(m):
            acc[c] += (w0 * (p0[c] + q0[c]) + w1 * (p1[c] + q1[c])) + (
                w2 * (p2[c] + q2[c]) + w3 * (p3[c] + q3[c])
            )
        return True
    if min(min(a0, b0), min(a1, b1)) < 0:
        return False
    p0 = x[o, a0, c0 : c0 + m]
    q0 = x[o, b0, c0 : c0 + m]
    p1 = x[o, a1, c0 : c0 + m]
    q1 = x[o, b1, c0 : c0 + m]
    w0, w1 = w[j], w[j + 1]
    for c in range(m):
        acc[c] += w0 * (p0[c] + q0[c]) + w1 * (p1[c] + q1[c])
    return True


@njit(fastmath=_FM, cache=True, nogil=True)
def _row_axpy(x, o, wj, src, cval, c0, acc, first):  # pragma: no cover - compiled
    m = acc.shape[0]
    if src < 0:
        v = wj * cval
        if first:
            for c in range(m):
                acc[c] = v
        else:
            for c in range(m):
                acc[c] += v
    else:
        xr = x[o, src, c0 : c0 + m]
        if first:
            for c in range(m):
                acc[c] = wj * xr[c]
        else:
            for c in range(m):
                acc[c] += wj * xr[c]


@njit(fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def _nonfinite(row):  # pragma: no cover - compiled
    """Whether a row holds NaN or Inf: ``v - v`` is 0 for finite values, NaN otherwise (the
    sum reassociates, so it vectorises; no flag here lets ``v - v`` fold to 0)."""
    if row.shape[0] == 0:
        return False
    s = row[0] - row[0]
    for c in range(1, row.shape[0]):
        s += row[c] - row[c]
    return s != s


@njit(fastmath=_FM, cache=True, nogil=True)
def _write(dst, acc, alpha, accumulate):  # pragma: no cover - compiled
    if accumulate:
        for c in range(dst.shape[0]):
            dst[c] += alpha * acc[c]
    else:
        for c in range(dst.shape[0]):
            dst[c] = alpha * acc[c]


@njit(fastmath=_FM, cache=True, nogil=True)
def _line_taps(buf, w, sym, table, cval, lo, inner, acc):  # pragma: no cover - compiled
    """acc = correlation of the padded block in ``buf`` with w, along its first axis.

    ``buf`` holds ``n + k - 1`` rows of ``inner`` contiguous values (the interior at rows
    ``lo .. lo + n``); the border rows are filled here from the interior through ``table``.
    ``acc`` has ``n * inner`` values. Every tap is an AXPY over the whole contiguous block;
    symmetric / antisymmetric kernels (``sym`` = 1 / -1) fold tap pairs.
    """
    k = w.shape[0]
    size = acc.shape[0]
    n = size // inner
    for p in range(lo):
        s = table[p]
        for c in range(inner):
            buf[p * inner + c] = cval if s < 0 else buf[(lo + s) * inner + c]
    for p in range(lo + n, n + k - 1):
        s = table[p]
        for c in range(inner):
            buf[p * inner + c] = cval if s < 0 else buf[(lo + s) * inner + c]
    if sym == 0:
        w0 = w[0]
        for i in range(size):
            acc[i] = buf[i] * w0
        for j in range(1, k):
            wj = w[j]
            b = buf[j * inner : j * inner + size]
            for i in range(size):
                acc[i] += b[i] * wj
        return
    half = k // 2
    if k % 2 == 1:
        wc = w[half]
        bc = buf[half * inner : half * inner + size]
        for i in range(size):
            acc[i] = bc[i] * wc
    else:
        for i in range(size):
            acc[i] = 0.0
    j = 0
    while j < half:
        if sym > 0 and j + 2 <= half:  # the same groups (and sums) as ``_pairs_sweep``
            if j + 4 <= half:
                p0 = buf[j * inner : j * inner + size]
                q0 = buf[(k - 1 - j) * inner : (k - 1 - j) * inner + size]
                p1 = buf[(j + 1) * inner : (j + 1) * inner + size]
                q1 = buf[(k - 2 - j) * inner : (k - 2 - j) * inner + size]
                p2 = buf[(j + 2) * inner : (j + 2) * inner + size]
                q2 = buf[(k - 3 - j) * inner : (k - 3 - j) * inner + size]
                p3 = buf[(j + 3) * inner : (j + 3) * inner + size]
                q3 = buf[(k - 4 - j) * inner : (k - 4 - j) * inner + size]
                w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
                for i in range(size):
                    acc[i] += (w0 * (p0[i] + q0[i]) + w1 * (p1[i] + q1[i])) + (
                        w2 * (p2[i] + q2[i]) + w3 * (p3[i] + q3[i])
                    )
                j += 4
            else:
                p0 = buf[j * inner : j * inner + size]
                q0 = buf[(k - 1 - j) * inner : (k - 1 - j) * inner + size]
                p1 = buf[(j + 1) * inner : (j + 1) * inner + size]
                q1 = buf[(k - 2 - j) * inner : (k - 2 - j) * inner + size]
                w0, w1 = w[j], w[j + 1]
                for i in range(size):
                    acc[i] += w0 * (p0[i] + q0[i]) + w1 * (p1[i] + q1[i])
                j += 2
            continue
        wj = w[j]
        b1 = buf[j * inner : j * inner + size]  # slices: no negative-index wraparound test
        b2 = buf[(k - 1 - j) * inner : (k - 1 - j) * inner + size]  # inside the loop
        j += 1
        if sym > 0:
            for i in range(size):
                acc[i] += (b1[i] + b2[i]) * wj
        else:
            for i in range(size):
                acc[i] += (b1[i] - b2[i]) * wj


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _lines_pass(x, n, w, sym, table, cval, lo, out, alpha, accumulate, nthreads, flags, check):
    """Pass along axis 1 of x viewed as (lines, n * inner): one padded block per line."""
    lines, size = x.shape
    inner = size // n
    k = w.shape[0]
    nthreads = max(1, min(nthreads, lines))
    per = (lines + nthreads - 1) // nthreads
    direct_write = (not accumulate) and alpha == 1.0
    for th in prange(nthreads):
        buf = np.empty((n + k - 1) * inner, dtype=out.dtype)
        tile = np.empty(size, dtype=out.dtype)
        for o in range(th * per, min(lines, (th + 1) * per)):
            src = x[o]
            for i in range(size):
                buf[lo * inner + i] = src[i]
            acc = out[o] if direct_write else tile
            _line_taps(buf, w, sym, table, cval, lo, inner, acc)
            if not direct_write:
                _write(out[o], acc, alpha, accumulate)
            if check and _nonfinite(out[o]):
                flags[th] = 1


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _fused_pass(
    x, w0, s0, t0, c0, w1, s1, t1, c1, lo, out, alpha, accumulate, nthreads, flags, check
):  # pragma: no cover - compiled
    outer, n, m = x.shape
    k1 = w1.shape[0]
    total = outer * n
    nthreads = max(1, min(nthreads, total))
    per = (total + nthreads - 1) // nthreads
    direct_write = (not accumulate) and alpha == 1.0
    for th in prange(nthreads):
        buf = np.empty(m + k1 - 1, dtype=out.dtype)
        tile = np.empty(m, dtype=out.dtype)
        for t in range(th * per, min(total, (th + 1) * per)):
            o = t // n
            i = t - o * n
            # column pass straight into the interior of the padded row buffer
            _rows_taps(x, o, w0, s0, t0, i, c0, 0, buf[lo : lo + m])
            acc = out[o, i] if direct_write else tile
            _line_taps(buf, w1, s1, t1, c1, lo, 1, acc)
            if not direct_write:
                _write(out[o, i], acc, alpha, accumulate)
            if check and _nonfinite(out[o, i]):
                flags[th] = 1


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _slab_pass(
    x,
    wz,
    sz,
    tz,
    cz,
    w0,
    s0,
    t0,
    c0,
    w1,
    s1,
    t1,
    c1,
    lo,
    out,
    alpha,
    accumulate,
    nthreads,
    flags,
    check,
):  # pragma: no cover - compiled
    """Passes along axes 1, 2 and 3 of x viewed as (outer, d, n, m), one plane at a time: the
    pass along ``d`` writes plane ``(o, p)`` into a per-thread buffer, which the fused pass
    over ``(n, m)`` turns into the output plane at once (no intermediate volume)."""
    outer, d, n, m = x.shape
    k1 = w1.shape[0]
    size = n * m
    total = outer * d
    nthreads = max(1, min(nthreads, total))
    per = (total + nthreads - 1) // nthreads
    direct_write = (not accumulate) and alpha == 1.0
    x3 = x.reshape(outer, d, size)
    for th in prange(nthreads):
        plane = np.empty(size, dtype=out.dtype)
        plane3 = plane.reshape(1, n, m)
        buf = np.empty(m + k1 - 1, dtype=out.dtype)
        tile = np.empty(m, dtype=out.dtype)
        for t in range(th * per, min(total, (th + 1) * per)):
            o = t // d
            p = t - o * d
            for a in range(0, size, _TILE):
                _rows_taps(x3, o, wz, sz, tz, p, cz, a, plane[a : min(size, a + _TILE)])
            for i in range(n):
                _rows_taps(plane3, 0, w0, s0, t0, i, c0, 0, buf[lo : lo + m])
                acc = out[o, p, i] if direct_write else tile
                _line_taps(buf, w1, s1, t1, c1, lo, 1, acc)
                if not direct_write:
                    _write(out[o, p, i], acc, alpha, accumulate)
                if check and _nonfinite(out[o, p, i]):
                    flags[th] = 1


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _direct_rows(
    padded, bases, offsets, weights, out, alpha, accumulate, nthreads, flags, check
):  # pragma: no cover
    rows, n = out.shape
    ntaps = offsets.shape[0]
    nthreads = max(1, min(nthreads, rows))
    per = (rows + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc = np.empty(n, dtype=out.dtype)
        for r in range(th * per, min(rows, (th + 1) * per)):
            for c in range(n):
                acc[c] = 0.0
            base = bases[r]
            for t in range(ntaps):
                wt = weights[t]
                start = base + offsets[t]
                prow = padded[start : start + n]  # a slice keeps the loop vectorisable
                for c in range(n):
                    acc[c] += wt * prow[c]
            dst = out[r]
            if accumulate:
                for c in range(n):
                    dst[c] += alpha * acc[c]
            else:
                for c in range(n):
                    dst[c] = alpha * acc[c]
            if check and _nonfinite(dst):
                flags[th] = 1


@njit(parallel=True, cache=True, nogil=True)
def _round_clip(src, dst, flo, fhi, magic, nthreads):  # pragma: no cover - compiled
    """dst = clip(rint(src), flo, fhi) for flat arrays (float -> integer output, one pass).

    Rounds half to even without a libm call: adding and subtracting ``magic`` (2**p, p =
    mantissa bits) to ``|v| < 2**p`` leaves the nearest integer under IEEE
    round-to-nearest-even (the sum has unit spacing), and the sign goes back on; larger
    floats are integers already. (``1.5 * 2**p`` on the signed value would cover only
    ``|v| < 2**(p-1)``: float64 values in [2**51, 2**52) can still end in .5.) NaN becomes 0.
    """
    n = src.shape[0]
    nthreads = max(1, min(nthreads, n))
    per = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        for i in range(th * per, min(n, (th + 1) * per)):
            v = src[i]
            if v != v:  # NaN: 0, rather than undefined behaviour
                v = flo - flo
            v = min(max(v, flo), fhi)
            a = abs(v)
            if a < magic:
                a = (a + magic) - magic
                v = a if v >= 0 else -a
            dst[i] = v


def round_saturate(src: np.ndarray, dst: np.ndarray) -> None:
    """Write float ``src`` into integer (or bool) ``dst`` rounded to nearest and saturated.

    Saturation clips to the largest float of ``src``'s type that fits the integer type
    (``float(2**63 - 1)`` is ``2**63``, which would wrap around). bool is the integer range
    ``[0, 1]``. NaN (from NaN data or a NaN ``cval``) becomes 0.
    """
    if dst.dtype.kind == "b":
        lo, hi = 0, 1
        target = dst.view(np.uint8)
    else:
        info = np.iinfo(dst.dtype)
        lo, hi = int(info.min), int(info.max)
        target = dst
    flo, fhi = saturation_bounds(lo, hi, src.dtype)
    contiguous = target.flags.c_contiguous
    flat = target.reshape(-1) if contiguous else np.empty(target.size, dtype=target.dtype)
    ft = src.dtype.type
    magic = ft(2.0 ** np.finfo(src.dtype).nmant)
    flat_src = np.ascontiguousarray(src).reshape(-1)
    _round_clip(flat_src, flat, ft(flo), ft(fhi), magic, numba.get_num_threads())
    if flo != lo or fhi != hi:  # an end is not an exact float: beyond it goes to the end itself
        flat[flat_src > fhi] = hi
        flat[flat_src < flo] = lo
    if not contiguous:
        target[...] = flat.reshape(target.shape)


# ----------------------------------------------------------------------------------------------
# drivers
# ----------------------------------------------------------------------------------------------


def _view3(a: np.ndarray, axis: int) -> np.ndarray:
    n = a.shape[axis]
    inner = math.prod(a.shape[axis + 1 :])
    return a.reshape(a.size // (n * inner), n, inner)


def _symmetry(w: np.ndarray, src: np.dtype | None = None) -> int:
    """1 if w is symmetric, -1 if antisymmetric (exactly, in the work dtype), else 0.

    A pass reading ``src`` directly folds tap pairs on the raw values: antisymmetric folding
    subtracts two of them, which wraps around for unsigned integers (``10 - 20`` is
    ``2**64 - 10`` in uint64 arithmetic), so it is not used there.
    """
    if len(w) > 1 and np.array_equal(w, w[::-1]):
        return 1
    if len(w) > 1 and np.array_equal(w, -w[::-1]):
        return 0 if src is not None and src.kind == "u" else -1
    return 0


def _units(stages: list[list[Pass]], ndim: int, shape: tuple[int, ...]) -> list[list[Pass]]:
    """The stages this engine runs: ``job.stages``, with a pass along axis ``ndim - 3`` that
    precedes the fused stage over the last two axes joined to it (:func:`_slab_pass`) where
    there are at least :data:`_SLAB_PLANES` planes per thread to share out."""
    if len(stages) < 2 or len(stages[-1]) != 2 or len(stages[-2]) != 1:
        return stages
    if stages[-2][0][0] != ndim - 3:
        return stages
    planes = math.prod(shape[: ndim - 2])
    if planes < _SLAB_PLANES * numba.get_num_threads():
        return stages
    return [*stages[:-2], [*stages[-2], *stages[-1]]]


def _run_stage(src, dst, stage, modes, cval, alpha, accumulate, flags, check) -> float:
    """Run one stage (a single pass, two fused passes or a slab of three) from src into dst;
    return the cval the next stage pads with. With ``check``, ``flags[thread]`` is set where a
    thread wrote NaN or Inf."""
    dt = dst.dtype.type
    tail = (dt(alpha), accumulate, numba.get_num_threads(), flags, check)
    args: list[Any] = []  # per pass: weights, symmetry, extension table, the cval it pads with
    c = cval
    for i, (axis, w, origin) in enumerate(stage):
        w = np.ascontiguousarray(w, dtype=dst.dtype)
        table = extension_table(src.shape[axis], len(w), len(w) // 2 + origin, modes[axis])
        # the first pass may read raw 8/16-bit values (no antisymmetric folding on unsigned)
        args += [w, _symmetry(w, src.dtype if i == 0 else None), table, dt(c)]
        c = carry(c, w)
    if len(stage) >= 2:  # fused: the last axes, viewed as (outer, [d,] n, m)
        lo = len(stage[-1][1]) // 2 + stage[-1][2]  # the row buffer's left halo
        last = src.shape[-len(stage) :]
        shape = (src.size // math.prod(last), *last)
        kernel: Any = _slab_pass if len(stage) == 3 else _fused_pass
        kernel(src.reshape(shape), *args, lo, dst.reshape(shape), *tail)
        return c
    ((axis, _, origin),) = stage
    w, sym, table, cv = args
    n = src.shape[axis]
    inner = math.prod(src.shape[axis + 1 :])
    if inner < _SHORT_ROWS:  # short rows: pad whole (n, inner) blocks, AXPY over n * inner
        lines = src.size // (n * inner)
        _lines_pass(
            src.reshape(lines, n * inner),
            n,
            w,
            _symmetry(w),
            table,
            cv,
            len(w) // 2 + origin,
            dst.reshape(lines, n * inner),
            *tail,
        )
    else:
        _rows_pass(_view3(src, axis), w, sym, table, cv, _view3(dst, axis), *tail)
    return c


def separable(
    x: np.ndarray, job: Job, out: np.ndarray | None = None, dtype: np.dtype | type | None = None
) -> np.ndarray:
    """A job of terms, ``sum_r weight_r * (passes_r applied to x)`` with ``job.modes`` and
    ``job.cval``, for a C-contiguous array ``x``.

    ``x`` may be float32/float64 or a 8/16-bit integer array, which the first pass reads
    directly (no converted copy). The result has ``dtype`` (default ``x.dtype``; must be a
    float type) and goes into ``out`` (C-contiguous, not overlapping ``x``) or a new array.
    Temporaries: none for 1-D/2-D/3-D separable filters (the last two axes are fused, and a
    pass along the third axis from the end joins them plane by plane, where each thread gets
    at least ``_SLAB_PLANES`` planes; per-thread plane buffers), one array for more passes,
    two for low-rank sums of such terms.
    """
    terms, modes, cval = job.terms, job.modes, job.cval
    dt = np.dtype(x.dtype if dtype is None else dtype)
    if out is None:
        out = np.empty(x.shape, dtype=dt)
    check = _guarded(x, dt)
    flags = np.zeros(max(1, numba.get_num_threads()), dtype=np.uint8)
    scratch: list[np.ndarray] = []

    def buffer(i: int) -> np.ndarray:
        while len(scratch) <= i:
            scratch.append(np.empty(x.shape, dtype=dt))
        return scratch[i]

    for r, (weight, passes) in enumerate(terms):
        accumulate = r > 0
        stages = _units(job_stages(passes, x.ndim), x.ndim, x.shape)
        if not stages:
            if accumulate:
                out += dt.type(weight) * x
            else:
                np.multiply(x, dt.type(weight), out=out, casting="unsafe")
            continue
        cur = x
        c = cval
        for s, stage in enumerate(stages):
            left = len(stages) - 1 - s  # stages after this one
            if left == 0:
                dst, alpha, acc = out, float(weight), accumulate
            elif accumulate:
                dst, alpha, acc = buffer(left % 2), 1.0, False
            else:  # ping-pong between one scratch array and out, ending in out
                dst, alpha, acc = (buffer(0) if left % 2 else out), 1.0, False
            c = _run_stage(cur, dst, stage, modes, c, alpha, acc, flags, check and dst is out)
            cur = dst
    if check and flags.any() and _may_overflow(x, cval, _term_gain(terms)):
        with np.errstate(over="ignore"):
            np.copyto(out, separable(x.astype(np.float64), job, dtype=np.float64))
    return out


def _guarded(x: np.ndarray, dt: np.dtype) -> bool:
    """Whether a computation on ``x`` in ``dt`` is checked for overflow: float32 (or float16)
    data in float32, whose intermediates can exceed the float32 range near its maximum
    (scipy.ndimage sums in float64); 8/16-bit integers, read raw, cannot."""
    return dt == np.float32 and x.dtype.kind == "f"


def _term_gain(terms) -> float:
    """A bound on ``max |intermediate| / max |input|`` over a job's terms: each pass's L1
    norm (a partial sum is at most that), twice for the folded pair ``x[a] + x[b]``, and the
    terms' weights as they accumulate."""
    total = 0.0
    for weight, passes in terms:
        g = 1.0
        for _, w, _ in passes:
            g *= max(1.0, float(np.abs(w).sum()))
        total += max(1.0, abs(float(weight))) * g
    return 2.0 * total


def _may_overflow(x: np.ndarray, cval: float, gain: float) -> bool:
    """Whether NaN/Inf in a float32 result can be an overflow of an intermediate (then the job
    runs again in float64): the largest finite ``|x|`` (or ``|cval|``) times ``gain``
    reaches half the float32 maximum. Called only when the result holds NaN/Inf."""
    big = float(np.max(np.abs(x), where=np.isfinite(x), initial=0.0))
    if math.isfinite(cval):
        big = max(big, abs(cval))
    return big * gain >= float(np.finfo(np.float32).max) / 2


def direct(x: np.ndarray, job: Job, out: np.ndarray | None = None) -> np.ndarray:
    """A dense job (``job.kernel`` over ``job.axes``) by direct correlation: shift-and-add of
    the kernel's non-zero taps over a padded copy of ``x``."""
    kernel, axes = job.dense_kernel(), job.axes
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype)
    padded = pad(x, axes, kernel.shape, job.origins, job.modes, job.cval)
    pstrides = [s // padded.itemsize for s in padded.strides]
    # flat offset of the first padded element feeding each output row (all axes but the last)
    bases = np.zeros(x.shape[:-1], dtype=np.int64)
    for d in range(x.ndim - 1):
        shape = [1] * (x.ndim - 1)
        shape[d] = x.shape[d]
        bases = bases + (np.arange(x.shape[d], dtype=np.int64) * pstrides[d]).reshape(shape)
    taps = np.nonzero(kernel)
    offsets = np.zeros(len(taps[0]), dtype=np.int64)
    for a, idx in zip(axes, taps, strict=True):
        offsets += idx.astype(np.int64) * pstrides[a]
    weights = kernel[taps].astype(x.dtype)
    n = x.shape[-1]
    check = _guarded(x, out.dtype)
    flags = np.zeros(max(1, numba.get_num_threads()), dtype=np.uint8)
    _direct_rows(
        padded.reshape(-1),
        bases.reshape(-1),
        offsets,
        weights,
        out.reshape(-1, n),
        x.dtype.type(1.0),
        False,
        numba.get_num_threads(),
        flags,
        check,
    )
    if check and flags.any() and _may_overflow(x, job.cval, float(np.abs(kernel).sum())):
        with np.errstate(over="ignore"):
            np.copyto(out, direct(x.astype(np.float64), job))
    return out
