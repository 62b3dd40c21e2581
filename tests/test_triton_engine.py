"""The Triton GPU engine (``sepconv.engine.triton_gpu``) against scipy.ndimage and numpy.

Without a CUDA device the kernels run in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set here before the engine is imported); the interpreter is slow, so
the arrays are small and the fixed tiles are made smaller still where a test needs several
tiles per axis. With a CUDA device the same tests run on the GPU (compiled, fixed tiles), and
the tests marked ``gpu`` run too: autotuning, float32 exactness without TF32, no host sync.

References are independent of sepconv: ``scipy.ndimage.correlate`` of the dense outer-product
kernel in float64 (the exact correlation of the padded input for every mode, cval and kernel
length), closed forms, and numpy rounding (``np.rint``, half to even) for integer outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage

from sepconv.job import Job, dense_job

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated
pytest.importorskip("triton")
tg = pytest.importorskip("sepconv.engine.triton_gpu")

if not tg.interpreted() and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip(
        "sepconv.engine.triton_gpu was imported before this module set TRITON_INTERPRET=1 "
        "and there is no CUDA device (run with TRITON_INTERPRET=1 set)",
        allow_module_level=True,
    )
DEVICE = "cpu" if tg.interpreted() else "cuda"
MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
SCIPY_MODE = {"wrap": "grid-wrap"}  # scipy's 'wrap' is not periodic for long kernels
gpu = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _fixed_tiles(monkeypatch):
    """Fixed tiles (no autotuning: one compile per case on a GPU) unless a test turns it on."""
    monkeypatch.setattr(tg, "AUTOTUNE", False)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 x 8 (fused: BWE 16): small arrays span several tiles along both axes."""
    small = {"rows": (4, 8), "last": (4, 8), "fused": (4, 16), "direct": (4, 8)}
    monkeypatch.setattr(tg, "FIXED_TILES", small)
    monkeypatch.setattr(tg, "GPU_TILES", small)


def tensor(a, dtype=None):
    t = torch.tensor(np.asarray(a), device=DEVICE)  # a copy: tests may write into it
    return t if dtype is None else t.to(dtype)


def f64(t):
    return t.detach().cpu().to(torch.float64).numpy()


def reference(x, terms, modes, cval):
    """sum_r weight_r * scipy.ndimage.correlate(x, outer product of term r's passes), float64.

    One mode for all axes (scipy's dense correlate takes one); for mixed modes, passes one by
    one with correlate1d (exact when no constant-mode cval is carried)."""
    x = np.asarray(x, dtype=np.float64)
    total = np.zeros_like(x)
    used = {modes[a] for _, passes in terms for a, _, _ in passes}
    for weight, passes in terms:
        if len(used) == 1:
            (mode,) = used
            K = np.ones([1] * x.ndim)
            origin = [0] * x.ndim
            for axis, w, o in passes:
                shape = [1] * x.ndim
                shape[axis] = len(w)
                K = K * np.asarray(w, dtype=np.float64).reshape(shape)
                origin[axis] = o
            r = ndimage.correlate(x, K, mode=SCIPY_MODE.get(mode, mode), cval=cval, origin=origin)
        else:
            r = x
            for axis, w, o in passes:
                mode = SCIPY_MODE.get(modes[axis], modes[axis])
                r = ndimage.correlate1d(r, w, axis, mode=mode, cval=cval, origin=o)
        total += weight * r
    return total


def assert_close(got, ref, rtol):
    got = f64(got)
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(got - ref).max())
    assert diff <= rtol * scale, f"max abs diff {diff:.3g} > {rtol * scale:.3g}"


RNG = np.random.default_rng(1234)
W4 = RNG.standard_normal(4)
W5 = RNG.standard_normal(5)
W3S = np.array([0.25, 0.5, 0.25])  # symmetric: folded tap pairs
W5A = np.array([-1.0, -2.0, 0.0, 2.0, 1.0])  # antisymmetric: folded with a subtraction


# ----------------------------------------------------------------------------------------------
# border modes, origins, even kernels, fused and two-pass execution
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "two-pass"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_with_even_kernels_and_extreme_origins_matches_scipy(mode, fuse, small_tiles):
    x = RNG.standard_normal((9, 21))
    # even kernel at its lowest origin along rows, odd kernel at its highest along columns
    terms = [(1.0, [(0, W4, -2), (1, W5, 2)])]
    got = tg.separable(tensor(x), Job(terms, {0: mode, 1: mode}, 1.5), fuse=fuse)
    assert got.dtype == torch.float64
    assert_close(got, reference(x, terms, {0: mode, 1: mode}, 1.5), 1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_symmetric_and_antisymmetric_folding_matches_scipy(mode):
    x = RNG.standard_normal((6, 11))
    terms = [(1.0, [(0, W5A, 1), (1, W3S, 0)])]
    got = tg.separable(tensor(x), Job(terms, {0: mode, 1: mode}, -0.75))
    assert_close(got, reference(x, terms, {0: mode, 1: mode}, -0.75), 1e-12)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "two-pass"])
