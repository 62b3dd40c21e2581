"""The constant-time box engine (``sepconv.engine.running``) against scipy.ndimage in float64.

References are scipy's ``uniform_filter1d``/``uniform_filter`` (finite data), scipy's
``correlate1d`` with the box weights pass by pass (NaN/Inf: the direct correlation's pattern;
scipy's own running sum would smear a NaN along the rest of the line), and exact window sums
from integer prefix sums over ``np.pad`` (the roundoff cases). Never sepconv's own output.
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest
from scipy import ndimage

from sepconv.engine import running
from sepconv.engine.running import box, box_pass

pytestmark = pytest.mark.engine

#: scipy's mode names (each spelling), and np.pad's name for each rule.
MODES = ["reflect", "grid-mirror", "mirror", "nearest", "wrap", "grid-wrap", "constant"]
MODES += ["grid-constant"]
NP_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


def _data(shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 10).astype(dtype)


def _ref1d(x, size, axis, mode, cval, origin):
    return ndimage.uniform_filter1d(
        x.astype(np.float64), size, axis, mode=mode, cval=cval, origin=origin
    )


def _close(got, ref, rtol=1e-13):
    """Equal to the reference up to ``rtol`` of its largest finite value; non-finite values
    (NaN, +Inf, -Inf) exactly where the reference has them."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
    fin = np.isfinite(ref)
    scale = max(1.0, float(np.abs(ref[fin]).max())) if fin.any() else 1.0
    err = float(np.abs(got[fin] - ref[fin]).max()) if fin.any() else 0.0
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol * scale:.3g}"


