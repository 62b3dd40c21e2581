"""Separable filters of 8/16-bit integer images into the same dtype: quantised taps, fused
passes, one rounding.

A single separable term over the last two axes (``weight * w0 (x) w1``; a 1-D pass alone, or
passes on the last two axes of an N-D array) runs as ONE fused kernel per output row: the
column pass over ``len(w0)`` input rows goes into a per-thread row buffer, the row pass turns
that buffer into the output row, which is rounded (half to even, as ``rint`` and the float
path's ``round_saturate``) and saturated to the input's dtype at once. Nothing full-size is
allocated besides the output: peak memory is the input plus the output (2x the input).

Arithmetic (chosen per job by :func:`plan`, the first of these that is precise enough)
    * ``int32 -> float32``: the column taps are quantised to integers ``q0 = w0 * 2**b0`` whose
      sum is exactly ``round(sum(w0) * 2**b0)`` (:func:`quantize`; a constant image keeps its
      value, unlike opencv#9863), the column pass runs in exact int32 arithmetic on the raw
      8-bit values, and its integer result (below ``2**24``, so exact in float32) feeds a
      float32 row pass whose taps are quantised the same way (``q1 / 2**(b0 + b1)``, each
      exactly a float32). The 8-bit default.
    * ``float32 -> float32``: both passes in float32 on exactly-summing dyadic taps (16-bit
      data, whose values times ``2**b0`` would overflow int32).
    * ``int32 -> float64``, ``float64 -> float64``: when float32 is not precise enough.

Symmetric kernels fold tap pairs (``(x[a] + x[b]) * w``); every other kernel, antisymmetric
ones included, runs tap by tap (a raw unsigned difference ``x[a] - x[b]`` would wrap around).
Both passes work through ``_modes.extension_table`` (every mode, origins, even kernels,
kernels longer than the axis); in constant mode the row pass pads with the column pass's
result on a constant column, ``cval * sum(q0)`` (``job.carry``, exactly).

Accuracy
    :func:`plan` computes a bound on ``|result before rounding - exact result|`` in units of
    the output's last place: the quantisation error ``(hi - lo) / 2 * ||w - q||_1`` (over
    the data range ``[lo, hi]``, cval included) plus the float rounding error
    ``gamma_n * max|x| * ||q0||_1 * ||q1||_1``. A plan is used only when the bound is at most
    :data:`MAX_ERROR` (0.5), so every output is within 1 LSB of the exactly computed, rounded
    and clipped result. When every tap is a dyadic rational that the arithmetic holds
    exactly (box of power-of-two size, binomial, Sobel, Prewitt) the bound is 0 and the
    result IS the exact result rounded half to even -- bit for bit the float path's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._modes import extension_table
from ..job import Job, Term

__all__ = ["DTYPES", "MAX_ERROR", "IntPlan", "applies", "plan", "quantize", "separable_int"]

#: Input (and output) dtypes of the integer path.
DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))
#: Largest accepted bound on the error before the final rounding, in output LSB (< 1 keeps
#: every result within 1 LSB of the exact rounded one).
MAX_ERROR = 0.5

_FM = {"contract"}
_FLOAT_BITS = {"float32": 24, "float64": 53}
_TILE = 1 << 20  # columns per tile: a tile of every row a pass reads stays in L1


# ----------------------------------------------------------------------------------------------
# quantisation
# ----------------------------------------------------------------------------------------------


def quantize(w: Any, bits: int) -> np.ndarray:
    """Integer taps ``q ~ w * 2**bits`` (int64) whose sum is exactly ``round(sum(w) * 2**bits)``.

    Each tap is rounded to nearest; the residual between that sum and the exact scale is
    given, one unit each, to the taps that rounding moved furthest the other way (largest
    remainders: the exact sum at the least added L1 error). Symmetric kernels stay
    symmetric (pairs move together, the centre takes an odd unit) and antisymmetric kernels
    stay antisymmetric (their sum is 0 exactly); an even symmetric kernel whose scale is odd
    cannot stay symmetric and is adjusted tap by tap.

    >>> quantize([0.25, 0.5, 0.25], 2)
    array([1, 2, 1])
    >>> q = quantize(np.full(3, 1 / 3), 4); q, int(q.sum())
    (array([5, 6, 5]), 16)
    """
    w = np.asarray(w, dtype=np.float64)
    scaled = np.ldexp(w, bits)
    q = np.rint(scaled).astype(np.int64)
    target = round(math.fsum(scaled.tolist()))
    r = target - int(q.sum())
    if r == 0:
        return q
    rem = scaled - q  # > 0: rounded down (add here first); < 0: rounded up
    k = len(w)
    step = 1 if r > 0 else -1
    if k > 1 and np.array_equal(w, w[::-1]) and (k % 2 == 1 or r % 2 == 0):
        if r % 2:
            q[k // 2] += step
            r -= step
        order = np.argsort(-rem[: k // 2] * step, kind="stable")[: abs(r) // 2]
        q[order] += step
        q[k - 1 - order] += step
        return q
    order = np.argsort(-rem * step, kind="stable")[: abs(r)]
    q[order] += step
    return q


def _dyadic_bits(w: np.ndarray, limit: int = 62) -> int | None:
    """Smallest ``e <= limit`` with every ``w * 2**e`` an integer, or None."""
    for e in range(limit + 1):
        s = np.ldexp(w, e)
        if np.all(s == np.rint(s)):
            return e
    return None


def _exponent(w: np.ndarray) -> int:
    """``e`` with ``max|w| < 2**e`` (0 for an all-zero kernel)."""
    top = float(np.max(np.abs(w))) if len(w) else 0.0
    return math.frexp(top)[1] if top > 0 else 0


def _symmetry(q: np.ndarray) -> int:
    """1 symmetric, -1 antisymmetric, 0 neither (on the quantised taps)."""
    if len(q) > 1 and np.array_equal(q, q[::-1]):
        return 1
    if len(q) > 1 and np.array_equal(q, -q[::-1]):
        return -1
    return 0


def _gamma(n: int, bits: int) -> float:
    u = 2.0**-bits
    return n * u / (1 - n * u)


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IntPlan:
    """How :func:`separable_int` runs a job (built by :func:`plan`).

    Attributes
    ----------
    dtype : numpy.dtype
        The input's and the result's dtype.
    arithmetic : str
        ``'int32->float32'``, ``'float32->float32'``, ``'int32->float64'`` or
        ``'float64->float64'``: the column pass's and the row pass's arithmetic.
    col_taps, row_taps : ndarray
        The quantised taps as the kernel reads them (integers for an int32 column pass;
        dyadic floats, exactly summing to the scale, otherwise).
    col_bits, row_bits : int
        Fraction bits of each pass's quantisation.
    error : float
        Bound on the error before the final rounding, in output LSB (0: exact).
    exact : bool
        The result is the exact correlation rounded half to even and saturated.
    """

    dtype: np.dtype
    arithmetic: str
    col_taps: np.ndarray
    row_taps: np.ndarray
    col_bits: int
    row_bits: int
    col_sym: int
    row_sym: int
    col: tuple[str, int]  # (mode, origin) of the column pass
    row: tuple[str, int]
    cval: int
    error: float
    exact: bool


_IDENTITY = np.ones(1)
_CACHE: dict[tuple, IntPlan | None] = {}
_CACHE_SIZE = 256


def plan(
    dtype: Any,
    ndim: int,
    terms: Sequence[Term],
    modes: Mapping[int, str],
    cval: float,
) -> IntPlan | None:
    """The plan for ``terms`` on ``ndim``-D data of ``dtype``, or None where the integer path
    does not apply (see :func:`applies`)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if not dt.isnative or dt not in DTYPES or ndim < 1 or len(terms) != 1:
        return None
    weight, passes = terms[0]
    weight = float(weight)
    if not math.isfinite(weight):
        return None
    found: dict[int, tuple[np.ndarray, int, str]] = {}
    for axis, w, origin in passes:
        a = int(axis) % ndim if -ndim <= int(axis) < ndim else -1
        if a < max(0, ndim - 2) or a in found or a not in modes:
            return None  # an outer axis (N-D passes), a repeated axis, or no mode
        wa = np.asarray(w, dtype=np.float64)
        if wa.ndim != 1 or len(wa) == 0 or not np.all(np.isfinite(wa)):
            return None
        found[a] = (wa, int(origin), modes[a])
    col = found.get(ndim - 2) if ndim >= 2 else None
    row = found.get(ndim - 1)
    w0, o0, m0 = col if col is not None else (_IDENTITY, 0, "nearest")
    w1, o1, m1 = row if row is not None else (_IDENTITY, 0, "nearest")
    constant = "constant" in (m0, m1)
    if constant and not (math.isfinite(cval) and cval == round(cval) and abs(cval) < 2**31):
        return None  # NaN/Inf or fractional cval: the float path
    c = int(cval) if constant else 0
    key = (dt.str, w0.tobytes(), o0, m0, w1.tobytes(), o1, m1, weight, c)
    if key in _CACHE:
        return _CACHE[key]
    result = _plan(dt, w0, w1, weight, (m0, o0), (m1, o1), c, constant)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = result
    return result


