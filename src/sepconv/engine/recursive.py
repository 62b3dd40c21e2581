"""Gaussian passes in constant time per sample: a truncated recursive (IIR) filter.

``gaussian_pass(x, axis, sigma, order, mode, cval)`` approximates
``scipy.ndimage.gaussian_filter1d(x, sigma, axis, order, mode=mode, cval=cval)`` (``truncate=4``:
correlation with :func:`sepconv.kernels.gaussian1d`) with O(1) work per output whatever
``sigma``, within a computed bound: ``|result - scipy| <= max_error(sigma, order) * max|x|``.
It is an approximation, offered by the planner only within a caller's ``tol``.

The filter
    Deriche's form (R. Deriche, *Recursively implementing the Gaussian and its derivatives*,
    INRIA RR-1893, 1993): for ``t = d / sigma >= 0`` the kernel's half is a sum of damped
    cosines, ``q_m(t) exp(-t^2 / 2) ~= sum_k exp(-l_k t) (a_k cos(w_k t) + b_k sin(w_k t))``
    (``q_0 = 1``, ``q_1 = -t``, ``q_2 = t^2 - 1``: the derivatives of order ``m``), i.e.
    ``Re(alpha_k z_k^d)`` with the complex pole ``z_k = exp(-(l_k - i w_k) / sigma)``, each
    run as a first-order complex recursion (no polynomial form: each pole exact to rounding
    whatever ``sigma``). Three poles (6th order), not Deriche's two: the coefficients
    (``_COEFS``, made by ``_fit``) are our own fit of that form on ``0 <= t <= 4.25`` (least
    squares from several starts, then iteratively reweighted towards the least L1 error),
    300 times more accurate than Deriche's published 4th-order ones for 1.5 times the work
    (see Accuracy).

    *Truncated*, like the FIR kernel: the causal half ``c[i] = sum_{d=0..r} K(d) x[i - d]``
    keeps per pole ``S[j] = z S[j - 1] + p[j] - z^(r + 1) p[j - r - 1]``, the sum of exactly
    ``r + 1`` samples of the padded line ``p`` (what leaves the window is subtracted, as in a
    running sum), and the anticausal half ``sum_{d=1..r} (-1)^m K(d) x[i + d]`` likewise
    backwards. So the impulse response is supported on ``|d| <= r = int(4 sigma + 0.5)``
    exactly as scipy's kernel is, scaled by scipy's own normalisation (``1 / sum
    exp(-d^2 / 2 sigma^2)`` over that support, times ``sigma^-m``): the 6e-5 of Gaussian
    mass beyond ``4 sigma`` that an untruncated IIR filter would add is not an error here,
    and the error is that of the fit alone. A subtraction costs two multiply-adds per pole
    and keeps rounding errors from accumulating (the state decays with ``|z| < 1``).

Borders
    The recursions run over the line padded by ``r`` samples on each side through
    ``_modes.extension_table`` (the table scipy's FIR kernel reads: every mode, lines shorter
    than the padding by repeated reflection or wrapping), from a zero state: with a finite
    support there is no start-up transient, and the result is the FIR's correlation of the
    same padded line with the IIR weights. ``constant`` mode pads with zeros and adds
    ``cval`` times the FIR weights' sum over the outside positions (exact). So borders are
    as accurate as the interior; no overshoot at a sharp edge beyond ``max_error`` (ITK's
    recursive Gaussian, bug #1425, goes negative there: its border initialisation is not
    the FIR's).

Accuracy
    ``max_error(sigma, order)`` is the L1 norm of (IIR impulse response - FIR weights),
    computed from the closed form (the engine's impulse response agrees with it to rounding;
    the tests check the bound is attained) plus ``_ROUNDING`` for the recursions' rounding:
    for any finite input ``|result - correlate1d(x, gaussian1d(sigma, order))| <= max_error
    * max|x|`` (plus the rounding of a float32 result). Measured, with the error relative to
    the weights' own L1 norm in brackets::

        sigma  order 0            order 1            order 2
            2  1.23e-06 (1.2e-06)  2.20e-06 (5.6e-06)  3.68e-06 (1.6e-05)
            3  7.84e-07 (7.8e-07)  9.97e-07 (3.8e-06)  1.42e-06 (1.3e-05)
            5  7.13e-07 (7.1e-07)  5.10e-07 (3.2e-06)  3.76e-07 (9.8e-06)
           10  6.33e-07 (6.3e-07)  2.36e-07 (3.0e-06)  8.62e-08 (8.9e-06)
           20  5.54e-07 (5.5e-07)  1.05e-07 (2.6e-06)  1.94e-08 (8.0e-06)
           50  5.31e-07 (5.3e-07)  4.05e-08 (2.5e-06)  3.03e-09 (7.8e-06)
          100  5.29e-07 (5.3e-07)  2.01e-08 (2.5e-06)  7.53e-10 (7.8e-06)

    For every ``sigma >= MIN_SIGMA`` (tested on a grid up to 300): ``max_error <= 1.5e-6`` at
    order 0, and relative to the weights' L1 norm ``<= 6e-6`` at order 1 and ``<= 2e-5`` at
    order 2. For comparison (same measure, order 0): Deriche's published 4th-order
    coefficients 3.1e-4 truncated as here (5.7e-4 untruncated, sigma 2..100), our 4th-order
    (two poles) refit 1.6e-4, Young-van Vliet 1995 2e-2 to 8e-2.
    ``MIN_SIGMA = 2``: the fit covers ``t <= 4.25``, i.e. ``r / sigma = int(4 sigma + 0.5) /
    sigma`` for every ``sigma >= 2``; below it a FIR pass (at most 17 taps) is as cheap.

Cost
    Per output and pass: three complex poles (6th order), each about 8 multiply-adds forward
    and 8 backward (float64, SIMD across lines), whatever ``sigma``; plus ``2 r`` padding
    samples per line (and ``2 r`` per chunk where lines are cut). So a line far shorter than
    the kernel costs O(r), not O(n), and the last-axis buffers hold ``2 r`` more positions:
    there the caller should prefer a folded FIR pass (``_modes.fold_pass``).
    Measured (4096 x 4096 float32, ``axis=0`` then ``axis=1``, median of 5, warm, 2-core AMD
    EPYC shared with another process): one thread 172-183 ms for sigma 4, 16 and 64; in the
    same process ``scipy.ndimage.gaussian_filter`` 545 ms (sigma 4), 1500 ms (16), 6820 ms
    (64). Single-thread per pass: 4.0-4.3 ns per sample on an outer axis, 5.1-5.9 on the last
    (the two block transposes, timed apart, at most about 1.7 of them).

Memory order
    * an outer axis (not the last): units are (outer index, tile of ``_TILE`` columns); the
      states are rows of the tile, each step an AXPY-like update of every column at once
      (contiguous, SIMD across columns); the causal half goes to a per-thread float64
      scratch (rows x tile), the backward sweep adds the anticausal half and writes the
      output;
    * the last axis: ``_LANES`` lines at once, copied transposed (and padded) into a
      per-thread buffer (the data's dtype), swept as its columns (float64 states and causal
      half), written back through a small float64 ring transposed in ``_TT``-position tiles
      (as :mod:`sepconv.engine.running`);
    * few long lines along the last axis (a 1-D signal): each line is cut into windows of
      ``L`` outputs, copied with their ``2 r`` padding samples as the rows of a new array and
      swept as lanes; lines longer than a chunk (``max(4096, 8 r)``), or too few units for the
      threads on an outer axis: chunks that start ``r`` samples early (a finite support makes
      windows and chunks exact).
    Threads: ``numba.get_num_threads()``. ``fastmath={'contract'}`` only.

NaN and Inf
    Not handled: a recursion carries a NaN (or ``inf - inf``) along the whole rest of the line
    (the subtraction of what leaves the window cannot remove it). The caller must not use this
    engine on non-finite data or ``cval``; :func:`applies` says when it may be used.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .._modes import extension_table
from ..kernels import gaussian1d
from ._shared import longest, split, tile_units, transpose_out, unit

__all__ = ["MIN_SIGMA", "ORDERS", "applies", "gaussian_pass", "max_error"]

_FM = {"contract"}
_LANES = 32  # lines swept together along the last axis (the SIMD direction)
_TILE = 64  # columns per unit of an outer-axis pass
_TT = 64  # positions per tile of the block transposes

#: The fit, per derivative order: rows ``(a, b, l, w)``, for ``t = d / sigma >= 0``
#: ``q_m(t) exp(-t^2 / 2) ~= sum_k exp(-l t) (a cos(w t) + b sin(w t))``.
_COEFS: dict[int, np.ndarray] = {
    0: np.array(
        [-1.0201138582902478, 0.05929399657663392, 1.7682710147149645, 1.738951261996322,
         1.9889039074554808, -3.1710085071810306, 1.7747202982780368, -0.5679691302162299,
         0.03120709384320451, 0.040397995355538494, 1.7512716940640387, -3.0562040378179165]
    ).reshape(3, 4),
    1: np.array(
        [1.1933797317354313, 0.6310214590847549, 1.5091782515312304, 1.8435661315206946,
         -0.08573685157967444, 0.02417911447339514, 1.5454383967847847, 3.174311233940271,
         -1.1076322285204692, -3.5227752660365526, 1.4552903988605355, 0.619933952332316]
    ).reshape(3, 4),
    2: np.array(
        [-0.6189757162496815, -2.420187637776168, 1.0790894555475512, -0.733499265950027,
         0.13580301788904345, 0.07255433682399297, 1.3449424920818136, 3.311209502859221,
         -0.5168660667989807, -1.5839191634784058, 1.2481886406870155, 1.9852968462402245]
    ).reshape(3, 4),
}  # fmt: skip

#: Derivative orders offered.
ORDERS = tuple(sorted(_COEFS))
#: Smallest ``sigma`` offered: the fit covers ``r / sigma`` only from here on, and below it a
#: FIR pass (at most 17 taps) costs no more than the recursions.
MIN_SIGMA = 2.0
#: Added to every bound: the recursions' own rounding (float64 states that decay with |z| < 1).
_ROUNDING = 1e-12
_CANONICAL = ("reflect", "mirror", "nearest", "wrap", "constant")


def _fit(order: int, seeds: int = 8, start: np.ndarray | None = None) -> np.ndarray:
    """How ``_COEFS[order]`` was made (not run at import; minutes of CPU): three-pole fits of
    ``q_m(t) exp(-t^2 / 2)`` on ``0 <= t <= 4.25`` by least squares from ``seeds`` random
    starts (or from ``start``), the best polished on a fine grid and reweighted 30 times
    towards the least L1 error (IRLS). Returns the ``(3, 4)`` rows ``(a, b, l, w)``."""
    from scipy.optimize import least_squares

    def model(p: np.ndarray, t: np.ndarray) -> np.ndarray:
        a, b, lam, w = p.reshape(3, 4).T
        tt = t[:, None]
        return ((a * np.cos(w * tt) + b * np.sin(w * tt)) * np.exp(-lam * tt)).sum(axis=1)

    def target(t: np.ndarray) -> np.ndarray:
        return [np.ones_like(t), -t, t * t - 1][order] * np.exp(-t * t / 2)

    def l1(p: np.ndarray, t: np.ndarray) -> float:
        return float(np.abs(model(p, t) - target(t)).mean())

    coarse = np.linspace(0, 4.25, 801)
    fine = np.linspace(0, 4.25, 4251)
    starts = [] if start is None else [np.ravel(start)]
    for seed in range(seeds if start is None else 0):
        rng = np.random.default_rng(seed)
        p0 = np.concatenate(
            [[rng.normal(), rng.normal(), rng.uniform(0.5, 2.5), rng.uniform(0, 3)] for _ in "abc"]
        )
        res = least_squares(lambda p: model(p, coarse) - target(coarse), p0, max_nfev=800)
        if min(res.x[2::4]) > 0.05:  # stable poles only
            starts.append(res.x)
    p = min(starts, key=lambda q: l1(q, coarse))
    tight = {"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15}
    p = least_squares(lambda q: model(q, fine) - target(fine), p, max_nfev=4000, **tight).x
    best = p
    for _ in range(30):
        res = np.abs(model(p, fine) - target(fine))
        wgt = 1 / np.sqrt(np.maximum(res, 1e-3 * res.max()))
        p = least_squares(
            lambda q, wgt=wgt: (model(q, fine) - target(fine)) * wgt, p, max_nfev=400, **tight
        ).x
        if l1(p, fine) < l1(best, fine):
            best = p
    return np.asarray(best).reshape(3, 4)


# ----------------------------------------------------------------------------------------------
# the design: poles, output coefficients, the FIR weights it replaces
# ----------------------------------------------------------------------------------------------


class _Design:
    """Everything a pass needs for one ``(sigma, order)``."""

    def __init__(self, sigma: float, order: int) -> None:
        w = gaussian1d(sigma, order=order)
        r = len(w) // 2
        d = np.arange(-r, r + 1, dtype=np.float64)
        norm = 1.0 / (np.exp(-0.5 * (d / sigma) ** 2).sum() * sigma**order)
        co = _COEFS[order]
        alpha = (co[:, 0] - 1j * co[:, 1]) * norm
        z = np.exp(-(co[:, 2] - 1j * co[:, 3]) / sigma)
        self.sigma, self.order, self.r, self.weights = sigma, order, r, w
        sign = -1.0 if order % 2 else 1.0
        # causal: c[i] = Re(sum beta S), S = z S + p[j] - u p[j - r - 1]
        # anticausal: a[i] = Re(sum gamma T), T = z T + p[j + 1] - v p[j + r + 1]
        beta = alpha
        gamma = sign * alpha * z
        u = z ** (r + 1)
        v = z**r
        self.coef = np.ascontiguousarray(
            np.stack(
                [z.real, z.imag, u.real, u.imag, v.real, v.imag, beta.real, beta.imag,
                 gamma.real, gamma.imag]
            ).T
        )  # fmt: skip
        # the impulse response in closed form, as correlation weights w[r + j]
        dd = np.arange(r + 1)
        half = (alpha[None, :] * z[None, :] ** dd[:, None]).real.sum(axis=1)
        conv = np.concatenate([sign * half[:0:-1], half])  # convolution kernel at -r .. r
        self.iir = conv[::-1].copy()


@lru_cache(maxsize=256)
def _design(sigma: float, order: int) -> _Design:
    return _Design(sigma, order)


@lru_cache(maxsize=1024)
def max_error(sigma: float, order: int = 0) -> float:
    """Bound on ``|gaussian_pass - gaussian_filter1d|`` per unit of ``max|x|``.

    The L1 norm of (the IIR impulse response - ``kernels.gaussian1d(sigma, order)``) plus
    ``_ROUNDING``: for finite ``x``, ``|gaussian_pass(x, ...) - correlate1d(x, w)| <=
    max_error(sigma, order) * max|x|`` (plus the output's own rounding in float32). It is
    attained (to rounding) by an input of ``+-max|x|`` following the error's signs.

    Parameters
    ----------
    sigma : float
        Standard deviation, ``>= MIN_SIGMA``.
    order : int, default 0
        Derivative order, one of ``ORDERS``.

    Returns
    -------
    float
    """
    s, m = _check_sigma_order(sigma, order)
    d = _design(s, m)
    return float(np.abs(d.iir - d.weights).sum()) + _ROUNDING


def applies(dtype: Any, sigma: float, order: int, mode: str) -> bool:
    """Whether ``gaussian_pass`` runs this pass (the caller checks finiteness and ``tol``).

    True for float32/float64 data, ``sigma >= MIN_SIGMA`` (finite), ``order`` in ``ORDERS``
    and a canonical ``mode`` (``reflect``, ``mirror``, ``nearest``, ``wrap``, ``constant``).
    The data (and ``cval``) must also be finite: an IIR filter carries a NaN or Inf along the
    whole line, which this engine does not repair.
    """
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        return False
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order not in ORDERS:
        return False
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        return False
    return math.isfinite(s) and s >= MIN_SIGMA and mode in _CANONICAL


def _check_sigma_order(sigma: Any, order: Any) -> tuple[float, int]:
    if isinstance(sigma, (bool, str, bytes)):
        raise TypeError(f"sigma must be a real number, got {sigma!r}")
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a real number, got {sigma!r}") from None
    if not (math.isfinite(s) and s >= MIN_SIGMA):
        raise ValueError(
            f"sigma must be finite and >= MIN_SIGMA = {MIN_SIGMA} for the recursive engine, "
            f"got {sigma!r}"
        )
    if isinstance(order, bool):
        raise TypeError(f"order must be an int, got {order!r}")
    try:
        m = operator.index(order)
    except TypeError:
        raise TypeError(f"order must be an int, got {order!r}") from None
    if m not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} for the recursive engine, got {order!r}")
    return s, m


# ----------------------------------------------------------------------------------------------
# sweeps: ``src[o, tab[j], c0 + c]`` is padded position ``j`` of column ``c`` (a -1 in ``tab``
# reads nothing: zero); no array slices in the loops (a slice costs an atomic refcount). The
# step of the three poles is written once (``_step``, inlined into each loop)
# ----------------------------------------------------------------------------------------------


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _poles(coef, col, f):  # pragma: no cover - compiled
    """Columns ``col`` and ``col + 1`` (a complex number) of the three poles' rows of
    ``coef``, times ``f``: ``(re0, im0, re1, im1, re2, im2)``."""
    return (
        coef[0, col] * f, coef[0, col + 1] * f, coef[1, col] * f, coef[1, col + 1] * f,
        coef[2, col] * f, coef[2, col + 1] * f,
    )  # fmt: skip


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _ends(tab, j, jo, inside):  # pragma: no cover - compiled
    """``(a, fa, ao, fo)``: the rows of the entering position ``j`` and the leaving position
    ``jo`` (clamped into the sweep by the caller), with factors 0 where ``tab`` reads nothing
    or (``inside`` false) the leaving position is outside the sweep."""
    a = tab[j]
    ao = tab[jo]
    return max(a, 0), 1.0 if a >= 0 else 0.0, max(ao, 0), 1.0 if (inside and ao >= 0) else 0.0


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _pole(S, k, c, zr, zi, v, ur, ui, vo, br, bi):  # pragma: no cover - compiled
    """One step of the complex state ``S[k] + i S[k + 1]`` of column ``c``: ``z S + v - u
    vo``; returns ``Re(b S)`` of the new state."""
    sr = S[k, c]
    si = S[k + 1, c]
    nr = zr * sr - zi * si + v - ur * vo
    ni = zr * si + zi * sr - ui * vo
    S[k, c] = nr
    S[k + 1, c] = ni
    return br * nr - bi * ni


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _step(S, c, src, o, a, fa, ao, col, z, u, b):  # pragma: no cover - compiled
    """The three poles' step for column ``c`` (``src[o, a, col]`` entering, times ``fa``;
    ``src[o, ao, col]`` leaving, times the factors ``u``); returns ``Re(sum b S)``."""
    v = np.float64(src[o, a, col]) * fa
    vo = np.float64(src[o, ao, col])
    y = _pole(S, 0, c, z[0], z[1], v, u[0], u[1], vo, b[0], b[1])
    y += _pole(S, 2, c, z[2], z[3], v, u[2], u[3], vo, b[2], b[3])
    return y + _pole(S, 4, c, z[4], z[5], v, u[4], u[5], vo, b[4], b[5])


@njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _zero(S, m):  # pragma: no cover - compiled
    """The poles' states ``S[0:6, 0:m]`` set to zero."""
    for k in range(6):
        for c in range(np.uint64(m)):
            S[k, c] = 0.0


