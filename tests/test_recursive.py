"""The recursive Gaussian engine (``sepconv.engine.recursive``) against scipy.ndimage.

References: scipy's ``gaussian_filter1d`` in float64 (every mode, orders 0-2, axes, dtypes,
lines shorter than the kernel, nonzero ``cval``) and scipy's own kernel
(``scipy.ndimage._filters._gaussian_kernel1d`` is private, so the FIR weights are read off
``gaussian_filter1d`` applied to an impulse). Never sepconv's own output. Every comparison
holds the result to ``max_error(sigma, order) * max|x|``, the engine's documented bound (plus
a float32 result's own rounding), and the bound is checked for being attained.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sepconv.engine import recursive
from sepconv.engine.recursive import MIN_SIGMA, ORDERS, applies, gaussian_pass, max_error

pytestmark = pytest.mark.engine

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
EPS32 = float(np.finfo(np.float32).eps)


def _scipy_weights(sigma: float, order: int) -> np.ndarray:
    """scipy's correlation weights: ``gaussian_filter1d`` of an impulse, read backwards."""
    r = int(4.0 * sigma + 0.5)
    e = np.zeros(2 * r + 1)
    e[r] = 1.0
    return ndimage.gaussian_filter1d(e, sigma, order=order, mode="constant")[::-1]


def _check(x, axis, sigma, order, mode, cval=0.0):
    """The engine's result against scipy's in float64, within the documented bound."""
    y = gaussian_pass(x, axis, sigma, order, mode, cval)
    assert y.dtype == x.dtype and y.shape == x.shape
    x64 = x.astype(np.float64)
    ref = ndimage.gaussian_filter1d(x64, sigma, axis, order, mode=mode, cval=cval)
    scale = float(np.abs(x64).max())
    tol = max_error(sigma, order) * scale
    if x.dtype == np.float32:  # the result's rounding to float32 (and the stored halves)
        l1 = float(np.abs(_scipy_weights(sigma, order)).sum())
        tol += 2 * EPS32 * l1 * max(scale, abs(cval))
    err = float(np.abs(y.astype(np.float64) - ref).max())
    assert err <= tol, (x.shape, axis, sigma, order, mode, cval, err, tol)
    return err


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_scipy(dtype, mode, order):
    rng = np.random.default_rng(order * 10 + MODES.index(mode))
    cval = 1.75 if mode == "constant" else 0.0
    cases = [
        ((260,), 0),
        ((41, 130), 0),
        ((41, 130), 1),
        ((41, 130), -1),
        ((6, 37, 45), 0),
        ((6, 37, 45), 1),
        ((6, 37, 45), -1),
    ]
    for sigma in (MIN_SIGMA, 3.7, 12.0, 50.0):  # 50: r = 200, longer than every axis
        for shape, axis in cases:
            x = (rng.standard_normal(shape) * 3).astype(dtype)
            _check(x, axis, sigma, order, mode, cval)


@pytest.mark.parametrize("mode", MODES)
def test_short_lines(mode):
    """Lines far shorter than the kernel (n = 5, sigma = 20: r = 80) and single samples."""
    rng = np.random.default_rng(5)
    for order in ORDERS:
        for shape, axis in [((5,), 0), ((5, 33), 0), ((33, 5), 1), ((1, 7), 0), ((7, 1), 1)]:
            x = rng.standard_normal(shape)
            _check(x, axis, 20.0, order, mode, -2.5)
            _check(x.astype(np.float32), axis, 20.0, order, mode, -2.5)


def test_chunked_lines():
    """Long lines cut into chunks that start ``r`` early (lines longer than a chunk, or few
    lines on an outer axis) or into windows swept as lanes (few long lines on the last
    axis), with several threads."""
    rng = np.random.default_rng(7)
    cases = [
        ((9000,), 0, 3.0),
        ((2, 9000), 1, 40.0),
        ((3, 3000), -1, 20.0),
        ((70, 9000), 1, 5.0),
        ((9000, 3), 0, 25.0),
    ]
    for shape, axis, sigma in cases:
        x = rng.standard_normal(shape)
        for mode in ("reflect", "constant", "wrap"):
            _check(x, axis, sigma, 1, mode, 0.5)
        _check(x.astype(np.float32), axis, sigma, 0, "mirror")


def test_large_values_and_offsets():
    """The bound is relative to max|x|: data far from zero (a large DC level) keeps it."""
    rng = np.random.default_rng(8)
    x = 1e6 + rng.standard_normal((20, 300))
    for order in ORDERS:
        _check(x, 1, 30.0, order, "nearest")
        _check(x, 0, 7.0, order, "mirror")


@pytest.mark.parametrize("order", ORDERS)
def test_bound_is_attained(order):
    """``max_error`` is the L1 norm of the impulse response's error: an impulse's outputs
    add up to it, and an input following the error's signs reaches it at one output."""
    for sigma in (MIN_SIGMA, 6.5, 40.0):
        r = int(4.0 * sigma + 0.5)
        n = 6 * r + 1
        e = np.zeros(n)
        e[3 * r] = 1.0
        got = gaussian_pass(e, 0, sigma, order, "constant")
        ref = ndimage.gaussian_filter1d(e, sigma, order=order, mode="constant")
        total = float(np.abs(got - ref).sum())
        bound = max_error(sigma, order)
        assert 0.25 * bound <= total <= bound
        # the worst input: +-1 with the signs of the weights' error, read around output 3 r
        err = np.zeros(n)
        err[2 * r : 4 * r + 1] = (got - ref)[2 * r : 4 * r + 1][::-1]  # correlation weights
        x = np.sign(err)
        worst = gaussian_pass(x, 0, sigma, order, "constant")[3 * r]
        worst_ref = ndimage.gaussian_filter1d(x, sigma, order=order, mode="constant")[3 * r]
        assert 0.9 * (bound - recursive._ROUNDING) <= abs(worst - worst_ref) <= bound


