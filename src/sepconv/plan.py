"""Choose how to run a kernel: direct, separable, low-rank or FFT, from the cost model.

``method='auto'`` picks the cheapest *exact* method (to float rounding) unless ``tol`` allows a
low-rank approximation, so it never changes a result beyond float rounding (or beyond the
error ``tol`` the caller accepted, which the plan reports).
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cost
from .factor import Factorization, separate

__all__ = [
    "DEFAULT_TIME_MODEL",
    "METHODS",
    "TIME_MODEL",
    "Plan",
    "calibrate",
    "calibration_path",
    "estimate_time",
    "make_plan",
]

#: Methods accepted by ``correlate``/``convolve``/``filter``.
METHODS = ("auto", "direct", "separable", "lowrank", "fft")

#: Time model, in ms per million output elements: ``(per MAC, per pass over the data)``.
#: Defaults measured on a 2-core x86-64 machine (AVX2) with 1024x1024 float32 data: a 1-D
#: pass (or a fused pair of 2-D passes) costs ~0.3 ms of memory traffic plus ~0.06 ms per
#: tap; direct is a shift-and-add over a padded copy (~3 ms plus ~0.045 ms per tap); FFT is
#: scipy.fft, per MAC of the model in :func:`sepconv.cost.kernel_macs`. ``sepconv
#: calibrate`` measures this machine and caches the result (see :func:`calibrate`).
DEFAULT_TIME_MODEL = {"passes": (0.06, 0.3), "direct": (0.045, 3.0), "fft": (0.48, 0.0)}
TIME_MODEL = dict(DEFAULT_TIME_MODEL)
_loaded = False


def calibration_path() -> Path:
    """Where ``sepconv calibrate`` caches this machine's time model."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sepconv" / f"calibration-{platform.node() or 'host'}.json"


def _load_calibration() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    path = calibration_path()
    try:
        data = json.loads(path.read_text())
        model = {k: (float(v[0]), float(v[1])) for k, v in data["time_model"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return
    if set(model) == set(DEFAULT_TIME_MODEL) and all(
        math.isfinite(a) and math.isfinite(b) and a > 0 and b >= 0 for a, b in model.values()
    ):
        TIME_MODEL.update(model)


def estimate_time(method: str, macs: float, passes: int = 1) -> float:
    """Modelled ms per million outputs of running ``macs`` MACs per output in ``passes`` passes."""
    _load_calibration()
    per_mac, per_pass = TIME_MODEL["passes" if method in ("separable", "lowrank") else method]
    return per_mac * macs + per_pass * passes


def calibrate(*, size: int = 1024, repeats: int = 5, save: bool = True) -> dict[str, Any]:
    """Measure this machine's time model (a least-squares fit per method) and cache it.

    Times float32 ``size x size`` correlations with random kernels of several sizes by each
    method (median of ``repeats``) and fits ``ms per Mpixel = per_mac * MACs + per_pass *
    passes``. Takes about ten seconds. The planner loads the cached model on first use.
    """
    import time

    from .filters import correlate

    x = np.random.default_rng(0).random((size, size)).astype(np.float32)
    mpix = size * size / 1e6
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in DEFAULT_TIME_MODEL}

    def timed(fn: Any) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) * 1e3 / mpix

    rng = np.random.default_rng(1)
    for k in (3, 7, 15, 31):
        K = rng.standard_normal((k, k))
        rows["direct"].append((k * k, 1.0, timed(lambda K=K: correlate(x, K, method="direct"))))
        fmacs = float(cost.kernel_macs((k, k), "fft", data_shape=(size, size)))
        rows["fft"].append((fmacs, 0.0, timed(lambda K=K: correlate(x, K, method="fft"))))
        for r in (1, 2):
            f = separate(K, rank=r)
            t = timed(lambda f=f: correlate(x, f, method="lowrank"))
            rows["passes"].append((float(f.macs), float(r * 2), t))
    model: dict[str, tuple[float, float]] = {}
    for name, data in rows.items():
        A = np.array([[m, p] for m, p, _ in data])
        y = np.array([t for _, _, t in data])
        if not A[:, 1].any():  # FFT: no per-pass term
            coef = np.array([float(np.linalg.lstsq(A[:, :1], y, rcond=None)[0][0]), 0.0])
        else:
            coef = np.linalg.lstsq(A, y, rcond=None)[0]
        per_mac = max(float(coef[0]), 1e-4)
        per_pass = max(float(coef[1]), 0.0)
        model[name] = (per_mac, per_pass)
    result = {"machine": platform.node(), "size": size, "time_model": model}
    if save:
        path = calibration_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
        result["path"] = str(path)
    TIME_MODEL.update(model)
    return result


