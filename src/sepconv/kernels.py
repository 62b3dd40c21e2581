"""Kernel builders (float64 numpy arrays) and the kernel-spec parser shared with the CLI.

Conventions
-----------
* **Correlation weights.** Every builder returns the array ``K`` such that
  ``scipy.ndimage.correlate(x, K, mode=m)`` equals the ``scipy.ndimage`` filter of the same
  name with the same ``mode`` (``gaussian`` -> ``gaussian_filter``, ``sobel`` -> ``sobel``,
  ``prewitt`` -> ``prewitt``, ``laplace`` -> ``laplace``, ``laplacian_of_gaussian`` ->
  ``gaussian_laplace``, ``box`` -> ``uniform_filter``), up to rounding (~1e-12). For odd
  Gaussian derivative orders this is the *reversed* ``scipy`` kernel, exactly as
  ``gaussian_filter1d`` does it. To use a kernel with ``convolve`` instead, flip it on every
  axis (``K[::-1, ::-1]``).
* **Centre.** The origin of every kernel is the ``scipy.ndimage`` default: index
  ``n // 2`` on each axis. All kernels built here have odd shapes except ``box`` and
  ``binomial`` with even sizes.
* **Axes and angles.** Arrays are indexed ``(row, column)`` (``(plane, row, column)`` in 3-D).
  For the 2-D kernels with an orientation (``gabor``, ``line``) ``x`` is the column offset
  (axis 1) and ``y`` is the row offset measured *upward* (``y = -row_offset``), so angles are
  in **degrees, counter-clockwise as displayed** (with row 0 at the top, as ``imshow`` shows
  an array). Every angle is in degrees, ``gabor``'s carrier ``phase`` included. Multiples of
  90 degrees use exact cosines/sines, so those kernels are exactly separable (``gabor``) and
  an odd Gabor (``phase=90``) is exactly antisymmetric.
* **Per-axis parameters.** ``sigma``, ``order``, ``radius`` and ``size`` accept a scalar or
  one value per axis. Where a builder takes ``ndim=None`` the number of axes is the length of
  whichever per-axis argument is a sequence, else 2.
* **Derivative kernels** (``sobel``, ``prewitt``, ``scharr``, ``laplace``) have integer
  weights (stored as float64) and are not normalised; smoothing kernels sum to 1 unless
  ``normalize=False``.
* Arguments are checked before any work; errors are ``ValueError``/``TypeError`` naming the
  parameter, the bad value and what is allowed.

``from_spec`` turns a string such as ``"gabor:sigma=3,theta=30,frequency=0.15"``, a path to a
``.npy``/``.csv`` file, or an array into a kernel; ``KERNELS`` maps spec names to builders.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import numpy as np

from sepconv._validate import (
    as_kernel,
    check_bool,
    check_kernel_size,
    check_nonnegative_int,
    check_positive_float,
    per_axis,
)

__all__ = [
    "KERNELS",
    "ball",
    "binomial",
    "box",
    "difference_of_gaussians",
    "disk",
    "from_spec",
    "gabor",
    "gaussian",
    "gaussian1d",
    "laplace",
    "laplacian_of_gaussian",
    "line",
    "motion_blur",
    "prewitt",
    "scharr",
    "sobel",
    "spec_terms",
]

#: Number of slices (midpoint rule along axis 0) used per boundary voxel by ``ball``.
_BALL_SLICES = 32


# --------------------------------------------------------------------------------------------
# private helpers
# --------------------------------------------------------------------------------------------


def _is_seq(value: Any) -> bool:
    """A sequence of values (a 0-d array is a scalar, as in scipy.ndimage)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return not isinstance(value, (str, bytes)) and isinstance(value, Sequence)


#: Most dimensions a kernel can have: numpy's own limit on an array's dimensions.
MAX_NDIM = 64


def _check_ndim(ndim: Any, name: str = "ndim") -> int:
    """An ``ndim`` of 1 to :data:`MAX_NDIM`, checked before anything per axis is built."""
    n = check_nonnegative_int(ndim, name, minimum=1)
    if n > MAX_NDIM:
        raise ValueError(
            f"{name} must be at most {MAX_NDIM} (numpy's limit on an array's dimensions), got {n}"
        )
    return n


def _infer_ndim(ndim: Any, **values: Any) -> int:
    """``ndim`` if given, else the length of the first sequence among ``values``, else 2."""
    if ndim is not None:
        return _check_ndim(ndim)
    for name, value in values.items():
        if _is_seq(value):
            if len(value) < 1:
                raise ValueError(f"{name} must be a scalar or a non-empty sequence, got {value!r}")
            return _check_ndim(len(value), f"the length of {name}")
    return 2