def test_documented_accuracy():
    """The figures in the module docstring: max_error <= 1.5e-6 at order 0 and, relative to
    the weights' L1 norm, <= 6e-6 (order 1) and <= 2e-5 (order 2) for every sigma >=
    MIN_SIGMA (a dense grid up to 300)."""
    limits = {0: 1.5e-6, 1: 6e-6, 2: 2e-5}
    sigmas = np.concatenate([np.linspace(MIN_SIGMA, 8.0, 61), np.geomspace(8.0, 300.0, 40)])
    for order in ORDERS:
        for sigma in sigmas:
            l1 = float(np.abs(_scipy_weights(float(sigma), order)).sum())
            assert max_error(float(sigma), order) <= limits[order] * l1, (sigma, order)


@pytest.mark.parametrize("mode", MODES)
def test_no_overshoot_at_edges(mode):
    """A step and a bright pixel at the border (ITK bug #1425: a recursive Gaussian that goes
    negative there): order 0 stays in [min x, max x] up to max_error."""
    sigma = 9.0
    bound = max_error(sigma, 0)
    step = np.zeros(200)
    step[100:] = 1.0
    pixel = np.zeros(200)
    pixel[0] = 1.0
    pixel2 = np.zeros((200, 4))
    pixel2[-1] = 1.0
    for x, axis in ((step, 0), (step[::-1].copy(), 0), (pixel, 0), (pixel2, 0)):
        y = gaussian_pass(x, axis, sigma, 0, mode)
        assert y.min() >= -bound and y.max() <= 1.0 + bound
        ref = ndimage.gaussian_filter1d(x, sigma, axis, mode=mode)
        assert np.abs(y - ref).max() <= bound


def test_out_argument():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 70)).astype(np.float32)
    out = np.empty_like(x)
    got = gaussian_pass(x, 1, 5.0, 0, "reflect", out=out)
    assert got is out
    ref = ndimage.gaussian_filter1d(x.astype(np.float64), 5.0, 1)
    assert np.abs(out - ref).max() <= max_error(5.0) * np.abs(x).max() + 2 * EPS32 * np.abs(x).max()
    assert gaussian_pass(np.zeros((0, 5)), 0, 3.0).shape == (0, 5)


def test_bad_arguments():
    x = np.zeros((10, 12))
    cases = [
        (dict(sigma=MIN_SIGMA / 2), ValueError, "sigma"),
        (dict(sigma=math.nan), ValueError, "sigma"),
        (dict(sigma="3"), TypeError, "sigma"),
        (dict(order=3), ValueError, "order"),
        (dict(order=-1), ValueError, "order"),
        (dict(order=1.0), TypeError, "order"),
        (dict(mode="grid-wrap"), ValueError, "mode"),
        (dict(axis=2), ValueError, "axis"),
        (dict(axis=1.0), TypeError, "axis"),
        (dict(cval=math.inf, mode="constant"), ValueError, "cval"),
        (dict(out=np.zeros((10, 11))), ValueError, "out"),
        (dict(out=np.zeros((10, 12), np.float32)), ValueError, "out"),
        (dict(out=x), ValueError, "overlap"),
        (dict(out=np.zeros((12, 10)).T), ValueError, "out"),
    ]
    for kw, exc, word in cases:
        args = dict(axis=0, sigma=4.0) | kw
        with pytest.raises(exc, match=word):
            gaussian_pass(x, **args)
    with pytest.raises(TypeError, match="x"):
        gaussian_pass(np.zeros((4, 4), dtype=np.int32), 0, 4.0)
    with pytest.raises(ValueError, match="x"):
        gaussian_pass(np.zeros((4, 8))[:, ::2], 0, 4.0)
    with pytest.raises(ValueError, match="x"):
        gaussian_pass(np.array(1.0), 0, 4.0)
    with pytest.raises(TypeError, match="x"):
        gaussian_pass([1.0, 2.0], 0, 4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma"):
        max_error(1.0)
    with pytest.raises(ValueError, match="order"):
        max_error(5.0, 4)


def test_applies():
    assert applies(np.float32, 5.0, 0, "reflect")
    assert applies("float64", MIN_SIGMA, 2, "constant")
    assert not applies(np.float16, 5.0, 0, "reflect")
    assert not applies(np.int32, 5.0, 0, "reflect")
    assert not applies(np.float64, MIN_SIGMA * 0.99, 0, "reflect")
    assert not applies(np.float64, math.inf, 0, "reflect")
    assert not applies(np.float64, 5.0, 3, "reflect")
    assert not applies(np.float64, 5.0, 0, "grid-wrap")
    assert not applies("not a dtype", 5.0, 0, "reflect")
