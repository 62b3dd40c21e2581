"""Dask execution: lazy, chunked, and identical to the in-memory filters.

The oracle is the in-memory numpy API (itself tested against scipy.ndimage): for every mode,
origin, kernel length, chunking (chunks of one element included) and strategy the dask result
must equal it to float rounding.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepconv
from _helpers import MODES, assert_close, rand

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
sdask = pytest.importorskip("sepconv.dask")

pytestmark = pytest.mark.engine

assert_same = assert_close  # relative to max(1, max|ref|), 1e-12 unless told


@st.composite
def chunked_arrays(draw, max_ndim: int = 3):
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = []
    for n in shape:  # random chunk boundaries, chunks of size 1 included
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
        edges = [0, *cuts, n]
        chunks.append(tuple(b - a for a, b in itertools.pairwise(edges)))
    seed = draw(st.integers(0, 2**16))
    return rand(shape, seed), tuple(chunks)


# ----------------------------------------------------------------------------------------------
# the identity property
# ----------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=chunked_arrays(),
    mode=st.sampled_from(MODES),
    klen=st.integers(1, 12),
    cval=st.floats(-3, 3),
    strat=st.sampled_from(["auto", "passes", "fused"]),
    seed=st.integers(0, 1000),
)
def test_correlate1d_identical_to_in_memory_for_any_chunking_mode_and_origin(
    data, mode, klen, cval, strat, seed
):
    x, chunks = data
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(klen)
    axis = int(rng.integers(x.ndim))
    origin = int(rng.integers(-(klen // 2), (klen - 1) // 2 + 1))
    ref = sepconv.correlate1d(x, w, axis=axis, mode=mode, cval=cval, origin=origin)
    with sdask.strategy(strat):
        got = sepconv.correlate1d(
            da.from_array(x, chunks=chunks), w, axis=axis, mode=mode, cval=cval, origin=origin
        )
    assert isinstance(got, da.Array) and got.chunks == chunks
    assert_same(got.compute(), ref)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=chunked_arrays(),
    mode=st.sampled_from(MODES),
    cval=st.floats(-3, 3),
    method=st.sampled_from(["auto", "direct", "lowrank", "fft"]),
    rank=st.integers(1, 2),
    strat=st.sampled_from(["auto", "passes", "fused"]),
    seed=st.integers(0, 1000),
)
def test_correlate_nd_identical_to_in_memory_for_every_method(
    data, mode, cval, method, rank, strat, seed
):
    """Separable and low-rank plans (pass by pass or fused) and dense plans, all modes."""
    x, chunks = data
    rng = np.random.default_rng(seed)
    ks = [int(k) for k in rng.integers(1, 8, size=x.ndim)]
    K = sum(
        np.einsum(
            ",".join("abcdef"[i] for i in range(x.ndim)) + "->" + "abcdef"[: x.ndim],
            *[rng.standard_normal(k) for k in ks],
        )
        for _ in range(rank)
    )
    origin = [int(rng.integers(-(k // 2), (k - 1) // 2 + 1)) for k in ks]
    kw = dict(mode=mode, cval=cval, origin=origin, method=method)
    ref = sepconv.correlate(x, K, **kw)
    with sdask.strategy(strat):
        got = sepconv.correlate(da.from_array(x, chunks=chunks), K, **kw)
    assert_same(got.compute(), ref, tol=1e-11)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=chunked_arrays(),
    mode=st.sampled_from(MODES),
    cval=st.floats(-5, 5),
    sigma=st.floats(0.3, 3.0),
    order=st.integers(0, 2),
    strat=st.sampled_from(["auto", "passes", "fused"]),
)
def test_gaussian_filter_identical_including_constant_mode_carry(
    data, mode, cval, sigma, order, strat
):
    """Constant mode with cval != 0 carries cval * sum(w) between passes, as in memory."""
    x, chunks = data
    ref = sepconv.gaussian_filter(x, sigma, order=order, mode=mode, cval=cval)
    with sdask.strategy(strat):
        got = sepconv.gaussian_filter(
            da.from_array(x, chunks=chunks), sigma, order=order, mode=mode, cval=cval
        )
    assert_same(got.compute(), ref)


FILTERS = {
    "correlate1d": lambda m, x: m.correlate1d(x, [1.0, -2.0, 0.5, 3.0], axis=0, origin=-1),
    "convolve1d": lambda m, x: m.convolve1d(x, [1.0, -2.0, 0.5, 3.0], axis=-1, origin=1),
    "uniform_filter1d": lambda m, x: m.uniform_filter1d(x, 4, axis=1),
    "gaussian_filter1d": lambda m, x: m.gaussian_filter1d(x, 1.5, axis=0, order=1),
    "gaussian_filter": lambda m, x: m.gaussian_filter(x, [1.0, 2.0, 0.5], mode="wrap"),
    "uniform_filter": lambda m, x: m.uniform_filter(x, [3, 4, 2], origin=[0, 1, 0]),
    "sobel": lambda m, x: m.sobel(x, axis=1, mode="mirror"),
    "prewitt": lambda m, x: m.prewitt(x, axis=0, mode="constant", cval=2.0),
    "laplace": lambda m, x: m.laplace(x, mode="nearest"),
    "gaussian_laplace": lambda m, x: m.gaussian_laplace(x, 1.2),
    "gaussian_gradient_magnitude": lambda m, x: m.gaussian_gradient_magnitude(x, 1.0),
    "correlate": lambda m, x: m.correlate(x, np.arange(27.0).reshape(3, 3, 3) % 5),
    "convolve": lambda m, x: m.convolve(x, np.ones((2, 3, 2)), mode="constant", cval=1.0),
    "filter": lambda m, x: m.filter(x, "sobel:axis=2,ndim=3"),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_public_filter_accepts_dask_arrays_and_stays_lazy(name: str) -> None:
    x = rand((10, 9, 8), seed=3)
    ref = FILTERS[name](sepconv, x)
    dx = da.from_array(x, chunks=(3, 4, 5))
    got = FILTERS[name](sepconv, dx)
    assert isinstance(got, da.Array)
    assert got.chunks == dx.chunks
    assert_same(got.compute(), ref)
    # the sepconv.dask functions are the same filters and wrap numpy input
    got2 = FILTERS[name](sdask, x)
    assert isinstance(got2, da.Array)
    assert_same(got2.compute(), ref)


def test_building_the_graph_reads_no_data() -> None:
    calls = []

    def load(block):
        calls.append(block.shape)
        return block

    x = da.from_array(rand((20, 20)), chunks=5).map_blocks(load, meta=np.empty((0, 0)))
    y = sepconv.gaussian_filter(x, 2.0, mode="wrap")
    assert calls == []  # nothing computed yet
    y.compute()
    assert calls


def test_integer_input_rounds_and_saturates_like_in_memory() -> None:
    x = (np.random.default_rng(1).random((17, 13)) * 255).astype(np.uint8)
    dx = da.from_array(x, chunks=(4, 5))
    K = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])  # sharpen: saturates
    ref = sepconv.correlate(x, K)
    got = sepconv.correlate(dx, K).compute()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)
    got16 = sepconv.gaussian_filter(dx, 1.5, output=np.int16).compute()
    np.testing.assert_array_equal(got16, sepconv.gaussian_filter(x, 1.5, output=np.int16))


def test_output_array_and_zarr_targets_receive_the_result(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    x = rand((12, 10))
    ref = sepconv.uniform_filter(x, 3)
    out = np.zeros_like(x)
    assert sepconv.uniform_filter(da.from_array(x, chunks=4), 3, output=out) is out
    assert_same(out, ref)
    z = zarr.open_array(
        str(tmp_path / "o.zarr"), mode="w", shape=x.shape, chunks=(4, 5), dtype="f4"
    )
    assert sepconv.uniform_filter(da.from_array(x, chunks=4), 3, output=z) is z
    assert_same(z[...], ref.astype(np.float32), tol=1e-6)


def test_user_errors_name_the_parameter() -> None:
    x = da.from_array(rand((6, 6)), chunks=3)
    with pytest.raises(ValueError, match="strategy must be one of"):
        with sdask.strategy("pipelined"):
            pass
    with pytest.raises(ValueError, match="mode must be one of"):
        sepconv.gaussian_filter(x, 1.0, mode="bogus")
    with pytest.raises(ValueError, match="output must have the input's shape"):
        sepconv.gaussian_filter(x, 1.0, output=np.zeros((5, 5)))
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        sepconv.gaussian_filter(unknown, 1.0)


def test_auto_strategy_fuses_large_chunks_and_splits_passes_for_small_ones() -> None:
    from sepconv.backends.dask import choose as _choose

    g = sepconv.kernels.gaussian1d(3.0)  # 25 taps
    terms = [(1.0, [(0, g, 0), (1, g, 0), (2, g, 0)])]
    assert _choose(terms, ((256,) * 4,) * 3) == "fused"
    assert _choose(terms, ((8,) * 32,) * 3) == "passes"
    assert _choose([(1.0, [(0, g, 0), (0, g, 0)])], ((256,),)) == "passes"  # repeated axis


def test_pass_by_pass_reads_only_the_halo_of_each_pass_axis() -> None:
    """With strategy 'passes' the window of a pass along axis a grows along a only."""
    import sepconv.backends.dask as mod

    seen: list[tuple[int, ...]] = []
    original = mod._job_block

    def spy(block, **kw):
        seen.append(block.shape)
        return original(block, **kw)

    x = da.from_array(rand((40, 40)), chunks=10)
    mod._job_block = spy
    try:
        with sdask.strategy("passes"):
            sepconv.gaussian_filter(x, 2.0).compute(scheduler="sync")  # radius 8
        with sdask.strategy("fused"):
            sepconv.gaussian_filter(x, 2.0).compute(scheduler="sync")
    finally:
        mod._job_block = original
    passes, fused = seen[:32], seen[32:]
    assert sorted(set(passes)) == [(10, 26), (26, 10)]
    assert set(fused) == {(26, 26)}


def test_threaded_and_process_schedulers_agree() -> None:
    x = rand((30, 20), seed=5)
    ref = sepconv.gaussian_filter(x, [2.0, 1.0], mode="mirror")
    y = sepconv.gaussian_filter(da.from_array(x, chunks=(7, 6)), [2.0, 1.0], mode="mirror")
    assert_same(y.compute(scheduler="threads"), ref)
    assert_same(y.compute(scheduler="processes", num_workers=2), ref)


def test_distributed_local_cluster_with_processes(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    x = rand((24, 22), seed=6)
    ref = sepconv.correlate(x, np.outer([1.0, 2, 1], [1.0, 0, -1, 2]), mode="wrap")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        y = sepconv.correlate(
            da.from_array(x, chunks=5), np.outer([1.0, 2, 1], [1.0, 0, -1, 2]), mode="wrap"
        )
        assert_same(client.compute(y).result(), ref)
        # store: every slab submitted at once; numpy target filled here, zarr by the workers
        seen: list[int] = []
        out = np.zeros_like(x)
        sdask.store(
            y, out, memory_limit=1000, scheduler=client, progress=lambda d, t: seen.append(d)
        )
        assert_same(out, ref)
        assert seen[-1] == y.npartitions and seen == sorted(seen)
        zarr = pytest.importorskip("zarr")
        from sepconv import io

        for chunks in ((5, 5), (3, 7)):  # aligned with y's chunks (no lock), and not (a lock)
            path = tmp_path / f"o{chunks[0]}.zarr"
            z = io.create_zarr(path, x.shape, chunks, x.dtype)
            sdask.store(y, z, memory_limit=1000, scheduler=client)
            assert_same(zarr.open_array(str(path), mode="r")[...], ref)


# ----------------------------------------------------------------------------------------------
# out of core: a Zarr volume several times larger than the memory the run allows itself
# ----------------------------------------------------------------------------------------------

_OUT_OF_CORE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, dask.array as da, zarr  # imports are part of the baseline
    import sepconv, sepconv.dask, sepconv.io

    src, dst, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def rss_now():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def peak():  # VmHWM: the high-water mark since the reset below
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    # warm up (imports, engine compilation or cache load) on a small array, then measure
    small = da.from_array(np.zeros((8, 8, 8), np.float32), chunks=4)
    sepconv.gaussian_filter(small, 1.0).compute()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak: what warm-up used is not part of the run
    base = rss_now()
    x = da.from_zarr(src)
    target = sepconv.io.create_zarr(dst, x.shape, x.chunksize, x.dtype, compress=False)
    t0 = time.perf_counter()
    sepconv.dask.store(sepconv.gaussian_filter(x, 2.0), target, memory_limit=budget // 2,
                       scheduler="threads")
    seconds = time.perf_counter() - t0
    print(json.dumps({"base": base, "peak": peak(), "seconds": seconds, "nbytes": x.nbytes}))
    """
)