@pytest.mark.parametrize("mode", MODES)
def test_kernels_longer_than_the_axis_match_scipy(mode, fuse):
    # 3 x 5 input, kernels of 9 and 13 taps: several reflections / wraps per side, read from
    # the extension table; a length-1 axis reduces every non-constant mode to one sample
    x = RNG.standard_normal((3, 5))
    w9, w13 = RNG.standard_normal(9), RNG.standard_normal(13)
    terms = [(1.0, [(0, w9, 3), (1, w13, -5)])]
    got = tg.separable(tensor(x), Job(terms, {0: mode, 1: mode}, 2.0), fuse=fuse)
    assert_close(got, reference(x, terms, {0: mode, 1: mode}, 2.0), 1e-12)
    x1 = RNG.standard_normal((1, 4))
    terms1 = [(1.0, [(0, W4, 1), (1, w9, 0)])]
    got1 = tg.separable(tensor(x1), Job(terms1, {0: mode, 1: mode}, 2.0), fuse=fuse)
    assert_close(got1, reference(x1, terms1, {0: mode, 1: mode}, 2.0), 1e-12)


@pytest.mark.parametrize("int64_index", [False, True], ids=["int32-index", "int64-index"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "two-pass"])
def test_many_tiles_and_int64_indexing_match_scipy(fuse, int64_index, small_tiles, monkeypatch):
    # 2 x 13 x 45 with 4 x 8 tiles (fused: 4 x 16, 14 outputs wide): many tiles along every
    # axis; the int64-index variant forces the index arithmetic of arrays over 2**30 elements
    if int64_index:
        monkeypatch.setattr(tg, "_I64_ABOVE", -1)
    x = RNG.standard_normal((2, 13, 45))
    modes = {0: "mirror", 1: "constant", 2: "reflect"}
    terms = [(1.0, [(0, W3S, 0), (1, W3S[:2] * 3, -1), (2, W5, 1)])]
    ref = reference(x, terms, modes, 0.0)  # mixed modes: scipy pass by pass (cval 0)
    got = tg.separable(tensor(x), Job(terms, modes, 0.0), fuse=fuse)
    assert_close(got, ref, 1e-12)


@pytest.mark.skipif(not tg.interpreted(), reason="runs chosen programs of the interpreter")
def test_the_last_programs_of_a_view_with_over_2_31_rows_write_their_rows_only() -> None:
    """The tile row index of ``_last_kernel`` is widened to int64 before it can pass 2**31.
    Before: with more than 2**31 - BR rows the last programs' rows wrapped negative, passed
    the mask, and wrote 2 GiB before the tensor while their own rows stayed unprocessed. Only
    the last 4 programs run (the interpreter's grid index offset): 4 GiB of memory, seconds."""
    import triton
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    rows = 2**31 + 40  # an (R, 1) uint8 view
    try:
        buf = torch.ones(2**31 + rows, dtype=torch.uint8)
    except RuntimeError:  # pragma: no cover - not enough memory
        pytest.skip("needs 4 GiB of memory")
    x = buf[2**31 :]
    assert x.numel() > tg._I64_ABOVE  # the engine's int64 path
    launcher = tg._Launcher(x.device, torch.float32)
    head = tg._header(launcher.npct, 0.0, 1.0, torch.uint8)
    consts = launcher.consts(np.concatenate([head, np.array([2.0], np.float32)]))
    code, ilo, ihi = tg._out_kind(torch.uint8)
    br, bm = tg.FIXED_TILES["last"]
    programs = triton.cdiv(rows, br) * triton.cdiv(1, bm)
    first = programs - 4
    set_idx, set_dim = builder.set_grid_idx, builder.set_grid_dim
    try:
        builder.set_grid_dim = lambda a, b, c: set_dim(programs, b, c)
        builder.set_grid_idx = lambda a, b, c: set_idx(a + first, b, c)
        tg._last_kernel[(4,)](x, consts, consts, consts, x, rows, 1, 0, 0, K=1, MODE=1, SYM=0,
                              HAS_ADD=False, OUT=code, ILO=ilo, IHI=ihi, I64=True, BR=br,
                              BM=bm)  # fmt: skip
    finally:
        builder.set_grid_idx, builder.set_grid_dim = set_idx, set_dim
    assert bool((x[first * br :] == 2).all())  # out = 2 * x on the last programs' rows
    assert bool((buf[:4096] == 1).all())  # nothing written 2 GiB before the tensor
    assert int(x[first * br - 1]) == 1  # rows before them: programs that did not run


def test_mixed_modes_per_axis_match_scipy():
    x = RNG.standard_normal((7, 10))
    modes = {0: "wrap", 1: "mirror"}
    terms = [(1.0, [(0, W4, 1), (1, W5, -1)])]
    assert_close(
        tg.separable(tensor(x), Job(terms, modes, 0.0)), reference(x, terms, modes, 0.0), 1e-12
    )


