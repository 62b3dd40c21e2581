"""The numpy backend: jobs on the numba CPU engine (separable passes, direct) and scipy.fft.

Precision follows ``_modes.work_dtype`` (float32 only where the input and the result allow
it). 8/16-bit integer and bool input is read directly by the engine's first pass (no converted
copy); integer and bool results are rounded and saturated once, at the end
(``engine.round_saturate``). NaN/Inf data gets the direct correlation's result for every plan
of a dense kernel (``engine.nonfinite``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import engine
from .._modes import check_input as _check_array
from .._modes import native, resolve_output, work_dtype
from ..job import Job

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
    wd = work_dtype(x.dtype, dtype)
    if x.size == 0:
        return _finish(np.empty(x.shape, dtype=wd), x, dtype, out)
    with engine.threads(nthreads):
        if job.reduction == "hypot":
            return _finish(_hypot(x, job, wd), x, dtype, out)
        if job.method == "direct":  # reads the non-zero taps only: NaN/Inf as scipy.ndimage
            assert job.kernel is not None
            res = engine.direct(
                _work(x, wd),
                job.kernel,
                job.axes,
                job.origins,
                job.modes,
                job.cval,
                out=_target(x, wd, out),
            )
            return _finish(res, x, dtype, out)
        xw = _work(x, wd) if job.method == "fft" else _engine_input(x, wd)
        bad = None
        cval = job.cval
        if job.kernel is not None:  # NaN/Inf as the dense kernel's direct correlation
            xw, cval, bad = engine.nonfinite.split(xw, cval)
        if job.method == "fft":
            assert job.kernel is not None
            res = engine.fft(
                xw, job.kernel, job.axes, job.origins, job.modes, cval, workers=nthreads
            )
        else:
            res = engine.separable(
                xw, job.terms, job.modes, cval, out=_target(x, wd, out), dtype=wd
            )
        if bad is not None:
            assert job.kernel is not None
            engine.nonfinite.patch(res, bad, job.kernel, job.axes, job.origins, job.modes)
        return _finish(res, x, dtype, out)


def _hypot(x: np.ndarray, job: Job, wd: np.dtype) -> np.ndarray:
    """``sqrt(sum_r term_r(x) ** 2)`` by ``hypot`` (no overflow where a square would); NaN
    wherever a term is NaN (``hypot(inf, nan)`` is inf, ``sqrt(inf**2 + nan**2)`` is NaN)."""
    xe = _engine_input(x, wd)
    acc = np.zeros(x.shape, dtype=wd)
    d = np.empty_like(acc)
    nan = None
    for term in job.terms:
        engine.separable(xe, [term], job.modes, job.cval, out=d, dtype=wd)
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


def is_complex(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "c"


def complex_of(dtype: Any) -> np.dtype:
    """The complex dtype a complex result of ``dtype`` data has (float32 -> complex64)."""
    return np.promote_types(np.dtype(dtype), np.complex64)


def real_of(dtype: Any) -> np.dtype:
    """The real dtype of each part of a complex ``dtype`` (complex64 -> float32)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.complex64 else np.dtype(np.float64)


def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Real and imaginary parts (views); ``(x, None)`` for real data."""
    return (x.real, x.imag) if x.dtype.kind == "c" else (x, None)


def join(re: np.ndarray, im: np.ndarray, dtype: Any, out: np.ndarray | None) -> np.ndarray:
    """``re + 1j * im`` as ``dtype``, written into ``out`` if given."""
    res = out if out is not None else np.empty(re.shape, dtype)
    res.real = re
    res.imag = im
    return res