@pytest.mark.out_of_core
def test_out_of_core_zarr_volume_four_times_the_memory_budget(tmp_path: Path) -> None:
    """The out-of-core proof: a 256 MiB float32 Zarr volume filtered within a 64 MiB budget.

    A child process (its own address space and high-water mark, reset after warm-up) streams
    ``gaussian_filter(sigma=2)`` from one Zarr store to another with ``sepconv.dask.store``
    on two threads, with ``memory_limit`` half the budget. Its peak resident memory above the
    baseline after warm-up (imports and the compiled engine, ~200 MiB, which do not grow with
    the data) must stay within the budget, and output slabs must equal in-memory filtering of
    the matching input slabs. Measured on a 2-core machine: about 27 MiB.
    """
    pytest.importorskip("zarr")
    from sepconv import io

    shape, chunks = (1024, 256, 256), (16, 128, 128)  # 256 MiB of float32, 1 MiB chunks
    budget = 64 * 2**20
    src = str(tmp_path / "src.zarr")
    z = io.create_zarr(src, shape, chunks, np.float32, compress=False)
    rng = np.random.default_rng(0)
    for i in range(0, shape[0], 64):  # written slab by slab: never all in memory
        z[i : i + 64] = rng.random((64, *shape[1:]), dtype=np.float32)
    dst = str(tmp_path / "dst.zarr")
    proc = subprocess.run(
        [sys.executable, "-c", _OUT_OF_CORE, src, dst, str(budget)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    used = report["peak"] - report["base"]
    print(
        f"out-of-core: {report['nbytes'] / 2**20:.0f} MiB volume, peak RSS {used / 2**20:.1f} "
        f"MiB over a {report['base'] / 2**20:.0f} MiB baseline (budget {budget / 2**20:.0f} "
        f"MiB), {report['seconds']:.1f} s"
    )
    assert report["nbytes"] >= 4 * budget
    assert used <= budget, report
    out = io.open_zarr(dst)
    radius = 8  # gaussian sigma=2, truncate=4
    for i in (0, 400, shape[0] - 32):  # first, interior and last slab of 32 planes
        lo, hi = max(0, i - radius), min(shape[0], i + 32 + radius)
        slab = sepconv.gaussian_filter(z[lo:hi], 2.0)  # borders: true edges or a radius away
        assert_same(out[i : i + 32], slab[i - lo : i - lo + 32], tol=1e-5)


def test_big_endian_chunks_under_a_native_meta_and_dask_outputs():
    """A chunk's byte order may differ from the declared dtype (a big-endian file behind
    ``from_delayed(..., dtype=float)``); a dask array is not an ``output=`` target."""
    import dask
    import dask.array as da

    x = np.random.default_rng(6).random((6, 7))
    be = x.astype(">f8")
    d = da.from_delayed(dask.delayed(lambda: be)(), shape=x.shape, dtype=float)
    got = sepconv.gaussian_filter(d, 1.0).compute()
    np.testing.assert_allclose(got, ndimage_ref("gaussian_filter", x, 1.0), rtol=1e-12)
    xd = da.from_array(x, chunks=(2, 3))
    with pytest.raises(TypeError, match="got a dask array"):
        sepconv.gaussian_filter(xd, 1.0, output=da.zeros((6, 7), chunks=(2, 3)))


def ndimage_ref(name: str, x: np.ndarray, *args) -> np.ndarray:
    from scipy import ndimage

    return getattr(ndimage, name)(x, *args)


# A kernel far longer than its axis is folded onto the border extension (``Job.folded``). Lazy
# data may hold NaN/Inf, so only one-sign passes are folded there; scipy (tap by tap, never
# folded) is the reference for the non-finite values.
@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap", "nearest", "constant"])
def test_huge_sigma_on_small_chunks_is_folded_and_matches_scipy(mode: str, monkeypatch) -> None:
    from scipy import ndimage

    from sepconv.backends import dask as dask_backend

    jobs = []
    run = dask_backend.run
    monkeypatch.setattr(dask_backend, "run", lambda x, job, *a: jobs.append(job) or run(x, job, *a))

    x = rand((24, 20), seed=5)
    x[3, 4], x[10, 2], x[20, 15] = np.inf, -np.inf, np.nan
    x[0, 19] = np.inf
    for data in (x, np.nan_to_num(x, nan=0.5, posinf=2.0, neginf=-1.0)):
        ref = ndimage.gaussian_filter(data, 400.0, mode=mode, cval=0.25)
        lazy = sepconv.gaussian_filter(da.from_array(data, chunks=4), 400.0, mode=mode, cval=0.25)
        # 3201 taps over 6 x 5 chunks of 4 x 4: unfolded, every window would be 3204 long
        assert max(len(w) for _, passes in jobs.pop().terms for _, w, _ in passes) <= 2 * 24 + 1
        got = lazy.compute()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-12, atol=1e-13)
        assert_same(sepconv.gaussian_filter(data, 400.0, mode=mode, cval=0.25), ref)


def test_long_mixed_sign_pass_on_lazy_data_keeps_nan_of_opposite_infinities() -> None:
    """A derivative of a Gaussian far longer than the axis has taps of both signs (and a zero
    centre): folding them would turn scipy's ``inf * w1 + inf * w2 = NaN`` into an infinity,
    so lazy float data runs it unfolded."""
    from scipy import ndimage

    x = np.zeros(6)
    x[2] = np.inf
    ref = ndimage.gaussian_filter1d(x, 30.0, order=1, mode="reflect")
    got = sepconv.gaussian_filter1d(da.from_array(x, chunks=2), 30.0, order=1).compute()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(ref).all()
    assert_same(sepconv.gaussian_filter1d(x, 30.0, order=1), ref)


@pytest.mark.parametrize("strategy", ["passes", "fused"])
def test_complex_results_keep_the_real_part_where_the_imaginary_part_is_infinite(strategy) -> None:
    """The real and imaginary results are joined part by part. Before: ``re + 1j * im`` made
    the real part NaN wherever the imaginary part was infinite (1j * inf is nan + inf j);
    the in-memory filter and scipy keep it."""
    from scipy import ndimage

    g = np.random.default_rng(8)
    x = g.random((8, 9)) + 1j * g.random((8, 9))
    x.imag[3, 4] = np.inf
    ref = ndimage.gaussian_filter(x, 1.0)
    with sdask.strategy(strategy):
        got = sepconv.gaussian_filter(da.from_array(x, chunks=3), 1.0).compute()
    for part in ("real", "imag"):
        a, b = getattr(got, part), getattr(ref, part)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=part)
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=part)
        fin = np.isfinite(b)
        np.testing.assert_allclose(a[fin], b[fin], rtol=0, atol=1e-12, err_msg=part)
    z = g.random((6, 7)) + 1j * g.random((6, 7))
    c = sepconv.gaussian_filter(
        da.from_array(z, chunks=3), 1.0, mode="constant", cval=complex(0, np.nan)
    ).compute()
    assert not np.isnan(c.real).any() and np.isnan(c.imag).any()  # scipy: 1+nanj, not nan+nanj


