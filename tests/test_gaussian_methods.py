"""``gaussian_filter(method=, tol=)`` and the planner of filters given as passes
(``sepconv.plan.plan_passes``, ``pass_engine``), against scipy.ndimage in float64."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from sepconv import plan
from sepconv.engine import recursive
from sepconv.kernels import gaussian1d

MODES = ["reflect", "constant", "nearest", "mirror", "wrap"]


def _bound(sigmas, orders, shape):
    passes = [
        (a, gaussian1d(s, order=o), 0) for a, (s, o) in enumerate(zip(sigmas, orders, strict=True))
    ]
    p = plan.plan_passes(
        passes, shape, method="recursive", gaussians=list(zip(sigmas, orders, strict=True))
    )
    assert p.method == "recursive"
    return p.bound


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recursive_within_its_reported_bound(mode, dtype) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((70, 90)) * 10).astype(dtype)
    for sigma, order in (((3.0, 5.0), (0, 0)), ((6.0, 2.5), (1, 0)), ((4.0, 9.0), (0, 2))):
        got = sepconv.gaussian_filter(x, sigma, order, mode=mode, cval=1.5, method="recursive")
        ref = ndimage.gaussian_filter(x.astype(np.float64), sigma, order, mode=mode, cval=1.5)
        if mode == "constant":  # sepconv carries cval * sum(w) to the second pass (exact)
            ref = sepconv.gaussian_filter(
                x.astype(np.float64), sigma, order, mode=mode, cval=1.5, method="separable"
            )
        bound = _bound(sigma, order, x.shape) * max(np.abs(x).max(), 1.5)
        slack = 4e-6 * np.abs(ref).max() if dtype == np.float32 else 1e-12
        assert np.abs(got - ref).max() <= bound + slack, (sigma, order)


def test_auto_uses_recursive_only_within_tol_and_when_faster() -> None:
    x = np.random.default_rng(1).random((300, 400))
    w = gaussian1d(40.0)
    passes = [(0, w, 0), (1, w, 0)]
    g = [(40.0, 0)] * 2
    exact = plan.plan_passes(passes, x.shape, gaussians=g)
    assert exact.method == "separable" and exact.bound == 0
    loose = plan.plan_passes(passes, x.shape, tol=1e-3, gaussians=g)
    assert loose.method == "recursive" and 0 < loose.bound <= 1e-3
    assert "within tol" in loose.reason
    tight = plan.plan_passes(passes, x.shape, tol=loose.bound / 2, gaussians=g)
    assert tight.method == "separable"
    # auto with tol never leaves its bound
    got = sepconv.gaussian_filter(x, 40.0, tol=1e-3)
    ref = ndimage.gaussian_filter(x, 40.0)
    assert np.abs(got - ref).max() <= loose.bound * np.abs(x).max() + 1e-12
    # a small sigma: the exact passes are cheaper than the recursion, whatever tol allows
    w2 = gaussian1d(recursive.MIN_SIGMA)
    small = plan.plan_passes(
        [(0, w2, 0), (1, w2, 0)], x.shape, tol=1e-2, gaussians=[(recursive.MIN_SIGMA, 0)] * 2
    )
    assert small.method == "separable"


@pytest.mark.parametrize(
    "kw", [{"truncate": 1.0}, {"truncate": 2.0}, {"truncate": 6.0}, {"radius": 40}, {"radius": 200}]
)
def test_tol_with_another_truncation_stays_within_tol_of_scipy(kw) -> None:
    """Before: the IIR filter (designed against the Gaussian truncated at 4 sigma) replaced
    passes of another truncate/radius, with the 4-sigma bound reported: truncate=1 was off by
    1.1e-2 x max|x| with tol=1e-3 and a reported bound of 1.1e-6."""
    x = np.random.default_rng(4).random((200, 230))
    for tol in (1e-3, 1e-5):
        got = sepconv.gaussian_filter(x, 32.0, tol=tol, **kw)
        ref = ndimage.gaussian_filter(x, 32.0, **kw)
        assert np.abs(got - ref).max() <= tol * np.abs(x).max(), (kw, tol)
        got1 = sepconv.gaussian_filter1d(x, 32.0, tol=tol, **kw)
        ref1 = ndimage.gaussian_filter1d(x, 32.0, **kw)
        assert np.abs(got1 - ref1).max() <= tol * np.abs(x).max(), (kw, tol)
    w = gaussian1d(32.0, **kw)
    p = plan.plan_passes([(0, w, 0), (1, w, 0)], x.shape, tol=1e-3, gaussians=[(32.0, 0)] * 2)
    assert p.method == "separable" and "truncated at 4 sigma" not in p.reason


def test_recursive_refuses_passes_it_does_not_approximate() -> None:
    x = np.random.default_rng(5).random((60, 70))
    with pytest.raises(ValueError, match=r"truncated at 4 sigma.*3 taps on axis 0"):
        sepconv.gaussian_filter(x, 8.0, radius=1, method="recursive")
    with pytest.raises(ValueError, match="truncated at 4 sigma"):
        sepconv.gaussian_filter1d(x, 8.0, truncate=2.0, method="recursive")
    # the default truncation (and a radius that gives the same taps) is what it approximates
    same = sepconv.gaussian_filter(x, 8.0, radius=32, method="recursive")
    np.testing.assert_array_equal(same, sepconv.gaussian_filter(x, 8.0, method="recursive"))
    assert np.abs(same - ndimage.gaussian_filter(x, 8.0)).max() <= _bound(
        (8.0, 8.0), (0, 0), x.shape
    )


def test_nan_data_never_gets_the_recursion() -> None:
    x = np.random.default_rng(2).random((60, 80))
    x[10, 10] = np.nan
    got = sepconv.gaussian_filter(x, 20.0, tol=1e-2)  # auto: exact passes instead
    ref = ndimage.gaussian_filter(x, 20.0)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    with pytest.raises(ValueError, match="NaN or Inf"):
        sepconv.gaussian_filter(x, 20.0, method="recursive")


def test_refusals_name_the_problem() -> None:
    x = np.random.default_rng(3).random((30, 40))
    with pytest.raises(ValueError, match="method must be one of"):
        sepconv.gaussian_filter(x, 5.0, method="iir")
    with pytest.raises(ValueError, match="sigma"):
        sepconv.gaussian_filter(x, recursive.MIN_SIGMA / 2, method="recursive")
    with pytest.raises(ValueError, match="tol"):
        sepconv.gaussian_filter(x, 5.0, tol=-1.0)
    with pytest.raises(ValueError, match="more than tol"):
        sepconv.gaussian_filter(x, 5.0, method="recursive", tol=1e-12)


def test_gaussian_filter1d_and_integer_output() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((50, 60)) * 255
    a = sepconv.gaussian_filter1d(x, 7.0, axis=0, order=1, method="recursive")
    ref = ndimage.gaussian_filter1d(x, 7.0, axis=0, order=1)
    b = plan.plan_passes(
        [(0, gaussian1d(7.0, order=1), 0)], x.shape, method="recursive", gaussians=[(7.0, 1)]
    ).bound
    assert np.abs(a - ref).max() <= b * 255 + 1e-12
    u = x.astype(np.uint8)
    got = sepconv.gaussian_filter(u, 12.0, method="recursive")
    want = ndimage.gaussian_filter(u.astype(np.float64), 12.0)
    bound = _bound((12.0, 12.0), (0, 0), u.shape) * 255
    assert got.dtype == np.uint8
    assert np.abs(got.astype(float) - want).max() <= 0.5 + bound + 1e-3


def test_other_array_libraries_run_the_exact_passes() -> None:
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(5).random((64, 64))
    lazy = da.from_array(x, chunks=32)
    got = sepconv.gaussian_filter(lazy, 6.0, tol=1e-3).compute()
    np.testing.assert_allclose(got, ndimage.gaussian_filter(x, 6.0), atol=1e-12)
    with pytest.raises(ValueError, match="numpy arrays only"):
        sepconv.gaussian_filter(lazy, 6.0, method="recursive")


def test_pass_engine_rule_and_report() -> None:
    assert plan.pass_engine(np.full(plan.RUNNING_TAPS, 0.5)) == "running"
    assert plan.pass_engine(np.full(plan.RUNNING_TAPS - 1, 0.5)) == "direct"
    long = gaussian1d(40.0)
    assert plan.pass_engine(long) == "fft"
    assert plan.pass_engine(long, finite=False) == "direct"
    p = plan.plan_passes([(0, long, 0), (1, np.full(101, 1 / 101), 0)], (500, 500))
    assert p.reason == "axis 0: 321 taps by 1-D FFT; axis 1: 101 taps by running sums"
    assert p.macs == plan.FFT_PASS_TAPS + plan.RUNNING_TAPS


def test_complex_nan_and_torch_inputs() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((40, 50)) + 1j * rng.random((40, 50))
    x[5, 5] = np.nan + 0j  # a NaN in the real part only
    got = sepconv.gaussian_filter(x, 10.0, tol=1e-3)  # auto: the exact passes, not the IIR
    ref = ndimage.gaussian_filter(x, 10.0)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    with pytest.raises(ValueError, match="NaN or Inf"):
        sepconv.gaussian_filter(x, 10.0, method="recursive")
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(rng.random((40, 50)))
    got_t = sepconv.gaussian_filter(t, 10.0, tol=1e-3).numpy()  # the exact passes on torch
    np.testing.assert_allclose(got_t, ndimage.gaussian_filter(t.numpy(), 10.0), atol=1e-10)
    with pytest.raises(ValueError, match="numpy arrays only"):
        sepconv.gaussian_filter(t, 10.0, method="recursive")
