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


def test_bounded_search_takes_specs_and_kernel_files(tmp_path) -> None:
    f = separate_within("difference_of_gaussians:sigma1=1,sigma2=2,ndim=3", 4, 0.05)
    assert f is not None and f.rank == 2 and f.exact
    path = tmp_path / "dog.npy"
    np.save(path, kernels.difference_of_gaussians(1.0, 2.0, ndim=3))
    for arg in (path, str(path)):
        g = separate_within(arg, 4, 0.05)
        assert g is not None and g.rank == 2
        np.testing.assert_allclose(g.to_dense(), np.load(path), atol=1e-14)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got -1"):
        separate_within(path, 4, -1)


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


# ----------------------------------------------------------------------------------------------
# a time model per device: GPU arrays are planned with the GPU's measured model
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_models(tmp_path, monkeypatch):
    """No GPU model known, no calibration file: the planner's state of a fresh process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(plan, "DEVICE_TIME_MODELS", {})
    monkeypatch.setattr(plan, "_loaded", set())
    monkeypatch.setattr(plan, "TIME_MODEL", dict(plan.DEFAULT_TIME_MODEL))
    plan.set_time_model({})  # drops plans cached under another model
    yield plan
    plan.set_time_model({})


#: A GPU model under which FFTs are nearly free (no GPU is measured here: a stand-in that
#: makes the planner's choice visible).
FFT_CHEAP = {"passes": (1.0, 1.0, 1.0), "direct": (1.0, 1.0, 1.0), "fft": (1e-6, 0.0, 1e-3)}


def test_an_unmeasured_gpu_is_planned_with_the_cpu_model_and_says_so(fresh_models) -> None:
    K = np.outer(kernels.gaussian1d(2.0), kernels.gaussian1d(3.0))
    cpu = plan.make_plan(K, (256, 256))
    gpu = plan.make_plan(K, (256, 256), device="cuda")
    assert plan.time_model("cuda") is None
    assert gpu.method == cpu.method and gpu.time_ms == cpu.time_ms
    assert "sepconv calibrate --device cuda" in gpu.reason
    assert "calibrate" not in cpu.reason
    with pytest.raises(ValueError, match=r"device must be one of \['cpu', 'cuda'\], got 'tpu'"):
        plan.make_plan(K, (256, 256), device="tpu")


def test_a_measured_gpu_model_decides_for_gpu_arrays_only(fresh_models) -> None:
    K = np.outer(kernels.gaussian1d(2.0), kernels.gaussian1d(3.0))
    before = plan.make_plan(K, (256, 256))
    plan.set_time_model(FFT_CHEAP, "cuda")
    assert plan.make_plan(K, (256, 256), device="cuda").method == "fft"
    assert plan.make_plan(K, (256, 256)).method == before.method != "fft"
    assert plan.estimate_time("fft", 1e6, 1, 1.0, "cuda") == pytest.approx(1.001)


def test_the_gpu_calibration_file_is_loaded_for_gpu_arrays(fresh_models) -> None:
    import json

    path = plan.calibration_path("cuda")
    assert path.name.endswith("-cuda.json") and path != plan.calibration_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"time_model": FFT_CHEAP}))
    assert plan.time_model("cuda") == {k: tuple(v) for k, v in FFT_CHEAP.items()}
    assert plan.time_model("cpu") == plan.DEFAULT_TIME_MODEL  # the CPU's is not touched


def test_filters_plan_torch_cuda_tensors_with_the_gpu_model(fresh_models, monkeypatch) -> None:
    """The backend names the device (here a CPU tensor passed off as a CUDA one, so the torch
    path runs it): the job the filter builds follows the GPU model, and the result is right."""
    torch = pytest.importorskip("torch")
    from sepconv.backends import torch as backend

    plan.set_time_model(FFT_CHEAP, "cuda")
    seen = []
    run = backend.run

    def spy(x, job, *args):
        seen.append(job.method)
        return run(x, job, *args)

    monkeypatch.setattr(backend, "run", spy)
    x = np.random.default_rng(0).random((40, 50))
    K = np.outer(kernels.gaussian1d(1.5), kernels.gaussian1d(2.0))
    got = sepconv.correlate(torch.tensor(x), K)
    monkeypatch.setattr(backend, "device_kind", lambda t: "cuda")
    got_gpu = sepconv.correlate(torch.tensor(x), K)
    assert seen[0] != "fft" and seen[1] == "fft"
    for g in (got, got_gpu):
        np.testing.assert_allclose(g.numpy(), ndimage.correlate(x, K), rtol=0, atol=1e-12)


def test_calibrating_a_missing_gpu_is_a_clear_error(fresh_models) -> None:
    torch = pytest.importorskip("torch")
    from sepconv.calibrate import calibrate

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        calibrate(device="cuda", save=False)
    with pytest.raises(ValueError, match="device must be one of"):
        calibrate(device="gpu", save=False)
    assert not plan.calibration_path("cuda").exists()


@pytest.mark.gpu
def test_calibrating_the_gpu_measures_a_model_for_gpu_arrays(fresh_models) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from sepconv.calibrate import calibrate

    result = calibrate(device="cuda", quick=True, repeats=2)
    assert plan.calibration_path("cuda").is_file()
    assert result["device"].startswith("cuda")
    for per_mac, per_pass, per_call in result["time_model"].values():
        assert per_mac > 0 and per_pass >= 0 and per_call >= 0
    assert plan.time_model("cuda") == result["time_model"]
    assert plan.time_model("cpu") == plan.DEFAULT_TIME_MODEL


# ---------------------------------------------------------------------------------------------
# make_plan's inputs: complex kernels, spec strings and paths, negative sizes
# ---------------------------------------------------------------------------------------------


def _gaussian_impulse_response(sigma: float, radius: int) -> np.ndarray:
    """scipy's own Gaussian kernel: gaussian_filter of a centred delta (independent reference)."""
    delta = np.zeros((2 * radius + 1,) * 2)
    delta[radius, radius] = 1.0
    return ndimage.gaussian_filter(delta, sigma, mode="constant", truncate=radius / sigma)


