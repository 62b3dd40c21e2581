"""Ranks are judged at the precision of the kernel as given (float32 kernels at float32, ...).

References are independent of sepconv: kernels built here with numpy (outer products of 1-D
Gaussian, binomial, box and Sobel vectors), numpy SVD spectra, and dense reconstructions of the
returned factors with ``numpy.einsum``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sepconv.factor
from sepconv import is_separable, separable_rank, separate
from sepconv.cli import analyze_kernel, app
from sepconv.factor import exact_tolerance, fits_by_rank, kernel_precision, rank_lower_bound

EPS32 = float(np.finfo(np.float32).eps)
EPS16 = float(np.finfo(np.float16).eps)


def gaussian_1d(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def outer(*vecs: np.ndarray) -> np.ndarray:
    out = np.asarray(vecs[0], dtype=np.float64)
    for v in vecs[1:]:
        out = np.multiply.outer(out, np.asarray(v, dtype=np.float64))
    return out


def relative_tail(K: np.ndarray, r: int) -> float:
    """numpy SVD: relative Frobenius norm of the singular values after the first r (2-D)."""
    s = np.linalg.svd(np.asarray(K, dtype=np.float64), compute_uv=False)
    return math.sqrt(float(np.sum(s[r:] ** 2)) / float(np.sum(s**2)))


def unfolding_tail(K: np.ndarray, k: int, r: int) -> float:
    M = np.moveaxis(np.asarray(K, dtype=np.float64), k, 0).reshape(K.shape[k], -1)
    return relative_tail(M, r)


def dense_from(f: sepconv.Factorization) -> np.ndarray:
    """The factorization's terms summed with einsum (not sepconv's own to_dense)."""
    letters = "abcdefgh"[: f.ndim]
    out = np.zeros(f.shape)
    for w, term in zip(f.weights, f.factors, strict=True):
        out += w * np.einsum(",".join(letters) + "->" + letters, *term)
    return out


def rel_error(K: np.ndarray, approx: np.ndarray) -> float:
    K = np.asarray(K, dtype=np.float64)
    return float(np.linalg.norm(K - approx) / np.linalg.norm(K))


BINOMIAL9 = np.array([1, 8, 28, 56, 70, 56, 28, 8, 1], dtype=np.float64) / 256
SEPARABLE = {
    "gaussian 2-D": outer(gaussian_1d(1.0, 4), gaussian_1d(1.0, 4)),
    "gaussian 2-D anisotropic": outer(gaussian_1d(1.3, 5), gaussian_1d(2.7, 8)),
    "binomial 2-D": outer(BINOMIAL9, BINOMIAL9 * 3 / 7),
    "box 2-D": np.full((5, 7), 1 / 35),
    "sobel 2-D scaled": outer([1, 2, 1], [-1, 0, 1]) / 10,
    "gaussian 3-D": outer(gaussian_1d(1.0, 4), gaussian_1d(1.0, 4), gaussian_1d(1.0, 4)),
    "gaussian 3-D anisotropic": outer(
        gaussian_1d(0.9, 3), gaussian_1d(2.1, 6), gaussian_1d(1.4, 5)
    ),
    "binomial 3-D": outer(BINOMIAL9 / 3, [1, 4, 6, 4, 1], [1, 2, 1]),
    "box 3-D": np.full((3, 5, 7), 1 / 105),
    "sobel 3-D scaled": outer([1, 2, 1], [1, 2, 1], [-1, 0, 1]) * 0.3,
}


# ---------------------------------------------------------------------------------------------
# the float32 rounding of a separable kernel is separable at float32
# ---------------------------------------------------------------------------------------------


def test_float32_gaussian_from_the_issue_is_rank_one_and_its_spectrum_says_why() -> None:
    g = sepconv.kernels.gaussian1d(1.0)
    K32 = np.outer(g, g).astype(np.float32)
    s = np.linalg.svd(K32.astype(np.float64), compute_uv=False)
    # numpy: not rank 1 at float64 rounding, rank 1 to well within float32 rounding
    assert s[1] / s[0] > 1e3 * np.finfo(np.float64).eps
    assert relative_tail(K32, 1) < EPS32
    f = separate(K32)
    assert f.precision == "float32"
    assert f.rank == 1 and f.exact
    assert separable_rank(K32) == 1
    assert is_separable(K32)
    # exact at float32 means: reproduces the float32 kernel to float32 rounding
    assert np.all(np.abs(dense_from(f) - K32) <= EPS32 * np.abs(K32).max())


@pytest.mark.parametrize("name", sorted(SEPARABLE))
def test_float32_rounding_of_separable_kernels_is_rank_one_at_float32(name: str) -> None:
    K32 = SEPARABLE[name].astype(np.float32)
    for k in range(K32.ndim):  # numpy reference: every unfolding rank 1 to float32 rounding
        assert unfolding_tail(K32, k, 1) < EPS32
    f = separate(K32)
    assert (f.rank, f.precision) == (1, "float32")
    assert f.exact
    assert f.multilinear_rank == (1,) * K32.ndim
    assert is_separable(K32) and separable_rank(K32) == 1
    assert rel_error(K32, dense_from(f)) == pytest.approx(f.error, rel=1e-6, abs=1e-15)
    assert f.error <= 8 * EPS32


@pytest.mark.parametrize("name", sorted(SEPARABLE))
def test_float64_originals_of_separable_kernels_are_rank_one_at_float64(name: str) -> None:
    K = SEPARABLE[name]
    f = separate(K)
    assert (f.rank, f.precision) == (1, "float64")
    assert f.exact
    assert rel_error(K, dense_from(f)) < 1e-14


def test_float32_kernel_computed_in_float32_arithmetic_is_rank_one() -> None:
    g = gaussian_1d(1.5, 6).astype(np.float32)
    K = np.multiply.outer(np.multiply.outer(g, g), g)  # float32 products: two roundings
    assert K.dtype == np.float32
    assert unfolding_tail(K, 0, 1) > 1e3 * np.finfo(np.float64).eps  # not rank 1 at float64
    assert unfolding_tail(K, 0, 1) < EPS32
    assert rank_lower_bound(K.astype(np.float64)) > 1
    f = separate(K)
    assert (f.rank, f.precision, f.exact) == (1, "float32", True)


def test_float16_kernels_are_judged_at_float16() -> None:
    K16 = SEPARABLE["gaussian 2-D"].astype(np.float16)
    assert relative_tail(K16, 1) < EPS16
    assert relative_tail(K16, 1) > 10 * EPS32  # not rank 1 at float32
    f = separate(K16)
    assert (f.rank, f.precision, f.exact) == (1, "float16", True)
    assert separate(K16, precision=np.float32).rank > 1


def test_integer_and_bool_kernels_are_judged_at_float64() -> None:
    f = separate(np.outer([1, 2, 1], [1, 0, -1]).astype(np.int8))
    assert (f.rank, f.precision) == (1, "float64")
    assert separate(np.eye(3, dtype=bool)).precision == "float64"
    assert separate([[1.0, 2.0], [2.0, 4.0]]).precision == "float64"


# ---------------------------------------------------------------------------------------------
# a float64 kernel with a rank-2 component of 1e-9 is rank 2 at float64, rank 1 at float32
# ---------------------------------------------------------------------------------------------


def perturbed() -> np.ndarray:
    rng = np.random.default_rng(4)
    a, b = gaussian_1d(1.2, 4), gaussian_1d(2.0, 4)
    u, v = rng.standard_normal(9), rng.standard_normal(9)
    K = np.outer(a, b)
    E = np.outer(u, v)
    return K + 1e-9 * np.linalg.norm(K) / np.linalg.norm(E) * E


def test_tiny_rank_two_component_is_rank_two_at_float64_and_rank_one_at_float32() -> None:
    K = perturbed()
    s = np.linalg.svd(K, compute_uv=False)
    assert 0.5e-9 < relative_tail(K, 1) < 1.5e-9  # numpy: the second term, relative 1e-9
    assert relative_tail(K, 2) < 1e-15
    f = separate(K)
    assert (f.rank, f.precision, f.exact) == (2, "float64", True)
    assert not is_separable(K)
    f32 = separate(K, precision=np.float32)
    assert (f32.rank, f32.precision, f32.exact) == (1, "float32", True)
    assert f32.error == pytest.approx(math.sqrt(np.sum(s[1:] ** 2)) / np.linalg.norm(s))
    assert separable_rank(K, precision="float32") == 1
    assert is_separable(K, precision=np.dtype("float32"))
    # the same values stored as float32 are float32 (the perturbation is then mostly rounded)
    assert separate(K.astype(np.float32)).rank == 1


def test_explicit_precision_gives_a_float64_copy_the_plan_of_the_float32_kernel() -> None:
    K32 = SEPARABLE["gaussian 3-D"].astype(np.float32)
    K64 = K32.astype(np.float64)
    assert rank_lower_bound(K64) > 1  # at float64 the float32 rounding is not rank 1
    f = separate(K64, precision=K32.dtype)
    assert (f.rank, f.precision) == (1, "float32")
    assert f.error == separate(K32).error


def test_3d_mode_ranks_and_lower_bound_follow_the_precision() -> None:
    K = np.multiply.outer(perturbed(), gaussian_1d(1.0, 3))
    assert unfolding_tail(K, 0, 1) > 1e-10
    assert separate(K).multilinear_rank == (2, 2, 1)
    assert rank_lower_bound(K) == 2
    f = separate(K, precision=np.float32)
    assert f.multilinear_rank == (1, 1, 1) and f.rank == 1
    assert rank_lower_bound(K, precision=np.float32) == 1


# ---------------------------------------------------------------------------------------------
# tolerance, integer factors, precision argument checks
# ---------------------------------------------------------------------------------------------


def test_exact_tolerance_is_float64_computation_or_two_units_of_the_precision() -> None:
    """A kernel rounded to its dtype is within eps / 2 (relative, Frobenius) of the kernel:
    2 eps leaves a margin of 4 (8 eps let a float16 kernel's 0.5 % rank-2 part pass as
    rounding, and 'auto' then dropped it)."""
    assert exact_tolerance((9, 9)) == pytest.approx(16 * 9 * 9 * np.finfo(float).eps)
    assert exact_tolerance((9, 9), np.float32) == 2 * EPS32
    assert exact_tolerance((5, 5, 5), "float16") == 2 * EPS16
    assert exact_tolerance((9, 9), np.float64) == exact_tolerance((9, 9))


def test_float32_rounding_of_a_scaled_integer_kernel_gets_integer_factors() -> None:
    c = 0.37
    K32 = (c * np.outer([1, 4, 6, 4, 1], [1, 2, 3, 2, 1])).astype(np.float32)
    scaled = K32.astype(np.float64) / float(K32.min())
    assert not np.array_equal(scaled, np.round(scaled))  # not integers exactly
    f = separate(K32)
    assert (f.rank, f.method) == (1, "integer")
    np.testing.assert_array_equal(f.factors[0][0], [1, 4, 6, 4, 1])
    np.testing.assert_array_equal(f.factors[0][1], [1, 2, 3, 2, 1])
    assert f.weights[0] == pytest.approx(c, rel=EPS32)
    assert f.exact


def test_float32_gaussian_does_not_get_integer_factors() -> None:
    f = separate(SEPARABLE["gaussian 2-D"].astype(np.float32))
    assert f.method == "svd"


def test_precision_is_inferred_from_arrays_lists_and_npy_files(tmp_path: Path) -> None:
    assert kernel_precision(np.ones(3, np.float32)) == np.float32
    assert kernel_precision(np.ones(3, np.float16)) == np.float16
    assert kernel_precision(np.ones(3, np.longdouble)) == np.float64
    assert kernel_precision(np.ones(3, np.uint8)) == np.float64
    assert kernel_precision([[1, 2], [3, 4]]) == np.float64
    assert kernel_precision("gaussian:sigma=2") == np.float64
    path = tmp_path / "k.npy"
    np.save(path, SEPARABLE["gaussian 2-D"].astype(np.float32))
    assert kernel_precision(str(path)) == np.float32
    assert kernel_precision(path) == np.float32
    f = separate(str(path))
    assert (f.rank, f.precision) == (1, "float32")


@pytest.mark.parametrize(
    ("precision", "exc", "match"),
    [
        ("float33", TypeError, "precision must be None or a dtype.*'float33'"),
        (3, TypeError, "precision must be None or a dtype.*got 3"),
        (np.complex64, ValueError, "precision must be a real dtype.*got complex64"),
        ("U4", ValueError, "precision must be a real dtype.*got str"),
    ],
)
def test_bad_precision_is_refused(precision: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        separate(np.ones((3, 3)), precision=precision)


# ---------------------------------------------------------------------------------------------
# fixed-rank N-D fits and the per-rank table
# ---------------------------------------------------------------------------------------------


def test_fixed_rank_nd_fit_never_has_more_terms_than_asked_even_out_of_search_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sepconv.factor, "CP_SEARCH_SECONDS", 0.0)
    T = np.random.default_rng(0).standard_normal((4, 4, 4))
    f6 = separate(T, rank=6)
    f8 = separate(T, rank=8)
    assert f6.rank == 6
    assert f8.rank <= 8  # before: the recursive-SVD fallback, 16 terms
    assert f8.error <= f6.error
    assert rel_error(T, dense_from(f8)) == pytest.approx(f8.error, rel=1e-9)


def check_rows(K: np.ndarray, fits: list[sepconv.Factorization]) -> None:
    ranks = [f.rank for f in fits]
    assert ranks == sorted(set(ranks)), ranks  # one row per rank, increasing
    errors = [f.error for f in fits]
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    for f in fits:  # each row's error is the real error of that rank's fit
        assert rel_error(K, dense_from(f)) == pytest.approx(f.error, rel=1e-6, abs=1e-15)
    assert fits[-1].exact and not any(f.exact for f in fits[:-1])


def test_fits_by_rank_rows_are_one_per_rank_with_non_increasing_real_errors() -> None:
    K = np.random.default_rng(3).standard_normal((4, 4, 4)).astype(np.float32)
    fits = fits_by_rank(K)
    check_rows(K, fits)
    assert all(f.precision == "float32" for f in fits)
    assert fits[-1].rank == separate(K).rank
    for f in fits[:-1]:  # the rows are what separate(rank=R) returns
        assert f.error == pytest.approx(separate(K, rank=f.rank).error, rel=1e-12)


def test_fits_by_rank_2d_is_every_svd_truncation() -> None:
    K = np.random.default_rng(5).standard_normal((4, 6))
    fits = fits_by_rank(K)
    assert [f.rank for f in fits] == [1, 2, 3, 4]
    for f in fits:
        assert f.error == pytest.approx(relative_tail(K, f.rank), rel=1e-9, abs=1e-15)


runner = CliRunner()


def analyze_json(*args: str) -> dict:
    result = runner.invoke(app, ["analyze", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def kernel3d_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-D float32 LoG (an exact sum of 3 separable terms in float64) as a .npy file."""
    from scipy import ndimage

    impulse = np.zeros((9, 9, 9))
    impulse[4, 4, 4] = 1.0
    K = ndimage.gaussian_laplace(impulse, 1.0, mode="constant").astype(np.float32)
    path = tmp_path_factory.mktemp("k") / "log3d_f32.npy"
    np.save(path, K)
    return path


