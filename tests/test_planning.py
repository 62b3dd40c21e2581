"""Planning that costs nothing (issue 14): the N-D separable search is bounded by what could
pay off (ranks cheaper than the dense methods) and by a time budget, and its results (a
failed search included) are cached. Results are checked against scipy.ndimage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from sepconv import kernels, plan
from sepconv.factor import separate_within

pytestmark = pytest.mark.engine


def test_bounded_search_finds_cheap_exact_forms() -> None:
    f = separate_within(kernels.gaussian(1.0, ndim=3), 1, 0.05)
    assert f is not None and f.rank == 1 and f.exact
    f = separate_within(kernels.difference_of_gaussians(1.0, 2.0, ndim=3), 4, 0.05)
    assert f is not None and f.rank == 2 and f.exact
    K = kernels.laplacian_of_gaussian(1.0, ndim=3)
    f = separate_within(K, 8, 0.05)
    assert f is not None and f.exact and f.rank <= 4  # 3 when found in time, else the exact 4
    np.testing.assert_allclose(f.to_dense(), K, atol=1e-12 * np.abs(K).max())


def test_bounded_search_gives_up_on_kernels_that_cannot_pay_off() -> None:
    assert separate_within(kernels.ball(4), 3, 0.05) is None
    assert separate_within(kernels.disk(6), 2, 0.05) is None  # 2-D: decided by one SVD


def test_ball_plan_skips_the_long_search_and_is_cached() -> None:
    K = kernels.ball(5)
    p = plan.make_plan(K, (64, 48, 40))
    assert p.method in ("direct", "fft")
    assert "passes would cost more" in p.reason or "planning budget" in p.reason, p.reason
    assert plan.make_plan(K, (64, 48, 40)) is p  # cached
    x = np.random.default_rng(0).random((20, 22, 24))
    np.testing.assert_allclose(sepconv.correlate(x, K), ndimage.correlate(x, K), atol=1e-12)


def test_log_volume_plan_stays_exact_and_low_rank() -> None:
    K = kernels.laplacian_of_gaussian(1.5, ndim=3)
    p = plan.make_plan(K, (256, 256, 256))
    assert p.method == "lowrank" and p.factorization is not None and p.factorization.exact
    x = np.random.default_rng(1).random((20, 21, 22))
    np.testing.assert_allclose(
        sepconv.correlate(x, K), ndimage.correlate(x, K), atol=1e-12 * np.abs(K).sum()
    )