def _check_real(value: Any, name: str) -> float:
    """A finite real number (any sign)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def _check_axis(axis: Any, ndim: int) -> int:
    ax = check_nonnegative_int(axis, "axis", minimum=-ndim)
    if ax >= ndim:
        raise ValueError(f"axis must be in [-{ndim}, {ndim - 1}] for ndim={ndim}, got {axis!r}")
    return ax % ndim


def _outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """N-D outer product of 1-D vectors (first vector along axis 0)."""
    out = reduce(np.multiply.outer, vectors)
    return np.ascontiguousarray(out, dtype=np.float64)


#: A kernel as a weighted sum of separable terms: ``[(weight, [vector per axis]), ...]``.
Terms = list[tuple[float, list[np.ndarray]]]


def _dense(terms: Terms, what: str = "") -> np.ndarray:
    """The dense kernel ``sum_r weight_r * outer(vectors_r)`` (refused when too large: ``what``
    names the parameters that set its size)."""
    sizes = [len(v) for v in terms[0][1]]
    what = what or "these parameters"
    if len(sizes) > 2 and "ndim" not in what:  # the dimensions set the size as much
        what += f" in {len(sizes)} dimensions"
    check_kernel_size(sizes, what)
    out = None
    for weight, vectors in terms:
        term = _outer(vectors)
        if weight != 1.0:
            term = weight * term
        out = term if out is None else out + term
    assert out is not None
    return out


def _cos_sin(degrees: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90 degrees."""
    if degrees % 90.0 == 0.0:
        k = int(degrees // 90.0) % 4
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[k]
    t = math.radians(degrees)
    return math.cos(t), math.sin(t)


def _normalized(k: np.ndarray) -> np.ndarray:
    total = float(k.sum())
    if total == 0.0:  # only reachable for degenerate zero-area shapes; nothing to scale
        return k
    return k / total


def _gaussian_weights(sigma: float, order: int, radius: int) -> np.ndarray:
    """scipy's ``_gaussian_kernel1d`` (sampled, sum-normalised, polynomial derivative); a new
    array each call (copied from a cache: every ``gaussian_filter`` call builds its weights,
    which matters for small images)."""
    return _cached_gaussian(float(sigma), int(order), int(radius)).copy()


@functools.lru_cache(maxsize=128)
def _cached_gaussian(sigma: float, order: int, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    if sigma == 0.0:
        out = np.zeros(2 * radius + 1)
        out[radius] = 1.0
        return out
    sigma2 = sigma * sigma
    phi = np.exp(-0.5 / sigma2 * x**2)
    phi = phi / phi.sum()
    if order == 0:
        return phi
    # f(x) = q(x) phi(x); f'(x) = (q'(x) - q(x) x / sigma^2) phi(x): iterate on the
    # coefficients of q, exactly as scipy does.
    exponents = np.arange(order + 1)
    q = np.zeros(order + 1)
    q[0] = 1.0
    d = np.diag(exponents[1:].astype(np.float64), 1)
    p = np.diag(np.ones(order) / -sigma2, -1)
    q_deriv = d + p
    for _ in range(order):
        q = q_deriv.dot(q)
    poly = (x[:, None] ** exponents).dot(q)
    return np.asarray(poly * phi, dtype=np.float64)


def _gaussian_axis(sigma: Any, order: Any, truncate: float, radius: Any) -> np.ndarray:
    """Validated correlation weights along one axis (reversed scipy kernel)."""
    s = check_positive_float(sigma, "sigma", allow_zero=True)
    o = check_nonnegative_int(order, "order")
    if s <= 1e-15:  # scipy skips such axes entirely: the identity
        if o != 0:
            raise ValueError(
                f"order must be 0 where sigma is 0 (a zero-width Gaussian has no derivative), "
                f"got sigma={sigma!r}, order={order!r}"
            )
        r = 0 if radius is None else _check_radius_taps(radius)
        return _gaussian_weights(0.0, 0, r)
    r = _radius_for(s, truncate) if radius is None else _check_radius_taps(radius)
    return _cached_gaussian(float(s), o, r)[::-1].copy()


def _check_radius_taps(radius: Any) -> int:
    r = check_nonnegative_int(radius, "radius")
    check_kernel_size([2.0 * r + 1], f"radius={radius!r}")
    return r


def _radius_for(sigma: Any, truncate: float) -> int:
    """``int(truncate * sigma + 0.5)``, refused before it overflows or allocates gigabytes."""
    s = check_positive_float(sigma, "sigma", allow_zero=True)
    r = truncate * s + 0.5
    check_kernel_size([2.0 * r], f"sigma={sigma!r} with truncate={truncate!r}")
    return int(r)


# --------------------------------------------------------------------------------------------
# Gaussian family
# --------------------------------------------------------------------------------------------


def gaussian1d(
    sigma: float, *, order: int = 0, truncate: float = 4.0, radius: int | None = None
) -> np.ndarray:
    """1-D Gaussian (derivative) correlation weights, exactly as ``gaussian_filter1d`` uses.

    Parameters
    ----------
    sigma : float
        Standard deviation, >= 0. ``sigma == 0`` gives the identity ``[1.0]`` (as scipy).
    order : int, default 0
        Derivative order, >= 0.
    truncate : float, default 4.0
        Radius in standard deviations: ``radius = int(truncate * sigma + 0.5)``. Must be >= 0
        (0: radius 0, as in scipy).
    radius : int or None, default None
        Explicit radius (>= 0), overriding ``truncate``.

    Returns
    -------
    numpy.ndarray
        Shape ``(2 * radius + 1,)``. For odd ``order`` this is scipy's ``_gaussian_kernel1d``
        reversed (``correlate1d`` weights).

    Examples
    --------
    >>> print(gaussian1d(1.0, truncate=2.0).round(3))
    [0.054 0.244 0.403 0.244 0.054]
    >>> print(gaussian1d(1.0, order=1, radius=1).round(3))
    [-0.274  0.     0.274]
    """
    t = check_positive_float(truncate, "truncate", allow_zero=True)
    if _is_seq(sigma) or _is_seq(order) or _is_seq(radius):
        raise TypeError("gaussian1d takes scalar sigma, order and radius; use gaussian() for N-D")
    return _gaussian_axis(sigma, order, t, radius)


def gaussian(
    sigma: float | Sequence[float],
    *,
    order: int | Sequence[int] = 0,
    truncate: float = 4.0,
    radius: int | Sequence[int] | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """N-D Gaussian (derivative) kernel equal to ``scipy.ndimage.gaussian_filter``.

    Parameters
    ----------
    sigma : float or sequence of float
        Standard deviation(s), >= 0, scalar or one per axis. An axis with ``sigma == 0`` is the
        identity (length ``2 * radius + 1`` delta, ``[1.0]`` without ``radius``).
    order : int or sequence of int, default 0
        Derivative order per axis, >= 0 (must be 0 where ``sigma`` is 0).
    truncate : float, default 4.0
        Per-axis radius is ``int(truncate * sigma + 0.5)``; must be >= 0.
    radius : int or sequence of int or None, default None
        Explicit radius per axis (>= 0), overriding ``truncate``.
    ndim : int or None, default None
        Number of axes; default: length of whichever of ``sigma``/``order``/``radius`` is a
        sequence, else 2.

    Returns
    -------
    numpy.ndarray
        Separable kernel (outer product of :func:`gaussian1d` weights); sums to 1 when all
        orders are 0.

    Examples
    --------
    >>> gaussian(2.0).shape
    (17, 17)
    >>> gaussian([1.0, 2.0], order=[0, 1], truncate=2.0).shape
    (5, 9)
    """
    terms = _gaussian_terms(sigma, order=order, truncate=truncate, radius=radius, ndim=ndim)
    return _dense(terms, f"sigma={sigma!r}")


def _gaussian_terms(
    sigma: float | Sequence[float],
    *,
    order: int | Sequence[int] = 0,
    truncate: float = 4.0,
    radius: int | Sequence[int] | None = None,
    ndim: int | None = None,
) -> Terms:
    t = check_positive_float(truncate, "truncate", allow_zero=True)
    n = _infer_ndim(ndim, sigma=sigma, order=order, radius=radius)
    sigmas = per_axis(sigma, n, "sigma")
    orders = per_axis(order, n, "order")
    radii = per_axis(radius, n, "radius")
    axes = zip(sigmas, orders, radii, strict=True)
    vecs = [_gaussian_axis(s, o, t, r) for s, o, r in axes]
    return [(1.0, vecs)]


def laplacian_of_gaussian(
    sigma: float | Sequence[float], *, ndim: int | None = None, truncate: float = 4.0
) -> np.ndarray:
    """Laplacian-of-Gaussian kernel equal to ``scipy.ndimage.gaussian_laplace``.

    The sum over axes of :func:`gaussian` with ``order=2`` on that axis and 0 elsewhere, all
    terms on the same support (per-axis radius ``int(truncate * sigma + 0.5)``).

    Parameters
    ----------
    sigma : float or sequence of float
        Standard deviation(s), > 0, scalar or one per axis.
    ndim : int or None, default None
        Number of axes; default ``len(sigma)`` for a sequence, else 2.
    truncate : float, default 4.0
        Radius in standard deviations, >= 0.

    Returns
    -------
    numpy.ndarray
        Kernel of shape ``(2 * r_i + 1, ...)``; sums to ~0; rank 2 in 2-D.

    Examples
    --------
    >>> laplacian_of_gaussian(1.5).shape
    (13, 13)
    """
    return _dense(_log_terms(sigma, ndim=ndim, truncate=truncate), f"sigma={sigma!r}")


def _log_terms(
    sigma: float | Sequence[float], *, ndim: int | None = None, truncate: float = 4.0
) -> Terms:
    t = check_positive_float(truncate, "truncate", allow_zero=True)
    n = _infer_ndim(ndim, sigma=sigma)
    sigmas = [check_positive_float(s, "sigma") for s in per_axis(sigma, n, "sigma")]
    smooth = [_gaussian_axis(s, 0, t, None) for s in sigmas]
    return [
        (
            1.0,
            [
                _gaussian_axis(s, 2, t, None) if ax == axis else smooth[ax]
                for ax, s in enumerate(sigmas)
            ],
        )
        for axis in range(n)
    ]


def difference_of_gaussians(
    sigma1: float | Sequence[float],
    sigma2: float | Sequence[float] | None = None,
    *,
    ratio: float = 1.6,
    ndim: int | None = None,
    truncate: float = 4.0,
) -> np.ndarray:
    """Difference of Gaussians ``G(sigma1) - G(sigma2)`` with ``sigma2 > sigma1``.

    Both Gaussians are scipy's normalised sampled Gaussians on the support of the larger one:
    ``G(sigma1)`` is ``gaussian(sigma1, radius=r2)`` with ``r2 = int(truncate * sigma2 + 0.5)``
    per axis, so the result correlates like
    ``gaussian_filter(x, sigma1, radius=r2) - gaussian_filter(x, sigma2, truncate=truncate)``.
    The sign convention is centre-positive (a band-pass "Mexican hat"), sum ~0.

    Parameters
    ----------
    sigma1 : float or sequence of float
        Smaller (centre) standard deviation(s), >= 0.
    sigma2 : float or sequence of float or None, default None
        Larger (surround) standard deviation(s); must exceed ``sigma1`` on every axis.
        Default ``sigma1 * ratio``.
    ratio : float, default 1.6
        ``sigma2 / sigma1`` when ``sigma2`` is not given; must be > 1.
    ndim : int or None, default None
        Number of axes; default: length of a sequence ``sigma1``/``sigma2``, else 2.
    truncate : float, default 4.0
        Radius of the larger Gaussian in its standard deviations, > 0.

    Returns
    -------
    numpy.ndarray
        Kernel of shape ``(2 * r2_i + 1, ...)``; rank 2 in 2-D.

    Examples
    --------
    >>> difference_of_gaussians(1.0).shape
    (13, 13)
    >>> difference_of_gaussians(1.0, 2.0, ndim=1).round(2).max()
    np.float64(0.2)
    """
    terms = _dog_terms(sigma1, sigma2, ratio=ratio, ndim=ndim, truncate=truncate)
    return _dense(terms, f"sigma1={sigma1!r}, sigma2={sigma2!r}")


def _dog_terms(
    sigma1: float | Sequence[float],
    sigma2: float | Sequence[float] | None = None,
    *,
    ratio: float = 1.6,
    ndim: int | None = None,
    truncate: float = 4.0,
) -> Terms:
    """The terms of :func:`difference_of_gaussians`: ``G(sigma1)`` minus ``G(sigma2)``."""
    t = check_positive_float(truncate, "truncate", allow_zero=True)
    n = _infer_ndim(ndim, sigma1=sigma1, sigma2=sigma2)
    s1 = [check_positive_float(s, "sigma1", allow_zero=True) for s in per_axis(sigma1, n, "sigma1")]
    if sigma2 is None:
        if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, (int, float, np.number)):
            raise TypeError(f"ratio must be a real number, got {ratio!r}")
        rho = float(ratio)
        if not 1.0 < rho < math.inf:
            raise ValueError(f"ratio must be a finite number > 1, got {ratio!r}")
        if not all(a > 0 for a in s1):  # sigma2 = sigma1 * ratio would be 0 too
            raise ValueError(
                f"sigma1 must be > 0 on every axis when sigma2 comes from ratio (sigma2 = "
                f"sigma1 * ratio), got sigma1={sigma1!r}"
            )
        s2 = [s * rho for s in s1]
    else:
        s2 = [check_positive_float(s, "sigma2") for s in per_axis(sigma2, n, "sigma2")]
    for a, b in zip(s1, s2, strict=True):
        if not b > a:
            raise ValueError(
                f"sigma2 must be larger than sigma1 on every axis (DoG = G(sigma1) - G(sigma2)), "
                f"got sigma1={sigma1!r}, sigma2={sigma2 if sigma2 is not None else s2!r}"
            )
    radii = [_radius_for(b, t) for b in s2]
    g1 = [_gaussian_axis(a, 0, t, r) for a, r in zip(s1, radii, strict=True)]
    g2 = [_gaussian_axis(b, 0, t, r) for b, r in zip(s2, radii, strict=True)]
    return [(1.0, g1), (-1.0, g2)]


# --------------------------------------------------------------------------------------------
# Box, binomial, derivative stencils
# --------------------------------------------------------------------------------------------


def box(size: int | Sequence[int], *, ndim: int | None = None) -> np.ndarray:
    """Box (mean) kernel equal to ``scipy.ndimage.uniform_filter``.

    Parameters
    ----------
    size : int or sequence of int
        Side length(s), >= 1, scalar or one per axis. Even sizes follow scipy's origin
        convention (centre at index ``size // 2``) and still match ``uniform_filter``.
    ndim : int or None, default None
        Number of axes; default ``len(size)`` for a sequence, else 2.

    Returns
    -------
    numpy.ndarray
        Constant kernel summing to 1.

    Examples
    --------
    >>> box(3)
    array([[0.111..., 0.111..., 0.111...],
           [0.111..., 0.111..., 0.111...],
           [0.111..., 0.111..., 0.111...]])
    """
    return _dense(_box_terms(size, ndim=ndim), f"size={size!r}")


def _box_terms(size: int | Sequence[int], *, ndim: int | None = None) -> Terms:
    n = _infer_ndim(ndim, size=size)
    sizes = [check_nonnegative_int(s, "size", minimum=1) for s in per_axis(size, n, "size")]
    check_kernel_size([max(sizes)], f"size={size!r}")
    return [(1.0, [np.full(s, 1.0 / s) for s in sizes])]


def binomial(
    size: int | Sequence[int], *, ndim: int | None = None, normalize: bool = True
) -> np.ndarray:
    """Binomial (discrete Gaussian) kernel: outer product of ``C(size - 1, i)``.

    Parameters
    ----------
    size : int or sequence of int
        Number of taps per axis, >= 1 (``size - 1`` is the binomial order).
    ndim : int or None, default None
        Number of axes; default ``len(size)`` for a sequence, else 2.
    normalize : bool, default True
        Scale to sum 1; ``False`` keeps the integer coefficients (as float64).

    Returns
    -------
    numpy.ndarray
        Separable kernel; e.g. size 3 gives ``[1, 2, 1] (x) [1, 2, 1]``.

    Examples
    --------
    >>> binomial(3, normalize=False)
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    return _dense(_binomial_terms(size, ndim=ndim, normalize=normalize), f"size={size!r}")


#: Most taps of a binomial kernel (its integer coefficients overflow float64 beyond ~1030; a
#: binomial that long is a sampled Gaussian to float precision: use ``gaussian``).
_BINOMIAL_TAPS = 1025


def _binomial_terms(
    size: int | Sequence[int], *, ndim: int | None = None, normalize: bool = True
) -> Terms:
    n = _infer_ndim(ndim, size=size)
    sizes = [check_nonnegative_int(s, "size", minimum=1) for s in per_axis(size, n, "size")]
    norm = check_bool(normalize, "normalize")
    if max(sizes) > _BINOMIAL_TAPS:
        raise ValueError(
            f"size must be at most {_BINOMIAL_TAPS} for a binomial kernel (a longer one is a "
            f"Gaussian to float precision: use gaussian), got {size!r}"
        )
    vecs = []
    for s in sizes:  # C(s-1, i) / 2**(s-1), each correctly rounded (2**1024 overflows a float)
        scale = 2 ** (s - 1) if norm else 1
        vecs.append(np.array([math.comb(s - 1, i) / scale for i in range(s)], dtype=np.float64))
    return [(1.0, vecs)]


def _derivative_terms(axis: Any, ndim: Any, smooth: Sequence[float]) -> Terms:
    n = _check_ndim(ndim)
    ax = _check_axis(axis, n)
    deriv = np.array([-1.0, 0.0, 1.0])
    sm = np.asarray(smooth, dtype=np.float64)
    return [(1.0, [deriv if i == ax else sm for i in range(n)])]


def _smoothed_derivative(smooth: Sequence[float]) -> Callable[..., Terms]:
    """The terms of ``[-1, 0, 1]`` along ``axis`` smoothed by ``smooth`` along the others."""
    return lambda axis=-1, *, ndim=2: _derivative_terms(axis, ndim, smooth)


#: The derivative kernels' terms (their dense builders below multiply them out).
_SMOOTHED_DERIVATIVES = {
    "sobel": _smoothed_derivative([1.0, 2.0, 1.0]),
    "prewitt": _smoothed_derivative([1.0, 1.0, 1.0]),
    "scharr": _smoothed_derivative([3.0, 10.0, 3.0]),
}


_DERIVATIVE_DOC = """{title}

    ``[-1, 0, 1]`` (correlation weights) along ``axis`` and ``{smooth}`` along every other.

    Parameters
    ----------
    axis : int, default -1
        Derivative axis, in ``[-ndim, ndim - 1]``.
    ndim : int, default 2
        Number of axes, >= 1.

    Returns
    -------
    numpy.ndarray
        Integer-valued float64 kernel of shape ``(3,) * ndim``.

    Examples
    --------
    >>> {example}
    """


def sobel(axis: int = -1, *, ndim: int = 2) -> np.ndarray:
    return _dense(_SMOOTHED_DERIVATIVES["sobel"](axis, ndim=ndim), f"ndim={ndim!r}")


def prewitt(axis: int = -1, *, ndim: int = 2) -> np.ndarray:
    return _dense(_SMOOTHED_DERIVATIVES["prewitt"](axis, ndim=ndim), f"ndim={ndim!r}")


def scharr(axis: int = -1, *, ndim: int = 2) -> np.ndarray:
    return _dense(_SMOOTHED_DERIVATIVES["scharr"](axis, ndim=ndim), f"ndim={ndim!r}")


sobel.__doc__ = _DERIVATIVE_DOC.format(
    title="Sobel derivative kernel equal to ``scipy.ndimage.sobel``.",
    smooth="[1, 2, 1]",
    example="""sobel(axis=0)
    array([[-1., -2., -1.],
           [ 0.,  0.,  0.],
           [ 1.,  2.,  1.]])""",
)
prewitt.__doc__ = _DERIVATIVE_DOC.format(
    title="Prewitt derivative kernel equal to ``scipy.ndimage.prewitt``.",
    smooth="[1, 1, 1]",
    example="""prewitt(axis=1)[0], prewitt(axis=1, ndim=3).shape
    (array([-1.,  0.,  1.]), (3, 3, 3))""",
)
scharr.__doc__ = _DERIVATIVE_DOC.format(
    title="Scharr derivative kernel (unnormalised, as ``skimage`` up to its 1/16 scale).",
    smooth="[3, 10, 3]",
    example="""scharr(axis=1)
    array([[ -3., 0.,  3.],
           [-10., 0., 10.],
           [ -3., 0.,  3.]])""",
)


def laplace(*, ndim: int = 2) -> np.ndarray:
    """Discrete Laplacian equal to ``scipy.ndimage.laplace``.

    The ``3 ** ndim`` kernel that is the sum over axes of ``[1, -2, 1]`` along that axis.

    Parameters
    ----------
    ndim : int, default 2
        Number of axes, >= 1.

    Returns
    -------
    numpy.ndarray
        Kernel with ``-2 * ndim`` at the centre and 1 at the ``2 * ndim`` face neighbours.

    Examples
    --------
    >>> laplace()
    array([[ 0.,  1.,  0.],
           [ 1., -4.,  1.],
           [ 0.,  1.,  0.]])
    """
    return _dense(_laplace_terms(ndim=ndim), f"ndim={ndim!r}")


def _laplace_terms(*, ndim: int = 2) -> Terms:
    n = _check_ndim(ndim)
    stencil, delta = np.array([1.0, -2.0, 1.0]), np.array([0.0, 1.0, 0.0])
    return [(1.0, [stencil if i == axis else delta for i in range(n)]) for axis in range(n)]


# --------------------------------------------------------------------------------------------
# Gabor
# --------------------------------------------------------------------------------------------


def gabor(
    sigma: float,
    *,
    theta: float = 0.0,
    frequency: float = 0.1,
    gamma: float = 1.0,
    phase: float = 0.0,
    truncate: float = 3.0,
) -> np.ndarray:
    """Real 2-D Gabor kernel.

    ``exp(-(x'^2 + gamma^2 y'^2) / (2 sigma^2)) * cos(2 pi frequency x' + radians(phase))``
    scaled by ``gamma / (2 pi sigma^2)`` (``skimage.filters.gabor_kernel``'s normalisation),
    with ``x' = x cos t + y sin t``, ``y' = -x sin t + y cos t``, ``t = radians(theta)``; ``x``
    is the column offset and ``y = -row_offset`` (so ``theta`` is counter-clockwise as
    displayed). Both angles, ``theta`` and ``phase``, are in **degrees**, like ``line``'s
    ``angle``.

    Parameters
    ----------
    sigma : float
        Envelope standard deviation along ``x'``, > 0 (``sigma / gamma`` along ``y'``).
    theta : float, default 0.0
        Orientation of the carrier's wave vector in degrees, counter-clockwise from +x.
    frequency : float, default 0.1
        Carrier frequency in cycles per pixel, >= 0.
    gamma : float, default 1.0
        Spatial aspect ratio, > 0.
    phase : float, default 0.0
        Carrier phase offset in **degrees** (not radians): ``0`` gives the even (cosine)
        Gabor, symmetric about the centre; ``90`` or ``-90`` the odd (sine) Gabor,
        antisymmetric (``K[::-1, ::-1] == -K`` exactly). Multiples of 90 use exact
        cosines/sines.
    truncate : float, default 3.0
        Radius ``int(truncate * max(sigma, sigma / gamma) + 0.5)``; must be >= 0.

    Returns
    -------
    numpy.ndarray
        Square kernel ``(2r + 1, 2r + 1)``. Rank 1 (separable) at ``theta`` a multiple of 90;
        rank 2 for ``gamma == 1`` at any ``theta``.

    Examples
    --------
    >>> gabor(2.0, theta=30, frequency=0.2).shape
    (13, 13)
    >>> k = gabor(2.0, theta=30, frequency=0.2, phase=90)  # odd: antisymmetric
    >>> bool((k[::-1, ::-1] == -k).all())
    True
    """
    s = check_positive_float(sigma, "sigma")
    th = _check_real(theta, "theta")
    f = check_positive_float(frequency, "frequency", allow_zero=True)
    g = check_positive_float(gamma, "gamma")
    ph = _check_real(phase, "phase")
    t = check_positive_float(truncate, "truncate", allow_zero=True)
    # the radius as a float first: sigma / gamma may overflow (int(inf) would raise), and the
    # size is refused before np.arange allocates (gamma=1e-9 would ask for 134 GiB)
    rf = 0.0 if t == 0.0 else t * max(s, s / g) + 0.5
    check_kernel_size(
        [2.0 * math.floor(rf) + 1] * 2 if math.isfinite(rf) else [math.inf] * 2,
        f"sigma={sigma!r}, gamma={gamma!r}, truncate={truncate!r}",
    )
    r = int(rf)
    c, sn = _cos_sin(th)
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    y = -offsets[:, None]  # rows, measured upward
    x = offsets[None, :]  # columns
    xr = x * c + y * sn
    yr = -x * sn + y * c
    env = np.exp(-(xr**2 + g**2 * yr**2) / (2.0 * s * s))
    # cos(a + phase) expanded so that phases at multiples of 90 degrees are exact: phase=90
    # gives -sin(a), exactly antisymmetric (xr is, and sin is odd), not cos(a + 1.5707963...)
    pc, ps = _cos_sin(ph)
    arg = 2.0 * math.pi * f * xr
    carrier = np.cos(arg) * pc - np.sin(arg) * ps
    return np.asarray(env * carrier * (g / (2.0 * math.pi * s * s)), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Disk, ball, line
# --------------------------------------------------------------------------------------------


def _quadrant_area(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Area of ``{0 <= u <= x, 0 <= v <= y, u^2 + v^2 <= r^2}`` for ``x, y >= 0``, ``r > 0``."""
    xc = np.minimum(x, r)
    yc = np.minimum(y, r)
    ustar = np.sqrt(np.maximum(r * r - yc * yc, 0.0))  # circle height exceeds y for u < ustar
    a = np.minimum(ustar, xc)

    def prim(t: np.ndarray) -> np.ndarray:  # integral_0^t sqrt(r^2 - u^2) du
        return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0.0)) + r * r * np.arcsin(t / r))

    return np.asarray(yc * a + prim(xc) - prim(a))