# ----------------------------------------------------------------------------------------------
# ranks, dimensions, batch axes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_low_rank_terms_accumulate_into_one_output(rank):
    x = RNG.standard_normal((8, 12))
    ws = [(0.5, -1.25, 2.0)[r] for r in range(rank)]
    terms = [(ws[r], [(0, RNG.standard_normal(3 + r), 0), (1, RNG.standard_normal(5 - r), 0)])
             for r in range(rank)]  # fmt: skip
    modes = {0: "constant", 1: "constant"}
    got = tg.separable(tensor(x), Job(terms, modes, 0.5))
    assert_close(got, reference(x, terms, modes, 0.5), 1e-12)


def test_low_rank_into_an_integer_output_rounds_the_sum_once():
    # each term alone is x / 2 (a half-integer for odd x); their sum is x, an integer: rounding
    # per term would give 2 * rint(x / 2) instead
    x = np.arange(1, 25, dtype=np.int16).reshape(4, 6)
    half = np.array([0.5])
    terms = [(1.0, [(0, half, 0), (1, np.ones(1), 0)]), (1.0, [(1, half, 0)])]
    got = tg.separable(tensor(x), Job(terms, {0: "reflect", 1: "reflect"}, 0.0))
    assert got.dtype == torch.int16
    np.testing.assert_array_equal(got.cpu().numpy(), x)


def test_three_d_constant_mode_carries_cval_through_three_passes():
    x = RNG.standard_normal((5, 6, 9))
    modes = dict.fromkeys(range(3), "constant")
    terms = [(1.0, [(2, W5, 0), (0, W4, 1), (1, W3S, 0)])]  # any order: sorted by axis
    got = tg.separable(tensor(x), Job(terms, modes, 3.0))
    assert_close(got, reference(x, terms, modes, 3.0), 1e-12)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((2, 3, 7, 9), (2, 3)),  # batch and channel axes, last two filtered (fused)
        ((2, 5, 3, 4), (1,)),  # a middle axis: outer and inner batch
        ((4, 3, 6), (0, 2)),  # first and last: a row pass and a last-axis pass
        ((2, 3, 4, 5), (0, 1, 2, 3)),  # 4-D, every axis
        ((17,), (0,)),  # 1-D
    ],
)
def test_nd_shapes_with_unfiltered_axes_match_scipy(shape, axes):
    x = RNG.standard_normal(shape)
    ws = [W4, W3S, W5, W5A]
    terms = [(1.0, [(a, ws[i], 0) for i, a in enumerate(axes)])]
    modes = dict.fromkeys(axes, "mirror")
    assert_close(tg.separable(tensor(x), Job(terms, modes, 0.0)), reference(x, terms, modes, 0.0),
                 1e-12)  # fmt: skip


def test_a_term_without_passes_scales_the_input():
    x = RNG.standard_normal((3, 4))
    terms = [(2.5, []), (1.0, [(1, np.array([1.0, 1.0]), 0)])]
    got = tg.separable(tensor(x), Job(terms, {1: "wrap"}, 0.0))
    ref = 2.5 * x + np.roll(x, 1, axis=1) + x  # an even kernel centres on its second tap
    assert_close(got, ref, 1e-14)


def test_empty_and_zero_dimensional_inputs():
    empty = torch.zeros((0, 5), dtype=torch.float32, device=DEVICE)
    got = tg.separable(empty, Job([(1.0, [(1, W3S, 0)])], {1: "reflect"}, 0.0))
    assert got.shape == (0, 5)
    scalar = torch.tensor(3.0, dtype=torch.float64, device=DEVICE)
    assert float(tg.separable(scalar, Job([(2.0, [])], {}, 0.0))) == 6.0


# ----------------------------------------------------------------------------------------------
# dtypes: integer rounding and saturation, bool, float16/bfloat16, float32 vs float64
# ----------------------------------------------------------------------------------------------


def test_uint8_in_and_out_saturates_and_rounds_half_to_even():
    x = np.array([[0, 255, 0, 10, 11, 200, 255, 3]], dtype=np.uint8)
    sharpen = np.array([-1.0, 3.0, -1.0])  # overshoots below 0 and above 255
    halves = np.array([0.5, 0.5])  # x.5 results: ties go to even
    for w in (sharpen, halves):
        terms = [(1.0, [(1, w, 0)])]
        got = tg.separable(tensor(x), Job(terms, {1: "nearest"}, 0.0))
        assert got.dtype == torch.uint8
        exact = reference(x, terms, {1: "nearest"}, 0.0)
        np.testing.assert_array_equal(got.cpu().numpy(), np.clip(np.rint(exact), 0, 255))


@pytest.mark.parametrize(
    ("out_dtype", "lo", "hi"),
    [
        (torch.int32, -(2**31), 2**31 - 1),
        (torch.int64, -(2**63), 2**63 - 1),
        (torch.int16, -32768, 32767),
    ],
)
def test_integer_outputs_saturate_to_the_exact_ends_and_nan_becomes_zero(out_dtype, lo, hi):
    # float32 data: float(2**31 - 1) rounds up to 2**31, which would wrap to -2**31 if cast
    x = np.array([[3e38, -3e38, np.nan, np.inf, -np.inf, 2.5, -2.5, 1e10]], dtype=np.float32)
    got = tg.separable(tensor(x), Job([(1.0, [(1, np.ones(1), 0)])], {1: "reflect"}, 0.0),
                       dtype=out_dtype)  # fmt: skip
    assert got.dtype == out_dtype
    expect = [hi, lo, 0, hi, lo, 2, -2, min(hi, 10**10)]
    assert got.cpu().tolist() == [expect]


