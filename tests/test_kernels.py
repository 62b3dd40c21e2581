"""Tests for sepconv.kernels: scipy.ndimage references, closed forms and the spec parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sepconv import kernels as K
from sepconv.kernels import (
    KERNELS,
    ball,
    binomial,
    box,
    difference_of_gaussians,
    disk,
    from_spec,
    gabor,
    gaussian,
    gaussian1d,
    laplace,
    laplacian_of_gaussian,
    line,
    motion_blur,
    prewitt,
    scharr,
    sobel,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((41, 37))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(99).standard_normal((13, 15, 17))


def rank(k: np.ndarray, rtol: float = 1e-10) -> int:
    s = np.linalg.svd(k, compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> None:
    np.testing.assert_allclose(a, b, rtol=0, atol=tol)


# ------------------------------------------------------------------------------------------
# module surface
# ------------------------------------------------------------------------------------------


def test_all_is_sorted_and_exported() -> None:
    assert list(K.__all__) == sorted(K.__all__)
    for name in K.__all__:
        assert hasattr(K, name)


def test_registry_names_and_aliases() -> None:
    assert set(KERNELS) == {
        "gaussian",
        "box",
        "binomial",
        "sobel",
        "prewitt",
        "scharr",
        "laplace",
        "laplacian_of_gaussian",
        "log",
        "difference_of_gaussians",
        "dog",
        "gabor",
        "disk",
        "ball",
        "line",
        "motion_blur",
    }
    assert KERNELS["log"] is laplacian_of_gaussian
    assert KERNELS["dog"] is difference_of_gaussians
    assert KERNELS["motion_blur"] is line
    assert motion_blur is line


# ------------------------------------------------------------------------------------------
# Gaussian family vs scipy.ndimage
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "order", "truncate"),
    [
        (2.0, 0, 4.0),
        (2.0, (0, 1), 4.0),
        ((1.5, 2.5), (2, 1), 3.0),
        (0.7, (3, 0), 4.0),
        ((3.0, 1.0), (1, 3), 2.5),
    ],
)
@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_gaussian_matches_scipy_gaussian_filter(image, sigma, order, truncate, mode) -> None:
    k = gaussian(sigma, order=order, truncate=truncate)
    expected = ndimage.gaussian_filter(image, sigma, order=order, truncate=truncate, mode=mode)
    close(ndimage.correlate(image, k, mode=mode), expected)


def test_gaussian_3d_with_radius_matches_scipy(volume) -> None:
    k = gaussian((1.0, 2.0, 0.8), order=(1, 0, 2), radius=(2, 5, 3))
    assert k.shape == (5, 11, 7)
    expected = ndimage.gaussian_filter(volume, (1.0, 2.0, 0.8), order=(1, 0, 2), radius=(2, 5, 3))
    close(ndimage.correlate(volume, k, mode="reflect"), expected)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_gaussian1d_matches_scipy_gaussian_filter1d(order) -> None:
    x = np.random.default_rng(order).standard_normal(64)
    w = gaussian1d(1.7, order=order, truncate=3.0)
    assert w.shape == (2 * int(3.0 * 1.7 + 0.5) + 1,)
    expected = ndimage.gaussian_filter1d(x, 1.7, order=order, truncate=3.0)
    close(ndimage.correlate1d(x, w, mode="reflect"), expected)


def test_gaussian1d_odd_order_is_correlation_weights() -> None:
    w = gaussian1d(1.0, order=1, radius=1)
    assert w[0] < 0 < w[-1]  # like sobel's [-1, 0, 1]
    close(w, -w[::-1], 0.0)


def test_gaussian_order0_sums_to_one_and_is_rank_one() -> None:
    k = gaussian((2.0, 3.0))
    assert k.shape == (17, 25)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    assert rank(k) == 1


def test_gaussian_ndim_inference() -> None:
    assert gaussian(1.0).ndim == 2
    assert gaussian(1.0, order=(0, 0, 1)).ndim == 3
    assert gaussian(1.0, radius=[2]).shape == (5,)
    assert gaussian(1.0, ndim=4, truncate=1.0).shape == (3, 3, 3, 3)


def test_gaussian_sigma_zero_is_identity_like_scipy(image) -> None:
    assert gaussian1d(0.0).tolist() == [1.0]
    assert gaussian(0.0).tolist() == [[1.0]]
    assert gaussian1d(0.0, radius=2).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    k = gaussian((0.0, 2.0))
    assert k.shape == (1, 17)
    close(ndimage.correlate(image, k), ndimage.gaussian_filter(image, (0.0, 2.0)))


def test_laplacian_of_gaussian_matches_scipy_gaussian_laplace(image, volume) -> None:
    for sigma in (1.3, (1.0, 2.2)):
        k = laplacian_of_gaussian(sigma)
        close(ndimage.correlate(image, k), ndimage.gaussian_laplace(image, sigma))
    k3 = laplacian_of_gaussian(1.1, ndim=3, truncate=3.0)
    close(ndimage.correlate(volume, k3), ndimage.gaussian_laplace(volume, 1.1, truncate=3.0))


def test_laplacian_of_gaussian_is_rank_two_and_sums_to_zero() -> None:
    k = laplacian_of_gaussian(2.0)
    assert rank(k) == 2
    assert abs(k.sum()) < 1e-3


def test_difference_of_gaussians_matches_scipy_with_shared_support(image) -> None:
    s1, s2, t = 1.0, 2.5, 3.0
    r2 = int(t * s2 + 0.5)
    k = difference_of_gaussians(s1, s2, truncate=t)
    assert k.shape == (2 * r2 + 1, 2 * r2 + 1)
    expected = ndimage.gaussian_filter(image, s1, radius=r2) - ndimage.gaussian_filter(
        image, s2, truncate=t
    )
    close(ndimage.correlate(image, k), expected)


def test_difference_of_gaussians_defaults_ratio_sign_and_rank() -> None:
    k = difference_of_gaussians(2.0)
    close(k, difference_of_gaussians(2.0, 3.2))
    c = k.shape[0] // 2
    assert k[c, c] > 0  # centre-positive: G(sigma1) - G(sigma2)
    assert abs(k.sum()) < 1e-12
    assert rank(k) == 2
    assert difference_of_gaussians([1.0, 2.0], ratio=2.0).shape == (17, 33)


# ------------------------------------------------------------------------------------------
# box, binomial, derivative stencils
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 4, (3, 5), (2, 7)])
def test_box_matches_scipy_uniform_filter(image, size) -> None:
    k = box(size)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    assert rank(k) == 1
    close(ndimage.correlate(image, k), ndimage.uniform_filter(image, size))


def test_box_3d(volume) -> None:
    k = box((3, 1, 5))
    assert k.shape == (3, 1, 5)
    close(ndimage.correlate(volume, k), ndimage.uniform_filter(volume, (3, 1, 5)))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_binomial_coefficients_and_normalisation(size) -> None:
    raw = binomial(size, normalize=False, ndim=1)
    assert raw.tolist() == [math.comb(size - 1, i) for i in range(size)]
    k = binomial(size)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    close(k * 4 ** (size - 1), np.outer(raw, raw), 1e-9)


def test_binomial_size3_integer_kernel_and_per_axis() -> None:
    assert binomial(3, normalize=False).tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    assert binomial((3, 5, 2)).shape == (3, 5, 2)


@pytest.mark.parametrize(
    ("builder", "reference"), [(sobel, ndimage.sobel), (prewitt, ndimage.prewitt)]
)
def test_derivative_stencils_match_scipy_2d_and_3d(image, volume, builder, reference) -> None:
    for axis in (0, 1, -1):
        close(ndimage.correlate(image, builder(axis)), reference(image, axis))
    for axis in (0, 1, 2):
        k = builder(axis, ndim=3)
        close(ndimage.correlate(volume, k), reference(volume, axis))


def test_scharr_weights_and_rank() -> None:
    assert scharr(axis=0).tolist() == [[-3, -10, -3], [0, 0, 0], [3, 10, 3]]
    assert scharr(axis=1).tolist() == [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]
    k = scharr(axis=2, ndim=3)
    assert k[1, 1].tolist() == [-100, 0, 100]


def test_scharr_is_skimage_scharr_times_16() -> None:
    """The docstring's scale: skimage.filters.scharr(x, axis=a) * 16 == correlate(x, scharr(a))
    (1/16, not 1/32), away from the border where skimage's mode differs."""
    filters = pytest.importorskip("skimage.filters")
    x = np.random.default_rng(5).standard_normal((20, 23))
    for axis in (0, 1):
        ours = ndimage.correlate(x, scharr(axis))
        theirs = filters.scharr(x, axis=axis) * 16
        np.testing.assert_allclose(ours[1:-1, 1:-1], theirs[1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    assert "1/16 scale" in (scharr.__doc__ or "")


def test_derivative_stencils_are_rank_one_and_integer() -> None:
    for builder in (sobel, prewitt, scharr):
        k = builder(0)
        assert k.dtype == np.float64
        assert rank(k) == 1
        assert np.array_equal(k, np.round(k))
    assert sobel(axis=0, ndim=1).tolist() == [-1.0, 0.0, 1.0]


def test_laplace_matches_scipy(image, volume) -> None:
    close(ndimage.correlate(image, laplace()), ndimage.laplace(image))
    close(ndimage.correlate(volume, laplace(ndim=3)), ndimage.laplace(volume))
    assert laplace(ndim=1).tolist() == [1.0, -2.0, 1.0]
    assert laplace(ndim=3)[1, 1, 1] == -6.0
    assert rank(laplace()) == 2


# ------------------------------------------------------------------------------------------
# Gabor
# ------------------------------------------------------------------------------------------


def test_gabor_closed_form_at_one_pixel() -> None:
    sigma, theta, f, g, ph = 2.0, 30.0, 0.15, 0.6, 23.0  # phase in degrees, like theta
    k = gabor(sigma, theta=theta, frequency=f, gamma=g, phase=ph, truncate=2.0)
    r = int(2.0 * max(sigma, sigma / g) + 0.5)
    assert k.shape == (2 * r + 1, 2 * r + 1)
    row, col = 2, 5  # offsets from the centre: y = -(row - r), x = col - r
    x, y = col - r, -(row - r)
    t = math.radians(theta)
    xr, yr = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    expected = (
        math.exp(-(xr**2 + g**2 * yr**2) / (2 * sigma**2))
        * math.cos(2 * math.pi * f * xr + math.radians(ph))
        * g
        / (2 * math.pi * sigma**2)
    )
    assert k[row, col] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("theta", [0.0, 30.0, 45.0, 90.0, 117.0])
@pytest.mark.parametrize("phase", [90.0, -90.0, 270.0])
def test_gabor_phase_90_degrees_is_odd_antisymmetric(theta, phase) -> None:
    # phase is in degrees like theta: 90 (or -90, 270) turns the cosine carrier into a sine,
    # so the kernel is exactly antisymmetric about its centre and sums to zero
    sigma, f, g = 3.0, 0.15, 0.7
    k = gabor(sigma, theta=theta, frequency=f, gamma=g, phase=phase)
    assert np.array_equal(k[::-1, ::-1], -k)
    assert abs(k.sum()) < 1e-15
    # the sine Gabor, sign included: cos(a + 90 deg) = -sin(a), cos(a - 90 deg) = sin(a)
    r = k.shape[0] // 2
    x = np.arange(-r, r + 1, dtype=np.float64)[None, :]
    y = -np.arange(-r, r + 1, dtype=np.float64)[:, None]
    t = math.radians(theta)
    xr, yr = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    sign = -1.0 if phase % 360 == 90 else 1.0
    expected = (
        np.exp(-(xr**2 + g**2 * yr**2) / (2 * sigma**2))
        * sign
        * np.sin(2 * math.pi * f * xr)
        * g
        / (2 * math.pi * sigma**2)
    )
    assert np.abs(expected).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(k, expected, rtol=0, atol=1e-14)


def test_gabor_phase_0_degrees_is_even_symmetric() -> None:
    k = gabor(3.0, theta=30.0, frequency=0.15, phase=0.0)
    assert np.array_equal(k[::-1, ::-1], k)
    k180 = gabor(3.0, theta=30.0, frequency=0.15, phase=180.0)
    assert np.array_equal(k180, -k)


def test_gabor_theta_is_counter_clockwise_as_displayed() -> None:
    k = gabor(2.0, theta=45.0, frequency=0.2)
    c = k.shape[0] // 2
    envelope = np.exp(-2 * np.arange(-c, c + 1) ** 2 / 8.0) / (2 * math.pi * 4.0)
    # wave vector points up-right, so the carrier is constant (cos 0) along the down-right diagonal
    close(np.diag(k), envelope, 1e-15)
    assert not np.allclose(np.diag(np.fliplr(k)), envelope)


@pytest.mark.parametrize("theta", [0.0, 90.0, 180.0, -90.0])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_gabor_axis_aligned_is_rank_one(theta, gamma) -> None:
    k = gabor(3.0, theta=theta, gamma=gamma, frequency=0.12, phase=0.3)
    assert np.linalg.matrix_rank(k) == 1


@pytest.mark.parametrize("theta", [15.0, 30.0, 45.0, 117.0])
def test_gabor_isotropic_envelope_is_rank_two(theta) -> None:
    k = gabor(3.0, theta=theta, gamma=1.0, frequency=0.1, phase=0.7)
    assert np.linalg.matrix_rank(k) == 2


def test_gabor_degenerate_zero_frequency_is_rank_one() -> None:
    assert np.linalg.matrix_rank(gabor(2.0, theta=30.0, frequency=0.0)) == 1


def test_gabor_oblique_anisotropic_is_not_low_rank() -> None:
    assert rank(gabor(3.0, theta=30.0, gamma=0.5), rtol=1e-6) > 2


# ------------------------------------------------------------------------------------------
# disk, ball, line
# ------------------------------------------------------------------------------------------


def test_disk_binary_shape_and_membership() -> None:
    k = disk(2, normalize=False)
    assert k.shape == (5, 5)
    yy, xx = np.mgrid[-2:3, -2:3]
    assert np.array_equal(k, (yy**2 + xx**2 <= 4).astype(float))
    assert disk(2.5, normalize=False).shape == (7, 7)
    assert disk(0).tolist() == [[1.0]]
    assert disk(3).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("radius", [0.4, 1.0, 2.5, 7.3, 20.0])
def test_disk_antialias_area_is_pi_r_squared(radius) -> None:
    k = disk(radius, antialias=True, normalize=False)
    assert k.shape == (2 * math.ceil(radius) + 1,) * 2
    assert k.min() >= 0.0
    assert k.max() <= 1.0 + 1e-12
    assert k.sum() == pytest.approx(math.pi * radius**2, rel=1e-10)


def test_disk_antialias_matches_supersampling() -> None:
    n = 64
    radius = 3.4
    k = disk(radius, antialias=True, normalize=False)
    off = (np.arange(n) + 0.5) / n - 0.5
    big = np.arange(-4, 5)[:, None] + off[None, :]
    yy, xx = np.meshgrid(big.ravel(), big.ravel(), indexing="ij")
    sampled = (yy**2 + xx**2 <= radius**2).reshape(9, n, 9, n).mean(axis=(1, 3))
    close(k, sampled, 0.03)


def test_disk_antialias_zero_radius() -> None:
    assert disk(0, antialias=True).tolist() == [[1.0]]
    assert disk(0, antialias=True, normalize=False).tolist() == [[0.0]]


def test_ball_binary_and_normalised() -> None:
    k = ball(1, normalize=False)
    assert k.shape == (3, 3, 3)
    assert k.sum() == 7.0
    assert ball(2.2).sum() == pytest.approx(1.0)
    assert ball(0).tolist() == [[[1.0]]]


@pytest.mark.parametrize("radius", [1.0, 2.5, 6.0])
def test_ball_antialias_volume(radius) -> None:
    k = ball(radius, antialias=True, normalize=False)
    assert k.shape == (2 * math.ceil(radius) + 1,) * 3
    assert k.min() >= 0.0
    assert k.max() <= 1.0
    assert k.sum() == pytest.approx(4.0 / 3.0 * math.pi * radius**3, rel=1e-3)
    # symmetric under axis permutations up to the slice quadrature
    close(k, k.transpose(2, 1, 0), 2e-3)


def test_ball_antialias_zero_radius() -> None:
    assert ball(0, antialias=True).tolist() == [[[1.0]]]


def test_line_horizontal_and_vertical() -> None:
    close(line(5), np.full((1, 5), 0.2), 0.0)
    assert line(5, angle=90).shape == (5, 1)
    assert line(5, angle=180).shape == (1, 5)
    assert line(4, normalize=False).tolist() == [[0.5, 1.0, 1.0, 1.0, 0.5]]
    assert line(0.5, normalize=False).tolist() == [[0.5]]


@pytest.mark.parametrize("angle", [0.0, 10.0, 30.0, 45.0, 60.0, 90.0, 135.0, 200.0])
@pytest.mark.parametrize("length", [1.0, 3.0, 7.5, 15.0])
def test_line_length_is_preserved_and_shape_is_odd(angle, length) -> None:
    k = line(length, angle=angle, normalize=False)
    assert k.sum() == pytest.approx(length, rel=1e-12)
    assert k.shape[0] % 2 == 1
    assert k.shape[1] % 2 == 1
    assert k.max() <= math.sqrt(2) + 1e-12
    # point-symmetric about the centre (a centred segment)
    close(k, k[::-1, ::-1], 1e-12)
    # trimmed: some border row and column are non-zero
    assert k[0].any() or k[-1].any()
    assert k[:, 0].any() or k[:, -1].any()
    assert line(length, angle=angle).sum() == pytest.approx(1.0)


def test_line_angle_is_counter_clockwise_as_displayed() -> None:
    k = line(5, angle=45, normalize=False)
    assert k.shape == (5, 5)
    assert k[0, -1] > 0  # up and to the right
    assert k[0, 0] == 0.0
    tip = (2.5 / math.sqrt(2) - 1.5) * math.sqrt(2)  # the segment ends inside the corner pixels
    anti = np.diag(np.fliplr(k))
    close(anti, [tip, math.sqrt(2), math.sqrt(2), math.sqrt(2), tip])
    assert np.count_nonzero(k) == 5  # only the anti-diagonal: corner touches carry no length


def test_line_angle_30_uses_exact_clipping() -> None:
    k = line(6, angle=30, normalize=False)
    # along the centre row the segment crosses |x| <= 0.5 between y = +-0.5 tan(30)
    c = k.shape[0] // 2, k.shape[1] // 2
    assert k[c] == pytest.approx(1.0 / math.cos(math.radians(30)), rel=1e-12)


# ------------------------------------------------------------------------------------------
# builder argument validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: gaussian(-1.0), ValueError, "sigma"),
        (lambda: gaussian(float("nan")), ValueError, "sigma"),
        (lambda: gaussian(float("inf")), ValueError, "sigma"),
        (lambda: gaussian("2"), TypeError, "sigma"),
        (lambda: gaussian(1.0, truncate=-0.5), ValueError, "truncate must be a finite number >= 0"),
        (lambda: gaussian(1.0, truncate=float("nan")), ValueError, "truncate"),
        (lambda: gaussian(1.0, order=-1), ValueError, "order"),
        (lambda: gaussian(1.0, order=1.0), TypeError, "order"),
        (lambda: gaussian(1.0, radius=-1), ValueError, "radius"),
        (lambda: gaussian([1.0, 2.0], order=[0, 0, 1]), ValueError, "order"),
        (lambda: gaussian(1.0, ndim=0), ValueError, "ndim"),
        (lambda: gaussian([]), ValueError, "sigma must be a scalar or a non-empty sequence"),
        (lambda: gaussian(0.0, order=1), ValueError, "order must be 0 where sigma is 0"),
        (lambda: gaussian1d([1.0, 2.0]), TypeError, "scalar"),
        (lambda: box(0), ValueError, "size"),
        (lambda: box(2.0), TypeError, "size"),
        (lambda: binomial(0), ValueError, "size"),
        (lambda: binomial(3, normalize=1), TypeError, "normalize"),
        (lambda: sobel(2), ValueError, "axis"),
        (lambda: sobel(-3), ValueError, "axis"),
        (lambda: prewitt(0, ndim=0), ValueError, "ndim"),
        (lambda: scharr(1.0), TypeError, "axis"),
        (lambda: laplace(ndim=0), ValueError, "ndim"),
        (lambda: laplacian_of_gaussian(0.0), ValueError, "sigma"),
        (lambda: laplacian_of_gaussian(1.0, truncate=-1.0), ValueError, "truncate"),
        (lambda: difference_of_gaussians(2.0, 1.0), ValueError, "sigma2 must be larger"),
        (lambda: difference_of_gaussians(2.0, 2.0), ValueError, "sigma2 must be larger"),
        (lambda: difference_of_gaussians(1.0, ratio=1.0), ValueError, "ratio"),
        (lambda: difference_of_gaussians(-1.0), ValueError, "sigma1"),
        (lambda: gabor(0.0), ValueError, "sigma"),
        (lambda: gabor(1.0, gamma=0.0), ValueError, "gamma"),
        (lambda: gabor(1.0, frequency=-0.1), ValueError, "frequency"),
        (lambda: gabor(1.0, theta=float("nan")), ValueError, "theta"),
        (lambda: gabor(1.0, phase=None), TypeError, "phase"),
        (lambda: gabor(1.0, truncate=-1), ValueError, "truncate"),
        (lambda: disk(-1.0), ValueError, "radius"),
        (lambda: disk(2, antialias="yes"), TypeError, "antialias"),
        (lambda: ball(float("inf")), ValueError, "radius"),
        (lambda: line(0.0), ValueError, "length"),
        (lambda: line(-2.0), ValueError, "length"),
        (lambda: line(3.0, angle=float("inf")), ValueError, "angle"),
    ],
)
def test_builder_argument_errors(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gabor(3, gamma=1e-9), r"sigma=3, gamma=1e-09, truncate=3.0 gives a kernel"),
        (lambda: gabor(1e6), r"sigma=1000000.0, gamma=1.0, truncate=3.0 gives a dense kernel"),
        (lambda: gabor(1e308), r"sigma=1e\+308.* gives a kernel of inf taps"),
        (lambda: gabor(3.0, truncate=1e308), r"truncate=1e\+308 gives a kernel"),
        (lambda: gabor(1e300, gamma=1e-300), r"gamma=1e-300, .* gives a kernel"),
        (lambda: line(1e12), r"length=1000000000000.0 at angle=0.0 gives a kernel"),
        (lambda: line(1e5, angle=45), r"length=100000.0 at angle=45 gives a dense kernel"),
        (lambda: line(1e308, angle=30), r"length=1e\+308 at angle=30 gives a kernel"),
        (lambda: from_spec("gabor:sigma=5000"), r"sigma=5000, gamma=1.0, truncate=3.0 gives"),
        (lambda: sobel(ndim=40), r"ndim=40 gives a dense kernel"),
        (lambda: scharr(0, ndim=40), r"ndim=40 gives a dense kernel"),
        (lambda: laplace(ndim=40), r"ndim=40 gives a dense kernel"),
    ],
)
def test_huge_gabor_line_and_stencil_parameters_are_refused_before_allocating(call, match):
    """gabor(3, gamma=1e-9) used to try 134 GiB, gabor(5000) got a process OOM-killed, line(1e5)
    asked for 74.5 GiB: each is now a ValueError naming the parameters, raised before numpy
    allocates anything (traced peak well under a megabyte)."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_long_axis_aligned_line_is_built_without_the_square_window():
    """A horizontal line only spans one row: line(1e5) is a (1, 100001) kernel (it used to
    allocate a 100003 x 100003 window first); its length is the closed-form sum."""
    k = line(1e5, normalize=False)
    assert k.shape == (1, 100001)
    assert k.sum() == pytest.approx(1e5, rel=1e-12)
    assert k[0, 0] == k[0, -1] == 0.5
    assert line(1e5, angle=90).shape == (100001, 1)


# ------------------------------------------------------------------------------------------
# from_spec
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gaussian:sigma=2", lambda: gaussian(2)),
        ("gaussian:sigma=[2,3],order=[0,1]", lambda: gaussian([2, 3], order=[0, 1])),
        (" Gaussian : sigma = [ 2 , 3.5 ] , truncate = 2 ", lambda: gaussian([2, 3.5], truncate=2)),
        ("gabor:sigma=3,theta=30,frequency=0.15", lambda: gabor(3, theta=30, frequency=0.15)),
        ("disk:radius=8,antialias=true", lambda: disk(8, antialias=True)),
        ("disk:radius=2.5,antialias=FALSE,normalize=False", lambda: disk(2.5, normalize=False)),
        ("box:size=[3,5,1]", lambda: box([3, 5, 1])),
        ("binomial:size=5,normalize=false", lambda: binomial(5, normalize=False)),
        ("sobel", sobel),
        ("sobel:axis=0,ndim=3", lambda: sobel(0, ndim=3)),
        ("prewitt:axis=-2", lambda: prewitt(-2)),
        ("scharr", scharr),
        ("laplace:ndim=3", lambda: laplace(ndim=3)),
        ("log:sigma=1.5", lambda: laplacian_of_gaussian(1.5)),
        ("laplacian_of_gaussian:sigma=[1,2]", lambda: laplacian_of_gaussian([1, 2])),
        ("dog:sigma1=1,sigma2=2", lambda: difference_of_gaussians(1, 2)),
        ("difference_of_gaussians:sigma1=1,ratio=2", lambda: difference_of_gaussians(1, ratio=2)),
        ("ball:radius=2,antialias=true", lambda: ball(2, antialias=True)),
        ("line:length=7,angle=30", lambda: line(7, angle=30)),
        ("motion_blur:length=7,angle=-15.5", lambda: line(7, angle=-15.5)),
        ("gaussian:sigma=1e0,radius=[1,2]", lambda: gaussian(1.0, radius=[1, 2])),
    ],
)
def test_from_spec_equals_direct_call(spec, expected) -> None:
    k = from_spec(spec)
    assert k.dtype == np.float64
    np.testing.assert_array_equal(k, expected())


def test_from_spec_accepts_every_registered_name() -> None:
    required = {
        "gaussian": "sigma=1",
        "laplacian_of_gaussian": "sigma=1",
        "log": "sigma=1",
        "difference_of_gaussians": "sigma1=1",
        "dog": "sigma1=1",
        "gabor": "sigma=1",
        "disk": "radius=1",
        "ball": "radius=1",
        "line": "length=3",
        "motion_blur": "length=3",
        "box": "size=3",
        "binomial": "size=3",
    }
    for name in KERNELS:
        spec = f"{name}:{required[name]}" if name in required else name
        assert from_spec(spec).size > 0


def test_from_spec_passes_arrays_through_as_kernel() -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.int32)
    k = from_spec(a)
    assert k.dtype == np.float64
    assert k.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert k is not a
    assert from_spec([1, 2, 1]).tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="spec must be finite"):
        from_spec(np.array([1.0, np.nan]))


def test_from_spec_loads_npy(tmp_path) -> None:
    path = tmp_path / "k.npy"
    arr = np.random.default_rng(0).random((3, 4))
    np.save(path, arr)
    np.testing.assert_array_equal(from_spec(str(path)), arr)
    np.testing.assert_array_equal(from_spec(path), arr)  # os.PathLike


def test_from_spec_loads_csv_1d_and_2d(tmp_path) -> None:
    p2 = tmp_path / "k.csv"
    p2.write_text("1,2,1\n2,4,2\n1,2,1\n")
    assert from_spec(str(p2)).tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    p1 = tmp_path / "row.CSV"
    p1.write_text("0.25, 0.5, 0.25\n")
    assert from_spec(str(p1)).tolist() == [0.25, 0.5, 0.25]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "spec must not be empty"),
        ("   ", "spec must not be empty"),
        ("blur:sigma=2", r"unknown kernel 'blur'.*known kernels: ball, binomial, box, "),
        ("gaussian:sigma=2,width=3", r"unknown parameter 'width'.*allowed: sigma, order, trunc"),
        ("sobel:sigma=1", r"unknown parameter 'sigma' for kernel 'sobel'; allowed: axis, ndim"),
        ("gaussian:sigma", r"missing '=' in 'sigma'"),
        ("gaussian:2", r"missing '='"),
        ("gaussian:=2", "empty parameter name"),
        ("gaussian:sigma=", "empty value for 'sigma'"),
        ("gaussian:sigma=2,", "missing '='"),
        ("gaussian:", "empty parameter list"),
        ("gaussian:sigma=[2,3", r"unbalanced '\['"),
        ("gaussian:sigma=2,3]", r"unbalanced '\]'"),
        ("gaussian:sigma=[2,3]x", "malformed list"),
        ("gaussian:sigma=2[3]", "malformed value"),
        ("gaussian:sigma=abc", "'abc' for 'sigma'.*is not a number"),
        ("gaussian:sigma=[1,two]", "'two' for 'sigma'.*is not a number"),
        ("gaussian:sigma=1,sigma=2", "given twice"),
        ("gaussian", r"kernel 'gaussian' requires sigma"),
        ("disk:antialias=true", r"kernel 'disk' requires radius"),
        ("gaussian:sigma=-1", r"spec 'gaussian:sigma=-1': sigma must be a finite number"),
        ("disk:radius=3,antialias=1", r"antialias must be True or False"),
        ("box:size=2.5", r"size must be an integer"),
        ("dog:sigma1=2,sigma2=1", "sigma2 must be larger"),
        ("missing_file.npy", r"spec: kernel file 'missing_file.npy' does not exist"),
        ("nowhere/k.csv", r"spec: kernel file 'nowhere/k.csv' does not exist"),
    ],
)
def test_from_spec_errors(spec, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as info:
        from_spec(spec)
    assert "\n" not in str(info.value)
    assert "spec" in str(info.value)


def test_from_spec_rejects_bytes() -> None:
    with pytest.raises(TypeError, match="spec must be a str"):
        from_spec(b"gaussian:sigma=1")


def test_from_spec_unreadable_npy(tmp_path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"this is not numpy")
    with pytest.raises(ValueError, match=r"spec: kernel file '.*bad\.npy' is not a \.npy file"):
        from_spec(str(path))
    path.write_bytes(b"\x93NUMPY\x01\x00garbage")  # the magic, then a broken header
    with pytest.raises(ValueError, match=r"spec: cannot read kernel file '.*bad\.npy'"):
        from_spec(str(path))


def test_from_spec_object_npy_is_refused(tmp_path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read kernel file"):
        from_spec(str(path))


def test_from_spec_loads_whitespace_csv_written_by_np_savetxt(tmp_path) -> None:
    # numpy.savetxt's default delimiter is a space ('%.18e' round-trips float64 exactly)
    rng = np.random.default_rng(1)
    k2 = rng.standard_normal((5, 7))
    p2 = tmp_path / "k2.csv"
    np.savetxt(p2, k2)
    np.testing.assert_array_equal(from_spec(str(p2)), k2)
    np.testing.assert_array_equal(from_spec(p2), k2)  # os.PathLike
    # a 1-D kernel: savetxt writes one value per line
    k1 = np.array([0.25, 0.5, 0.25])
    p1 = tmp_path / "k1.csv"
    np.savetxt(p1, k1, header="binomial 3, normalised")  # '# ...' header, comma inside
    np.testing.assert_array_equal(from_spec(str(p1)), k1)
    # tabs, repeated spaces and blank lines
    p3 = tmp_path / "tabs.csv"
    p3.write_text("1\t2  1\n\n2\t4\t2\n1 2 1\n")
    assert from_spec(str(p3)).tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    # commas with spaces, as other tools write them
    p4 = tmp_path / "commas.csv"
    np.savetxt(p4, k2, delimiter=", ")
    np.testing.assert_array_equal(from_spec(str(p4)), k2)


@pytest.mark.parametrize(
    "content",
    ["1,2,1\n2 4 2\n", "1 2 1\n2 4\n", "1;2;1\n", "# only a comment\n\n", ""],
    ids=["mixed", "ragged", "semicolons", "comment-only", "empty"],
)
def test_from_spec_bad_csv_says_what_a_kernel_file_looks_like(tmp_path, content) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"kernel file '.*bad\.csv'") as info:
        from_spec(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert "commas or by whitespace" in msg and "numpy.savetxt" in msg


def test_from_spec_non_numeric_csv(tmp_path) -> None:
    path = tmp_path / "words.csv"
    path.write_text("a,b\nc,d\n")
    with pytest.raises(ValueError, match=r"spec: cannot read kernel file '.*words\.csv'"):
        from_spec(str(path))


def test_from_spec_non_finite_file_content(tmp_path) -> None:
    path = tmp_path / "inf.npy"
    np.save(path, np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="spec must be finite, got Inf"):
        from_spec(str(path))
    csv = tmp_path / "nan.csv"
    csv.write_text("1,nan,1\n")
    with pytest.raises(ValueError, match="spec must be finite, got NaN"):
        from_spec(str(csv))


def test_from_spec_complex_npy_is_refused(tmp_path) -> None:
    path = tmp_path / "c.npy"
    np.save(path, np.array([1 + 2j]))
    with pytest.raises(TypeError, match="spec must be real"):
        from_spec(str(path))


def test_spec_parameters_and_extend_spec_round_trip_through_from_spec():
    """What sepconv filter appends to a spec (ndim, a sigma from --sigma-mm) reads back as
    the builder's own arguments."""
    given, allowed = K.spec_parameters("gaussian:order=[0,1]")
    assert given == {"order": [0, 1]} and "sigma" in allowed
    text = K.extend_spec("gaussian:order=[0,1]", {"sigma": [1.5, 2.25], "truncate": 3.0})
    assert text == "gaussian:order=[0,1],sigma=[1.5,2.25],truncate=3"
    np.testing.assert_array_equal(
        from_spec(text), gaussian([1.5, 2.25], order=[0, 1], truncate=3.0)
    )
    adapted, _ = K.spec_parameters("sobel:axis=0", ndim=3)
    assert K.extend_spec("sobel:axis=0", {"ndim": adapted["ndim"]}) == "sobel:axis=0,ndim=3"
    assert from_spec("sobel:axis=0,ndim=3").shape == (3, 3, 3)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_truncate_zero_is_radius_zero_as_in_scipy(order):
    # scipy takes truncate=0 (radius int(0 * sigma + 0.5) = 0); a drop-in must too
    import sepconv

    x = np.random.default_rng(60).random((7, 9))
    got = sepconv.gaussian_filter(x, 2.0, order=order, truncate=0.0)
    np.testing.assert_allclose(got, ndimage.gaussian_filter(x, 2.0, order=order, truncate=0.0))
    for name in ("gaussian_laplace", "gaussian_gradient_magnitude"):
        ref = getattr(ndimage, name)(x, 2.0, truncate=0.0)
        np.testing.assert_allclose(getattr(sepconv, name)(x, 2.0, truncate=0.0), ref)