@njit(fastmath=_FM, cache=True, nogil=True)
def _forward(src, o, c0, m, tab, j0, j1, r, coef, S, acc):  # pragma: no cover - compiled
    """Causal half of outputs ``j0 .. j1 - 1`` (padded positions ``j0 + r .. j1 - 1 + r``)
    into ``acc[i - j0, c]``, from a zero state at padded position ``j0`` (one pass over the
    columns per step, the states in ``S[0:6]``)."""
    u0 = np.uint64(c0)
    _zero(S, m)
    z = _poles(coef, 0, 1.0)
    b = _poles(coef, 6, 1.0)
    for j in range(j0, j1 + r):
        jo = j - r - 1
        a, fa, ao, fo = _ends(tab, j, max(jo, 0), jo >= j0)
        u = _poles(coef, 2, fo)
        row = max(j - r - j0, 0)  # rows before the first output are overwritten there
        for c in range(np.uint64(m)):
            acc[row, c] = _step(S, c, src, o, a, fa, ao, u0 + c, z, u, b)


@njit(fastmath=_FM, cache=True, nogil=True)
def _backward(
    src, o, c0, m, tab, j0, j1, r, coef, S, acc, corr, dst, d0, ring, out, oo, row0, shift
):  # pragma: no cover - compiled
    """Anticausal half of outputs ``j1 - 1 .. j0`` (from a zero state at padded position
    ``j1 + 2 r - 1``) plus ``acc`` (the causal half) plus ``corr[i]`` (constant mode's
    ``cval`` term): output ``i`` goes to ``dst[d0, i, c0 + c]``, or with ``ring`` to
    ``dst[0, (i - j0) % _TT, c]``, flushed transposed into ``out[oo, row0 + c, i]``; every
    output index (in ``corr``, ``dst``, ``out``) is ``i + shift``."""
    u0 = np.uint64(c0)
    end = j1 + 2 * r - 1  # the last padded position read
    _zero(S, m)
    z = _poles(coef, 0, 1.0)
    g = _poles(coef, 8, 1.0)
    for j in range(end - 1, j0 + r - 1, -1):
        jo = j + r + 1
        a, fa, ao, fo = _ends(tab, j + 1, min(jo, end), jo <= end)
        v = _poles(coef, 4, fo)
        i = j - r  # the output once ``i < j1``; before that the state warms up
        if i >= j1:
            for c in range(np.uint64(m)):
                _step(S, c, src, o, a, fa, ao, u0 + c, z, v, g)
            continue
        row = i - j0
        ci = corr[i + shift]
        slot = (i - j0) % _TT
        if ring:
            d0 = 0
            di = slot
            dc = np.uint64(0)
        else:
            di = i + shift
            dc = u0
        for c in range(np.uint64(m)):
            S[6, c] = _step(S, c, src, o, a, fa, ao, u0 + c, z, v, g)
        for c in range(np.uint64(m)):  # apart: reading acc or writing dst above stops SIMD
            dst[d0, di, dc + c] = (acc[row, c] + S[6, c]) + ci
        if ring and slot == 0:
            transpose_out(dst, m, min(_TT, j1 - i), out, oo, row0, i + shift)


