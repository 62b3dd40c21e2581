"""scipy.ndimage-compatible filters that run any kernel the cheapest exact way.

Same names, signatures, defaults and border modes as ``scipy.ndimage``; ``correlate`` and
``convolve`` add ``method=`` and ``tol=``. Every method computes the mathematically defined
correlation of the padded input (see :mod:`sepconv._modes`), so ``method='auto'`` can change a
result only by float rounding.

Deliberate differences from scipy.ndimage (where scipy hurts users):

* **Integer outputs** are rounded to nearest (half to even) and saturated to the output dtype,
  once, at the end. scipy truncates toward zero and wraps around on overflow.
* **Intermediate passes stay in floating point.** scipy requantizes each pass of a separable
  filter into an integer output array.
* **constant mode is exact for any cval.** scipy pads every 1-D pass of a separable filter with
  ``cval`` (scipy issue 7644); the padded input of a 2-D filter is ``cval`` outside the image,
  so after a first pass the right padding for the next one is ``cval * sum(weights)``, which
  sepconv uses. With ``cval=0`` (the default) both agree.
* **Precision.** float16, float32, bool and 8-bit input with a float16/32 or <= 16-bit
  integer result is computed in float32 (scipy computes in float64); everything else in
  float64, so a float64 or 32/64-bit integer result always gets a float64 computation.
  float16 (which scipy refuses) is returned as float16.
* **Complex** data, weights and ``cval`` follow scipy: correlation conjugates complex weights;
  the result is assembled from real filters of the real and imaginary parts.
* **axes** follow scipy: a kernel's dimensions go to the filtered axes in increasing order,
  ``origin``/``mode`` sequences follow ``axes`` as given. Where scipy raises ``RuntimeError``,
  sepconv raises :class:`sepconv.ArgumentError` (a ``ValueError`` and a ``RuntimeError``).
* **bool** input and output are accepted; a bool result is rounded and saturated to 0/1 like
  an integer one (scipy's cast makes every non-zero value True).

Real inputs: any byte order (converted to native on the way in); NaN/Inf give the direct
correlation's result for every plan of ``correlate`` (:mod:`sepconv.engine.nonfinite`) and
scipy's pass-by-pass result for the named filters; integer results saturate at the exact ends
of their range; passes far longer than their axis are folded exactly (``_modes.fold_pass``).
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np

from . import backends, kernels
from ._modes import (
    normalize_axes,
    normalize_mode,
    normalize_modes,
    normalize_origins,
    work_dtype,
)
from ._validate import (
    ArgumentError,
    as_kernel,
    check_kernel_size,
    check_nonnegative_int,
    check_tol,
    per_axis,
    scalar_of,
)
from .factor import Factorization, kernel_precision
from .job import Job, Pass, dense_job, terms_job
from .plan import make_plan, plan_passes

__all__ = [
    "convolve",
    "convolve1d",
    "correlate",
    "correlate1d",
    "filter",
    "gaussian_filter",
    "gaussian_filter1d",
    "gaussian_gradient_magnitude",
    "gaussian_laplace",
    "laplace",
    "prewitt",
    "sobel",
    "uniform_filter",
    "uniform_filter1d",
]


_DOCS = {
    "input": (
        "input : array_like\n"
        "        Input array (numpy, dask or torch): float16/32/64, complex64/128, any integer\n"
        "        dtype or bool, any byte order."
    ),
    "output": (
        "output : ndarray or dtype, optional\n"
        "        Array to write the result into (may be ``input`` itself), or the dtype of the\n"
        "        returned array. Default: the input's dtype. Integer outputs are rounded to\n"
        "        nearest and saturated."
    ),
    "mode": (
        "mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap', 'grid-mirror',\n"
        "        'grid-constant', 'grid-wrap'} or sequence, optional\n"
        "        How the input is extended beyond its border (per filtered axis if a\n"
        "        sequence). Default 'reflect'."
    ),
    "cval": "cval : float, optional\n        Value beyond the border (mode 'constant'). Default 0.",
    "origin": (
        "origin : int or sequence of int, optional\n"
        "        Shift of the kernel centre (per filtered axis); 0 centres it. Must lie in\n"
        "        ``[-(k // 2), (k - 1) // 2]``."
    ),
    "axes": "axes : int or sequence of int, optional\n        Axes to filter; default all.",
    "method": (
        "method : {'auto', 'direct', 'separable', 'lowrank', 'fft'}, optional\n"
        "        How to compute. 'auto' (default) picks the cheapest exact method from the\n"
        "        cost model; 'separable' requires a rank-1 kernel; 'lowrank' runs the\n"
        "        kernel's separable terms (exact rank, or the smallest rank within ``tol``)."
    ),
    "workers": (
        "workers : int, optional\n"
        "        Threads to use; default all cores (``NUMBA_NUM_THREADS`` caps it)."
    ),
    "gaussian_method": (
        "method : {'auto', 'separable', 'recursive'}, optional\n"
        "        'separable' runs the exact (FIR) passes, each on its cheapest exact engine\n"
        "        (direct, or 1-D FFTs for long passes on finite data). 'recursive' runs an IIR\n"
        "        approximation (constant time whatever sigma; ``sepconv.engine.recursive``)\n"
        "        on finite numpy data; :func:`sepconv.plan.plan_passes` reports its error\n"
        "        bound. 'auto' (default) is 'separable' unless ``tol`` allows the recursive\n"
        "        filter and it is predicted faster."
    ),
    "gaussian_tol": (
        "tol : float, optional\n"
        "        Largest ``|result - exact result| / max|input|`` accepted (a guaranteed\n"
        "        bound, not an estimate). Default: exact to float rounding."
    ),
    "tol": (
        "tol : float, optional\n"
        "        Relative Frobenius error of the kernel allowed to a low-rank plan. Default:\n"
        "        exact to float rounding, so 'auto' uses low rank only when it is exact."
    ),
}


_DOCS["boundary"] = "\n    ".join(_DOCS[k] for k in ("output", "mode", "cval"))


def _docfill(fn: Any) -> Any:
    if fn.__doc__:
        fn.__doc__ = fn.__doc__ % _DOCS
    return fn


# ----------------------------------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------------------------------


def _input(x: Any) -> tuple[ModuleType, Any]:
    """The backend for ``x`` (by its array library) and the checked input."""
    backend = backends.for_type(type(x))
    arr = backend.check_input(x)
    if arr.ndim == 0:
        raise ValueError("input must have at least one dimension, got a 0-d array")
    return backend, arr


def _cval(cval: Any) -> float | complex:
    """A real number, or a complex one (for complex data or weights)."""
    cval = scalar_of(cval)
    if isinstance(cval, (bool, np.bool_)) or not isinstance(cval, (int, float, complex, np.number)):
        raise TypeError(f"cval must be a number, got {cval!r}")
    if isinstance(cval, (complex, np.complexfloating)):
        return complex(cval)
    return float(cval)


def _axis(axis: Any, ndim: int) -> int:
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {axis!r}") from None
    return normalize_axes(a, ndim)[0]


def _weights1d(weights: Any) -> np.ndarray:
    w = as_kernel(weights, "weights", complex_ok=True)
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D for a 1-D filter, got shape {w.shape}")
    return w


def _mode_map(mode: Any, axes: Sequence[int]) -> dict[int, str]:
    return dict(zip(axes, normalize_modes(mode, len(axes)), strict=True))


def _run_terms(backend, x, ax, terms, output, mode, cval, workers, /, *, then=None, **kw) -> Any:
    """The tail every pass-built filter shares: modes, ``cval`` and ``output`` checked (in
    that order), the terms made a job (``kw``: :func:`sepconv.job.terms_job`'s options),
    ``then(job)`` applied if given, and the job run."""
    modes = _mode_map(mode, ax)
    c = _cval(cval)
    dtype, out = backend.resolve_output(output, x)
    # no balancing where a recursive Gaussian may replace the passes (it ignores their taps)
    if then is not None:
        kw.setdefault("balance", False)
    job = terms_job(terms, modes, c, **kw)
    return _run(backend, x, job if then is None else then(job), dtype, out, workers)


def _run(
    backend: ModuleType,
    x: Any,
    job: Job,
    dtype: Any,
    out: Any,
    workers: Any,
    *,
    imag: Job | None = None,
    default_output: bool = False,
) -> Any:
    """Hand the job to the backend (``dtype``, ``out``: the resolved ``output`` argument).

    Complex data, a complex kernel (``imag``: the job of its imaginary part) or a complex
    ``cval`` run as real jobs on the real and imaginary parts, combined as scipy.ndimage does
    (:func:`_run_complex`). Passes far longer than their axis are folded onto the border
    extension first (``Job.folded``: a huge sigma or size costs what the data's size allows);
    where the data holds NaN/Inf (or may: dask), only passes whose taps are nonzero and of one
    sign (Gaussians, boxes), as folded weights would otherwise turn ``inf * w1 - inf * w2``
    (NaN) into an infinity.
    """
    if backend.is_complex(x.dtype) or imag is not None:
        return _run_complex(backend, x, job, imag, dtype, out, workers, default_output)
    if job.cval_imag:
        raise ValueError(
            f"cval must be real for real input and weights, got "
            f"{complex(job.cval, job.cval_imag)!r} (Cannot provide a complex-valued cval when "
            "the input is real)"
        )
    if job.method == "passes" and job.kernel is None:
        folded = job.folded(x.shape)
        if folded is not job:  # NaN/Inf data (or lazy data that may hold them): one-sign taps
            job = (
                folded if not backend.has_nonfinite(x) else _fold_nonfinite(backend, x, job, folded)
            )
    return backend.run(x, job, dtype, out, workers)


def _fold_nonfinite(backend: ModuleType, x: Any, job: Job, folded: Job) -> Job:
    """``job`` folded for data that may hold NaN/Inf: passes of one-sign taps only. Where that
    leaves a pass of mixed signs far longer than its axis (a derivative of a huge sigma) and
    the backend only guessed (lazy dask data), the data's finiteness is computed once
    (``has_nonfinite_exact``: one read) and finite data get ``folded``, every pass folded."""
    safe = job.folded(x.shape, nonfinite=True)

    def lengths(j: Job) -> list[int]:
        return [len(w) for _, passes in j.terms for _, w, _ in passes]

    exact = getattr(backend, "has_nonfinite_exact", None)
    if lengths(safe) != lengths(folded) and exact is not None and not exact(x):
        return folded
    return safe


def _run_complex(backend, x, job, imag, dtype, out, workers, default_output):
    """``(x_re + i x_im) (*) (K_re + i K_im)`` from real correlations of the parts:
    ``re = x_re * K_re - x_im * K_im``, ``im = x_re * K_im + x_im * K_re``, each part with the
    matching part of ``cval`` (scipy.ndimage's rule). A Gaussian gradient magnitude of complex
    data is ``sqrt(sum_i d_i ** 2)`` of the complex derivatives, as scipy computes it."""
    if not backend.is_complex(dtype):
        if out is not None:
            raise ArgumentError(
                f"output must have complex dtype for a complex result, got {dtype} (output "
                "must have complex dtype)"
            )
        if not default_output:
            warnings.warn("promoting specified output dtype to complex", UserWarning, stacklevel=3)
        dtype = backend.complex_of(dtype)
    part = backend.real_of(dtype)
    xr, xi = backend.split(x)
    c = complex(job.cval, job.cval_imag)
    if xi is None and c.imag != 0:
        raise ValueError(
            f"cval must be real for real input, got {c!r} (Cannot provide a complex-valued cval "
            "when the input is real)"
        )

    def real(xp: Any, j: Job, cv: float) -> Any:
        return _run(backend, xp, replace(j, cval=cv, cval_imag=0.0), part, None, workers)

    def parts(j: Job, ji: Job | None) -> tuple[Any, Any]:
        if xi is None:
            assert ji is not None
            return real(xr, j, c.real), real(xr, ji, c.real)
        if ji is None:
            return real(xr, j, c.real), real(xi, j, c.imag)
        return (
            real(xr, j, c.real) - real(xi, ji, c.imag),
            real(xr, ji, c.real) + real(xi, j, c.imag),
        )

    if job.reduction == "hypot":  # scipy: sqrt(sum d_i * d_i) of the complex derivatives
        acc = None
        for term in job.terms:
            re, im = parts(replace(job, terms=(term,), reduction="sum"), None)
            d = backend.join(re, im, dtype, None)
            acc = d * d if acc is None else acc + d * d
        acc = acc.sqrt() if hasattr(acc, "sqrt") else np.sqrt(acc)
        return backend.join(acc.real, acc.imag, dtype, out)
    re, im = parts(job, imag)
    return backend.join(re, im, dtype, out)


# ----------------------------------------------------------------------------------------------
# 1-D filters
# ----------------------------------------------------------------------------------------------


@_docfill
def correlate1d(
    input: Any,
    weights: Any,
    axis: int = -1,
    output: Any = None,
    mode: str = "reflect",
    cval: float = 0.0,
    origin: int = 0,
    *,
    workers: int | None = None,
) -> np.ndarray:
    """One-dimensional correlation along ``axis`` (``scipy.ndimage.correlate1d``).

    Parameters
    ----------
    %(input)s
    weights : array_like
        1-D correlation weights (any length, even included).
    axis : int, optional
        Axis to filter. Default -1.
    %(boundary)s
    %(origin)s

    Returns
    -------
    ndarray
        ``output[i] = sum_j weights[j] * padded[i + j - (len(weights) // 2 + origin)]``.

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> sepconv.correlate1d(np.array([2, 8, 0, 4, 1, 9, 9, 0]), [1, 3])
    array([ 8, 26,  8, 12,  7, 28, 36,  9])
    """
    backend, x = _input(input)
    w = _weights1d(weights)
    ax = _axis(axis, x.ndim)
    m = {ax: normalize_mode(mode)}
    (o,) = normalize_origins(origin, [len(w)])
    c = _cval(cval)
    dtype, out = backend.resolve_output(output, x)
    w = np.conj(w)  # complex weights are conjugated, as np.correlate does
    job = terms_job([(1.0, [(ax, w.real, o)])], m, c)
    imag = terms_job([(1.0, [(ax, w.imag, o)])], m, c) if np.iscomplexobj(w) else None
    return _run(backend, x, job, dtype, out, workers, imag=imag, default_output=output is None)


@_docfill
def convolve1d(
    input: Any,
    weights: Any,
    axis: int = -1,
    output: Any = None,
    mode: str = "reflect",
    cval: float = 0.0,
    origin: int = 0,
    *,
    workers: int | None = None,
) -> np.ndarray:
    """One-dimensional convolution along ``axis`` (``scipy.ndimage.convolve1d``).

    Correlation with the reversed weights; the origin is mirrored as scipy does.

    Parameters
    ----------
    %(input)s
    weights : array_like
        1-D convolution weights.
    axis : int, optional
        Axis to filter. Default -1.
    %(boundary)s
    %(origin)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> sepconv.convolve1d(np.array([2, 8, 0, 4, 1, 9, 9, 0]), [1, 3])
    array([14, 24,  4, 13, 12, 36, 27,  0])
    """
    w = _weights1d(weights)
    (o,) = normalize_origins(origin, [len(w)])
    flipped = np.conj(w[::-1])  # correlate1d conjugates complex weights back
    return correlate1d(
        input, flipped, axis, output, mode, cval, _flip_origin(o, len(w)), workers=workers
    )


def _flip_origin(origin: int, k: int) -> int:
    return -origin - (0 if k % 2 else 1)


@_docfill
def uniform_filter1d(
    input: Any,
    size: int,
    axis: int = -1,
    output: Any = None,
    mode: str = "reflect",
    cval: float = 0.0,
    origin: int = 0,
    *,
    workers: int | None = None,
) -> np.ndarray:
    """Moving average of ``size`` samples along ``axis`` (``scipy.ndimage.uniform_filter1d``).

    Parameters
    ----------
    %(input)s
    size : int
        Length of the average (>= 1).
    axis : int, optional
        Axis to filter. Default -1.
    %(boundary)s
    %(origin)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> sepconv.uniform_filter1d(np.array([2., 8, 0, 4, 1, 9, 9, 0]), 3)
    array([4.        , 3.33333333, 4.        , 1.66666667, 4.66666667, 6.33333333,
           6.        , 3.        ])
    """
    size = check_nonnegative_int(size, "size")
    if size < 1:
        raise ArgumentError(f"size must be an integer >= 1, got {size} (incorrect filter size)")
    check_kernel_size([size], f"size={size!r}")
    return correlate1d(
        input, np.full(size, 1.0 / size), axis, output, mode, cval, origin, workers=workers
    )


@_docfill
def gaussian_filter1d(
    input: Any,
    sigma: float,
    axis: int = -1,
    order: int = 0,
    output: Any = None,
    mode: str = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    *,
    radius: int | None = None,
    workers: int | None = None,
    method: str = "auto",
    tol: float | None = None,
) -> np.ndarray:
    """1-D Gaussian filter or derivative (``scipy.ndimage.gaussian_filter1d``).

    Parameters
    ----------
    %(input)s
    sigma : float
        Standard deviation of the Gaussian (>= 0).
    axis : int, optional
        Axis to filter. Default -1.
    order : int, optional
        Derivative order (0 smooths). Default 0.
    %(boundary)s
    truncate : float, optional
        Radius in standard deviations (``radius = int(truncate * sigma + 0.5)``). Default 4.
    radius : int, optional
        Explicit kernel radius; overrides ``truncate``.
    %(gaussian_method)s
    %(gaussian_tol)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> sepconv.gaussian_filter1d(np.array([1.0, 2, 3, 4, 5]), 1).round(4)
    array([1.427 , 2.0678, 3.    , 3.9322, 4.573 ])
    """
    w = kernels.gaussian1d(sigma, order=order, truncate=truncate, radius=radius)
    if method == "auto" and tol is None:
        return correlate1d(input, w, axis, output, mode, cval, 0, workers=workers)
    _, x = _input(input)
    a = _axis(axis, x.ndim)
    return gaussian_filter(
        x, sigma, order, output, mode, cval, truncate,
        radius=radius, axes=(a,), workers=workers, method=method, tol=tol,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# N-D filters built from passes
# ----------------------------------------------------------------------------------------------


@_docfill
def gaussian_filter(
    input: Any,
    sigma: float | Sequence[float],
    order: int | Sequence[int] = 0,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    *,
    radius: int | Sequence[int] | None = None,
    axes: int | Sequence[int] | None = None,
    workers: int | None = None,
    method: str = "auto",
    tol: float | None = None,
) -> np.ndarray:
    """Multidimensional Gaussian filter (``scipy.ndimage.gaussian_filter``), as 1-D passes.

    Parameters
    ----------
    %(input)s
    sigma : float or sequence of float
        Standard deviation per filtered axis; axes with ``sigma <= 1e-15`` are skipped.
    order : int or sequence of int, optional
        Derivative order per filtered axis. Default 0.
    %(boundary)s
    truncate : float, optional
        Radius in standard deviations. Default 4.
    radius : int or sequence of int, optional
        Explicit radius per axis; overrides ``truncate``.
    %(axes)s
    %(gaussian_method)s
    %(gaussian_tol)s

    Notes
    -----
    Cost: ``sum(2 * radius + 1)`` multiply-adds per element (one pass per axis) instead of
    ``prod(2 * radius + 1)``; passes of 256 taps or more (sigma >= 32) run by 1-D FFTs on
    finite data (``O(log n)`` per element, exact to rounding); with ``tol`` (or
    ``method='recursive'``) a recursive Gaussian costs the same for any sigma.

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> x = np.zeros((5, 5)); x[2, 2] = 1
    >>> sepconv.gaussian_filter(x, 1)[2].round(4)
    array([0.0233, 0.0966, 0.1592, 0.0966, 0.0233])
    """
    backend, x = _input(input)
    ax = normalize_axes(axes, x.ndim)
    terms = [(1.0, _gaussian_passes(ax, sigma, order, truncate, radius))]
    if method == "auto" and tol is None:
        return _run_terms(backend, x, ax, terms, output, mode, cval, workers)
    n = len(ax)
    pairs = zip(per_axis(sigma, n, "sigma"), per_axis(order, n, "order"), strict=True)
    gauss = dict(zip(ax, pairs, strict=True))

    def planned(job: Job) -> Job:  # exact passes, or the recursive filter within ``tol``
        return _gaussian_method(backend, x, job, gauss, method, check_tol(tol))

    return _run_terms(backend, x, ax, terms, output, mode, cval, workers, then=planned)


def _any_nonfinite(backend: ModuleType, x: Any) -> bool:
    """Whether real or complex data holds NaN or Inf (complex: either part)."""
    if backend.is_complex(x.dtype):
        re, im = backend.split(x)
        return bool(backend.has_nonfinite(re) or (im is not None and backend.has_nonfinite(im)))
    return bool(backend.has_nonfinite(x))


def _gaussian_method(backend, x, job: Job, gauss: dict, method: str, tol: float | None) -> Job:
    """The job as :func:`sepconv.plan.plan_passes` plans it: unchanged (exact passes) or
    ``method='recursive'`` with each pass's ``(axis, sigma, order)``."""
    ((_, passes),) = job.terms
    gaussians = [(float(gauss[a][0]), int(gauss[a][1])) for a, _, _ in passes]
    finite = math.isfinite(job.cval) and not _any_nonfinite(backend, x)
    p = plan_passes(
        passes,
        x.shape,
        method=method,
        tol=tol,
        gaussians=gaussians,
        finite=finite,
        recursive_ok=getattr(backend, "RECURSIVE", False),
        modes=job.modes,
    )
    if p.method != "recursive":
        return job
    if tol is not None and p.bound > tol:
        raise ValueError(
            f"method='recursive' has error bound {p.bound:.3g} x max|input| here, more than "
            f"tol={tol:g}; use method='auto' (exact unless the bound is within tol)"
        )
    found = tuple((a, s, o) for (a, _, _), (s, o) in zip(passes, gaussians, strict=True))
    return replace(job, method="recursive", gaussians=found)


def _gaussian_passes(axes, sigma, order, truncate, radius) -> list[Pass]:
    n = len(axes)
    sigmas = per_axis(sigma, n, "sigma")
    orders = per_axis(order, n, "order")
    radii = per_axis(radius, n, "radius")
    passes: list[Pass] = []
    weights = [
        kernels.gaussian1d(s, order=o, truncate=truncate, radius=r)
        if not (isinstance(s, (int, float, np.number)) and 0 <= s <= 1e-15)
        else None
        for s, o, r in zip(sigmas, orders, radii, strict=True)
    ]
    for a, w in zip(axes, weights, strict=True):
        if w is not None:
            passes.append((a, w, 0))
    return passes


@_docfill
def uniform_filter(
    input: Any,
    size: int | Sequence[int] = 3,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    origin: int | Sequence[int] = 0,
    *,
    axes: int | Sequence[int] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Multidimensional moving average (``scipy.ndimage.uniform_filter``), as 1-D passes.

    Parameters
    ----------
    %(input)s
    size : int or sequence of int, optional
        Box size per filtered axis. Default 3.
    %(boundary)s
    %(origin)s
    %(axes)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> sepconv.uniform_filter(np.arange(9.0).reshape(3, 3), 3)
    array([[1.33333333, 2.        , 2.66666667],
           [3.33333333, 4.        , 4.66666667],
           [5.33333333, 6.        , 6.66666667]])
    """
    backend, x = _input(input)
    ax = normalize_axes(axes, x.ndim)
    # size 0 along an axis, as 1, leaves it alone (scipy's rule)
    sizes = [check_nonnegative_int(s, "size") for s in per_axis(size, len(ax), "size")]
    for s in sizes:
        check_kernel_size([s], f"size={size!r}")
    sizes = [max(s, 1) for s in sizes]
    # an axis of size 1 is not filtered, so its origin is not read (scipy's rule)
    given = per_axis(origin, len(ax), "origin")
    read = [o if n > 1 else 0 for o, n in zip(given, sizes, strict=True)]
    origins = normalize_origins(read, sizes)
    ((_, vectors),) = kernels.KERNEL_TERMS[kernels.box](sizes)
    passes = list(zip(ax, vectors, origins, strict=True))
    return _run_terms(backend, x, ax, [(1.0, passes)], output, mode, cval, workers)


def _derivative_filter(builder: Any, summary: str, example: str) -> Any:
    """``sobel``/``prewitt``: the kernel's own separable term (``kernels.KERNEL_TERMS``),
    derivative along ``axis`` and smoothing along every other axis."""

    def fn(
        input: Any,
        axis: int = -1,
        output: Any = None,
        mode: str = "reflect",
        cval: float = 0.0,
        *,
        workers: int | None = None,
    ) -> np.ndarray:
        backend, x = _input(input)
        ax = _axis(axis, x.ndim)
        all_axes = tuple(range(x.ndim))
        ((_, vectors),) = kernels.KERNEL_TERMS[builder](ax, ndim=x.ndim)
        passes = [(a, v, 0) for a, v in zip(all_axes, vectors, strict=True)]
        return _run_terms(backend, x, all_axes, [(1.0, passes)], output, mode, cval, workers)

    fn.__name__ = fn.__qualname__ = builder.__name__
    fn.__doc__ = f"""{summary}

    Parameters
    ----------
    %(input)s
    axis : int, optional
        Axis of the derivative. Default -1.
    %(boundary)s

    Examples
    --------
    >>> import numpy as np, sepconv
    {example}
    """
    return _docfill(fn)


sobel = _derivative_filter(
    kernels.sobel,
    "Sobel derivative along ``axis``, smoothing [1, 2, 1] on the others (``scipy.ndimage.sobel``).",
    """>>> sepconv.sobel(np.arange(9.0).reshape(3, 3), axis=1)
    array([[4., 8., 4.],
           [4., 8., 4.],
           [4., 8., 4.]])""",
)
prewitt = _derivative_filter(
    kernels.prewitt,
    "Prewitt derivative along ``axis``, smoothing [1, 1, 1] on the others (``ndimage.prewitt``).",
    """>>> sepconv.prewitt(np.arange(9.0).reshape(3, 3), axis=0)[1]
    array([18., 18., 18.])""",
)


@_docfill
def laplace(
    input: Any,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    *,
    axes: int | Sequence[int] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Discrete Laplacian: the sum over axes of [1, -2, 1] (``scipy.ndimage.laplace``).

    Parameters
    ----------
    %(input)s
    %(boundary)s
    %(axes)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> x = np.zeros((3, 3)); x[1, 1] = 1
    >>> sepconv.laplace(x, mode="constant")
    array([[ 0.,  1.,  0.],
           [ 1., -4.,  1.],
           [ 0.,  1.,  0.]])
    """
    backend, x = _input(input)
    ax = normalize_axes(axes, x.ndim)
    # the kernel's own terms: [1, -2, 1] along one axis, the centred delta (dropped) elsewhere
    named = kernels.KERNEL_TERMS[kernels.laplace](ndim=len(ax))
    terms = [(w, [(a, v, 0) for a, v in zip(ax, vs, strict=True)]) for w, vs in named]
    return _run_terms(backend, x, ax, terms, output, mode, cval, workers, drop_deltas=True)


def _gaussian_derivative_terms(sigma, axes, truncate, radius, order_of) -> list[tuple]:
    """One term per filtered axis ``i``: Gaussian derivatives of order ``order_of(i, j)``."""
    n = len(axes)
    return [
        (1.0, _gaussian_passes(axes, sigma, [order_of(i, j) for j in range(n)], truncate, radius))
        for i in range(n)
    ]


def _gaussian_derivative_filter(
    name: str, order_of: Any, reduction: str, summary: str, example: str
) -> Any:
    """``gaussian_laplace``/``gaussian_gradient_magnitude``: one term per filtered axis ``i``,
    Gaussian derivatives of order ``order_of(i, j)`` along axis ``j``; the terms summed, or
    combined as the root of the sum of their squares (``reduction='hypot'``)."""

    def fn(
        input: Any,
        sigma: float | Sequence[float],
        output: Any = None,
        mode: str | Sequence[str] = "reflect",
        cval: float = 0.0,
        *,
        axes: int | Sequence[int] | None = None,
        truncate: float = 4.0,
        radius: int | Sequence[int] | None = None,
        workers: int | None = None,
    ) -> np.ndarray:
        backend, x = _input(input)
        ax = normalize_axes(axes, x.ndim)
        terms = _gaussian_derivative_terms(sigma, ax, truncate, radius, order_of)
        return _run_terms(backend, x, ax, terms, output, mode, cval, workers, reduction=reduction)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"""{summary}

    Parameters
    ----------
    %(input)s
    sigma : float or sequence of float
        Standard deviation per filtered axis.
    %(boundary)s
    %(axes)s
    truncate, radius
        As for :func:`gaussian_filter`.

    Examples
    --------
    >>> import numpy as np, sepconv
    {example}
    """
    return _docfill(fn)


gaussian_laplace = _gaussian_derivative_filter(
    "gaussian_laplace",
    lambda i, j: 2 * (i == j),
    "sum",
    "Laplacian of Gaussian (``scipy.ndimage.gaussian_laplace``): one term per axis.",
    """>>> x = np.zeros((9, 9)); x[4, 4] = 1
    >>> float(sepconv.gaussian_laplace(x, 1.0)[4, 4].round(4))
    -0.3183""",
)
gaussian_gradient_magnitude = _gaussian_derivative_filter(
    "gaussian_gradient_magnitude",
    lambda i, j: int(i == j),
    "hypot",
    """Gradient magnitude with Gaussian derivatives (``ndimage.gaussian_gradient_magnitude``).

    ``sqrt(sum_i d_i ** 2)`` of the derivatives along each filtered axis, by ``hypot`` for
    real data (no overflow where a square would).""",
    """>>> x = np.tile(np.arange(6.0), (6, 1))
    >>> float(sepconv.gaussian_gradient_magnitude(x, 1.0)[3, 3].round(6))
    1.0""",
)


# ----------------------------------------------------------------------------------------------
# N-D correlation with any kernel
# ----------------------------------------------------------------------------------------------


#: Largest named kernel (elements) whose dense form is built for NaN/Inf handling; beyond it the
#: separable passes define the result for non-finite data too (NaN reaches every output whose
#: passes read it, zero taps of a 1-D factor included, as scipy's separable filters do).
_DENSE_FOR_NONFINITE = 2**22  # elements


def _correlate_terms(backend, x, named, output, mode, cval, origin, axes, method, workers):
    """``correlate`` with a kernel given as its separable terms (``kernels.spec_terms``)."""
    ax = normalize_axes(axes, x.ndim)
    shape = tuple(len(v) for v in named[0][1])
    if len(shape) != len(ax):
        raise ValueError(
            f"kernel must have one dimension per filtered axis: got a {len(shape)}-D kernel of "
            f"shape {shape} for {len(ax)} axes {ax} of a {x.ndim}-D input"
        )
    if method == "separable" and len(named) > 1:
        raise ValueError(
            f"method='separable' needs a separable kernel, but this {shape} kernel is a sum of "
            f"{len(named)} separable terms; use method='lowrank' or 'auto'"
        )
    origins = normalize_origins(origin, shape)
    terms = [(w, list(zip(ax, vs, origins, strict=True))) for w, vs in named]
    # NaN/Inf as the dense kernel's direct correlation, where that kernel is small enough to
    # build; beyond, the passes define the result for non-finite data too
    K = kernels._dense(named) if math.prod(shape) <= _DENSE_FOR_NONFINITE else None
    return _run_terms(
        backend, x, ax, terms, output, mode, cval, workers,
        kernel=K, axes=ax, origins=origins, drop_deltas=True,
    )  # fmt: skip


def _flip_factorization(f: Factorization) -> Factorization:
    rev = (slice(None, None, -1),) * f.ndim
    return replace(
        f,
        factors=tuple(tuple(v[::-1].copy() for v in term) for term in f.factors),
        kernel=f.kernel[rev].copy(),
        weights=f.weights.copy(),
    )


@_docfill
def correlate(
    input: Any,
    weights: Any,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    origin: int | Sequence[int] = 0,
    *,
    axes: int | Sequence[int] | None = None,
    method: str = "auto",
    tol: float | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """N-D correlation with any kernel, run the cheapest exact way (``ndimage.correlate``).

    Parameters
    ----------
    %(input)s
    weights : array_like or Factorization
        Kernel with one axis per filtered axis, or a :class:`~sepconv.Factorization`
        (run as its terms by 'auto', 'separable' and 'lowrank'; an approximate one, such as
        ``separate(K, rank=2)``, always so by 'auto'; 'direct' and 'fft' run the kernel it
        factorizes, ``f.kernel``).
    %(boundary)s
    %(origin)s
    %(axes)s
    %(method)s
    %(tol)s

    Returns
    -------
    ndarray
        The correlation of the padded input with ``weights``.

    Notes
    -----
    A dense kernel that is separable (or an exact sum of ``r`` separable terms) runs as 1-D
    passes: ``r * sum(k)`` multiply-adds per element instead of ``prod(k)``. See
    :func:`sepconv.plan.make_plan` for the choice.

    As in scipy.ndimage, the kernel's dimensions go to the filtered axes in increasing order,
    while ``origin[i]`` and ``mode[i]`` apply to ``axes[i]`` in the order given. Complex
    weights are conjugated (as ``np.correlate`` does).

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> K = np.outer([1, 4, 6, 4, 1], [1, 2, 1]) / 64.0   # dense, secretly separable
    >>> x = np.random.default_rng(0).random((64, 64))
    >>> from scipy import ndimage
    >>> bool(np.allclose(sepconv.correlate(x, K), ndimage.correlate(x, K), atol=1e-14))
    True
    """
    backend, x = _input(input)
    given_axes = normalize_axes(axes, x.ndim)
    given = weights if isinstance(weights, Factorization) else None
    K = given.kernel if given is not None else as_kernel(weights, "weights", complex_ok=True)
    if K.ndim != len(given_axes):
        raise ArgumentError(
            f"weights must have one dimension per filtered axis: got a {K.ndim}-D kernel of "
            f"shape {K.shape} for {len(given_axes)} axes {given_axes} of a {x.ndim}-D input "
            f"(weights.ndim ({K.ndim}) must match len(axes) ({len(given_axes)}))"
        )
    # scipy's axes rule: the kernel's dimensions follow the axes in increasing order, while
    # origin and mode sequences follow ``axes`` as given
    ax = tuple(sorted(given_axes))
    lengths = [K.shape[ax.index(a)] for a in given_axes]
    by_axis = dict(zip(given_axes, normalize_origins(origin, lengths), strict=True))
    origins = [by_axis[a] for a in ax]
    modes = _mode_map(mode, given_axes)
    c = _cval(cval)
    tol = check_tol(tol)
    dtype, out = backend.resolve_output(output, x)
    kprec: Any = given.precision if given is not None else None
    if given is None:  # a complex kernel's parts have the precision of its real dtype
        kprec = kernel_precision(np.asarray(weights).real)
    plan_args = dict(
        data_shape=[x.shape[a] for a in ax],
        method=method,
        tol=tol,
        size=math.prod(x.shape),
        precision=_coarser(kprec, _work_name(x.dtype, dtype)),
        device=_device(backend, x),
    )
    recheck = None
    if tol is None and given is None:
        recheck = _integer_result_check(x.dtype, dtype, c)
    if np.iscomplexobj(K):  # conjugated, as np.correlate does; each part planned on its own
        Kc = np.conj(K)
        job = _planned_job(Kc.real, ax, origins, modes, c, plan_args, recheck)
        imag = _planned_job(Kc.imag, ax, origins, modes, c, plan_args, recheck)
        return _run(backend, x, job, dtype, out, workers, imag=imag, default_output=output is None)
    kern = given if given is not None else K
    job = _planned_job(kern, ax, origins, modes, c, plan_args, recheck)
    return _run(backend, x, job, dtype, out, workers, default_output=output is None)


def _device(backend: Any, x: Any) -> str:
    """Whose time model plans the filter: the backend's ``device_kind(x)`` (``'cuda'`` for
    GPU arrays), ``'cpu'`` for backends without one."""
    kind = getattr(backend, "device_kind", None)
    return "cpu" if kind is None else str(kind(x))


def _planned_job(kernel, ax, origins, modes, c, plan_args, recheck=None) -> Job:
    """The job ``make_plan`` chooses for a real kernel (or Factorization). With ``recheck``
    (an integer result: the largest ``|input|`` or ``|cval|`` the data can hold, and the
    computation's precision), a factorization exact only at the kernel's coarser precision
    is kept where it moves no output by more than :data:`INTEGER_SLACK` of a unit, and the
    kernel is planned again at the computation's precision otherwise."""
    plan = make_plan(kernel, **plan_args)
    f = plan.factorization
    if recheck is not None and f is not None and np.dtype(plan_args["precision"]) != recheck[1]:
        span, work = recheck
        if f.error_bound * span > INTEGER_SLACK:
            plan = make_plan(kernel, **{**plan_args, "precision": work})
    K = kernel.kernel if isinstance(kernel, Factorization) else kernel
    if plan.factorization is None:
        return dense_job(K, ax, origins, modes, c, plan.method)
    f = plan.factorization
    terms = [
        (float(wt), list(zip(ax, vecs, origins, strict=True)))
        for wt, vecs in zip(f.weights, f.factors, strict=True)
    ]
    if f.rank == 1 and f.exact and all(np.all(v != 0) for v in f.factors[0]):
        # one term without zero taps reads NaN/Inf exactly as the dense kernel does (every
        # tap of the kernel is a product of taps of the passes, with the sign of that
        # product): no patching needed, nor the check for non-finite data
        return terms_job(terms, modes, c)
    return terms_job(terms, modes, c, kernel=K, axes=ax, origins=origins)


def _work_name(data: Any, out: Any) -> str:
    """'float32' or 'float64': the precision the filter computes in (numpy or torch dtypes)."""
    dts = []
    for d in (data, out):
        if isinstance(d, np.dtype):  # numpy: no detour through the name (slow)
            dts.append(d)
            continue
        name = str(d).removeprefix("torch.")
        dts.append(np.dtype("float32" if name in ("float16", "bfloat16") else name))
    return work_dtype(dts[0], dts[1]).name


#: How far (in units of an integer result) a factorization exact only at a float32 kernel's
#: rounding may move an output before the kernel is planned again at the computation's
#: precision (the fixed-point engine's bound is of the same order).
INTEGER_SLACK = 0.01


def _integer_result_check(
    data: Any, out: Any, cval: float | complex
) -> tuple[float, np.dtype] | None:
    """For an integer or bool result: the largest ``|value|`` the input dtype can hold (or
    ``|cval|``; infinite for float input) and the computation's precision; else None.

    An integer result is rounded to whole units, and a fit exact only to a float32 kernel's
    rounding moves large sums by whole units: a rank-2 CP fit, 3.3e-7 off, of an
    integer-valued float32 4x2x5 kernel put 2990 of 64^3 uint16 outputs 1-2 units from
    scipy's. A float32 Gaussian's rank-1 fit moves a uint16 result by ~0.007 and is kept."""
    try:
        if _as_np_dtype(out).kind not in "iub":
            return None
        dt = _as_np_dtype(data)
    except TypeError:  # bfloat16
        return None
    if dt.kind in "iu":
        info = np.iinfo(dt)
        span = float(max(-int(info.min), int(info.max)))
    else:
        span = 1.0 if dt.kind == "b" else math.inf
    return max(span, abs(cval)), np.dtype(_work_name(data, out))


def _as_np_dtype(d: Any) -> np.dtype:
    """A numpy dtype as it is; a torch dtype by its name (TypeError for bfloat16)."""
    return d if isinstance(d, np.dtype) else np.dtype(str(d).removeprefix("torch."))


def _coarser(a: Any, b: Any) -> np.dtype:
    """The coarser of two float precisions: a kernel's rank is judged at the rounding of the
    computation when that is coarser than the kernel's own (a float64 kernel on float32 data
    is separable when its other terms are below float32 rounding)."""
    da, db = np.dtype(a), np.dtype(b)
    return da if np.finfo(da).eps >= np.finfo(db).eps else db


@_docfill
def convolve(
    input: Any,
    weights: Any,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    origin: int | Sequence[int] = 0,
    *,
    axes: int | Sequence[int] | None = None,
    method: str = "auto",
    tol: float | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """N-D convolution: correlation with the flipped kernel (``scipy.ndimage.convolve``).

    Parameters
    ----------
    %(input)s
    weights : array_like or Factorization
        Kernel with one axis per filtered axis.
    %(boundary)s
    %(origin)s
    %(axes)s
    %(method)s
    %(tol)s

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> x = np.zeros((3, 3)); x[1, 1] = 1
    >>> sepconv.convolve(x, np.arange(9.0).reshape(3, 3), mode="constant")
    array([[0., 1., 2.],
           [3., 4., 5.],
           [6., 7., 8.]])
    """
    if isinstance(weights, Factorization):
        flipped: Any = _flip_factorization(weights)
        shape = weights.shape
    else:
        K = as_kernel(weights, "weights", complex_ok=True)
        # flip the kernel as given (its dtype sets the precision its rank is judged at);
        # complex weights are pre-conjugated, as correlate conjugates them back
        flipped = np.asarray(weights)[(slice(None, None, -1),) * K.ndim]
        if np.iscomplexobj(flipped):
            flipped = np.conj(flipped)
        shape = K.shape
    # origins follow ``axes`` as given, kernel dimensions the sorted axes (scipy's rule): the
    # kernel length that origin i refers to is that of axes[i]'s rank among the sorted axes
    lengths = list(shape)
    ndim = getattr(input, "ndim", None)
    if ndim is None:
        ndim = np.ndim(input)
    if ndim:
        given_axes = normalize_axes(axes, ndim)
        if len(given_axes) == len(shape):
            rank = sorted(given_axes)
            lengths = [shape[rank.index(a)] for a in given_axes]
    origins = normalize_origins(origin, lengths)
    flipped_origin = [_flip_origin(o, k) for o, k in zip(origins, lengths, strict=True)]
    return correlate(
        input,
        flipped,
        output,
        mode,
        cval,
        flipped_origin,
        axes=axes,
        method=method,
        tol=tol,
        workers=workers,
    )


def filter(
    input: Any,
    kernel: Any,
    *,
    output: Any = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    origin: int | Sequence[int] = 0,
    axes: int | Sequence[int] | None = None,
    method: str = "auto",
    tol: float | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Correlate ``input`` with a kernel given as a spec, an array or a Factorization.

    ``sepconv.filter(img, "gaussian:sigma=2")`` is ``correlate(img, kernels.from_spec(...))``;
    see :func:`correlate` for the parameters. A named kernel that takes ``ndim`` gets one
    dimension per filtered axis unless the spec fixes it (``filter(volume, "gaussian:sigma=2")``
    is 3-D). Named kernels that are sums of separable terms by construction (gaussian, box,
    binomial, sobel, prewitt, scharr, laplace, log, dog) run as those 1-D passes directly: the
    dense kernel is never built to be factorized again (``gaussian:sigma=300`` costs what
    ``gaussian_filter(x, 300)`` costs), and ``tol`` has nothing to approximate.

    Examples
    --------
    >>> import numpy as np, sepconv
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> y = sepconv.filter(x, "gaussian:sigma=1.5")
    >>> from scipy import ndimage
    >>> bool(np.allclose(y, ndimage.gaussian_filter(x, 1.5), atol=1e-14))
    True
    """
    if isinstance(kernel, str):
        check_tol(tol)  # named terms are exact: tol has nothing to allow, but is checked
        backend, x = _input(input)
        ndim = len(normalize_axes(axes, x.ndim))
        named = None
        if method in ("auto", "separable", "lowrank"):
            named = kernels.spec_terms(kernel, ndim=ndim)
        if named is not None:
            return _correlate_terms(
                backend, x, named, output, mode, cval, origin, axes, method, workers
            )
        kernel = kernels.from_spec(kernel, ndim=ndim)
    return correlate(
        input,
        kernel,
        output,
        mode,
        cval,
        origin,
        axes=axes,
        method=method,
        tol=tol,
        workers=workers,
    )
