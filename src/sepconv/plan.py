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
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import cost
from ._validate import as_kernel, check_nonnegative_int
from .factor import (
    Factorization,
    kernel_precision,
    max_useful_rank,
    rank_lower_bound,
    separate,
    separate_within,
)
from .job import (  # the per-pass engine rule lives in the core; re-exported here
    FFT_PASS_TAPS,
    RECURSIVE_TAPS,
    RUNNING_TAPS,
    pass_engine,
)

__all__ = [
    "DEFAULT_TIME_MODEL",
    "DEVICES",
    "DEVICE_TIME_MODELS",
    "METHODS",
    "TIME_MODEL",
    "Plan",
    "SlowMethodWarning",
    "calibration_path",
    "estimate_time",
    "make_plan",
    "pass_engine",
    "plan_passes",
    "plan_terms",
    "set_time_model",
    "time_model",
]

#: Methods accepted by ``correlate``/``convolve``/``filter``.
METHODS = ("auto", "direct", "separable", "lowrank", "fft")

#: Time model per method: ``(per MAC, per pass, per call)``. A method running ``macs``
#: multiply-adds per output in ``passes`` passes over ``mpix`` million outputs is modelled to
#: take ``mpix * (per_mac * macs + per_pass * passes) + per_call * passes`` milliseconds.
#: Defaults measured on a 2-core x86-64 (AVX2) machine with float32 data; separable passes
#: count one pass per term in 2-D (the engine fuses the last two axes); direct is one pass
#: (plus a padded copy); FFT is scipy.fft, per MAC of :func:`sepconv.cost.kernel_macs`.
#: ``sepconv calibrate`` measures this machine and caches the result
#: (:func:`sepconv.calibrate.calibrate`).
DEFAULT_TIME_MODEL: dict[str, tuple[float, float, float]] = {
    "passes": (0.12, 0.0, 0.17),
    "direct": (0.055, 3.9, 0.09),
    "fft": (0.63, 0.0, 0.89),
}
TIME_MODEL = dict(DEFAULT_TIME_MODEL)
#: Devices the planner models: ``'cpu'`` (the numpy engines; ``TIME_MODEL``) and ``'cuda'``
#: (CUDA tensors and CuPy arrays: the Triton engine, torch.fft).
DEVICES = ("cpu", "cuda")
#: Time models of the other devices, measured by ``sepconv calibrate --device cuda`` (cached
#: per host and loaded on first use). None is built in: until the GPU is measured, a GPU plan
#: uses the CPU model and says so in its reason.
DEVICE_TIME_MODELS: dict[str, dict[str, tuple[float, float, float]]] = {}
_loaded: set[str] = set()


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    return device


def time_model(device: str = "cpu") -> dict[str, tuple[float, float, float]] | None:
    """The time model the planner uses for ``device`` (None: a GPU not measured yet)."""
    _load_calibration(_check_device(device))
    return TIME_MODEL if device == "cpu" else DEVICE_TIME_MODELS.get(device)


def set_time_model(model: dict[str, tuple[float, float, float]], device: str = "cpu") -> None:
    """Use ``model`` (as measured by :func:`sepconv.calibrate.calibrate`) for ``device`` from
    now on; cached plans, made with the previous model, are dropped."""
    if _check_device(device) == "cpu":
        TIME_MODEL.update(model)
    else:
        DEVICE_TIME_MODELS[device] = dict(model)
    with _LOCK:
        _PLANS.clear()
        _WITHIN.clear()


