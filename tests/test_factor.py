"""sepconv.separate / separable_rank / Factorization against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import sepconv
from sepconv import Factorization, is_separable, kernels, separable_rank, separate
from sepconv.factor import exact_tolerance, max_useful_rank


def svd_tail_error(K: np.ndarray, r: int) -> float:
    """Eckart–Young: relative error of the best rank-r approximation from the singular values."""
    s = np.linalg.svd(K, compute_uv=False)
    return math.sqrt(float(np.sum(s[r:] ** 2))) / math.sqrt(float(np.sum(s**2)))


def random_cp(rng: np.random.Generator, shape: tuple[int, ...], rank: int) -> np.ndarray:
    T = np.zeros(shape)
    for _ in range(rank):
        term = np.array(1.0)
        for n in shape:
            term = np.multiply.outer(term, rng.standard_normal(n))
        T += term
    return T


# ---------------------------------------------------------------------------------------------
# exact facts about common kernels
# ---------------------------------------------------------------------------------------------

RANK_ONE = {
    "gaussian 2-D": kernels.gaussian(2.0),
    "gaussian anisotropic": kernels.gaussian([1.0, 3.0]),
    "gaussian derivative": kernels.gaussian(1.5, order=(0, 1)),
    "gaussian 3-D": kernels.gaussian(1.2, ndim=3),
    "gaussian 3-D mixed order": kernels.gaussian([1.0, 2.0, 1.5], order=[1, 0, 2]),
    "box": kernels.box(5),
    "box 3-D": kernels.box([3, 5, 7]),
    "binomial": kernels.binomial(5),
    "sobel axis 0": kernels.sobel(0),
    "sobel axis 1": kernels.sobel(1),
    "sobel 3-D": kernels.sobel(1, ndim=3),
    "prewitt": kernels.prewitt(0),
    "scharr": kernels.scharr(1),
    "gabor theta 0": kernels.gabor(3.0, theta=0.0, frequency=0.15, gamma=0.5),
    "gabor theta 90": kernels.gabor(2.0, theta=90.0, frequency=0.2, gamma=2.0, phase=0.7),
    "motion blur horizontal": kernels.line(7, angle=0.0),
}


@pytest.mark.parametrize("name", sorted(RANK_ONE))
def test_separable_kernels_are_rank_one(name: str) -> None:
    K = RANK_ONE[name]
    f = separate(K)
    assert f.rank == 1
    assert separable_rank(K) == 1
    assert is_separable(K)
    assert f.exact
    np.testing.assert_allclose(f.to_dense(), K, rtol=0, atol=1e-14 * np.abs(K).max())


@pytest.mark.parametrize(
    "K",
    [
        kernels.laplacian_of_gaussian(1.5),
        kernels.laplacian_of_gaussian([1.0, 2.5]),
        kernels.difference_of_gaussians(1.0, 1.6),
        kernels.difference_of_gaussians(2.0, 3.0),
        kernels.laplace(),
    ],
    ids=["log", "log-anisotropic", "dog", "dog-wide", "laplace"],
)
def test_log_dog_and_laplace_are_rank_two(K: np.ndarray) -> None:
    f = separate(K)
    assert f.rank == 2
    assert f.exact
    assert not is_separable(K)


@pytest.mark.parametrize("theta", [10.0, 30.0, 45.0, 60.0, 123.0, 200.0])
@pytest.mark.parametrize("phase", [0.0, 1.0])
def test_isotropic_gabor_is_rank_two_at_any_angle(theta: float, phase: float) -> None:
    K = kernels.gabor(3.0, theta=theta, frequency=0.15, gamma=1.0, phase=phase)
    f = separate(K)
    assert f.rank == 2
    assert f.error < 1e-13


def test_anisotropic_rotated_gabor_needs_more_than_two_terms() -> None:
    K = kernels.gabor(3.0, theta=30.0, frequency=0.15, gamma=0.5)
    assert separable_rank(K) > 2


@pytest.mark.parametrize(
    ("K", "factors", "weight"),
    [
        (kernels.sobel(0), ([-1, 0, 1], [1, 2, 1]), 1.0),
        (kernels.sobel(1), ([1, 2, 1], [-1, 0, 1]), 1.0),
        (kernels.prewitt(1), ([1, 1, 1], [-1, 0, 1]), 1.0),
        (kernels.scharr(0), ([-1, 0, 1], [3, 10, 3]), 1.0),
        (kernels.binomial(5, normalize=False), ([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]), 1.0),
        (kernels.binomial(3), ([1, 2, 1], [1, 2, 1]), 1 / 16),
        (kernels.sobel(2, ndim=3), ([1, 2, 1], [1, 2, 1], [-1, 0, 1]), 1.0),
        (3 * np.outer([1, 2, 1], [1, 0, -1]), ([1, 2, 1], [-1, 0, 1]), -3.0),
    ],
    ids=["sobel0", "sobel1", "prewitt", "scharr", "binomial-int", "binomial", "sobel3d", "3x"],
)
def test_integer_separable_kernels_factor_into_exact_integer_kernels(
    K: np.ndarray, factors: tuple[list[int], ...], weight: float
) -> None:
    f = separate(K)
    assert f.rank == 1
    assert f.method == "integer"
    for got, want in zip(f.factors[0], factors, strict=True):
        assert np.array_equal(got, np.array(want, dtype=float)), (got, want)
    assert f.weights[0] == weight
    assert np.array_equal(f.to_dense(), K)
    assert f.error == 0.0


def test_box_kernel_factors_into_ones_with_the_scale_in_the_weight() -> None:
    f = separate(kernels.box(3))
    assert all(np.array_equal(v, np.ones(3)) for v in f.factors[0])
    assert f.weights[0] == pytest.approx(1 / 9, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# 2-D: Eckart–Young
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_2d_truncation_error_equals_discarded_singular_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((rng.integers(3, 12), rng.integers(3, 12)))
    for r in range(1, min(K.shape) + 1):
        f = separate(K, rank=r)
        assert f.rank == r
        want = svd_tail_error(K, r)
        assert f.error == pytest.approx(want, rel=1e-9, abs=1e-14)
        np.testing.assert_allclose(f.singular_values, np.linalg.svd(K, compute_uv=False))


def test_2d_tol_picks_the_smallest_rank_meeting_it() -> None:
    K = kernels.disk(6, antialias=True)
    errors = [svd_tail_error(K, r) for r in range(1, 14)]
    for tol in (0.3, 0.1, 0.05, 0.01, 1e-3):
        f = separate(K, tol=tol)
        want = next(r for r, e in enumerate(errors, start=1) if e <= tol)
        assert f.rank == want
        assert f.error <= tol


def test_rank_and_tol_together_cap_the_rank() -> None:
    K = kernels.disk(6, antialias=True)
    assert separate(K, rank=2, tol=1e-6).rank == 2
    assert separate(K, rank=6, tol=0.1).rank == separate(K, tol=0.1).rank


def test_rank_above_exact_rank_returns_only_the_needed_terms() -> None:
    f = separate(kernels.gaussian(2.0), rank=5)
    assert f.rank == 1
    f = separate(kernels.laplacian_of_gaussian(2.0), rank=4)
    assert f.rank == 2
    assert any("requested" in n for n in f.notes)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(2, 10),
    n=st.integers(2, 10),
    r=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_low_rank_matrices_have_their_rank(m: int, n: int, r: int, seed: int) -> None:
    r = min(r, m, n)
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = np.sort(rng.uniform(1.0, 10.0, r))[::-1]
    K = (U * s) @ V.T
    f = separate(K)
    assert f.rank == r
    assert f.exact
    np.testing.assert_allclose(f.to_dense(), K, atol=1e-12 * s[0])
    for k in range(1, r):
        assert separate(K, rank=k).error == pytest.approx(
            math.sqrt(np.sum(s[k:] ** 2) / np.sum(s**2)), rel=1e-9
        )


# ---------------------------------------------------------------------------------------------
# N-D
# ---------------------------------------------------------------------------------------------


def log3d(sigma: float = 1.5) -> np.ndarray:
    """3-D LoG from scipy itself: the response of gaussian_laplace to a centred impulse."""
    r = int(4 * sigma + 0.5)
    impulse = np.zeros((2 * r + 1,) * 3)
    impulse[r, r, r] = 1.0
    return ndimage.gaussian_laplace(impulse, sigma, mode="constant")


def test_3d_log_has_multilinear_rank_222_and_is_an_exact_sum_of_three_terms() -> None:
    K = log3d()
    np.testing.assert_allclose(K, kernels.laplacian_of_gaussian(1.5, ndim=3), atol=1e-15)
    f = separate(K)
    assert f.multilinear_rank == (2, 2, 2)
    assert f.rank == 3
    assert f.exact
    assert f.error < 1e-12
    assert not f.degenerate
    assert f.macs == 3 * 3 * 13


def test_3d_log_rank_two_fit_is_reported_degenerate_with_bounded_terms() -> None:
    K = log3d()
    f = separate(K, rank=2)
    assert f.rank == 2
    assert f.degenerate
    assert any("degenerate" in n for n in f.notes)
    assert np.all(np.isfinite(f.weights))
    # bounded: the terms do not cancel, so rounding is not amplified
    assert f.cancellation < 10
    assert 0 < f.error < 0.2


def test_n_d_tol_skips_degenerate_ranks() -> None:
    f = separate(log3d(), tol=1e-3)
    assert not f.degenerate
    assert f.error <= 1e-3


def test_exactly_separable_iff_every_mode_unfolding_has_rank_one() -> None:
    rng = np.random.default_rng(7)
    T = random_cp(rng, (4, 5, 6), 1)
    assert is_separable(T)
    assert separate(T).multilinear_rank == (1, 1, 1)
    # rank 1 along two modes but not the third is still not separable
    T2 = np.multiply.outer(rng.standard_normal(4), rng.standard_normal((5, 6)))
    assert separate(T2).multilinear_rank[0] == 1
    assert not is_separable(T2)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(3, 6), min_size=3, max_size=3).map(tuple),
    r=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_cp_tensors_are_recovered_exactly(shape: tuple[int, ...], r: int, seed: int) -> None:
    from sepconv.factor import _assess, _cp_dense

    rng = np.random.default_rng(seed)
    cols: list[list[np.ndarray]] = [[] for _ in shape]
    for _ in range(r):  # drawn as random_cp draws them: the same tensor for the same seed
        for k, n in enumerate(shape):
            cols[k].append(rng.standard_normal(n))
    A = [np.column_stack(c) for c in cols]
    T = _cp_dense(A, shape)
    # a draw whose own terms nearly cancel is degenerate by the documented criterion
    # (Harshman's: triple cosine <= -0.85, cancellation > 2), for which separate returns a
    # non-degenerate fit of higher rank on purpose (1 in ~150 draws of 3x4x5, rank 2)
    assume(not _assess(T, A, float(np.linalg.norm(T))).degenerate)
    f = separate(T)
    assert f.rank == r
    assert f.error < 1e-10
    assert not f.degenerate


@pytest.mark.parametrize("r", [1, 2])
def test_4d_cp_tensors_are_recovered_exactly(r: int) -> None:
    T = random_cp(np.random.default_rng(r), (3, 4, 3, 5), r)
    f = separate(T)
    assert f.rank == r
    assert f.error < 1e-10


def test_random_dense_3d_kernel_still_gets_an_exact_decomposition() -> None:
    T = np.random.default_rng(0).standard_normal((4, 4, 4))
    f = separate(T)
    assert f.exact
    assert f.rank <= max_useful_rank(T.shape) == 16


# ---------------------------------------------------------------------------------------------
# Factorization properties
# ---------------------------------------------------------------------------------------------


def test_error_bound_is_the_worst_case_output_error_per_unit_input() -> None:
    K = kernels.disk(5, antialias=True)
    f = separate(K, rank=2)
    E = K - f.to_dense()
    # worst case input: x = sign(E) in the kernel footprint gives exactly sum |E| at the centre
    x = np.sign(E)
    c = tuple(n // 2 for n in K.shape)
    out_k = ndimage.correlate(x, K, mode="constant")[c]
    out_f = ndimage.correlate(x, f.to_dense(), mode="constant")[c]
    assert abs(out_k - out_f) == pytest.approx(f.error_bound, rel=1e-12)
    # and no bounded input does worse
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, (40, 40))
    diff = ndimage.correlate(img, K) - ndimage.correlate(img, f.to_dense())
    assert np.abs(diff).max() <= f.error_bound


def test_factorization_structure_and_costs() -> None:
    f = separate(kernels.laplacian_of_gaussian(2.0))
    assert isinstance(f, Factorization)
    assert f.shape == (17, 17) and f.ndim == 2
    assert f.weights.shape == (2,)
    assert len(f.factors) == 2 and all(len(t) == 2 for t in f.factors)
    assert all(v.shape == (17,) for t in f.factors for v in t)
    assert f.macs == 2 * 34 and f.direct_macs == 289
    assert f.speedup == pytest.approx(289 / 68)
    dense = sum(w * np.outer(a, b) for w, (a, b) in zip(f.weights, f.factors, strict=True))
    np.testing.assert_allclose(f.to_dense(), dense)
    assert "rank=2" in repr(f)


def test_factorization_arrays_are_read_only() -> None:
    f = separate(kernels.gaussian(1.0))
    with pytest.raises(ValueError, match="read-only"):
        f.weights[0] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        f.factors[0][0][0] = 2.0


def test_separate_does_not_keep_a_reference_to_the_callers_kernel() -> None:
    K = kernels.gaussian(1.0)
    f = separate(K)
    K[0, 0] = 100.0
    assert f.kernel[0, 0] != 100.0


def test_one_d_kernel_is_its_own_factor() -> None:
    k = np.array([1.0, -3.0, 2.0])
    f = separate(k)
    assert f.rank == 1
    np.testing.assert_array_equal(f.to_dense(), k)


def test_zero_kernel_has_rank_zero() -> None:
    f = separate(np.zeros((3, 3)))
    assert f.rank == 0
    assert f.error == 0.0
    np.testing.assert_array_equal(f.to_dense(), np.zeros((3, 3)))


def test_integer_input_kernel_is_accepted() -> None:
    f = separate(np.outer([1, 2, 1], [1, 2, 1]).astype(np.int16))
    assert f.rank == 1 and f.error == 0


def test_spec_string_is_accepted() -> None:
    assert separate("laplacian_of_gaussian:sigma=2").rank == 2


def test_exact_tolerance_is_tiny() -> None:
    assert exact_tolerance((9, 9)) < 1e-12


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "exc", "match"),
    [
        (np.array([[1.0, np.nan]]), ValueError, "kernel must be finite, got NaN"),
        (np.array([[1.0, np.inf]]), ValueError, "kernel must be finite, got Inf"),
        (np.zeros((0, 3)), ValueError, "kernel must not be empty"),
        (np.array(2.0), ValueError, "at least one dimension"),
        (np.ones((2, 2), dtype=complex), TypeError, "kernel must be real"),
        (np.array([[1, "a"]], dtype=object), TypeError, "dtype object"),
        ([[1, 2], [3]], TypeError, "kernel must be an array of numbers"),
        ("no_such_kernel", ValueError, "unknown kernel"),
    ],
    ids=["nan", "inf", "empty", "0-d", "complex", "object", "ragged", "bad-spec"],
)
def test_bad_kernels_are_refused(kernel: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        separate(kernel)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rank": 0}, ValueError, "rank must be an integer >= 1, got 0"),
        ({"rank": -2}, ValueError, "rank must be an integer >= 1"),
        ({"rank": 6}, ValueError, r"rank must be between 1 and 5 for a kernel of shape \(5, 7\)"),
        ({"rank": 1.5}, TypeError, "rank must be an integer, got 1.5"),
        ({"tol": -0.1}, ValueError, "tol must be a finite number >= 0, got -0.1"),
        ({"tol": float("nan")}, ValueError, "tol must be a finite number >= 0, got nan"),
        ({"tol": "0.1"}, TypeError, "tol must be a real number"),
    ],
)
def test_bad_rank_and_tol_are_refused(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        separate(np.ones((5, 7)), **kwargs)


def test_rank_above_n_d_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="rank must be between 1 and 16"):
        separate(np.ones((4, 4, 4)), rank=17)


def test_cp_als_keeps_sweeping_while_it_converges():
    """The shared CP-ALS (also behind ``sepconv.nn.factorize(kind='cp')``) does not stop at
    its first progress check: an exact rank-2 tensor whose fit converges slowly is reached."""
    from sepconv.factor import _cp_als, _unfold

    rng = np.random.default_rng(6)
    shape = (3, 2, 3, 2)
    T = np.einsum("ir,jr,kr,lr->ijkl", *[rng.standard_normal((n, 2)) for n in shape])
    start = [np.linalg.svd(_unfold(T, k))[0][:, :2] for k in range(T.ndim)]
    early = _cp_als(T, [M.copy() for M in start], 0.0, max_iter=50)
    fit = _cp_als(T, [M.copy() for M in start], 0.0, max_iter=300)
    assert early.error > 1e-6  # slow: far from exact after 50 sweeps
    dense = np.einsum("ir,jr,kr,lr->ijkl", *fit.A)
    assert np.linalg.norm(dense - T) / np.linalg.norm(T) < 1e-12


# -- the scale of a kernel ------------------------------------------------------------------------

SCALES = [2.0**-1000, 1e-300, 1e-200, 1e-160, 1e160, 1e200, 1e300]


def scale_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(50)
    return {
        "rank1-2d": np.outer(rng.random(5), rng.random(7)),
        "rank3-2d": random_cp(rng, (6, 5), 3),
        "sobel": kernels.sobel(axis=0),
        "rank1-3d": random_cp(rng, (4, 5, 3), 1),
        "rank2-3d": random_cp(rng, (3, 4, 3), 2),
    }


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(scale_cases()))
def test_a_kernel_factorizes_alike_at_any_scale(name, scale):
    # squares of singular values overflow at 1e160 and underflow at 1e-160: the ranks, errors
    # and factors of such kernels came out NaN (an "exact" factorization of a 1e-200 kernel
    # whose terms were NaN)
    K = scale_cases()[name]
    ref = separate(K)
    f = separate(K * scale)
    assert (f.rank, f.method, f.exact) == (ref.rank, ref.method, ref.exact)
    assert f.error == pytest.approx(ref.error, abs=1e-13)
    dense = f.to_dense()
    assert np.all(np.isfinite(dense))
    np.testing.assert_allclose(dense / scale, K, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    assert separable_rank(K * scale) == ref.rank
    assert f.cancellation == pytest.approx(ref.cancellation, rel=1e-9)
    if ref.singular_values is not None:
        top = ref.singular_values[0]
        np.testing.assert_allclose(
            f.singular_values / scale, ref.singular_values, rtol=1e-12, atol=1e-12 * top
        )


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_tiny_and_huge_kernels_filter_as_their_unit_scale_twins(scale):
    import sepconv

    rng = np.random.default_rng(51)
    x = rng.random((20, 24))
    for K in (np.outer(rng.random(5), rng.random(7)), random_cp(rng, (5, 5), 2)):
        plan = sepconv.make_plan(K * scale, x.shape)
        assert plan.method == sepconv.make_plan(K, x.shape).method
        # scipy drops weights below DBL_EPSILON, so the reference is linearity: scale * (x * K)
        ref = ndimage.correlate(x, K) * scale
        for method in ("auto", "separable" if plan.method == "separable" else "lowrank"):
            got = sepconv.correlate(x, K * scale, method=method)
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_square_cp_ranks_are_found_in_closed_form() -> None:
    # rank R with two modes of size R: Jennrich's simultaneous diagonalization gives the exact
    # factors, where ALS from 5 starts missed 8 of 300 random rank-3 3x3x3 tensors (rank 4-5)
    from sepconv.factor import _assess, _cp_dense

    missed = []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        A = [rng.standard_normal((3, 3)) for _ in range(3)]
        T = _cp_dense(A, (3, 3, 3))
        if _assess(T, A, float(np.linalg.norm(T))).degenerate:
            continue
        f = separate(T)
        if f.rank != 3 or f.error >= 1e-10:
            missed.append((seed, f.rank))
    assert missed == []


# ---------------------------------------------------------------------------------------------
# fits_by_rank and separate(tol=) agree (the rows of ``sepconv analyze``)
# ---------------------------------------------------------------------------------------------


def _recomputed_error(f: Factorization, K: np.ndarray) -> float:
    """Relative Frobenius error of ``f`` recomputed from its weights and factors with numpy."""
    dense = np.zeros(K.shape)
    for w, fs in zip(f.weights, f.factors, strict=True):
        term = np.array(float(w))
        for v in fs:
            term = np.multiply.outer(term, v)
        dense = dense + term
    return float(np.linalg.norm(K - dense) / np.linalg.norm(K))


def _random_3x4x5() -> np.ndarray:
    return np.random.default_rng(0).random((3, 4, 5))


@pytest.mark.parametrize(
    ("K", "tol"),
    [
        (kernels.ball(3), None),  # the fresh search alone found 6 terms; the chain 5
        (kernels.ball(3), 1e-3),
        (kernels.laplace(ndim=3), 0.01),
        (_random_3x4x5(), 0.1),  # the tol search stopped at rank 4, then took all 12 terms
    ],
    ids=["ball-exact", "ball-1e-3", "laplace3d-0.01", "random345-0.1"],
)
def test_separate_tol_is_never_above_the_first_fits_by_rank_row_within_tol(K, tol) -> None:
    from sepconv.factor import fits_by_rank

    f = separate(K, tol=tol)
    within = max(tol or 0.0, exact_tolerance(K.shape))
    # the factorization is what it claims: its error recomputed from its factors
    assert _recomputed_error(f, K) == pytest.approx(f.error, rel=1e-6, abs=1e-14)
    assert _recomputed_error(f, K) <= within * (1 + 1e-9)
    rows = fits_by_rank(K)
    for row in rows:
        assert _recomputed_error(row, K) == pytest.approx(row.error, rel=1e-6, abs=1e-14)
    first = next(r.rank for r in rows if _recomputed_error(r, K) <= within)
    assert f.rank <= first


def test_separate_exact_rank_equals_the_last_fits_by_rank_row_for_the_ball() -> None:
    from sepconv.factor import fits_by_rank

    K = kernels.ball(3)
    rows = fits_by_rank(K)
    assert separate(K).rank == rows[-1].rank == 5
    assert _recomputed_error(rows[-1], K) <= exact_tolerance(K.shape)


def test_random_3x4x5_tol_rank_is_found_below_the_full_decomposition() -> None:
    K = _random_3x4x5()
    f = separate(K, tol=0.1)
    assert f.rank <= 6  # fits_by_rank's rank 6 has error 0.059; before the fix: 12
    assert _recomputed_error(f, K) <= 0.1


@pytest.mark.parametrize("shape", [(40, 40), (23, 57), (57, 23)])
def test_2d_fits_by_rank_equals_separate_of_each_rank(shape) -> None:
    """The one-SVD path gives the same factorizations and errors as a fresh call per rank."""
    from sepconv.factor import fits_by_rank

    rng = np.random.default_rng(sum(shape))
    K = rng.random(shape) * 3.0  # a power-of-two rescaling on the way (max in [2, 3))
    fits = fits_by_rank(K)
    assert [f.rank for f in fits] == list(range(1, min(shape) + 1))
    for f in fits:
        ref = separate(K, rank=f.rank)
        assert ref.rank == f.rank
        np.testing.assert_allclose(f.weights, ref.weights, rtol=1e-12)
        for a, b in zip(f.factors, ref.factors, strict=True):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13)
        assert f.error == pytest.approx(ref.error, rel=1e-9, abs=1e-15)
        assert f.error_bound == pytest.approx(ref.error_bound, rel=1e-9, abs=1e-14)
        assert f.error == pytest.approx(svd_tail_error(K, f.rank), rel=1e-7, abs=1e-14)
        dense_l1 = float(np.abs(K - f.to_dense()).sum())
        assert f.error_bound == pytest.approx(dense_l1, rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("shape", [(9, 9, 9), (5, 5, 5, 5)])
def test_n_d_search_and_chain_share_one_deadline(monkeypatch, shape) -> None:
    """Past the search budget only the first three candidate ranks get (one full fit each);
    no further rank is started and the chain of ``fits_by_rank`` is not run again (a random
    9x9x9 kernel took 12-43 s against a 3 s budget). The answer stays the exact fallback."""
    from sepconv import factor

    monkeypatch.setattr(factor, "CP_SEARCH_SECONDS", 0.0)  # the deadline has passed at once
    ranks: list[int] = []
    step = factor._NDProblem.step

    def counting_step(self, R, *args, **kwargs):
        ranks.append(R)
        return step(self, R, *args, **kwargs)

    monkeypatch.setattr(factor._NDProblem, "step", counting_step)
    K = np.random.default_rng(7).random(shape)
    f = separate(K)
    lower = max(
        np.linalg.matrix_rank(np.moveaxis(K, k, 0).reshape(K.shape[k], -1)) for k in range(K.ndim)
    )
    assert ranks == [lower, lower + 1, lower + 2]  # before: these, then the chain 1 .. lower+2
    assert f.method == "recursive-svd"
    assert _recomputed_error(f, K) <= exact_tolerance(K.shape)
    assert any("CP search stopped" in n for n in f.notes)


@pytest.mark.parametrize(("sigma1", "sigma2"), [(1.5, 1.6), (2.0, 2.2), (1.0, 1.1)])
def test_3d_dog_of_close_sigmas_is_two_terms_that_cancel_more_than_ten_fold(sigma1, sigma2):
    """G(1.5) - G(1.6) cancels 16-fold (||G1|| + ||G2|| = 16 ||K||), as its definition does:
    in float64 that costs 16 eps, far within the exact tolerance. It was called rank 3 (the
    cancellation bound was 10 for every precision); a float32 judgement keeps 10."""
    K = kernels.difference_of_gaussians(sigma1, sigma2, ndim=3)
    r = (K.shape[0] - 1) // 2
    g1, g2 = kernels.gaussian1d(sigma1, radius=r), kernels.gaussian1d(sigma2, radius=r)
    ref = np.einsum("i,j,k->ijk", g1, g1, g1) - np.einsum("i,j,k->ijk", g2, g2, g2)
    np.testing.assert_allclose(K, ref, rtol=0, atol=1e-15)  # exactly two separable terms
    f = separate(K)
    assert f.rank == 2 and not f.degenerate and f.cancellation > 10
    assert _recomputed_error(f, K) <= exact_tolerance(K.shape)
    assert separable_rank(K) == 2
    from sepconv.factor import EXACT_FIT_CANCELLATION, exact_fit_cancellation

    assert exact_fit_cancellation(exact_tolerance(K.shape, np.float32)) == EXACT_FIT_CANCELLATION
    assert exact_fit_cancellation(exact_tolerance(K.shape)) > 1000
    x = np.random.default_rng(0).random((20, 21, 22))  # the plan runs it exactly
    np.testing.assert_allclose(sepconv.correlate(x, K), ndimage.correlate(x, K), atol=1e-13)


@pytest.mark.parametrize("ratio", [1.2, 1.6])
def test_3d_difference_of_gaussians_is_exactly_two_nearly_parallel_terms(ratio) -> None:
    """G(1) - G(ratio) is two separable terms whose triple cosine is about -0.85 and whose
    cancellation is about 2.4: an exact fit, not a degenerate one (it was rank 3, and the
    exact rank-2 fit ALS found, 1e-15, was discarded for a 0.145 % bounded fit)."""
    K = kernels.difference_of_gaussians(1.0, ratio=ratio, ndim=3)
    # the closed form: the two Gaussians as products of their 1-D kernels
    r = (K.shape[0] - 1) // 2
    g1 = kernels.gaussian1d(1.0, radius=r)
    g2 = kernels.gaussian1d(ratio, radius=r)
    ref = np.einsum("i,j,k->ijk", g1, g1, g1) - np.einsum("i,j,k->ijk", g2, g2, g2)
    np.testing.assert_allclose(K, ref, rtol=0, atol=1e-15)
    for f in (separate(K), separate(K, rank=2)):
        assert f.rank == 2
        assert not f.degenerate
        assert f.method == "cp-als"
        assert _recomputed_error(f, K) < 1e-13
    assert separable_rank(K) == 2


def _w_tensor() -> np.ndarray:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    o = lambda x, y, z: np.einsum("i,j,k->ijk", x, y, z)  # noqa: E731
    return o(a, a, b) + o(a, b, a) + o(b, a, a)


@pytest.mark.parametrize(
    "K",
    [
        _w_tensor(),  # rank 3, border rank 2
        np.stack([np.eye(2), np.array([[0.0, -1.0], [1.0, 0.0]])], axis=2),  # rotation: rank 3
        kernels.laplacian_of_gaussian(1.0, ndim=3),  # rank 3, border rank 2
    ],
    ids=["W", "rotation", "log3d"],
)
def test_rank_two_fits_of_rank_three_tensors_stay_degenerate_or_bounded(K) -> None:
    f = separate(K, rank=2)
    assert f.rank == 2
    assert f.degenerate  # flagged, and the bounded fit returned
    assert _recomputed_error(f, K) > 0.01  # no exact rank-2 fit exists
    assert f.cancellation < 10  # bounded terms
    exact = separate(K)
    assert exact.rank == 3
    assert _recomputed_error(exact, K) <= exact_tolerance(K.shape)


def _float16_kernel_with_a_half_percent_rank_two_part() -> np.ndarray:
    g = kernels.gaussian1d(2.0)
    n = g.size
    step = np.outer(np.sign(np.arange(n) - n // 2), np.ones(n)) / np.sqrt(n)
    K = np.outer(g, g) + 0.006 * np.outer(g, g).max() * step
    return K.astype(np.float16)


def test_float16_kernel_keeps_a_component_far_above_its_rounding() -> None:
    """Rounding to float16 moves a kernel by at most eps/2 relative (here 2.2e-4); a 0.5 %
    rank-2 part is no rounding. At 8 eps (7.8e-3) it was called exact and the ``auto``
    filter dropped it: 1000x less accurate than ``direct``."""
    import sepconv

    K16 = _float16_kernel_with_a_half_percent_rank_two_part()
    K = K16.astype(np.float64)
    rank1 = svd_tail_error(K, 1)
    assert 3e-3 < rank1 < 1e-2  # the genuine component
    eps16 = float(np.finfo(np.float16).eps)
    assert exact_tolerance(K.shape, np.float16) == 2 * eps16 < rank1
    f = separate(K16)
    assert f.rank == 2 and f.exact
    assert _recomputed_error(f, K) <= 2 * eps16
    x = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    ref = ndimage.correlate(x.astype(np.float64), K)
    y = sepconv.correlate(x, K16)
    # within the kernel's own float16 rounding (3.6e-5; direct: 1.2e-6), not 1.3e-3 as before
    assert np.abs(y - ref).max() <= 2e-4 * np.abs(ref).max()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rounding_of_an_exact_rank_two_kernel_is_still_rank_two_at_its_precision(seed, dtype):
    """2 eps leaves room for a kernel made in float64 and rounded to its dtype (at most eps/2
    relative per entry, so in the Frobenius norm)."""
    rng = np.random.default_rng(seed)
    K = sum(np.outer(rng.random(9), rng.random(9)) for _ in range(2))
    Kr = K.astype(dtype)
    assert separable_rank(Kr) == 2
    assert separable_rank(Kr.astype(np.float64)) > 2  # the rounding is not rank 2 in float64
    assert separable_rank(random_cp(rng, (5, 6, 7), 2).astype(dtype)) == 2


def test_a_pathlib_path_is_a_kernel_file_like_its_str(tmp_path) -> None:
    from sepconv.factor import fits_by_rank

    g = kernels.gaussian1d(1.5)
    s = np.sign(np.arange(g.size) - g.size // 2)
    K = (np.outer(g, g) + 0.1 * np.outer(s, s)).astype(np.float32)
    path = tmp_path / "k.npy"
    np.save(path, K)
    f = separate(path)
    assert f.precision == "float32"  # read from the file, as for the str path
    assert f.rank == separate(str(path)).rank == 2
    assert _recomputed_error(f, K.astype(np.float64)) <= exact_tolerance(K.shape, np.float32)
    assert separable_rank(path) == 2
    assert [r.rank for r in fits_by_rank(path)] == [1, 2]


@pytest.mark.parametrize("tol", [0.1, 0.3])
def test_n_d_tol_search_that_runs_out_of_time_falls_back_within_tol(monkeypatch, tol) -> None:
    """The fallback of a tol search is a decomposition within tol, not the exact one (a random
    9x9x9 kernel within 0.1: 81 terms at error 1e-15 before, where 66 are within 0.1)."""
    from sepconv import factor

    monkeypatch.setattr(factor, "CP_SEARCH_SECONDS", 0.0)
    K = np.random.default_rng(0).random((9, 9, 9))
    f = separate(K, tol=tol)
    err = _recomputed_error(f, K)
    assert err <= tol
    assert f.rank < 81  # the exact decomposition's terms (every mode has rank 9)
    assert err > 1e-3  # a tol fit, not the exact one
    assert f.error == pytest.approx(err, rel=1e-6)


@pytest.mark.parametrize("shape", [(3, 4, 5), (6, 7)])
def test_kernel_near_the_float64_maximum_gets_finite_weights(shape) -> None:
    """Unit-norm factors put ``prod(norms) > max|K|`` into a weight: at max|K| = 1.6e308 it
    was inf (error inf, to_dense non-finite). The factors take the excess, exactly."""
    rng = np.random.default_rng(3)
    K = sum(math.prod(np.ix_(*(rng.standard_normal(n) for n in shape))) for _ in range(2)) * 1e307
    K = K * (1.6e308 / np.abs(K).max())
    assert np.all(np.isfinite(K))
    f = separate(K)
    assert f.rank == 2
    assert np.all(np.isfinite(f.weights))
    assert np.all(np.isfinite(f.to_dense()))
    # the error recomputed with numpy at a power-of-two scale (exact), so nothing overflows
    dense = sum(
        float(np.ldexp(w, -1024)) * math.prod(np.ix_(*fs))
        for w, fs in zip(f.weights, f.factors, strict=True)
    )
    ref = np.ldexp(K, -1024)
    err = float(np.linalg.norm(ref - dense) / np.linalg.norm(ref))
    assert err <= exact_tolerance(shape)
    assert f.error == pytest.approx(err, rel=1e-6, abs=1e-15)
    assert f.exact
