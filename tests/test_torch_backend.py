"""The torch backend: same results as the numpy API (and scipy), differentiable, any device.

Tolerances per dtype (relative to the size of the result): float64 1e-12, float32 2e-6,
float16/bfloat16 one rounding of the result. CUDA tests run where a GPU is present.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import sepconv
from _helpers import MODES, rand
from _helpers import assert_close as close

torch = pytest.importorskip("torch")
storch = pytest.importorskip("sepconv.torch")

TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_close(got, ref, dtype=torch.float64) -> None:
    close(got, ref, TOL[dtype])


# ----------------------------------------------------------------------------------------------
# same results as the numpy API and scipy
# ----------------------------------------------------------------------------------------------

FILTERS = {
    "correlate1d": lambda m, x: m.correlate1d(x, [1.0, -2.0, 0.5, 3.0], axis=2, origin=-1),
    "convolve1d": lambda m, x: m.convolve1d(x, [1.0, -2.0, 0.5], axis=-1, mode="wrap"),
    "uniform_filter1d": lambda m, x: m.uniform_filter1d(x, 4, axis=3, mode="mirror"),
    "gaussian_filter1d": lambda m, x: m.gaussian_filter1d(x, 1.5, axis=2, order=1),
    "gaussian_filter": lambda m, x: m.gaussian_filter(x, [1.0, 2.0], axes=(2, 3)),
    "uniform_filter": lambda m, x: m.uniform_filter(x, [3, 4], axes=(2, 3), mode="nearest"),
    "sobel": lambda m, x: m.sobel(x, axis=3, mode="constant", cval=1.0),
    "prewitt": lambda m, x: m.prewitt(x, axis=2),
    "laplace": lambda m, x: m.laplace(x, axes=(2, 3), mode="reflect"),
    "gaussian_laplace": lambda m, x: m.gaussian_laplace(x, 1.2, axes=(2, 3)),
    "gaussian_gradient_magnitude": lambda m, x: m.gaussian_gradient_magnitude(x, 1.0, axes=(2, 3)),
    "correlate": lambda m, x: m.correlate(x, np.arange(12.0).reshape(3, 4) % 5, axes=(2, 3)),
    "convolve": lambda m, x: m.convolve(x, np.ones((2, 3)), axes=(3, 2), mode="constant"),
    "filter": lambda m, x: m.filter(x, "gabor:sigma=1.5,theta=30,frequency=0.2", axes=(2, 3)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_on_batched_tensors_matches_the_numpy_api(name, dtype, device) -> None:
    x = rand((2, 3, 15, 12), seed=1)  # batch, channel, H, W: filtered over H, W only
    ref = FILTERS[name](sepconv, x)
    t = torch.tensor(x, dtype=dtype, device=device)
    got = FILTERS[name](sepconv, t)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.device == t.device
    assert_close(got, ref, dtype)
    got2 = FILTERS[name](storch, t)  # the sepconv.torch names are the same filters
    assert_close(got2, ref, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["direct", "fft", "lowrank", "auto"])
def test_correlate_every_mode_and_method_matches_scipy(mode: str, method: str) -> None:
    x = rand((9, 11, 7), seed=2)
    rng = np.random.default_rng(3)
    K = sum(np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (4, 3, 5))) for _ in range(2))
    origin = [1, -1, 0]
    got = sepconv.correlate(torch.tensor(x), K, mode=mode, cval=0.5, origin=origin, method=method)
    ref = ndimage.correlate(x, K, mode=mode, cval=0.5, origin=origin)
    ours = sepconv.correlate(x, K, mode=mode, cval=0.5, origin=origin, method=method)
    assert_close(got, ours)
    if mode not in ("constant", "grid-constant"):  # scipy and sepconv agree there only for cval=0
        assert_close(got, ref)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 9),
    klen=st.integers(1, 12),
    mode=st.sampled_from(MODES),
    cval=st.floats(-3, 3),
    seed=st.integers(0, 1000),
)
def test_correlate1d_long_kernels_and_origins_match_the_numpy_api(n, klen, mode, cval, seed):
    """Kernels longer than the axis extend by repeated reflection / wrapping, as in scipy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, n))
    w = rng.standard_normal(klen)
    origin = int(rng.integers(-(klen // 2), (klen - 1) // 2 + 1))
    got = sepconv.correlate1d(torch.tensor(x), w, mode=mode, cval=cval, origin=origin)
    assert_close(got, sepconv.correlate1d(x, w, mode=mode, cval=cval, origin=origin))


def test_constant_mode_separable_carry_matches_the_dense_correlation() -> None:
    x = rand((12, 10), seed=4)
    got = sepconv.gaussian_filter(torch.tensor(x), 1.5, order=(1, 0), mode="constant", cval=5.0)
    K = sepconv.kernels.gaussian(1.5, order=(1, 0))
    assert_close(got, ndimage.correlate(x, K, mode="constant", cval=5.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_floats_compute_in_float32_and_round_once(dtype) -> None:
    x = rand((16, 16), seed=5)
    t = torch.tensor(x, dtype=dtype)
    got = sepconv.gaussian_filter(t, 2.0, mode="wrap")
    assert got.dtype == dtype
    ref = sepconv.gaussian_filter(t.to(torch.float64).numpy(), 2.0, mode="wrap")
    assert_close(got, ref, dtype)


def test_integer_tensors_round_and_saturate_like_the_numpy_api() -> None:
    x = (np.random.default_rng(6).random((20, 20)) * 255).astype(np.uint8)
    sharpen = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
    got = sepconv.correlate(torch.from_numpy(x), sharpen)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), sepconv.correlate(x, sharpen))
    got16 = sepconv.gaussian_filter(torch.from_numpy(x), 1.5, output=np.int16)
    assert got16.dtype == torch.int16
    np.testing.assert_array_equal(got16.numpy(), sepconv.gaussian_filter(x, 1.5, output=np.int16))


def test_output_dtype_and_tensor() -> None:
    x = torch.tensor(rand((8, 8), seed=7))
    assert sepconv.uniform_filter(x, 3, output=torch.float32).dtype == torch.float32
    out = torch.empty(8, 8, dtype=torch.float64)
    assert sepconv.uniform_filter(x, 3, output=out) is out
    assert_close(out, sepconv.uniform_filter(x.numpy(), 3))


def test_user_errors_name_the_parameter() -> None:
    x = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="output must have the input's shape"):
        sepconv.gaussian_filter(x, 1.0, output=torch.zeros(3, 3))
    with pytest.raises(TypeError, match="output must be None, a dtype or a tensor"):
        sepconv.gaussian_filter(x, 1.0, output=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mode must be one of"):
        sepconv.gaussian_filter(x, 1.0, mode="edge")
    with pytest.raises(ValueError, match="workers must be between"):
        sepconv.gaussian_filter(x, 1.0, workers=10**6)


def test_empty_tensor() -> None:
    got = sepconv.gaussian_filter(torch.zeros(0, 5), 1.0)
    assert got.shape == (0, 5)


# ----------------------------------------------------------------------------------------------
# differentiable
# ----------------------------------------------------------------------------------------------

GRAD_CASES = {
    "gaussian reflect": lambda z: sepconv.gaussian_filter(z, 1.0),
    "gaussian constant cval": lambda z: sepconv.gaussian_filter(z, 0.8, mode="constant", cval=2),
    "correlate direct wrap": lambda z: sepconv.correlate(
        z, np.arange(6.0).reshape(2, 3), mode="wrap", method="direct", origin=(0, -1)
    ),
    "correlate fft mirror": lambda z: sepconv.correlate(
        z, np.arange(6.0).reshape(3, 2), mode="mirror", method="fft"
    ),
    "correlate lowrank nearest": lambda z: sepconv.correlate(
        z, np.arange(9.0).reshape(3, 3) ** 2, mode="nearest", method="lowrank"
    ),
    "uniform origin": lambda z: sepconv.uniform_filter(z, 4, origin=1),
    "laplace": lambda z: sepconv.laplace(z),
    "gradient magnitude": lambda z: sepconv.gaussian_gradient_magnitude(z, 1.0),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_float64(name: str) -> None:
    z = torch.tensor(rand((6, 7), seed=8) + 3.0, requires_grad=True)
    assert torch.autograd.gradcheck(GRAD_CASES[name], (z,))


def test_gradient_is_the_adjoint_correlation() -> None:
    """d/dx <w, correlate(x, K)> equals the adjoint: correlation with the flipped kernel."""
    x = torch.tensor(rand((10, 9), seed=9), requires_grad=True)
    g = torch.tensor(rand((10, 9), seed=10))
    K = np.arange(15.0).reshape(3, 5) - 7
    (sepconv.correlate(x, K, mode="constant") * g).sum().backward()
    adjoint = sepconv.convolve(g.numpy(), K, mode="constant")
    assert_close(x.grad, adjoint)


def test_cuda_calls_run_cudnn_without_tf32_and_restore_the_flags() -> None:
    """torch enables TF32 for cuDNN convolutions by default (10-bit mantissa: a float32 7x7
    correlation 1.4e-4 off); the torch path turns it off for CUDA tensors during the call."""
    from types import SimpleNamespace

    from sepconv.backends import torch as backend

    cudnn = torch.backends.cudnn
    before = (cudnn.allow_tf32, cudnn.enabled, cudnn.benchmark, cudnn.deterministic)
    assert before[0]  # torch's default
    with backend._ieee(SimpleNamespace(device=torch.device("cuda"))):
        assert not cudnn.allow_tf32
        assert (cudnn.enabled, cudnn.benchmark, cudnn.deterministic) == before[1:]
    assert (cudnn.allow_tf32, cudnn.enabled, cudnn.benchmark, cudnn.deterministic) == before
    with backend._ieee(torch.zeros(1)):  # CPU tensors: nothing changes
        assert cudnn.allow_tf32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", ["torch", "auto"])
def test_cuda_float32_dense_correlation_is_float32_exact(monkeypatch, engine) -> None:
    monkeypatch.setenv("SEPCONV_TORCH_ENGINE", engine)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = rand((96, 80), seed=11).astype(np.float32)
    K = rand((7, 7), seed=12)
    t = torch.tensor(x, device="cuda", requires_grad=True)
    got = sepconv.correlate(t, K, method="direct")
    ref = ndimage.correlate(x.astype(np.float64), K.astype(np.float32).astype(np.float64))
    close(got.detach(), ref, 2e-6)
    g = rand((96, 80), seed=13).astype(np.float32)
    (got * torch.tensor(g, device="cuda")).sum().backward()
    if engine == "auto":  # the Triton engine's backward: exact too (torch's follows its flags)
        adjoint = ndimage.convolve(g.astype(np.float64), K, mode="constant")
        interior = (slice(3, -3), slice(3, -3))  # away from the reflect fold at the borders
        close(t.grad[interior], adjoint[interior], 2e-6)


# ----------------------------------------------------------------------------------------------
# imports stay lazy
# ----------------------------------------------------------------------------------------------


def test_importing_sepconv_imports_neither_torch_nor_dask() -> None:
    code = (
        "import sys, sepconv, sepconv.io, sepconv.filters\n"
        "bad = [m for m in ('torch', 'dask', 'matplotlib', 'zarr', 'nibabel', 'imageio') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    run_python(code)


def test_tensors_filter_without_numba() -> None:
    """A GPU-only setup may have torch and triton but no numba: tensors and CuPy arrays (here
    the tests' stand-in) never need it, on torch's path or the Triton engine, complex data
    included."""
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # import numba now fails\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import numpy as np, torch, sepconv\n"
        "from scipy import ndimage\n"
        "from _helpers import fake_cupy\n"
        "cupy = sys.modules['cupy'] = fake_cupy()\n"
        "x = np.random.default_rng(0).random((20, 30))\n"
        "t = torch.tensor(x)\n"
        "z = x + 1j * x[::-1]\n"
        "zc = z.view(cupy.ndarray)\n"
        "for got, ref in (\n"
        "    (sepconv.gaussian_filter(t, 1.5), ndimage.gaussian_filter(x, 1.5)),\n"
        "    (sepconv.correlate(t, np.ones((3, 4))), ndimage.correlate(x, np.ones((3, 4)))),\n"
        "    (sepconv.sobel(t, workers=None), ndimage.sobel(x)),\n"
        "    (sepconv.uniform_filter(x.view(cupy.ndarray), 3), ndimage.uniform_filter(x, 3)),\n"
        "    (sepconv.gaussian_filter(zc, 1.0), ndimage.gaussian_filter(z, 1.0)),\n"
        "):\n"
        "    assert np.abs(np.asarray(got) - ref).max() < 1e-12\n"
        "assert 'sepconv.backends.numpy' not in sys.modules\n"
        "# the GPU engine too (here in Triton's interpreter, as on a GPU for CUDA tensors)\n"
        "import os\n"
        "os.environ.update(TRITON_INTERPRET='1', SEPCONV_TORCH_ENGINE='triton')\n"
        "from sepconv.backends import torch as backend\n"
        "from sepconv.engine import triton_gpu\n"
        "assert backend.gpu_engine(t) is triton_gpu\n"
        "got = sepconv.gaussian_filter(t, 1.5)\n"
        "assert np.abs(got.numpy() - ndimage.gaussian_filter(x, 1.5)).max() < 1e-12\n"
    )
    run_python(code)


def run_python(code: str) -> None:
    """``code`` in a fresh interpreter (what it imports is its own), which must succeed."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# autograd around real training loops, dtypes of complex results, numpy arrays torch refuses
# ---------------------------------------------------------------------------------------------


def test_gradients_still_work_after_a_call_in_inference_mode():
    """The cached border-extension indices made inside ``torch.inference_mode`` (a
    validation step) must not be inference tensors: the next training step saves them for
    backward. Checked against finite differences."""
    with torch.inference_mode():
        sepconv.gaussian_filter(torch.rand(6, 7), 1.0)
        sepconv.sobel(torch.rand(6, 7), 0, mode="constant")
    x = torch.rand(6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: sepconv.gaussian_filter(v, 1.0), (x,))
    assert torch.autograd.gradcheck(lambda v: sepconv.sobel(v, 0, mode="constant"), (x,))


def test_gradient_magnitude_gradient_is_finite_where_the_image_is_flat():
    """``hypot``'s own gradient is 0/0 where the magnitude is 0: a flat region trained NaN.
    The gradient there is 0 (as ``torch.linalg.vector_norm``'s); elsewhere it matches finite
    differences."""
    img = torch.zeros(16, 16, dtype=torch.float64)
    img[:8, :8] = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = img.requires_grad_()
    weights = torch.rand(16, 16, dtype=torch.float64)
    got = sepconv.gaussian_gradient_magnitude(x, 1.0)
    (grad,) = torch.autograd.grad((got * weights).sum(), x)
    assert bool(torch.isfinite(grad).all())
    # reference: the two derivative filters (differentiable themselves), torch's norm
    parts = [sepconv.gaussian_filter(x, 1.0, order=o) for o in ((1, 0), (0, 1))]
    ref = torch.linalg.vector_norm(torch.stack(parts), dim=0)
    (want,) = torch.autograd.grad((ref * weights).sum(), x)
    assert bool((ref == 0).any())  # the flat region is there
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_complex_results_have_numpys_dtypes():
    x = np.random.default_rng(4).random((5, 6))
    ref = ndimage.gaussian_filter(x, 1.0).astype(np.complex64)  # scipy refuses this output
    got = sepconv.gaussian_filter(torch.from_numpy(x), 1.0, output=torch.complex64)
    assert got.dtype == torch.complex64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)
    w = np.array([1j, 2, 3])
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.float32):
        a = np.arange(12, dtype=dt).reshape(3, 4)
        ref = ndimage.correlate1d(a, w)
        got = sepconv.correlate1d(torch.from_numpy(a), w)
        assert str(got.dtype).removeprefix("torch.") == ref.dtype.name, dt
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)


def test_torch_facade_takes_numpy_arrays_torch_itself_refuses():
    img = np.random.default_rng(5).random((8, 9))
    for a in (img[::-1], np.flip(img, 1), img.astype(">f8"), img.astype(">f4")[::2]):
        got = storch.gaussian_filter(a, 1.0)
        assert isinstance(got, torch.Tensor)
        ref = ndimage.gaussian_filter(a.astype(np.float64), 1.0)
        np.testing.assert_allclose(got.numpy(), ref, rtol=2e-6 if a.dtype.itemsize == 4 else 1e-12)
    got = sepconv.gaussian_filter(torch.from_numpy(img), 1.0, output=">f4")  # byte order: moot
    assert got.dtype == torch.float32
    with pytest.raises(
        TypeError, match="output must be None, a dtype torch has or a tensor, got 'U5'"
    ):
        sepconv.gaussian_filter(torch.from_numpy(img), 1.0, output="U5")