# ----------------------------------------------------------------------------------------------
# box_pass: every mode, origin, size (1, 2, even, longer than the axis), axis, dimension
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_box_pass_matches_scipy_for_every_size_origin_and_axis(mode: str) -> None:
    x = _data((6, 9, 11), seed=1)
    for axis in range(3):
        n = x.shape[axis]
        for size in (1, 2, 3, 4, 7, n - 1, n, n + 1, 2 * n + 3, 5 * n + 2):
            for origin in sorted({-(size // 2), 0, (size - 1) // 2}):
                ref = _ref1d(x, size, axis, mode, 2.5, origin)
                got = box_pass(x, axis, size, origin, mode, 2.5)
                _close(got, ref)


def _fsum_ref(x, size, axis, mode, cval, origin):
    """Correctly rounded window sums (``math.fsum`` over ``np.pad``'s extension) / size."""
    left = size // 2 + origin
    pad = [(0, 0)] * x.ndim
    pad[axis] = (left, size - 1 - left)
    if mode == "constant":
        padded = np.pad(x.astype(np.float64), pad, mode="constant", constant_values=cval)
    else:
        padded = np.pad(x.astype(np.float64), pad, mode=NP_PAD[mode])
    padded = np.moveaxis(padded, axis, -1)
    out = np.empty((*padded.shape[:-1], x.shape[axis]))
    for idx in np.ndindex(*padded.shape[:-1]):
        line = padded[idx]
        out[idx] = [math.fsum(line[i : i + size]) / size for i in range(x.shape[axis])]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_box_pass_sizes_far_longer_than_the_axis(mode: str) -> None:
    # windows of many whole periods: each index counted by multiplicity, O(n) to start;
    # exact to about an ulp (scipy's own running sum of 1e5 terms is ~1e-11 off here)
    for n in (1, 2, 5):
        x = _data((3, n), seed=n)
        for size in (997, 10**5 + 3):
            for axis, origin in ((1, 0), (0, size // 2), (1, -(size // 2))):
                ref = _fsum_ref(x, size, axis, mode, -1.5, origin)
                _close(box_pass(x, axis, size, origin, mode, -1.5), ref, 1e-15)
                _close(ref, _ref1d(x, size, axis, mode, -1.5, origin), 1e-9)  # scipy agrees


def test_box_pass_one_dimensional_and_negative_axis() -> None:
    x = _data(50, seed=2)
    for size in (1, 2, 5, 49, 50, 51, 200):
        _close(box_pass(x, -1, size), _ref1d(x, size, -1, "reflect", 0.0, 0))


@pytest.mark.parametrize(
    ("dtype", "out_dtype", "rtol"),
    [
        # the work dtypes of ``_modes.work_dtype`` (each pair is one more compilation)
        (np.float64, np.float64, 1e-13),
        (np.float32, np.float32, 2e-7),
        (np.uint8, np.float32, 2e-7),
        (np.int16, np.float64, 1e-13),
    ],
)
def test_box_pass_reads_each_input_dtype_directly(dtype, out_dtype, rtol) -> None:
    x = _data((40, 37), seed=3, dtype=dtype)  # 40 lines: a full block of lanes and a part
    for axis in (0, 1):
        for size, origin, mode in ((3, 0, "reflect"), (8, -3, "constant"), (45, 2, "wrap")):
            ref = _ref1d(x, size, axis, mode, 7.0, origin)  # x's values exactly, in float64
            got = box_pass(x, axis, size, origin, mode, 7.0, dtype=out_dtype)
            assert got.dtype == out_dtype
            _close(got, ref, rtol)
    assert box_pass(x, 0, 3).dtype == (np.float64 if x.dtype.kind != "f" else x.dtype)


def test_box_pass_writes_into_out() -> None:
    x = _data((20, 30), seed=4)
    out = np.full((20, 30), np.nan, dtype=np.float32)
    assert box_pass(x, 1, 5, out=out) is out
    _close(out, _ref1d(x, 5, 1, "reflect", 0.0, 0), 2e-7)


def test_box_pass_long_lines() -> None:
    # lines longer than the block buffer: one state per (line, chunk) in registers
    n = running.FUSE_MAX_WIDTH + 37
    x = _data((2, n), seed=5)
    for size, mode in ((3, "reflect"), (1000, "mirror"), (2 * n + 1, "wrap"), (77, "constant")):
        _close(box_pass(x, 1, size, 1, mode, 3.0), _ref1d(x, size, 1, mode, 3.0, 1))


def test_box_pass_outer_axis_with_wide_rows_and_chunks(monkeypatch) -> None:
    # rows wider than a tile (several tiles) and the axis cut into chunks, each started by
    # its own first window
    x = _data((130, 2 * running._TILE + 5), seed=6, dtype=np.float32)
    monkeypatch.setattr(running, "_chunks", lambda n, units, nthreads: 7)
    for size, origin, mode in ((3, 1, "nearest"), (17, -8, "mirror"), (300, 0, "reflect")):
        ref = _ref1d(x, size, 0, mode, 0.0, origin)
        _close(box_pass(x, 0, size, origin, mode), ref, 2e-7)
    x = _data((2, 150, 40), seed=7)  # the fused pair in chunks too
    ref = ndimage.uniform_filter(x, (1, 9, 4), mode="wrap")
    _close(box(x, [9, 4], [1, 2], None, "wrap"), ref)


# ----------------------------------------------------------------------------------------------
# box: passes over several axes, the last two fused, the constant-mode cval carried
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_box_matches_uniform_filter_2d(mode: str) -> None:
    x = _data((45, 38), seed=8)
    for sizes, origins in (
        ([3, 3], [0, 0]),
        ([4, 7], [-2, 3]),
        ([1, 5], [0, 0]),
        ([60, 2], [0, 0]),
    ):
        ref = ndimage.uniform_filter(x, sizes, mode=mode, cval=1.25, origin=origins)
        _close(box(x, sizes, [0, 1], origins, mode, 1.25), ref)


@pytest.mark.parametrize("axes", [(0, 1, 2), (1, 2), (0, 2), (0, 1), (2,), (1,), (0,), (2, 0, 1)])
def test_box_matches_uniform_filter_3d_every_axis_set(axes) -> None:
    x = _data((9, 12, 35), seed=9, dtype=np.float32)
    sizes = [3, 4, 5][: len(axes)]
    origins = [0, -1, 2][: len(axes)]
    modes = ["constant", "wrap", "mirror"][: len(axes)]
    ref = ndimage.uniform_filter(
        x.astype(np.float64), sizes, mode=modes, cval=-2.0, origin=origins, axes=axes
    )
    _close(box(x, sizes, axes, origins, modes, -2.0), ref, 4e-7)


def test_box_integer_input_and_out() -> None:
    x = _data((33, 50), seed=10, dtype=np.uint8)
    out = np.empty(x.shape, np.float32)
    ref = ndimage.uniform_filter(x.astype(np.float64), (5, 6), mode="nearest")
    assert box(x, [5, 6], [0, 1], None, "nearest", out=out) is out
    _close(out, ref, 2e-7)
    x = _data((4, 33, 50), seed=11, dtype=np.int16)
    ref = ndimage.uniform_filter(x.astype(np.float64), (2, 5, 6), mode="reflect")
    _close(box(x, [2, 5, 6], [0, 1, 2]), ref, 1e-13)


def test_box_sizes_of_one_copy_the_input() -> None:
    x = _data((5, 6), seed=12, dtype=np.int16)
    got = box(x, [1, 1], [0, 1], dtype=np.float32)
    np.testing.assert_array_equal(got, x.astype(np.float32))


def test_box_wide_last_axis_is_not_fused_and_still_right() -> None:
    x = _data((3, running.FUSE_MAX_WIDTH + 5), seed=13)
    ref = ndimage.uniform_filter(x, (2, 9), mode="wrap")
    _close(box(x, [2, 9], [0, 1], None, "wrap"), ref)


# ----------------------------------------------------------------------------------------------
# NaN and Inf: the direct correlation's pattern, pass by pass
# ----------------------------------------------------------------------------------------------


def _direct_chain(x, sizes, axes, origins, modes, cval):
    """scipy's correlate1d with the box weights, axis by axis (increasing), the cval carried
    as ``cval * sum(weights)`` (the dense correlation's padding)."""
    y = x.astype(np.float64)
    c = cval
    for a, k, o, m in sorted(zip(axes, sizes, origins, modes, strict=True)):
        if k == 1:
            continue
        w = np.full(k, 1.0 / k)
        y = ndimage.correlate1d(y, w, a, mode=m, cval=c, origin=o)
        c = c * float(np.sum(w))
    return y


def _with_nonfinite(shape, seed, dtype=np.float64):
    x = _data(shape, seed, dtype)
    rng = np.random.default_rng(seed + 100)
    flat = x.reshape(-1)
    pos = rng.choice(flat.size, size=6, replace=False)
    flat[pos[:2]] = np.nan
    flat[pos[2:4]] = np.inf
    flat[pos[4:]] = -np.inf
    return x


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_box_pass_nan_inf_pattern_equals_direct_correlation(mode: str) -> None:
    x = _with_nonfinite((37, 41), seed=14)
    for axis in (0, 1):
        for size, origin in ((1, 0), (2, 0), (3, 1), (10, -5), (41, 0), (100, 3)):
            ref = _direct_chain(x, [size], [axis], [origin], [mode], 0.5)
            _close(box_pass(x, axis, size, origin, mode, 0.5), ref)


def test_box_pass_infinity_entering_and_leaving_leaves_no_nan_behind() -> None:
    x = np.ones(30)
    x[3] = np.inf
    x[20] = np.nan
    got = box_pass(x, 0, 3)
    ref = ndimage.correlate1d(x, np.full(3, 1 / 3))
    _close(got, ref)
    assert np.isfinite(got[5:19]).all() and np.isfinite(got[22:]).all()


def test_box_nan_inf_pattern_2d_3d_and_long_lines() -> None:
    x = _with_nonfinite((40, 70), seed=15, dtype=np.float32)
    for sizes, modes in (([3, 5], ["reflect", "constant"]), ([50, 2], ["wrap", "nearest"])):
        ref = _direct_chain(x, sizes, [0, 1], [0, 0], modes, 1.0)
        _close(box(x, sizes, [0, 1], None, modes, 1.0), ref, 4e-7)
    x = _with_nonfinite((5, 6, 40), seed=16)
    ref = _direct_chain(x, [2, 3, 4], [0, 1, 2], [0, 1, -2], ["mirror"] * 3, 0.0)
    _close(box(x, [2, 3, 4], [0, 1, 2], [0, 1, -2], "mirror"), ref)
    x = _with_nonfinite((1, running.FUSE_MAX_WIDTH + 10), seed=17)
    _close(box_pass(x, 1, 25, 0, "reflect"), _direct_chain(x, [25], [1], [0], ["reflect"], 0.0))


@pytest.mark.parametrize("cval", [np.nan, np.inf, -np.inf])
def test_box_nonfinite_cval(cval: float) -> None:
    x = _data((20, 24), seed=18)
    for sizes in ([3, 4], [30, 1], [2, 50]):
        ref = _direct_chain(x, sizes, [0, 1], [0, 0], ["constant"] * 2, cval)
        _close(box(x, sizes, [0, 1], None, "constant", cval), ref)
    ref = _direct_chain(x, [5], [1], [2], ["constant"], cval)
    _close(box_pass(x, 1, 5, 2, "constant", cval), ref)


def test_box_pass_overflowing_sums_fall_back_to_the_direct_engine() -> None:
    # 1.5e308 * 3 overflows a running sum; the direct correlation scales each term first
    x = np.full((3, 40), 1.5e308)
    x[1, 7] = -1.7e308
    for axis in (0, 1):
        ref = ndimage.correlate1d(x, np.full(3, 1 / 3), axis)
        _close(box_pass(x, axis, 3, 0), ref, 1e-13)
    _close(box(x, [3, 3], [0, 1]), _direct_chain(x, [3, 3], [0, 1], [0, 0], ["reflect"] * 2, 0.0))


# ----------------------------------------------------------------------------------------------
# accuracy: compensated sums against exact window sums
# ----------------------------------------------------------------------------------------------


def _exact_means(x, size, mode):
    """Correctly rounded means of every window (centred), from exact integer prefix sums:
    each float of the padded line is ``m * 2**e`` with an integer ``m`` of 53 bits, so all
    are integers times ``2**emin``; Python's int division rounds correctly."""
    half = size // 2
    padded = np.pad(x, (half, size - 1 - half), mode=NP_PAD[mode])
    m, e = np.frexp(padded)
    emin = int(e.min()) - 53
    ints = [int(mm * 2.0**53) << (int(ee) - 53 - emin) for mm, ee in zip(m, e, strict=True)]
    prefix = [0, *itertools.accumulate(ints)]
    scale = size * 2**-emin if emin < 0 else size
    mult = 2**emin if emin >= 0 else 1
    return np.array([(prefix[i + size] - prefix[i]) * mult / scale for i in range(len(x))])


def _ulps(got, exact):
    return np.abs(got - exact) / np.spacing(np.abs(exact))


@pytest.mark.parametrize("mode", ["reflect", "wrap"])
def test_box_pass_stays_within_an_ulp_or_so_of_exact_means(mode: str) -> None:
    # measured: at most 1 ulp (scipy's running sum: up to 1.5e5 ulp after the spike; a
    # direct sum of 10001 terms: about 60 ulp)
    rng = np.random.default_rng(19)
    x = rng.uniform(0, 1e6, 4096)
    spike = x.copy()
    spike[1000] = 1e10
    for line in (x, spike):
        for size in (3, 4, 101, 1000, 4095, 4096, 4097, 10001):
            exact = _exact_means(line, size, mode)
            got = box_pass(np.stack([line, line[::-1]]), 1, size, 0, mode)  # last axis
            assert _ulps(got[0], exact).max() <= 1.5, size
            assert _ulps(got[1, ::-1], _exact_means(line[::-1], size, mode)[::-1]).max() <= 1.5
            cols = np.repeat(line[:, None], 3, axis=1)  # the outer-axis kernel too
            assert _ulps(box_pass(cols, 0, size, 0, mode)[:, 1], exact).max() <= 1.5


def test_uniform_filter1d_roundoff_errors_scipy_gh6930() -> None:
    # scipy's test_uniform_filter1d_roundoff_errors: every mean is exactly count / size
    x = np.repeat([0, 1, 0], [9, 9, 9]).astype(np.uint8)
    for size in range(3, 10):
        got = box_pass(x, 0, size)
        counts = ndimage.correlate1d(x.astype(np.int64), np.ones(size, np.int64))
        np.testing.assert_array_equal(got, counts / size)
        assert np.trunc(got).sum() == 10 - size


def test_running_sums_do_not_drift_after_a_spike() -> None:
    # a 1e10 value enters and leaves: every later mean is exact again (a plain running
    # sum keeps ~1e-6 of the spike's rounding error in all of them)
    x = np.ones((2, 3000))
    x[:, 10] = 1e10
    got = box_pass(x, 1, 7)
    assert np.all(got[:, 14:] == 1.0)
    got = box(np.ascontiguousarray(x.T), [7, 1], [0, 1])
    assert np.all(got[14:] == 1.0)


# ----------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------


def test_bad_arguments_are_refused_with_their_name() -> None:
    x = np.zeros((4, 5))
    with pytest.raises(ValueError, match="C-contiguous"):
        box_pass(x.T, 0, 3)
    with pytest.raises(TypeError, match="dtype"):
        box_pass(x.astype(np.complex128), 0, 3)
    with pytest.raises(TypeError, match="dtype"):
        box_pass(x, 0, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="size"):
        box_pass(x, 0, 0)
    with pytest.raises(ValueError, match="origin"):
        box_pass(x, 0, 3, origin=2)
    with pytest.raises(ValueError, match="mode"):
        box_pass(x, 0, 3, mode="edge")
    with pytest.raises(ValueError, match="axis"):
        box_pass(x, 2, 3)
    with pytest.raises(ValueError, match="overlap"):
        box_pass(x, 0, 3, out=x)
    with pytest.raises(ValueError, match="shape"):
        box_pass(x, 0, 3, out=np.zeros((5, 4)))
    with pytest.raises(ValueError, match="repeat"):
        box(x, [3, 3], [0, 0])
    with pytest.raises(ValueError, match="sizes"):
        box(x, [3], [0, 1])


def test_empty_arrays() -> None:
    x = np.zeros((0, 5))
    assert box_pass(x, 1, 3).shape == (0, 5)
    assert box(x, [3, 3], [0, 1]).shape == (0, 5)


def test_one_thread_gives_the_same_results_as_scipy() -> None:
    x = _with_nonfinite((70, 90), seed=20)
    ref = _direct_chain(x, [5, 7], [0, 1], [0, 0], ["mirror"] * 2, 0.0)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _close(box(x, [5, 7], [0, 1], None, "mirror"), ref)
        _close(box_pass(x, 0, 5, 0, "mirror"), _direct_chain(x, [5], [0], [0], ["mirror"], 0.0))
    finally:
        numba.set_num_threads(previous)