def test_make_plan_refuses_a_complex_kernel_instead_of_planning_its_real_part() -> None:
    """make_plan used to drop the imaginary part with only a ComplexWarning; the filters plan
    each part on their own, which the message points to (and which is checked here)."""
    K = kernels.gaussian(1.5) + 1j * np.pad(kernels.sobel(0), 5)
    with pytest.raises(TypeError, match=r"kernel must be real for make_plan, got dtype complex128"):
        sepconv.make_plan(K, (256, 256))
    with pytest.raises(TypeError, match="real and imaginary parts separately"):
        sepconv.make_plan(K.astype(np.complex64), (256, 256), method="direct")
    x = np.random.default_rng(3).standard_normal((40, 37))
    # correlation conjugates complex weights (np.correlate's rule): real part K.real, imag -K.imag
    expected = ndimage.correlate(x, K.real) - 1j * ndimage.correlate(x, K.imag)
    np.testing.assert_allclose(sepconv.correlate(x, K), expected, atol=1e-12)


def test_make_plan_accepts_a_spec_string_and_a_path(tmp_path) -> None:
    G = _gaussian_impulse_response(2.0, 8)
    p = sepconv.make_plan("gaussian:sigma=2", (1024, 1024))
    assert p.method == "separable"
    np.testing.assert_allclose(p.factorization.to_dense(), G, atol=1e-15)
    path = tmp_path / "g.npy"
    np.save(path, G.astype(np.float32))
    for spec in (path, str(path)):
        q = sepconv.make_plan(spec, (1024, 1024))
        assert q.method == "separable"
        assert q.factorization.precision == "float32"  # the dtype stored in the file
        np.testing.assert_allclose(q.factorization.to_dense(), G, atol=1e-7)
    with pytest.raises(ValueError, match="gaussian"):
        sepconv.make_plan("gaussian:sigma=-2", (64, 64))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"data_shape": (-5, 10)}, ValueError, r"data_shape\[0\] must be an integer >= 0, got -5"),
        ({"data_shape": (10, -1)}, ValueError, r"data_shape\[1\] must be an integer >= 0, got -1"),
        ({"data_shape": (64, 64), "size": -4}, ValueError, r"size must be an integer >= 0, got -4"),
        ({"data_shape": (64.5, 64)}, TypeError, r"data_shape\[0\] must be an integer, got 64.5"),
        ({"data_shape": 64}, TypeError, r"data_shape must be a sequence of integers >= 0, got 64"),
        ({"data_shape": (64, 64), "size": True}, TypeError, r"size must be an integer, got True"),
    ],
)
def test_make_plan_refuses_negative_or_non_integer_sizes(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        sepconv.make_plan(kernels.gaussian(2.0), **kwargs)
    if isinstance(kwargs["data_shape"], tuple) and kwargs.get("size") is None:
        with pytest.raises(exc, match=match):
            plan.plan_terms((9, 9), 1, kwargs["data_shape"])


def test_make_plan_still_takes_empty_data_and_numpy_integers() -> None:
    K = kernels.gaussian(2.0)
    assert sepconv.make_plan(K, (0, 64)).method in plan.METHODS
    a = sepconv.make_plan(K, (np.int64(1024), np.int32(1024)), size=np.int64(1 << 20))
    assert a.method == sepconv.make_plan(K, (1024, 1024)).method == "separable"


def test_2d_plan_reason_says_one_svd_not_a_planning_budget() -> None:
    """2-D ranks are decided exactly by one SVD: the reason no longer speaks of a budget."""
    R = np.random.default_rng(0).random((15, 15))
    p = sepconv.make_plan(R, (256, 256), tol=1e-3)
    assert np.linalg.matrix_rank(R) == 15  # full rank: no cheap low-rank form exists
    assert "one SVD" in p.reason and "planning budget" not in p.reason, p.reason
    assert "within tol=0.001" in p.reason


def test_separable_error_suggests_tol_only_when_none_was_given() -> None:
    R = np.random.default_rng(1).random((9, 9))
    with pytest.raises(ValueError, match=r"rank 9 to float rounding; .*, or pass tol$"):
        sepconv.make_plan(R, (64, 64), method="separable")
    with pytest.raises(ValueError, match=r"within tol=0.01; use method='lowrank' or 'auto'$"):
        sepconv.make_plan(R, (64, 64), method="separable", tol=0.01)