@pytest.mark.parametrize("out_dtype", [torch.int64, torch.uint64])
def test_64_bit_outputs_round_half_to_even_between_2_51_and_2_52(out_dtype):
    """Before: truncated above 2**51 (2**51 + 1.5 -> ...249). Reference: numpy's rint."""
    v = np.array([2**51 + 1.5, 2**51 + 2.5, 2**52 - 0.5, 2**50 + 0.5, 7.5, 2.0**53])
    x = np.concatenate([v, -v]) if out_dtype == torch.int64 else v
    job = Job([(1.0, [(0, np.array([0.0, 1.0]), 0)])], {0: "nearest"}, 0.0)
    got = tg.separable(tensor(x), job, dtype=out_dtype).cpu().numpy()
    np.testing.assert_array_equal(got, np.rint(x).astype(got.dtype))


def test_bool_input_and_bool_output():
    mask = np.array([[True, False, True, True, False, False]])
    w = np.array([1.0, 1.0, 1.0]) / 3
    got = tg.separable(tensor(mask), Job([(1.0, [(1, w, 0)])], {1: "constant"}, 0.0),
                       dtype=torch.float32)  # fmt: skip
    assert got.dtype == torch.float32
    ref = reference(mask.astype(float), [(1.0, [(1, w, 0)])], {1: "constant"}, 0.0)
    assert_close(got, ref, 1e-6)
    vote = tg.separable(tensor(mask), Job([(1.0, [(1, w, 0)])], {1: "constant"}, 0.0))
    assert vote.dtype == torch.bool
    np.testing.assert_array_equal(vote.cpu().numpy(), np.rint(ref).astype(bool))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_read_and_written_as_such_with_float32_accumulation(dtype):
    x = tensor(RNG.standard_normal((6, 10)) * 4, dtype)
    xr = f64(x)  # the values actually stored
    terms = [(1.0, [(0, W4, 0), (1, W5, 1)]), (-0.5, [(0, W3S, 0), (1, W5A, 0)])]
    modes = {0: "constant", 1: "constant"}
    got = tg.separable(x, Job(terms, modes, 1.0))
    assert got.dtype == dtype
    ref = reference(xr, terms, modes, 1.0)
    # one rounding of the result to the output type (float32 accumulation is far finer)
    ulp = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
    tol = ulp * np.abs(ref) + 1e-5 * np.abs(ref).max()
    assert np.all(np.abs(f64(got) - ref) <= tol)
    # more than float16/bfloat16 accumulation could give: exact to the last rounding
    exact = torch.from_numpy(ref).to(dtype)
    assert float((got.cpu().to(torch.float64) - exact.to(torch.float64)).abs().max()) <= (
        2 * ulp * np.abs(ref).max()
    )


def test_float64_is_computed_in_float64_and_float32_in_float32():
    base = 1.0 + 1e-9 * RNG.standard_normal((5, 8))
    terms = [(1.0, [(0, W4, 0), (1, W5, 0)])]
    modes = {0: "nearest", 1: "nearest"}
    ref = reference(base, terms, modes, 0.0)
    got64 = tg.separable(tensor(base), Job(terms, modes, 0.0))
    assert float(np.abs(f64(got64) - ref).max()) < 1e-13  # float32 would be ~1e-7 off
    got32 = tg.separable(tensor(base, torch.float32), Job(terms, modes, 0.0))
    assert got32.dtype == torch.float32
    assert_close(got32, reference(f64(tensor(base, torch.float32)), terms, modes, 0.0), 2e-6)
    # float32 data with a float64 result: computed in float64 (scipy's rule)
    got = tg.separable(tensor(base, torch.float32), Job(terms, modes, 0.0), dtype=torch.float64)
    assert got.dtype == torch.float64
    assert_close(got, reference(f64(tensor(base, torch.float32)), terms, modes, 0.0), 1e-13)


def test_compute_dtype_follows_the_numpy_rule():
    cd = tg.compute_dtype
    assert cd(torch.float16) == cd(torch.bfloat16) == cd(torch.uint8) == torch.float32
    assert cd(torch.float32, torch.int16) == torch.float32
    assert cd(torch.float32, torch.int32) == torch.float64
    assert cd(torch.int16) == cd(torch.float64, torch.float32) == torch.float64


# ----------------------------------------------------------------------------------------------
# out=
# ----------------------------------------------------------------------------------------------


