"""Exact separability tests and factorization of kernels into sums of separable terms.

A kernel ``K`` of shape ``(n_0, ..., n_{d-1})`` is written as

    K ~= sum_r  weights[r] * factors[r][0] (x) factors[r][1] (x) ... (x) factors[r][d-1]

where ``(x)`` is the outer product and ``factors[r][k]`` is a 1-D array of length ``n_k``.
Correlating with each term is a chain of 1-D passes, so a rank-``r`` factorization costs
``r * sum(n_k)`` multiply-adds per output element instead of ``prod(n_k)``.

How the terms are found
-----------------------
* 1-D kernels are their own factor.
* 2-D kernels: the singular value decomposition. Truncating it after ``r`` terms is the best
  rank-``r`` approximation in the Frobenius norm (Eckart–Young), with relative error
  ``sqrt(sum_{i>r} s_i**2) / ||K||_F``.
* N-D kernels: a kernel is exactly separable iff every mode unfolding has rank 1. Otherwise the
  kernel is compressed by the higher-order SVD (HOSVD) to its multilinear-rank core and a sum of
  rank-1 terms (CP decomposition) is fitted to the core by alternating least squares from a
  HOSVD start and seeded random restarts. Unlike matrices, tensors may have *no* best rank-r
  approximation (the 3-D Laplacian of Gaussian has CP rank 3 but border rank 2): such fits are
  detected by the cancellation between their terms, flagged ``degenerate``, and replaced by a
  bounded-norm (ridge-regularised) fit instead of returning exploding terms. When no CP fit
  reproduces the kernel, an exact fallback (recursive SVD of the mode unfoldings) is used, so
  an exact decomposition is always returned when no ``rank``/``tol`` limit is set. A fit of a
  fixed ``rank`` is the end of a chain of fits of ranks 1, 2, ..., each started from the one
  before plus the best rank-1 fit of its residual, so errors never increase with the rank and
  never more than ``rank`` terms are returned (:func:`fits_by_rank` returns the whole chain).
* Rank-1 kernels whose values are integers up to one common scale (Sobel, binomial, box) are
  factored into exactly those integer 1-D kernels (also when the values are the float32
  rounding of such a kernel).

Sign convention: each factor is flipped so its sum is positive (or, for a zero-sum factor such
as ``[-1, 0, 1]``, its last non-zero entry is positive); the sign goes into the weight.

Precision: ranks are judged at the precision of the kernel as given
-------------------------------------------------------------------
A float32 kernel is only known to float32 rounding, so "exact" means "reproduces it to float32
rounding": ``np.outer(g, g).astype(np.float32)`` for a Gaussian ``g`` is rank 1, although its
float64 singular values beyond the first are not zero (they are the float32 rounding, ~1e-8
relative). The precision is taken from the kernel's dtype -- float16 and float32 kernels are
judged at their own rounding; float64, integer and bool kernels (and kernel specs, which are
float64) at float64 -- or given explicitly with ``precision=`` (for a kernel already converted
to float64, or to judge a float64 kernel more coarsely). It is recorded in
``Factorization.precision`` and used by every rank and exactness decision: the rank of a
spectrum is the smallest ``r`` whose discarded tail ``sqrt(sum_{i>=r} s_i**2) / ||s||`` is at
most :func:`exact_tolerance` (per mode unfolding ``exact_tolerance / sqrt(ndim)`` for N-D
kernels, so the multilinear truncation error stays within it), CP fits stop at it, the exact
recursive SVD truncates at it and ``Factorization.exact`` compares the error with it. So a
float64 kernel with a relative rank-2 component of 1e-9 is rank 2, while the same kernel
judged at float32 (``precision=np.float32``) is rank 1: 1e-9 is below float32 rounding.
Weights and factors are always float64 and ``error`` is relative to the kernel as given.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._validate import as_kernel, check_nonnegative_int, check_positive_float, check_tol

__all__ = [
    "Factorization",
    "is_separable",
    "separable_rank",
    "separate",
    "separate_within",
]

_EPS = float(np.finfo(np.float64).eps)
#: Wall-clock seconds one N-D ``separate`` call (the CP search for the smallest rank and the
#: chain of ``fits_by_rank`` below it, together) may spend before falling back to the exact
#: recursive-SVD decomposition (within ``tol`` for a ``tol`` search). Past it the first three
#: candidate ranks still get one full fit each (no restarts); ``fits_by_rank`` takes as long
#: again for its rows.
CP_SEARCH_SECONDS = 3.0
#: Cancellation ratio ``sum_r ||t_r|| / ||sum_r t_r||`` above which a CP fit with two nearly
#: opposite terms (triple-cosine product <= -``DEGENERACY_CONGRUENCE``) is degenerate: its
#: terms cancel. The one definition, also for ``sepconv.nn.factorize(kind='cp')``.
DEGENERACY_THRESHOLD = 2.0


#: The precisions ranks can be judged at (dtype names).
PRECISIONS = ("float16", "float32", "float64")


def _precision_of_dtype(dtype: Any) -> np.dtype | None:
    """float16/float32 stay; float64, longer floats, integers and bools -> float64; else None."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if dt.kind == "f":
        return np.dtype(
            np.float16 if dt.itemsize == 2 else np.float32 if dt.itemsize == 4 else np.float64
        )
    if dt.kind in "biu":
        return np.dtype(np.float64)
    return None


def kernel_precision(kernel: Any, precision: Any = None) -> np.dtype:
    """The floating-point precision the ranks of ``kernel`` are judged at.

    Parameters
    ----------
    kernel : array_like or str or os.PathLike
        The kernel as given (before any conversion to float64): its dtype decides -- float16
        and float32 are kept, float64, integer and bool kernels mean float64. A ``.npy`` path
        gives the dtype stored in the file; other specs (named kernels, ``.csv``) are float64.
    precision : dtype or str, optional
        Explicit precision (``numpy.float32``, ``'float32'``, ...); overrides the inference.
        Integer and bool dtypes mean float64.

    Returns
    -------
    numpy.dtype
        float16, float32 or float64.

    Raises
    ------
    TypeError
        ``precision`` is not a dtype.
    ValueError
        ``precision`` is a dtype that is not real (complex, string, object, datetime).

    Examples
    --------
    >>> import numpy as np
    >>> kernel_precision(np.ones((3, 3), np.float32)), kernel_precision([[1, 2], [3, 4]])
    (dtype('float32'), dtype('float64'))
    >>> kernel_precision(np.ones(3), precision="float16")
    dtype('float16')
    """
    if precision is not None:
        try:
            dt = np.dtype(precision)
        except (TypeError, ValueError):
            raise TypeError(
                f"precision must be None or a dtype such as numpy.float32 or 'float32', "
                f"got {precision!r}"
            ) from None
        out = _precision_of_dtype(dt)
        if out is None:
            raise ValueError(
                f"precision must be a real dtype ({', '.join(PRECISIONS)}; integer and bool "
                f"mean float64), got {dt.name}"
            )
        return out
    if isinstance(kernel, (str, os.PathLike)):
        path = os.fspath(kernel)
        if isinstance(path, str) and path.strip().lower().endswith(".npy"):
            try:
                stored = np.load(path.strip(), mmap_mode="r", allow_pickle=False).dtype
            except Exception:  # unreadable: from_spec reports it
                return np.dtype(np.float64)
            return _precision_of_dtype(stored) or np.dtype(np.float64)
        return np.dtype(np.float64)
    dtype = getattr(kernel, "dtype", None)
    if not isinstance(dtype, np.dtype):
        try:
            dtype = np.asarray(kernel).dtype
        except Exception:  # ragged lists and the like: as_kernel reports it
            return np.dtype(np.float64)
    return _precision_of_dtype(dtype) or np.dtype(np.float64)


def exact_tolerance(shape: Sequence[int], precision: Any = np.float64) -> float:
    """Relative Frobenius error that counts as "reproduces the kernel to float rounding".

    ``max(16 * max(shape) * sqrt(prod(shape)) * eps64, 2 * eps)`` with ``eps`` the machine
    epsilon of ``precision``: the float64 computation's own rounding, or 4 half-units of
    rounding of a float32/float16 kernel (rounding a kernel changes it by at most half a unit
    relative, elementwise and so in the Frobenius norm, so the rounding of a rank-r kernel is
    within it of rank r). No more: at 8 eps a float16 kernel's genuine 0.5 % rank-2 component
    was called rounding and dropped.

    Examples
    --------
    >>> import numpy as np
    >>> f"{exact_tolerance((9, 9)):.2g}", f"{exact_tolerance((9, 9), np.float32):.2g}"
    ('2.9e-13', '2.4e-07')
    """
    prec = kernel_precision(None, precision)
    size = math.prod(shape)
    computation = 16.0 * max(shape) * math.sqrt(size) * _EPS
    return max(computation, 2.0 * float(np.finfo(prec).eps))


def _mode_tolerance(shape: Sequence[int], precision: Any) -> float:
    """Tail allowed per mode unfolding: the truncation errors of all modes add in squares."""
    tol = exact_tolerance(shape, precision)
    return tol / math.sqrt(len(shape)) if len(shape) > 2 else tol