@njit(fastmath=_FM, cache=True, nogil=True)
def _transpose_in(x, o, row0, nl, tab, p0, p1, off, buf):  # pragma: no cover - compiled
    """``buf[0, j - p0, ln] = x[o, row0 + ln, tab[j]]`` (0 where ``tab[j] < 0``) for
    ``p0 <= j < p1``, ``ln < nl`` (the sweeps read no other lanes). Inside the line
    (``tab[j] = j - off``) a plain transposition in tiles of ``_TT`` positions."""
    n = x.shape[2]
    lo = min(max(p0, off), p1)  # the inside positions: lo .. hi - 1
    hi = max(min(p1, n + off), lo)
    for j in range(p0, p1):
        if lo <= j < hi:
            continue
        t = tab[j]
        for ln in range(nl):
            buf[0, j - p0, ln] = x[o, row0 + ln, max(t, 0)] if t >= 0 else 0.0
    for t0 in range(lo, hi, _TT):
        cnt = min(_TT, hi - t0)
        b0 = t0 - p0
        s0 = t0 - off
        for ln in range(nl):
            for jj in range(cnt):
                buf[0, b0 + jj, ln] = x[o, row0 + ln, s0 + jj]


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _outer_pass(x, out, tab, starts, r, coef, corr, nthreads):  # pragma: no cover - compiled
    """Pass along axis 1 of ``x`` (outer, n, inner); units (outer, chunk of n, tile)."""
    nchunk = starts.shape[0] - 1
    units, ntiles, width = tile_units(x, nchunk, _TILE)
    nthreads, per = split(units, nthreads)
    rows = longest(starts)
    for th in prange(nthreads):
        S = np.zeros((7, width))
        acc = np.zeros((rows, width))
        for u in range(th * per, min(units, (th + 1) * per)):
            o, ch, c0, m = unit(u, nchunk, ntiles, _TILE, x.shape[2])
            j0 = starts[ch]
            j1 = starts[ch + 1]
            _forward(x, o, c0, m, tab, j0, j1, r, coef, S, acc)
            _backward(x, o, c0, m, tab, j0, j1, r, coef, S, acc, corr, out, o, False, out, o, 0, 0)


@njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _lines_pass(x, out, tab, off, starts, r, coef, corr, nthreads):  # pragma: no cover
    """Pass along axis 2 of ``x`` (outer, lines, n); units (block of ``_LANES`` lines, chunk
    of n): the chunk's padded window (``2 r`` more positions) copied transposed into a
    per-thread float64 buffer and swept as its columns."""
    outer, lines = x.shape[0], x.shape[1]
    nchunk = starts.shape[0] - 1
    per_o = (lines + _LANES - 1) // _LANES
    units = outer * per_o * nchunk
    nthreads, per = split(units, nthreads)
    rows = longest(starts)
    ident = np.arange(rows + 2 * r)
    for th in prange(nthreads):
        S = np.zeros((7, _LANES))
        acc = np.zeros((rows, _LANES))
        buf = np.zeros((1, rows + 2 * r, _LANES), dtype=x.dtype)  # the data as it is
        ring = np.zeros((1, _TT, _LANES))
        for u in range(th * per, min(units, (th + 1) * per)):
            blk = u // nchunk
            ch = u - blk * nchunk
            o = blk // per_o
            row0 = (blk - o * per_o) * _LANES
            nl = min(_LANES, lines - row0)
            j0 = starts[ch]
            j1 = starts[ch + 1]
            _transpose_in(x, o, row0, nl, tab, j0, j1 + 2 * r, off, buf)
            _forward(buf, 0, 0, nl, ident, 0, j1 - j0, r, coef, S, acc)
            _backward(
                buf, 0, 0, nl, ident, 0, j1 - j0, r, coef, S, acc, corr, ring, 0, True, out, o,
                row0, j0,
            )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------

