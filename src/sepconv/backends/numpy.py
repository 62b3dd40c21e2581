"""The numpy backend: jobs on the numba CPU engine (separable passes, direct) and scipy.fft.

Precision follows ``_modes.work_dtype`` (float32 only where the input and the result allow
it). 8/16-bit integer and bool input is read directly by the engine's first pass (no converted
copy); integer and bool results are rounded and saturated once, at the end
(``engine.round_saturate``). NaN/Inf data gets the direct correlation's result for every plan
of a dense kernel (``engine.nonfinite``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .. import engine
from .._modes import check_input as _check_array
from .._modes import complex_of as complex_of  # the protocol's complex dtype rules
from .._modes import is_complex as is_complex
from .._modes import native, resolve_output, work_dtype
from .._modes import real_of as real_of
from ..job import Job, chain, is_box, pass_engine

__all__ = ["SERIAL_WORK", "check_input", "has_nonfinite", "resolve_output", "run"]

#: Multiply-adds below which a filter runs on one thread: waking a second thread costs more
#: than it saves, and on a busy machine a parallel region can wait a whole scheduler slice
#: (milliseconds) for its second core.
SERIAL_WORK = 2**22


def check_input(x: Any) -> np.ndarray:
    """The input as an ndarray of a supported dtype (any byte order)."""
    return _check_array(x)


def has_nonfinite(x: np.ndarray) -> bool:
    """Whether a floating-point array holds NaN or Inf."""
    return x.dtype.kind == "f" and not engine.nonfinite.all_finite(x)


def run(x: np.ndarray, job: Job, dtype: np.dtype, out: np.ndarray | None, workers: Any):
    """Compute ``job`` on ``x``; the result has ``dtype`` (or is ``out``)."""
    nthreads = max(1, min(engine.check_workers(workers), int(x.size * job.macs // SERIAL_WORK)))
    wd = work_dtype(x.dtype, dtype, job.cval)
    if x.size == 0:
        return _finish(np.empty(x.shape, dtype=wd), x, dtype, out)
    with engine.threads(nthreads):
        if job.reduction == "hypot":
            return _finish(_hypot(x, job, wd), x, dtype, out)
        if job.method == "recursive":  # an approximation the caller's tol allowed
            return _finish(_recursive(x, job, wd, out), x, dtype, out)
        if _fixed_point(x, job, dtype):  # 8/16-bit in and out: quantised taps, fused passes
            target = out if _writable_into(out, x) else None
            res = engine.fixed.separable_int(x, job, out=target)
            if out is not None and res is not out:
                np.copyto(out, res, casting="unsafe")
                return out
            return res
        box = _box_term(job)
        if box is not None:  # moving averages: constant-time running sums
            sizes, axes, origins, scale = box
            res = engine.running.box(
                _engine_input(x, wd),
                sizes,
                axes,
                origins,
                [job.modes[a] for a in axes],
                job.cval,
                out=_target(x, wd, out),
                dtype=wd,
            )
            if scale != 1.0:
                res *= wd.type(scale)
            return _finish(res, x, dtype, out)
        if _has_long_pass(job) and not has_nonfinite(x):
            return _finish(_with_fft_passes(x, job, wd, out, nthreads), x, dtype, out)
        if job.method == "direct":  # reads the non-zero taps only: NaN/Inf as scipy.ndimage
            assert job.kernel is not None
            res = engine.direct(_work(x, wd), job, out=_target(x, wd, out))
            return _finish(res, x, dtype, out)
        xw = _work(x, wd) if job.method == "fft" else _engine_input(x, wd)
        bad = None
        cval = job.cval
        if job.kernel is not None:  # NaN/Inf as the dense kernel's direct correlation
            xw, cval, bad = engine.nonfinite.split(xw, cval)
        if job.method == "fft":
            assert job.kernel is not None
            res = engine.fft(xw, replace(job, cval=cval), workers=nthreads)
        else:
            res = engine.separable(xw, replace(job, cval=cval), out=_target(x, wd, out), dtype=wd)
        if bad is not None:
            assert job.kernel is not None
            engine.nonfinite.patch(res, bad, job.kernel, job.axes, job.origins, job.modes)
        return _finish(res, x, dtype, out)


#: The recursive Gaussian runs here (``sepconv.plan.plan_passes`` asks): only this backend.
RECURSIVE = True


def _recursive(x: np.ndarray, job: Job, wd: np.dtype, out: np.ndarray | None) -> np.ndarray:
    """The job's Gaussian passes as IIR filters (``engine.recursive``), in axis order, the
    constant-mode cval carried as for the exact passes."""
    from ..engine import recursive

    ((weight, passes),) = job.terms
    gauss = {a: (sigma, order) for a, sigma, order in job.gaussians}
    cur = _work(x, wd)
    target = _target(x, wd, out)
    bufs: list[np.ndarray] = []
    chained = list(chain(passes, job.cval))
    for i, ((axis, _, _), c) in enumerate(chained):
        if i == len(chained) - 1 and target is not None:
            dst = target
        else:
            if len(bufs) < 2:
                bufs.append(np.empty(x.shape, dtype=wd))
            dst = bufs[i % 2]
        sigma, order = gauss[axis]
        recursive.gaussian_pass(cur, axis, sigma, order, job.modes[axis], c, out=dst)
        cur = dst
    if cur is x or np.may_share_memory(cur, x):
        cur = cur.copy()
    if weight != 1.0:
        cur *= wd.type(weight)
    return cur


def _fixed_point(x: np.ndarray, job: Job, dtype: np.dtype) -> bool:
    """Whether the job runs on the fixed-point engine (``engine.fixed``): 8/16-bit input of
    native byte order and a result of the same dtype, one separable term on the last two axes
    whose quantised arithmetic is within :data:`engine.fixed.MAX_ERROR` LSB."""
    return (
        job.method == "passes"
        and job.reduction == "sum"
        and x.dtype == dtype
        and x.dtype in engine.fixed.DTYPES
        and x.dtype.isnative
        and x.flags.c_contiguous
        and engine.fixed.applies(x, job.terms, job.modes, job.cval)
    )


def _box_term(job: Job) -> tuple[list[int], list[int], list[int], float] | None:
    """``(sizes, axes, origins, scale)`` where the job is one term of constant-weight passes
    (a box: ``uniform_filter``, or a box kernel given to ``correlate``) of which one pass at
    least runs on running sums by :func:`sepconv.job.pass_engine` (constant time per output;
    NaN/Inf as the direct correlation, pass by pass: the same for a box's positive taps);
    None otherwise."""
    if job.method != "passes" or job.reduction != "sum" or len(job.terms) != 1:
        return None
    weight, passes = job.terms[0]
    axes = [a for a, _, _ in passes]
    if not passes or len(set(axes)) != len(axes) or not math.isfinite(weight):
        return None
    if not any(pass_engine(w) == "running" for _, w, _ in passes):
        return None
    scale = float(weight)
    for _, w, _ in passes:
        if not (len(w) == 1 and w[0] > 0) and not is_box(w):
            return None
        scale *= float(w[0]) * len(w)
    order = sorted(range(len(passes)), key=lambda i: axes[i])
    return (
        [len(passes[i][1]) for i in order],
        [axes[i] for i in order],
        [passes[i][2] for i in order],
        scale,
    )


#: Shortest pass run by 1-D FFTs (``engine.fft.fft_pass``) on finite data: measured on 2
#: cores, float32 4096^2, a direct pass of 257 taps takes 0.8-0.9 s, an FFT pass 0.55-0.75 s
#: (the FFT's cost hardly depends on the length; a direct pass's grows with it).
FFT_PASS_MIN = 256


def _has_long_pass(job: Job) -> bool:
    return (
        job.method == "passes"
        and job.reduction == "sum"
        and any(len(w) >= FFT_PASS_MIN for _, passes in job.terms for _, w, _ in passes)
    )


def _with_fft_passes(
    x: np.ndarray, job: Job, wd: np.dtype, out: np.ndarray | None, nthreads: int
) -> np.ndarray:
    """The job's terms pass by pass on finite data, long passes by 1-D FFTs (exact up to
    rounding: float64 transforms), the others on the direct engine."""
    xe = _engine_input(x, wd)
    acc = _target(x, wd, out)
    acc = np.empty(x.shape, dtype=wd) if acc is None else acc
    bufs = [np.empty(x.shape, dtype=wd) for _ in range(2)]
    for r, (weight, passes) in enumerate(job.terms):
        cur = xe
        for i, ((axis, w, origin), c) in enumerate(chain(passes, job.cval)):
            dst = bufs[i % 2]
            if pass_engine(w, mode=job.modes[axis], origin=origin) == "fft":
                engine.fft_pass(cur, axis, w, origin, job.modes[axis], c, dst, nthreads)
            else:
                one = replace(job, terms=((1.0, ((axis, w, origin),)),), cval=c)
                engine.separable(cur, one, out=dst)
            cur = dst
        if r == 0:
            np.multiply(cur, wd.type(weight), out=acc, casting="unsafe")
        else:
            acc += wd.type(weight) * cur.astype(wd, copy=False)
    return acc


def _writable_into(out: np.ndarray | None, x: np.ndarray) -> bool:
    return (
        out is not None
        and out.dtype == x.dtype
        and out.flags.c_contiguous
        and out.flags.writeable
        and not np.may_share_memory(out, x)
    )


def _hypot(x: np.ndarray, job: Job, wd: np.dtype) -> np.ndarray:
    """``sqrt(sum_r term_r(x) ** 2)`` by ``hypot`` (no overflow where a square would); NaN
    wherever a term is NaN (``hypot(inf, nan)`` is inf, ``sqrt(inf**2 + nan**2)`` is NaN)."""
    xe = _engine_input(x, wd)
    acc = np.zeros(x.shape, dtype=wd)
    d = np.empty_like(acc)
    nan = None
    for term in job.terms:
        engine.separable(xe, replace(job, terms=(term,)), out=d, dtype=wd)
        np.hypot(acc, d, out=acc)
        if xe.dtype.kind == "f" or not np.isfinite(job.cval):
            isnan = np.isnan(d)
            nan = isnan if nan is None else nan | isnan
    if nan is not None and nan.any():
        acc[nan] = np.nan
    return acc


def _work(x: np.ndarray, wd: np.dtype) -> np.ndarray:
    """C-contiguous, native-endian working copy in ``wd`` (a view when already so)."""
    return np.ascontiguousarray(x, dtype=wd)


def _engine_input(x: np.ndarray, wd: np.dtype) -> np.ndarray:
    """What the separable engine reads: floats in the work dtype ``wd``; 8/16-bit ints (and
    bool, as uint8) as they are, in native byte order (the first pass converts while reading,
    so no converted copy is made)."""
    if x.dtype.kind == "b":
        return np.ascontiguousarray(x).view(np.uint8)
    if x.dtype.kind in "iu" and x.dtype.itemsize <= 2:
        return np.ascontiguousarray(x, dtype=native(x.dtype))
    return _work(x, wd)


def _target(x: np.ndarray, wd: np.dtype, out: np.ndarray | None) -> np.ndarray | None:
    """The user's output array when the engine can write the result straight into it."""
    if (
        out is not None
        and out.dtype == wd
        and out.flags.c_contiguous
        and not np.may_share_memory(out, x)
    ):
        return out
    return None


