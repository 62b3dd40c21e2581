"""The engines the numpy backend picks by itself (running sums for wide boxes, 1-D FFTs for
long passes), through the public filters and directly, against scipy.ndimage in float64."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from sepconv import plan
from sepconv.engine.fft import fft_pass

pytestmark = pytest.mark.engine

MODES = ["reflect", "constant", "nearest", "mirror", "wrap"]


@pytest.mark.parametrize("mode", MODES)
def test_fft_pass_matches_correlate1d(mode) -> None:
    rng = np.random.default_rng(0)
    for shape, axis in (((7, 50, 9), 1), ((40, 33), 0), ((40, 33), 1), ((5,), 0), ((6, 7, 8), 2)):
        x = rng.standard_normal(shape)
        for k in (1, 4, 15, 80):  # 80: longer than every axis here
            w = rng.standard_normal(k)
            for origin in (0, -(k // 2), (k - 1) // 2):
                ref = ndimage.correlate1d(x, w, axis, mode=mode, cval=1.5, origin=origin)
                got = fft_pass(x, axis, w, origin, mode, 1.5)
                np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(w).sum())


def test_fft_pass_integer_input_and_float32_out() -> None:
    x = np.random.default_rng(1).integers(0, 65535, (30, 40)).astype(np.uint16)
    w = np.hanning(301)
    out = np.empty(x.shape, np.float32)
    assert fft_pass(x, 1, w, 0, "reflect", 0.0, out=out) is out
    ref = ndimage.correlate1d(x.astype(np.float64), w, 1, mode="reflect")
    np.testing.assert_allclose(out, ref, rtol=2e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
@pytest.mark.parametrize("mode", MODES)
def test_wide_uniform_filter_runs_on_running_sums(dtype, mode) -> None:
    assert plan.RUNNING_TAPS <= 25
    rng = np.random.default_rng(2)
    x = (rng.random((90, 77)) * 200).astype(dtype)
    # (8/16-bit into the same dtype runs on engine.fixed: tests/test_fixed.py)
    output = np.float64 if x.dtype.kind in "iu" else None
    for size, origin in ((31, 0), ((25, 40), (3, -5))):
        got = sepconv.uniform_filter(x, size, output, mode=mode, cval=2.0, origin=origin)
        ref = ndimage.uniform_filter(x.astype(np.float64), size, mode=mode, cval=2.0, origin=origin)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * 200)


def test_wide_box_nan_stays_local() -> None:
    # scipy's running sum carries a NaN along the rest of the line; here the window holds it
    x = np.random.default_rng(3).random((100, 100))
    x[50, 50] = np.nan
    got = sepconv.uniform_filter(x, 31)
    assert np.isnan(got).sum() == 31 * 31
    finite = np.where(np.isnan(x), 0.0, x)
    ok = ~np.isnan(got)
    np.testing.assert_allclose(got[ok], ndimage.uniform_filter(finite, 31)[ok], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
def test_wide_gaussian_long_passes(dtype, mode) -> None:
    rng = np.random.default_rng(4)
    x = (rng.random((60, 700)) * 200).astype(dtype)
    sigma = (2.0, plan.FFT_PASS_TAPS / 8 + 1)  # the second pass is long enough for the FFT
    got = sepconv.gaussian_filter(x, sigma, mode=mode, cval=3.0)
    ref = ndimage.gaussian_filter(x.astype(np.float64), sigma, mode=mode, cval=3.0)
    if x.dtype.kind == "u":
        assert np.abs(got.astype(float) - np.clip(np.rint(ref), 0, 65535)).max() <= 1
    else:
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * 200)
    # derivatives, several terms (gaussian_gradient_magnitude) and NaN (direct passes)
    y = rng.random((40, 600))
    np.testing.assert_allclose(
        sepconv.gaussian_gradient_magnitude(y, 40.0),
        ndimage.gaussian_gradient_magnitude(y, 40.0),
        rtol=1e-9,
        atol=1e-15,
    )
    y[5, 5] = np.nan
    got = sepconv.gaussian_filter(y, (1.0, 40.0))
    assert np.array_equal(np.isnan(got), np.isnan(ndimage.gaussian_filter(y, (1.0, 40.0))))


@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap"])
def test_fft_pass_unpadded_transforms(mode) -> None:
    # reflect/mirror with centred symmetric taps run as DCT-II/DCT-I of the bare line, wrap
    # as a DFT of it: kernels shorter and far longer than the axis, lines of 1-2 samples
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 17, 64):
        x = rng.standard_normal((4, n, 5))
        for k in (1, 3, 11, 301):
            half = rng.random(k // 2 + 1)
            w = np.concatenate([half, half[-2::-1]])
            for axis in (1, 2, 0):
                ref = ndimage.correlate1d(x, w, axis, mode=mode)
                got = fft_pass(x, axis, w, 0, mode, 0.0)
                np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * w.sum(), err_msg=str(n))
    if mode == "wrap":  # any taps, any origin
        x = rng.standard_normal((6, 40))
        for k, origin in ((4, 1), (9, -4), (50, 3)):
            w = rng.standard_normal(k)
            ref = ndimage.correlate1d(x, w, 1, mode="wrap", origin=origin)
            np.testing.assert_allclose(fft_pass(x, 1, w, origin, "wrap", 0.0), ref, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_slab_passes_of_volumes_match_scipy(mode, monkeypatch) -> None:
    """A pass along axis -3 joined to the fused pass over the last two axes (``_slab_pass``:
    plane by plane, no intermediate volume): rank-1 and low-rank kernels with even lengths
    and origins, a first stage before the slab (4-D), 8-bit data read directly (antisymmetric
    Sobel taps on unsigned values), against scipy.ndimage in float64."""
    from sepconv.engine import numba_cpu

    calls = []
    real = numba_cpu._slab_pass

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(numba_cpu, "_slab_pass", spy)
    monkeypatch.setattr(numba_cpu, "_SLAB_PLANES", 1)
    rng = np.random.default_rng(5)
    for shape, nd in (((10, 9, 11), 3), ((3, 9, 8, 10), 3), ((2, 9, 7, 12), 4)):
        x = rng.standard_normal(shape)
        vecs = [rng.standard_normal(k) for k in (3, 4, 5, 2)[:nd]]
        k1 = vecs[0]
        for v in vecs[1:]:
            k1 = np.multiply.outer(k1, v)
        k2 = (
            k1 + np.multiply.outer(np.multiply.outer(rng.standard_normal(3), vecs[1]), vecs[2])
            if nd == 3
            else k1
        )
        full = k1.reshape((1,) * (x.ndim - nd) + k1.shape)
        origin = [0] * (x.ndim - nd) + [1, -2, 0, 0][:nd]
        for kernel, method in (
            (full, "separable"),
            (k2.reshape(full.shape) if nd == 3 else full, "lowrank"),
        ):
            calls.clear()
            got = sepconv.correlate(x, kernel, mode=mode, cval=0.5, origin=origin, method=method)
            ref = ndimage.correlate(x, kernel, mode=mode, cval=0.5, origin=origin)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(kernel).sum() * 4)
            assert calls, (shape, method)
    u = rng.integers(0, 256, (12, 10, 9)).astype(np.uint8)
    for axis in (0, 1, 2):
        calls.clear()
        got = sepconv.sobel(u, axis=axis, output=np.float32, mode=mode, cval=3.0)
        # the dense kernel: constant mode is exact for any cval (scipy re-pads each pass)
        vecs = [np.array([1.0, 2.0, 1.0])] * 3
        vecs[axis] = np.array([-1.0, 0.0, 1.0])
        dense = np.multiply.outer(np.multiply.outer(vecs[0], vecs[1]), vecs[2])
        ref = ndimage.correlate(u.astype(np.float64), dense, mode=mode, cval=3.0)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)
        assert calls
    calls.clear()
    got = sepconv.gaussian_filter(u, 1.2, output=np.float32, mode=mode, cval=3.0)
    ref = ndimage.gaussian_filter(u.astype(np.float64), 1.2, mode=mode, cval=3.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert calls