def test_out_is_written_in_place_in_any_layout_and_may_be_the_input():
    x = RNG.standard_normal((6, 7)).astype(np.float32)
    terms = [(1.0, [(0, W3S, 0), (1, W4, 0)])]
    modes = {0: "reflect", 1: "wrap"}
    ref = reference(x, terms, modes, 0.0)
    out = torch.full((6, 7), np.nan, dtype=torch.float32, device=DEVICE)
    assert tg.separable(tensor(x), Job(terms, modes, 0.0), out=out) is out
    assert_close(out, ref, 2e-6)
    strided = torch.zeros((7, 6), dtype=torch.float32, device=DEVICE).t()  # not contiguous
    assert tg.separable(tensor(x), Job(terms, modes, 0.0), out=strided) is strided
    assert_close(strided, ref, 2e-6)
    xt = tensor(x)
    assert tg.separable(xt, Job(terms, modes, 0.0), out=xt) is xt  # the input, overwritten
    assert_close(xt, ref, 2e-6)
    as_int = torch.zeros((6, 7), dtype=torch.int16, device=DEVICE)
    tg.separable(tensor(x * 1000), Job(terms, modes, 0.0), out=as_int)
    np.testing.assert_array_equal(as_int.cpu().numpy(), np.rint(1000 * ref))


def test_bad_arguments_raise_errors_naming_them():
    x = tensor(np.zeros((3, 4)))
    terms = [(1.0, [(1, W3S, 0)])]
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        tg.separable(np.zeros((3, 4)), Job(terms, {1: "reflect"}, 0.0))
    with pytest.raises(TypeError, match="complex"):
        tg.separable(x.to(torch.complex64), Job(terms, {1: "reflect"}, 0.0))
    with pytest.raises(ValueError, match="out must have the input's shape"):
        tg.separable(x, Job(terms, {1: "reflect"}, 0.0), out=torch.zeros((4, 3), device=DEVICE))
    with pytest.raises(ValueError, match="differs from out's dtype"):
        tg.separable(
            x, Job(terms, {1: "reflect"}, 0.0), out=torch.zeros_like(x), dtype=torch.float32
        )
    with pytest.raises(ValueError, match="axis must be in"):
        tg.separable(x, Job([(1.0, [(2, W3S, 0)])], {2: "reflect"}, 0.0))
    with pytest.raises(ValueError, match="origin must be between -1 and 1"):
        tg.separable(x, Job([(1.0, [(1, W3S, 2)])], {1: "reflect"}, 0.0))
    with pytest.raises(ValueError, match=r"modes\[1\] must be one of"):
        tg.separable(x, Job(terms, {1: "grid-wrap"}, 0.0))


# ----------------------------------------------------------------------------------------------
# direct (dense kernels)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_direct_2d_with_origins_matches_scipy(mode, small_tiles):
    x = RNG.standard_normal((7, 13))
    K = RNG.standard_normal((3, 4))
    K[1, 2] = 0.0  # zero taps are skipped
    got = tg.direct(tensor(x), dense_job(K, (0, 1), (1, -2), {0: mode, 1: mode}, 1.25, "direct"))
    ref = ndimage.correlate(x, K, mode=SCIPY_MODE.get(mode, mode), cval=1.25, origin=(1, -2))
    assert_close(got, ref, 1e-12)


def test_direct_nd_with_unfiltered_axes_and_integer_output():
    x = RNG.integers(0, 256, (2, 5, 3, 6)).astype(np.uint8)
    K = RNG.integers(-2, 3, (3, 2)).astype(np.float64) / 4
    got = tg.direct(
        tensor(x), dense_job(K, (1, 3), (0, 0), {1: "reflect", 3: "reflect"}, 0.0, "direct")
    )
    assert got.dtype == torch.uint8
    K4 = K.reshape(1, 3, 1, 2)
    ref = ndimage.correlate(x.astype(np.float64), K4, mode="reflect")
    np.testing.assert_array_equal(got.cpu().numpy(), np.clip(np.rint(ref), 0, 255))
    x3 = RNG.standard_normal((4, 5, 6))
    K3 = RNG.standard_normal((2, 3, 3))
    got3 = tg.direct(
        tensor(x3),
        dense_job(K3, (0, 1, 2), (0, 0, -1), dict.fromkeys(range(3), "wrap"), 0.0, "direct"),
    )
    ref3 = ndimage.correlate(x3, K3, mode="grid-wrap", origin=(0, 0, -1))
    assert_close(got3, ref3, 1e-12)


def test_direct_nan_is_read_only_through_non_zero_taps():
    x = np.zeros((5, 5))
    x[2, 2] = np.nan
    K = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    got = f64(
        tg.direct(
            tensor(x), dense_job(K, (0, 1), (0, 0), {0: "reflect", 1: "reflect"}, 0.0, "direct")
        )
    )
    np.testing.assert_array_equal(np.isnan(got), ndimage.correlate(np.isnan(x) * 1.0, K) > 0)


def test_direct_float32_is_exact_to_float32_rounding():
    x = RNG.standard_normal((16, 16)).astype(np.float32)
    K = RNG.standard_normal((7, 7))
    got = tg.direct(
        tensor(x), dense_job(K, (0, 1), (0, 0), {0: "reflect", 1: "reflect"}, 0.0, "direct")
    )
    assert got.dtype == torch.float32
    ref = ndimage.correlate(x.astype(np.float64), K.astype(np.float32).astype(np.float64))
    assert_close(got, ref, 2e-6)  # TF32 (10-bit mantissa) would be ~1e-3 off