def _finish(result: np.ndarray, x: np.ndarray, dtype: np.dtype, out: np.ndarray | None):
    """Round/saturate to an integer (or bool) dtype once, then write into ``out`` or return
    a new array of ``dtype``."""
    if result is out:
        return out
    if dtype.kind in "iub":
        direct = out is not None and out.dtype == dtype and dtype.isnative
        target = out if out is not None and direct else np.empty(x.shape, native(dtype))
        engine.round_saturate(result, target)
        if out is not None and target is not out:
            np.copyto(out, target, casting="unsafe")
            return out
        return target if target.dtype == dtype else target.astype(dtype)
    if out is not None:
        np.copyto(out, result, casting="unsafe")
        return out
    if np.may_share_memory(result, x):
        return np.array(result, dtype=dtype, copy=True)
    return result.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# complex data: filtered as its real and imaginary parts (sepconv.filters assembles them)
# ----------------------------------------------------------------------------------------------


def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Real and imaginary parts (views); ``(x, None)`` for real data."""
    return (x.real, x.imag) if x.dtype.kind == "c" else (x, None)


def join(re: np.ndarray, im: np.ndarray, dtype: Any, out: np.ndarray | None) -> np.ndarray:
    """``re + 1j * im`` as ``dtype``, written into ``out`` if given."""
    res = out if out is not None else np.empty(re.shape, dtype)
    res.real = re
    res.imag = im
    return res
