"""The shared timer (sepconv._timing) and torch thread scope (sepconv._torch_threads)."""

from __future__ import annotations

import time

import pytest

from sepconv._timing import median_time, median_times, sample_times


def test_contenders_alternate_in_a_rotating_order_after_one_warm_up_each():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    median_times(fns, repeats=3)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")


def test_a_contender_slower_than_the_budget_is_timed_once():
    calls = {"slow": 0, "fast": 0}

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.02)

    def fast() -> None:
        calls["fast"] += 1

    t = median_times({"slow": slow, "fast": fast}, repeats=4, budget_s=0.01)
    assert calls == {"slow": 2, "fast": 5}  # warm-up + one sample; warm-up + four
    assert t["slow"] >= 0.02 > t["fast"]


def test_samples_are_seconds_per_call_of_inner_calls_after_warm_up():
    calls = []
    samples = sample_times(lambda: calls.append(time.sleep(0.005)), repeats=3, warmup=2, inner=2)
    assert len(calls) == 2 + 3 * 2 and len(samples) == 3
    assert all(0.005 <= s < 0.5 for s in samples)
    assert 0.005 <= median_time(lambda: time.sleep(0.005), repeats=3) < 0.5


def test_torch_threads_restores_the_count_after_an_error_and_after_a_change_inside():
    torch = pytest.importorskip("torch")
    from sepconv._torch_threads import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:
        assert n == before
        torch.set_num_threads(1)
    assert torch.get_num_threads() == before