def rank_lower_bound(kernel: Any, *, precision: Any = None) -> int:
    """No fewer separable terms reproduce ``kernel`` to its precision: the largest mode rank.

    Cheap (one SVD per axis); equals the separable rank for 1-D and 2-D kernels. A sum of
    ``r`` separable terms within ``exact_tolerance`` has every mode unfolding within it of
    rank ``r``, so the largest mode rank at that tolerance is a lower bound.
    """
    prec = kernel_precision(kernel, precision)
    K, _ = _scaled(as_kernel(kernel))
    if not np.any(K):
        return 0
    if K.ndim == 1:
        return 1
    tol = exact_tolerance(K.shape, prec)
    return max(_numerical_rank(s, tol) for s in _mode_spectra(K))


@dataclass(frozen=True, eq=False)
class Factorization:
    """A kernel written as a weighted sum of separable (outer-product) terms.

    Attributes
    ----------
    weights : ndarray, shape (rank,)
        Weight of each term.
    factors : tuple of tuple of ndarray
        ``factors[r][k]`` is the 1-D factor of term ``r`` along axis ``k``.
    shape : tuple of int
        Shape of the kernel.
    kernel : ndarray
        The kernel the factorization approximates (read-only float64 copy).
    singular_values : ndarray or None
        For 1-D and 2-D kernels the singular values the rank was chosen from; ``None`` for
        N-D kernels (see ``mode_spectra``).
    mode_spectra : tuple of ndarray
        Singular values of each mode unfolding ``K_(k)`` (for 2-D both equal the SVD spectrum).
        The kernel is exactly separable iff every spectrum has one non-zero value.
    method : str
        ``'trivial'`` (1-D or zero kernel), ``'integer'`` (exact integer factors), ``'svd'``,
        ``'cp-als'``, ``'cp-als-ridge'`` (bounded fit of a degenerate problem) or
        ``'recursive-svd'`` (exact fallback).
    degenerate : bool
        True when the unconstrained best fit of this rank does not exist or is numerically
        useless (terms cancel with diverging norms); the terms returned are a bounded fit.
    notes : tuple of str
        Human-readable remarks on how the factorization was chosen.
    precision : str
        The floating-point precision (dtype name: ``'float16'``, ``'float32'`` or
        ``'float64'``) at which the ranks and ``exact`` were judged: that of the kernel as
        given unless ``separate(..., precision=)`` said otherwise (see the module notes).

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv import separate
    >>> f = separate(np.outer([1, 2, 1], [-1, 0, 1]))
    >>> f.rank, f.factors[0][0], f.factors[0][1], f.weights
    (1, array([1., 2., 1.]), array([-1., 0., 1.]), array([1.]))
    >>> f.error, f.precision
    (0.0, 'float64')
    """

    weights: np.ndarray
    factors: tuple[tuple[np.ndarray, ...], ...]
    shape: tuple[int, ...]
    kernel: np.ndarray = field(repr=False)
    singular_values: np.ndarray | None = field(repr=False)
    mode_spectra: tuple[np.ndarray, ...] = field(repr=False)
    method: str = "svd"
    degenerate: bool = False
    notes: tuple[str, ...] = ()
    precision: str = "float64"

    def __post_init__(self) -> None:
        for arr in (self.weights, self.kernel, *(f for term in self.factors for f in term)):
            arr.setflags(write=False)

    # -- structure -------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """Number of separable terms."""
        return int(self.weights.shape[0])

    @property
    def ndim(self) -> int:
        """Number of kernel axes."""
        return len(self.shape)

    @property
    def multilinear_rank(self) -> tuple[int, ...]:
        """Numerical rank of each mode unfolding, to the rounding of ``precision``.

        The smallest rank whose discarded singular values have a relative norm within
        ``exact_tolerance(shape, precision)`` (divided by ``sqrt(ndim)`` for N-D kernels).
        """
        tol = _mode_tolerance(self.shape, self.precision)
        return tuple(_numerical_rank(s, tol) for s in self.mode_spectra)

    def to_dense(self) -> np.ndarray:
        """The kernel this factorization represents, as a dense float64 array."""
        return _dense(self.weights, self.factors, self.shape)

    # -- accuracy --------------------------------------------------------------------------
    @property
    def error(self) -> float:
        """Relative Frobenius error ``||K - to_dense()||_F / ||K||_F`` (0 for a zero kernel)."""
        return self._errors[0]

    @property
    def error_bound(self) -> float:
        """Bound on the max abs output error per unit input.

        For any input with ``|x| <= 1`` the filtered outputs of the kernel and of this
        factorization differ by at most ``sum |K - to_dense()|`` (the l1 norm of the weight
        error). The bound is attained by ``x = sign(K - to_dense())``; float rounding of the
        computation itself is not included.
        """
        return self._errors[1]

    @property
    def exact(self) -> bool:
        """True when the factorization reproduces the kernel to the rounding of ``precision``.

        ``error <= exact_tolerance(shape, precision)``: for a float32 kernel, to float32
        rounding.
        """
        return self.error <= exact_tolerance(self.shape, self.precision)

    @property
    def cancellation(self) -> float:
        """``sum_r |w_r| ||t_r|| / ||K_r||``: 1 for orthogonal terms, large when terms cancel.

        Large values mean rounding errors of the individual passes are amplified by this factor.
        """
        if self.rank == 0:
            return 1.0
        _, e = _scaled(self.kernel)  # the norms at a power-of-two scale: no overflow
        norms = np.abs(np.ldexp(self.weights, -e)) * np.array(
            [math.prod(_norm(f) for f in term) for term in self.factors]
        )
        total = _norm(np.ldexp(self.to_dense(), -e))
        return float(norms.sum() / total) if total > 0 else math.inf

    @property
    def _errors(self) -> tuple[float, float]:
        cached = self.__dict__.get("_cached_errors")
        if cached is None:
            cached = _errors_of(self.kernel, self.to_dense())
            object.__setattr__(self, "_cached_errors", cached)
        return cached

    # -- cost ------------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        """Multiply-adds per output element when run as 1-D passes: ``rank * sum(shape)``."""
        return self.rank * sum(self.shape)

    @property
    def direct_macs(self) -> int:
        """Multiply-adds per output element of the dense kernel: ``prod(shape)``."""
        return math.prod(self.shape)

    @property
    def speedup(self) -> float:
        """Predicted speed-up of the separable passes over direct correlation (MAC ratio)."""
        return self.direct_macs / self.macs if self.macs else math.inf

    def __repr__(self) -> str:
        flags = ", degenerate" if self.degenerate else ""
        prec = "" if self.precision == "float64" else f", precision={self.precision!r}"
        return (
            f"Factorization(shape={self.shape}, rank={self.rank}, method={self.method!r}, "
            f"error={self.error:.3g}, macs={self.macs} vs {self.direct_macs} direct"
            f"{prec}{flags})"
        )


# ----------------------------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------------------------


def _kernel_array(kernel: Any) -> np.ndarray:
    """The kernel as a checked real array: an array_like, a kernel spec or a kernel file path."""
    if isinstance(kernel, (str, os.PathLike)):
        from .kernels import from_spec

        kernel = from_spec(kernel)
    return as_kernel(kernel)