def _rect_disk_area(
    x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Exact area of ``[x0, x1] x [y0, y1]`` inside the disk of radius ``r`` at the origin."""
    r = np.asarray(r, dtype=np.float64)
    rpos = r > 0
    rs = np.where(rpos, r, 1.0)

    def signed(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.sign(x) * np.sign(y) * _quadrant_area(np.abs(x), np.abs(y), rs)

    area = signed(x1, y1) - signed(x0, y1) - signed(x1, y0) + signed(x0, y0)
    return np.where(rpos, np.maximum(area, 0.0), 0.0)


def _check_radius(radius: Any, ndim: int) -> tuple[float, int]:
    r = check_positive_float(radius, "radius", allow_zero=True)
    check_kernel_size([2.0 * math.ceil(r) + 1] * ndim, f"radius={radius!r}")
    return r, math.ceil(r)


def disk(radius: float, *, antialias: bool = False, normalize: bool = True) -> np.ndarray:
    """2-D disk (pillbox) kernel.

    Parameters
    ----------
    radius : float
        Radius in pixels, >= 0 (need not be an integer). Shape is ``(2R + 1, 2R + 1)`` with
        ``R = ceil(radius)``.
    antialias : bool, default False
        ``False``: 1 where the pixel centre is within ``radius`` of the kernel centre.
        ``True``: the fraction of each unit pixel square inside the circle, computed exactly in
        closed form (error ~1e-15, no supersampling).
    normalize : bool, default True
        Scale to sum 1. An anti-aliased disk of radius 0 has zero area; with ``normalize`` it
        is returned as the identity ``[[1.0]]`` (the limit of small disks).

    Returns
    -------
    numpy.ndarray
        Unnormalised, the anti-aliased kernel sums to ``pi * radius**2``.

    Examples
    --------
    >>> disk(1, normalize=False)
    array([[0., 1., 0.],
           [1., 1., 1.],
           [0., 1., 0.]])
    >>> round(float(disk(5, antialias=True, normalize=False).sum()), 6)
    78.539816
    """
    r, big_r = _check_radius(radius, 2)
    aa = check_bool(antialias, "antialias")
    norm = check_bool(normalize, "normalize")
    off = np.arange(-big_r, big_r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(off, off, indexing="ij")
    if not aa:
        k = (yy * yy + xx * xx <= r * r).astype(np.float64)
    else:
        k = _rect_disk_area(xx - 0.5, xx + 0.5, yy - 0.5, yy + 0.5, np.full_like(xx, r))
        if norm and not k.any():  # radius 0, or an area that underflows: the identity (limit)
            k = np.zeros_like(k)
            k[big_r, big_r] = 1.0
    return _normalized(k) if norm else k


def ball(radius: float, *, antialias: bool = False, normalize: bool = True) -> np.ndarray:
    """3-D ball kernel.

    Parameters
    ----------
    radius : float
        Radius in voxels, >= 0. Shape is ``(2R + 1,) * 3`` with ``R = ceil(radius)``.
    antialias : bool, default False
        ``False``: 1 where the voxel centre is within ``radius`` of the centre.
        ``True``: the fraction of each unit voxel inside the sphere. Voxels entirely inside
        or outside are exact (1 or 0); for boundary voxels the cross-section area is exact in
        each plane and integrated along axis 0 with a 32-slice midpoint rule (absolute error
        per voxel below ~1e-3, total volume within ~1e-4 relative for radius >= 1, ~2e-3
        from 0.5 to 1, where 32 / radius slices are used); a radius of at most 0.5 lies in
        the centre voxel, which then holds its volume ``4/3 pi radius**3`` exactly.
    normalize : bool, default True
        Scale to sum 1 (radius 0 with ``antialias`` gives the identity, as for :func:`disk`).

    Returns
    -------
    numpy.ndarray
        Unnormalised, the anti-aliased kernel sums to about ``4/3 pi radius**3``.

    Examples
    --------
    >>> ball(1, normalize=False).sum()
    np.float64(7.0)
    >>> ball(2.5, antialias=True).shape
    (7, 7, 7)
    """
    r, big_r = _check_radius(radius, 3)
    aa = check_bool(antialias, "antialias")
    norm = check_bool(normalize, "normalize")
    off = np.arange(-big_r, big_r + 1, dtype=np.float64)
    zz, yy, xx = np.meshgrid(off, off, off, indexing="ij")
    if not aa:
        k = (zz * zz + yy * yy + xx * xx <= r * r).astype(np.float64)
        return _normalized(k) if norm else k
    if r <= 0.5:  # the whole ball lies in the centre voxel: its volume, exactly
        k = np.zeros(zz.shape)
        k[big_r, big_r, big_r] = 4.0 / 3.0 * math.pi * r**3
        if norm:  # the identity (also the limit of a volume that underflows)
            k[big_r, big_r, big_r] = 1.0
        return k

    def near(c: np.ndarray) -> np.ndarray:  # distance from 0 to the nearest point of the cell
        return np.maximum(np.abs(c) - 0.5, 0.0)

    dmin2 = near(zz) ** 2 + near(yy) ** 2 + near(xx) ** 2
    dmax2 = (np.abs(zz) + 0.5) ** 2 + (np.abs(yy) + 0.5) ** 2 + (np.abs(xx) + 0.5) ** 2
    k = (dmax2 <= r * r).astype(np.float64)
    edge = (dmax2 > r * r) & (dmin2 < r * r)
    z, y, x = zz[edge], yy[edge], xx[edge]
    slices = _BALL_SLICES if r >= 1 else math.ceil(_BALL_SLICES / r)  # finer for small balls
    frac = (np.arange(slices) + 0.5) / slices - 0.5  # midpoints in [-0.5, 0.5]
    zs = z[:, None] + frac[None, :]
    rho = np.sqrt(np.maximum(r * r - zs * zs, 0.0))
    yb, xb = y[:, None], x[:, None]
    area = _rect_disk_area(xb - 0.5, xb + 0.5, yb - 0.5, yb + 0.5, rho)
    k[edge] = area.mean(axis=1)
    return _normalized(k) if norm else k


def _clip_lengths(
    half: float, d: tuple[float, float], x0: np.ndarray, y0: np.ndarray
) -> np.ndarray:
    """Liang–Barsky: length of ``{t d : -half <= t <= half}`` (``d`` a unit vector) in each cell.

    The cells are the unit squares with lower corners ``(x0, y0)``.
    """
    t0 = np.full(x0.shape, -half)
    t1 = np.full(x0.shape, half)
    inside = np.ones(x0.shape, dtype=bool)
    for delta, lo in ((d[0], x0), (d[1], y0)):
        hi = lo + 1.0
        if delta == 0.0:
            inside &= (lo <= 0.0) & (hi >= 0.0)
            continue
        ta = lo / delta
        tb = hi / delta
        t0 = np.maximum(t0, np.minimum(ta, tb))
        t1 = np.minimum(t1, np.maximum(ta, tb))
    return np.where(inside, np.maximum(t1 - t0, 0.0), 0.0)


def line(length: float, *, angle: float = 0.0, normalize: bool = True) -> np.ndarray:
    """Anti-aliased line (linear motion-blur) kernel; also exported as ``motion_blur``.

    Each pixel holds the exact length of the segment lying inside its unit square
    (Liang–Barsky clipping). The segment has length ``length``, is centred on the kernel
    centre and points ``angle`` degrees counter-clockwise as displayed from the +x (column)
    axis. All-zero border rows/columns are trimmed symmetrically, so ``angle=0, length=5``
    gives shape ``(1, 5)`` and ``angle=90`` gives ``(5, 1)``.

    Parameters
    ----------
    length : float
        Segment length in pixels, > 0.
    angle : float, default 0.0
        Direction in degrees (a line is unchanged by adding 180).
    normalize : bool, default True
        Scale to sum 1; unnormalised the kernel sums to ``length``.

    Returns
    -------
    numpy.ndarray
        2-D kernel with odd sides.

    Examples
    --------
    >>> line(5)
    array([[0.2, 0.2, 0.2, 0.2, 0.2]])
    >>> line(4, normalize=False)
    array([[0.5, 1. , 1. , 1. , 0.5]])
    >>> line(3, angle=90).shape
    (3, 1)
    """
    n = check_positive_float(length, "length")
    a = _check_real(angle, "angle")
    norm = check_bool(normalize, "normalize")
    c, s = _cos_sin(a)
    half = n / 2.0
    # the segment spans half*|c| columns and half*|s| rows either side of the centre (+1 cell
    # of margin, trimmed below): refused before anything is allocated when too large
    check_kernel_size(
        [2.0 * (half * abs(s) + 1.5), 2.0 * (half * abs(c) + 1.5)],
        f"length={length!r} at angle={angle!r}",
    )
    ry = max(0, math.ceil(half * abs(s) - 0.5)) + 1
    rx = max(0, math.ceil(half * abs(c) - 0.5)) + 1
    offy = np.arange(-ry, ry + 1, dtype=np.float64)
    offx = np.arange(-rx, rx + 1, dtype=np.float64)
    # work in (x, y) with y upward; row i has y = -offy[i]
    yy = -offy[:, None] + np.zeros((1, offx.size))
    xx = np.zeros((offy.size, 1)) + offx[None, :]
    if half <= 0.5:  # the whole segment lies in the centre cell (exactly, for any length)
        k = np.array([[1.0 if norm else n]])
        return k
    k = _clip_lengths(half, (c, s), xx - 0.5, yy - 0.5)
    k[k < 1e-12 * max(n, 1.0)] = 0.0  # corner touches that rounding turned into slivers
    k = _trim_zero_border(k)
    return _normalized(k) if norm else k


def _trim_zero_border(k: np.ndarray) -> np.ndarray:
    for axis in range(k.ndim):
        other = tuple(i for i in range(k.ndim) if i != axis)
        nonzero = np.flatnonzero(np.any(k != 0, axis=other))
        if nonzero.size == 0:
            continue
        cut = min(int(nonzero[0]), k.shape[axis] - 1 - int(nonzero[-1]))
        if cut:
            sl: list[slice] = [slice(None)] * k.ndim
            sl[axis] = slice(cut, k.shape[axis] - cut)
            k = k[tuple(sl)]
    return np.ascontiguousarray(k)


motion_blur = line


# --------------------------------------------------------------------------------------------
# registry and spec parser
# --------------------------------------------------------------------------------------------

KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "ball": ball,
    "binomial": binomial,
    "box": box,
    "difference_of_gaussians": difference_of_gaussians,
    "disk": disk,
    "dog": difference_of_gaussians,
    "gabor": gabor,
    "gaussian": gaussian,
    "laplace": laplace,
    "laplacian_of_gaussian": laplacian_of_gaussian,
    "line": line,
    "log": laplacian_of_gaussian,
    "motion_blur": line,
    "prewitt": prewitt,
    "scharr": scharr,
    "sobel": sobel,
}

#: The kernels that are sums of separable terms by construction, as those terms (the dense
#: builders above are these terms multiplied out): filters run them as 1-D passes directly,
#: without building and factorizing the dense kernel.
KERNEL_TERMS: dict[Callable[..., np.ndarray], Callable[..., Terms]] = {
    binomial: _binomial_terms,
    box: _box_terms,
    difference_of_gaussians: _dog_terms,
    gaussian: _gaussian_terms,
    laplace: _laplace_terms,
    laplacian_of_gaussian: _log_terms,
    prewitt: _SMOOTHED_DERIVATIVES["prewitt"],
    scharr: _SMOOTHED_DERIVATIVES["scharr"],
    sobel: _SMOOTHED_DERIVATIVES["sobel"],
}

_FILE_SUFFIXES = (".npy", ".csv")


def _split_top(text: str, spec: str) -> list[str]:
    """Split on commas outside brackets; raise on unbalanced brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"spec: unbalanced ']' in {spec!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"spec: unbalanced '[' in {spec!r}")
    parts.append(text[start:])
    return parts


def _parse_value(text: str, key: str, spec: str) -> Any:
    t = text.strip()
    if not t:
        raise ValueError(f"spec: empty value for {key!r} in {spec!r}")
    if t.startswith("["):
        if not t.endswith("]"):
            raise ValueError(f"spec: malformed list {t!r} for {key!r} in {spec!r}")
        inner = t[1:-1].strip()
        if not inner:
            return []
        return [_parse_value(p, key, spec) for p in _split_top(inner, spec)]
    if "[" in t or "]" in t:
        raise ValueError(f"spec: malformed value {t!r} for {key!r} in {spec!r}")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if "_" in t or not t.isascii():  # Python's int/float read '1_0' as 10 and other scripts'
        raise ValueError(  # digits: not what a spec means
            f"spec: value {t!r} for {key!r} in {spec!r} is not a number, bool (true/false) "
            "or [list]"
        )
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValueError(
            f"spec: value {t!r} for {key!r} in {spec!r} is not a number, bool (true/false) "
            "or [list]"
        ) from None


_TEXT_HINT = (
    "a .csv kernel is numbers separated by commas or by whitespace (numpy.savetxt's "
    "default), one row per line, every row the same length; '#' starts a comment"
)


def _load_text(path: str) -> np.ndarray:
    """A 1-D or 2-D kernel from a text file, comma- or whitespace-separated, one row per
    line. A single row and a single column both read as 1-D weights (``np.savetxt`` writes a
    1-D array one value per line, as it writes an (n, 1) one): a vertical 2-D kernel is
    written as ``.npy``."""
    try:
        # utf-8-sig: the byte-order mark of Excel's "CSV UTF-8" is no part of the first number
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise ValueError(f"spec: cannot read kernel file {path!r}: {exc.strerror}") from exc
    rows = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    rows = [row for row in rows if row]
    if not rows:
        raise ValueError(f"spec: kernel file {path!r} has no numbers; {_TEXT_HINT}")
    # commas anywhere in the data: comma-separated (spaces around the numbers are fine);
    # otherwise whitespace-separated, as numpy.savetxt writes by default
    delimiter = "," if any("," in row for row in rows) else None
    if delimiter == ",":  # spreadsheets may end a row with a comma ("1,2,1,"): one empty
        # field at the end of a row is dropped, not read as a missing number
        rows = [row[:-1].rstrip() if row.endswith(",") else row for row in rows]
    try:
        arr = np.loadtxt(rows, delimiter=delimiter, ndmin=1, dtype=np.float64)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"spec: cannot read kernel file {path!r}: {reason}; {_TEXT_HINT}") from exc
    return np.asarray(arr, dtype=np.float64)