def test_analyze_json_of_3d_float32_kernel_is_consistent(kernel3d_f32: Path) -> None:
    K = np.load(kernel3d_f32)
    d = analyze_json(str(kernel3d_f32))
    assert d["precision"] == "float32"
    assert d["exact_tolerance"] == 2 * EPS32
    rows = d["errors"]
    ranks = [r["rank"] for r in rows]
    assert ranks == sorted(set(ranks))
    errors = [r["error"] for r in rows]
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    assert d["rank"] == ranks[-1] == 3
    assert rows[-1]["exact"] and not any(r["exact"] for r in rows[:-1])
    assert rows[-1]["error"] <= 2 * EPS32
    assert d["macs"]["separable"] == sum(K.shape)
    assert d["macs"]["lowrank"] == d["rank"] * sum(K.shape) == rows[-1]["macs"]
    assert d["macs"]["direct"] == K.size
    for r in rows:
        assert r["macs"] == r["rank"] * sum(K.shape)
        assert r["speedup"] == pytest.approx(K.size / r["macs"])
    # each row's error is that of a fit: recompute from the factors analyze_kernel returns
    _, fits = analyze_kernel(str(kernel3d_f32))
    for r, f in zip(rows, fits, strict=True):
        assert f.rank == r["rank"]
        assert rel_error(K, dense_from(f)) == pytest.approx(r["error"], rel=1e-6, abs=1e-15)


