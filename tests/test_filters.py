"""The filtering API against scipy.ndimage as the oracle.

Every test here also runs with NUMBA_BOUNDSCHECK=1 (``make test`` runs ``pytest -m engine``
again with bounds checking on), so an indexing bug in the engine fails loudly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import sepconv
from _helpers import BACKENDS, MODES, rand, run_on
from _helpers import assert_close as close
from sepconv import kernels
from sepconv.engine import fixed

pytestmark = pytest.mark.engine

METHODS = ["auto", "direct", "lowrank", "fft"]


def assert_close(got: np.ndarray, ref: np.ndarray, dtype=np.float64, scale=None) -> None:
    """1e-12 (float64) / 1e-5 (float32) relative to the size of the result."""
    close(got, ref, 1e-12 if np.dtype(dtype) == np.float64 else 1e-5, scale)


# ---------------------------------------------------------------------------------------------
# correlate1d / convolve1d: the pass every filter is built from
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("klen", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_correlate1d_matches_scipy_every_axis_mode_origin(mode: str, klen: int, ndim: int) -> None:
    x = rand((5, 6, 7)[:ndim], seed=klen)
    w = np.random.default_rng(klen + 10).standard_normal(klen)
    for axis in range(-ndim, ndim):
        for origin in range(-(klen // 2), (klen - 1) // 2 + 1):
            got = sepconv.correlate1d(x, w, axis=axis, mode=mode, cval=1.5, origin=origin)
            ref = ndimage.correlate1d(x, w, axis=axis, mode=mode, cval=1.5, origin=origin)
            assert_close(got, ref)
            got = sepconv.convolve1d(x, w, axis=axis, mode=mode, cval=-0.5, origin=origin)
            ref = ndimage.convolve1d(x, w, axis=axis, mode=mode, cval=-0.5, origin=origin)
            assert_close(got, ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_kernel_longer_than_axis_extends_like_scipy(mode: str, n: int) -> None:
    x = rand((n, 4))
    w = np.arange(1.0, 10.0)
    for axis in (0, 1):
        got = sepconv.correlate1d(x, w, axis=axis, mode=mode, cval=2.0)
        assert_close(got, ndimage.correlate1d(x, w, axis=axis, mode=mode, cval=2.0))


@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
@pytest.mark.parametrize(
    "shape", [(7, 3000), (9, 70), (5, 40, 100), (6, 3, 2, 5)], ids=["tiled", "wide", "3d", "4d"]
)
def test_every_engine_path_matches_scipy(shape, mode: str) -> None:
    """Long rows (tiled AXPYs), short rows (padded blocks), last axis and fused 2-D passes."""
    x = rand(shape, seed=11)
    w = np.array([0.5, -1.0, 2.0, 0.25])  # even, not symmetric
    s = kernels.gaussian1d(1.3)  # symmetric (folded)
    d = np.array([-1.0, 0.0, 1.0])  # antisymmetric (folded)
    for axis in range(x.ndim):
        for weights in (w, s, d):
            got = sepconv.correlate1d(x, weights, axis=axis, mode=mode, cval=2.0)
            assert_close(got, ndimage.correlate1d(x, weights, axis=axis, mode=mode, cval=2.0))
    got = sepconv.gaussian_filter(x, 1.2, order=1, mode=mode, cval=-1.0)
    ref = ndimage.correlate(x, kernels.gaussian(1.2, order=1, ndim=x.ndim), mode=mode, cval=-1.0)
    assert_close(got, ref)


def test_correlate1d_float32_is_computed_in_float32_within_1e5() -> None:
    x = rand((40, 50), dtype=np.float32)
    w = kernels.gaussian1d(2.0)
    got = sepconv.correlate1d(x, w, axis=0)
    assert got.dtype == np.float32
    assert_close(got, ndimage.correlate1d(x.astype(np.float64), w, axis=0), np.float32)


# ---------------------------------------------------------------------------------------------
# correlate / convolve: every method is the same mathematical correlation
# ---------------------------------------------------------------------------------------------

KERNELS_2D = {
    "gaussian (rank 1)": kernels.gaussian(1.5),
    "sobel (integer rank 1)": kernels.sobel(0),
    "log (rank 2)": kernels.laplacian_of_gaussian(1.0),
    "gabor (rank 2)": kernels.gabor(1.5, theta=30, frequency=0.2),
    "even 4x2 random": np.random.default_rng(3).standard_normal((4, 2)),
    "disk (full rank)": kernels.disk(2.5, antialias=True),
}


@pytest.mark.parametrize("name", sorted(KERNELS_2D))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_correlate_2d_all_methods_match_scipy(name: str, method: str, mode: str) -> None:
    K = KERNELS_2D[name]
    x = rand((17, 23), seed=1)
    origin = (K.shape[0] // 2 - (1 if K.shape[0] > 2 else 0), -(K.shape[1] // 2))
    ref = ndimage.correlate(x, K, mode=mode, cval=0.75, origin=origin)
    got = sepconv.correlate(x, K, mode=mode, cval=0.75, origin=origin, method=method)
    assert_close(got, ref)
    ref = ndimage.convolve(x, K, mode=mode, cval=0.75, origin=origin)
    got = sepconv.convolve(x, K, mode=mode, cval=0.75, origin=origin, method=method)
    assert_close(got, ref)


@pytest.mark.parametrize("method", ["auto", "direct", "separable", "lowrank", "fft"])
@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap", "mirror", "nearest"])
def test_correlate_3d_separable_kernel_all_methods(method: str, mode: str) -> None:
    K = kernels.gaussian([1.0, 1.5, 0.8], order=[0, 1, 0])
    x = rand((9, 12, 10), seed=2)
    ref = ndimage.correlate(x, K, mode=mode, cval=-1.0)
    got = sepconv.correlate(x, K, mode=mode, cval=-1.0, method=method)
    assert_close(got, ref)


@pytest.mark.parametrize("method", ["auto", "lowrank", "direct", "fft"])
def test_correlate_3d_log_as_three_separable_terms(method: str) -> None:
    K = kernels.laplacian_of_gaussian(1.0, ndim=3)
    x = rand((11, 10, 12), seed=4)
    ref = ndimage.correlate(x, K, mode="reflect")
    assert_close(sepconv.correlate(x, K, method=method), ref)


def test_auto_runs_a_dense_separable_kernel_as_passes_and_says_so() -> None:
    K = np.outer([1.0, 4, 6, 4, 1], [1.0, 2, 1, 0, -1])
    plan = sepconv.make_plan(K, (256, 256))
    assert plan.method == "separable"
    assert plan.rank == 1
    assert plan.macs == 10


def test_auto_picks_lowrank_for_log() -> None:
    plan = sepconv.make_plan(kernels.laplacian_of_gaussian(2.0), (512, 512))
    assert plan.method == "lowrank"
    assert plan.rank == 2


@pytest.mark.parametrize("shape", [(3, 3), (7, 7), (15, 15), (5, 5, 5)])
def test_auto_picks_the_lowest_modelled_time(shape) -> None:
    from sepconv.plan import estimate_time

    K = rand(shape)
    data = (256,) * len(shape)
    plan = sepconv.make_plan(K, data)
    f = sepconv.separate(K)
    mpix = np.prod(data) / 1e6
    times = {
        "direct": estimate_time("direct", np.prod(shape), 1, mpix),
        "fft": estimate_time(
            "fft", sepconv.cost.kernel_macs(shape, "fft", data_shape=data), 1, mpix
        ),
        "lowrank": estimate_time("lowrank", f.macs, f.rank * max(1, len(shape) - 1), mpix),
    }
    assert times[plan.method] == min(times.values())


def test_auto_picks_fft_for_a_large_dense_kernel() -> None:
    assert sepconv.make_plan(rand((41, 41)), (512, 512)).method == "fft"


def test_calibration_is_saved_and_loaded(tmp_path, monkeypatch) -> None:
    import sepconv.plan as plan
    from sepconv.calibrate import calibrate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(plan, "TIME_MODEL", dict(plan.DEFAULT_TIME_MODEL))
    result = calibrate(repeats=1, quick=True)
    path = plan.calibration_path()
    assert path.is_file() and str(tmp_path) in str(path)
    for per_mac, per_pass, per_call in result["time_model"].values():
        assert per_mac > 0 and per_pass >= 0 and per_call >= 0
    # a fresh process state loads the cached model on first use
    monkeypatch.setattr(plan, "TIME_MODEL", dict(plan.DEFAULT_TIME_MODEL))
    monkeypatch.setattr(plan, "_loaded", set())
    plan.estimate_time("direct", 9)
    assert plan.TIME_MODEL["direct"] == pytest.approx(tuple(result["time_model"]["direct"]))


def test_lowrank_with_tol_runs_the_truncated_kernel_exactly() -> None:
    K = kernels.disk(5, antialias=True)
    f = sepconv.separate(K, tol=0.05)
    x = rand((30, 30))
    got = sepconv.correlate(x, K, method="lowrank", tol=0.05)
    assert_close(got, ndimage.correlate(x, f.to_dense()))
    # and its error against the exact filter respects the factorization's bound (|x| <= max)
    err = np.abs(got - ndimage.correlate(x, K)).max()
    assert err <= f.error_bound * np.abs(x).max() + 1e-12


def test_factorization_can_be_passed_as_weights() -> None:
    f = sepconv.separate(kernels.laplacian_of_gaussian(1.5))
    x = rand((20, 20))
    assert_close(sepconv.correlate(x, f), ndimage.correlate(x, f.kernel))
    assert_close(sepconv.convolve(x, f), ndimage.convolve(x, f.kernel))


def test_filter_accepts_a_spec_string() -> None:
    x = rand((25, 25))
    ref = ndimage.correlate(x, kernels.from_spec("gabor:sigma=2,theta=45,frequency=0.2"))
    assert_close(sepconv.filter(x, "gabor:sigma=2,theta=45,frequency=0.2"), ref)


def test_kernel_dimensions_follow_sorted_axes_and_origins_follow_axes_order() -> None:
    # scipy.ndimage's rule (the example: sepconv differed from scipy by 7020 here)
    a = np.arange(576.0).reshape(6, 8, 12)
    w = np.arange(15.0).reshape(3, 5)
    want = ndimage.correlate(a, w, axes=(1, 0), origin=(1, -1))
    for method in ("auto", "direct", "lowrank", "fft"):
        got = sepconv.correlate(a, w, axes=(1, 0), origin=(1, -1), method=method)
        assert_close(got, want)
        got = sepconv.convolve(a, w, axes=(1, 0), origin=(1, -1), mode="wrap", method=method)
        assert_close(got, ndimage.convolve(a, w, axes=(1, 0), origin=(1, -1), mode="wrap"))


@pytest.mark.parametrize("axes", [(0,), (1, 2), (2, 0), (-1, -3, 1)])
def test_axes_filters_only_those_axes(axes) -> None:
    x = rand((6, 7, 8), seed=5)
    K = kernels.gaussian(1.0, ndim=len(axes))
    ref = ndimage.correlate(x, K, axes=axes, mode="mirror")
    for method in ("auto", "direct", "fft"):
        assert_close(sepconv.correlate(x, K, axes=axes, mode="mirror", method=method), ref)


def test_five_d_input_filtered_along_three_axes() -> None:
    x = rand((3, 4, 5, 4, 3), seed=6)
    K = kernels.laplacian_of_gaussian(0.8, ndim=3)
    ref = ndimage.correlate(x, K, axes=(0, 2, 4))
    assert_close(sepconv.correlate(x, K, axes=(0, 2, 4)), ref)


def test_per_axis_modes() -> None:
    x = rand((12, 13))
    modes = ["wrap", "constant"]
    got = sepconv.gaussian_filter(x, 1.5, mode=modes)
    ref = ndimage.gaussian_filter(x, 1.5, mode=modes)
    assert_close(got, ref)


# ---------------------------------------------------------------------------------------------
# named filters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_gaussian_filter_matches_scipy(mode: str) -> None:
    x = rand((20, 18, 6), seed=7)
    for sigma, order in [(1.5, 0), ((1.0, 2.0, 0.5), (0, 1, 2)), ((0.0, 1.0, 1.2), 0)]:
        got = sepconv.gaussian_filter(x, sigma, order=order, mode=mode)
        assert_close(got, ndimage.gaussian_filter(x, sigma, order=order, mode=mode))
    got = sepconv.gaussian_filter(x, 2.0, radius=3, axes=(0, 2), mode=mode, truncate=2.0)
    assert_close(got, ndimage.gaussian_filter(x, 2.0, radius=3, axes=(0, 2), mode=mode))


def test_gaussian_filter1d_matches_scipy() -> None:
    x = rand((30, 8))
    for order in range(4):
        got = sepconv.gaussian_filter1d(x, 1.7, axis=0, order=order, truncate=3.0)
        assert_close(got, ndimage.gaussian_filter1d(x, 1.7, axis=0, order=order, truncate=3.0))


@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
def test_uniform_filters_match_scipy(mode: str) -> None:
    x = rand((15, 16))
    for size, origin in [(3, 0), (4, -2), (5, (1, -1)), ((2, 6), (0, 2))]:
        got = sepconv.uniform_filter(x, size, mode=mode, origin=origin, cval=0)
        assert_close(got, ndimage.uniform_filter(x, size, mode=mode, origin=origin))
    got = sepconv.uniform_filter1d(x, 4, axis=0, mode=mode, origin=1)
    assert_close(got, ndimage.uniform_filter1d(x, 4, axis=0, mode=mode, origin=1))


@pytest.mark.parametrize("name", ["sobel", "prewitt"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_derivative_filters_match_scipy(name: str, ndim: int) -> None:
    x = rand((8, 9, 10)[:ndim])
    for axis in range(ndim):
        for mode in ("reflect", "nearest", "wrap"):
            got = getattr(sepconv, name)(x, axis=axis, mode=mode)
            assert_close(got, getattr(ndimage, name)(x, axis=axis, mode=mode))


@pytest.mark.parametrize("mode", ["reflect", "mirror", "constant"])
def test_laplacian_filters_match_scipy(mode: str) -> None:
    x = rand((14, 15, 9))
    assert_close(sepconv.laplace(x, mode=mode), ndimage.laplace(x, mode=mode))
    assert_close(sepconv.laplace(x, axes=(0, 2)), ndimage.laplace(x, axes=(0, 2)))
    got = sepconv.gaussian_laplace(x, (1.0, 1.5, 0.7), mode=mode)
    assert_close(got, ndimage.gaussian_laplace(x, (1.0, 1.5, 0.7), mode=mode))
    got = sepconv.gaussian_gradient_magnitude(x, 1.2, mode=mode, truncate=3.0)
    assert_close(got, ndimage.gaussian_gradient_magnitude(x, 1.2, mode=mode, truncate=3.0))


# ---------------------------------------------------------------------------------------------
# constant mode with cval != 0: exact, where scipy's separable filters are not (issue 7644)
# ---------------------------------------------------------------------------------------------


def test_constant_mode_cval_is_exact_for_separable_passes() -> None:
    x = rand((16, 16))
    K = kernels.gaussian(2.0, order=(1, 0))  # first pass sums to 0, not 1
    exact = ndimage.correlate(x, K, mode="constant", cval=5.0)  # N-D correlation: exact
    got = sepconv.gaussian_filter(x, 2.0, order=(1, 0), mode="constant", cval=5.0)
    assert_close(got, exact)
    # scipy's own separable filter re-pads each pass with cval and differs near the border
    scipy_sep = ndimage.gaussian_filter(x, 2.0, order=(1, 0), mode="constant", cval=5.0)
    assert np.abs(scipy_sep - exact).max() > 0.1
    assert_close(sepconv.correlate(x, K, mode="constant", cval=5.0, method="separable"), exact)
    sob = sepconv.sobel(x, axis=0, mode="constant", cval=5.0)
    assert_close(sob, ndimage.correlate(x, kernels.sobel(0), mode="constant", cval=5.0))


# ---------------------------------------------------------------------------------------------
# dtypes, output, memory layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.int16, np.int32])
def test_integer_output_is_rounded_to_nearest_and_saturated(dtype) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(8)
    x = rng.integers(info.min, info.max, (20, 21), endpoint=True).astype(dtype)
    K = kernels.laplacian_of_gaussian(1.0) * 3  # overshoots: saturation is exercised
    ref = ndimage.correlate(x.astype(np.float64), K)
    for method in ("auto", "direct", "fft"):
        got = sepconv.correlate(x, K, method=method)
        assert got.dtype == dtype
        want = np.clip(ref, info.min, info.max)
        assert np.abs(got.astype(np.float64) - want).max() <= 0.5 + 1e-6
        assert got.max() == info.max and got.min() == info.min
    g = sepconv.gaussian_filter(x, 1.3)
    want = np.clip(ndimage.gaussian_filter(x.astype(np.float64), 1.3), info.min, info.max)
    # 8/16-bit into the same dtype runs on quantised taps (engine.fixed): before rounding it
    # is within the plan's analytic error bound (< 0.5 LSB, so within 1 LSB after it)
    w = kernels.gaussian1d(1.3)
    p = fixed.plan(x.dtype, 2, [(1.0, ((0, w, 0), (1, w, 0)))], {0: "reflect", 1: "reflect"}, 0)
    slack = 1e-6 if p is None else p.error
    assert slack < 0.5
    assert np.abs(g.astype(np.float64) - want).max() <= 0.5 + slack


def test_integer_intermediate_passes_are_not_requantized() -> None:
    x = np.zeros((9, 9), dtype=np.uint8)
    x[4, 4] = 1
    # every pass of a 3x3 box gives 1/3: scipy rounds that to 0 after the first pass
    assert ndimage.uniform_filter(x, 3)[4, 4] == 0
    assert sepconv.uniform_filter(x * 9, 3)[4, 4] == 1


@pytest.mark.parametrize("out_dtype", [np.float32, np.float64, np.int16, np.uint8])
def test_output_dtype_and_array(out_dtype) -> None:
    x = rand((10, 11)) * 50
    ref = ndimage.gaussian_filter(x, 1.0)
    got = sepconv.gaussian_filter(x, 1.0, output=out_dtype)
    assert got.dtype == out_dtype
    out = np.empty(x.shape, dtype=out_dtype)
    res = sepconv.gaussian_filter(x, 1.0, output=out)
    assert res is out
    np.testing.assert_array_equal(out, got)
    if np.dtype(out_dtype).kind == "f":
        assert_close(got, ref, out_dtype)
    else:
        info = np.iinfo(out_dtype)
        assert np.array_equal(got, np.clip(np.rint(ref), info.min, info.max).astype(out_dtype))


def test_output_is_input_works_in_place() -> None:
    x = rand((12, 13))
    ref = ndimage.correlate(x, kernels.laplacian_of_gaussian(1.0))
    y = x.copy()
    res = sepconv.correlate(y, kernels.laplacian_of_gaussian(1.0), output=y)
    assert res is y
    assert_close(y, ref)
    y = x.copy()
    sepconv.gaussian_filter(y, 2.0, output=y)
    assert_close(y, ndimage.gaussian_filter(x, 2.0))


def test_result_never_aliases_the_input() -> None:
    x = rand((5, 5))
    y = sepconv.gaussian_filter(x, 0.0)  # identity
    assert y is not x and not np.shares_memory(x, y)
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2, 1::3],
        lambda a: a[::-1, ::-2],
        lambda a: a.T,
        lambda a: np.asfortranarray(a),
        lambda a: a.astype(">f8"),
        lambda a: a.astype(">f4"),
    ],
    ids=["strided", "negative-stride", "transpose", "fortran", "big-endian", "big-endian-f4"],
)
def test_non_contiguous_and_big_endian_input(view) -> None:
    x = view(rand((30, 31)))
    xr = np.ascontiguousarray(x, dtype=np.float64)
    for method in ("auto", "direct", "fft"):
        got = sepconv.correlate(x, kernels.laplacian_of_gaussian(1.0), method=method)
        ref = ndimage.correlate(xr, kernels.laplacian_of_gaussian(1.0))
        assert_close(got, ref, np.float32 if x.dtype.itemsize == 4 else np.float64)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (4, 0, 3)])
def test_zero_size_arrays(shape) -> None:
    x = np.zeros(shape)
    K = kernels.gaussian(1.0, ndim=len(shape))
    for method in ("auto", "direct", "fft"):
        assert sepconv.correlate(x, K, method=method).shape == shape
    assert sepconv.gaussian_filter(x, 1.0).shape == shape


def test_size_one_axes() -> None:
    x = rand((1, 7, 1))
    K = kernels.gaussian(1.0, ndim=3)
    for mode in MODES:
        assert_close(sepconv.correlate(x, K, mode=mode), ndimage.correlate(x, K, mode=mode))


def test_nan_and_inf_propagate_like_scipy() -> None:
    x = rand((15, 15))
    x[3, 4] = np.nan
    x[10, 10] = np.inf
    got = sepconv.gaussian_filter(x, 1.0)
    ref = ndimage.gaussian_filter(x, 1.0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    got = sepconv.correlate(x, kernels.laplace(), method="direct")
    ref = ndimage.correlate(x, kernels.laplace())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


# ---------------------------------------------------------------------------------------------
# bad input: a clear error before any output is written
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), mode="edge"),
            ValueError,
            r"mode must be one of \['constant', 'grid-constant'",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones(3)),
            ValueError,
            "weights must have one dimension per filtered axis",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), axes=(0, 0)),
            ValueError,
            "axes must not repeat",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), axes=(0, 2)),
            ValueError,
            r"axes must be in \[-2, 1\]",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), origin=2),
            ValueError,
            "origin must be between -1 and 1",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), method="magic"),
            ValueError,
            "method must be one of",
        ),
        (lambda x, o: sepconv.correlate(x, np.ones((3, 3)), tol=-1), ValueError, "tol must be"),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)), output=o[:4]),
            ValueError,
            r"output must have the input's shape \(6, 6\)",
        ),
        (
            lambda x, o: sepconv.correlate(x, kernels.laplace(), method="separable"),
            ValueError,
            "method='separable' needs a separable kernel",
        ),
        (lambda x, o: sepconv.correlate("abc", np.ones((3, 3))), TypeError, "input must be"),
        (
            lambda x, o: sepconv.correlate(x.astype(np.longdouble), np.ones((3, 3))),
            TypeError,
            "float16, float32, float64, complex64, complex128",
        ),
        (
            lambda x, o: sepconv.correlate(x, np.ones((3, 3)) * 1j, output=o),
            RuntimeError,
            "output must have complex dtype",
        ),
        (lambda x, o: sepconv.correlate(x, np.ones((3, 3)), cval="a"), TypeError, "cval"),
        (lambda x, o: sepconv.correlate(x, [[1, np.nan]]), ValueError, "weights must be finite"),
        (lambda x, o: sepconv.gaussian_filter(x, -1.0), ValueError, "sigma"),
        (lambda x, o: sepconv.gaussian_filter(x, float("nan")), ValueError, "sigma"),
        (lambda x, o: sepconv.gaussian_filter(x, 1.0, order=-1), ValueError, "order"),
        (lambda x, o: sepconv.gaussian_filter(x, 1.0, truncate=-1), ValueError, "truncate"),
        (lambda x, o: sepconv.gaussian_filter(x, (1.0, 2.0, 3.0)), ValueError, "sigma"),
        (lambda x, o: sepconv.correlate1d(x, np.ones(3), axis=2), ValueError, "axes must be in"),
        (lambda x, o: sepconv.correlate1d(x, np.ones((3, 3))), ValueError, "weights must be 1-D"),
        (lambda x, o: sepconv.uniform_filter(x, -1), ValueError, "size must be"),
        (lambda x, o: sepconv.uniform_filter1d(x, 0), RuntimeError, "incorrect filter size"),
        (lambda x, o: sepconv.correlate(np.array(1.0), [1.0]), ValueError, "at least one"),
    ],
)
def test_bad_input_raises_before_writing_output(call, exc, match) -> None:
    x = rand((6, 6))
    out = np.full((6, 6), 7.0)
    with pytest.raises(exc, match=match):
        call(x, out)
    assert np.all(out == 7.0)


def test_bad_output_array_is_left_untouched() -> None:
    x = rand((6, 6))
    out = np.full((6, 6), 7.0)
    with pytest.raises(ValueError, match="origin"):
        sepconv.correlate(x, np.ones((3, 3)), output=out, origin=(0, 5))
    assert np.all(out == 7.0)


# ---------------------------------------------------------------------------------------------
# property tests: any shape, kernel, mode, origin, method agrees with scipy
# ---------------------------------------------------------------------------------------------


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 8), min_size=ndim, max_size=ndim)))
    axes = tuple(draw(st.permutations(range(ndim)))[: draw(st.integers(1, min(ndim, 3)))])
    rank = draw(st.integers(1, 3))
    kshape = tuple(draw(st.lists(st.integers(1, 6), min_size=len(axes), max_size=len(axes))))
    origin = tuple(draw(st.integers(-(k // 2), (k - 1) // 2)) for k in kshape)
    mode = draw(st.sampled_from(MODES))
    method = draw(st.sampled_from(["auto", "direct", "lowrank", "fft"]))
    seed = draw(st.integers(0, 2**31))
    return shape, axes, kshape, rank, origin, mode, method, seed


@settings(max_examples=80, deadline=None)
@given(cases())
def test_property_every_method_is_the_padded_correlation(case) -> None:
    shape, axes, kshape, rank, origin, mode, method, seed = case
    rng = np.random.default_rng(seed)
    K = np.zeros(kshape)
    for _ in range(rank):  # a sum of `rank` separable terms
        term = np.array(1.0)
        for k in kshape:
            term = np.multiply.outer(term, rng.standard_normal(k))
        K += term
    x = rng.standard_normal(shape)
    # scipy's axes rule: kernel dimensions follow the sorted axes, origin[i] applies to axes[i]
    # (K was drawn with dimension i for axes[i]: hand both the kernel in sorted-axis order).
    # scipy itself applies origin[i] to axis i when *all* axes are filtered (its quirk; sepconv
    # keeps one rule): give it the origins in axis order then
    K = K.transpose(np.argsort(axes))
    ref_origin = list(origin)
    if len(axes) == x.ndim:
        ax = [a % x.ndim for a in axes]
        ref_origin = [origin[ax.index(a)] for a in range(x.ndim)]
    ref = ndimage.correlate(x, K, mode=mode, cval=0.3, origin=ref_origin, axes=axes)
    got = sepconv.correlate(x, K, mode=mode, cval=0.3, origin=origin, method=method, axes=axes)
    assert_close(got, ref, scale=max(1.0, float(np.abs(K).sum() * (np.abs(x).max() + 0.3))))


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([np.uint8, np.int16, np.float32, np.float64]),
    st.integers(1, 4),
    st.floats(0.0, 3.0),
    st.sampled_from(MODES),
)
def test_property_gaussian_filter_any_dtype(dtype, ndim, sigma, mode) -> None:
    shape = (7, 6, 5, 4)[:ndim]
    rng = np.random.default_rng(ndim)
    x = (rng.random(shape) * 100).astype(dtype)
    ref = ndimage.gaussian_filter(x.astype(np.float64), sigma, mode=mode)
    got = sepconv.gaussian_filter(x, sigma, mode=mode)
    assert got.dtype == dtype
    if np.dtype(dtype).kind == "f":
        assert_close(got, ref, dtype)
    else:
        info = np.iinfo(dtype)
        # 8/16-bit images of 1 or 2 dimensions run on quantised taps (engine.fixed): before
        # rounding within the plan's analytic error bound (< 0.5 LSB, so within 1 LSB after it)
        slack = 1e-6
        if ndim <= 2 and sigma > 0:
            w = kernels.gaussian1d(sigma)
            passes = tuple((a, w, 0) for a in range(ndim))
            p = fixed.plan(x.dtype, ndim, [(1.0, passes)], dict.fromkeys(range(ndim), mode), 0)
            slack = max(slack, 0.0 if p is None else p.error)
        assert slack < 0.5
        assert np.abs(got - np.clip(ref, info.min, info.max)).max() <= 0.5 + slack


def test_all_methods_agree_on_a_grid() -> None:
    x = rand((13, 14), seed=9)
    for K in KERNELS_2D.values():
        results = [sepconv.correlate(x, K, method=m) for m in METHODS]
        for a, b in itertools.combinations(results, 2):
            assert_close(a, b)


def test_numba_boundscheck_is_really_on_when_requested() -> None:
    """Guards the NUMBA_BOUNDSCHECK=1 run of `make test`: it must actually check bounds."""
    import os

    import numba

    if os.environ.get("NUMBA_BOUNDSCHECK") != "1":
        pytest.skip("only meaningful in the NUMBA_BOUNDSCHECK=1 run")
    assert numba.config.BOUNDSCHECK

    @numba.njit
    def read(a, i):
        return a[i]

    with pytest.raises(IndexError):
        read(np.zeros(3), 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(7, 9), (5, 5), (3, 4, 5)])
def test_an_approximate_factorization_is_the_filter_auto_runs(backend, shape) -> None:
    # separate(K, rank=2) is a cheaper approximate filter, chosen on purpose; 'auto' used to
    # run the exact K by a dense method whenever its time model found that faster (7x9:
    # direct), so the result depended on the machine's calibration
    K = rand(shape, seed=70)
    f = sepconv.separate(K, rank=2)
    assert not f.exact
    x = rand((24, 30, 8)[: len(shape)], seed=71)
    assert sepconv.make_plan(f, x.shape).method == "lowrank"
    got = run_on(backend, sepconv.correlate, x, f)
    assert_close(got, ndimage.correlate(x, f.to_dense()))
    got = run_on(backend, sepconv.convolve, x, f)
    assert_close(got, ndimage.convolve(x, f.to_dense()))
    # 'direct' runs the kernel it factorizes
    assert_close(sepconv.correlate(x, f, method="direct"), ndimage.correlate(x, K))