def _load_file(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"spec: kernel file {path!r} does not exist")
    if not path.lower().endswith(".npy"):
        return as_kernel(_load_text(path), "spec")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head != b"\x93NUMPY":  # numpy would say "pickled data" of a text file
        raise ValueError(
            f"spec: kernel file {path!r} is not a .npy file (it starts with {head!r}, not "
            "numpy's magic b'\\x93NUMPY'); is the suffix right? Text kernels go in .csv"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # unreadable, not numeric, pickled objects, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"spec: cannot read kernel file {path!r}: {reason}") from exc
    return as_kernel(arr, "spec")


def from_spec(spec: Any, *, ndim: int | None = None) -> np.ndarray:
    """Build a kernel from a spec string, a ``.npy``/``.csv`` file or an array.

    Parameters
    ----------
    spec : str or os.PathLike or array_like
        * ``"name"`` or ``"name:key=value,key=value"`` with ``name`` in :data:`KERNELS`
          and keys the builder's parameters (both case-insensitive). Values are ints, floats,
          ``true``/``false`` (any case) or bracketed lists of those (``sigma=[2,3]``; commas
          inside brackets do not split).
        * A path ending in ``.npy`` or ``.csv`` (1-D or 2-D; numbers separated by commas
          or by whitespace as ``numpy.savetxt`` writes them, one row per line, ``#``
          comments).
        * An array, returned as a float64 copy after the usual kernel checks.
    ndim : int, optional
        Number of axes for a named kernel that takes ``ndim`` (``gaussian``, ``box``,
        ``sobel``, ``laplace``, ...) when the spec does not fix it itself (by ``ndim=`` or a
        bracketed per-axis list): ``from_spec("gaussian:sigma=2", ndim=3)`` is 3-D. Kernels
        with a fixed dimension (``gabor``, ``disk``, ``ball``, files) ignore it.

    Returns
    -------
    numpy.ndarray
        The float64 kernel.

    Raises
    ------
    ValueError or TypeError
        One line naming ``spec``, the bad piece and what is allowed: unknown kernel or
        parameter, malformed text, missing or unreadable file, non-finite or non-numeric
        content; errors from the builder are re-raised prefixed with the spec.

    Examples
    --------
    >>> from_spec("gaussian:sigma=[1,2],order=[0,1],truncate=2").shape
    (5, 9)
    >>> from_spec("sobel:axis=0")[0]
    array([-1., -2., -1.])
    >>> from_spec("gaussian:sigma=1", ndim=3).shape
    (9, 9, 9)
    """
    if isinstance(spec, os.PathLike):
        return _load_file(os.fspath(spec))
    if isinstance(spec, bytes):
        raise TypeError(f"spec must be a str, path or array, got bytes {spec!r}")
    if not isinstance(spec, str):
        return as_kernel(spec, "spec")
    if spec.strip().lower().endswith(_FILE_SUFFIXES):
        return _load_file(spec.strip())
    builder, kwargs = _parse_spec(spec, ndim)
    try:
        return builder(**kwargs)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"spec {spec!r}: {exc}") from exc