def calibration_path(device: str = "cpu") -> Path:
    """Where ``sepconv calibrate`` caches this machine's time model (per device)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    suffix = "" if _check_device(device) == "cpu" else f"-{device}"
    return Path(base) / "sepconv" / f"calibration-{platform.node() or 'host'}{suffix}.json"


def _load_calibration(device: str = "cpu") -> None:
    if device in _loaded:
        return
    _loaded.add(device)
    try:
        data = json.loads(calibration_path(device).read_text())
        model = {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in data["time_model"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if set(model) == set(DEFAULT_TIME_MODEL) and all(
        all(math.isfinite(x) and x >= 0 for x in v) and v[0] > 0 for v in model.values()
    ):
        if device == "cpu":
            TIME_MODEL.update(model)
        else:
            DEVICE_TIME_MODELS.setdefault(device, model)


def estimate_time(
    method: str, macs: float, passes: int = 1, mpix: float = 1.0, device: str = "cpu"
) -> float:
    """Modelled milliseconds for ``mpix`` million outputs on ``device`` (see ``TIME_MODEL``;
    a device not measured yet: the CPU's)."""
    model = time_model(device) or time_model("cpu")
    assert model is not None
    per_mac, per_pass, per_call = model["passes" if method in ("separable", "lowrank") else method]
    return mpix * (per_mac * macs + per_pass * passes) + per_call * passes


#: Factorizations of recently planned kernels (planning a 3-D kernel can take a while).
_CACHE: OrderedDict[tuple, Factorization] = OrderedDict()
_CACHE_SIZE = 64
#: Plans of recent (kernel, data shape, method, tol) requests: planning costs SVDs.
_PLANS: OrderedDict[tuple, Plan] = OrderedDict()
#: Both caches are shared by every thread (filters run in thread pools and under dask's
#: threaded scheduler): they are read and updated under this lock; planning itself runs
#: outside it (two threads may plan the same kernel once each, never corrupt the cache).
_LOCK = threading.Lock()


def _cache_get(cache: OrderedDict, key: tuple) -> Any:
    with _LOCK:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value


def _cache_put(cache: OrderedDict, key: tuple, value: Any, limit: int) -> None:
    with _LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > limit:
            cache.popitem(last=False)


@dataclass(frozen=True)
class Plan:
    """How a kernel will run: the method, its factorization (if any) and its cost."""

    method: str
    factorization: Factorization | None
    macs: float
    reason: str
    time_ms: float = math.nan
    #: Separable terms run when they come from the kernel itself (``plan_terms``).
    terms: int | None = None
    #: ``method='recursive'`` (an IIR Gaussian): a guaranteed bound on
    #: ``|result - exact FIR result| / max|input|`` (:func:`plan_passes`); 0 otherwise.
    bound: float = 0.0

    @property
    def rank(self) -> int | None:
        if self.factorization is None:
            return self.terms
        return self.factorization.rank

    @property
    def error(self) -> float:
        """Relative Frobenius error of the kernel actually run (0 for direct and FFT)."""
        return 0.0 if self.factorization is None else self.factorization.error


#: Least seconds the planner may spend searching an N-D kernel's separable form (the budget
#: is 10% of the filter's predicted time when that is larger).
PLANNING_SECONDS = 0.05
#: Results of bounded searches, None included (a search that found nothing is not repeated).
_WITHIN: OrderedDict[tuple, Factorization | None] = OrderedDict()


def _factorize_within(
    K: np.ndarray, tol: float | None, precision: np.dtype, max_terms: int, seconds: float
) -> Factorization | None:
    key = (K.shape, K.tobytes(), tol, precision.name, max_terms)
    with _LOCK:
        if key in _WITHIN:
            _WITHIN.move_to_end(key)
            return _WITHIN[key]
    f = separate_within(K, max_terms, seconds, tol=tol, precision=precision)
    with _LOCK:
        _WITHIN[key] = f
        while len(_WITHIN) > _CACHE_SIZE:
            _WITHIN.popitem(last=False)
    return f


def _factorize(K: np.ndarray, tol: float | None, precision: np.dtype) -> Factorization:
    key = (K.shape, K.tobytes(), tol, precision.name)
    f = _cache_get(_CACHE, key)
    if f is None:
        f = separate(K, tol=tol, precision=precision)
        _cache_put(_CACHE, key, f, _CACHE_SIZE)
    return f


def _stages(ndim: int, device: str = "cpu") -> int:
    """Passes over the data per separable term: the engines fuse the last two axes, and the
    CPU engine joins a pass along the third axis from the end to them (a volume: one)."""
    if device == "cpu":
        return max(1, ndim - 2)
    return max(1, ndim - 1)


def make_plan(
    kernel: np.ndarray | Factorization | str | os.PathLike[str],
    data_shape: Sequence[int],
    *,
    method: str = "auto",
    tol: float | None = None,
    size: int | None = None,
    precision: Any = None,
    device: str = "cpu",
) -> Plan:
    """Plan the correlation of data whose filtered axes have ``data_shape`` with ``kernel``.

    Parameters
    ----------
    kernel : ndarray or Factorization or str or os.PathLike
        Dense real kernel (one axis per filtered axis), a spec or file path read by
        :func:`sepconv.kernels.from_spec` (``"gaussian:sigma=2"``, ``"k.npy"``), or a ready
        factorization, which is run as given by ``'lowrank'``/``'separable'``/``'auto'``.
        Complex kernels are refused (a plan has one factorization: plan the real and
        imaginary parts separately, as :func:`sepconv.correlate` does).
    data_shape : sequence of int
        Lengths of the filtered axes (for the FFT cost), integers >= 0.
    method : {'auto', 'direct', 'separable', 'lowrank', 'fft'}
    tol : float, optional
        Relative Frobenius error allowed to a low-rank plan; default exact to float rounding.
    size : int, optional
        Total number of output elements, >= 0 (default ``prod(data_shape)``), for the time
        model.
    precision : dtype, optional
        Precision the kernel's separable rank is judged at (see :func:`sepconv.separate`);
        default: the kernel's own dtype (float32 kernels at float32 rounding), so a kernel
        gets the same plan whether it is given in float32 or float64.
    device : {'cpu', 'cuda'}
        Where the filter runs: whose time model decides (``'cuda'``: the one measured by
        ``sepconv calibrate --device cuda``; the CPU's, said in the reason, until then).

    Returns
    -------
    Plan
        ``method``, ``factorization`` (for separable/low-rank), ``macs`` per output, the
        modelled ``time_ms`` and a ``reason`` listing every candidate's estimate.

    Raises
    ------
    TypeError
        A complex kernel; a non-integer ``data_shape`` entry or ``size``.
    ValueError
        Unknown method, ``'separable'`` for a kernel that is not separable within ``tol``, a
        negative ``data_shape`` entry or ``size``.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv import make_plan, kernels
    >>> make_plan(kernels.gaussian(2.0), (1024, 1024)).method
    'separable'
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    given: Factorization | None = kernel if isinstance(kernel, Factorization) else None
    if given is not None:
        prec = kernel_precision(given.kernel, given.precision)
        K = given.kernel
    else:
        prec = kernel_precision(kernel, precision)  # a .npy path: the dtype stored in it
        raw: Any = kernel
        if isinstance(raw, (str, os.PathLike)):
            from .kernels import from_spec

            raw = from_spec(raw)
        if np.iscomplexobj(raw):
            raise TypeError(
                f"kernel must be real for make_plan, got dtype {np.asarray(raw).dtype}: a "
                "plan has one factorization, so plan the real and imaginary parts separately "
                "(sepconv.correlate does this for complex weights)"
            )
        K = as_kernel(raw)
    data = _plan_data_shape(data_shape)
    nout = math.prod(data) if size is None else max(1, check_nonnegative_int(size, "size"))
    _check_device(device)
    key = (K.shape, K.tobytes(), data, nout, method, tol, prec.name, device)
    plan = _cache_get(_PLANS, key) if given is None else None
    if plan is None:
        plan = _make_plan(K, given, data, nout / 1e6, method, tol, prec, device)
        if device != "cpu" and time_model(device) is None:
            plan = replace(
                plan,
                reason=f"{plan.reason} (the CPU's time model: this {device} device is not "
                f"measured yet; run `sepconv calibrate --device {device}`)",
            )
        if given is None:
            _cache_put(_PLANS, key, plan, 128)
    if method != "auto":
        _warn_if_slow(plan, K.shape, data, nout / 1e6, device)
    return plan


def _plan_data_shape(data_shape: Any) -> tuple[int, ...]:
    """``data_shape`` checked (integers >= 0, named by index), each length at least 1 for
    the cost model (a 0-size axis costs what a 1-sample one does)."""
    if isinstance(data_shape, (str, bytes)) or not isinstance(data_shape, (Sequence, np.ndarray)):
        raise TypeError(f"data_shape must be a sequence of integers >= 0, got {data_shape!r}")
    return tuple(
        max(1, check_nonnegative_int(n, f"data_shape[{i}]")) for i, n in enumerate(data_shape)
    )


def plan_terms(
    shape: Sequence[int], nterms: int, data_shape: Sequence[int], *, size: int | None = None
) -> Plan:
    """The plan of a kernel given as its own ``nterms`` separable terms (a named kernel such
    as ``gaussian`` or ``log``, :func:`sepconv.kernels.spec_terms`): 1-D passes, exact, no
    factorization (the dense kernel is never built).

    Examples
    --------
    >>> plan_terms((9, 9), 1, (512, 512)).method, plan_terms((9, 9), 2, (512, 512)).rank
    ('separable', 2)
    """
    data = _plan_data_shape(data_shape)
    mpix = (math.prod(data) if size is None else max(1, check_nonnegative_int(size, "size"))) / 1e6
    method = "separable" if nterms == 1 else "lowrank"
    macs = float(nterms * sum(shape))
    t = estimate_time(method, macs, nterms * _stages(len(shape)), mpix)
    why = f"the kernel's own {nterms} separable term(s): 1-D passes, never built dense"
    return Plan(method, None, macs, why, t, terms=nterms)


_ENGINE_TAPS = {"running": RUNNING_TAPS, "fft": FFT_PASS_TAPS}
#: Methods accepted by the Gaussian filters (``gaussian_filter(method=...)``).
PASS_METHODS = ("auto", "separable", "recursive")


def plan_passes(
    passes: Sequence[tuple[int, Any, int]],
    data_shape: Sequence[int],
    *,
    method: str = "auto",
    tol: float | None = None,
    gaussians: Sequence[tuple[float, int]] | None = None,
    finite: bool = True,
    recursive_ok: bool = True,
    modes: Any = None,
) -> Plan:
    """How a filter given as 1-D passes runs (``gaussian_filter``, ``uniform_filter``...).

    Parameters
    ----------
    passes : sequence of (axis, weights, origin)
        The filter's exact (FIR) passes.
    data_shape : sequence of int
        Shape of the data.
    method : {'auto', 'separable', 'recursive'}
        ``'separable'``: the exact passes, each on the engine :func:`pass_engine` picks
        (direct, running sums, 1-D FFT). ``'recursive'``: Gaussian passes as IIR filters
        (``sepconv.engine.recursive``), an approximation whose error bound the plan reports.
        ``'auto'``: the exact passes, or the recursive filter when ``tol`` allows its bound
        and it is predicted faster.
    tol : float, optional
        Largest accepted ``|result - exact result| / max|input|`` (None: exact only).
    gaussians : sequence of (sigma, order), optional
        Per pass, when the passes are Gaussians (what the recursive filter needs).
    finite : bool
        Whether the data (and ``cval``) is known to be finite (NaN/Inf: no FFT passes, no
        recursion).
    recursive_ok : bool
        Whether the array library can run the recursive filter (numpy only).
    modes : mapping of axis -> canonical mode, optional
        The border mode of each pass's axis (default ``'reflect'``, scipy's).

    Returns
    -------
    Plan
        ``method`` ``'separable'`` or ``'recursive'``, the cost in direct-tap equivalents per
        output (``macs``), the predicted time, the reason (each pass's engine) and, for
        ``'recursive'``, ``bound``.

    Examples
    --------
    >>> from sepconv.kernels import gaussian1d
    >>> w = gaussian1d(32.0)
    >>> p = plan_passes([(0, w, 0), (1, w, 0)], (4096, 4096), gaussians=[(32.0, 0)] * 2)
    >>> p.method, p.reason
    ('separable', 'axis 0: 257 taps by 1-D FFT; axis 1: 257 taps by 1-D FFT')
    """
    if method not in PASS_METHODS:
        raise ValueError(f"method must be one of {list(PASS_METHODS)}, got {method!r}")
    mpix = max(1, math.prod(int(n) for n in data_shape)) / 1e6
    parts, taps = [], 0.0
    for axis, w, origin in passes:
        mode = "reflect" if modes is None else modes[axis]
        engine = pass_engine(np.asarray(w), finite=finite, mode=mode, origin=origin)
        taps += min(len(w), _ENGINE_TAPS.get(engine, len(w)))
        how = {"running": "running sums", "fft": "1-D FFT", "direct": "direct"}[engine]
        parts.append(f"axis {axis}: {len(w)} taps by {how}")
    exact = Plan(
        "separable",
        None,
        taps,
        "; ".join(parts) or "no pass (identity)",
        estimate_time("separable", taps, max(1, len(passes)), mpix),
        terms=1,
    )
    if method == "separable" or (method == "auto" and tol is None):
        return exact
    why_not = _recursive_refusal(passes, gaussians, finite, recursive_ok, data_shape)
    if why_not is not None:
        if method == "recursive":
            raise ValueError(f"method='recursive' cannot run this filter: {why_not}")
        return exact
    assert gaussians is not None
    bound = _chain_bound(
        [_recursive_error(w, s, o)[0] for (_, w, _), (s, o) in zip(passes, gaussians, strict=True)],
        [float(np.abs(np.asarray(w)).sum()) for _, w, _ in passes],
    )
    rtaps = float(RECURSIVE_TAPS * len(passes))
    t = estimate_time("separable", rtaps, max(1, len(passes)), mpix)
    why = (
        f"recursive Gaussian (IIR) on {len(passes)} axes: |error| <= {bound:.2g} x max|input| "
        "against the exact FIR result"
    )
    rec = Plan("recursive", None, rtaps, why, t, terms=1, bound=bound)
    if method == "recursive":
        return rec
    assert tol is not None
    if bound <= tol and t < exact.time_ms:
        return replace(rec, reason=f"{why} (within tol={tol:g}; exact: {exact.reason})")
    return exact


def _recursive_refusal(passes, gaussians, finite, recursive_ok, data_shape) -> str | None:
    """Why the recursive Gaussian cannot (or should not) run these passes, or None."""
    if not recursive_ok:
        return "it runs on numpy arrays only"
    if not finite:
        return "the data (or cval) holds NaN or Inf (an IIR filter spreads them along lines)"
    if gaussians is None or len(gaussians) != len(passes):
        return "it runs Gaussian filters only"
    from .engine import recursive

    for (axis, w, origin), (sigma, order) in zip(passes, gaussians, strict=True):
        if origin != 0 or not recursive.applies(np.float64, sigma, order, "reflect"):
            return (
                f"sigma={sigma:g}, order={order} on axis {axis} is outside its range "
                f"(sigma >= {recursive.MIN_SIGMA:g}, order in {list(recursive.ORDERS)})"
            )
        if len(w) // 2 > 2 * int(data_shape[axis]):
            return (
                f"the kernel on axis {axis} ({len(w)} taps) is far longer than the axis "
                f"({data_shape[axis]}): the exact pass, folded onto the border, is cheaper"
            )
        error, truncation = _recursive_error(w, sigma, order)
        if truncation > error - truncation:
            return (
                f"it approximates the Gaussian truncated at 4 sigma (scipy's default), and the "
                f"{len(w)} taps on axis {axis} (another truncate or radius) differ from those "
                f"by {truncation:.2g} x max|input|, more than its own error"
            )
    return None


def _recursive_error(w: Any, sigma: float, order: int) -> tuple[float, float]:
    """Bound on ``|recursive pass - correlation with w|`` per unit of ``max|x|``, and the part
    of it that comes from ``w`` not being the default-truncated Gaussian the IIR filter is
    designed against (``truncate``/``radius``): ``max_error + ||gaussian1d - w||_1``."""
    from .engine import recursive
    from .kernels import gaussian1d

    w = np.asarray(w, dtype=np.float64)
    ref = gaussian1d(sigma, order=order)
    n = max(len(w), len(ref))
    a, b = np.zeros(n), np.zeros(n)
    a[(n - len(w)) // 2 : (n - len(w)) // 2 + len(w)] = w  # both centred (odd lengths)
    b[(n - len(ref)) // 2 : (n - len(ref)) // 2 + len(ref)] = ref
    truncation = float(np.abs(a - b).sum())
    return recursive.max_error(sigma, order) + truncation, truncation


def _chain_bound(errors: Sequence[float], norms: Sequence[float]) -> float:
    """Bound on a chain of approximate passes: ``|A_1..A_n - F_1..F_n| <= sum_i e_i *
    prod_{j != i} (||F_j||_1 + e_j)`` (operator norms for max|x|; ``e`` the L1 errors of the
    impulse responses, ``||F||_1`` of the exact weights)."""
    total = 0.0
    for i, e in enumerate(errors):
        other = 1.0
        for j, (ej, nj) in enumerate(zip(errors, norms, strict=True)):
            if j != i:
                other *= nj + ej
        total += e * other
    return total


class SlowMethodWarning(UserWarning):
    """An explicitly chosen method is estimated to take far longer than another exact one."""


#: Estimated milliseconds above which an explicitly chosen method that is at least
#: ``SLOW_RATIO`` times slower than another exact method gets a ``SlowMethodWarning``.
SLOW_MS = 30_000.0
SLOW_RATIO = 10.0


def _warn_if_slow(
    plan: Plan, shape: tuple[int, ...], data: tuple[int, ...], mpix: float, device: str
) -> None:
    direct = float(math.prod(shape))
    fft = float(cost.kernel_macs(shape, "fft", data_shape=data))
    others = {
        "direct": estimate_time("direct", direct, 1, mpix, device),
        "fft": estimate_time("fft", fft, 1, mpix, device),
    }
    others.pop(plan.method, None)
    name, best = min(others.items(), key=lambda kv: kv[1])
    if plan.time_ms > SLOW_MS and plan.time_ms > SLOW_RATIO * best:
        import warnings

        warnings.warn(
            f"method={plan.method!r} is estimated to take {plan.time_ms / 1e3:,.0f} s for this "
            f"{shape} kernel on {mpix:.3g} Mpixel, {plan.time_ms / best:,.0f}x the "
            f"{best / 1e3:,.1f} s of method={name!r} (exact too); use method='auto' unless "
            "you mean it",
            SlowMethodWarning,
            stacklevel=3,
        )


def _make_plan(K, given, data, mpix, method, tol, prec, device) -> Plan:
    def est(method: str, macs: float, passes: int) -> float:
        return estimate_time(method, macs, passes, mpix, device)

    shape = K.shape
    stages = _stages(K.ndim, device)
    direct = float(math.prod(shape))
    fft = float(cost.kernel_macs(shape, "fft", data_shape=data))
    if method == "direct":
        return Plan("direct", None, direct, "requested", est("direct", direct, 1))
    # the kernel's spectrum reaches sum|K|: where that overflows float64 (a kernel near
    # 1.7e308), its FFT is inf and the filter NaN, though the result may be finite
    with np.errstate(over="ignore"):
        fft_ok = bool(np.isfinite(np.abs(K).sum()))
    if method == "fft":
        if not fft_ok:
            raise ValueError(
                f"method='fft' cannot run this {shape} kernel: the sum of its magnitudes "
                f"overflows float64 (max |kernel| = {float(np.abs(K).max()):.4g}), so its "
                "Fourier transform is inf; use method='direct', 'separable', 'lowrank' or "
                "'auto'"
            )
        return Plan("fft", None, fft, "requested", est("fft", fft, 1))
    if method in ("separable", "lowrank"):
        f = given if given is not None else _factorize(K, tol, prec)
        if method == "separable" and f.rank > 1:
            allowed = f"within tol={tol!r}" if tol is not None else "to float rounding"
            hint = "" if tol is not None else ", or pass tol"
            raise ValueError(
                f"method='separable' needs a separable kernel, but this {shape} kernel has "
                f"separable rank {f.rank} {allowed}; use method='lowrank' or 'auto'{hint}"
            )
        t = est(method, f.macs, f.rank * stages)
        return Plan(method, f, float(f.macs), "requested", t)

    # auto: the fastest of the exact candidates (or of those within tol)
    candidates = [("direct", direct, est("direct", direct, 1))]
    if fft_ok:
        candidates.append(("fft", fft, est("fft", fft, 1)))
    best_other = min(c[2] for c in candidates)
    if given is not None:
        f = given
        if f.rank >= 1 and not f.exact and tol is None:
            # an approximation given on purpose is the filter asked for: a dense method would
            # run the exact kernel instead, another filter, picked by the time model
            name = "separable" if f.rank == 1 else "lowrank"
            t = est(name, f.macs, f.rank * stages)
            why = f"the given factorization (error {f.error:.3g}), run as its terms"
            return Plan(name, f, float(f.macs), why, t)
    else:
        lower = rank_lower_bound(K, precision=prec)
        cheapest = est("lowrank", lower * sum(shape), lower * stages)
        if tol is None and cheapest >= best_other:
            name, macs, t = min(candidates, key=lambda c: c[2])
            why = f"separable rank >= {lower}: passes would cost more than {name}"
            return Plan(name, None, macs, why, t)
        # only ranks cheaper than the dense methods are worth finding, and the search may
        # cost at most ~10% of the filter's predicted time (50 ms at least)
        useful = 1
        while useful < max_useful_rank(shape) and (
            est("lowrank", (useful + 1) * sum(shape), (useful + 1) * stages) < best_other
        ):
            useful += 1
        budget = max(PLANNING_SECONDS, 0.1 * best_other / 1e3)
        found = _factorize_within(K, tol, prec, useful, budget)
        if found is None:
            name, macs, t = min(candidates, key=lambda c: c[2])
            if K.ndim <= 2:  # decided exactly by one SVD: no search, no budget
                within = f"within tol={tol!r}" if tol is not None else "to float rounding"
                why = (
                    f"more than {useful} separable terms needed {within} (the most that beat "
                    f"{name}; decided exactly by one SVD)"
                )
            else:
                why = (
                    f"no separable form of at most {useful} terms (the most that beat {name}) "
                    f"found within the planning budget of {budget * 1e3:.0f} ms"
                )
            return Plan(name, None, macs, why, t)
        f = found
    if f.rank >= 1 and (f.exact or tol is not None or given is not None):
        name = "separable" if f.rank == 1 else "lowrank"
        t = est(name, f.macs, f.rank * stages)
        candidates.append((name, float(f.macs), t))
    name, macs, t = min(candidates, key=lambda c: c[2])
    reason = "; ".join(f"{n}: {m:.0f} MACs, ~{tt:.2f} ms" for n, m, tt in candidates)
    return Plan(name, f if name in ("separable", "lowrank") else None, macs, reason, t)
