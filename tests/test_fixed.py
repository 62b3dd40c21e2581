"""The fixed-point engine for 8/16-bit images (``sepconv.engine.fixed``), against scipy.ndimage
computed in float64, then rounded half to even and clipped to the dtype (the exact result).

Every output must be within 1 LSB of it; where the plan says the quantised arithmetic is exact
(box of power-of-two size, binomial, Sobel), every output must equal it.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from sepconv.engine import fixed
from sepconv.job import Job
from sepconv.kernels import gaussian1d

pytestmark = pytest.mark.engine

DTYPES = [np.uint8, np.int8, np.uint16, np.int16]
MODES = ["reflect", "constant", "nearest", "mirror", "wrap"]


def _image(shape, dtype, seed=0):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    x.flat[:: max(1, x.size // 7)] = info.max  # the range limits, where overflow would show
    x.flat[3 :: max(1, x.size // 5)] = info.min
    return x


def _exact(x, w0, w1, modes, cval, origins=(0, 0), weight=1.0):
    """scipy in float64 along the last two axes (w0 may be None for a 1-D row pass), rounded
    half to even and saturated: the exactly computed result."""
    y = x.astype(np.float64)
    if w0 is not None:
        y = ndimage.correlate1d(y, w0, -2, mode=modes[0], cval=cval, origin=origins[0])
        # the padding after the column pass is cval * sum(w0) (sepconv's exact constant mode)
        c1 = cval * float(np.sum(w0))
    else:
        c1 = cval
    y = ndimage.correlate1d(y, w1, -1, mode=modes[1], cval=c1, origin=origins[1]) * weight
    info = np.iinfo(x.dtype)
    return np.clip(np.rint(y), info.min, info.max)


def _terms(ndim, w0, w1, origins=(0, 0), weight=1.0):
    passes = [] if w0 is None else [(ndim - 2, np.asarray(w0, float), origins[0])]
    passes.append((ndim - 1, np.asarray(w1, float), origins[1]))
    return [(weight, tuple(passes))]


KERNELS = {
    "gaussian": (gaussian1d(1.5), gaussian1d(2.5)),
    "box": (np.full(5, 1 / 5), np.full(3, 1 / 3)),
    "box4": (np.full(4, 1 / 4), np.full(8, 1 / 8)),  # dyadic: exact
    "binomial": (np.array([1, 4, 6, 4, 1]) / 16, np.array([1, 2, 1]) / 4),  # exact
    "sobel": (np.array([1, 2, 1.0]), np.array([-1, 0, 1.0])),  # exact
    "gauss-derivative": (gaussian1d(2.0), gaussian1d(1.2, order=1)),
    "asymmetric": (np.array([0.1, 0.7, 0.2]), np.array([0.3, -0.5, 0.9, 0.05])),
    "long": (gaussian1d(9.0), np.full(45, 1 / 45)),  # longer than the axes below
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_within_one_lsb_of_the_exact_result_every_mode(dtype, name) -> None:
    w0, w1 = KERNELS[name]
    x = _image((37, 41), dtype, seed=len(name))
    for mode in MODES:
        for cval in (0, 7):
            terms = _terms(2, w0, w1)
            modes = {0: mode, 1: mode}
            p = fixed.plan(x.dtype, 2, terms, modes, cval)
            if p is None:  # the float path runs (stated by applies); not this test's concern
                assert not fixed.applies(x, terms, modes, cval)
                continue
            got = fixed.separable_int(x, Job(terms, modes, cval))
            ref = _exact(x, w0, w1, (mode, mode), cval)
            assert got.dtype == x.dtype
            d = np.abs(got.astype(np.float64) - ref)
            assert d.max() <= 1, (mode, cval, p.arithmetic, d.max())
            if p.exact:
                assert d.max() == 0, (mode, cval, p.arithmetic)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_exactly_representable_kernels_are_exact(dtype) -> None:
    x = _image((40, 33), dtype, seed=3)
    for name in ("box4", "binomial", "sobel"):
        w0, w1 = KERNELS[name]
        p = fixed.plan(x.dtype, 2, _terms(2, w0, w1), {0: "reflect", 1: "reflect"}, 0)
        assert p is not None and p.exact and p.error == 0, name


def test_typical_8bit_gaussians_take_the_fixed_point_path() -> None:
    # the point of the engine: a uint8 Gaussian must not fall back to the float path
    x = _image((64, 64), np.uint8)
    for sigma in (0.8, 1.0, 2.0, 3.0, 8.0):
        w = gaussian1d(sigma)
        terms = _terms(2, w, w)
        assert fixed.applies(x, terms, {0: "reflect", 1: "reflect"}, 0.0), sigma


@pytest.mark.parametrize("mode", MODES)
def test_origins_and_even_kernels(mode) -> None:
    x = _image((30, 29), np.uint8, seed=5)
    w0, w1 = np.array([0.25, 0.5, 0.125, 0.125]), np.array([0.3, 0.3, 0.4])
    for origins in ((0, 0), (-1, 1), (1, -1), (-2, 0)):
        terms = _terms(2, w0, w1, origins)
        got = fixed.separable_int(x, Job(terms, {0: mode, 1: mode}, 3))
        ref = _exact(x, w0, w1, (mode, mode), 3, origins)
        assert np.abs(got.astype(float) - ref).max() <= 1, origins


def test_one_and_n_dimensional_inputs_and_weights() -> None:
    w = gaussian1d(1.7)
    line = _image((101,), np.uint16, seed=2)
    got = fixed.separable_int(line, Job(_terms(1, None, w), {0: "mirror"}, 0))
    assert np.abs(got.astype(float) - _exact(line, None, w, (None, "mirror"), 0)).max() <= 1
    vol = _image((3, 20, 25), np.int16, seed=4)
    terms = _terms(3, w, w[::-1].copy(), weight=0.75)
    got = fixed.separable_int(vol, Job(terms, {1: "nearest", 2: "wrap"}, 0))
    ref = _exact(vol, w, w[::-1], ("nearest", "wrap"), 0, weight=0.75)
    assert np.abs(got.astype(float) - ref).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_images_keep_their_value(dtype) -> None:
    # opencv#9863: taps that do not sum exactly to the scale darken (or brighten) flat areas
    info = np.iinfo(dtype)
    for value in (info.min, info.max, 1, info.max // 3):
        x = np.full((25, 31), value, dtype=dtype)
        for sigma in (0.7, 1.3, 2.9, 6.1):
            w = gaussian1d(sigma)
            got = fixed.separable_int(x, Job(_terms(2, w, w), {0: "reflect", 1: "nearest"}, 0))
            assert np.all(got == value), (value, sigma)


def test_quantize_sums_exactly_and_keeps_symmetry() -> None:
    rng = np.random.default_rng(0)
    for k in (3, 4, 7, 10, 31):
        w = rng.random(k)
        w /= w.sum()
        for bits in (6, 10, 14, 20):
            q = fixed.quantize(w, bits)
            assert int(q.sum()) == round(float(np.sum(w)) * 2**bits)
            assert np.abs(q - w * 2**bits).max() <= 1.0
        s = w + w[::-1]
        q = fixed.quantize(s / s.sum(), 12)
        if k % 2:  # an odd symmetric kernel stays symmetric
            assert np.array_equal(q, q[::-1])
        a = np.concatenate([-w[: k // 2], [0] * (k % 2), w[: k // 2][::-1]])
        qa = fixed.quantize(a, 12)
        assert int(qa.sum()) == 0 and np.array_equal(qa, -qa[::-1])


def test_public_filters_use_it_and_agree_with_scipy() -> None:
    x = _image((96, 80), np.uint8, seed=9)
    got = sepconv.gaussian_filter(x, 2.0)
    ref = np.clip(np.rint(ndimage.gaussian_filter(x.astype(np.float64), 2.0)), 0, 255)
    assert got.dtype == np.uint8 and np.abs(got.astype(float) - ref).max() <= 1
    got = sepconv.uniform_filter(x, 4)
    ref = np.clip(np.rint(ndimage.uniform_filter(x.astype(np.float64), 4)), 0, 255)
    assert np.array_equal(got, ref)  # dyadic taps: exact
    got = sepconv.sobel(x, 0)  # saturates at 0 and 255 (scipy would wrap around)
    ref = np.clip(np.rint(ndimage.sobel(x.astype(np.float64), 0)), 0, 255)
    assert np.array_equal(got, ref)
    out = np.empty_like(x)
    assert sepconv.gaussian_filter(x, 1.0, output=out) is out
    assert np.abs(out.astype(float) - ndimage.gaussian_filter(x.astype(float), 1.0)).max() <= 1
    big = _image((96, 80), np.uint16, seed=1).astype(">u2")  # byte-swapped: the float path
    ref = np.clip(np.rint(ndimage.gaussian_filter(big.astype(np.float64), 1.5)), 0, 65535)
    assert np.abs(sepconv.gaussian_filter(big, 1.5).astype(float) - ref).max() <= 1


def test_peak_memory_is_the_output_only() -> None:
    x = _image((1024, 1024), np.uint8)  # (tables and plans: a few tens of kB more)
    sepconv.gaussian_filter(x, 3.0)  # compiled and planned
    tracemalloc.start()
    try:
        sepconv.gaussian_filter(x, 3.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1.1 * x.nbytes  # input + output = 2x the input


def test_refuses_what_it_cannot_run() -> None:
    x = _image((10, 10), np.uint8)
    w = gaussian1d(1.0)
    modes = {0: "reflect", 1: "reflect"}
    assert not fixed.applies(x.astype(np.float32), _terms(2, w, w), modes, 0)
    constant = {0: "constant", 1: "reflect"}
    assert fixed.applies(x, _terms(2, w, w), constant, 3.0)
    assert not fixed.applies(x, _terms(2, w, w), constant, 0.5)  # a fractional cval
    assert not fixed.applies(x, _terms(2, w, w), constant, float("nan"))
    assert not fixed.applies(x, _terms(2, w, w) * 2, modes, 0)  # two terms
    three = [(1.0, ((0, w, 0), (1, w, 0), (2, w, 0)))]
    assert not fixed.applies(_image((4, 5, 6), np.uint8), three, {0: "reflect", **modes}, 0)
    with pytest.raises(ValueError, match="integer path does not apply"):
        fixed.separable_int(x.astype(np.int32), Job(_terms(2, w, w), modes, 0))
    with pytest.raises(ValueError, match="out must"):
        fixed.separable_int(x, Job(_terms(2, w, w), modes, 0), out=np.empty((10, 10), np.uint16))
    with pytest.raises(ValueError, match="overlap"):
        fixed.separable_int(x, Job(_terms(2, w, w), modes, 0), out=x)
