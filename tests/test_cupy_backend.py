"""The CuPy backend (``sepconv.backends.cupy``) and dask arrays of CuPy chunks, against scipy.

Without CuPy or a GPU (CI), a stand-in library plays CuPy: a module named ``cupy`` whose
``ndarray`` is a numpy subclass and whose ``from_dlpack`` wraps numpy's, installed in
``sys.modules`` for one test at a time (the ``cupy`` fixture). The data takes the real way:
DLPack to torch, the torch backend, the Triton engine (in Triton's interpreter on the CPU:
``TRITON_INTERPRET=1``, set here before the engine is imported, and
``SEPCONV_TORCH_ENGINE=triton``), and back through the stand-in's ``from_dlpack``. The
interpreter is slow: the arrays are 16 x 20. The tests marked ``gpu`` run the real CuPy on a
CUDA device.

References are independent of sepconv: scipy.ndimage in float64 on a numpy copy of the input
(``grid-wrap`` where a kernel is longer than its axis: sepconv's ``wrap`` is periodic), and
numpy rounding (``np.rint``, then the integer range) for integer and bool results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy import ndimage

import sepconv
from _helpers import FakeArray, assert_close, fake_cupy, rand

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated
pytest.importorskip("triton")
tg = pytest.importorskip("sepconv.engine.triton_gpu")

#: CPU tensors run on the Triton engine where it is interpreted; otherwise (the engine was
#: compiled for a GPU) on torch's convolutions: the cupy backend's plumbing is the same.
CPU_ENGINE = "triton" if tg.interpreted() else "auto"
SHAPE = (16, 20)


@pytest.fixture
def cupy(monkeypatch):
    """The stand-in installed as ``cupy`` (removed afterwards: no other test sees it), CPU
    tensors routed to the Triton engine."""
    fake = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setenv("SEPCONV_TORCH_ENGINE", CPU_ENGINE)
    if CPU_ENGINE == "triton":
        from sepconv.backends import torch as torch_backend

        assert torch_backend.gpu_engine(torch.zeros(1)) is tg
    return fake


def dev(a) -> FakeArray:
    """A copy of ``a`` as a stand-in array (tests may write into it)."""
    return np.array(a).view(FakeArray)


def assert_complex_close(got, ref, tol: float = 1e-12) -> None:
    """Both parts within ``tol`` of the largest modulus of ``ref`` (at least 1)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype.kind == "c"
    scale = max(1.0, float(np.abs(ref).max()))
    assert_close(got.real, ref.real, tol, scale)
    assert_close(got.imag, ref.imag, tol, scale)


def spy_from_dlpack(monkeypatch) -> list[tuple[object, int]]:
    """Record ``(object, data pointer of the tensor made)`` for every ``torch.from_dlpack``."""
    seen: list[tuple[object, int]] = []
    real = torch.from_dlpack

    def spy(obj):
        t = real(obj)
        seen.append((obj, t.data_ptr()))
        return t

    monkeypatch.setattr(torch, "from_dlpack", spy)
    return seen


def rint(ref: np.ndarray, dtype) -> np.ndarray:
    """numpy's rounding of a float64 result to an integer or bool dtype, saturated."""
    if np.dtype(dtype) == np.bool_:
        return np.clip(np.rint(ref), 0, 1).astype(bool)
    info = np.iinfo(dtype)
    return np.clip(np.rint(ref), info.min, info.max).astype(dtype)


_rng = np.random.default_rng(7)
LOWRANK = sum(np.outer(_rng.standard_normal(5), _rng.standard_normal(4)) for _ in range(2))
DENSE = _rng.standard_normal((3, 3))
LONG = np.linspace(-1.0, 2.0, 23)  # longer than either axis