def test_store_of_a_zero_dimensional_array() -> None:
    """Before: a bare IndexError (no axis to cut slabs along)."""
    target = np.empty(())
    seen = []
    sdask.store(da.from_array(np.array(2.5)), target, progress=lambda d, t: seen.append((d, t)))
    assert target[()] == 2.5 and seen[-1] == (1, 1)


def test_huge_sigma_derivative_on_finite_lazy_data_is_folded(monkeypatch) -> None:
    """A derivative's taps have both signs, so lazy data's unknown finiteness is computed
    once and finite data get the folded passes. Before: sigma=1e4, order=1 on 16^2 in chunks
    of 16 took 70 s (80001-tap windows); the in-memory filter 0.4 s."""
    from sepconv.backends import dask as dask_backend

    jobs = []
    run = dask_backend.run
    monkeypatch.setattr(dask_backend, "run", lambda x, job, *a: jobs.append(job) or run(x, job, *a))
    x = rand((16, 16), seed=9)
    got = sepconv.gaussian_filter(da.from_array(x, chunks=8), 1e4, order=(1, 0)).compute()
    assert max(len(w) for _, passes in jobs[-1].terms for _, w, _ in passes) <= 2 * 16 + 1
    want = sepconv.gaussian_filter(x, 1e4, order=(1, 0))
    assert_same(got, want, 1e-12)