def spec_terms(spec: str, *, ndim: int | None = None) -> Terms | None:
    """The separable terms ``[(weight, [1-D vector per axis]), ...]`` of a named kernel spec,
    or None when the kernel is not a sum of separable terms by construction (``gabor``,
    ``disk``, files, ...). ``sum_r weight_r * outer(vectors_r)`` is exactly
    ``from_spec(spec, ndim=ndim)``; nothing N-D is allocated.

    Examples
    --------
    >>> [(w, [v.tolist() for v in vs]) for w, vs in spec_terms("sobel:axis=0")]
    [(1.0, [[-1.0, 0.0, 1.0], [1.0, 2.0, 1.0]])]
    >>> spec_terms("disk:radius=3") is None
    True
    """
    if not isinstance(spec, str) or spec.strip().lower().endswith(_FILE_SUFFIXES):
        return None
    builder, kwargs = _parse_spec(spec, ndim)
    terms_of = KERNEL_TERMS.get(builder)
    if terms_of is None:
        return None
    try:
        return terms_of(**kwargs)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"spec {spec!r}: {exc}") from exc


def spec_parameters(spec: str, *, ndim: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The keyword arguments a named kernel spec gives its builder (with ``ndim`` added as
    :func:`from_spec` adds it) and every parameter the builder takes.

    Raises what :func:`from_spec` raises for an unknown kernel or a malformed spec.

    Examples
    --------
    >>> spec_parameters("gaussian:sigma=2", ndim=3)[0]
    {'sigma': 2, 'ndim': 3}
    >>> spec_parameters("gaussian:sigma=[1,2]", ndim=3)[0]  # a per-axis list fixes ndim
    {'sigma': [1, 2]}
    """
    _, _, params, kwargs = _read_spec(spec)
    return _with_ndim(params, kwargs, ndim), list(params)


def extend_spec(spec: str, params: dict[str, Any]) -> str:
    """``spec`` with ``key=value`` pieces appended for ``params`` (numbers, bools, lists).

    Examples
    --------
    >>> extend_spec("gaussian", {"sigma": [1.5, 2.0]})
    'gaussian:sigma=[1.5,2]'
    >>> extend_spec("sobel:axis=0", {"ndim": 3})
    'sobel:axis=0,ndim=3'
    """
    if not params:
        return spec
    _, sep, rest = spec.partition(":")
    pieces = ",".join(f"{key}={_spec_value(value)}" for key, value in params.items())
    return spec + ("," if sep and rest.strip() else ":" if not sep else "") + pieces


def _spec_value(value: Any) -> str:
    """A value as spec text (what :func:`_parse_value` reads back)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_spec_value(v) for v in value) + "]"
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def _parse_spec(spec: str, ndim: int | None) -> tuple[Callable[..., np.ndarray], dict[str, Any]]:
    """The builder and its keyword arguments for a ``name:key=value,...`` spec."""
    name, builder, params, kwargs = _read_spec(spec)
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty and p.name not in kwargs
    ]
    if missing:
        raise ValueError(
            f"spec: kernel {name!r} requires {', '.join(missing)} (e.g. "
            f"'{name}:{missing[0]}=...'), got {spec!r}"
        )
    return builder, _with_ndim(params, kwargs, ndim)


