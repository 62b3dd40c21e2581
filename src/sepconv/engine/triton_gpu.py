"""Triton GPU engine: separable, low-rank and direct correlation of torch tensors.

The same contract as :mod:`sepconv.engine.numba_cpu` (``separable(x, job)`` for a job of
terms and ``direct(x, job)`` for a dense one, :class:`sepconv.job.Job`), for CUDA tensors. With
``TRITON_INTERPRET=1`` set before triton is imported, the same kernels run on CPU tensors
through Triton's interpreter (how the tests run without a GPU; slow, for small arrays only).

Kernels
-------
Pass along an outer axis (``_rows_kernel``)
    The tensor is viewed as ``(outer, n, inner)``; a program computes a ``[BN, BI]`` tile of
    one ``(n, inner)`` slab, each tap a coalesced load of ``BN`` rows (row index through the
    border mode) of ``BI`` contiguous values.
Pass along the last axis (``_last_kernel``)
    The tensor is viewed as ``(rows, m)``; a ``[BR, BM]`` tile, each tap a load of the tile
    shifted along the row (column index through the border mode).
Fused pass over the last two axes (``_fused_kernel``)
    A program owns ``BH`` output rows by ``BW = BWE - K1 + 1`` output columns. The column pass
    computes the intermediate for ``BH`` rows and the ``BWE`` padded columns those outputs read
    (the horizontal border extension applied to the column indices, ``cval * sum(w0)`` where
    constant mode pads); the row pass then reads the intermediate from registers through
    ``tl.gather`` (warp shuffles or shared memory): the intermediate never reaches global
    memory, and each output is written once.
Direct (``_direct_kernel``)
    Shift-and-add of the non-zero taps over a padded copy (``_modes.extension_table``), in
    exact IEEE float32/float64 multiply-adds: no TF32.

Every kernel reads its input in its own dtype (integers, bool, float16, bfloat16, float32,
float64), accumulates in the computation dtype (``_modes.work_dtype``: float32 for float32,
float16, bfloat16, bool and 8-bit input with a float32/16-bit result, float64 otherwise), and
its epilogue writes ``alpha * acc (+ previous terms)`` converted to the output dtype once:
rounded to nearest even and saturated for integer/bool outputs (NaN -> 0), as
``numba_cpu.round_saturate`` does. Low-rank terms accumulate in the computation dtype; the
last term's epilogue writes the output.

Border modes: the index arithmetic of one reflection/wrap is done in the kernel
(``MODE`` is a compile-time constant); a kernel longer than its axis (several reflections)
reads the int32 ``_modes.extension_table`` from device memory instead, so every mode agrees
with the CPU engine. Taps, ``cval``, ``alpha`` and the saturation bounds live in a small
device buffer of the computation dtype (Triton passes Python floats as float32), cached per
content, so repeated calls upload nothing and never synchronise with the host; the number of
taps and the symmetry of the kernel are compile-time constants (symmetric and antisymmetric
kernels fold tap pairs: one multiply per pair). Tile sizes are autotuned per size class on a
GPU (``triton.autotune``, ``AUTOTUNE``); the interpreter uses fixed tiles (``FIXED_TILES``).

Measured on an H200 (``benchmarks/bench_gpu.py``, float32 8192^2 Gaussian, reflect): k = 9 /
25 / 65 in 0.65 / 1.27 / 2.9 ms (4.1 / 7.2 / 16 times a device-to-device copy; 3.8 / 4.7 /
4.7 times faster than cupyx.scipy.ndimage, 8-31 times faster than the conv-based torch path);
bfloat16/float16 in and out at most the float32 time; rank r about r times rank 1. The pass
along the last (contiguous) axis is the slow one (8192^2, k = 25: 1.16 ms against 0.48 ms
along the first axis): every tap is a load shifted by one element. The fused kernel beats
two passes only for long kernels (k >= 25), as its row pass runs through ``tl.gather``.
"""

from __future__ import annotations

import collections
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from .._modes import extension_table, saturation_bounds, work_dtype
from ..job import Job, Pass, carry
from ..job import stages as job_stages

__all__ = [
    "AUTOTUNE",
    "FIXED_TILES",
    "GPU_TILES",
    "compute_dtype",
    "direct",
    "interpreted",
    "separable",
]


_CONSTANT, _NEAREST, _WRAP, _REFLECT, _MIRROR, _TABLE = range(6)
_MODE_CODES = {
    "constant": _CONSTANT,
    "nearest": _NEAREST,
    "wrap": _WRAP,
    "reflect": _REFLECT,
    "mirror": _MIRROR,
}
_HEADER = 8  # constants buffer: cval, alpha, flo, fhi, magic (2**p), 0, cval of the 2nd pass, pad
_FUSE_MAX_K = 129  # longest kernels the fused 2-D kernel takes (unrolled; else two passes)
_I32 = 2**31 - 1
_I64_ABOVE = _I32 // 2  # arrays with more elements than this index in int64

#: Whether tile sizes are autotuned on a GPU (``SEPCONV_TRITON_AUTOTUNE=0`` turns it off:
#: the GPU then uses ``GPU_TILES``).
AUTOTUNE = os.environ.get("SEPCONV_TRITON_AUTOTUNE", "1") != "0"

#: Tiles used under the interpreter (no autotuning; fewer, larger programs run faster
#: there). Keys: ``rows`` (BN, BI), ``last`` (BR, BM), ``fused`` (BH, BWE; BWE is raised to
#: fit the row kernel), ``direct`` (BR, BM).
FIXED_TILES: dict[str, tuple[int, int]] = {
    "rows": (16, 32),
    "last": (16, 32),
    "fused": (16, 32),
    "direct": (16, 32),
}
#: Tiles used on a GPU when ``AUTOTUNE`` is off.
GPU_TILES: dict[str, tuple[int, int]] = {
    "rows": (16, 64),
    "last": (4, 256),
    "fused": (8, 128),
    "direct": (8, 128),
}


# ----------------------------------------------------------------------------------------------
# device functions
# ----------------------------------------------------------------------------------------------


