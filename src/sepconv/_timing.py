"""The one wall-clock timer: warm-up, then samples; contenders take turns.

Used by the experiments, the nn profiler and the planner's calibration. Times are seconds per
call (``time.perf_counter``); a median is that of the samples (for an even count, the mean of
the two middle ones). On a GPU, :func:`cuda_seconds` times one call with CUDA events.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["cuda_seconds", "median_time", "median_times", "sample_times"]


def _samples(
    fns: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    inner: int,
    budget_s: float | None,
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` calls each, then ``repeats`` rounds.

    In each round every function is timed once (a sample: the mean of ``inner`` calls), in an
    order rotated by one per round, so none always runs first (or right after another's
    allocations). A function whose first warm-up call took longer than ``budget_s`` gives one
    sample only, so a slow reference cannot blow a time budget.
    """
    slow = set()
    for name, fn in fns.items():
        for i in range(warmup):
            t0 = time.perf_counter()
            fn()
            if i == 0 and budget_s is not None and time.perf_counter() - t0 > budget_s:
                slow.add(name)
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in slow and times[name]:
                continue
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return times


def sample_times(
    fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, inner: int = 1
) -> list[float]:
    """``repeats`` samples of seconds per call of ``fn`` (each the mean of ``inner`` calls),
    after ``warmup`` untimed calls."""
    return _samples({"fn": fn}, repeats, warmup, inner, None)["fn"]


def median_time(
    fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, inner: int = 1
) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` samples, after ``warmup`` calls.

    >>> median_time(lambda: None, repeats=3) < 1.0
    True
    """
    return statistics.median(sample_times(fn, repeats=repeats, warmup=warmup, inner=inner))


def median_times(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    budget_s: float | None = 3.0,
    *,
    warmup: int = 1,
    inner: int = 1,
) -> dict[str, float]:
    """Median seconds per call of each function, the functions alternating round by round.

    Each is warmed up (``warmup`` calls), then timed once per round for ``repeats`` rounds,
    in a rotating order. A function whose first warm-up call took longer than ``budget_s`` is
    not repeated (its single post-warm-up time is reported), so slow references cannot blow
    the time budget; ``budget_s=None`` repeats every function.

    >>> sorted(median_times({"a": lambda: None, "b": lambda: None}, repeats=3))
    ['a', 'b']
    """
    samples = _samples(fns, repeats, warmup, inner, budget_s)
    return {n: statistics.median(v) for n, v in samples.items()}


def cuda_seconds(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes on the current CUDA stream: CUDA events recorded
    around it (host work between them counts as the stream's idle time), then one wait for
    the end event. torch is imported here only."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 1e3