#: name -> (call(module, x, **kw), keywords for sepconv only): the same call on sepconv and
#: scipy.ndimage (scipy gets ``grid-wrap`` for ``wrap`` through the ``wrap`` argument).
CASES = {
    "correlate1d": (lambda m, x, **k: m.correlate1d(x, [1.0, -2.0, 0.5, 3.0], 0, origin=-1), {}),
    "convolve1d-long-wrap": (
        lambda m, x, wrap="wrap", **k: m.convolve1d(x, LONG, axis=1, mode=wrap),
        {},
    ),
    "correlate1d-long-mirror": (lambda m, x, **k: m.correlate1d(x, LONG, 0, mode="mirror"), {}),
    "gaussian_filter": (lambda m, x, **k: m.gaussian_filter(x, [1.0, 2.0], mode="mirror"), {}),
    "gaussian_filter1d-order": (
        lambda m, x, **k: m.gaussian_filter1d(x, 1.5, axis=0, order=1, mode="nearest"),
        {},
    ),
    "uniform_filter-constant": (
        lambda m, x, **k: m.uniform_filter(x, [3, 4], mode="constant", cval=0.5, origin=[1, -1]),
        {},
    ),
    "uniform_filter1d": (
        lambda m, x, **k: m.uniform_filter1d(x, 4, axis=1, mode="mirror", origin=1),
        {},
    ),
    "sobel-wrap": (lambda m, x, **k: m.sobel(x, axis=1, mode="wrap"), {}),
    "prewitt": (lambda m, x, **k: m.prewitt(x, axis=0, mode="nearest"), {}),
    "gaussian_laplace": (lambda m, x, **k: m.gaussian_laplace(x, 1.2), {}),
    "filter-named": (  # scipy's equivalent of the spec: gaussian_filter
        lambda m, x, **k: (
            m.gaussian_filter(x, 1.5, mode="mirror")
            if m is ndimage
            else m.filter(x, "gaussian:sigma=1.5", mode="mirror")
        ),
        {},
    ),
    "laplace": (lambda m, x, **k: m.laplace(x, mode="reflect"), {}),
    "gaussian_gradient_magnitude": (
        lambda m, x, **k: m.gaussian_gradient_magnitude(x, 1.0, mode="nearest"),
        {},
    ),
    "correlate-separable": (
        lambda m, x, **k: m.correlate(x, np.outer([1, 2, 1], [1, 0, -1, 2]), origin=[1, 0], **k),
        {},
    ),
    "correlate-lowrank": (
        lambda m, x, **k: m.correlate(x, LOWRANK, mode="mirror", **k),
        {"method": "lowrank"},
    ),
    "correlate-direct": (
        lambda m, x, **k: m.correlate(x, DENSE, mode="nearest", **k),
        {"method": "direct"},
    ),
    "convolve-fft-origin": (
        lambda m, x, **k: m.convolve(x, LOWRANK, mode="wrap", origin=[0, -1], **k),
        {"method": "fft"},
    ),
}


def scipy_ref(name: str, x: np.ndarray) -> np.ndarray:
    call, _ = CASES[name]
    kw = {"wrap": "grid-wrap"} if name == "convolve1d-long-wrap" else {}
    return call(ndimage, np.asarray(x, dtype=np.float64), **kw)


def ours(name: str, x):
    call, kw = CASES[name]
    return call(sepconv, x, **kw)


# ----------------------------------------------------------------------------------------------
# the stand-in library on the CPU
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_case_matches_scipy_and_returns_the_library_array(cupy, dtype) -> None:
    x = rand(SHAPE, seed=1, dtype=dtype)
    c = dev(x)
    for name in CASES:
        got = ours(name, c)
        assert type(got) is FakeArray and got.dtype == dtype, name
        tol = 1e-12 if dtype == np.float64 else 1e-6
        try:
            assert_close(got, scipy_ref(name, x), tol)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    np.testing.assert_array_equal(c, x)  # the input is not modified


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.bool_])
def test_integer_and_bool_input_round_and_saturate_exactly(cupy, dtype) -> None:
    rng = np.random.default_rng(2)
    if dtype == np.bool_:
        x = rng.random(SHAPE) > 0.5
    else:
        hi = min(int(np.iinfo(dtype).max), 300)
        x = rng.integers(0, hi, SHAPE, endpoint=True).astype(dtype)
    c = dev(x)
    xf = x.astype(np.float64)
    # exact in float32 and float64 alike: integer taps, quarters
    for name, ref in (
        ("sobel", ndimage.sobel(xf, axis=0, mode="mirror")),
        ("uniform_filter", ndimage.uniform_filter(xf, 4, mode="grid-wrap")),
    ):
        got = (
            sepconv.sobel(c, axis=0, mode="mirror")
            if name == "sobel"
            else sepconv.uniform_filter(c, 4, mode="wrap")
        )
        assert type(got) is FakeArray and got.dtype == dtype
        np.testing.assert_array_equal(got, rint(ref, dtype), err_msg=name)
    # a Gaussian is exact to the rounding wherever the result is not within 1e-3 of a tie
    got = sepconv.gaussian_filter(c, 1.3).astype(np.float64)
    ref = ndimage.gaussian_filter(xf, 1.3)
    clear = np.abs(ref - np.floor(ref) - 0.5) > 1e-3
    np.testing.assert_array_equal(got[clear], rint(ref, dtype)[clear].astype(np.float64))
    np.testing.assert_array_equal(c, x)