def separate(
    kernel: Any, *, rank: int | None = None, tol: float | None = None, precision: Any = None
) -> Factorization:
    """Factorize a kernel into a weighted sum of separable (outer-product) terms.

    Parameters
    ----------
    kernel : array_like, str or os.PathLike
        Real, finite kernel of any dimension >= 1, or a kernel spec understood by
        :func:`sepconv.kernels.from_spec` (``"gaussian:sigma=2"``, or the path of a ``.npy``
        or ``.csv`` file, also as a ``pathlib.Path``).
    rank : int, optional
        Maximum number of terms. 2-D: the best rank-``rank`` approximation (Eckart–Young).
        N-D: a CP fit of that rank, flagged ``degenerate`` if no best fit exists. Never more
        terms than needed to reproduce the kernel exactly.
    tol : float, optional
        Largest relative Frobenius error allowed; the smallest rank meeting it is returned
        (capped by ``rank`` when both are given). Values below float rounding mean "exact".
    precision : dtype or str, optional
        Precision at which ranks and exactness are judged (``numpy.float32``, ``'float32'``,
        ...). Default: that of the kernel as given -- float16 and float32 kernels their own,
        float64, integer and bool kernels and kernel specs float64 (a ``.npy`` file: its
        stored dtype). Pass it when the kernel was converted to float64 on the way here.

    Returns
    -------
    Factorization
        With neither ``rank`` nor ``tol``: the smallest rank found that reproduces the kernel
        to the rounding of ``precision`` (guaranteed minimal in 1-D and 2-D; in N-D, CP rank is
        NP-hard in general and the rank found is an upper bound that is minimal for the
        kernels in the tests). ``weights`` and ``factors`` are float64 and ``error`` is
        relative to the kernel as given.

    Raises
    ------
    TypeError
        ``kernel`` is not a real numeric array (complex, object, string dtypes); ``precision``
        is not a dtype.
    ValueError
        ``kernel`` is empty, 0-d or not finite; ``rank`` < 1 or above the largest useful rank
        (``min(shape)`` in 2-D, ``prod(shape) // max(shape)`` in N-D); ``tol`` < 0 or NaN;
        ``precision`` is not a real dtype.

    Notes
    -----
    The cost of running the result as 1-D passes is ``rank * sum(shape)`` multiply-adds per
    output element (``Factorization.macs``), against ``prod(shape)`` for the dense kernel.

    N-D searches are bounded in time: about ``CP_SEARCH_SECONDS`` (3 s) for the whole call,
    then the recursive-SVD decomposition (exact, or within ``tol``) unless a CP fit was found.
    The rank found can then depend on the machine's speed; ``fits_by_rank`` may find a
    smaller one.

    Ranks are judged at the kernel's precision (``Factorization.precision``): the float32
    rounding of a separable kernel is separable (rank 1, ``exact``: it is reproduced to
    float32 rounding), while a float64 kernel with a relative rank-2 component of 1e-9 is rank
    2 -- and rank 1 with ``precision=numpy.float32``, where 1e-9 is below the rounding.
    "Exact" means a relative error of at most :func:`exact_tolerance` ``(shape, precision)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv import separate, kernels
    >>> separate(kernels.gaussian(2.0)).rank
    1
    >>> f = separate(kernels.laplacian_of_gaussian(1.5))
    >>> f.rank, f.exact
    (2, True)
    >>> f = separate(kernels.disk(6, antialias=True), tol=0.05)
    >>> f.rank, bool(f.error <= 0.05)
    (4, True)
    >>> g = kernels.gaussian1d(1.0)
    >>> K32 = np.outer(g, g).astype(np.float32)
    >>> f = separate(K32)
    >>> f.rank, f.precision, f.exact
    (1, 'float32', True)
    >>> separate(K32.astype(np.float64)).rank > 1   # its float32 rounding is not rank 1 in float64
    True
    >>> separate(K32.astype(np.float64), precision=np.float32).rank
    1
    """
    prec = kernel_precision(kernel, precision)  # checks an explicit precision first
    K = _kernel_array(kernel)
    tol = check_tol(tol)
    Ks, e = _scaled(K)
    if e:  # factorized at a power-of-two scale (exact), the weights scaled back
        return _rescaled(separate(Ks, rank=rank, tol=tol, precision=prec), e, K)
    max_rank = max_useful_rank(K.shape)
    if rank is not None:
        rank = check_nonnegative_int(rank, "rank", minimum=1)
        if rank > max_rank:
            raise ValueError(
                f"rank must be between 1 and {max_rank} for a kernel of shape {K.shape}, got {rank}"
            )
    exact_tol = exact_tolerance(K.shape, prec)
    target = exact_tol if tol is None else max(tol, exact_tol)
    spectra = _mode_spectra(K)

    if not np.any(K):
        return _make(K, [], spectra, "trivial", prec, notes=("all-zero kernel: rank 0",))
    if K.ndim == 1:
        return _make(K, [(1.0, (K.copy(),))], spectra, "trivial", prec)
    mode_tol = _mode_tolerance(K.shape, prec)
    if all(_numerical_rank(s, mode_tol) == 1 for s in spectra):
        return _rank_one(K, spectra, prec)
    if K.ndim == 2:
        return _separate_2d(K, spectra, rank, target, prec)
    return _NDProblem(K, spectra, prec).separate(rank, target, tol is not None)


def separate_within(
    kernel: Any,
    max_terms: int,
    seconds: float,
    *,
    tol: float | None = None,
    precision: Any = None,
) -> Factorization | None:
    """A factorization of at most ``max_terms`` separable terms that reproduces ``kernel``
    (to its precision, or within ``tol``), searched for about ``seconds``; None if none is
    found. For planners: a rank that would cost more than the dense methods is never worth
    finding, and planning must not cost more than the filter it plans.

    1-D and 2-D kernels (and exactly separable N-D ones) are decided exactly (one SVD). For
    N-D kernels the CP search stops at ``max_terms`` or once ``seconds`` have passed (checked
    between ranks); None then means "not found cheaply", not "does not exist".

    Examples
    --------
    >>> from sepconv import kernels
    >>> separate_within(kernels.gaussian(1.0, ndim=3), 1, 0.05).rank
    1
    >>> separate_within(kernels.ball(4), 6, 0.05) is None   # many terms: not worth it
    True
    """
    prec = kernel_precision(kernel, precision)
    K = _kernel_array(kernel)
    tol = check_tol(tol)
    max_terms = check_nonnegative_int(max_terms, "max_terms")
    seconds = check_positive_float(seconds, "seconds", allow_zero=True)
    Ks, e = _scaled(K)
    if e:
        found = separate_within(Ks, max_terms, seconds, tol=tol, precision=prec)
        return None if found is None else _rescaled(found, e, K)
    spectra = _mode_spectra(K)
    mode_tol = _mode_tolerance(K.shape, prec)
    if K.ndim <= 2 or all(_numerical_rank(s, mode_tol) <= 1 for s in spectra):
        f = separate(K, tol=tol, precision=prec)
        return f if f.rank <= max_terms else None
    problem = _NDProblem(K, spectra, prec)
    exact_tol = exact_tolerance(K.shape, prec)
    target = exact_tol if tol is None else max(tol, exact_tol)
    first = 1 if tol is not None else problem.lower
    start = time.perf_counter()
    for R in range(first, min(max_terms, problem.upper - 1) + 1):
        if R > first and time.perf_counter() - start > seconds:
            break
        n_random = 4 if R <= problem.lower + 2 else 1  # as the exact search in ``separate``
        step = problem.step(R, None, target, n_random, search=True, deadline=start + seconds)
        if step.meets:
            return problem.make(step)
    if problem.upper <= max_terms:  # the exact recursive-SVD decomposition is cheap enough
        return problem.make_fallback()
    return None


def separable_rank(kernel: Any, *, tol: float | None = None, precision: Any = None) -> int:
    """Smallest number of separable terms that reproduce ``kernel`` within ``tol``.

    Parameters
    ----------
    kernel : array_like, str or os.PathLike
        Real, finite kernel (or kernel spec, or the path of a kernel file).
    tol : float, optional
        Relative Frobenius error allowed; default: exact to the rounding of ``precision``.
    precision : dtype or str, optional
        Precision the rank is judged at; default that of the kernel as given (float16 and
        float32 kernels their own, everything else float64). See :func:`separate`.

    Returns
    -------
    int
        1 for a separable kernel, 0 for an all-zero kernel.

    Notes
    -----
    The float32 rounding of a separable kernel has rank 1 (at float32); the same values
    converted to float64 do not, unless ``precision=numpy.float32`` is passed. A float64
    kernel with a relative rank-2 component of 1e-9 has rank 2, and rank 1 at float32.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv import separable_rank, kernels
    >>> separable_rank(kernels.sobel(axis=0)), separable_rank(kernels.laplace())
    (1, 2)
    >>> separable_rank(kernels.gaussian(1.0, ndim=3).astype(np.float32))
    1
    """
    return separate(kernel, tol=tol, precision=precision).rank


def is_separable(kernel: Any, *, tol: float | None = None, precision: Any = None) -> bool:
    """True when ``kernel`` is (to its precision's rounding, or within ``tol``) one outer product.

    Exact test: every mode unfolding of the kernel has rank 1 at the precision of the kernel
    as given (or ``precision``; see :func:`separate`).

    Notes
    -----
    A float32 kernel that is the float32 rounding of a separable kernel is separable; a
    float64 kernel with a relative rank-2 component of 1e-9 is not, but is with
    ``precision=numpy.float32``.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv import is_separable
    >>> is_separable(np.outer([1, 4, 6, 4, 1], [1, 2, 1])), is_separable(np.eye(3))
    (True, False)
    """
    return separable_rank(kernel, tol=tol, precision=precision) <= 1


def fits_by_rank(kernel: Any, *, precision: Any = None) -> list[Factorization]:
    """The factorization of each rank up to the exact one: what ``sepconv analyze`` tabulates.

    Parameters
    ----------
    kernel : array_like, str or os.PathLike
        Real, finite kernel (or kernel spec, or the path of a kernel file).
    precision : dtype or str, optional
        As for :func:`separate` (default: that of the kernel as given).

    Returns
    -------
    list of Factorization
        Ranks strictly increasing, errors non-increasing, the last one exact (``[]`` for an
        all-zero kernel). 1-D and 2-D: every rank ``1 .. separate(kernel).rank`` (the SVD
        truncations). N-D: ``separate(kernel, rank=R)`` for ``R = 1, 2, ...`` as one chain
        (each rank started from the previous one, so the errors cannot increase), up to where
        more terms would cost more than the dense kernel or the time runs out
        (``CP_SEARCH_SECONDS`` for ``separate``'s search, as long again for the rows), then
        the exact factorization -- so ranks may be
        skipped before the last entry. If the chain finds an exact fit below the rank
        ``separate`` found, that fit ends the list.

    Examples
    --------
    >>> from sepconv import kernels
    >>> [(f.rank, f.exact) for f in fits_by_rank(kernels.laplacian_of_gaussian(1.5))]
    [(1, False), (2, True)]
    """
    prec = kernel_precision(kernel, precision)
    K = _kernel_array(kernel)
    Ks, e = _scaled(K)
    if e:
        return [_rescaled(f, e, K) for f in fits_by_rank(Ks, precision=prec)]
    spectra = _mode_spectra(K)
    mode_tol = _mode_tolerance(K.shape, prec)
    if K.ndim == 1 or not np.any(K) or all(_numerical_rank(s, mode_tol) == 1 for s in spectra):
        exact = separate(K, precision=prec)
        return [exact] if exact.rank else []
    if K.ndim == 2:
        return _svd_truncations(K, spectra, prec)
    # one problem (HOSVD, exact fallback, the chain of fits) for the exact search and the rows
    problem = _NDProblem(K, spectra, prec)
    exact = problem.separate(None, problem.tol, False)
    problem.deadline = time.perf_counter() + CP_SEARCH_SECONDS  # as long again for the rows
    return problem.sweep(exact)