#: Factorizations of recently planned kernels (planning a 3-D kernel can take a while).
_CACHE: OrderedDict[tuple, Factorization] = OrderedDict()
_CACHE_SIZE = 64


@dataclass(frozen=True)
class Plan:
    """How a kernel will run: the method, its factorization (if any) and its cost."""

    method: str
    factorization: Factorization | None
    macs: float
    reason: str

    @property
    def rank(self) -> int | None:
        return None if self.factorization is None else self.factorization.rank

    @property
    def error(self) -> float:
        """Relative Frobenius error of the kernel actually run (0 for direct and FFT)."""
        return 0.0 if self.factorization is None else self.factorization.error


def _factorize(K: np.ndarray, tol: float | None) -> Factorization:
    key = (K.shape, K.tobytes(), tol)
    f = _CACHE.get(key)
    if f is None:
        f = separate(K, tol=tol)
        _CACHE[key] = f
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return f


def _lower_rank_bound(K: np.ndarray) -> int:
    """max multilinear rank: no sum of fewer separable terms can reproduce K (cheap)."""
    if K.ndim == 1:
        return 1
    best = 1
    for k in range(K.ndim):
        s = np.linalg.svd(np.moveaxis(K, k, 0).reshape(K.shape[k], -1), compute_uv=False)
        if s[0] == 0:
            return 0
        best = max(best, int(np.count_nonzero(s > s[0] * max(K.shape) * 4 * np.finfo(float).eps)))
    return best


def _stages(ndim: int) -> int:
    """Passes over the data per separable term (the engine fuses the last two axes)."""
    return max(1, ndim - 1)


def make_plan(
    kernel: np.ndarray | Factorization,
    data_shape: Sequence[int],
    *,
    method: str = "auto",
    tol: float | None = None,
) -> Plan:
    """Plan the correlation of data whose filtered axes have ``data_shape`` with ``kernel``.

    Parameters
    ----------
    kernel : ndarray or Factorization
        Dense float64 kernel (one axis per filtered axis) or a ready factorization, which is
        run as given by ``'lowrank'``/``'separable'``/``'auto'``.
    data_shape : sequence of int
        Lengths of the filtered axes (for the FFT cost).
    method : {'auto', 'direct', 'separable', 'lowrank', 'fft'}
    tol : float, optional
        Relative Frobenius error allowed to a low-rank plan; default exact to float rounding.

    Raises
    ------
    ValueError
        Unknown method, or ``'separable'`` for a kernel that is not separable within ``tol``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    given: Factorization | None = None
    if isinstance(kernel, Factorization):
        given, K = kernel, kernel.kernel
    else:
        K = kernel
    shape = K.shape
    direct = float(math.prod(shape))
    fft = float(cost.kernel_macs(shape, "fft", data_shape=[max(1, n) for n in data_shape]))
    if method == "direct":
        return Plan("direct", None, direct, "requested")
    if method == "fft":
        return Plan("fft", None, fft, "requested")
    if method in ("separable", "lowrank"):
        f = given if given is not None else _factorize(K, tol)
        if method == "separable" and f.rank > 1:
            allowed = "within tol" if tol is not None else "to float rounding"
            raise ValueError(
                f"method='separable' needs a separable kernel, but this {shape} kernel has "
                f"separable rank {f.rank} {allowed}; use method='lowrank' or 'auto', or pass tol"
            )
        return Plan(method, f, float(f.macs), "requested")

    # auto: the fastest of the exact candidates (or of those within tol)
    candidates = [
        ("direct", direct, estimate_time("direct", direct)),
        ("fft", fft, estimate_time("fft", fft)),
    ]
    best_other = min(c[2] for c in candidates)
    if given is not None:
        f = given
    else:
        lower = _lower_rank_bound(K)
        cheapest_passes = estimate_time("lowrank", lower * sum(shape), lower * _stages(K.ndim))
        if tol is None and cheapest_passes >= best_other:
            name, macs, _ = min(candidates, key=lambda c: c[2])
            why = f"separable rank >= {lower}: passes would cost more than {name}"
            return Plan(name, None, macs, why)
        f = _factorize(K, tol)
    if f.rank >= 1 and (f.exact or tol is not None or given is not None):
        name = "separable" if f.rank == 1 else "lowrank"
        passes = f.rank * _stages(K.ndim)
        candidates.append((name, float(f.macs), estimate_time(name, f.macs, passes)))
    name, macs, _ = min(candidates, key=lambda c: c[2])
    reason = "; ".join(f"{n}: {m:.0f} MACs, ~{t:.1f} ms/Mpixel" for n, m, t in candidates)
    return Plan(name, f if name in ("separable", "lowrank") else None, macs, reason)