def _plan(dt, w0, w1, weight, col, row, c, constant) -> IntPlan | None:
    info = np.iinfo(dt)
    lo, hi = float(info.min), float(info.max)
    if constant:
        lo, hi = min(lo, c), max(hi, c)
    big = max(abs(lo), abs(hi))  # largest magnitude of the padded data
    half, mid = (hi - lo) / 2, (hi + lo) / 2
    w1w = w1 * weight
    fold_exact = weight == 0 or (math.frexp(abs(weight))[0] == 0.5) or _exact_product(w1, weight)
    e0, e1 = _dyadic_bits(w0), _dyadic_bits(w1w)
    dyadic = e0 is not None and e1 is not None and fold_exact
    if dt.itemsize == 1:
        order = ["int32->float32", "int32->float64", "float32->float32", "float64->float64"]
    else:
        order = ["float32->float32", "int32->float32", "int32->float64", "float64->float64"]
    best = None
    for arith in order:
        p = _candidate(arith, w0, w1w, e0, big, half, mid, fold_exact)
        if p is None:
            continue
        q0, q1, b0, b1, err, exact = p
        if (exact and dyadic) or (not dyadic and err <= MAX_ERROR):
            best = (arith, q0, q1, b0, b1, err, exact)
            break
        if best is None and err <= MAX_ERROR:
            best = (arith, q0, q1, b0, b1, err, exact)
    if best is None:
        return None
    arith, q0, q1, b0, b1, err, exact = best
    col_taps, row_taps = _taps(arith, q0, q1, b0, b1)
    return IntPlan(
        dt, arith, col_taps, row_taps, b0, b1, _symmetry(q0), _symmetry(q1),
        col, row, c, 0.0 if exact else err, exact,
    )  # fmt: skip


