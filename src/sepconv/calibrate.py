"""Measure this machine's time model for the planner: ``sepconv calibrate``.

A benchmark, not part of planning: it times correlations by each method and fits the three
coefficients per method of :data:`sepconv.plan.TIME_MODEL`, caches them in
:func:`sepconv.plan.calibration_path` (loaded by the planner in later processes) and hands them
to the planner (:func:`sepconv.plan.set_time_model`).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from typing import Any

import numpy as np

from . import cost
from ._timing import cuda_seconds, median_time
from .factor import separate
from .filters import correlate
from .plan import DEVICES, TIME_MODEL, calibration_path, set_time_model

__all__ = ["calibrate"]


def calibrate(
    *, repeats: int = 5, save: bool = True, quick: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Measure this machine's time model (a least-squares fit per method) and cache it.

    Times float32 correlations of 256x256 and 1024x1024 images (on ``'cuda'``: 1024^2 and
    4096^2 CUDA tensors, CUDA events around each call) with random kernels of several sizes
    and ranks by each method (median of ``repeats``) and fits the three coefficients of
    ``TIME_MODEL``. Takes about ten seconds (``quick``: one size, fewer kernels). The planner
    loads the cached model on first use in later processes, for arrays on that device.

    Raises
    ------
    ValueError
        ``device`` is not 'cpu' or 'cuda', or ``'cuda'`` without a CUDA device (or torch).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    if device == "cuda":
        to_device, timed = _cuda(repeats)
        sizes = (1024,) if quick else (1024, 4096)
    else:

        def to_device(x: np.ndarray) -> Any:
            return x

        def timed(fn: Any) -> float:
            return median_time(fn, repeats=repeats, warmup=1) * 1e3

        sizes = (256,) if quick else (256, 1024)
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in TIME_MODEL}
    rng = np.random.default_rng(1)
    ks = (3, 15) if quick else (3, 7, 15, 31, 63)
    for size in sizes:
        x = to_device(rng.random((size, size)).astype(np.float32))
        mpix = size * size / 1e6
        for k in ks:
            K = rng.standard_normal((k, k))
            t = timed(lambda K=K, x=x: correlate(x, K, method="direct"))
            rows["direct"].append((mpix * k * k, mpix, 1.0, t))
            fmacs = float(cost.kernel_macs((k, k), "fft", data_shape=(size, size)))
            t = timed(lambda K=K, x=x: correlate(x, K, method="fft"))
            rows["fft"].append((mpix * fmacs, 0.0, 1.0, t))
            for r in (1, 3):
                f = separate(K, rank=min(r, k))
                t = timed(lambda f=f, x=x: correlate(x, f, method="lowrank"))
                rows["passes"].append((mpix * f.macs, mpix * f.rank, float(f.rank), t))
    model: dict[str, tuple[float, float, float]] = {}
    for name, data in rows.items():
        A = np.array([r[:3] for r in data])
        y = np.array([r[3] for r in data])
        cols = [c for c in range(3) if A[:, c].any()]
        coef = np.zeros(3)
        coef[cols] = _nonnegative_lstsq(A[:, cols], y)
        coef[0] = max(coef[0], 1e-4 if device == "cpu" else 1e-7)
        model[name] = (float(coef[0]), float(coef[1]), float(coef[2]))
    result: dict[str, Any] = {
        "machine": platform.node(),
        "device": device if device == "cpu" else _cuda_name(),
        "sizes": sizes,
        "time_model": model,
    }
    if save:
        path = calibration_path(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
        result["path"] = str(path)
    set_time_model(model, device)
    return result


def _cuda(repeats: int) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], float]]:
    """A CUDA tensor maker and a timer: the median of CUDA events around each call (after one
    untimed call: Triton compiles and autotunes on first use)."""
    try:
        import torch
    except ImportError:
        raise ValueError(
            "device 'cuda' needs a CUDA build of torch (pip install torch; 'sepconv[gpu]' "
            "adds Triton)"
        ) from None
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available (no CUDA device is visible)")

    def to_device(x: np.ndarray) -> Any:
        return torch.from_numpy(x).to("cuda")

    def timed(fn: Any) -> float:
        fn()
        torch.cuda.synchronize()
        return float(np.median([cuda_seconds(fn) for _ in range(repeats)])) * 1e3

    return to_device, timed


def _cuda_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name()})"


def _nonnegative_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    # relative residuals: small and large problems matter equally
    w = 1.0 / np.maximum(y, 1e-3)
    return nnls(A * w[:, None], y * w)[0]