def test_cached_weights_and_tables_are_fresh_arrays() -> None:
    """The Gaussian weights and extension tables are cached; what a caller gets is its own
    array: changing it changes nothing for the next call."""
    import sepconv
    from sepconv._modes import extension_table

    g = K.gaussian1d(1.5)
    ref = g.copy()
    g[:] = 0
    np.testing.assert_array_equal(K.gaussian1d(1.5), ref)
    assert K.gaussian1d(1.5).flags.c_contiguous
    t = extension_table(10, 5, 2, "reflect")
    ref_t = t.copy()
    t[:] = -7
    np.testing.assert_array_equal(extension_table(10, 5, 2, "reflect"), ref_t)
    x = np.random.default_rng(0).random((20, 20))
    np.testing.assert_allclose(
        sepconv.gaussian_filter(x, 1.5), ndimage.gaussian_filter(x, 1.5), rtol=0, atol=1e-14
    )


def test_spec_names_and_parameters_are_case_insensitive():
    """'Gaussian:SIGMA=2,Truncate=3' is scipy's Gaussian of sigma 2 truncated at 3 sigma (its
    impulse response); a parameter given twice in two cases is still given twice."""
    impulse = np.zeros((13, 13))  # radius int(3 * 2 + 0.5) = 6
    impulse[6, 6] = 1.0
    want = ndimage.gaussian_filter(impulse, 2.0, truncate=3.0, mode="constant")
    np.testing.assert_allclose(K.from_spec("Gaussian:SIGMA=2,Truncate=3"), want, atol=1e-15)
    with pytest.raises(ValueError, match="parameter 'sigma' given twice"):
        K.from_spec("gaussian:sigma=1,SIGMA=2")