# ----------------------------------------------------------------------------------------------
# packaging
# ----------------------------------------------------------------------------------------------


def test_import_sepconv_imports_neither_torch_nor_triton():
    code = "import sys, sepconv; print([m for m in ('torch', 'triton') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cpu_tensor_without_the_interpreter_is_refused_with_a_clear_error():
    code = (
        "import torch, numpy as np; from sepconv.engine import triton_gpu as tg\n"
        "from sepconv.job import Job\n"
        "try:\n"
        "    job = Job([(1.0, [(0, np.ones(1), 0)])], {0: 'reflect'}, 0.0)\n"
        "    tg.separable(torch.zeros(3), job)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    assert "must be a CUDA tensor" in out.stdout and "TRITON_INTERPRET=1" in out.stdout


# ----------------------------------------------------------------------------------------------
# GPU only
# ----------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA device (not interpreted)")


@gpu
@needs_cuda
def test_gpu_autotuned_fused_and_two_pass_match_scipy(monkeypatch):
    monkeypatch.setattr(tg, "AUTOTUNE", True)
    x = RNG.standard_normal((301, 517)).astype(np.float32)
    k = 25
    w = np.exp(-0.5 * ((np.arange(k) - k // 2) / (k / 6)) ** 2)
    w /= w.sum()
    # rank 2: the second term accumulates in place, which autotuning must not repeat
    terms = [(1.0, [(0, w, 0), (1, w, 0)]), (-0.5, [(0, W5A, 0), (1, W4, 1)])]
    modes = {0: "reflect", 1: "constant"}  # mixed modes: the reference runs pass by pass,
    ref = reference(x, terms, modes, 0.0)  # exact for cval = 0 only
    for fuse in (True, False):
        assert_close(tg.separable(tensor(x), Job(terms, modes, 0.0), fuse=fuse), ref, 2e-6)


@gpu
@needs_cuda
def test_gpu_float32_is_float32_exact_even_with_tf32_enabled(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    x = RNG.standard_normal((64, 96)).astype(np.float32)
    K = RNG.standard_normal((7, 7))
    got = tg.direct(
        tensor(x), dense_job(K, (0, 1), (0, 0), {0: "reflect", 1: "reflect"}, 0.0, "direct")
    )
    ref = ndimage.correlate(x.astype(np.float64), K.astype(np.float32).astype(np.float64))
    assert_close(got, ref, 2e-6)


@gpu
@needs_cuda
def test_gpu_repeated_calls_do_not_synchronise_with_the_host():
    x = torch.randn(2, 3, 64, 80, device="cuda")
    terms = [(1.0, [(2, W5, 0), (3, W3S, 0)])]
    modes = {2: "reflect", 3: "reflect"}
    tg.separable(x, Job(terms, modes, 0.0))  # constants uploaded and kernels compiled
    torch.cuda.synchronize()
    with warnings.catch_warnings():  # "a prototype feature" UserWarning
        warnings.simplefilter("ignore", UserWarning)
        try:
            torch.cuda.set_sync_debug_mode("error")
            tg.separable(x, Job(terms, modes, 0.0))
        finally:
            torch.cuda.set_sync_debug_mode("default")


@gpu
@needs_cuda
def test_gpu_integer_rounding_is_half_to_even_on_the_device():
    x = tensor(np.arange(-8, 9, dtype=np.int32).reshape(1, -1))
    got = tg.separable(x, Job([(1.0, [(1, np.array([0.5]), 0)])], {1: "reflect"}, 0.0))
    np.testing.assert_array_equal(got.cpu().numpy(), np.rint(np.arange(-8, 9) / 2)[None])


# ---------------------------------------------------------------------------------------------
# the torch backend on the Triton engine (CUDA tensors; here CPU tensors in the interpreter)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def triton_backend(monkeypatch):
    """Route torch tensors to the Triton engine (CUDA tensors always are)."""
    monkeypatch.setenv("SEPCONV_TORCH_ENGINE", "triton")
    from sepconv.backends import torch as torch_backend

    assert torch_backend.gpu_engine(tensor(np.zeros(3))) is tg
    return torch_backend


@pytest.mark.parametrize("mode", MODES)
def test_backend_runs_named_filters_on_the_triton_engine(triton_backend, mode) -> None:
    import sepconv

    x = np.random.default_rng(0).standard_normal((9, 11))
    for name, args in (("gaussian_filter", (1.2,)), ("sobel", (0,)), ("uniform_filter", (4,))):
        ref = getattr(ndimage, name)(x, *args, mode=mode)
        got = getattr(sepconv, name)(tensor(x), *args, mode=mode).cpu().numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, err_msg=name)


def test_backend_on_triton_keeps_nan_semantics_ranks_and_integer_outputs(triton_backend) -> None:
    import sepconv

    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 12))
    x[2, 3] = np.nan
    K = rng.standard_normal((3, 5))
    K[1] = 0  # a zero row: NaN is not read through it (scipy's correlate)
    for method in ("lowrank", "direct"):
        got = sepconv.correlate(tensor(x), K, method=method).cpu().numpy()
        ref = ndimage.correlate(x, K)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=0, atol=1e-12)
    u8 = rng.integers(0, 256, (8, 9)).astype(np.uint8)
    got = sepconv.gaussian_filter(tensor(u8), 1.0).cpu().numpy()
    ref = np.clip(np.rint(ndimage.gaussian_filter(u8.astype(np.float64), 1.0)), 0, 255)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - ref).max() <= 1
    mag = sepconv.gaussian_gradient_magnitude(tensor(x[:, 5:]), 1.0).cpu().numpy()
    np.testing.assert_allclose(mag, ndimage.gaussian_gradient_magnitude(x[:, 5:], 1.0), atol=1e-12)