def _exact_product(w: np.ndarray, weight: float) -> bool:
    """Whether ``weight * w`` is exact in float64 (checked for short kernels only)."""
    if len(w) > 4096:
        return False
    fw = Fraction(weight)
    return all(Fraction(float(v)) * fw == Fraction(float(v) * weight) for v in w)


def _even_singles(q: np.ndarray) -> bool:
    """Whether every tap that the kernel uses on its own (the centre of a symmetric kernel,
    every tap of one without symmetry) is even: it then runs as a pair of the same row at
    half the weight (no zero row, no odd half)."""
    sym = _symmetry(q)
    singles = q if sym <= 0 else (q[len(q) // 2 : len(q) // 2 + 1] if len(q) % 2 else q[:0])
    return bool(np.all(singles % 2 == 0))


def _int_column(w0: np.ndarray, big: float, limit: float, e0: int | None):
    """``(q0, b0)``: integer column taps at scale ``2**b0``, the finest whose column result
    ``big * ||q0||_1`` stays within ``limit``; taps used on their own are made even (the taps
    of scale ``b0 - 1``, doubled) where they would be odd. An exactly representable kernel
    (``e0`` fraction bits) takes its own scale."""

    def taps(b: int) -> np.ndarray:
        q = quantize(w0, b)
        if not _even_singles(q):
            q = 2 * quantize(w0, b - 1) if b > 0 else 2 * q
        return q

    choice = None
    for b in range(30, -2, -1):
        q = taps(b)
        if big * float(np.abs(q).sum()) <= limit:
            choice = (q, b)
            break
    if choice is None:
        return None
    if e0 is not None and e0 + 1 <= choice[1]:  # exact at a coarser scale: more headroom
        for b in (e0, e0 + 1):
            q = taps(b)
            if np.array_equal(np.ldexp(q.astype(np.float64), -b), w0):
                return q, b
    return choice


def _candidate(arith, w0, w1, e0, big, half, mid, fold_exact):
    """``(q0, q1, b0, b1, error bound, exact)`` of one arithmetic, or None if it cannot run."""
    col_t, row_t = arith.split("->")
    pr = _FLOAT_BITS[row_t]
    if col_t == "int32":
        # the column's integer result fits int32 and converts exactly to the row's float
        picked = _int_column(w0, big, 2.0 ** min(31, pr) - 1, e0)
        if picked is None:
            return None
        q0, b0 = picked
    else:
        b0 = _FLOAT_BITS[col_t] - 2 - _exponent(w0)
        q0 = quantize(w0, b0)
    b1 = pr - 2 - _exponent(w1)
    q1 = quantize(w1, b1)
    f0, f1 = np.ldexp(q0.astype(np.float64), -b0), np.ldexp(q1.astype(np.float64), -b1)
    n0, n1 = float(np.abs(f0).sum()), float(np.abs(f1).sum())
    if big * n0 * n1 >= 2.0**30:  # results beyond int32 (huge weights): the float path
        return None
    e0v, e1v = w0 - f0, w1 - f1  # exact in float64 (f are w rounded to dyadic grids)
    qerr = half * (
        float(np.abs(e0v).sum()) * float(np.abs(w1).sum()) + n0 * float(np.abs(e1v).sum())
    )
    qerr += abs(mid) * abs(math.fsum(w0) * math.fsum(w1) - math.fsum(f0) * math.fsum(f1))
    # float rounding: the magnitudes in units of the finest bit used tell whether it is exact
    mag_col = big * _significant(f0)
    mag_row = mag_col * _significant(f1)
    pc = 31 if col_t == "int32" else _FLOAT_BITS[col_t]
    arith_exact = mag_col <= 2.0 ** min(pc, pr) and mag_row <= 2.0**pr
    ferr = 0.0
    if not arith_exact:
        n = len(w0) + len(w1) + 6
        ferr = _gamma(n, min(pc, pr)) * big * n0 * n1 * (1 + 1e-6)
    quant_exact = bool(np.all(e0v == 0) and np.all(e1v == 0)) and fold_exact
    slack = big * n0 * n1 * 2.0**-48  # float64 products and sums in this bound, the fold
    exact = quant_exact and arith_exact
    return q0, q1, b0, b1, qerr + ferr + slack, exact


def _significant(f: np.ndarray) -> float:
    """``||f||_1`` in units of the finest dyadic bit any tap of ``f`` uses."""
    e = _dyadic_bits(f, 1100)
    if e is None:  # pragma: no cover - float64 values are dyadic
        return math.inf
    return float(np.abs(np.ldexp(f, e)).sum())


def _taps(arith, q0, q1, b0, b1):
    col_t, row_t = arith.split("->")
    rdt = np.dtype(row_t)
    if col_t == "int32":
        col = q0.astype(np.int64)
        row = np.ldexp(q1.astype(np.float64), -(b0 + b1)).astype(rdt)
    else:
        col = np.ldexp(q0.astype(np.float64), -b0).astype(col_t)
        row = np.ldexp(q1.astype(np.float64), -b1).astype(rdt)
    return col, row


def applies(
    x: Any,
    terms: Sequence[Term],
    modes: Mapping[int, str],
    cval: float,
    dtype: Any = None,
) -> bool:
    """Whether :func:`separable_int` runs this job.

    It does for input ``x`` (an array, or its dtype with ``ndim`` given by ``x.ndim``) of
    uint8/int8/uint16/int16 in native byte order, a result of the same ``dtype`` (default),
    a single term whose passes lie on the last two axes (one per axis), a finite weight, an
    integer ``cval`` (where a pass uses constant mode), and arithmetic whose error bound is
    at most :data:`MAX_ERROR` LSB.
    """
    dt = np.dtype(getattr(x, "dtype", x))
    if dtype is not None and np.dtype(dtype) != dt:
        return False
    ndim = getattr(x, "ndim", None)
    if ndim is None:
        return False
    return plan(dt, ndim, terms, modes, cval) is not None


# ----------------------------------------------------------------------------------------------
# the kernel
# ----------------------------------------------------------------------------------------------


def _add(a, b, like):  # pragma: no cover - replaced by the overload in compiled code
    return a + b


def _cast(v, like):  # pragma: no cover - replaced by the overload in compiled code
    return v


def _caster(like):
    if isinstance(like, types.Integer):
        return lambda v: np.int32(v)
    if like.bitwidth == 32:
        return lambda v: np.float32(v)
    return lambda v: np.float64(v)


@overload(_cast)
def _cast_ol(v, like):
    conv = njit(_caster(like))
    return lambda v, like: conv(v)


@overload(_add)
def _add_ol(a, b, like):
    conv = njit(_caster(like))
    if isinstance(a, types.Integer):  # widen first: no wraparound, one conversion per pair
        return lambda a, b, like: conv(np.int32(np.int32(a) + np.int32(b)))
    return lambda a, b, like: conv(a + b)


def _pair(src, o, a, b, c, like):  # pragma: no cover - replaced by the overload in compiled code
    return src[o, a, c] + src[o, b, c] if src.ndim == 3 else src[a + c] + src[b + c]


@overload(_pair)
def _pair_ol(src, o, a, b, c, like):
    if src.ndim == 3:  # a column unit: rows a and b of plane o, column c
        return lambda src, o, a, b, c, like: _add(src[o, a, c], src[o, b, c], like)
    # a row unit: offsets a and b into the padded row buffer, plus the column c
    return lambda src, o, a, b, c, like: _add(src[a + c], src[b + c], like)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _sum(s, src, o, ra, rb, ws, c, like):  # pragma: no cover - compiled
    """``s + sum_j pair(ra[j], rb[j]) * ws[j]`` at column ``c`` (the tuples' length is a
    compile-time constant: the unit loop unrolls)."""
    for j in range(len(ws)):
        s += _pair(src, o, ra[j], rb[j], c, like) * ws[j]
    return s


@njit(fastmath=_FM, cache=True, nogil=True)
def _sweep(
    dst, dof, base, rnd, first, like, src, o, ra, rb, ws, c0, width, lo, hi
):  # pragma: no cover - compiled
    """Units ``(ra, rb, ws)`` (tuples of 2 or 4) on columns ``c0 .. c0 + width``: ``s =
    (0 if first else base[c]) + sum_j (src[ra[j]] + src[rb[j]]) * ws[j]`` in the type of
    ``like``, where ``src`` is either the data (3-D: rows of plane ``o``; a column unit) or
    the padded row buffer (1-D: offsets; a row unit). Indices are unsigned (no negative-index
    wraparound test in the loop). ``s`` goes into ``dst[dof + c]`` (an accumulator, or the
    row buffer as its float type), or with ``rnd`` rounded half to even (``rint``),
    saturated to ``[lo, hi]`` and stored as an integer."""
    if rnd:
        for c in range(width):
            s = _sum(like if first else base[c], src, o, ra, rb, ws, c0 + c, like)
            dst[dof + c] = min(max(np.int32(np.rint(s)), lo), hi)
    else:
        for c in range(width):
            s = _sum(like if first else base[c], src, o, ra, rb, ws, c0 + c, like)
            dst[dof + c] = _cast(s, like)


@njit(cache=True, nogil=True, inline="always")
def _quad(a, g):  # pragma: no cover - compiled
    return (a[g], a[g + 1], a[g + 2], a[g + 3])


@njit(fastmath=_FM, cache=True, nogil=True)
def _group(
    dst, dof, base, rnd, first, like, src, o, ua, ub, uw, g, cnt, c0, width, lo, hi
):  # pragma: no cover - compiled
    """Units ``g .. g + cnt`` (``cnt``: 2 or 4; the arrays hold a multiple of 4 units) as one
    sweep, the units passed as tuples (in registers across the column loop)."""
    a, b, w = _quad(ua, g), _quad(ub, g), _quad(uw, g)
    if cnt == 2:
        _sweep(dst, dof, base, rnd, first, like, src, o, a[:2], b[:2], w[:2], c0, width, lo, hi)
    else:
        _sweep(dst, dof, base, rnd, first, like, src, o, a, b, w, c0, width, lo, hi)


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _stage(
    dst, dof, acc, acc2, rnd, like, src, o, ua, ub, uw, groups, last, m, tile, lo, hi
):  # pragma: no cover - compiled
    """A pass on ``m`` columns into ``dst[dof:]`` (``rnd``: rounded and saturated), tile by
    tile, in ``groups`` sweeps of 4 units (the last of ``last``). The partial sums go back
    and forth between ``acc`` and ``acc2``: a sweep never reads the array it writes
    (aliasing defeats vectorizing)."""
    for t0 in range(0, m, tile):
        c0 = np.uint64(t0)
        w = np.uint64(min(m - t0, tile))
        d0 = np.uint64(dof) + c0
        if groups == 1:
            _group(dst, d0, acc, rnd, True, like, src, o, ua, ub, uw, 0, last, c0, w, lo, hi)
            continue
        _group(acc, 0, acc, False, True, like, src, o, ua, ub, uw, 0, 4, c0, w, lo, hi)
        for gi in range(1, groups - 1):
            a, b = (acc2, acc) if gi % 2 else (acc, acc2)
            _group(a, 0, b, False, False, like, src, o, ua, ub, uw, 4 * gi, 4, c0, w, lo, hi)
        prev = acc if groups % 2 == 0 else acc2
        g = 4 * (groups - 1)
        _group(dst, d0, prev, rnd, False, like, src, o, ua, ub, uw, g, last, c0, w, lo, hi)


@njit(cache=True, nogil=True)
def _group_size(left):  # pragma: no cover - compiled
    """Units in the last group when ``left`` remain: 1, 2 or 4 (3 take a group of 4 whose
    last unit is zero padding)."""
    return 2 if left <= 2 else 4


@njit(fastmath=_FM, cache=True, nogil=True)
def _col_slow(x3, o, i, q0, t0, cv, acc, like, rlike, buf, lo1):  # pragma: no cover - compiled
    """The column pass of output row ``i`` tap by tap, for rows that read cval (constant
    mode near the top and bottom): ``buf[lo1:lo1 + m]`` gets ``sum_j q0[j] * x[t0[i + j]]``
    with ``cval`` where ``t0 < 0``."""
    m = acc.shape[0]
    const = _cast(0, like)
    for c in range(m):
        acc[c] = const
    for j in range(q0.shape[0]):
        w = q0[j]
        r = t0[i + j]
        if w == 0:
            continue
        if r < 0:
            const += _cast(cv * w, like)
            continue
        for c in range(m):
            acc[c] += _cast(_cast(x3[o, r, c], like) * w, like)
    for c in range(m):
        buf[lo1 + c] = _cast(_cast(acc[c] + const, like), rlike)


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _fused(
    x, q0, ja, jb, jw, nc, t0, slow, c0, ra, rb, rw, nr, t1, c1, lo1, out, lo, hi, nthreads
):  # pragma: no cover - compiled
    """``out = round(row pass(column pass(x)))`` for ``x`` and ``out`` viewed as (outer, n, m).

    Column pass: taps ``q0``, as ``nc`` units ``(ja, jb, jw)`` (tap positions paired, weights;
    zero units follow), extension table ``t0``, ``slow[i]`` for output rows that read cval,
    ``c0`` the cval (a length-1 array of the accumulator type). Row pass: units
    ``(ra, rb, rw)`` (offsets into the padded row buffer), extension table
    ``t1``, padding constant ``c1``, interior offset ``lo1``. ``lo``/``hi``: the output range.
    """
    outer, n, m = x.shape
    k1 = t1.shape[0] - m + 1
    total = outer * n
    nthreads = max(1, min(nthreads, total))
    per = (total + nthreads - 1) // nthreads
    cv = c0[0]
    tile = min(m, _TILE)
    cg = max(1, (nc + 3) // 4)
    clast = _group_size(nc - 4 * (cg - 1))
    rg = max(1, (nr + 3) // 4)
    rlast = _group_size(nr - 4 * (rg - 1))
    ulo1 = np.uint64(lo1)
    for th in prange(nthreads):
        acc = np.empty(tile, dtype=c0.dtype)  # two accumulators: a sweep never reads the
        acc2 = np.empty(tile, dtype=c0.dtype)  # array it writes (aliasing defeats vectorizing)
        full = np.empty(m, dtype=c0.dtype)
        buf = np.empty(m + k1 - 1, dtype=rw.dtype)
        racc = np.empty(tile, dtype=rw.dtype)
        racc2 = np.empty(tile, dtype=rw.dtype)
        ua = np.empty(jw.shape[0], dtype=np.uint64)
        ub = np.empty(jw.shape[0], dtype=np.uint64)
        like = _cast(0, cv)
        rlike = _cast(0, c1)
        for t in range(th * per, min(total, (th + 1) * per)):
            o = t // n
            i = t - o * n
            uo = np.uint64(o)
            if slow[i]:
                _col_slow(x, o, i, q0, t0, cv, full, like, rlike, buf, lo1)
            else:
                for u in range(jw.shape[0]):
                    ua[u] = t0[i + ja[u]]
                    ub[u] = t0[i + jb[u]]
                _stage(
                    buf, ulo1, acc, acc2, False, like, x, uo, ua, ub, jw, cg, clast, m, tile, lo, hi
                )
            # the row buffer's border through the row's extension table (or the carried cval)
            for p in range(lo1):
                s = t1[p]
                buf[p] = c1 if s < 0 else buf[lo1 + s]
            for p in range(lo1 + m, m + k1 - 1):
                s = t1[p]
                buf[p] = c1 if s < 0 else buf[lo1 + s]
            orow = out[o, i]
            _stage(
                orow, 0, racc, racc2, True, rlike, buf, uo, ra, rb, rw, rg, rlast, m, tile, lo, hi
            )


def _units(q: np.ndarray, sym: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A kernel as units ``(a, b, w)``: ``sum_u (v[a_u] + v[b_u]) * w_u`` is the correlation
    with ``q``. Symmetric kernels pair taps ``j`` and ``k - 1 - j``; a tap on its own (the
    centre, every tap of any other kernel, antisymmetric ones included: raw values are never
    subtracted, so unsigned data cannot wrap around) pairs with itself at half its weight
    (exact: float taps, or even integers -- :func:`_int_column`). Zero taps are left out; zero
    units fill a multiple of 4 (the count of real units is returned too). Integer weights are
    int16 where they fit (``vpmaddwd``), else int32."""
    k = len(q)
    ja: list[int] = []
    jb: list[int] = []
    jw: list[Any] = []
    half = (lambda v: v / 2) if q.dtype.kind == "f" else (lambda v: v // 2)
    if sym > 0:
        for j in range(k // 2):
            if q[j] != 0:
                ja.append(j)
                jb.append(k - 1 - j)
                jw.append(q[j])
    for j in range(k) if sym <= 0 else ([k // 2] if k % 2 else []):
        if q[j] != 0:
            ja.append(j)
            jb.append(j)
            jw.append(half(q[j]))
    count = len(jw)
    extra = (-count) % 4 if count else 4
    ja += [0] * extra
    jb += [0] * extra
    jw += [0] * extra
    if q.dtype.kind == "f":
        wdt: Any = q.dtype
    else:
        wdt = np.int16 if max(abs(int(v)) for v in jw) < 2**15 else np.int32
    return (
        np.asarray(ja, dtype=np.int64),
        np.asarray(jb, dtype=np.int64),
        np.asarray(jw, dtype=wdt),
        max(count, 1),
    )


def separable_int(x: np.ndarray, job: Job, out: np.ndarray | None = None) -> np.ndarray:
    """A job of one separable term on 8/16-bit integer ``x``, rounded once into ``x``'s dtype.

    The result is ``out`` (C-contiguous, ``x``'s dtype and shape, not overlapping ``x``) or a
    new array. Raises ValueError where :func:`applies` is false. Threads:
    ``numba.get_num_threads()`` (scope it with ``engine.threads``).
    """
    terms, modes, cval = job.terms, job.modes, job.cval
    x = np.asarray(x)
    p = plan(x.dtype, x.ndim, terms, modes, cval)
    if p is None:
        raise ValueError(
            "separable_int: the integer path does not apply to this job (input dtype "
            f"{x.dtype}, {len(terms)} term(s)); check applies() first"
        )
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != x.shape
        or out.dtype != x.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(f"out must be a writeable C-contiguous {x.dtype} array of shape {x.shape}")
    elif np.may_share_memory(out, x):
        raise ValueError("out must not overlap the input (the passes read rows already written)")
    if x.size == 0:
        return out
    n = x.shape[-2] if x.ndim >= 2 else 1
    m = x.shape[-1]
    shape3 = (x.size // (n * m), n, m)
    args = _arguments(p, n, m)
    _fused(  # type: ignore[call-arg]
        np.ascontiguousarray(x).reshape(shape3),
        *args[:-2],
        out.reshape(shape3),
        *args[-2:],
        numba.get_num_threads(),
    )
    return out


_ARGS: dict[tuple, tuple] = {}


def _arguments(p: IntPlan, n: int, m: int) -> tuple:
    """The kernel's arguments for a plan on (n, m) planes (cached: tables, units)."""
    key = (id(p), n, m)
    got = _ARGS.get(key)
    if got is not None and got[0] is p:
        return got[1]
    (m0, o0), (m1, o1) = p.col, p.row
    k0, k1 = len(p.col_taps), len(p.row_taps)
    t0 = extension_table(n, k0, k0 // 2 + o0, m0)
    t1 = extension_table(m, k1, k1 // 2 + o1, m1)
    neg = np.concatenate([[0], np.cumsum(t0 < 0)])
    slow = (neg[k0 : k0 + n] - neg[:n]) > 0  # output rows whose column window reads cval
    col_int = p.col_taps.dtype.kind == "i"
    rdt = p.row_taps.dtype
    ja, jb, jw, nc = _units(p.col_taps, p.col_sym)
    ra, rb, rw, nr = _units(p.row_taps, p.row_sym)
    if col_int:
        c0 = np.full(1, p.cval, dtype=np.int32)
        q0 = p.col_taps.astype(jw.dtype if np.abs(p.col_taps).max() < 2**15 else np.int32)
        c1 = rdt.type(p.cval * int(np.sum(p.col_taps)))
    else:
        c0 = np.full(1, p.cval, dtype=p.col_taps.dtype)
        q0 = p.col_taps
        c1 = rdt.type(p.cval * math.fsum(p.col_taps.astype(np.float64).tolist()))
    info = np.iinfo(p.dtype)
    args = (
        q0, ja, jb, jw, nc, t0, slow, c0,
        ra.astype(np.uint64), rb.astype(np.uint64), rw, nr, t1, c1,
        k1 // 2 + o1,
    )  # fmt: skip
    tail = (np.int32(info.min), np.int32(info.max))
    if len(_ARGS) >= _CACHE_SIZE:
        _ARGS.clear()
    _ARGS[key] = (p, args + tail)
    return args + tail