# ---------------------------------------------------------------------------------------------
# kernels at the ends of their ranges (review of the builders): never silently all zero
# ---------------------------------------------------------------------------------------------


def test_binomial_at_its_largest_size_sums_to_one():
    """Before: size=1025 divided by sum C(1024, i) = 2**1024 = inf: an all-zero kernel."""
    from fractions import Fraction

    v = K.binomial(1025, ndim=1)
    assert abs(v.sum() - 1.0) < 1e-12
    for i in (0, 1, 100, 512):  # each tap the correctly rounded C(1024, i) / 2**1024
        assert v[i] == float(Fraction(math.comb(1024, i), 2**1024))
    np.testing.assert_array_equal(K.binomial(5, ndim=1, normalize=False), [1, 4, 6, 4, 1])


@pytest.mark.parametrize("r", [1e-200, 1e-3, 0.016, 0.05, 0.3, 0.5])
def test_a_ball_inside_the_centre_voxel_holds_its_exact_volume(r):
    """Before: the 32-slice rule missed balls under 1/64 (all zeros, also normalized) and was
    4-86 % off below 0.05."""
    k = K.ball(r, antialias=True, normalize=False)
    assert k.shape == (3, 3, 3) and k[1, 1, 1] == 4.0 / 3.0 * math.pi * r**3
    assert np.count_nonzero(k) <= 1
    unit = K.ball(r, antialias=True)
    assert unit[1, 1, 1] == 1.0 and unit.sum() == 1.0


