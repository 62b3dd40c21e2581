"""Real inputs that broke the filters silently (issue 10): unsigned images, the ends of the
integer ranges, output precision, byte order and bool. Every backend, scipy as the oracle.

Integer outputs are compared with scipy's float64 result rounded to nearest and saturated,
computed here with Python integers so the reference itself cannot overflow.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from _helpers import BACKENDS, run_on

pytestmark = pytest.mark.engine

run = run_on  # fn(x, ...) on a backend, as a numpy array


def rounded_saturated(ref: np.ndarray, dtype) -> np.ndarray:
    """scipy's float64 result rounded half to even and saturated, in exact integers."""
    info = np.iinfo(dtype)
    out = [
        min(max(int(np.rint(v)), info.min), info.max) if np.isfinite(v) else 0
        for v in np.asarray(ref, dtype=np.float64).ravel()
    ]
    return np.array(out, dtype=object).reshape(ref.shape)


# ---------------------------------------------------------------------------------------------
# unsigned input through folded antisymmetric passes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_sobel_along_outer_axis_of_unsigned_image_matches_scipy(backend, dtype) -> None:
    img = np.array([[10] * 3, [20] * 3, [90] * 3, [30] * 3], dtype)
    got = run(backend, sepconv.sobel, img, 0, output=np.float32)
    np.testing.assert_array_equal(got[:, 0], [40, 320, 40, -240])
    ref = ndimage.sobel(img.astype(np.float64), 0)
    got_int = run(backend, sepconv.sobel, img, 0)
    assert got_int.dtype == dtype
    np.testing.assert_array_equal(got_int, rounded_saturated(ref, dtype).astype(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_antisymmetric_passes_on_random_unsigned_volume(backend, dtype, axis) -> None:
    info = np.iinfo(dtype)
    x = np.random.default_rng(axis).integers(0, info.max, (7, 9, 70), endpoint=True, dtype=dtype)
    for fn in (sepconv.sobel, sepconv.prewitt):
        ref = getattr(ndimage, fn.__name__)(x.astype(np.float64), axis)
        got = run(backend, fn, x, axis, output=np.float64)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * info.max)
    ref = ndimage.gaussian_filter1d(x.astype(np.float64), 1.5, axis=axis, order=1)
    got = run(backend, sepconv.gaussian_filter1d, x, 1.5, axis=axis, order=1, output=np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * info.max)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_gradient_magnitude_of_uint8_image(backend) -> None:
    x = np.random.default_rng(3).integers(0, 256, (40, 70), dtype=np.uint8)
    ref = ndimage.gaussian_gradient_magnitude(x.astype(np.float64), 2.0)
    got = run(backend, sepconv.gaussian_gradient_magnitude, x, 2.0, output=np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    got8 = run(backend, sepconv.gaussian_gradient_magnitude, x, 2.0)
    assert np.abs(got8.astype(int) - rounded_saturated(ref, np.uint8).astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------
# saturation at the ends of the integer ranges
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturation_at_int64_max_does_not_wrap(backend) -> None:
    x = np.full(4, 2**63 - 1, np.int64)
    got = run(backend, sepconv.uniform_filter1d, x, 3)
    np.testing.assert_array_equal(got, x)
    got = run(backend, sepconv.uniform_filter1d, np.full(4, -(2**63), np.int64), 3)
    assert (got == -(2**63)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("out", [np.int64, np.uint64])
def test_64_bit_results_between_2_51_and_2_52_round_half_to_even(backend, out) -> None:
    """float64 values in [2**51, 2**52) can still end in .5. Before: the rounding trick
    covered |v| < 2**51 only and truncated above (2**51 + 1.5 -> ...249, not ...250).
    Reference: numpy's rint (half to even) of the same float64 values."""
    v = np.array([2**51 + 1.5, 2**51 + 2.5, 2**51 + 3.5, 2**52 - 0.5, 2**50 + 0.5, 7.5])
    sign = -1.0 if out == np.int64 else 1.0
    x = np.concatenate([v, sign * v]) if out == np.int64 else v
    got = run(backend, sepconv.correlate1d, x, [0.0, 1.0], mode="nearest", output=out)
    np.testing.assert_array_equal(got, np.rint(x).astype(out))
    ints = np.array([2**51 + 1, 2**51 + 2, 2**51 + 5, 2**51 + 6], np.int64)  # means: x.5
    got = run(backend, sepconv.correlate1d, ints, [0.5, 0.5], mode="nearest")
    want = np.rint((ints[:-1].astype(np.float64) + ints[1:]) / 2)  # exact halves in float64
    np.testing.assert_array_equal(got[1:], want.astype(np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("dtype", "src"),
    [
        (np.uint32, np.float32),
        (np.int32, np.float32),
        (np.uint64, np.float64),
        (np.int64, np.float64),
        (np.uint16, np.float32),
        (np.int8, np.float64),
    ],
)
def test_saturation_to_every_integer_output(backend, dtype, src) -> None:
    info = np.iinfo(dtype)
    big = np.full((4, 4), 1e30, src)
    got = run(backend, sepconv.gaussian_filter, big, 1, output=dtype)
    assert got.dtype == dtype and (got == info.max).all(), got
    got = run(backend, sepconv.gaussian_filter, -big, 1, output=dtype)
    assert (got == info.min).all(), got


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_weight_into_int32_saturates_instead_of_flipping_sign(backend) -> None:
    got = run(backend, sepconv.correlate1d, np.full(3, 200, np.uint8), [1e10], output=np.int32)
    np.testing.assert_array_equal(got, np.full(3, 2**31 - 1))
    got = run(backend, sepconv.gaussian_filter, np.full((4, 4), 1e10, np.float32), 1, output="u4")
    np.testing.assert_array_equal(got, np.full((4, 4), 2**32 - 1))


# ---------------------------------------------------------------------------------------------
# precision follows the output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
def test_float64_output_is_computed_in_float64(backend, dtype) -> None:
    x = (np.random.default_rng(5).random((30, 31)) * 120).astype(dtype)
    ref = ndimage.uniform_filter(x.astype(np.float64), 5)
    got = run(backend, sepconv.uniform_filter, x, 5, output=np.float64)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_integer_output_of_float32_input_is_exact(backend) -> None:
    # float32 arithmetic would be off by up to ~100 at 1e9; the int64 output asks for more
    x = np.full((5, 6), 1e9, np.float32) + np.arange(30, dtype=np.float32).reshape(5, 6) * 128
    ref = ndimage.uniform_filter(x.astype(np.float64), 3)
    got = run(backend, sepconv.uniform_filter, x, 3, output=np.int64)
    np.testing.assert_array_equal(got, rounded_saturated(ref, np.int64).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# byte order and bool
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [">i2", ">u2", ">i4", ">u4", ">i8", ">f4", ">f8", "<i2", ">u1"])
@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_big_endian_input_matches_native(backend, dtype) -> None:
    x = np.random.default_rng(7).integers(0, 200, (9, 10)).astype(dtype)
    native = x.astype(np.dtype(dtype).newbyteorder("="))
    for fn, args in (
        (sepconv.gaussian_filter, (1.2,)),
        (sepconv.sobel, (0,)),
        (sepconv.correlate, (np.arange(9.0).reshape(3, 3),)),
        (sepconv.convolve, (np.random.default_rng(1).random((4, 5)),)),
    ):
        got = run(backend, fn, x, *args)
        # the same backend on the native-order copy: byte order must change nothing at all
        # (across backends only rounding may differ: dask runs pass by pass, numpy fused)
        want = run(backend, fn, native, *args)
        assert got.dtype.isnative and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        ref = getattr(ndimage, fn.__name__)(native.astype(np.float64), *args)
        got64 = run(backend, fn, x, *args, output=np.float64)
        np.testing.assert_allclose(got64, ref, rtol=1e-12, atol=1e-9)


def test_big_endian_output_array_and_dtype_are_honoured() -> None:
    x = np.arange(20, dtype=">i2").reshape(4, 5)
    out = np.zeros((4, 5), ">f8")
    assert sepconv.uniform_filter(x, 3, output=out) is out
    np.testing.assert_allclose(out, ndimage.uniform_filter(x.astype(float), 3))
    got = sepconv.uniform_filter(x.astype(float), 3, output=">i4")
    assert got.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(got, np.rint(ndimage.uniform_filter(x.astype(float), 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bool_input_is_accepted_and_rounded_like_integers(backend) -> None:
    mask = np.random.default_rng(2).random((12, 13)) > 0.5
    ref = ndimage.uniform_filter(mask.astype(np.float64), 3)
    got = run(backend, sepconv.uniform_filter, mask, 3, output=np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    got_bool = run(backend, sepconv.uniform_filter, mask, 3)
    assert got_bool.dtype == np.bool_
    # rounded to nearest and saturated to [0, 1]: a majority vote, not "any non-zero"
    np.testing.assert_array_equal(got_bool, np.clip(np.rint(ref), 0, 1).astype(bool))
    got_sobel = run(backend, sepconv.sobel, mask, 0, output=np.int16)
    np.testing.assert_array_equal(got_sobel, ndimage.sobel(mask.astype(np.float64), 0))


# ---------------------------------------------------------------------------------------------
# NaN and Inf: every plan gives the direct correlation's non-finite pattern
# ---------------------------------------------------------------------------------------------


def assert_same_nonfinite(got: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    for test in (np.isnan, np.isposinf, np.isneginf):
        mismatch = test(got) != test(ref)
        assert not mismatch.any(), f"{test.__name__} differs at {np.argwhere(mismatch)[:5]}"
    fin = np.isfinite(ref)
    scale = float(np.abs(ref[fin]).max())
    np.testing.assert_allclose(got[fin], ref[fin], rtol=0, atol=rtol * scale)


def with_nonfinite(shape, dtype, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).random(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[0] = np.nan  # a corner: reflect folds it back in
    flat[flat.size // 2] = np.inf
    flat[flat.size // 2 + 3] = -np.inf
    flat[-7] = np.inf
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["auto", "fft", "direct", "lowrank"])
@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap", "nearest", "mirror"])
def test_nan_and_inf_stay_where_direct_correlation_puts_them(backend, method, mode) -> None:
    x = with_nonfinite((40, 45), np.float64)
    K = np.random.default_rng(1).standard_normal((9, 11))
    K[2] = 0  # zero taps: a NaN read through them is not read at all
    K[:, 4] = 0
    ref = ndimage.correlate(x, K, mode=mode)
    got = run(backend, sepconv.correlate, x, K, mode=mode, method=method)
    assert_same_nonfinite(got, ref, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_nan_in_an_image_through_an_fft_plan_stays_local(backend) -> None:
    x = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    x[0, 0] = np.nan
    K = np.random.default_rng(1).standard_normal((31, 31))
    assert sepconv.make_plan(K, x.shape).method == "fft"
    got = run(backend, sepconv.correlate, x, K)
    ref = ndimage.correlate(x.astype(np.float64), K)
    assert np.isnan(ref).sum() == 256
    assert_same_nonfinite(got, ref, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_through_a_low_rank_plan_stays_inf(backend) -> None:
    x = np.zeros((20, 20))
    x[10, 10] = np.inf
    K = sepconv.kernels.laplacian_of_gaussian(1.0)  # rank 2: terms of both signs
    assert sepconv.make_plan(K, x.shape).method in ("lowrank", "direct")
    got = run(backend, sepconv.correlate, x, K, method="lowrank")
    assert_same_nonfinite(got, ndimage.correlate(x, K), 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cval", [np.nan, np.inf, -np.inf])
def test_non_finite_cval_in_constant_mode(backend, cval) -> None:
    x = np.random.default_rng(4).random((15, 16))
    K = np.random.default_rng(5).standard_normal((5, 4))
    ref = ndimage.correlate(x, K, mode="constant", cval=cval)
    for method in ("fft", "lowrank", "direct"):
        got = run(backend, sepconv.correlate, x, K, mode="constant", cval=cval, method=method)
        assert_same_nonfinite(got, ref, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cval", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("order", [(0, 0), (1, 0), (0, 1), (2, 0), (1, 2)])
def test_non_finite_cval_through_derivative_passes_is_the_dense_correlation(
    backend, cval, order
) -> None:
    """The padding carried from pass to pass reads a non-finite cval through the non-zero
    taps one by one (inf through taps of both signs: NaN). Before: ``inf * sum(w)`` took
    its sign from the rounding residue of an antisymmetric derivative (-3.7e-17): -inf,
    where the dense correlation gives NaN. Reference: scipy's N-D correlate of the dense
    outer-product kernel (scipy's own gaussian_filter re-pads every pass with cval)."""
    x = np.random.default_rng(4).random((12, 13))
    K = np.outer(*(sepconv.kernels.gaussian1d(1.2, order=o) for o in order))
    ref = ndimage.correlate(x, K, mode="constant", cval=cval)
    got = run(backend, sepconv.gaussian_filter, x, 1.2, order, mode="constant", cval=cval)
    assert_same_nonfinite(got, ref, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cval_beyond_the_float32_range_on_float32_data(backend) -> None:
    """cval=1e39 on float32 data: scipy (float64 throughout) gives finite borders where the
    weights bring the result back into range. Before, the torch backend made cval inf (the
    Triton engine) or raised in masked_fill (torch's own ops)."""
    x = np.random.default_rng(2).random((6, 7)).astype(np.float32)
    box = np.full((3, 3), 1 / 9)  # scipy's own uniform_filter loses the interior to its
    cases = (  # running sum's cancellation of 1e39: the dense correlation is the reference
        (sepconv.correlate1d, ([0.25, 0.5, 0.25],), ndimage.correlate1d),
        (sepconv.uniform_filter, (3,), lambda v, _, **kw: ndimage.correlate(v, box, **kw)),
    )
    for fn, args, ref_fn in cases:
        with np.errstate(over="ignore"):
            want = ref_fn(x.astype(np.float64), *args, mode="constant", cval=1e39)
            want = want.astype(np.float32)
            got = run(backend, fn, x, *args, mode="constant", cval=1e39)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_slab_in_float32_volume_with_a_ball(backend) -> None:
    vol = np.random.default_rng(6).random((24, 26, 28)).astype(np.float32)
    vol[:, :, :5] = np.nan  # MRI background
    ball = sepconv.kernels.from_spec("ball:radius=3")
    ref = ndimage.correlate(vol.astype(np.float64), ball)
    got = run(backend, sepconv.filter, vol, "ball:radius=3")
    assert np.isfinite(got).any()
    assert_same_nonfinite(got, ref, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fft_of_float32_is_as_precise_as_direct_far_from_a_bright_pixel(backend) -> None:
    x = np.random.default_rng(8).random((256, 256)).astype(np.float32)
    x[5, 5] = 1e6
    K = np.random.default_rng(9).random((31, 31))
    ref = ndimage.correlate(x.astype(np.float64), K)
    got = run(backend, sepconv.correlate, x, K, method="fft")
    far = np.ones_like(ref, bool)
    far[:40, :40] = False
    rel = np.abs(got[far] - ref[far]) / np.abs(ref[far])
    assert rel.max() < 1e-5, rel.max()


# ---------------------------------------------------------------------------------------------
# huge parameters: a clear error before allocating, or folded to what the data needs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: sepconv.gaussian_filter(x, 1e308), r"sigma=1e\+308 with truncate=4.0"),
        (lambda x: sepconv.gaussian_filter(x, 2, truncate=1e308), r"truncate=1e\+308"),
        (lambda x: sepconv.gaussian_filter1d(x, 1, radius=10**12), "radius=1000000000000"),
        (lambda x: sepconv.uniform_filter(x, 10**9), "size=1000000000"),
        (lambda x: sepconv.uniform_filter1d(x, 10**9), "size=1000000000"),
        (lambda x: sepconv.filter(x, "gaussian:sigma=1e308"), "sigma=1e"),
        (lambda x: sepconv.filter(x, "box:size=1000000000"), "size=1000000000"),
        (lambda x: sepconv.filter(x, "disk:radius=1e5"), "radius=100000.0 gives a dense"),
        (lambda x: sepconv.kernels.ball(1e4), "radius=10000.0 gives a dense"),
        (lambda x: sepconv.kernels.binomial(5000), "at most 1025"),
    ],
)
def test_huge_parameters_are_refused_naming_the_parameter(call, match) -> None:
    x = np.zeros((100, 100))
    with pytest.raises(ValueError, match=match):
        call(x)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap", "nearest", "constant"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_far_longer_than_the_axis_match_scipy(backend, mode) -> None:
    x = np.random.default_rng(3).random((7, 9))
    ref = ndimage.gaussian_filter(x, 40, mode=mode, cval=0.5)
    got = run(backend, sepconv.gaussian_filter, x, 40, mode=mode, cval=0.5)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
    ref = ndimage.uniform_filter(x, (30, 51), mode=mode, cval=0.5, origin=(3, -7))
    got = run(backend, sepconv.uniform_filter, x, (30, 51), mode=mode, cval=0.5, origin=(3, -7))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_huge_sigma_runs_in_the_time_of_the_data() -> None:
    # 800001 taps on a 60-sample axis: folded to at most 121 taps
    x = np.random.default_rng(4).random((50, 60))
    got = sepconv.gaussian_filter(x, 1e5, mode="wrap")
    np.testing.assert_allclose(got, np.full_like(x, x.mean()), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# named kernels: adapted to the data's dimensions, never built dense to be factorized again
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        ("gaussian:sigma=2", lambda v: ndimage.gaussian_filter(v, 2)),
        ("sobel:axis=0", lambda v: ndimage.sobel(v, 0)),
        ("prewitt:axis=-1", lambda v: ndimage.prewitt(v, -1)),
        ("laplace", lambda v: ndimage.laplace(v)),
        ("log:sigma=1.5", lambda v: ndimage.gaussian_laplace(v, 1.5)),
        ("box:size=4", lambda v: ndimage.uniform_filter(v, 4)),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_named_kernel_spec_adapts_to_a_volume(backend, spec, reference) -> None:
    vol = np.random.default_rng(5).random((11, 12, 13))
    got = run(backend, sepconv.filter, vol, spec)
    np.testing.assert_allclose(got, reference(vol), rtol=0, atol=1e-12)
    got2 = run(backend, sepconv.filter, vol, spec, axes=(0, 2))
    assert got2.shape == vol.shape


def test_named_separable_kernel_is_never_built_dense() -> None:
    # dense, this kernel would have 24001^3 elements
    vol = np.random.default_rng(6).random((6, 7, 8))
    got = sepconv.filter(vol, "gaussian:sigma=3000", mode="wrap")
    ref = ndimage.gaussian_filter(vol, 3000, mode="wrap")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:sigma=[1.5,2.5],order=[1,2]",
        "gaussian:sigma=1.2,ndim=3",
        "box:size=[2,5]",
        "binomial:size=6,ndim=3",
        "sobel:axis=1,ndim=3",
        "prewitt:axis=0",
        "scharr:axis=-1",
        "laplace:ndim=3",
        "log:sigma=[1,2]",
        "dog:sigma1=1,sigma2=2.5",
    ],
)
def test_spec_terms_multiply_out_to_the_dense_kernel_exactly(spec) -> None:
    terms = sepconv.kernels.spec_terms(spec)
    assert terms is not None
    dense = np.zeros_like(sepconv.kernels.from_spec(spec))
    for w, vs in terms:
        term = vs[0]
        for v in vs[1:]:
            term = np.multiply.outer(term, v)
        dense = dense + w * term
    np.testing.assert_array_equal(dense, sepconv.kernels.from_spec(spec))
    x = np.random.default_rng(7).random((9,) * dense.ndim)
    np.testing.assert_allclose(
        sepconv.filter(x, spec, mode="nearest"),
        ndimage.correlate(x, dense, mode="nearest"),
        rtol=0,
        atol=1e-12,
    )


# ---------------------------------------------------------------------------------------------
# planning: kernel precision, thread safety, absurd explicit methods
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_float32_kernel_gets_the_plan_of_its_float64_original(ndim) -> None:
    g = sepconv.kernels.gaussian1d(1.0)
    K64 = g
    for _ in range(ndim - 1):
        K64 = np.multiply.outer(K64, g)
    K32 = K64.astype(np.float32)
    shape = (512, 512) if ndim == 2 else (64, 64, 64)
    p32, p64 = sepconv.make_plan(K32, shape), sepconv.make_plan(K64, shape)
    assert p32.method == p64.method == "separable"
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    ref = ndimage.correlate(x.astype(np.float64), K32.astype(np.float64))
    for K in (K32, K64):
        np.testing.assert_allclose(sepconv.correlate(x, K), ref, rtol=0, atol=2e-6)
        np.testing.assert_allclose(sepconv.convolve(x, K), ndimage.convolve(x, K), atol=2e-6)


def test_float64_kernel_on_float32_data_is_judged_at_float32_rounding() -> None:
    rng = np.random.default_rng(1)
    K = np.outer(rng.random(7), rng.random(7)) + 1e-10 * rng.random((7, 7))
    assert sepconv.make_plan(K, (512, 512)).method != "separable"  # float64 data: rank 2
    x = rng.random((512, 512)).astype(np.float32)
    assert sepconv.make_plan(K, (512, 512), precision=np.float32).method == "separable"
    np.testing.assert_allclose(
        sepconv.correlate(x, K), ndimage.correlate(x.astype(np.float64), K), rtol=0, atol=2e-6
    )


def test_plan_cache_is_thread_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sepconv import plan as plan_module

    rng = np.random.default_rng(2)
    kernels = [rng.standard_normal((3, 3)) for _ in range(40)]
    plan_module._PLANS.clear()

    def work(i: int) -> str:
        out = ""
        for j in range(300):
            K = kernels[(i * 7 + j) % len(kernels)]
            out = sepconv.make_plan(K, (32 + j % 5, 32)).method
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    assert len(results) == 16 and len(plan_module._PLANS) <= 128


def test_absurd_explicit_method_warns_with_the_estimated_time() -> None:
    K = np.ones((99, 99, 99))
    with pytest.warns(sepconv.plan.SlowMethodWarning, match=r"estimated to take [\d,]+ s"):
        sepconv.make_plan(K, (200, 200, 200), method="direct")
    assert sepconv.make_plan(K, (200, 200, 200)).method != "direct"


def test_rank_one_factors_of_a_large_kernel_match_the_svd() -> None:
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal(700), rng.standard_normal(500)
    K = np.outer(u, v) + 1e-15 * rng.standard_normal((700, 500))
    f = sepconv.separate(K)
    assert f.rank == 1
    U, s, Vt = np.linalg.svd(K, full_matrices=False)
    best = s[0] * np.outer(U[:, 0], Vt[0])
    assert np.linalg.norm(f.to_dense() - best) <= 1e-14 * np.linalg.norm(K)


def test_cli_filter_runs_a_named_kernel_as_its_terms(tmp_path) -> None:
    from typer.testing import CliRunner

    from sepconv.cli import app

    vol = np.random.default_rng(9).random((6, 7, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    # dense, this kernel would have 24001^3 elements
    args = ["filter", str(tmp_path / "v.npy"), str(tmp_path / "o.npy")]
    res = CliRunner().invoke(app, [*args, "-k", "gaussian:sigma=3000", "--mode", "wrap"])
    assert res.exit_code == 0, res.output
    assert "never" not in res.output and "plan separable rank 1" in res.output
    ref = ndimage.gaussian_filter(vol.astype(np.float64), 3000, mode="wrap")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the range of the intermediates, and integer results of float32 kernels (found by a random
# fuzz draw, 2026-12-05)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_factors_of_a_float32_kernel_do_not_overflow_float32_data(backend) -> None:
    # the float32 kernel factors exactly as 2**-27 * outer([1], [5595013, 257502336, 13717046]):
    # run as those integers, data of 1e30 overflowed float32 before the weight scaled it back
    w = np.array([[0.04168609529733658, 1.9185419082641602, 0.10219995677471161]], np.float32)
    rng = np.random.default_rng(40)
    x = (rng.standard_normal((3, 9)) * 1e30).astype(np.float32)
    x[1, -1] = np.float32(1.3e30)
    ref = ndimage.correlate(x.astype(np.float64), w.astype(np.float64))
    for method in ("lowrank", "separable", "auto"):
        got = run(backend, sepconv.correlate, x, w, method=method)
        assert np.all(np.isfinite(got)), method
        np.testing.assert_allclose(got, ref, rtol=4e-7, atol=4e-7 * np.abs(ref).max())


def test_every_pass_of_a_job_keeps_its_input_range_and_the_kernel_exactly() -> None:
    from sepconv.job import terms_job

    rng = np.random.default_rng(41)
    cases = [
        (1.0, [np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])]),  # Sobel
        (2.0**-27, [np.array([1.0]), np.array([5595013.0, 257502336.0, 13717046.0])]),
        (0.37, [np.array([1.0, 4.0, 6.0, 4.0, 1.0]), rng.standard_normal(6) * 1e5]),
        (3e-5, [rng.standard_normal(4), rng.random(3) * 1e-9, rng.standard_normal(2)]),
        (1.0, [np.full(4, 0.25), np.array([0.5])]),  # L1 exactly 1 and 0.5
    ]
    for weight, vecs in cases:
        passes = [(a, v, 0) for a, v in enumerate(vecs)]
        modes = dict.fromkeys(range(len(vecs)), "reflect")
        job = terms_job([(weight, passes)], modes, 0.0)
        ((w2, p2),) = job.terms
        for _, v, _ in p2:
            assert 0.5 < np.abs(v).sum() <= 1.0
        # the dense kernel, bit for bit: every factor changed by a power of two only
        kept = {a: v for a, v, _ in p2}
        dense, dense2 = np.array(weight), np.array(w2)
        for a, v in enumerate(vecs):
            dense = np.multiply.outer(dense, v)
            dense2 = np.multiply.outer(dense2, kept.get(a, np.array([1.0])))
        assert np.array_equal(dense.reshape(-1), dense2.reshape(-1))


#: An integer-valued float32 3-D kernel of CP rank > 2 (found by a random fuzz draw).
CP_KERNEL = np.array(
    [[[-2, -2, -6, -6, 10], [4, -2, 6, 12, -14]], [[4, -8, 0, 12, -8], [-2, 4, 0, -6, 4]],
     [[6, -6, 6, 18, -18], [-6, 6, -6, -18, 18]], [[-6, 8, -4, -18, 16], [5, -6, 4, 15, -14]]],
    dtype=np.float32,
)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_output_of_a_float32_kernel_is_judged_at_the_computation(backend) -> None:
    # an integer-valued float32 3-D kernel of CP rank > 2: a rank-2 CP fit is "exact" to float32
    # rounding (3.3e-7 off), which moved uint16 results of sums ~1e7 by 1-2 units
    w = CP_KERNEL
    x = np.random.default_rng(42).integers(0, 65536, (12, 10, 16)).astype(np.uint16)
    ref = ndimage.correlate(x.astype(np.float64), w.astype(np.float64))
    for method in ("auto", "lowrank"):
        got = run(backend, sepconv.correlate, x, w, method=method)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got.astype(object), rounded_saturated(ref, np.uint16))


def test_integer_output_keeps_a_float32_fit_that_moves_no_output(monkeypatch) -> None:
    # the float32 rounding of a separable Gaussian is rank 1 at float32 and its fit moves a
    # uint16 result by ~0.007 of a unit: it stays one separable term, not a dense plan
    import sepconv.filters as F

    plans = []
    make_plan = F.make_plan

    def spy(*args, **kwargs):
        plans.append(make_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(F, "make_plan", spy)
    g = sepconv.kernels.gaussian1d(3.0)
    K = np.outer(g, g).astype(np.float32)
    x = np.random.default_rng(43).integers(0, 65536, (64, 80)).astype(np.uint16)
    got = sepconv.correlate(x, K)
    assert [(p.method, p.rank) for p in plans] == [("separable", 1)]
    assert plans[0].factorization.error_bound * 65535 <= F.INTEGER_SLACK
    # within the fixed-point engine's promise: 1 unit of the exactly rounded result
    ref = ndimage.correlate(x.astype(np.float64), K.astype(np.float64))
    assert (
        np.abs(got.astype(np.int64) - rounded_saturated(ref, np.uint16).astype(np.int64)).max() <= 1
    )
    # the float32 rounding of a rank-2 3-D kernel is rank 2 only at float32: no rank-2 fit
    # gets below its rounding, which would move uint16 results by ~0.1, so it is planned
    # again at float64
    plans.clear()
    rng = np.random.default_rng(44)
    K3 = sum(
        np.multiply.outer(np.multiply.outer(rng.standard_normal(4), rng.standard_normal(5)),
                          rng.standard_normal(3))
        for _ in range(2)
    ).astype(np.float32)  # fmt: skip
    v = rng.integers(0, 65536, (9, 10, 8)).astype(np.uint16)
    got = sepconv.correlate(v, K3, method="lowrank")
    first = plans[0].factorization
    assert plans[0].method == "lowrank" and first.rank == 2 and first.precision == "float32"
    assert first.error_bound * 65535 > F.INTEGER_SLACK
    assert len(plans) == 2
    again = plans[1].factorization
    assert again is None or again.error_bound * 65535 <= F.INTEGER_SLACK
    ref = ndimage.correlate(v.astype(np.float64), K3.astype(np.float64))
    np.testing.assert_array_equal(got.astype(object), rounded_saturated(ref, np.uint16))


# ---------------------------------------------------------------------------------------------
# float32 data near the float32 maximum
# ---------------------------------------------------------------------------------------------

NEAR_MAX_FILTERS = [
    ("gaussian_filter", (1.5,)),
    ("uniform_filter", (5,)),
    ("uniform_filter", (31,)),  # running sums
    ("sobel", (0,)),
    ("prewitt", (-1,)),
    ("laplace", ()),
    ("gaussian_laplace", (1.0,)),
    ("gaussian_gradient_magnitude", (1.0,)),
    ("correlate", "dense"),
    ("correlate", "separable"),
    ("correlate", "lowrank"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(30, 40), (12, 10, 14)])
@pytest.mark.parametrize(("name", "args"), NEAR_MAX_FILTERS)
def test_float32_data_near_its_maximum_overflows_only_where_the_result_does(
    backend, shape, name, args
) -> None:
    """Values of 1e38-2e38 (the float32 maximum is 3.4e38): a folded pair, a box sum or
    Sobel's [1, 2, 1] exceeds the float32 range inside a pass where the result does not; every
    pass is scaled to an L1 norm of at most 1, and the numba engine sees the NaN/Inf it wrote
    and computes again in float64. Reference: scipy in float64 cast to float32 (scipy's own
    float32 path overflows between passes too)."""
    rng = np.random.default_rng(7)
    x = ((rng.random(shape) * 0.5 + 0.5) * 2e38).astype(np.float32)
    if args in ("dense", "separable", "lowrank"):
        k = rng.standard_normal((3,) * x.ndim)
        if args == "separable":
            k = np.multiply.outer(np.array([1.0, 1.0, -1.0]), np.ones((3,) * (x.ndim - 1)))
        elif args == "lowrank":  # rank 2
            a, b = rng.standard_normal((2, 3))
            if x.ndim == 2:
                k = np.outer(a, b) + np.outer(b, a)
            else:
                k = np.einsum("i,j,k->ijk", a, b, b) + np.einsum("i,j,k->ijk", b, a, a)
        method = {"dense": "direct", "separable": "separable", "lowrank": "auto"}[args]
        fn, ref_fn, fargs = sepconv.correlate, ndimage.correlate, (k,)
        kw = {"method": method}
        gain = float(np.abs(k).sum())
    else:
        fn, ref_fn, fargs, kw = getattr(sepconv, name), getattr(ndimage, name), args, {}
        gain = 16.0
    with np.errstate(over="ignore", invalid="ignore"):
        got = run(backend, fn, x, *fargs, **kw).astype(np.float64)
        exact = ref_fn(x.astype(np.float64), *fargs)
        want = exact.astype(np.float32).astype(np.float64)
    fmax = float(np.finfo(np.float32).max)
    clear = np.abs(np.abs(exact) - fmax) > 1e-5 * fmax  # not on the edge of the range
    np.testing.assert_array_equal(np.isfinite(got)[clear], np.isfinite(want)[clear])
    fin = np.isfinite(got) & np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=1e-6 * 2e38 * gain)
    inf = ~np.isfinite(want) & clear
    np.testing.assert_array_equal(got[inf], want[inf])  # the sign of the infinities


def test_overflow_check_leaves_ordinary_float32_data_and_nan_alone(monkeypatch) -> None:
    """The float64 rerun happens only where an intermediate can have overflowed: not for data
    of ordinary size, with or without NaN (whose NaN the result keeps)."""
    from sepconv.engine import numba_cpu

    reruns = []
    real = numba_cpu._may_overflow

    def spy(*a):
        reruns.append(real(*a))
        return reruns[-1]

    monkeypatch.setattr(numba_cpu, "_may_overflow", spy)
    x = np.random.default_rng(8).random((40, 50)).astype(np.float32) * 1e30
    sepconv.gaussian_filter(x, 2.0)
    assert reruns == []  # a finite result is not looked at again
    x[10, 10] = np.nan
    got = sepconv.gaussian_filter(x, 2.0)
    assert reruns == [False]  # NaN in the result: the data's size says no overflow
    np.testing.assert_array_equal(
        np.isnan(got), np.isnan(ndimage.gaussian_filter(x.astype(np.float64), 2.0))
    )


# ---------------------------------------------------------------------------------------------
# kernels near the float64 maximum: finite results stay finite (job._balanced, fft refused)
# ---------------------------------------------------------------------------------------------


# factor.py's _rescaled still warns while scaling the singular values back (the report's bug 4,
# factor part, handled there); the filter itself must come out right
_LDEXP_OVERFLOW = pytest.mark.filterwarnings("ignore:overflow encountered in ldexp:RuntimeWarning")


@_LDEXP_OVERFLOW
@pytest.mark.parametrize("method", ["separable", "lowrank", "direct", "auto"])
def test_kernel_near_float64_max_filters_like_scipy(method) -> None:
    """np.full((3, 3), 1.7e308) on 1e-300 data: the result (1.53e9) is finite; 'separable'
    raised OverflowError when balancing the passes pushed the term's weight past 1.8e308."""
    x = np.full((8, 8), 1e-300)
    K = np.full((3, 3), 1.7e308)
    expected = ndimage.correlate(x, K)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(sepconv.correlate(x, K, method=method), expected, rtol=1e-14)


@_LDEXP_OVERFLOW
def test_huge_separable_kernel_with_integer_passes_matches_scipy() -> None:
    x = np.random.default_rng(11).standard_normal((30, 31)) * 1e-290
    K = np.outer([1.0, 2.0, 1.0], [1.0, 4.0, 6.0, 4.0, 1.0]) * 1e307  # sum 1.6e309 overflows
    expected = ndimage.correlate(x, K)
    got = sepconv.correlate(x, K, method="separable")
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13 * np.abs(expected).max())


def test_fft_is_refused_for_a_kernel_whose_spectrum_overflows() -> None:
    """method='fft' returned NaN here (the kernel's transform is inf): now a ValueError
    naming the method, and 'auto' never picks it."""
    x = np.full((8, 8), 1e-300)
    K = np.full((3, 3), 1.7e308)
    with pytest.raises(ValueError, match=r"method='fft' cannot run this \(3, 3\) kernel"):
        sepconv.correlate(x, K, method="fft")
    with pytest.raises(ValueError, match="overflows float64"):
        sepconv.make_plan(K, (8, 8), method="fft")
    big = np.full((41, 41), 1e306)  # auto would pick fft for a dense 41x41 on 512^2
    assert sepconv.make_plan(big, (512, 512)).method != "fft"
    assert sepconv.make_plan(big / 1e300, (512, 512)).method in ("fft", "separable")