def test_output_dtype_and_array_in_place(cupy) -> None:
    x = rand(SHAPE, seed=3) * 60 + 100
    c = dev(x)
    ref = ndimage.gaussian_filter(x, 1.5, mode="reflect")

    got = sepconv.gaussian_filter(c, 1.5, output=np.float32)
    assert type(got) is FakeArray and got.dtype == np.float32
    assert_close(got, ref, 1e-6)
    got = sepconv.gaussian_filter(c, 1.5, output="uint8")
    assert type(got) is FakeArray and got.dtype == np.uint8

    for dtype in (np.float32, np.uint8, np.float64):
        out = dev(np.zeros(SHAPE, dtype))
        ptr = out.__array_interface__["data"][0]
        res = sepconv.gaussian_filter(c, 1.5, output=out)
        assert res is out and out.__array_interface__["data"][0] == ptr
        if dtype == np.uint8:
            clear = np.abs(ref - np.floor(ref) - 0.5) > 1e-3
            np.testing.assert_array_equal(out[clear], rint(ref, np.uint8)[clear])
        else:
            assert_close(out, ref, 1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(c, x)


def test_the_input_and_the_output_reach_torch_without_a_copy(cupy, monkeypatch) -> None:
    seen = spy_from_dlpack(monkeypatch)
    x = rand(SHAPE, seed=4)
    c, out = dev(x), dev(np.zeros(SHAPE))
    sepconv.uniform_filter(c, 3, output=out)
    assert any(obj is c and ptr == c.__array_interface__["data"][0] for obj, ptr in seen)
    assert any(obj is out and ptr == out.__array_interface__["data"][0] for obj, ptr in seen)
    assert_close(out, ndimage.uniform_filter(x, 3))


def test_strided_and_reversed_views_in_and_out(cupy) -> None:
    """Torch has no negative strides (it aborts the process on such a DLPack capsule): a
    reversed view is copied on the way in and assigned on the way out."""
    x = rand((16, 40), seed=5)
    c = dev(x)
    ref = ndimage.gaussian_filter(x[::-1, ::2], 1.0)
    got = sepconv.gaussian_filter(c[::-1, ::2], 1.0)
    assert type(got) is FakeArray
    assert_close(got, ref)
    out = dev(np.zeros((16, 40)))
    res = sepconv.gaussian_filter(c[:, ::2], 1.0, output=out[::-1, 1::2])
    assert_close(out[::-1, 1::2], ndimage.gaussian_filter(x[:, ::2], 1.0))
    assert type(res) is FakeArray and np.shares_memory(res, out)
    assert not out[:, ::2].any()  # nothing written outside the view
    np.testing.assert_array_equal(c, x)


def test_complex_data_and_complex_weights(cupy) -> None:
    x = rand(SHAPE, seed=6) + 1j * rand(SHAPE, seed=7)
    c = dev(x)
    got = sepconv.gaussian_filter(c, 1.2, mode="wrap")
    assert type(got) is FakeArray and got.dtype == np.complex128
    assert_complex_close(got, ndimage.gaussian_filter(x, 1.2, mode="grid-wrap"))
    got = sepconv.gaussian_gradient_magnitude(c.astype(np.complex64), 1.0)
    assert got.dtype == np.complex64
    ref = ndimage.gaussian_gradient_magnitude(x.astype(np.complex64).astype(np.complex128), 1.0)
    assert_complex_close(got, ref, 1e-5)
    w = np.array([1.0 + 1.0j, 0.5, -2.0j])
    xr = x.real.copy()
    got = sepconv.correlate1d(dev(xr), w, axis=0, mode="mirror")
    assert type(got) is FakeArray and got.dtype == np.complex128
    assert_complex_close(got, ndimage.correlate1d(xr, w, axis=0, mode="mirror"))
    out = dev(np.zeros(SHAPE, np.complex128))
    assert sepconv.convolve1d(c, w, axis=1, output=out) is out
    assert_complex_close(out, ndimage.convolve1d(x, w, axis=1))


def test_bad_output_and_input_are_refused(cupy) -> None:
    c = dev(rand(SHAPE, seed=8))
    with pytest.raises(TypeError, match=r"output must be None, a dtype or a cupy array.*ndarray"):
        sepconv.gaussian_filter(c, 1.0, output=np.zeros(SHAPE))
    with pytest.raises(TypeError, match=r"output must be None, a dtype or a cupy array.*Tensor"):
        sepconv.gaussian_filter(c, 1.0, output=torch.zeros(SHAPE, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"output must have the input's shape \(16, 20\)"):
        sepconv.gaussian_filter(c, 1.0, output=dev(np.zeros((16, 21))))
    with pytest.raises(TypeError, match="output must be None, a dtype or a cupy array, got str"):
        sepconv.gaussian_filter(c, 1.0, output="no-such-dtype")
    with pytest.raises(TypeError, match="output dtype must be"):
        sepconv.gaussian_filter(c, 1.0, output="U3")
    with pytest.raises(ValueError, match=r"output dtype must be in native byte order.*>f4"):
        sepconv.gaussian_filter(c, 1.0, output=">f4")
    with pytest.raises(TypeError, match="input dtype must be"):
        sepconv.gaussian_filter(np.zeros(SHAPE, "M8[s]").view(FakeArray), 1.0)


def test_a_dtype_torch_cannot_import_is_a_type_error(cupy, monkeypatch) -> None:
    real = torch.from_dlpack

    def old_torch(obj):  # torch < 2.3 has no uint16/32/64 through DLPack
        if obj.dtype == np.uint16:
            raise BufferError("Unsupported kUInt bits 16")
        return real(obj)

    monkeypatch.setattr(torch, "from_dlpack", old_torch)
    with pytest.raises(TypeError, match=r"input of dtype uint16 cannot be handed to torch"):
        sepconv.uniform_filter(dev(np.zeros(SHAPE, np.uint16)), 3)
    with pytest.raises(TypeError, match=r"output of dtype uint16 cannot be handed to torch"):
        sepconv.uniform_filter(dev(np.zeros(SHAPE)), 3, output=dev(np.zeros(SHAPE, np.uint16)))


def test_the_planner_gets_the_device_of_the_memory(cupy, monkeypatch) -> None:
    """``device_kind``: the torch backend's rule for the tensor on the array's memory (here
    CPU memory); a dask array of the library's chunks asks the chunks' backend."""
    da = pytest.importorskip("dask.array")
    from sepconv.backends import cupy as cupy_backend
    from sepconv.backends import dask as dask_backend
    from sepconv.backends import torch as torch_backend

    c = dev(np.zeros(SHAPE))
    d = da.from_array(c, chunks=(5, 7), asarray=False)
    assert cupy_backend.device_kind(c) == "cpu" and dask_backend.device_kind(d) == "cpu"
    seen = []
    monkeypatch.setattr(torch_backend, "device_kind", lambda t: seen.append(t) or "cuda")
    assert cupy_backend.device_kind(c) == "cuda" and dask_backend.device_kind(d) == "cuda"
    assert seen[0].data_ptr() == c.__array_interface__["data"][0]
    assert dask_backend.device_kind(da.zeros(SHAPE, chunks=(5, 7))) == "cpu"  # numpy chunks


def test_missing_triton_is_an_import_error_naming_the_gpu_extra(cupy, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    with pytest.raises(ImportError, match=r"sepconv\[gpu\].*cupy-cuda12x.*missing: triton"):
        sepconv.gaussian_filter(dev(np.zeros(SHAPE)), 1.0)


def test_import_sepconv_does_not_import_cupy_or_the_backend() -> None:
    code = (
        "import sys, sepconv, sepconv.backends; "
        "print(','.join(m for m in ('cupy', 'sepconv.backends.cupy', 'torch', 'triton') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------------------------
# dask arrays of the stand-in's chunks
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def dask_cupy(cupy, monkeypatch):
    """dask.array, and the list the cupy backend's ``run`` records its calls in."""
    da = pytest.importorskip("dask.array")
    from sepconv.backends import cupy as cupy_backend

    calls: list[tuple[int, ...]] = []
    real = cupy_backend.run

    def run(x, *args):
        calls.append(x.shape)
        return real(x, *args)

    monkeypatch.setattr(cupy_backend, "run", run)
    return da, calls


def _blocks(result) -> set[type]:
    return {
        type(result.blocks[i, j].compute(scheduler="sync"))
        for i in range(result.numblocks[0])
        for j in range(result.numblocks[1])
    }


def test_dask_of_cupy_chunks_runs_each_window_on_the_backend(dask_cupy) -> None:
    da, calls = dask_cupy
    x = rand(SHAPE, seed=9)
    d = da.from_array(dev(x), chunks=(5, 7), asarray=False)
    assert type(d._meta) is FakeArray
    import sepconv.dask

    names = ["gaussian_filter", "convolve1d-long-wrap", "correlate-direct", "laplace"]
    for name, strategy in [(n, "auto") for n in names] + [
        ("gaussian_gradient_magnitude", "passes"),  # the passes strategy and the hypot
        ("uniform_filter-constant", "fused"),
    ]:
        calls.clear()
        with sepconv.dask.strategy(strategy):
            got = ours(name, d)
        assert type(got._meta) is FakeArray and _blocks(got) == {FakeArray}, name
        assert len(calls) >= d.npartitions, name  # at least a window per chunk: the backend ran
        assert_close(got.compute(scheduler="sync"), scipy_ref(name, x))

    u = (x * 40 + 100).astype(np.uint8)
    got = sepconv.uniform_filter(da.from_array(dev(u), chunks=(5, 7), asarray=False), 4)
    assert got.dtype == np.uint8 and _blocks(got) == {FakeArray}
    ref = rint(ndimage.uniform_filter(u.astype(np.float64), 4), np.uint8)
    np.testing.assert_array_equal(got.compute(scheduler="sync"), ref)


def test_dask_of_cupy_chunks_refuses_an_array_output(dask_cupy) -> None:
    da, _ = dask_cupy
    d = da.from_array(dev(np.zeros(SHAPE)), chunks=(5, 7), asarray=False)
    with pytest.raises(TypeError, match="output must be None or a dtype for a dask array of"):
        sepconv.gaussian_filter(d, 1.0, output=np.zeros(SHAPE))
    got = sepconv.gaussian_filter(d, 1.0, output=np.float32)
    assert got.dtype == np.float32 and _blocks(got) == {FakeArray}


# ----------------------------------------------------------------------------------------------
# the real CuPy on a CUDA device
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def real_cupy():
    if isinstance(sys.modules.get("cupy"), types.ModuleType) and not hasattr(
        sys.modules["cupy"], "cuda"
    ):  # pragma: no cover - the stand-in leaked
        pytest.fail("the stand-in cupy is still installed")
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CUDA driver missing
        pytest.skip(f"no CUDA device: {exc}")
    return cp


@pytest.mark.gpu
def test_gpu_every_filter_matches_scipy(real_cupy) -> None:
    from sepconv.backends import cupy as cupy_backend

    cp = real_cupy
    x = rand((64, 96), seed=10)
    assert cupy_backend.device_kind(cp.zeros(3)) == "cuda"
    for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-12)):
        xs = x.astype(dtype)
        c = cp.asarray(xs)
        for name in CASES:
            got = ours(name, c)
            assert isinstance(got, cp.ndarray) and got.dtype == dtype, name
            try:
                assert_close(cp.asnumpy(got), scipy_ref(name, xs), tol)
            except AssertionError as exc:
                raise AssertionError(f"{name} {np.dtype(dtype)}: {exc}") from None
        np.testing.assert_array_equal(cp.asnumpy(c), xs)


@pytest.mark.gpu
def test_gpu_uint8_exact_output_in_place_zero_copy_and_streams(real_cupy, monkeypatch) -> None:
    cp = real_cupy
    u = np.random.default_rng(11).integers(0, 256, (64, 96)).astype(np.uint8)
    c = cp.asarray(u)
    for got, ref in (
        (sepconv.sobel(c, axis=0), ndimage.sobel(u.astype(np.float64), axis=0)),
        (sepconv.uniform_filter(c, 4), ndimage.uniform_filter(u.astype(np.float64), 4)),
    ):
        assert isinstance(got, cp.ndarray) and got.dtype == np.uint8
        np.testing.assert_array_equal(cp.asnumpy(got), rint(ref, np.uint8))

    seen = spy_from_dlpack(monkeypatch)
    x = cp.asarray(rand((64, 96), seed=12, dtype=np.float32))
    out = cp.zeros((64, 96), np.float32)
    assert sepconv.gaussian_filter(x, 2.0, output=out) is out
    assert any(obj is x and ptr == x.data.ptr for obj, ptr in seen)
    assert any(obj is out and ptr == out.data.ptr for obj, ptr in seen)
    ref = ndimage.gaussian_filter(cp.asnumpy(x).astype(np.float64), 2.0)
    assert_close(cp.asnumpy(out), ref, 1e-6)

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:  # work queued on a non-default stream: DLPack orders torch's after it
        y = cp.asarray(rand((64, 96), seed=13)) * 3.0
        got = sepconv.gaussian_filter(y, 1.5)
    stream.synchronize()
    torch.cuda.synchronize()
    ref = ndimage.gaussian_filter(rand((64, 96), seed=13) * 3.0, 1.5)
    assert_close(cp.asnumpy(got), ref)