@pytest.mark.parametrize("r", [0.51, 0.6, 0.8, 1.0, 1.5, 3.0])
def test_antialiased_ball_volume_against_the_sphere(r):
    k = K.ball(r, antialias=True, normalize=False)
    assert abs(k.sum() / (4.0 / 3.0 * math.pi * r**3) - 1) < 3e-4


def test_tiny_disks_and_lines_are_the_identity_when_normalized():
    """Before: disk(1e-200, antialias) (its area underflows) and line(1e-13) were all zeros."""
    d = K.disk(1e-200, antialias=True)
    assert d.sum() == 1.0 and d[1, 1] == 1.0
    assert K.disk(1e-3, antialias=True, normalize=False)[1, 1] == pytest.approx(
        math.pi * 1e-6, rel=1e-12
    )
    for n in (1e-13, 0.5, 0.9, 1.0):  # a segment of length <= 1 lies in the centre cell
        np.testing.assert_array_equal(K.line(n, angle=30), [[1.0]])
        np.testing.assert_array_equal(K.line(n, angle=30, normalize=False), [[n]])
    assert K.line(3.0, normalize=False).sum() == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"sigma1": 1, "ratio": float("nan")}, ValueError, r"ratio must be a finite number > 1"),
        ({"sigma1": 1, "ratio": 0.5}, ValueError, r"ratio must be a finite number > 1, got 0.5"),
        ({"sigma1": 0}, ValueError, r"sigma1 must be > 0 on every axis when sigma2 comes from"),
        ({"sigma1": 1, "ratio": True}, TypeError, r"ratio must be a real number, got True"),
    ],
)
def test_dog_refusals_name_what_the_user_gave(kw, err, match):
    """Before: ratio=nan said '> 0' (the rule is > 1); sigma1=0 blamed a sigma2 never given."""
    with pytest.raises(err, match=match):
        K.difference_of_gaussians(**kw)


def test_a_text_file_named_npy_is_called_what_it_is(tmp_path):
    """Before: numpy's 'This file contains pickled (object) data' for a text file."""
    (tmp_path / "k.npy").write_text("1 2 1\n")
    with pytest.raises(ValueError, match=r"is not a \.npy file \(it starts with b'1 2 1"):
        K.from_spec(str(tmp_path / "k.npy"))


@pytest.mark.parametrize("value", ["1_0", "\uff11\uff10", "2_5e-1"])
def test_spec_numbers_are_plain_ascii_numbers(value):
    """Before: 'gaussian:sigma=1_0' was read as sigma=10 (Python's int accepts underscores)."""
    with pytest.raises(ValueError, match=r"is not a number"):
        K.from_spec(f"gaussian:sigma={value}")
    assert K.from_spec("gaussian:sigma=1e0").shape == (9, 9)