def _with_ndim(params: Any, kwargs: dict[str, Any], ndim: int | None) -> dict[str, Any]:
    """``kwargs`` plus ``ndim`` when the builder takes it and the spec leaves it open (no
    ``ndim=``, no per-axis list)."""
    if (
        ndim is not None
        and "ndim" in params
        and "ndim" not in kwargs
        and not any(_is_seq(v) for v in kwargs.values())
    ):
        return {**kwargs, "ndim": _check_ndim(ndim)}
    return kwargs


def _read_spec(spec: str) -> tuple[str, Callable[..., np.ndarray], Any, dict[str, Any]]:
    """Name, builder, the builder's parameters and the values the spec gives them."""
    text = spec.strip()
    if not text:
        raise ValueError(
            "spec must not be empty; give a kernel name, 'name:key=value,...' or a file"
        )
    name, sep, rest = text.partition(":")
    name = name.strip().lower()
    if name not in KERNELS:
        raise ValueError(
            f"spec: unknown kernel {name!r} in {spec!r}; known kernels: "
            f"{', '.join(sorted(KERNELS))}"
        )
    builder = KERNELS[name]
    params = inspect.signature(builder).parameters
    allowed = list(params)
    kwargs: dict[str, Any] = {}
    if sep:
        if not rest.strip():
            raise ValueError(f"spec: empty parameter list after ':' in {spec!r}")
        for piece in _split_top(rest, spec):
            key, eq, value = piece.partition("=")
            key = key.strip().lower()  # names any case, as the kernel's name
            if not eq:
                raise ValueError(f"spec: missing '=' in {piece.strip()!r} of {spec!r}")
            if not key:
                raise ValueError(f"spec: empty parameter name in {piece.strip()!r} of {spec!r}")
            if key not in params:
                raise ValueError(
                    f"spec: unknown parameter {key!r} for kernel {name!r}; allowed: "
                    f"{', '.join(allowed)}"
                )
            if key in kwargs:
                raise ValueError(f"spec: parameter {key!r} given twice in {spec!r}")
            kwargs[key] = _parse_value(value, key, spec)
    return name, builder, params, kwargs