def max_useful_rank(shape: Sequence[int]) -> int:
    """Largest rank ``separate`` accepts: more terms can never be needed for an exact fit.

    ``min(shape)`` in 2-D; in N-D ``prod(shape) // max(shape)`` (one term per fibre of the
    longest axis).
    """
    if len(shape) == 1:
        return 1
    return math.prod(shape) // max(shape)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

Term = tuple[float, tuple[np.ndarray, ...]]


def _make(
    K: np.ndarray,
    terms: Sequence[Term],
    spectra: tuple[np.ndarray, ...],
    method: str,
    precision: np.dtype,
    *,
    degenerate: bool = False,
    notes: Sequence[str] = (),
) -> Factorization:
    terms = [_normalise_signs(w, fs) for w, fs in terms]
    weights = np.array([w for w, _ in terms], dtype=np.float64)
    factors = tuple(tuple(np.ascontiguousarray(f, dtype=np.float64) for f in fs) for _, fs in terms)
    sv = spectra[0].copy() if K.ndim <= 2 else None
    kernel = K.copy()
    return Factorization(
        weights=weights,
        factors=factors,
        shape=K.shape,
        kernel=kernel,
        singular_values=sv,
        mode_spectra=tuple(s.copy() for s in spectra),
        method=method,
        degenerate=degenerate,
        notes=tuple(notes),
        precision=np.dtype(precision).name,
    )


def _scaled(K: np.ndarray) -> tuple[np.ndarray, int]:
    """``K`` times ``2**-e`` with ``max|K| * 2**-e`` in [0.5, 1), and ``e`` (0: ``K`` itself).

    Exact (a power of two; entries below ``2**-1022`` of the result lose bits, which is far
    below any error this module reports). The factorizations square singular values and
    entries: at 1e160 they overflow, at 1e-160 they underflow, and the ranks, errors and
    factors came out NaN (a 1e-200 kernel's "exact" separable terms ran as NaN passes).
    """
    top = float(np.abs(K).max()) if K.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return K, 0
    e = math.frexp(top)[1]
    return (np.ldexp(K, -e), e) if e else (K, 0)


def _rescaled(f: Factorization, e: int, K: np.ndarray) -> Factorization:
    """A factorization of ``K * 2**-e`` as one of ``K``: the weights and spectra times
    ``2**e``, the kernel ``K`` itself.

    A weight that would overflow (unit-norm factors of a kernel near the float64 maximum: the
    weight is the product of the norms, up to ``sqrt(size)`` times ``max|K|``) is moved into
    its factors by powers of two (exact) until each factor's largest magnitude is in [1, 2),
    so the weight is at most the term's largest value (the factors' sign convention kept).
    """
    with np.errstate(over="ignore"):  # singular values beyond the float64 range are inf
        sv = None if f.singular_values is None else np.ldexp(f.singular_values, e)
        spectra = tuple(np.ldexp(s, e) for s in f.mode_spectra)
        weights = np.ldexp(f.weights, e)
    factors = f.factors
    if not np.all(np.isfinite(weights)):
        weights = weights.copy()
        new_factors = []
        for r, term in enumerate(factors):
            if math.isfinite(weights[r]):
                new_factors.append(term)
                continue
            shifts = [1 - math.frexp(float(np.abs(v).max()))[1] if np.any(v) else 0 for v in term]
            new_factors.append(tuple(np.ldexp(v, k) for v, k in zip(term, shifts, strict=True)))
            weights[r] = np.ldexp(f.weights[r], e - sum(shifts))
        factors = tuple(new_factors)
    out = replace(
        f,
        weights=weights,
        factors=factors,
        kernel=K.copy(),
        singular_values=sv,
        mode_spectra=spectra,
    )
    cached = f.__dict__.get("_cached_errors")
    if cached is not None:  # the same numbers at the scale of K: scaling by 2**e is exact
        with np.errstate(over="ignore"):  # an L1 bound beyond the float64 range is inf
            bound = float(np.ldexp(cached[1], e))
        object.__setattr__(out, "_cached_errors", (cached[0], bound))
    return out


def _errors_of(K: np.ndarray, dense: np.ndarray) -> tuple[float, float]:
    """``Factorization.error`` and ``error_bound`` of ``dense`` as an approximation of ``K``.

    At a power-of-two scale of the kernel: a kernel of 1e300 or 1e-300 has the relative error
    of the same kernel at 1.
    """
    kernel, e = _scaled(K)
    diff = kernel - np.ldexp(dense, -e)
    norm = _norm(kernel)
    rel = _norm(diff) / norm if norm > 0 else 0.0
    with np.errstate(over="ignore"):  # an L1 bound beyond the float64 range is inf
        return (rel, float(np.ldexp(float(np.abs(diff).sum()), e)))


def _norm(a: np.ndarray) -> float:
    """The 2-norm of ``a``, without overflow or underflow in the squares."""
    a = np.asarray(a, dtype=np.float64)
    top = float(np.abs(a).max()) if a.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return top
    return top * float(np.linalg.norm(a / top))


def _normalise_signs(weight: float, factors: Sequence[np.ndarray]) -> Term:
    out = []
    w = float(weight)
    for f in factors:
        f = np.asarray(f, dtype=np.float64)
        s = float(f.sum())
        if abs(s) > 1e-12 * float(np.abs(f).sum()):
            sign = 1.0 if s > 0 else -1.0
        else:
            nz = np.flatnonzero(f)
            sign = 1.0 if nz.size == 0 or f[nz[-1]] > 0 else -1.0
        if sign < 0:
            f = -f
            w = -w
        out.append(f)
    return w, tuple(out)


def _dense(weights: np.ndarray, factors: Sequence[Sequence[np.ndarray]], shape) -> np.ndarray:
    """``sum_r weights[r] * outer(factors[r][0], factors[r][1], ...)``, in that order."""
    out = np.zeros(shape, dtype=np.float64)
    for w, fs in zip(weights, factors, strict=True):
        term = np.asarray(fs[0], dtype=np.float64)
        for f in fs[1:]:
            term = np.multiply.outer(term, f)
        out += float(w) * term
    return out


def _unfold(T: np.ndarray, k: int) -> np.ndarray:
    return np.moveaxis(T, k, 0).reshape(T.shape[k], -1)


def _mode_spectra(K: np.ndarray) -> tuple[np.ndarray, ...]:
    if K.ndim == 1:
        return (np.array([np.linalg.norm(K)]),)
    if K.ndim == 2:
        s = np.linalg.svd(K, compute_uv=False)
        return (s, s.copy())
    return tuple(np.linalg.svd(_unfold(K, k), compute_uv=False) for k in range(K.ndim))


def _tail(s: np.ndarray) -> np.ndarray:
    """``tail[r]``: relative Frobenius error of keeping the first ``r`` singular values."""
    sq = np.asarray(s, dtype=np.float64) ** 2
    tail = np.sqrt(np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]]))
    return tail / tail[0] if tail[0] > 0 else tail


def _numerical_rank(s: np.ndarray, tol: float) -> int:
    """Smallest ``r`` whose discarded singular values have relative norm ``<= tol``.

    ``tol`` is relative to ``||s||`` (the Frobenius norm of the matrix): the same criterion as
    ``Factorization.exact``, so a truncation at this rank is exact and one below it is not.
    """
    if s.size == 0 or s[0] == 0:
        return 0
    return max(1, int(np.count_nonzero(_tail(s)[:-1] > tol)))


def _rank_one(K: np.ndarray, spectra: tuple[np.ndarray, ...], prec: np.dtype) -> Factorization:
    exact_int = _integer_rank_one(K, prec)
    if exact_int is not None:
        return _make(K, [exact_int], spectra, "integer", prec)
    vecs = [_leading_vector(_unfold(K, k)) for k in range(K.ndim)]
    weight = float(_contract(K, vecs))
    return _make(K, [(weight, tuple(vecs))], spectra, "svd", prec)