@triton.jit
def _src(q, n, t_ptr, off, lmask, MODE: tl.constexpr):
    """Input index read by positions ``q`` (relative to the axis start) under ``MODE``.

    One reflection / wrap in closed form; ``_TABLE`` reads ``extension_table`` (position
    ``q + off`` of the padded line). Constant mode returns ``q`` clamped (the caller masks).
    """
    if MODE == 0:
        s = tl.minimum(tl.maximum(q, 0), n - 1)
    elif MODE == 1:
        s = tl.minimum(tl.maximum(q, 0), n - 1)
    elif MODE == 2:
        s = tl.where(q < 0, q + n, tl.where(q >= n, q - n, q))
    elif MODE == 3:
        s = tl.where(q < 0, -q - 1, tl.where(q >= n, 2 * n - 1 - q, q))
    elif MODE == 4:
        s = tl.where(q < 0, -q, tl.where(q >= n, 2 * n - 2 - q, q))
    else:
        s = tl.load(t_ptr + (q + off), mask=lmask, other=0)
    return s


@triton.jit
def _store(acc, c_ptr, add_ptr, out_ptr, offs, mask, HAS_ADD: tl.constexpr, OUT: tl.constexpr,
           ILO: tl.constexpr, IHI: tl.constexpr):  # fmt: skip
    """out = convert(alpha * acc [+ add]): float cast, or round-half-even and saturate."""
    v = acc * tl.load(c_ptr + 1)
    if HAS_ADD:
        v += tl.load(add_ptr + offs, mask=mask, other=0.0).to(v.dtype)
    if OUT == 0:
        tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)
    elif OUT == 3:
        # bfloat16 through an int16 view, rounded to nearest even here (the interpreter's
        # conversion truncates): add 0x7fff plus the lowest kept bit, keep the top 16 bits
        f = v.to(tl.float32)
        bits = f.to(tl.uint32, bitcast=True)
        r = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        r = tl.where(f != f, 0x7FC0, r)
        tl.store(out_ptr + offs, r.to(tl.int16), mask=mask)
    else:
        flo = tl.load(c_ptr + 2)
        fhi = tl.load(c_ptr + 3)
        magic = tl.load(c_ptr + 4)
        # round half to even without libm: (|v| + 2**p) - 2**p for |v| < 2**p (the sum has
        # unit spacing), the sign put back; |v| >= 2**p is an integer already
        a = tl.abs(v)
        a = tl.where(a < magic, (a + magic) - magic, a)
        r = tl.where(v < 0, -a, a)
        r = tl.where(v != v, 0.0, r)
        r = tl.minimum(tl.maximum(r, flo), fhi)
        if OUT == 1:
            ri = r.to(tl.int64)
        else:
            ri = r.to(tl.uint64)
        ri = tl.where(v > fhi, IHI, ri)
        ri = tl.where(v < flo, ILO, ri)
        tl.store(out_ptr + offs, ri.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rows_tap(xb, rows, cols, rmask, mask, j, off, n, inner, cval, t_ptr,
              MODE: tl.constexpr, I64: tl.constexpr):  # fmt: skip
    q = rows + (j - off)
    s = _src(q, n, t_ptr, off, rmask, MODE)
    if I64:
        s = s.to(tl.int64)
    if MODE == 0:
        inside = (q >= 0) & (q < n)
        v = tl.load(xb + s[:, None] * inner + cols[None, :], mask=mask & inside[:, None], other=0)
        v = tl.where(inside[:, None], v.to(cval.dtype), cval)
    else:
        v = tl.load(xb + s[:, None] * inner + cols[None, :], mask=mask, other=0).to(cval.dtype)
    return v


@triton.jit
def _rows_kernel(x_ptr, c_ptr, t_ptr, add_ptr, out_ptr, n, inner, off, size_key,
                 K: tl.constexpr, MODE: tl.constexpr, SYM: tl.constexpr, HAS_ADD: tl.constexpr,
                 OUT: tl.constexpr, ILO: tl.constexpr, IHI: tl.constexpr, I64: tl.constexpr,
                 BN: tl.constexpr, BI: tl.constexpr):  # fmt: skip
    """One pass along axis 1 of x viewed as (outer, n, inner); a [BN, BI] tile per program."""
    pid = tl.program_id(0)
    ni = tl.cdiv(inner, BI)
    nn = tl.cdiv(n, BN)
    ti = pid % ni
    t = pid // ni
    tn = t % nn
    b = t // nn
    rows = tn * BN + tl.arange(0, BN)
    cols = ti * BI + tl.arange(0, BI)
    rmask = rows < n
    mask = rmask[:, None] & (cols < inner)[None, :]
    base = b.to(tl.int64) * n * inner
    xb = x_ptr + base
    cval = tl.load(c_ptr)
    acc = tl.zeros([BN, BI], dtype=c_ptr.dtype.element_ty)
    wp = c_ptr + 8
    if SYM == 0:
        if K <= 64:
            for j in tl.static_range(K):
                v = _rows_tap(xb, rows, cols, rmask, mask, j, off, n, inner, cval, t_ptr, MODE, I64)
                acc += tl.load(wp + j) * v
        else:
            for j in range(K):
                v = _rows_tap(xb, rows, cols, rmask, mask, j, off, n, inner, cval, t_ptr, MODE, I64)
                acc += tl.load(wp + j) * v
    else:
        if K // 2 <= 64:
            for j in tl.static_range(K // 2):
                a = _rows_tap(xb, rows, cols, rmask, mask, j, off, n, inner, cval, t_ptr, MODE, I64)
                z = _rows_tap(xb, rows, cols, rmask, mask, K - 1 - j, off, n, inner, cval, t_ptr,
                              MODE, I64)  # fmt: skip
                acc += tl.load(wp + j) * (a + z * SYM)
        else:
            for j in range(K // 2):
                a = _rows_tap(xb, rows, cols, rmask, mask, j, off, n, inner, cval, t_ptr, MODE, I64)
                z = _rows_tap(xb, rows, cols, rmask, mask, K - 1 - j, off, n, inner, cval, t_ptr,
                              MODE, I64)  # fmt: skip
                acc += tl.load(wp + j) * (a + z * SYM)
        if K % 2 == 1:
            v = _rows_tap(xb, rows, cols, rmask, mask, K // 2, off, n, inner, cval, t_ptr, MODE,
                          I64)  # fmt: skip
            acc += tl.load(wp + K // 2) * v
    if I64:
        offs = base + rows[:, None].to(tl.int64) * inner + cols[None, :]
    else:
        offs = base + rows[:, None] * inner + cols[None, :]
    _store(acc, c_ptr, add_ptr, out_ptr, offs, mask, HAS_ADD, OUT, ILO, IHI)


@triton.jit
def _last_tap(xr, cols, cmask, mask, j, off, m, cval, t_ptr, MODE: tl.constexpr):
    q = cols + (j - off)
    s = _src(q, m, t_ptr, off, cmask, MODE)
    if MODE == 0:
        inside = (q >= 0) & (q < m)
        v = tl.load(xr + s[None, :], mask=mask & inside[None, :], other=0)
        v = tl.where(inside[None, :], v.to(cval.dtype), cval)
    else:
        v = tl.load(xr + s[None, :], mask=mask, other=0).to(cval.dtype)
    return v


@triton.jit
def _last_kernel(x_ptr, c_ptr, t_ptr, add_ptr, out_ptr, rows_total, m, off, size_key,
                 K: tl.constexpr, MODE: tl.constexpr, SYM: tl.constexpr, HAS_ADD: tl.constexpr,
                 OUT: tl.constexpr, ILO: tl.constexpr, IHI: tl.constexpr, I64: tl.constexpr,
                 BR: tl.constexpr, BM: tl.constexpr):  # fmt: skip
    """One pass along the last axis of x viewed as (rows, m); a [BR, BM] tile per program."""
    pid = tl.program_id(0)
    nm = tl.cdiv(m, BM)
    tc = pid % nm
    tr = pid // nm
    if I64:  # widen before the row index can pass 2**31 (more than 2**31 - BR rows)
        tr = tr.to(tl.int64)
    rows = tr * BR + tl.arange(0, BR)
    cols = tc * BM + tl.arange(0, BM)
    cmask = cols < m
    mask = (rows < rows_total)[:, None] & cmask[None, :]
    if I64:
        rbase = rows[:, None].to(tl.int64) * m
    else:
        rbase = rows[:, None] * m
    xr = x_ptr + rbase
    cval = tl.load(c_ptr)
    acc = tl.zeros([BR, BM], dtype=c_ptr.dtype.element_ty)
    wp = c_ptr + 8
    if SYM == 0:
        if K <= 64:
            for j in tl.static_range(K):
                acc += tl.load(wp + j) * _last_tap(xr, cols, cmask, mask, j, off, m, cval, t_ptr,
                                                   MODE)  # fmt: skip
        else:
            for j in range(K):
                acc += tl.load(wp + j) * _last_tap(xr, cols, cmask, mask, j, off, m, cval, t_ptr,
                                                   MODE)  # fmt: skip
    else:
        if K // 2 <= 64:
            for j in tl.static_range(K // 2):
                a = _last_tap(xr, cols, cmask, mask, j, off, m, cval, t_ptr, MODE)
                z = _last_tap(xr, cols, cmask, mask, K - 1 - j, off, m, cval, t_ptr, MODE)
                acc += tl.load(wp + j) * (a + z * SYM)
        else:
            for j in range(K // 2):
                a = _last_tap(xr, cols, cmask, mask, j, off, m, cval, t_ptr, MODE)
                z = _last_tap(xr, cols, cmask, mask, K - 1 - j, off, m, cval, t_ptr, MODE)
                acc += tl.load(wp + j) * (a + z * SYM)
        if K % 2 == 1:
            acc += tl.load(wp + K // 2) * _last_tap(xr, cols, cmask, mask, K // 2, off, m, cval,
                                                    t_ptr, MODE)  # fmt: skip
    offs = rbase + cols[None, :]
    _store(acc, c_ptr, add_ptr, out_ptr, offs, mask, HAS_ADD, OUT, ILO, IHI)


@triton.jit
def _fused_tap(xb, rows, rmask, cbase, cload, cin, i, off0, n, m, cval, t0_ptr,
               MODE0: tl.constexpr, I64: tl.constexpr):  # fmt: skip
    """Input rows ``rows + i - off0`` (through MODE0) at the columns ``cbase`` (masked by
    ``cload``; ``cin``: columns inside the input for constant mode along the rows)."""
    q = rows + (i - off0)
    s = _src(q, n, t0_ptr, off0, rmask, MODE0)
    if I64:
        s = s.to(tl.int64)
    mask = rmask[:, None] & cload[None, :]
    if MODE0 == 0:
        inside = (q >= 0) & (q < n)
        v = tl.load(xb + s[:, None] * m + cbase[None, :], mask=mask & inside[:, None], other=0)
        v = tl.where(inside[:, None], v.to(cval.dtype), cval)
    else:
        v = tl.load(xb + s[:, None] * m + cbase[None, :], mask=mask, other=0).to(cval.dtype)
    return v


@triton.jit
def _fused_kernel(x_ptr, c_ptr, t0_ptr, t1_ptr, add_ptr, out_ptr, n, m, off0, off1, size_key,
                  K0: tl.constexpr, K1: tl.constexpr, MODE0: tl.constexpr, MODE1: tl.constexpr,
                  SYM0: tl.constexpr, SYM1: tl.constexpr, HAS_ADD: tl.constexpr,
                  OUT: tl.constexpr, ILO: tl.constexpr, IHI: tl.constexpr, I64: tl.constexpr,
                  BH: tl.constexpr, BWE: tl.constexpr):  # fmt: skip
    """Passes along axes 1 and 2 of x viewed as (outer, n, m), fused: BH rows by
    BWE - K1 + 1 columns of output per program; the intermediate stays in registers."""
    BW: tl.constexpr = BWE - K1 + 1
    pid = tl.program_id(0)
    nc = tl.cdiv(m, BW)
    nh = tl.cdiv(n, BH)
    tc = pid % nc
    t = pid // nc
    th = t % nh
    b = t // nh
    rows = th * BH + tl.arange(0, BH)
    rmask = rows < n
    lane = tl.arange(0, BWE)
    p = tc * BW + lane  # positions in the padded row (length m + K1 - 1)
    pmask = p < m + K1 - 1
    q1 = p - off1
    s1 = _src(q1, m, t1_ptr, off1, pmask, MODE1)
    if MODE1 == 0:
        cin = (q1 >= 0) & (q1 < m)
        cload = pmask & cin
    else:
        cin = pmask
        cload = pmask
    base = b.to(tl.int64) * n * m
    xb = x_ptr + base
    cval = tl.load(c_ptr)
    CT = c_ptr.dtype.element_ty
    w0 = c_ptr + 8
    w1 = c_ptr + 8 + K0
    # column pass: the intermediate at BH rows x BWE padded columns
    v = tl.zeros([BH, BWE], dtype=CT)
    if SYM0 == 0:
        for i in tl.static_range(K0):
            a = _fused_tap(xb, rows, rmask, s1, cload, cin, i, off0, n, m, cval, t0_ptr, MODE0,
                           I64)  # fmt: skip
            v += tl.load(w0 + i) * a
    else:
        for i in tl.static_range(K0 // 2):
            a = _fused_tap(xb, rows, rmask, s1, cload, cin, i, off0, n, m, cval, t0_ptr, MODE0,
                           I64)  # fmt: skip
            z = _fused_tap(xb, rows, rmask, s1, cload, cin, K0 - 1 - i, off0, n, m, cval, t0_ptr,
                           MODE0, I64)  # fmt: skip
            v += tl.load(w0 + i) * (a + z * SYM0)
        if K0 % 2 == 1:
            a = _fused_tap(xb, rows, rmask, s1, cload, cin, K0 // 2, off0, n, m, cval, t0_ptr,
                           MODE0, I64)  # fmt: skip
            v += tl.load(w0 + K0 // 2) * a
    if MODE1 == 0:  # the row pass pads the intermediate with cval * sum(w0)
        v = tl.where(cin[None, :], v, tl.load(c_ptr + 6))
    # row pass from registers: output column c reads intermediate columns c .. c + K1 - 1
    acc = tl.zeros([BH, BWE], dtype=CT)
    if SYM1 == 0:
        for j in tl.static_range(K1):
            idx = tl.broadcast_to(tl.minimum(lane + j, BWE - 1)[None, :], (BH, BWE))
            acc += tl.load(w1 + j) * tl.gather(v, idx, 1)
    else:
        for j in tl.static_range(K1 // 2):
            ia = tl.broadcast_to(tl.minimum(lane + j, BWE - 1)[None, :], (BH, BWE))
            iz = tl.broadcast_to(tl.minimum(lane + (K1 - 1 - j), BWE - 1)[None, :], (BH, BWE))
            acc += tl.load(w1 + j) * (tl.gather(v, ia, 1) + tl.gather(v, iz, 1) * SYM1)
        if K1 % 2 == 1:
            ic = tl.broadcast_to(tl.minimum(lane + K1 // 2, BWE - 1)[None, :], (BH, BWE))
            acc += tl.load(w1 + K1 // 2) * tl.gather(v, ic, 1)
    cols = tc * BW + lane
    mask = rmask[:, None] & ((lane < BW) & (cols < m))[None, :]
    if I64:
        offs = base + rows[:, None].to(tl.int64) * m + cols[None, :]
    else:
        offs = base + rows[:, None] * m + cols[None, :]
    _store(acc, c_ptr, add_ptr, out_ptr, offs, mask, HAS_ADD, OUT, ILO, IHI)


@triton.jit
def _direct_kernel(p_ptr, bases_ptr, toff_ptr, c_ptr, add_ptr, out_ptr, rows_total, m, ntaps,
                   size_key, HAS_ADD: tl.constexpr, OUT: tl.constexpr, ILO: tl.constexpr,
                   IHI: tl.constexpr, BR: tl.constexpr, BM: tl.constexpr):  # fmt: skip
    """out[r, c] = sum_t w[t] * padded[bases[r] + toff[t] + c] (taps in a runtime loop)."""
    pid = tl.program_id(0)
    nm = tl.cdiv(m, BM)
    tc = pid % nm
    tr = (pid // nm).to(tl.int64)  # rows_total can pass 2**31 (channels-last: B*H*W rows)
    rows = tr * BR + tl.arange(0, BR)
    cols = tc * BM + tl.arange(0, BM)
    rmask = rows < rows_total
    mask = rmask[:, None] & (cols < m)[None, :]
    base = tl.load(bases_ptr + rows, mask=rmask, other=0)
    ptrs = p_ptr + base[:, None] + cols[None, :]
    acc = tl.zeros([BR, BM], dtype=c_ptr.dtype.element_ty)
    for t in range(ntaps):
        o = tl.load(toff_ptr + t)
        acc += tl.load(c_ptr + 8 + t) * tl.load(ptrs + o, mask=mask, other=0.0)
    offs = rows[:, None].to(tl.int64) * m + cols[None, :]
    _store(acc, c_ptr, add_ptr, out_ptr, offs, mask, HAS_ADD, OUT, ILO, IHI)


def interpreted() -> bool:
    """True when the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return not isinstance(_rows_kernel, triton.runtime.JITFunction)


# ----------------------------------------------------------------------------------------------
# autotuning (GPU only)
# ----------------------------------------------------------------------------------------------


def _configs(pairs: Sequence[tuple[int, int, int]], names: tuple[str, str]) -> list[Any]:
    return [
        triton.Config({names[0]: a, names[1]: b}, num_warps=w, num_stages=1) for a, b, w in pairs
    ]


_ROWS_CONFIGS = [
    (8, 128, 4), (16, 64, 4), (4, 256, 4), (32, 32, 4), (16, 128, 8), (64, 16, 4), (128, 4, 4),
]  # fmt: skip
_LAST_CONFIGS = [
    (1, 1024, 4), (2, 512, 4), (4, 256, 4), (8, 128, 4), (4, 512, 8), (64, 4, 4),
]  # fmt: skip
_FUSED_CONFIGS = [
    (8, 128, 4), (16, 128, 8), (4, 256, 4), (8, 256, 8), (2, 512, 4), (4, 512, 8), (16, 64, 4),
]  # fmt: skip


def _prune_fused(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
    k1 = int(kwargs.get("K1", named_args.get("K1", 1)))
    m = int(named_args["m"])
    n = int(named_args["n"])
    keep = []
    for c in configs:
        bh, bwe = c.kwargs["BH"], c.kwargs["BWE"]
        bw = bwe - k1 + 1
        if bw < max(8, bwe // 4):  # too little output per tile
            continue
        if bwe > 2 * triton.next_power_of_2(m + k1 - 1) or bh > 2 * triton.next_power_of_2(n):
            continue
        keep.append(c)
    if keep:
        return keep
    return [triton.Config({"BH": 4, "BWE": _fused_width(k1)}, num_warps=4, num_stages=1)]


def _prune_rows(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
    n, inner = int(named_args["n"]), int(named_args["inner"])
    keep = [
        c
        for c in configs
        if c.kwargs["BI"] <= max(4, triton.next_power_of_2(inner))
        and c.kwargs["BN"] <= max(4, triton.next_power_of_2(n))
        and (c.kwargs["BI"] >= 32 or inner < 64)  # narrow tiles only for short rows
    ]
    return keep or configs[:1]


def _prune_last(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
    rows, m = int(named_args["rows_total"]), int(named_args["m"])
    keep = [
        c
        for c in configs
        if c.kwargs["BM"] <= max(4, triton.next_power_of_2(m))
        and c.kwargs["BR"] <= max(1, triton.next_power_of_2(rows))
        and (c.kwargs["BM"] >= 64 or m < 256)  # narrow tiles only for short rows
    ]
    return keep or configs[:1]


def _fused_width(k1: int) -> int:
    """The smallest power-of-two tile width with at least as many outputs as halo."""
    return max(16, triton.next_power_of_2(2 * (k1 - 1) + 1))


_TUNED: dict[str, Any] = {}


def _tuned(name: str) -> Any:
    """The autotuned launcher of kernel ``name`` (built on first use, GPU only)."""
    if name not in _TUNED:
        kernel, configs, tiles, prune = {
            "rows": (_rows_kernel, _ROWS_CONFIGS, ("BN", "BI"), _prune_rows),
            "last": (_last_kernel, _LAST_CONFIGS, ("BR", "BM"), _prune_last),
            "fused": (_fused_kernel, _FUSED_CONFIGS, ("BH", "BWE"), _prune_fused),
            "direct": (_direct_kernel, _DIRECT_CONFIGS, ("BR", "BM"), _prune_last),
        }[name]
        _TUNED[name] = triton.autotune(
            _configs(configs, tiles),
            key=["size_key"],
            prune_configs_by={"early_config_prune": prune},
            # low-rank terms accumulate in place: tuning runs must not change the output
            restore_value=["out_ptr"],
        )(kernel)
    return _TUNED[name]


#: Tiles tried for the direct kernel (rows, columns, warps).
_DIRECT_CONFIGS = [(4, 256, 4), (8, 128, 4), (16, 64, 4), (2, 512, 4)]


def _size_class(*values: int) -> int:
    """Autotuning key: the sizes' bit lengths (tiles are tuned once per size class)."""
    key = 0
    for v in values:
        key = key * 64 + min(63, int(v).bit_length())
    return key


# ----------------------------------------------------------------------------------------------
# constants on the device, cached by content
# ----------------------------------------------------------------------------------------------

_CACHE: collections.OrderedDict[tuple[Any, ...], torch.Tensor] = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 1024


def _on_device(arr: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``arr`` as a tensor on ``device``; a repeated request returns the cached tensor (no
    upload, no synchronisation)."""
    key = (str(device), str(dtype), arr.shape, arr.tobytes())
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)
    with _CACHE_LOCK:
        _CACHE[key] = t
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return t


# ----------------------------------------------------------------------------------------------
# dtypes and output
# ----------------------------------------------------------------------------------------------

_LOW = (torch.float16, torch.bfloat16)
_NP = {
    torch.bool: np.bool_,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.float32: np.float32,
    torch.float64: np.float64,
}
for _name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, _name):
        _NP[getattr(torch, _name)] = getattr(np, _name)


def _np_dtype(dt: torch.dtype, name: str) -> np.dtype:
    if dt in _LOW:
        return np.dtype(np.float32)
    if dt not in _NP:
        raise TypeError(
            f"{name} dtype must be float16, bfloat16, float32, float64, an integer type or "
            f"bool, got {dt}"
        )
    return np.dtype(_NP[dt])


def compute_dtype(input_dtype: torch.dtype, output_dtype: torch.dtype | None = None) -> torch.dtype:
    """The accumulation dtype for ``input_dtype`` -> ``output_dtype`` (``_modes.work_dtype``,
    with float16/bfloat16 counted as float32): ``torch.float32`` or ``torch.float64``.

    >>> compute_dtype(torch.bfloat16), compute_dtype(torch.uint8, torch.float64)
    (torch.float32, torch.float64)
    """
    npi = _np_dtype(input_dtype, "input")
    npo = npi if output_dtype is None else _np_dtype(output_dtype, "output")
    return torch.float32 if work_dtype(npi, npo) == np.float32 else torch.float64


def _out_kind(dt: torch.dtype) -> tuple[int, int, int]:
    """(OUT code, ILO, IHI): 0 float; 1 integers and bool (through int64); 2 uint64 (through
    uint64); 3 bfloat16 (rounded in the kernel, stored through an int16 view)."""
    if dt == torch.bfloat16:
        return 3, 0, 0
    if dt.is_floating_point:
        return 0, 0, 0
    if dt == torch.bool:
        return 1, 0, 1
    info = torch.iinfo(dt)
    code = 2 if info.max > 2**63 - 1 else 1
    return code, int(info.min), int(info.max)


def _header(ct: np.dtype, cval: float, alpha: float, out_dtype: torch.dtype, c2: float = 0.0):
    """The constants header (``_HEADER`` values of the computation dtype)."""
    flo = fhi = 0.0
    if not out_dtype.is_floating_point:
        _, lo, hi = _out_kind(out_dtype)
        flo, fhi = saturation_bounds(lo, hi, ct)
    magic = 2.0 ** np.finfo(ct).nmant  # rounding: see _store
    return np.array([cval, alpha, flo, fhi, magic, 0.0, c2, 0.0], dtype=ct)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    _np_dtype(x.dtype, name)
    if x.device.type != "cuda" and not interpreted():
        raise ValueError(
            f"{name} must be a CUDA tensor for the Triton engine (got device {x.device}); "
            "CPU tensors run only under TRITON_INTERPRET=1"
        )
    return x


def _raw(t: torch.Tensor) -> torch.Tensor:
    """bool tensors as uint8 (same bytes), which every Triton load/store handles."""
    return t.view(torch.uint8) if t.dtype == torch.bool else t


def _raw_out(t: torch.Tensor) -> torch.Tensor:
    """An output tensor as its kernel sees it: bool as uint8, bfloat16 as int16 bits."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else _raw(t)


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0:
        return False
    sa, sb = a.untyped_storage(), b.untyped_storage()
    return bool(sa.data_ptr() == sb.data_ptr())


def _result_target(
    x: torch.Tensor, out: torch.Tensor | None, dtype: Any
) -> tuple[torch.dtype, torch.Tensor]:
    """(result dtype, contiguous tensor the kernels write the result into)."""
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(
                f"out must have the input's shape {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        if out.device != x.device:
            raise ValueError(f"out must be on the input's device {x.device}, got {out.device}")
        if dtype is not None and dtype != out.dtype:
            raise ValueError(f"dtype {dtype} differs from out's dtype {out.dtype}")
        _np_dtype(out.dtype, "out")
        if out.is_contiguous() and not _overlaps(out, x):
            return out.dtype, out
        return out.dtype, torch.empty(x.shape, dtype=out.dtype, device=x.device)
    dt = x.dtype if dtype is None else dtype
    if not isinstance(dt, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}")
    _np_dtype(dt, "dtype")
    return dt, torch.empty(x.shape, dtype=dt, device=x.device)


def _finish(res: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None or res is out:
        return res if out is None else out
    out.copy_(res)
    return out


# ----------------------------------------------------------------------------------------------
# launching
# ----------------------------------------------------------------------------------------------


def _symmetry(w: np.ndarray) -> int:
    """1 symmetric, -1 antisymmetric (exactly, in the computation dtype), else 0. Inputs are
    converted to the computation dtype before tap pairs are combined, so antisymmetric
    folding is safe for unsigned integer input too."""
    if len(w) > 1 and np.array_equal(w, w[::-1]):
        return 1
    if len(w) > 1 and np.array_equal(w, -w[::-1]):
        return -1
    return 0


def _axis_mode(n: int, k: int, offset: int, mode: str) -> int:
    """The in-kernel MODE code, or ``_TABLE`` when one reflection/wrap does not suffice."""
    code = _MODE_CODES[mode]
    if code in (_CONSTANT, _NEAREST):
        return code
    if n == 1:
        return _NEAREST  # every reflection / wrap of a single sample is that sample
    lo, hi = offset, k - 1 - offset  # reach beyond each end
    limit = n - 1 if code == _MIRROR else n
    if lo <= limit and hi <= limit:
        return code
    return _TABLE


class _Launcher:
    """Launches kernels on one device: tuned on a GPU, fixed small tiles when interpreted."""

    def __init__(self, device: torch.device, ct: torch.dtype) -> None:
        self.device = device
        self.ct = ct
        self.npct = np.dtype(np.float32 if ct == torch.float32 else np.float64)
        self.interp = interpreted()

    def consts(self, arr: np.ndarray) -> torch.Tensor:
        return _on_device(arr.astype(self.npct), self.ct, self.device)

    def table(self, n: int, k: int, offset: int, mode: str, code: int) -> torch.Tensor | None:
        if code != _TABLE:
            return None
        return _on_device(extension_table(n, k, offset, mode).astype(np.int32), torch.int32,
                          self.device)  # fmt: skip

    def run(self, name: str, grid_dims: tuple[str, str, int, int, int], args: list[Any],
            meta: dict[str, Any]) -> None:  # fmt: skip
        """``grid_dims`` = (tile name a, tile name b, batch, size a, size b)."""
        ta, tb, batch, sa, sb = grid_dims
        kernel = {
            "rows": _rows_kernel,
            "last": _last_kernel,
            "fused": _fused_kernel,
            "direct": _direct_kernel,
        }[name]
        extra = meta.get("K1", 1) - 1 if name == "fused" else 0

        def grid(m: dict[str, Any]) -> tuple[int]:
            return (batch * triton.cdiv(sa, m[ta]) * triton.cdiv(sb, m[tb] - extra),)

        if self.interp or not AUTOTUNE:
            a, b = (FIXED_TILES if self.interp else GPU_TILES)[name]
            if name == "fused":
                b = max(b, _fused_width(meta["K1"]))
            tiles = {ta: a, tb: b}
            if self.interp:
                kernel[grid(tiles)](*args, **meta, **tiles)
            else:
                with torch.cuda.device(self.device):
                    kernel[grid(tiles)](*args, **meta, **tiles)
            return
        with torch.cuda.device(self.device):
            _tuned(name)[grid](*args, **meta)


def _pass(
    L: _Launcher,
    src: torch.Tensor,
    dst: torch.Tensor,
    add: torch.Tensor | None,
    axis: int,
    w: np.ndarray,
    origin: int,
    mode: str,
    cval: float,
    alpha: float,
) -> float:
    """One 1-D pass ``dst = alpha * correlate1d(src) (+ add)``; returns the next cval."""
    shape = src.shape
    n = shape[axis]
    inner = math.prod(shape[axis + 1 :])
    outer = math.prod(shape[:axis])
    k = len(w)
    offset = k // 2 + origin
    code = _axis_mode(n, k, offset, mode)
    wc = np.asarray(w, dtype=L.npct)
    consts = L.consts(np.concatenate([_header(L.npct, cval, alpha, dst.dtype), wc]))
    table = L.table(n, k, offset, mode, code)
    out_code, ilo, ihi = _out_kind(dst.dtype)
    big = src.numel() > _I64_ABOVE
    meta = dict(K=k, MODE=code, SYM=_symmetry(wc), HAS_ADD=add is not None, OUT=out_code,
                ILO=ilo, IHI=ihi, I64=big)  # fmt: skip
    t_arg = consts if table is None else table
    a_arg = consts if add is None else add
    if inner == 1:
        args = [_raw(src), consts, t_arg, a_arg, _raw_out(dst), outer, n, offset,
                _size_class(outer, n, k)]  # fmt: skip
        L.run("last", ("BR", "BM", 1, outer, n), args, meta)
    else:
        args = [_raw(src), consts, t_arg, a_arg, _raw_out(dst), n, inner, offset,
                _size_class(n, inner, k)]  # fmt: skip
        L.run("rows", ("BN", "BI", outer, n, inner), args, meta)
    return carry(cval, wc)


def _fused(
    L: _Launcher,
    src: torch.Tensor,
    dst: torch.Tensor,
    add: torch.Tensor | None,
    p0: Pass,
    p1: Pass,
    modes: dict[int, str],
    cval: float,
    alpha: float,
) -> float:
    """The passes along the last two axes in one kernel; returns the next cval."""
    (a0, w0, o0), (a1, w1, o1) = p0, p1
    n, m = src.shape[-2], src.shape[-1]
    outer = src.numel() // (n * m)
    k0, k1 = len(w0), len(w1)
    off0, off1 = k0 // 2 + o0, k1 // 2 + o1
    code0 = _axis_mode(n, k0, off0, modes[a0])
    code1 = _axis_mode(m, k1, off1, modes[a1])
    w0c = np.asarray(w0, dtype=L.npct)
    w1c = np.asarray(w1, dtype=L.npct)
    c1 = carry(cval, w0c)
    head = _header(L.npct, cval, alpha, dst.dtype, c1)
    consts = L.consts(np.concatenate([head, w0c, w1c]))
    t0 = L.table(n, k0, off0, modes[a0], code0)
    t1 = L.table(m, k1, off1, modes[a1], code1)
    out_code, ilo, ihi = _out_kind(dst.dtype)
    meta = dict(K0=k0, K1=k1, MODE0=code0, MODE1=code1, SYM0=_symmetry(w0c), SYM1=_symmetry(w1c),
                HAS_ADD=add is not None, OUT=out_code, ILO=ilo, IHI=ihi,
                I64=src.numel() > _I64_ABOVE)  # fmt: skip
    args = [
        _raw(src),
        consts,
        consts if t0 is None else t0,
        consts if t1 is None else t1,
        consts if add is None else add,
        _raw_out(dst),
        n,
        m,
        off0,
        off1,
        _size_class(n, m, k0, k1),
    ]
    L.run("fused", ("BH", "BWE", outer, n, m), args, meta)
    return carry(c1, w1c)


def _check_terms(terms: Any, modes: dict[int, str], ndim: int) -> list[tuple[float, list[Pass]]]:
    checked = []
    for weight, passes in terms:
        ps = []
        for axis, w, origin in passes:
            if not 0 <= axis < ndim:
                raise ValueError(f"pass axis must be in [0, {ndim - 1}], got {axis}")
            arr = np.asarray(w, dtype=np.float64)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(
                    f"pass weights must be a non-empty 1-D array, got shape {arr.shape}"
                )
            k = len(arr)
            if not -(k // 2) <= origin <= (k - 1) // 2:
                raise ValueError(
                    f"origin must be between {-(k // 2)} and {(k - 1) // 2} for a kernel of "
                    f"length {k}, got {origin}"
                )
            if modes.get(axis) not in _MODE_CODES:
                raise ValueError(
                    f"modes[{axis}] must be one of {sorted(_MODE_CODES)}, got {modes.get(axis)!r}"
                )
            ps.append((int(axis), arr, int(origin)))
        checked.append((float(weight), sorted(ps, key=lambda p: p[0])))
    if not checked:
        raise ValueError("terms must hold at least one term")
    return checked


def separable(
    x: torch.Tensor,
    job: Job,
    out: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    *,
    fuse: bool = True,
) -> torch.Tensor:
    """A job of terms, ``sum_r weight_r * (passes_r applied to x)``, on the tensor's device.

    ``job.terms = [(weight, [(axis, w1d, origin), ...]), ...]`` (correlation weights, passes in
    any order: they run sorted by axis, as in the CPU engine); ``job.modes[axis]`` is a canonical
    mode (``reflect``, ``mirror``, ``nearest``, ``wrap``, ``constant``); in constant mode each
    pass pads with ``cval`` times the sums of the earlier passes' weights (the dense
    correlation's exact padding). ``x`` is any real tensor (float16/bfloat16/float32/float64,
    integer or bool), read in its own dtype; the result has ``dtype`` (default: ``out``'s, else
    ``x``'s), computed in ``compute_dtype(x.dtype, dtype)`` and converted once (integers and
    bool rounded half to even and saturated, NaN -> 0). ``out`` (any layout, may be ``x``) is
    written in place and returned. ``fuse=False`` runs the last two axes as two passes.
    """
    terms, modes, cval = job.terms, job.modes, job.cval
    x = _as_tensor(x, "x")
    out_dtype, res = _result_target(x, out, dtype)
    ct = compute_dtype(x.dtype, out_dtype)
    checked = _check_terms(terms, modes, x.ndim)
    if x.numel() == 0:
        return _finish(res, out)
    xs = x.contiguous()
    if xs.ndim == 0:
        xs = xs.reshape(1)
        res_v = res.reshape(1)
    else:
        res_v = res
    L = _Launcher(x.device, ct)
    nterms = len(checked)
    # low-rank sums accumulate in the computation dtype; the last term writes the result
    acc = res_v if (nterms == 1 or out_dtype == ct) else torch.empty_like(xs, dtype=ct)
    scratch: list[torch.Tensor] = []

    def buffer(i: int) -> torch.Tensor:
        while len(scratch) <= i:
            scratch.append(torch.empty_like(xs, dtype=ct))
        return scratch[i]

    for r, (weight, passes) in enumerate(checked):
        stages = job_stages(passes, xs.ndim, _FUSE_MAX_K if fuse else 0)
        if not stages:  # a bare weight: one unit tap along the last axis
            stages = [[(xs.ndim - 1, np.ones(1), 0)]]
        last_term = r == nterms - 1
        final = res_v if last_term else acc
        add = None if r == 0 else acc
        cur = xs
        c = cval
        for s, stage in enumerate(stages):
            left = len(stages) - 1 - s
            if left == 0:
                dst, alpha, a = final, weight, add
            elif nterms == 1 and res_v.dtype == ct and not _overlaps(res_v, xs):
                dst, alpha, a = (buffer(0) if left % 2 else res_v), 1.0, None
            else:
                dst, alpha, a = buffer(left % 2), 1.0, None
            if len(stage) == 2:
                c = _fused(L, cur, dst, a, stage[0], stage[1], modes, c, alpha)
            else:
                (axis, w, origin) = stage[0]
                mode = modes.get(axis, "nearest")  # an identity term's unit tap has no mode
                c = _pass(L, cur, dst, a, axis, w, origin, mode, c, alpha)
            cur = dst
    return _finish(res, out)


def direct(
    x: torch.Tensor, job: Job, out: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A dense job by direct correlation (``job.kernel`` axis i along ``job.axes[i]``).

    The input is padded per filtered axis through ``_modes.extension_table`` (in the
    computation dtype, so a fractional ``cval`` pads integer input exactly), then every
    non-zero tap is multiplied and added in exact IEEE arithmetic (no TF32). Dtypes, ``out``
    and rounding as in :func:`separable`.
    """
    x = _as_tensor(x, "x")
    kernel = np.asarray(job.dense_kernel(), dtype=np.float64)
    axes = [int(a) for a in job.axes]
    origins = [int(o) for o in job.origins]
    modes, cval = job.modes, job.cval
    if kernel.ndim != len(axes) or len(origins) != len(axes):
        raise ValueError(
            f"kernel must have one dimension per axis ({len(axes)}), got shape {kernel.shape} "
            f"and {len(origins)} origins"
        )
    for a, k, o in zip(axes, kernel.shape, origins, strict=True):
        if not 0 <= a < x.ndim:
            raise ValueError(f"axes must be in [0, {x.ndim - 1}], got {a}")
        if k == 0 or not -(k // 2) <= o <= (k - 1) // 2:
            raise ValueError(f"origin {o} is outside a kernel of length {k}")
        if modes.get(a) not in _MODE_CODES:
            raise ValueError(
                f"modes[{a}] must be one of {sorted(_MODE_CODES)}, got {modes.get(a)!r}"
            )
    out_dtype, res = _result_target(x, out, dtype)
    ct = compute_dtype(x.dtype, out_dtype)
    if x.numel() == 0:
        return _finish(res, out)
    L = _Launcher(x.device, ct)
    xs = x.reshape(1) if x.ndim == 0 else x
    padded = xs.to(ct)
    for a, k, o in zip(axes, kernel.shape, origins, strict=True):
        table = extension_table(xs.shape[a], k, k // 2 + o, modes[a])
        outside = table < 0
        idx = _on_device(np.where(outside, 0, table), torch.int64, x.device)
        padded = padded.index_select(a, idx)
        if outside.any():
            shape = [1] * padded.ndim
            shape[a] = -1
            mask = _on_device(outside, torch.bool, x.device).reshape(shape)
            padded = padded.masked_fill(mask, cval)
    padded = padded.contiguous()
    pstrides = padded.stride()
    m = xs.shape[-1]
    rows = xs.numel() // m
    bases = torch.zeros((), dtype=torch.int64, device=x.device)
    for d in range(xs.ndim - 1):
        shape = [1] * (xs.ndim - 1)
        shape[d] = xs.shape[d]
        step = torch.arange(xs.shape[d], dtype=torch.int64, device=x.device) * pstrides[d]
        bases = bases + step.reshape(shape)
    bases = (
        bases.expand(xs.shape[:-1]).reshape(-1).contiguous() if xs.ndim > 1 else bases.reshape(1)
    )
    taps = np.nonzero(kernel)
    toff = np.zeros(len(taps[0]), dtype=np.int64)
    for a, idx_a in zip(axes, taps, strict=True):
        toff += idx_a.astype(np.int64) * pstrides[a]
    weights = kernel[taps]
    consts = L.consts(np.concatenate([_header(L.npct, cval, 1.0, out_dtype), weights]))
    offsets = _on_device(toff, torch.int64, x.device)
    res_v = res.reshape(1) if x.ndim == 0 else res
    out_code, ilo, ihi = _out_kind(out_dtype)
    meta = dict(HAS_ADD=False, OUT=out_code, ILO=ilo, IHI=ihi)
    args = [padded, bases, offsets, consts, consts, _raw_out(res_v), rows, m, len(toff),
            _size_class(rows, m)]  # fmt: skip
    if len(toff) == 0:
        res_v.zero_()
        return _finish(res, out)
    L.run("direct", ("BR", "BM", 1, rows, m), args, meta)
    return _finish(res, out)