@pytest.mark.parametrize("cval", [np.inf, -np.inf, np.nan])
def test_backend_on_triton_reads_a_non_finite_cval_through_each_tap(triton_backend, cval) -> None:
    """The cval the fused kernel pads its second pass with is ``job.carry``: inf read through
    taps of both signs is NaN, as in the dense correlation (scipy's N-D correlate)."""
    import sepconv
    from sepconv.kernels import gaussian1d

    x = np.random.default_rng(3).random((9, 10))
    for order in ((1, 0), (0, 1), (2, 1)):
        K = np.outer(gaussian1d(1.2, order=order[0]), gaussian1d(1.2, order=order[1]))
        ref = ndimage.correlate(x, K, mode="constant", cval=cval)
        with np.errstate(invalid="ignore"):  # the interpreter computes in numpy
            got = sepconv.gaussian_filter(tensor(x), 1.2, order, mode="constant", cval=cval)
        got = got.cpu().numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=str(order))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref), err_msg=str(order))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=0, atol=1e-12)


def test_backend_on_triton_float32_near_its_maximum_overflows_only_where_scipy_does(
    triton_backend,
) -> None:
    """A dense kernel's float32 partial sums overflow on data of 1e38-2e38 where scipy's
    float64 sums do not: the call is computed again in float64 and rounded once."""
    import sepconv

    rng = np.random.default_rng(7)
    x = ((rng.random((9, 10)) * 0.5 + 0.5) * 2e38).astype(np.float32)
    K = rng.standard_normal((3, 3))
    with np.errstate(over="ignore"):
        want = ndimage.correlate(x.astype(np.float64), K).astype(np.float32)
    for method in ("direct", "lowrank"):
        with np.errstate(over="ignore"):  # the interpreter computes in numpy: it warns
            got = sepconv.correlate(tensor(x), K, method=method).cpu().numpy()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=method)
        fin = np.isfinite(want)
        assert fin.sum() > 40  # most results are finite; float32 partial sums overflowed
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6, err_msg=method)


# ---------------------------------------------------------------------------------------------
# gradients on the Triton engine: the adjoint, against scipy's operator transposed
# ---------------------------------------------------------------------------------------------


def operator(f, shape):
    """The matrix of the affine map ``f`` (a scipy.ndimage call) on arrays of ``shape``, and its
    offset ``f(0)``: column ``i`` is ``f(e_i) - f(0)``."""
    n = int(np.prod(shape))
    offset = f(np.zeros(shape)).ravel()
    cols = [f(np.eye(n)[i].reshape(shape)).ravel() - offset for i in range(n)]
    return np.stack(cols, axis=1), offset


@pytest.fixture
def no_torch_convs(monkeypatch):
    """The torch path's convolutions fail if called: forward and backward stay on the engine."""
    import torch.nn.functional as F

    def refuse(*args, **kwargs):
        raise AssertionError("a torch convolution ran: the Triton engine should have")

    for name in ("conv1d", "conv2d", "conv3d"):
        monkeypatch.setattr(F, name, refuse)


def how(m, method):
    """``method=`` for sepconv's correlate (scipy's has none)."""
    return {} if m is ndimage else {"method": method}


K34 = np.arange(12.0).reshape(3, 4) % 5 - 2  # rank 2