def _leading_vector(M: np.ndarray) -> np.ndarray:
    """The leading left singular vector of a matrix that is rank 1 to rounding.

    Power iteration from its largest column: the second singular value is at rounding level,
    so two steps give the vector to float precision, in O(size) work instead of an SVD's
    O(n^3) (a 1000 x 1000 kernel: milliseconds, not seconds).
    """
    u = M[:, int(np.argmax(np.einsum("ij,ij->j", M, M)))].astype(np.float64)
    for _ in range(3):
        u = M @ (M.T @ u)
        u /= np.linalg.norm(u)
    return u


def _contract(T: np.ndarray, vecs: Sequence[np.ndarray]) -> np.ndarray:
    out = T
    for v in reversed(vecs):
        out = out @ v
    return out


def _integer_rank_one(K: np.ndarray, prec: np.dtype) -> Term | None:
    """Exact integer factors when ``K`` is ``c * (integer outer product)`` for some scale c.

    First exactly (the values times ``c`` are integers and their integer rank-1 structure is
    exact); then to the rounding of ``prec``: the values times ``c`` are within a few units of
    rounding of integers small enough for that to mean something (``< 1 / (16 eps)``, at most
    2**40), those integers are exactly an integer outer product, and the least-squares weight
    reproduces ``K`` within ``exact_tolerance(shape, prec)`` -- e.g. the float32 rounding of
    ``0.37 * outer([1, 4, 6, 4, 1], [1, 2, 3, 2, 1])``.
    """
    nz = np.abs(K[K != 0])
    base = 1.0 / float(nz.min())
    scales = [1.0, base]
    scales += [2.0**e for e in range(1, 60)]
    scales += [k * base for k in range(2, 17)]
    idx = np.unravel_index(int(np.argmax(np.abs(K))), K.shape)

    def integer_factors(n: np.ndarray) -> tuple[float, list[np.ndarray]] | None:
        """``n == m * outer(factors)`` exactly, factors from the fibres through ``idx``."""
        factors = []
        for k in range(K.ndim):
            sl: list[Any] = list(idx)
            sl[k] = slice(None)
            fib = n[tuple(sl)]
            g = math.gcd(*(int(v) for v in fib))
            factors.append(fib / g)
        denom = math.prod(float(f[i]) for f, i in zip(factors, idx, strict=True))
        m = n[idx] / denom
        dense = _dense(np.array([m]), [factors], K.shape)
        return (m, factors) if np.array_equal(dense, n) else None

    # a cheap look at a few values first: most scales fail there, and big kernels cost
    # one pass over every value per scale
    sample = K.reshape(-1)[:: max(1, K.size // 64)]
    for c in scales:
        if not np.all(sample * c == np.round(sample * c)):
            continue
        scaled = K * c
        if not np.all(scaled == np.round(scaled)) or np.abs(scaled).max() > 2.0**40:
            continue
        found = integer_factors(scaled)
        if found is not None:
            return (found[0] / c, tuple(found[1]))

    eps = float(np.finfo(prec).eps)
    limit = min(2.0**40, 1.0 / (16.0 * eps))
    tol = exact_tolerance(K.shape, prec)
    norm = float(np.linalg.norm(K))
    for c in scales:
        near = np.round(sample * c)
        if not np.all(np.abs(sample * c - near) <= 2.0 * eps * np.abs(near)):
            continue
        scaled = K * c
        n = np.round(scaled)
        if np.abs(n).max() > limit or not np.all(np.abs(scaled - n) <= 2.0 * eps * np.abs(n)):
            continue
        found = integer_factors(n)
        if found is None:
            continue
        D = _dense(np.array([1.0]), [found[1]], K.shape)
        w = float(np.vdot(D, K) / np.vdot(D, D))
        if float(np.linalg.norm(K - w * D)) <= tol * norm:
            return (w, tuple(found[1]))
    return None


def _separate_2d(
    K: np.ndarray,
    spectra: tuple[np.ndarray, ...],
    rank: int | None,
    target: float,
    prec: np.dtype,
) -> Factorization:
    u, s, vt = np.linalg.svd(K, full_matrices=False)
    exact_tol = exact_tolerance(K.shape, prec)
    exact_rank = _numerical_rank(s, exact_tol)
    tail = _tail(s)  # tail[r] = relative error of keeping r terms
    r = exact_rank
    if target > exact_tol:
        r = min(r, next(i for i in range(1, len(tail)) if tail[i] <= target))
    notes = []
    if rank is not None and rank < r:
        r = rank
    elif rank is not None and rank > r:
        notes.append(f"rank={rank} requested; {r} term(s) already reproduce the kernel")
    terms = [(float(s[i]), (u[:, i], vt[i])) for i in range(r)]
    return _make(K, terms, spectra, "svd", prec, notes=notes)


def _svd_truncations(
    K: np.ndarray, spectra: tuple[np.ndarray, ...], prec: np.dtype
) -> list[Factorization]:
    """``[separate(K, rank=r) for r in 1 .. exact rank]`` of a 2-D kernel from one SVD.

    The same factorizations as those calls (Eckart–Young: each is a truncation of the one
    SVD that ``_separate_2d`` computes), and their errors, which would otherwise cost one
    dense sum each, accumulated term by term in ``_dense``'s order: a 200 x 200 kernel took a
    minute as 200 separate SVDs and dense sums.
    """
    u, s, vt = np.linalg.svd(K, full_matrices=False)
    exact_rank = _numerical_rank(s, exact_tolerance(K.shape, prec))
    terms = [(float(s[i]), (u[:, i], vt[i])) for i in range(exact_rank)]
    fits = []
    dense = np.zeros(K.shape, dtype=np.float64)
    for r in range(1, exact_rank + 1):
        f = _make(K, terms[:r], spectra, "svd", prec)
        term = np.multiply.outer(f.factors[-1][0], f.factors[-1][1])
        dense += float(f.weights[-1]) * term
        object.__setattr__(f, "_cached_errors", _errors_of(f.kernel, dense))
        fits.append(f)
    return fits


# -- N-D -----------------------------------------------------------------------------------------


def _hosvd(K: np.ndarray, tol: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Orthonormal mode bases (each truncated at relative tail ``tol``) and the core tensor."""
    bases = []
    for k in range(K.ndim):
        u, s, _ = np.linalg.svd(_unfold(K, k), full_matrices=False)
        bases.append(u[:, : max(1, _numerical_rank(s, tol))])
    core = K
    for k, U in enumerate(bases):
        core = np.moveaxis(np.tensordot(U.T, core, axes=(1, k)), 0, k)
    return bases, core


def _khatri_rao(mats: Sequence[np.ndarray]) -> np.ndarray:
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def _cp_dense(A: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    return (A[0] @ _khatri_rao(A[1:]).T).reshape(shape) if len(A) > 1 else A[0].sum(1)


@dataclass
class _CPFit:
    A: list[np.ndarray]
    error: float
    cancellation: float
    congruence: float  # most negative triple-cosine product between two terms (>= -1)
    exact: float = 0.0  # an error at most this is an exact fit (the kernel's exact tolerance)

    @property
    def degenerate(self) -> bool:
        """Harshman's diagnostic: two terms nearly parallel with opposite signs, cancelling.

        Not for an exact fit (error at most ``exact``) with moderate cancellation (at most
        ``EXACT_FIT_CANCELLATION``): two nearly parallel terms can be the exact answer (the
        3-D difference of Gaussians, triple cosine -0.85 and cancellation 2.4, is exactly 2
        terms), while a degenerate problem only approaches an exact fit as the cancellation
        diverges. (Approximate fits within a ``tol`` keep the diagnostic: a degenerate rank
        creeping to ``tol`` is not the chain's fit of that rank.)
        """
        if self.error <= self.exact and self.cancellation <= exact_fit_cancellation(self.exact):
            return False
        return (
            self.congruence <= -DEGENERACY_CONGRUENCE and self.cancellation > DEGENERACY_THRESHOLD
        )


#: Triple-cosine product below minus this marks two CP terms as cancelling (degenerate fit).
DEGENERACY_CONGRUENCE = 0.85
#: Largest cancellation ratio at which a fit that meets its target is accepted although its
#: terms are nearly opposite: its terms' rounding costs at most this many units of rounding.
EXACT_FIT_CANCELLATION = 10.0


def exact_fit_cancellation(exact: float) -> float:
    """Largest cancellation of an exact fit (error at most ``exact``) that is not degenerate.

    :data:`EXACT_FIT_CANCELLATION`, or, for a float64 judgement (``exact`` below float32's
    2 eps), as many units of float64 rounding as ``exact`` holds: terms that cancel ``c``-fold
    reproduce the kernel to ``c`` eps64, within ``exact``. The 3-D difference of Gaussians
    of sigmas 1.5 and 1.6 is exactly 2 terms that cancel 16-fold (its own definition,
    ``G1 - G2``, cancels as much). A degenerate problem's error falls only like 1 / c, so it
    would need a cancellation of about 1 / ``exact`` (1e11 and more) to pass for exact.
    """
    if exact < 2.0 * float(np.finfo(np.float32).eps):
        return max(EXACT_FIT_CANCELLATION, exact / _EPS)
    return EXACT_FIT_CANCELLATION


#: ALS sweeps per fit of a kernel's core (Levenberg–Marquardt polish then takes a good fit to
#: float rounding). What the search has always run: the stall test of ``_cp_als`` used to
#: compare sweep 50 with an infinite "previous error", which stopped every fit there.
KERNEL_ALS_SWEEPS = 50


def _congruence(A: Sequence[np.ndarray]) -> float:
    R = A[0].shape[1]
    if R < 2:
        return 0.0
    C = np.ones((R, R))
    for M in A:
        n = np.linalg.norm(M, axis=0)
        n[n == 0] = 1.0
        Mn = M / n
        C *= Mn.T @ Mn
    C[np.diag_indices(R)] = 0.0
    return float(C.min())


def _assess(G: np.ndarray, A: list[np.ndarray], norm: float, exact: float = 0.0) -> _CPFit:
    dense = _cp_dense(A, G.shape)
    err = float(np.linalg.norm(G - dense)) / norm
    term_norms = np.prod([np.linalg.norm(M, axis=0) for M in A], axis=0)
    total = float(np.linalg.norm(dense))
    canc = float(term_norms.sum() / total) if total > 0 else math.inf
    return _CPFit(A, err, canc, _congruence(A), exact)


class _MTTKRP:
    """``_unfold(T, n) @ _khatri_rao([A_m for m != n])`` without the whole Khatri-Rao product.

    The largest other mode is contracted by one matrix product (``T`` is laid out for it once,
    here), the rest against their (small) Khatri-Rao product, so no intermediate is larger
    than ``T.size / max(other sizes) * rank``: a conv weight of ``512 x 512 x 3 x 3`` never
    needs the ``786432 x rank`` product of its other modes.
    """

    def __init__(self, T: np.ndarray, n: int) -> None:
        others = sorted((m for m in range(T.ndim) if m != n), key=lambda m: -T.shape[m])
        self.first = others[0]
        self.rest = sorted(others[1:])
        self.shape = (T.shape[n], math.prod(T.shape[m] for m in self.rest))
        layout = T.transpose(n, *self.rest, self.first)
        self.T = np.ascontiguousarray(layout.reshape(-1, T.shape[self.first]))

    def __call__(self, A: Sequence[np.ndarray]) -> np.ndarray:
        Z = (self.T @ A[self.first]).reshape(*self.shape, -1)  # (n_n, rest, rank)
        return np.einsum("nsr,sr->nr", Z, _khatri_rao([A[m] for m in self.rest]))


def _cp_als(
    G: np.ndarray,
    A: list[np.ndarray],
    target: float,
    *,
    ridge: float = 0.0,
    max_iter: int = 2000,
    deadline: float | None = None,
    exact: float = 0.0,
) -> _CPFit:
    """Alternating least squares for a CP fit of ``G`` from the factors ``A``; relative errors.

    The one CP-ALS of sepconv: kernels' HOSVD cores here, conv weights in
    ``sepconv.nn.factorize``. Stops when the error meets ``target``, when it stalls, or --
    without a ridge -- when the fit runs into a degeneracy (terms cancelling), which more
    iterations only make worse. ``A`` (one ``(n_k, rank)`` matrix per mode) is overwritten.
    ``deadline`` (a ``time.perf_counter()`` value): stop at the next assessment after it.
    ``exact``: errors at most this are exact fits (see ``_CPFit.degenerate``).
    """
    d = G.ndim
    norm = float(np.linalg.norm(G))
    mttkrp = [_MTTKRP(G, k) for k in range(d)]
    R = A[0].shape[1]
    prev = math.inf
    fit = _assess(G, A, norm, exact)
    for it in range(1, max_iter + 1):
        for k in range(d):
            others = [A[j] for j in range(d) if j != k]
            V = np.ones((R, R))
            for M in others:
                V *= M.T @ M
            rhs = mttkrp[k](A)
            V[np.diag_indices(R)] += ridge
            A[k] = np.linalg.lstsq(V, rhs.T, rcond=None)[0].T
        late = deadline is not None and time.perf_counter() > deadline
        if it % 10 == 0 or it == max_iter or late:
            fit = _assess(G, A, norm, exact)
            if fit.error <= target or late:
                break
            if ridge == 0.0 and it >= 100 and fit.degenerate:
                break
            if it % 50 == 0:
                if math.isfinite(prev):  # progress over the last 50 sweeps
                    if fit.error > 1e-6 and prev - fit.error < 1e-3 * prev:
                        break  # stalled far from an exact fit: a local optimum (or a swamp)
                    if prev - fit.error <= 1e-12 * prev:
                        break
                prev = fit.error
    return fit


def _cp_jacobian(A: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """d vec(sum_r a_0r (x) ... (x) a_dr) / d (vec A_0, ..., vec A_d), columns in C order."""
    d = len(A)
    R = A[0].shape[1]
    size = math.prod(shape)
    cols = []
    for k in range(d):
        block = np.zeros((size, shape[k], R))
        for r in range(R):
            vecs = [A[j][:, r] if j != k else np.eye(shape[k]) for j in range(d)]
            t = np.asarray(1.0)
            for v in vecs:
                t = np.multiply.outer(t, v)
            # axes: modes before k, (k, i), modes after k -> move the identity's column axis last
            t = np.moveaxis(t, k + 1, -1).reshape(size, shape[k])
            block[:, :, r] = t
        cols.append(block.reshape(size, shape[k] * R))
    return np.concatenate(cols, axis=1)


def _cp_polish(
    G: np.ndarray,
    fit: _CPFit,
    target: float,
    max_iter: int = 200,
    deadline: float | None = None,
    exact: float = 0.0,
) -> _CPFit:
    """Levenberg–Marquardt on all factors at once: quadratic convergence near an exact fit.

    ALS converges only linearly (slowly when factors are nearly collinear); a few damped
    Gauss–Newton steps take a good ALS fit to float rounding. ``deadline`` (a
    ``time.perf_counter()`` value): no further step after it.
    """
    norm = float(np.linalg.norm(G))
    A = [M.copy() for M in fit.A]
    shapes = [M.shape for M in A]
    best = replace(fit, exact=exact)
    mu = 1e-3 * max(float(np.linalg.norm(M)) for M in A) ** 2
    slow = 0
    stalled = False
    for _ in range(max_iter):
        resid = (_cp_dense(A, G.shape) - G).ravel()
        J = _cp_jacobian(A, G.shape)
        JtJ = J.T @ J
        g = J.T @ resid
        improved = False
        for _ in range(20):
            try:
                step = np.linalg.solve(JtJ + mu * np.eye(JtJ.shape[0]), -g)
            except np.linalg.LinAlgError:
                mu *= 10
                continue
            trial, pos = [], 0
            for shp, M in zip(shapes, A, strict=True):
                n = shp[0] * shp[1]
                trial.append(M + step[pos : pos + n].reshape(shp))
                pos += n
            cand = _assess(G, trial, norm, exact)
            if cand.error < best.error:
                stalled = cand.error > 1e-6 and best.error - cand.error < 1e-3 * best.error
                A, best, improved = trial, cand, True
                mu = max(mu / 3, 1e-12)
                break
            mu *= 4
        if not improved or best.error <= target:
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        if stalled:  # linear progress far from an exact fit: a local optimum, stop paying
            slow += 1
            if slow >= 5:
                break
        else:
            slow = 0
    return best


def _jennrich(G: np.ndarray, R: int, rng: np.random.Generator) -> list[np.ndarray] | None:
    """Rank-``R`` CP factors of a 3-D ``G`` by simultaneous diagonalization (Jennrich's
    algorithm), or None where it does not apply.

    When two modes have size ``R`` and ``G = sum_r a_r (x) b_r (x) c_r`` with invertible
    ``A``, ``B`` and no two columns of ``C`` parallel, two random combinations of the slices
    along the third mode are ``M_i = A diag(C^T w_i) B^T``, and the eigenvectors of
    ``M_1 M_2^-1`` are the columns of ``A``: the exact decomposition in closed form, where ALS
    from random starts can miss it (a random rank-3 3x3x3 tensor: 8 of 300 were found at rank
    4 or 5). A start for ALS, which keeps it if it fits.
    """
    if G.ndim != 3:
        return None
    modes = [k for k in range(3) if G.shape[k] == R]
    if len(modes) < 2:
        return None
    a, b = modes[:2]
    c = 3 - a - b
    if G.shape[c] < 2:
        return None
    Gp = np.transpose(G, (a, b, c))
    w = rng.standard_normal((2, Gp.shape[2]))
    M1, M2 = Gp @ w[0], Gp @ w[1]
    try:
        vals, vecs = np.linalg.eig(M1 @ np.linalg.inv(M2))
        if np.abs(np.imag(vals)).max() > 1e-8 * max(float(np.abs(vals).max()), 1e-300):
            return None
        A = np.real(vecs)
        H = np.einsum("ri,ijk->rjk", np.linalg.inv(A), Gp)  # row r of slice k: c_kr b_r
    except np.linalg.LinAlgError:
        return None
    B = np.empty((R, R))
    C = np.empty((Gp.shape[2], R))
    for r in range(R):
        u, sv, vt = np.linalg.svd(H[r], full_matrices=False)
        B[:, r], C[:, r] = u[:, 0], sv[0] * vt[0]
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B)) and np.all(np.isfinite(C))):
        return None
    out: list[np.ndarray] = [np.empty(0)] * 3
    out[a], out[b], out[c] = A, B, C
    return out


def _cp_best(
    G: np.ndarray,
    R: int,
    target: float,
    *,
    n_random: int = 4,
    warm: list[np.ndarray] | None = None,
    deadline: float | None = None,
    full_first: bool = False,
    exact: float = 0.0,
    polish: int | None = None,
) -> list[_CPFit]:
    """Fits from ``warm`` (if given), a HOSVD-style start and seeded random restarts.

    Stops at the first fit that meets ``target`` without being degenerate, or (after at least
    one fit) once ``time.perf_counter()`` passes ``deadline``. ``full_first``: the first fit
    is not cut short by ``deadline`` (its ALS sweeps and a short polish: a rank that must be
    tried gets one real attempt even when the time is up). ``polish``: Levenberg–Marquardt
    steps for a fit close to the target (default 200, 25 under a deadline; they stop at the
    deadline but for ``full_first``'s fit).
    """
    rng = np.random.default_rng(20261124 + R)
    starts = [] if warm is None else [[M.copy() for M in warm]]
    closed = _jennrich(G, R, rng)
    if closed is not None:
        starts.insert(0, closed)
    eye_start = []
    for n in G.shape:
        M = np.zeros((n, R))
        for r in range(R):
            M[r % n, r] = 1.0
        M += 0.1 * rng.standard_normal((n, R))
        eye_start.append(M)
    starts.append(eye_start)
    for _ in range(n_random):
        starts.append([rng.standard_normal((n, R)) for n in G.shape])
    fits: list[_CPFit] = []
    for A0 in starts:
        if deadline is not None and fits and time.perf_counter() > deadline:
            break
        limit = None if full_first and not fits else deadline
        fit = _cp_als(G, A0, target, max_iter=KERNEL_ALS_SWEEPS, deadline=limit, exact=exact)
        if limit is not None and time.perf_counter() > limit:
            fits.append(fit)
            break
        if target < fit.error < 0.2 and not fit.degenerate:
            # under a deadline, a short polish: an exact fit converges in a few LM steps
            fit = _cp_polish(
                G,
                fit,
                target,
                max_iter=polish or (200 if deadline is None else 25),
                deadline=limit,
                exact=exact,
            )
        fits.append(fit)
        if fit.error <= target and not fit.degenerate:
            break
    return fits


def _cp_bounded(G: np.ndarray, start: _CPFit, deadline: float | None = None) -> _CPFit:
    """Ridge-regularised ALS: the best fit whose terms do not cancel (a degenerate problem).

    ``deadline``: no further ridge once past it and a bounded fit is found."""
    scale = float(np.linalg.norm(G)) ** (2.0 / G.ndim)
    best: _CPFit | None = None
    for exp in range(-6, 1):
        if best is not None and deadline is not None and time.perf_counter() > deadline:
            break
        A = [M.copy() for M in start.A]
        fit = _cp_als(G, A, 0.0, ridge=scale * 10.0**exp, max_iter=KERNEL_ALS_SWEEPS)
        fit = _assess(G, fit.A, float(np.linalg.norm(G)))
        if not fit.degenerate and (best is None or fit.error < best.error):
            best = fit
    if best is None:
        A = [M.copy() for M in start.A]
        best = _cp_als(G, A, 0.0, ridge=scale, max_iter=KERNEL_ALS_SWEEPS)
    return best


def _recursive_svd(T: np.ndarray, tol: float) -> list[Term]:
    """Exact decomposition by peeling one axis at a time with the SVD (rank <= prod(shape)/max).

    Every SVD is truncated at relative tail ``tol``; the errors of the ``ndim - 1`` levels add
    in squares, so the result is within ``sqrt(ndim - 1) * tol`` of ``T``.
    """
    if T.ndim == 1:
        return [(1.0, (T,))] if np.any(T) else []
    if T.ndim == 2:
        u, s, vt = np.linalg.svd(T, full_matrices=False)
        r = _numerical_rank(s, tol)
        return [(float(s[i]), (u[:, i], vt[i])) for i in range(r)]
    best: list[Term] | None = None
    for k in range(T.ndim):
        u, s, vt = np.linalg.svd(_unfold(T, k), full_matrices=False)
        rest_shape = tuple(n for j, n in enumerate(T.shape) if j != k)
        terms: list[Term] = []
        for i in range(_numerical_rank(s, tol)):
            for w, fs in _recursive_svd(vt[i].reshape(rest_shape), tol):
                fl = list(fs)
                fl.insert(k, u[:, i])
                terms.append((float(s[i]) * w, tuple(fl)))
        if best is None or len(terms) < len(best):
            best = terms
    assert best is not None
    return best


def _rank_one_fit(T: np.ndarray, iterations: int = 30) -> list[np.ndarray]:
    """Best rank-1 approximation of ``T`` (higher-order power method from the HOSVD vectors).

    Returned as one column per mode whose outer product is the approximation.
    """
    vecs = [np.linalg.svd(_unfold(T, k), full_matrices=False)[0][:, 0] for k in range(T.ndim)]
    for _ in range(iterations):
        for k in range(T.ndim):
            v = T
            for j in reversed(range(T.ndim)):
                if j != k:
                    v = np.tensordot(v, vecs[j], axes=(j, 0))
            n = float(np.linalg.norm(v))
            if n == 0:
                break
            vecs[k] = v / n
    lam = float(_contract(T, vecs))
    scale = abs(lam) ** (1.0 / T.ndim)
    cols = [v * scale for v in vecs]
    cols[0] = cols[0] * (1.0 if lam >= 0 else -1.0)
    return [c[:, None] for c in cols]


@dataclass
class _Step:
    """The fit of one rank in the N-D chain."""

    fit: _CPFit
    meets: bool  # error <= target and not degenerate
    degenerate: bool
    note: str | None


#: Levenberg–Marquardt steps that refine a CP fit found exact at a float16/float32 kernel's
#: precision toward float64 (stopped early once progress is linear).
POLISH_ITERATIONS = 50


class _NDProblem:
    """An N-D kernel compressed by the HOSVD, with the exact fallback and the rank bounds.

    Fixed-rank fits are a chain: the fit of rank ``R`` is also started from the fit of rank
    ``R - 1`` plus the best rank-1 fit of its residual (ALS never increases the error), and
    when every fit of rank ``R`` is worse than that start the start itself is kept, so the
    errors of ranks 1, 2, ... never increase.
    """

    def __init__(self, K: np.ndarray, spectra: tuple[np.ndarray, ...], prec: np.dtype) -> None:
        self.K = K
        self.spectra = spectra
        self.prec = prec
        self.tol = exact_tolerance(K.shape, prec)
        self.bases, self.core = _hosvd(K, _mode_tolerance(K.shape, prec))
        self.norm = float(np.linalg.norm(self.core))
        self.fallback = _recursive_svd(K, self.tol / math.sqrt(K.ndim - 1))
        self.upper = len(self.fallback)
        #: no sum of fewer terms is within ``tol`` (every unfolding would be)
        self.lower = max(_numerical_rank(s, self.tol) for s in spectra)
        # Beyond this many terms, separable passes cost more than the dense kernel and the CP
        # search (the expensive part) is not worth it: the exact fallback is returned instead.
        self.useful = max(1, (math.prod(K.shape) - 1) // sum(K.shape))
        self.notes = [f"multilinear rank {tuple(int(n) for n in self.core.shape)}"]
        #: the last rank the CP searches (and the chain of ``fits_by_rank``) try
        self.last = min(self.upper - 1, max(self.useful, self.lower + 2))
        self._chain: list[tuple[_Step, Factorization]] = []
        self._chain_ended = False
        #: ``time.perf_counter()`` value after which no new rank or restart is started (None:
        #: none); set by the caller for the whole call (search and chain together)
        self.deadline: float | None = None

    def late(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def expand(self, fit: _CPFit) -> list[Term]:
        full = [U @ M for U, M in zip(self.bases, fit.A, strict=True)]
        terms = []
        for r in range(full[0].shape[1]):
            vecs = [M[:, r] for M in full]
            norms = [float(np.linalg.norm(v)) for v in vecs]
            w = math.prod(norms)
            terms.append(
                (w, tuple(v / n if n > 0 else v for v, n in zip(vecs, norms, strict=True)))
            )
        return terms

    def make(self, step: _Step, extra: Sequence[str] = ()) -> Factorization:
        method = "cp-als-ridge" if step.degenerate else "cp-als"
        notes = [*self.notes, *([step.note] if step.note else []), *extra]
        fit = step.fit
        fine = exact_tolerance(self.K.shape, np.float64)
        if step.meets and fit.error > fine:
            # exact at the kernel's (coarser) precision: the rank is settled, but the fit
            # itself is refined toward float64 where the kernel allows it (an integer-valued
            # float32 kernel of exact CP rank 2, fitted to 1.6e-7, moved a float32 result of
            # uint16 data computed in float64 by 1.7e-3; polished, it is exact)
            polished = _cp_polish(self.core, fit, fine, max_iter=POLISH_ITERATIONS, exact=fine)
            if polished.error < fit.error and not polished.degenerate:
                fit = polished
        return _make(
            self.K,
            self.expand(fit),
            self.spectra,
            method,
            self.prec,
            degenerate=step.degenerate,
            notes=notes,
        )

    def make_fallback(
        self, extra: Sequence[str] = (), terms: Sequence[Term] | None = None, tol: float = 0.0
    ) -> Factorization:
        """The exact recursive-SVD decomposition, or ``terms`` (that of a ``tol`` search)."""
        what = f"decomposition within tol={tol:g}" if terms is not None else "exact decomposition"
        notes = [*self.notes, *extra, f"{what} by recursive SVD of the mode unfoldings"]
        if terms is None:
            terms = self.fallback
        return _make(self.K, terms, self.spectra, "recursive-svd", self.prec, notes=notes)

    def step(
        self,
        R: int,
        prev: _CPFit | None,
        target: float,
        n_random: int,
        search: bool = False,
        deadline: float | None = None,
        full_first: bool = False,
        polish: int | None = None,
    ) -> _Step:
        """The rank-``R`` fit: meets ``target``, or the best (bounded if degenerate) found.

        ``search``: only whether rank ``R`` meets the target matters (no bounded refit of a
        degenerate problem); ``deadline``: no further restarts (or ridges) after it;
        ``full_first``: the first start is fitted in full even past ``deadline``; ``polish``:
        as for ``_cp_best``."""
        G = self.core
        warm = None
        if prev is not None:
            resid = G - _cp_dense(prev.A, G.shape)
            new = _rank_one_fit(resid)
            warm = [np.hstack([M, c]) for M, c in zip(prev.A, new, strict=True)]
        fits = _cp_best(
            G,
            R,
            target,
            n_random=n_random,
            warm=warm,
            deadline=deadline,
            full_first=full_first,
            exact=self.tol,
            polish=polish,
        )
        good = [f for f in fits if not f.degenerate]
        best = min(good or fits, key=lambda f: f.error)
        if best.error <= target and not best.degenerate:
            return _Step(best, True, False, None)
        if search:
            return _Step(best, False, best.degenerate, None)
        greedy = None if warm is None else _assess(G, warm, self.norm, self.tol)
        if any(f.degenerate for f in fits):
            worst = min((f for f in fits if f.degenerate), key=lambda f: f.error)
            bounded = _cp_bounded(G, worst, deadline)
            if good and min(good, key=lambda f: f.error).error < bounded.error:
                bounded = min(good, key=lambda f: f.error)
            if greedy is not None and greedy.error < bounded.error:
                bounded = greedy  # the errors of ranks 1, 2, ... never increase
            note = (
                f"degenerate: no best rank-{R} approximation exists; the error falls only as "
                f"terms cancel with diverging norms (ALS reached {worst.error:.3g} at "
                f"cancellation {worst.cancellation:.3g} and kept going); returned a "
                "bounded-norm fit instead"
            )
            return _Step(bounded, False, True, note)
        if greedy is not None and greedy.error < best.error:
            best = greedy
        return _Step(best, False, False, f"best rank-{R} CP fit found by ALS (a local optimum)")

    def separate(self, rank: int | None, target: float, approximate: bool) -> Factorization:
        """``separate`` for this kernel: the exact/``tol`` search, or a fit of ``rank`` terms.

        The search for the smallest rank meeting ``target`` fits each rank afresh; the chain of
        ``fits_by_rank`` (each rank also started from the previous one) can meet it with fewer
        terms (the 7x7x7 ball: 5 against 6), so the search then also runs the chain below the
        rank it found, and returns the first of its fits within ``target``. The rank returned
        is then never larger than that of the first row of ``fits_by_rank`` within ``target``
        -- when time allows: search and chain share one deadline, ``CP_SEARCH_SECONDS`` from
        the start (ranks up to ``lower + 2`` get one full fit each even past it), and the chain
        is skipped when the search ran out of time.
        """
        if self.deadline is None:
            self.deadline = time.perf_counter() + CP_SEARCH_SECONDS
        found, timed_out = self._search(rank, target, approximate)
        if rank is not None or timed_out or self.late():
            return found
        lowest = 1 if approximate else self.lower  # no exact fit has fewer terms
        if found.rank > lowest:
            for _, f in self.chain(min(found.rank - 1, self.last)):
                if f.error <= target:
                    return f
        return found

    def _search(
        self, rank: int | None, target: float, approximate: bool
    ) -> tuple[Factorization, bool]:
        """The search, and whether it stopped for lack of time."""
        upper, lower = self.upper, self.lower
        within: list[Term] | None = None
        if rank is None and approximate and target > self.tol:
            # the fallback of a tol search need only be within tol: the recursive SVD truncated
            # at tol / sqrt(ndim - 1) per level (a random 9x9x9 kernel within 0.1: 66 terms
            # against the 81 of the exact one)
            within = _recursive_svd(self.K, target / math.sqrt(self.K.ndim - 1))
            if len(within) < upper:
                upper = len(within)
            else:
                within = None
        if rank is None:
            first = 1 if approximate else lower
            # a tol search tries the ranks the exact search and the chain try (it stopped at
            # ``useful``: a random 3x4x5 kernel's rank 6 within 0.1 was never tried)
            last = max(self.last, min(upper - 1, first + 2))
            cap = upper
        else:
            first, cap = 1, min(rank, upper)
            last = min(cap, upper - 1)
        stopped_at = None
        prev: _CPFit | None = None
        for R in range(first, last + 1):
            late = self.late()
            # the first ranks are always tried (one full fit, restarts while time is left)
            must = R <= (first if rank is None else lower) + 2
            if late and rank is None and not must:
                stopped_at = R - 1
                break
            n_random = 4 if must else 1
            if late and R < cap:
                n_random = 0  # out of search time: intermediate ranks only feed the chain
            # a fixed rank's own fit is not cut short; the search and the ranks leading to a
            # fixed rank stop restarting at the deadline
            deadline = None if R == cap and rank is not None else self.deadline
            step = self.step(
                R,
                prev,
                target,
                n_random,
                search=rank is None,
                deadline=deadline,
                full_first=must,
            )
            if step.meets:
                extra = []
                if rank is not None and R < rank and not approximate:
                    extra.append(f"rank={rank} requested; {R} term(s) already reproduce the kernel")
                return self.make(step, extra), False
            if R == cap:  # a fixed rank below the exact rank that does not meet the target
                return self.make(step), False
            # a fixed rank is reached by the chain (errors never increase); the search for the
            # smallest exact or tol rank starts every rank afresh, as a chain start adds time
            prev = step.fit if rank is not None else None
        extra = []
        if rank is not None and rank > upper:
            extra.append(f"rank={rank} requested; {upper} term(s) reproduce the kernel")
        if stopped_at is not None:
            extra.append(
                f"CP search stopped at rank {stopped_at} after {CP_SEARCH_SECONDS:g} s (tensor "
                f"rank is NP-hard); a lower {'rank within tol' if approximate else 'exact rank'} "
                "may exist"
            )
        elif last < upper - 1:
            extra.append(
                f"CP search stopped at rank {last}: more terms cost more than the dense kernel"
            )
        return self.make_fallback(extra, within, target), stopped_at is not None

    def chain(self, last: int) -> list[tuple[_Step, Factorization]]:
        """The fits of ranks 1 .. ``last`` as one chain: each rank also started from the previous
        fit plus the best rank-1 fit of its residual, so the errors never increase.

        Ends early at the first exact fit, or at ``deadline`` (a rank cut short by it is not
        kept; a later call with a later deadline goes on from there). Computed once per problem
        and extended on demand: the exact search, the ``tol`` search and ``fits_by_rank``
        share it.
        """
        rows = self._chain
        while len(rows) < last and not self._chain_ended and not self.late():
            R = len(rows) + 1
            prev = rows[-1][0].fit if rows else None
            n_random = 4 if R <= self.lower + 2 else 1
            # the chain's fits polish as without a deadline (the 11^3 ball's exact rank-8 fit
            # needs more than 25 steps); the deadline stops them
            step = self.step(R, prev, self.tol, n_random, deadline=self.deadline, polish=200)
            if self.late() and not step.meets:
                break  # possibly cut short: not a row (nor a start for the next rank)
            rows.append((step, self.make(step)))
            if step.meets:
                self._chain_ended = True
        return rows[:last]

    def sweep(self, exact: Factorization) -> list[Factorization]:
        """The fits of ranks 1, 2, ... below ``exact.rank`` (the chain), then ``exact``.

        Stops at the CP search's last rank (more terms would cost more than the dense kernel)
        or when the search time runs out; if a rank below ``exact.rank`` turns out exact, it
        ends the list instead.
        """
        rows = self.chain(min(exact.rank - 1, self.last))
        out = [f for _, f in rows]
        if rows and rows[-1][0].meets:
            return out
        return [*out, exact]
