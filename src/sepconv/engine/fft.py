"""FFT correlation of the padded input (scipy.fft, multithreaded with ``workers``).

Precision: the transform is always computed in float64. An FFT's rounding error is relative to
the *largest* value in the array, not to each output: in float32 a 1e6 pixel leaves errors of
~3e-4 relative on outputs of size 1 far away from it, where direct or separable passes give
~1e-7. In float64 the same error is ~1e-16 x max|x| x sum|K|, below float32 rounding of any
output whose size is within ~1e8 of the array's maximum. Non-finite data never reaches the FFT
(see :mod:`sepconv.engine.nonfinite`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import fft as sfft

from .._modes import extension_table, pad
from ..job import Job

__all__ = ["fft", "fft_pass"]


def fft(x: np.ndarray, job: Job, workers: int = 1) -> np.ndarray:
    """A dense job (``job.kernel`` over ``job.axes``) by FFT of the padded input ("valid"
    part)."""
    kernel, axes = job.dense_kernel(), job.axes
    padded = pad(x, axes, kernel.shape, job.origins, job.modes, job.cval)
    padded = padded.astype(np.float64, copy=False)
    order = np.argsort(axes)
    ax = [int(a) for a in np.asarray(axes)[order]]
    k = kernel.transpose(order)  # kernel axes in increasing data-axis order
    size = [sfft.next_fast_len(padded.shape[a], real=True) for a in ax]
    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim], dtype=np.float64)
    kshape = [1] * x.ndim
    for a, n in zip(ax, k.shape, strict=True):
        kshape[a] = n
    fx = sfft.rfftn(padded, s=size, axes=ax, workers=workers)
    fk = sfft.rfftn(flipped.reshape(kshape), s=size, axes=ax, workers=workers)
    fx *= fk
    full = sfft.irfftn(fx, s=size, axes=ax, workers=workers)
    sl: list[slice] = [slice(None)] * x.ndim
    for a, n in zip(ax, k.shape, strict=True):
        sl[a] = slice(n - 1, n - 1 + x.shape[a])
    return np.ascontiguousarray(full[tuple(sl)], dtype=x.dtype)


#: Bytes of float64 work per block of lines in :func:`fft_pass` (the padded lines; the
#: spectrum is as large): blocks stay in the last-level cache's neighbourhood.
_BLOCK_BYTES = 1 << 22


def fft_pass(
    x: np.ndarray,
    axis: int,
    w: np.ndarray,
    origin: int,
    mode: str,
    cval: float,
    out: np.ndarray | None = None,
    workers: int = 1,
) -> np.ndarray:
    """``scipy.ndimage.correlate1d(x, w, axis, mode=mode, cval=cval, origin=origin)`` by 1-D
    FFTs of the padded lines, in blocks of lines (float64, as :func:`fft`). Where the pass is
    diagonal in a real transform of the line itself (``wrap``: DFT; ``reflect``/``mirror``
    with centred symmetric taps: DCT-II/DCT-I) the line is transformed unpadded.

    A long pass costs ``O(log n)`` per output instead of ``len(w)``: for a separable kernel
    this does the FFT's work one axis at a time (an N-D FFT of the dense kernel costs more).
    ``mode`` is canonical (``_modes.normalize_mode``); the padded line is built through
    ``_modes.extension_table`` (every mode, any origin, kernels longer than the axis). The
    result goes into ``out`` (x's shape, a float dtype, not overlapping ``x``) or a new array
    of x's float dtype (float64 for integer input). Finite data only: a NaN or Inf spreads
    over its whole line (the callers check).
    """
    w = np.asarray(w, dtype=np.float64)
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    n = x.shape[axis]
    k = len(w)
    if x.size == 0:
        return out
    diagonal = _diagonal(w, origin, mode, n)
    if diagonal is not None:
        forward, inverse, mult = diagonal
        _transform_pass(x, out, axis, forward, inverse, mult, workers)
        return out
    table = extension_table(n, k, k // 2 + origin, mode)
    length = n + k - 1
    size = sfft.next_fast_len(length, real=True)
    # correlation = convolution with the reversed weights; circular of size >= length never
    # wraps into the outputs k - 1 .. k - 1 + n
    fk = sfft.rfft(w[::-1], n=size)
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    use = np.where(table < 0, 0, table)
    cpos = np.flatnonzero(table < 0)
    step = max(1, _BLOCK_BYTES // (8 * size))
    if inner == 1:  # the last axis: blocks of whole lines, transformed along axis 1
        x2, o2 = x.reshape(outer, n), out.reshape(outer, n)

        def rows(r0: int) -> None:
            padded = np.take(x2[r0 : r0 + step], use, axis=1).astype(np.float64, copy=False)
            padded[:, cpos] = cval
            spec = sfft.rfft(padded, n=size, axis=1, overwrite_x=True)
            spec *= fk
            full = sfft.irfft(spec, n=size, axis=1, overwrite_x=True)
            o2[r0 : r0 + step] = full[:, k - 1 : k - 1 + n]

        _blocks(rows, [(r0,) for r0 in range(0, outer, step)], workers)
        return out
    x3, o3 = x.reshape(outer, n, inner), out.reshape(outer, n, inner)
    fkc = fk[:, None]

    def cols(o: int, c0: int) -> None:
        padded = np.take(x3[o, :, c0 : c0 + step], use, axis=0).astype(np.float64, copy=False)
        padded[cpos] = cval
        spec = sfft.rfft(padded, n=size, axis=0, overwrite_x=True)
        spec *= fkc
        full = sfft.irfft(spec, n=size, axis=0, overwrite_x=True)
        o3[o, :, c0 : c0 + step] = full[k - 1 : k - 1 + n]

    _blocks(cols, [(o, c0) for o in range(outer) for c0 in range(0, inner, step)], workers)
    return out


def _periodic(w: np.ndarray, origin: int, period: int) -> np.ndarray:
    """The taps folded onto one period: ``h[(j - off) mod period] += w[j]``."""
    off = len(w) // 2 + origin
    h = np.zeros(period)
    np.add.at(h, (np.arange(len(w)) - off) % period, w)
    return h


def _diagonal(w: np.ndarray, origin: int, mode: str, n: int) -> tuple | None:
    """``(forward, inverse, multiplier)`` where the pass is diagonal in a real transform of
    the line itself (no padding): ``wrap`` in the DFT (period n, any taps); ``reflect``
    (half-sample symmetric, period 2n) in the DCT-II and ``mirror`` (whole-sample symmetric,
    period 2n - 2) in the DCT-I, for centred symmetric taps (the extension and the kernel
    share the symmetry, so the correlation keeps it). Exact for kernels of any length: the
    modes' repeated extension of a short line is that periodic signal. None otherwise."""
    centred = origin == 0 and len(w) % 2 == 1 and bool(np.array_equal(w, w[::-1]))
    if mode == "wrap":
        mult = np.conj(np.fft.rfft(_periodic(w, origin, n)))
        return (
            lambda a, ax: sfft.rfft(a, axis=ax, overwrite_x=True),
            lambda a, ax: sfft.irfft(a, n=n, axis=ax, overwrite_x=True),
            mult,
        )
    if mode == "reflect" and centred:
        mult = np.fft.rfft(_periodic(w, 0, 2 * n)).real[:n]
        return (
            lambda a, ax: sfft.dct(a, type=2, axis=ax, overwrite_x=True),
            lambda a, ax: sfft.idct(a, type=2, axis=ax, overwrite_x=True),
            mult,
        )
    if mode == "mirror" and centred and n >= 2:
        mult = np.fft.rfft(_periodic(w, 0, 2 * n - 2)).real[:n]
        return (
            lambda a, ax: sfft.dct(a, type=1, axis=ax, overwrite_x=True),
            lambda a, ax: sfft.idct(a, type=1, axis=ax, overwrite_x=True),
            mult,
        )
    return None


def _transform_pass(x, out, axis, forward, inverse, mult, workers) -> None:
    """``out = inverse(forward(x) * mult)`` along ``axis``, in float64 blocks of lines."""
    n = x.shape[axis]
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    step = max(1, _BLOCK_BYTES // (8 * n))
    if inner == 1:
        x2, o2 = x.reshape(outer, n), out.reshape(outer, n)

        def rows(r0: int) -> None:
            spec = forward(x2[r0 : r0 + step].astype(np.float64), 1)
            spec *= mult
            o2[r0 : r0 + step] = inverse(spec, 1)

        _blocks(rows, [(r0,) for r0 in range(0, outer, step)], workers)
        return
    x3, o3 = x.reshape(outer, n, inner), out.reshape(outer, n, inner)
    mcol = mult[:, None]

    def cols(o: int, c0: int) -> None:
        spec = forward(x3[o, :, c0 : c0 + step].astype(np.float64), 0)
        spec *= mcol
        o3[o, :, c0 : c0 + step] = inverse(spec, 0)

    _blocks(cols, [(o, c0) for o in range(outer) for c0 in range(0, inner, step)], workers)


def _blocks(fn: Any, args: list[tuple], workers: int) -> None:
    """``fn(*a)`` for every ``a``, on ``workers`` threads (scipy.fft releases the GIL; one
    transform of a block gains little from pocketfft's own threads)."""
    if workers <= 1 or len(args) <= 1:
        for a in args:
            fn(*a)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(args))) as pool:
        for f in [pool.submit(fn, *a) for a in args]:
            f.result()