GRADIENT_CASES = {
    "gaussian reflect": (
        (5, 7),
        lambda m, x: m.gaussian_filter(x, 1.0, mode="reflect"),
    ),
    "gaussian constant cval": (
        (5, 7),
        lambda m, x: m.gaussian_filter(x, 0.8, mode="constant", cval=0.7),
    ),
    "sobel mirror": ((6, 5), lambda m, x: m.sobel(x, axis=0, mode="mirror")),
    "uniform nearest origin": (
        (5, 6),
        lambda m, x: m.uniform_filter(x, (3, 4), mode="nearest", origin=(1, -1)),
    ),
    "uniform1d wrap longer than the axis": (
        (4, 5),
        lambda m, x: m.uniform_filter1d(x, 9, axis=1, mode="wrap"),
    ),
    "correlate1d reflect longer than the axis": (
        (4, 3),
        lambda m, x: m.correlate1d(x, np.arange(1.0, 8.0), axis=0, mode="reflect"),
    ),
    "correlate lowrank wrap origin": (
        (5, 6),
        lambda m, x: m.correlate(x, K34, mode="wrap", origin=(1, -1), **how(m, "lowrank")),
    ),
    "correlate direct mirror origin": (
        (5, 6),
        lambda m, x: m.correlate(x, K34.T, mode="mirror", origin=(0, 1), **how(m, "direct")),
    ),
    "gaussian 3-D nearest": ((3, 4, 5), lambda m, x: m.gaussian_filter(x, 0.7, mode="nearest")),
    "4-D axes (1, 3), a mode per axis": (
        (2, 4, 2, 5),
        lambda m, x: m.uniform_filter(x, (3, 2), mode=["wrap", "constant"], cval=1.5, axes=(1, 3)),
    ),
    "even kernel, origin -1, mirror far longer than the axis": (
        (3, 4),
        lambda m, x: m.correlate1d(x, np.arange(1.0, 11.0) % 4, axis=1, mode="mirror", origin=-1),
    ),
    "direct 3-D kernel with zero taps, constant": (
        (3, 4, 4),
        lambda m, x: m.correlate(
            x,
            np.eye(3)[:, :, None] * [1.0, 0.0, -2.0],
            mode="constant",
            cval=-1.0,
            **how(m, "direct"),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradients_are_the_adjoint_on_the_engine(triton_backend, no_torch_convs, name) -> None:
    """d/dx sum(f(x) * g) = A^T g, A the matrix of scipy's filter: the backward runs on the
    Triton engine (no torch convolution is called) and is exact to float64 rounding."""
    import sepconv

    shape, f = GRADIENT_CASES[name]
    rng = np.random.default_rng(5)
    x0, g = rng.standard_normal(shape), rng.standard_normal(shape)
    A, offset = operator(lambda a: f(ndimage, a), shape)
    x = tensor(x0).requires_grad_(True)
    y = f(sepconv, x)
    np.testing.assert_allclose(f64(y).ravel(), A @ x0.ravel() + offset, rtol=0, atol=1e-12)
    (y * tensor(g)).sum().backward()
    np.testing.assert_allclose(f64(x.grad).ravel(), A.T @ g.ravel(), rtol=0, atol=1e-12)


def test_second_derivatives_on_the_engine(triton_backend, no_torch_convs) -> None:
    """grad of <grad(|f(x)|^2), v> is 2 A^T A v: the backward is itself differentiable."""
    import sepconv

    shape = (5, 6)

    def f(m, a):
        return m.correlate(a, [[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], mode="reflect", origin=(0, 1))

    A, _ = operator(lambda a: f(ndimage, a), shape)
    rng = np.random.default_rng(6)
    x = tensor(rng.standard_normal(shape)).requires_grad_(True)
    v = rng.standard_normal(shape)
    (gx,) = torch.autograd.grad((f(sepconv, x) ** 2).sum(), x, create_graph=True)
    (gx * tensor(v)).sum().backward()
    np.testing.assert_allclose(f64(x.grad).ravel(), 2 * A.T @ A @ v.ravel(), rtol=0, atol=1e-11)


def test_gradient_magnitude_gradient_on_the_engine(triton_backend, no_torch_convs) -> None:
    """The hypot of two derivative filters: the chain rule through scipy's operators."""
    import sepconv

    shape = (6, 5)
    rng = np.random.default_rng(7)
    x0, g = rng.standard_normal(shape), rng.standard_normal(shape)
    ops = [
        operator(lambda a, d=d: ndimage.gaussian_filter(a, 1.0, order=d), shape)[0]
        for d in ((1, 0), (0, 1))
    ]
    parts = [A @ x0.ravel() for A in ops]
    mag = np.hypot(*parts)
    expected = sum(A.T @ (p / mag * g.ravel()) for A, p in zip(ops, parts, strict=True))
    x = tensor(x0).requires_grad_(True)
    (sepconv.gaussian_gradient_magnitude(x, 1.0) * tensor(g)).sum().backward()
    np.testing.assert_allclose(f64(x.grad).ravel(), expected, rtol=0, atol=1e-11)


def test_float32_gradients_on_the_engine(triton_backend, no_torch_convs) -> None:
    import sepconv

    shape = (6, 7)
    A, _ = operator(lambda a: ndimage.gaussian_filter(a, 1.5, mode="wrap"), shape)
    rng = np.random.default_rng(8)
    g = rng.standard_normal(shape)
    x = tensor(rng.standard_normal(shape), torch.float32).requires_grad_(True)
    y = sepconv.gaussian_filter(x, 1.5, mode="wrap")
    (y * tensor(g, torch.float32)).sum().backward()
    assert x.grad.dtype == torch.float32
    ref = A.T @ g.astype(np.float32).astype(np.float64).ravel()
    assert_close_rel = np.abs(f64(x.grad).ravel() - ref).max() / np.abs(ref).max()
    assert assert_close_rel < 2e-6
