"""The scipy.ndimage drop-in (issue 12): complex data and kernels, float16, scipy's axes rule
and exception classes, on every backend, against scipy.ndimage.

Complex results are compared through their real and imaginary parts; float16 (which scipy
refuses) against scipy on the same values in float32.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
from scipy import ndimage

import sepconv

pytestmark = pytest.mark.engine

BACKENDS = ["numpy", "dask", "torch"]


def run(backend: str, fn, x: np.ndarray, *args, **kwargs) -> np.ndarray:
    if backend == "numpy":
        return np.asarray(fn(x, *args, **kwargs))
    if backend == "dask":
        chunks = tuple(max(3, n // 3) for n in x.shape)
        return np.asarray(fn(da.from_array(x, chunks=chunks), *args, **kwargs).compute())
    return fn(torch.from_numpy(x.copy()), *args, **kwargs).numpy()


def assert_parts_close(got: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    assert got.dtype.kind == "c", got.dtype
    scale = max(1.0, float(np.abs(ref).max()))
    for part in ("real", "imag"):
        np.testing.assert_allclose(
            getattr(got, part), getattr(ref, part), rtol=0, atol=rtol * scale, err_msg=part
        )


def cplx(shape, seed, dtype=np.complex128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("mode", ["constant", "reflect", "wrap"])
def test_complex_input_and_kernel_match_scipy(backend, dtype, mode) -> None:
    x = cplx((11, 13), 0, dtype)
    K = cplx((3, 4), 1)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    cval = 0.5 - 2j
    for fn in ("correlate", "convolve"):
        ref = getattr(ndimage, fn)(x, K, mode=mode, cval=cval)
        for method in ("auto", "direct", "fft", "lowrank"):
            got = run(backend, getattr(sepconv, fn), x, K, mode=mode, cval=cval, method=method)
            assert got.dtype == ref.dtype
            assert_parts_close(got, ref, tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_input_complex_kernel_and_complex_input_real_kernel(backend) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 10))
    K = cplx((5, 3), 3)
    ref = ndimage.correlate(x, K)  # correlation conjugates complex weights
    assert_parts_close(run(backend, sepconv.correlate, x, K), ref, 1e-12)
    xc = cplx((9, 10), 4)
    assert_parts_close(
        run(backend, sepconv.correlate, xc, K.real), ndimage.correlate(xc, K.real), 1e-12
    )
    w = cplx((4,), 5)
    for fn in ("correlate1d", "convolve1d"):
        ref = getattr(ndimage, fn)(xc, w, axis=0, origin=-1, mode="nearest")
        got = run(backend, getattr(sepconv, fn), xc, w, axis=0, origin=-1, mode="nearest")
        assert_parts_close(got, ref, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("gaussian_filter", (1.5,)),
        ("uniform_filter", (4,)),
        ("sobel", (0,)),
        ("prewitt", (1,)),
        ("laplace", ()),
        ("gaussian_laplace", (1.2,)),
        ("gaussian_gradient_magnitude", (1.2,)),
    ],
)
def test_named_filters_of_complex_data(backend, name, args) -> None:
    # (constant mode with a non-zero cval is the deliberate difference for multi-pass filters)
    x = cplx((12, 14), 6)
    ref = getattr(ndimage, name)(x, *args, mode="mirror")
    got = run(backend, getattr(sepconv, name), x, *args, mode="mirror")
    assert_parts_close(got, ref, 1e-12)


def test_complex_output_rules_follow_scipy() -> None:
    x = np.random.default_rng(7).standard_normal((6, 6))
    K = cplx((3, 3), 8)
    assert sepconv.correlate(x.astype(np.float32), K).dtype == np.complex64
    with pytest.warns(UserWarning, match="promoting specified output dtype to complex"):
        got = sepconv.correlate(x, K, output=np.float64)
    assert got.dtype == np.complex128
    with pytest.raises(RuntimeError, match="output must have complex dtype"):
        sepconv.correlate(x, K, output=np.zeros((6, 6)))
    with pytest.raises(ValueError, match="complex-valued cval when the input is real"):
        sepconv.correlate(x, K, mode="constant", cval=1j)
    out = np.zeros((6, 6), np.complex128)
    assert sepconv.correlate(x, K, output=out) is out
    assert_parts_close(out, ndimage.correlate(x, K), 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_is_computed_in_float32_and_returned_as_float16(backend) -> None:
    x = np.random.default_rng(9).random((20, 21)).astype(np.float16)
    ref = ndimage.gaussian_filter(x.astype(np.float32), 1.5)
    got = run(backend, sepconv.gaussian_filter, x, 1.5)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=1e-3, atol=1e-3)
    K = np.random.default_rng(10).random((3, 5))
    ref = ndimage.correlate(x.astype(np.float32), K)
    got = run(backend, sepconv.correlate, x, K, method="fft")
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-3, atol=2e-3)


def test_exceptions_are_catchable_as_scipys() -> None:
    x = np.zeros((6, 8, 12))
    cases = [
        (lambda: sepconv.gaussian_filter(x, sigma=(1.0,), axes=(0, 1)), "equal to input rank"),
        (lambda: sepconv.correlate(x, np.ones((3, 3, 3)), axes=(1, 2)), r"must match len\(axes\)"),
        (lambda: sepconv.uniform_filter(x, 3, origin=(0, 0)), "equal to input rank"),
        (lambda: sepconv.uniform_filter(x, 3, mode=["reflect"]), "equal to input rank"),
        (lambda: sepconv.uniform_filter1d(x, 0), "incorrect filter size"),
    ]
    for call, phrase in cases:
        for exc in (RuntimeError, ValueError):  # scipy's class and sepconv's
            with pytest.raises(exc, match=phrase):
                call()
    with pytest.raises(ValueError, match="axes must be unique"):
        sepconv.uniform_filter(x, 3, axes=(0, -3))
    with pytest.raises(ValueError, match="out of range"):
        sepconv.uniform_filter(x, 3, axes=(3,))
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        sepconv.uniform_filter(x, 3, axes=(1.5,))
    with pytest.raises(ValueError, match="Invalid origin"):
        sepconv.correlate1d(x, [1, 2, 3], origin=2)
    for exc in (TypeError, ValueError):  # sepconv says TypeError, scipy ValueError
        with pytest.raises(exc, match="radius must be an integer"):
            sepconv.gaussian_filter1d(np.zeros(8), 1, radius=1.1)


def test_size_zero_leaves_an_axis_alone() -> None:
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(sepconv.uniform_filter(x, 0), x)
    np.testing.assert_allclose(
        sepconv.uniform_filter(x, [0, 3]), ndimage.uniform_filter(x, [0, 3]), rtol=1e-15
    )


@pytest.mark.parametrize(
    ("size", "origin"), [(1, 1), ((1, 3), (2, 1)), ((0, 3), (5, -1)), ((3, 1), (1, 7))]
)
def test_the_origin_of_an_axis_left_alone_is_not_read(size, origin) -> None:
    """Before: uniform_filter(x, size=1, origin=1) raised 'Invalid origin'; scipy skips the
    axes of size 0 or 1 and ignores their origin."""
    x = np.random.default_rng(0).random((6, 7))
    got = sepconv.uniform_filter(x, size, origin=origin)
    np.testing.assert_allclose(got, ndimage.uniform_filter(x, size, origin=origin), atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_with_nan_through_a_folded_wide_kernel(backend) -> None:
    # the finiteness check before folding a pass longer than its axis met float16 too
    x = np.array([1.0, np.nan, 3.0, 4.0], np.float16)
    got = run(backend, sepconv.gaussian_filter, x, 100.0)
    ref = ndimage.gaussian_filter(x.astype(np.float32), 100.0)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    y = np.array([1.0, 2.0, 3.0, 4.0], np.float16)
    ref = ndimage.gaussian_filter(y.astype(np.float32), 100.0, mode="wrap")
    got = run(backend, sepconv.gaussian_filter, y, 100.0, mode="wrap")
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-3)


A0 = np.array  # a 0-d array: what numpy arithmetic (np.median, arr.sum()) hands out


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("gaussian_filter", (A0(2.0),), {}),
        ("gaussian_filter", (2.0,), {"order": A0(1), "truncate": A0(3.0)}),
        ("gaussian_filter", (2.0,), {"mode": "constant", "cval": A0(1.5)}),
        ("gaussian_filter1d", (A0(2.0),), {"axis": A0(0)}),
        ("gaussian_laplace", (A0(1.5),), {}),
        ("gaussian_gradient_magnitude", (A0(1.5),), {}),
        ("uniform_filter", (A0(3),), {"origin": A0(1)}),
        ("uniform_filter1d", (A0(3),), {"axis": A0(0)}),
        ("correlate", (np.ones((3, 3)),), {"origin": A0(1)}),
        ("correlate1d", ([1.0, 2.0, 1.0],), {"origin": A0(-1)}),
    ],
)
def test_zero_d_array_parameters_are_numbers_as_in_scipy(name, args, kwargs) -> None:
    """Before: 'iteration over a 0-d array' or 'len() of unsized object', naming nothing."""
    x = np.random.default_rng(0).random((8, 9))
    got = getattr(sepconv, name)(x, *args, **kwargs)
    ref = getattr(ndimage, name)(x, *args, **kwargs)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_radius_and_axes_as_zero_d_arrays_which_scipy_refuses() -> None:
    x = np.random.default_rng(1).random((8, 9))
    got = sepconv.gaussian_filter(x, 2.0, radius=A0(3), axes=A0(1))
    np.testing.assert_allclose(got, ndimage.gaussian_filter(x, 2.0, radius=3, axes=1), atol=1e-13)


@pytest.mark.parametrize("axes", [1.0, True, "a", [0, 1.5]])
def test_axes_of_the_wrong_type_are_named(axes) -> None:
    with pytest.raises(TypeError, match=r"axes must be an int or a sequence of ints, got"):
        sepconv.gaussian_filter(np.ones((4, 4)), 1.0, axes=axes)