#: Longest chunk of a line swept from one start (bounds the per-thread buffers; a chunk
#: costs ``2 r`` extra steps, so chunks are at least ``8 r`` long).
_CHUNK = 4096


def _chunks(n: int, r: int, units: int, nthreads: int) -> np.ndarray:
    """Chunk starts along an axis of ``n`` outputs: enough chunks for every thread when there
    are few other units, none longer than ``max(_CHUNK, 8 r)``."""
    longest = max(_CHUNK, 8 * r)
    count = -(-n // longest)
    want = -(-nthreads // max(1, units))
    if want > count:
        count = max(count, min(want, n // max(8 * r, 64)))
    count = max(1, count)
    return np.linspace(0, n, count + 1).round().astype(np.int64)


def _window(n: int, r: int, lines: int, nthreads: int) -> int:
    """Outputs per window when few long lines are cut into windows swept as lanes."""
    return max(8 * r, 256, -(-n * lines // (_LANES * nthreads)))


def _windows_pass(
    x: np.ndarray, out: np.ndarray, mode: str, d: _Design, corr: np.ndarray, nthreads: int
) -> None:
    """Few long lines (``x``: lines, n): each cut into windows of ``L`` outputs, copied with
    their ``2 r`` padding samples as the rows of a new array, swept ``_LANES`` at a time as
    lanes (one line alone would run one lane of the SIMD width). ``padded`` holds positions
    up to ``count * L + 2 r`` (past the line's padding: any mapped index, never output)."""
    lines, n = x.shape
    r = d.r
    L = _window(n, r, lines, nthreads)
    count = -(-n // L)
    ext = extension_table(n, count * L - n + 2 * r + 1, r, mode)
    padded = x[:, np.maximum(ext, 0)]
    padded[:, ext < 0] = 0.0
    win = np.lib.stride_tricks.sliding_window_view(padded, L + 2 * r, axis=1)[:, ::L]
    w3 = np.ascontiguousarray(win).reshape(1, lines * count, L + 2 * r)
    o3 = np.empty((1, lines * count, L))  # float64: one rounding, with the cval term
    ident = np.arange(L + 2 * r)
    starts = np.array([0, L], dtype=np.int64)
    _lines_pass(w3, o3, ident, 0, starts, r, d.coef, np.zeros(L), nthreads)
    np.add(o3.reshape(lines, count * L)[:, :n], corr, out=out, casting="unsafe")


def _constant_term(w: np.ndarray, n: int, cval: float) -> np.ndarray:
    """``cval`` times the sum of the FIR weights that read outside the line, per output."""
    if cval == 0.0:
        return np.zeros(n)
    r = len(w) // 2
    cs = np.concatenate([[0.0], np.cumsum(w)])
    i = np.arange(n)
    low = cs[np.clip(r - i, 0, 2 * r + 1)]  # offsets j < -i
    high = cs[2 * r + 1] - cs[np.clip(r + n - i, 0, 2 * r + 1)]  # offsets j >= n - i
    return cval * (low + high)


def _check_arrays(x: Any, out: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError("x must have at least one axis, got a 0-D array")
    if x.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"x dtype must be float32 or float64 (native byte order), got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous")
    if out is None:
        return np.empty(x.shape, dtype=x.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array or None, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"out must have x's shape {x.shape} and dtype {x.dtype}, got {out.shape} {out.dtype}"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a writeable C-contiguous array")
    if np.shares_memory(out, x):
        raise ValueError("out must not overlap x")
    return out


def gaussian_pass(
    x: np.ndarray, axis: int, sigma: float, order: int = 0, mode: str = "reflect",
    cval: float = 0.0, out: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Gaussian (derivative) pass along ``axis`` in O(1) work per output: a recursive filter.

    Approximates ``scipy.ndimage.gaussian_filter1d(x, sigma, axis, order, mode=mode,
    cval=cval)`` (``truncate=4``) within ``max_error(sigma, order) * max|x|`` (plus the
    rounding of a float32 result), for every mode, including lines shorter than the kernel.

    Parameters
    ----------
    x : numpy.ndarray
        C-contiguous float32 or float64 data, at least 1-D, all finite (not checked: a NaN or
        Inf spreads along the whole line; see :func:`applies`).
    axis : int
        The axis filtered (negative counts from the end).
    sigma : float
        Standard deviation in samples, ``>= MIN_SIGMA``.
    order : int, default 0
        Derivative order, one of ``ORDERS`` (odd orders with scipy's signs).
    mode : str, default 'reflect'
        ``reflect``, ``mirror``, ``nearest``, ``wrap`` or ``constant`` (canonical names).
    cval : float, default 0.0
        Value outside the line in ``constant`` mode; finite.
    out : numpy.ndarray, optional
        Result array: x's shape and dtype, C-contiguous, not overlapping ``x``.

    Returns
    -------
    numpy.ndarray
        ``out`` (or a new array of x's dtype). State and sums are float64 whatever the dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.ndimage import gaussian_filter1d
    >>> x = np.random.default_rng(0).random(300)
    >>> y = gaussian_pass(x, 0, 10.0)
    >>> bool(np.abs(y - gaussian_filter1d(x, 10.0)).max() <= max_error(10.0) * np.abs(x).max())
    True
    """
    out = _check_arrays(x, out)
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {axis!r}") from None
    if isinstance(axis, bool) or not -x.ndim <= ax < x.ndim:
        raise ValueError(
            f"axis must be in [{-x.ndim}, {x.ndim - 1}] for a {x.ndim}-D x, got {axis!r}"
        )
    ax %= x.ndim
    s, m = _check_sigma_order(sigma, order)
    if not isinstance(mode, str) or mode not in _CANONICAL:
        raise ValueError(f"mode must be one of {list(_CANONICAL)}, got {mode!r}")
    try:
        cv = float(cval)
    except (TypeError, ValueError):
        raise TypeError(f"cval must be a real number, got {cval!r}") from None
    if not math.isfinite(cv):
        raise ValueError(f"cval must be finite for the recursive engine, got {cval!r}")
    if x.size == 0:
        return out
    d = _design(s, m)
    shape = x.shape
    n = shape[ax]
    outer = math.prod(shape[:ax])
    inner = math.prod(shape[ax + 1 :])
    tab = extension_table(n, 2 * d.r + 1, d.r, mode)
    corr = _constant_term(d.weights, n, cv) if mode == "constant" else np.zeros(n)
    nthreads = numba.get_num_threads()
    if inner == 1:
        x3 = x.reshape(1, outer, n)
        o3 = out.reshape(1, outer, n)
        if outer < _LANES * nthreads and n > 2 * _window(n, d.r, outer, nthreads):
            _windows_pass(x.reshape(outer, n), out.reshape(outer, n), mode, d, corr, nthreads)
            return out
        starts = _chunks(n, d.r, -(-outer // _LANES), nthreads)
        _lines_pass(x3, o3, tab, d.r, starts, d.r, d.coef, corr, nthreads)
    else:
        x3 = x.reshape(outer, n, inner)
        o3 = out.reshape(outer, n, inner)
        starts = _chunks(n, d.r, outer * -(-inner // _TILE), nthreads)
        _outer_pass(x3, o3, tab, starts, d.r, d.coef, corr, nthreads)
    return out