def test_analyze_text_of_3d_float32_kernel_has_one_row_per_rank(kernel3d_f32: Path) -> None:
    result = runner.invoke(app, ["analyze", str(kernel3d_f32)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "precision float32" in out
    assert "separable rank 3" in out
    table_rows = [line for line in out.splitlines() if line.startswith("│")]
    first_cells = [line.split("│")[1].strip() for line in table_rows]
    assert first_cells[:3] == ["1", "2", "3"]


def test_analyze_float32_gaussian_npy_is_separable(tmp_path: Path) -> None:
    path = tmp_path / "g.npy"
    np.save(path, SEPARABLE["gaussian 3-D"].astype(np.float32))
    d = analyze_json(str(path))
    assert (d["rank"], d["precision"]) == (1, "float32")
    assert [r["rank"] for r in d["errors"]] == [1]
    assert d["macs"]["lowrank"] == d["macs"]["separable"] == 27
    text = runner.invoke(app, ["analyze", str(path)]).stdout
    assert "separable rank 1" in text and "not separable" not in text


def test_analyze_precision_option_overrides_the_dtype(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    np.save(path, perturbed())
    assert analyze_json(str(path))["rank"] == 2
    d = analyze_json(str(path), "--precision", "float32")
    assert (d["rank"], d["precision"]) == (1, "float32")
    bad = runner.invoke(app, ["analyze", str(path), "--precision", "float8"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        "sepconv: error: --precision must be auto, float16, float32 or float64, got 'float8'"
    ]
