"""sepconv.nn benchmarks: MobileNet v1 against its full-convolution twin, the per-layer roofline,
and the time `convert` takes on a ResNet-18 layout.

1. Whole-model latency, batch 1, 224x224, ``--threads`` (default 2) torch threads: MobileNet v1
   and "Conv MobileNet" (Howard et al. 2017, Table 4), each prepared the same way (evaluation
   mode, batch norm folded into the convs, channels-last, ``torch.inference_mode``), alternating
   the two for ``--repeats`` rounds after warm-up, in ``--sessions`` separate sessions; the
   median of each, and the measured speed-up against the ratio of their MACs (target: >= 65 %).
   The same with TorchScript (frozen, ``optimize_for_inference``) and, with ``--compile``,
   ``torch.compile`` (inductor, weights frozen); and each model at its fastest configuration.
2. Per layer of MobileNet v1: :func:`sepconv.nn.profile` (same preparation) -- measured time
   against the roofline ``max(MACs / GEMM rate, bytes / bandwidth)``; layers outside 2x are
   listed. The profile runs ``--profile-runs`` times and each layer keeps its smallest median
   (contention from other processes only ever adds time).
3. ``sepconv.nn.convert`` on a ResNet-18 layout (20 convolutions, random weights): the median
   wall time of several runs per policy.
4. ``convert(resnet18(), kind, latency_budget=0.5, input_shape=(1, 3, 224, 224))`` per kind
   (``--latency-kinds``): wall time, its report, and both models re-timed by this script.
5. The digits CNN of the ``layers`` experiment converted to half its latency and recovered
   with ``sepconv.nn.recover`` for 3 epochs: test accuracy per seed (``--recover-seeds``).

The machine may be shared: before each timed block, and before every round of the latency
comparison, the script checks that no other process uses the CPUs (``/proc/stat`` while it
sleeps) and that a two-thread probe (a ReLU on a 1.6 MB tensor, ~40 us when both cores are
free) is fast, waiting up to ``--settle`` seconds otherwise; checks and waits are recorded.

Writes ``benchmarks/results/nn-<machine>-<date>.json`` and ``.md``.

    python benchmarks/bench_nn.py [--threads 2] [--repeats 15] [--compile] [--quick]
        [--only mobilenet layers convert latency recover]

On a GPU (``--device cuda``; about a minute on an H100): MobileNet v1 against Conv MobileNet
at batch 1 and 64, float32 and bfloat16 (``--batches``, ``--dtypes``), each a CUDA graph of
the prepared model (BN folded, channels-last, inference mode, ``cudnn.benchmark``), CUDA
events around graph replays, the two alternating; the latency ratio beside the MAC ratio;
and :func:`sepconv.nn.profile` of MobileNet v1 on the GPU against its measured roofline.
Writes ``benchmarks/results/nn-gpu-<device name>-<date>.json`` and ``.md``. Without network,
from the source tree::

    PYTHONPATH=src python benchmarks/bench_nn.py --device cuda

``--dry-run`` runs the same GPU code on the CPU (host clock, no graphs) to check it.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import re
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sepconv
from sepconv._torch_threads import torch_threads
from sepconv.nn import convert, profile
from sepconv.nn.models import mobilenet_v1, resnet18
from sepconv.nn.profile import (
    _cuda_runner,
    _CudaClock,
    _fold_batchnorm,
    _HostClock,
    _tf32,
    _timed_samples,
    machine_rates,
)
from sepconv.nn.profile import compiled as compiled_model

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


#: Probe time (s) above which the machine counts as contended (uncontended: ~40 us).
QUIET = 5e-4


def probe(threads: int, runs: int = 15) -> float:
    """Median seconds of a two-thread ReLU on 1.6 MB (a contended core shows as milliseconds)."""
    x = torch.randn(1, 64, 80, 80)
    relu = nn.ReLU(inplace=True)
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            t0 = time.perf_counter()
            relu(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def others_busy(window: float = 0.5) -> float:
    """Fraction of the machine's CPU time used while this process sleeps ``window`` seconds.

    Other processes (on a shared machine) take cores our threads then wait for; 0 on Linux
    systems without /proc/stat.
    """

    def snapshot() -> tuple[int, int]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)

    busy0, total0 = snapshot()
    time.sleep(window)
    busy1, total1 = snapshot()
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


#: Share of the CPUs other processes may use while we wait before the machine counts as busy.
BUSY = 0.15


def quiet(threads: int) -> tuple[bool, float, float]:
    """Are the CPUs ours? The probe runs last: it also wakes the threads up after the sleep."""
    b = others_busy()
    p = probe(threads)
    return p < QUIET and b < BUSY, p, b


def settle(threads: int, limit: float, log: list[dict[str, Any]], label: str) -> None:
    """Wait (up to ``limit`` s) until no other process uses the CPUs and the probe is fast."""
    t0 = time.perf_counter()
    while True:
        ok, p, b = quiet(threads)
        if ok or time.perf_counter() - t0 > limit:
            log.append({"before": label, "probe_us": p * 1e6, "others_busy": b, "quiet": ok,
                        "waited_s": time.perf_counter() - t0})  # fmt: skip
            return
        time.sleep(2.0)


def prepare(model: nn.Module, example: torch.Tensor, fmt: torch.memory_format) -> nn.Module:
    """The profiler's preparation: eval, BN folded (checked), memory format."""
    prepared = copy.deepcopy(model).eval()
    _fold_batchnorm(prepared, example)
    with torch.no_grad():
        ref = model.eval()(example)
        got = prepared(example)
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max())), "BN folding"
    return prepared.to(memory_format=fmt)  # type: ignore[call-overload]


def alternate(
    fns: dict[str, Any], repeats: int, args: argparse.Namespace, warmup: int = 3, block: int = 7
) -> tuple[dict[str, list[float]], int]:
    """Warm each up, then run them in turn (rotating the order) ``repeats`` times.

    Before every ``block`` rounds the machine is checked (another process on a shared machine
    makes every parallel region wait for a descheduled thread) and a contended block is
    postponed; after the check (which sleeps) each contender runs once untimed, so no round
    pays for waking the machine up. Returns the times and the number of waits.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    waits = 0
    for i in range(repeats):
        if i % block == 0:
            t_wait = time.perf_counter()
            while not quiet(args.threads)[0] and time.perf_counter() - t_wait < args.settle:
                waits += 1
                time.sleep(1.0)
            for name in names:
                fns[name]()
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times, waits


# ----------------------------------------------------------------------------------------------
# 1. MobileNet v1 vs Conv MobileNet
# ----------------------------------------------------------------------------------------------


def bench_mobilenet(args: argparse.Namespace, log: list[dict[str, Any]]) -> dict[str, Any]:
    torch.manual_seed(0)
    ds, full = mobilenet_v1().eval(), mobilenet_v1(full_conv=True).eval()
    macs = {
        "mobilenet_v1": profile(ds, (1, 3, 224, 224), measure=False).macs,
        "conv_mobilenet": profile(full, (1, 3, 224, 224), measure=False).macs,
    }
    mac_ratio = macs["conv_mobilenet"] / macs["mobilenet_v1"]
    x = torch.randn(1, 3, 224, 224)
    results: dict[str, Any] = {"macs": macs, "mac_ratio": mac_ratio, "configs": []}
    configs: list[tuple[str, torch.memory_format, str | bool]] = [
        ("eager, channels_last, BN folded, inference_mode", torch.channels_last, False),
        ("torchscript (frozen, optimize_for_inference), channels_last", torch.channels_last,
         "torchscript"),
    ]  # fmt: skip
    if args.compile:
        configs.append(
            ("inductor (frozen weights), channels_last, BN folded", torch.channels_last, "inductor")
        )
    for label, fmt, compiled in configs:
        xf = x.contiguous(memory_format=fmt)
        models = {"mobilenet_v1": prepare(ds, x, fmt), "conv_mobilenet": prepare(full, x, fmt)}
        compile_s: dict[str, float] = {}
        if compiled:
            for name in list(models):
                torch._dynamo.reset()
                t0 = time.perf_counter()
                with torch.no_grad():
                    models[name] = compiled_model(models[name], xf, compiled)
                compile_s[name] = time.perf_counter() - t0
        ctx = torch.no_grad if compiled else torch.inference_mode
        sessions = []
        for k in range(args.sessions):
            settle(args.threads, args.settle, log, f"mobilenet {label}, session {k + 1}")
            with ctx():
                fns = {n: (lambda m=m, xf=xf: m(xf)) for n, m in models.items()}
                times, waits = alternate(fns, args.repeats, args)
            med = {n: statistics.median(t) for n, t in times.items()}
            speedup = med["conv_mobilenet"] / med["mobilenet_v1"]
            sessions.append(
                {
                    "median_s": med,
                    "times_s": times,
                    "contended_waits": waits,
                    "speedup": speedup,
                    "fraction_of_mac_ratio": speedup / mac_ratio,
                }
            )
        # all rounds of all sessions together
        pooled = {n: [t for s_ in sessions for t in s_["times_s"][n]] for n in models}
        med = {n: statistics.median(t) for n, t in pooled.items()}
        speedup = med["conv_mobilenet"] / med["mobilenet_v1"]
        results["configs"].append(
            {
                "config": label,
                "median_s": med,
                "compile_s": compile_s,
                "contended_waits": sum(s_["contended_waits"] for s_ in sessions),
                "speedup": speedup,
                "fraction_of_mac_ratio": speedup / mac_ratio,
                "session_fractions": [s_["fraction_of_mac_ratio"] for s_ in sessions],
                "sessions": sessions,
            }
        )
    return results


# ----------------------------------------------------------------------------------------------
# 2. per-layer roofline
# ----------------------------------------------------------------------------------------------


def bench_layers(args: argparse.Namespace, log: list[dict[str, Any]]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = mobilenet_v1()
    runs = []
    for k in range(args.profile_runs):
        settle(args.threads, args.settle, log, f"per-layer profile {k + 1}")
        runs.append(
            profile(
                model,
                (1, 3, 224, 224),
                threads=args.threads,
                memory_format="channels_last",
                repeats=max(args.repeats, 10),
                name="mobilenet_v1",
            )
        )
    # contention only ever adds time: per layer, the smallest of the runs' medians
    p = runs[0]
    for i, row in enumerate(p.layers):
        measured = [r.layers[i].measured_s for r in runs if r.layers[i].measured_s is not None]
        row.measured_s = min(measured) if measured else None
    p.latency_s = min(r.latency_s for r in runs if r.latency_s is not None)
    p.settings["profile_runs"] = args.profile_runs
    return layer_summary(p, min_time=5e-6)


def layer_summary(p: Any, min_time: float) -> dict[str, Any]:
    """A per-layer profile for the report: its table, its outliers beyond 2x of the roofline
    (roofline at least ``min_time`` seconds) and how many layers are within 2x."""
    outliers = p.outliers(2.0, min_time=min_time)
    return {
        "profile": p.to_dict(),
        "markdown": p.to_markdown(),
        "outliers": [
            {
                "name": r.name,
                "type": r.type,
                "roofline_us": r.roofline_s * 1e6,
                "measured_us": r.measured_s * 1e6,
                "ratio": r.ratio,
            }
            for r in outliers
        ],
        "within_2x": sum(1 for r in p.layers if r.ratio is not None and 0.5 <= r.ratio <= 2),
        "timed_layers": sum(1 for r in p.layers if r.ratio is not None),
    }


# ----------------------------------------------------------------------------------------------
# 3. convert on a ResNet-18 layout
# ----------------------------------------------------------------------------------------------


def bench_convert(args: argparse.Namespace, log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = resnet18()
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    policies: list[tuple[str, dict[str, Any]]] = [
        ("depthwise rank=1", {"kind": "depthwise", "rank": 1}),
        ("depthwise tol=0.5", {"kind": "depthwise", "tol": 0.5}),
        ("depthwise mac_budget=0.5 (input 224)", {"kind": "depthwise", "mac_budget": 0.5,
                                                   "input_shape": (1, 3, 224, 224)}),
        ("spatial rank=32", {"kind": "spatial", "rank": 32}),
        ("cp rank=32", {"kind": "cp", "rank": 32}),
    ]  # fmt: skip
    if args.quick:
        policies = policies[:2]
    out = []
    settle(args.threads, args.settle, log, "convert")
    for label, kw in policies:
        runs = 1 if kw["kind"] == "cp" else (3 if args.quick else 5)
        times = []
        report = None
        for _ in range(runs):
            t0 = time.perf_counter()
            _, report = convert(model, **kw)
            times.append(time.perf_counter() - t0)
        assert report is not None
        out.append(
            {
                "policy": label,
                "convs": n_convs,
                "converted": len(report.converted),
                "median_s": statistics.median(times),
                "times_s": times,
                "mac_fraction": report.mac_fraction,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------
# 4. convert(..., latency_budget=0.5) on the ResNet-18 layout, checked by this script's timing
# ----------------------------------------------------------------------------------------------


def bench_latency(args: argparse.Namespace, log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``convert(resnet18(), kind, latency_budget=0.5, input_shape=(1, 3, 224, 224))`` per kind:
    its wall time and report, then both models re-timed independently (prepared alike, in
    the converted model's memory format and the original's, alternating rounds after a quiet
    check; medians)."""
    out = []
    example = torch.randn(1, 3, 224, 224)
    for kind in args.latency_kinds:
        torch.manual_seed(0)
        model = resnet18().eval()
        settle(args.threads, args.settle, log, f"latency_budget {kind}")
        t0 = time.perf_counter()
        new, report = convert(
            model, kind, latency_budget=args.budget, input_shape=(1, 3, 224, 224),
            threads=args.threads,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        formats = {
            "contiguous": torch.contiguous_format,
            "channels_last": torch.channels_last,
        }
        f_before = formats[report.timing["memory_format"]]
        f_after = formats[report.timing["memory_format_converted"]]
        a = prepare(model, example, f_before)
        b = prepare(new, example, f_after)
        xa = example.contiguous(memory_format=f_before)
        xb = example.contiguous(memory_format=f_after)
        settle(args.threads, args.settle, log, f"latency check {kind}")
        with torch.inference_mode():
            times, waits = alternate(
                {"original": lambda: a(xa), "converted": lambda: b(xb)},  # noqa: B023
                args.repeats,
                args,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        out.append(
            {
                "kind": kind,
                "budget": args.budget,
                "convert_s": wall,
                "converted": len(report.converted),
                "latency_fraction_report": report.latency_fraction,
                "latency_before_ms": report.latency_before * 1e3,
                "latency_after_ms": report.latency_after * 1e3,
                "mac_fraction": report.mac_fraction,
                "check_median_ms": {k: v * 1e3 for k, v in med.items()},
                "check_fraction": med["converted"] / med["original"],
                "check_min_fraction": min(times["converted"]) / min(times["original"]),
                "contended_waits": waits,
                "notes": report.notes,
                "rounds": report.timing.get("rounds", []),
                "table": report.to_markdown(),
            }
        )
        print(f"latency {kind}: {out[-1]['check_fraction']:.3f}", file=sys.stderr)
    return out


def md_table_head(title: str, intro: str, columns: str) -> list[str]:
    """A report section's heading, its paragraph (none when empty) and its table's header:
    ``columns`` separated by ``" | "``."""
    lines = [f"## {title}", ""]
    if intro:
        lines += [intro, ""]
    return [*lines, f"| {columns} |", "|" + "---|" * (columns.count(" | ") + 1)]


def md_latency(rows: list[dict[str, Any]]) -> list[str]:
    lines = md_table_head(
        "convert(resnet18(), kind, latency_budget) at 224x224, batch 1",
        "Random weights (no pretrained weights here): the errors below say what a random "
        "conv loses, not a trained one. `report`: convert's own whole-model measurement "
        "(fastest of 7 calls each, alternating); `check`: this script's, the two prepared "
        "models alternating after a quiet-machine check (median).",
        "kind | budget | convert s | converted | MACs after | report after/before | "
        "check ms (original / converted) | check fraction",
    )
    for r in rows:
        m = r["check_median_ms"]
        lines.append(
            f"| {r['kind']} | {r['budget']:g} | {r['convert_s']:.1f} | {r['converted']}/20 | "
            f"{r['mac_fraction']:.1%} | {r['latency_fraction_report']:.3f} | "
            f"{m['original']:.2f} / {m['converted']:.2f} | {r['check_fraction']:.3f} |"
        )
    for r in rows:
        lines += ["", f"<details><summary>{r['kind']}: per-layer table</summary>", ""]
        lines += [r["table"], "", "</details>"]
    lines.append("")
    return lines


# ----------------------------------------------------------------------------------------------
# 5. convert to half the latency + recover, on the digits CNN of the `layers` experiment
# ----------------------------------------------------------------------------------------------


def bench_recover(args: argparse.Namespace, log: list[dict[str, Any]]) -> dict[str, Any]:
    """The `layers` experiment's CNN trained on scikit-learn digits (15 epochs, seed 0), then
    ``convert(kind, latency_budget=0.5)`` timed at its latency setting (batch 64, one
    thread) and ``recover`` for 3 epochs (batch 16, lr 1e-2), once per seed and kind
    (``--recover-kinds``)."""
    import numpy as np

    from sepconv.experiments._common import accuracy, train
    from sepconv.experiments.layers import load_digits_16
    from sepconv.nn import recover
    from sepconv.nn.models import small_cnn

    x, y = load_digits_16()
    perm = np.random.default_rng(0).permutation(len(x))
    n_train = int(0.75 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    xtr, ytr = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    xte, yte = torch.from_numpy(x[te]), torch.from_numpy(y[te])
    with torch_threads(1):
        torch.manual_seed(0)
        base = small_cnn("standard", in_chans=1, num_classes=10, width=16, depth=4, resolution=16)
        train(base, xtr, ytr, 15, seed=0)
    acc0 = accuracy(base, xte, yte)
    runs = []
    for kind, seed in ((k, s) for k in args.recover_kinds for s in range(args.recover_seeds)):
        settle(args.threads, args.settle, log, f"recover {kind} seed {seed}")
        student, report = convert(
            base, kind, latency_budget=0.5, input_shape=(64, 1, 16, 16), threads=1,
            calibration=xtr[:256],
        )  # fmt: skip
        acc1 = accuracy(student, xte, yte)
        with torch_threads(1):
            rec = recover(student, base, (xtr, ytr), epochs=3, batch_size=16, lr=1e-2,
                          eval_data=(xte, yte), seed=seed, progress=False)  # fmt: skip
        runs.append(
            {
                "kind": kind,
                "seed": seed,
                "latency_fraction": report.latency_fraction,
                "ranks": [r.rank for r in report.layers],
                "kinds": [r.kind if r.converted else "-" for r in report.layers],
                "acc_converted": acc1,
                "acc_recovered": rec.accuracy_after,
                "drop_points": 100 * (acc0 - (rec.accuracy_after or 0.0)),
                "recover_s": rec.seconds,
            }
        )
        print(f"recover {kind} seed {seed}: drop {runs[-1]['drop_points']:.2f}", file=sys.stderr)
    return {"acc_original": acc0, "test_samples": len(te), "runs": runs}


def md_recover(res: dict[str, Any]) -> list[str]:
    lines = md_table_head(
        "digits CNN: convert to half the latency, then recover (3 epochs)",
        f"Original test accuracy {res['acc_original']:.4f} on {res['test_samples']} digits. "
        "`convert(base, kind, latency_budget=0.5, input_shape=(64, 1, 16, 16), "
        "threads=1, calibration=xtr[:256])`, then `recover(student, base, (xtr, ytr), "
        "epochs=3, batch_size=16, lr=1e-2)`; one row per kind and recover seed.",
        "kind | seed | latency after/before | layers: kind rank | acc. converted | "
        "acc. recovered | drop",
    )
    for r in res["runs"]:
        layers = ", ".join(
            "-" if k == "-" else f"{k} {rk}"
            for k, rk in zip(r.get("kinds", ["?"] * len(r["ranks"])), r["ranks"], strict=True)
        )
        lines.append(
            f"| {r.get('kind', 'depthwise')} | {r['seed']} | {r['latency_fraction']:.3f} | "
            f"{layers} | "
            f"{r['acc_converted']:.4f} | {r['acc_recovered']:.4f} | "
            f"{r['drop_points']:.2f} points |"
        )
    lines.append("")
    return lines


# ----------------------------------------------------------------------------------------------
# GPU (--device cuda): MobileNet v1 vs Conv MobileNet, and the per-layer profile
# ----------------------------------------------------------------------------------------------

#: The sections that run on a GPU (``--device cuda``).
GPU_SECTIONS = ("mobilenet", "layers")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def gpu_clock(dev: torch.device) -> tuple[Any, Any]:
    """``(runner, clock)``: on CUDA, ``runner(fn)`` captures ``fn`` in a CUDA graph (``(run,
    graphed)``) and the clock is CUDA events; on the CPU (``--dry-run``: the same code, for
    checking it) ``fn`` itself and ``perf_counter``."""
    if dev.type == "cuda":
        return (lambda fn: _cuda_runner(fn, dev)), _CudaClock()
    return (lambda fn: (fn, False)), _HostClock()


def alternate_gpu(
    runs: dict[str, Any], clock: Any, rounds: int, inner: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Each run warmed up, then ``rounds`` rounds in a rotating order; a sample is the clock's
    time over ``inner`` calls (graph replays) divided by ``inner``."""
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name] += _timed_samples(runs[name], clock, repeats=1, warmup=0, inner=inner)
    return times


def bench_gpu_mobilenet(args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    """MobileNet v1 and Conv MobileNet at every ``--batches`` x ``--dtypes``: batch norm folded
    (in float32 on the CPU, checked), then cast and moved to the device, channels-last,
    ``torch.inference_mode``; CUDA graphs of the whole model, CUDA events around ``inner``
    replays per sample, the two models alternating for ``--repeats`` rounds; medians."""
    res = args.resolution
    with torch.device("meta"):  # counting needs shapes only
        macs = {
            "mobilenet_v1": profile(mobilenet_v1(resolution=res), (1, 3, res, res),
                                    measure=False).macs,
            "conv_mobilenet": profile(mobilenet_v1(resolution=res, full_conv=True),
                                      (1, 3, res, res), measure=False).macs,
        }  # fmt: skip
    mac_ratio = macs["conv_mobilenet"] / macs["mobilenet_v1"]
    torch.manual_seed(0)
    x0 = torch.randn(1, 3, res, res)
    folded = {
        "mobilenet_v1": prepare(mobilenet_v1(resolution=res).eval(), x0, torch.contiguous_format),
        "conv_mobilenet": prepare(
            mobilenet_v1(resolution=res, full_conv=True).eval(), x0, torch.contiguous_format
        ),
    }
    runner, clock = gpu_clock(dev)
    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        models = {
            n: copy.deepcopy(m).to(device=dev, dtype=dtype, memory_format=torch.channels_last)
            for n, m in folded.items()
        }
        for batch in args.batches:
            gen = torch.Generator().manual_seed(batch)
            x = torch.randn(batch, 3, res, res, generator=gen).to(dev, dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            inner = 20 if batch == 1 else 5
            with torch.inference_mode():
                runs, graphed = {}, {}
                for n, m in models.items():
                    runs[n], graphed[n] = runner(lambda m=m, x=x: m(x))
                times = alternate_gpu(runs, clock, args.repeats, inner)
            del runs
            med = {n: statistics.median(t) for n, t in times.items()}
            speedup = med["conv_mobilenet"] / med["mobilenet_v1"]
            rows.append(
                {
                    "dtype": dname,
                    "batch": batch,
                    "median_s": med,
                    "times_s": times,
                    "inner": inner,
                    "cuda_graphs": graphed,
                    "speedup": speedup,
                    "fraction_of_mac_ratio": speedup / mac_ratio,
                    "images_per_s": {n: batch / t for n, t in med.items()},
                }
            )
            print(f"gpu mobilenet {dname} batch {batch}: {speedup:.2f}x", file=sys.stderr)
        del models
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"macs": macs, "mac_ratio": mac_ratio, "resolution": res, "rows": rows}


def bench_gpu_layers(args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    """:func:`sepconv.nn.profile` of MobileNet v1 on the device (float32, batch 1,
    channels-last): per-layer CUDA-graph replays against the GPU's roofline."""
    torch.manual_seed(0)
    res = args.resolution
    p = profile(
        mobilenet_v1(resolution=res), (1, 3, res, res), device=dev,
        memory_format="channels_last", repeats=max(args.repeats, 10), name="mobilenet_v1",
    )  # fmt: skip
    return layer_summary(p, min_time=1e-6)


def md_gpu_mobilenet(mb: dict[str, Any]) -> list[str]:
    res = mb["resolution"]
    lines = md_table_head(
        f"MobileNet v1 vs Conv MobileNet on the GPU ({res}x{res})",
        f"MACs per image: {mb['macs']['mobilenet_v1'] / 1e6:.1f}M vs "
        f"{mb['macs']['conv_mobilenet'] / 1e6:.1f}M (ratio {mb['mac_ratio']:.2f}). Medians of "
        "CUDA-event samples over CUDA-graph replays, the two models alternating.",
        "dtype | batch | MobileNet v1 ms | Conv MobileNet ms | speed-up | of MAC ratio | "
        "images/s (v1 / conv) | graphs",
    )
    for r in mb["rows"]:
        m, ips = r["median_s"], r["images_per_s"]
        eager = [n for n, g in r["cuda_graphs"].items() if not g]
        graphs = "eager: " + ", ".join(eager) if eager else "yes"
        lines.append(
            f"| {r['dtype']} | {r['batch']} | {m['mobilenet_v1'] * 1e3:.3f} | "
            f"{m['conv_mobilenet'] * 1e3:.3f} | {r['speedup']:.2f}x | "
            f"{r['fraction_of_mac_ratio']:.0%} | {ips['mobilenet_v1']:,.0f} / "
            f"{ips['conv_mobilenet']:,.0f} | {graphs} |"
        )
    lines.append("")
    return lines


def gpu_markdown(res: dict[str, Any]) -> str:
    r = res["rates"]
    gemm = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in r["gemm_rates"].items())
    lines = [f"# sepconv.nn GPU benchmarks — {res['device_name']} — {res['date']}", ""]
    lines.append(
        f"torch {res['versions']['torch']} (CUDA {res['versions']['cuda']}, cuDNN "
        f"{res['versions']['cudnn']}), {res['settings']}. Device rates (measured): GEMM "
        f"(TMAC/s) {gemm or 'n/a'}; copy bandwidth {r['bandwidth_bytes_per_s'] / 1e9:.0f} GB/s."
    )
    if res["dry_run"]:
        lines.append("")
        lines.append("**Dry run on the CPU (host clock, no CUDA graphs): not GPU numbers.**")
    lines.append("")
    if "mobilenet" in res:
        lines += md_gpu_mobilenet(res["mobilenet"])
    if "layers" in res:
        lines += md_layers(res["layers"])
    return "\n".join(lines) + "\n"


def main_gpu(args: argparse.Namespace) -> int:
    """The GPU sections (``--device cuda``; ``--dry-run``: the same code on the CPU)."""
    dev = torch.device("cpu") if args.dry_run else torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print(f"bench_nn: error: --device {args.device}: no CUDA device is visible",
                  file=sys.stderr)  # fmt: skip
            return 2
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its algorithms
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (dry run)"
    t0 = time.perf_counter()
    rates = machine_rates(device=dev) if dev.type == "cuda" else machine_rates()
    res: dict[str, Any] = {
        "device": str(dev),
        "device_name": name,
        "dry_run": args.dry_run,
        "date": dt.date.today().isoformat(),
        "repeats": args.repeats,
        "settings": (
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}, cuDNN TF32 "
            f"{'allowed' if _tf32(conv=True) else 'off'}, float32 matmul TF32 "
            f"{'allowed' if _tf32(conv=False) else 'off'}, channels-last, BN folded, "
            "inference mode"
        ),
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
            "sepconv": sepconv.__version__,
            "python": platform.python_version(),
        },
        "rates": rates.to_dict(),
    }
    runners = {"mobilenet": bench_gpu_mobilenet, "layers": bench_gpu_layers}
    for section in GPU_SECTIONS:
        if section in args.only:
            print(f"gpu {section} ...", file=sys.stderr)
            res[section] = runners[section](args, dev)
    res["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    suffix = "" if set(args.only) >= set(GPU_SECTIONS) else "-" + "-".join(args.only)
    stem = args.out / f"nn-gpu-{slug}-{res['date']}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    text = gpu_markdown(res)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {stem}.json and .md ({res['seconds']:.0f} s)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def md_mobilenet(res: dict[str, Any]) -> list[str]:
    mb = res["mobilenet"]
    lines = md_table_head(
        "MobileNet v1 vs Conv MobileNet (batch 1, 224x224)",
        f"MACs: {mb['macs']['mobilenet_v1'] / 1e6:.1f}M vs "
        f"{mb['macs']['conv_mobilenet'] / 1e6:.1f}M (ratio {mb['mac_ratio']:.2f}). "
        f"Medians over {res['sessions']} sessions of {res['repeats']} alternating rounds each "
        "(the last column: each session on its own).",
        "config | MobileNet v1 ms | Conv MobileNet ms | speed-up | of MAC ratio | per session",
    )
    for c in mb["configs"]:
        m = c["median_s"]
        per = ", ".join(f"{f:.0%}" for f in c["session_fractions"])
        lines.append(
            f"| {c['config']} | {m['mobilenet_v1'] * 1e3:.2f} | "
            f"{m['conv_mobilenet'] * 1e3:.2f} | "
            f"{c['speedup']:.2f}x | {c['fraction_of_mac_ratio']:.0%} | {per} |"
        )
    best = {
        n: min(c["median_s"][n] for c in mb["configs"]) for n in ("mobilenet_v1", "conv_mobilenet")
    }
    ratio = best["conv_mobilenet"] / best["mobilenet_v1"]
    lines.append("")
    lines.append(
        f"Each model at its fastest configuration: {best['mobilenet_v1'] * 1e3:.2f} ms vs "
        f"{best['conv_mobilenet'] * 1e3:.2f} ms, {ratio:.2f}x = {ratio / mb['mac_ratio']:.0%} "
        "of the MAC ratio."
    )
    lines.append("")
    lines.append(
        "Blocks postponed for a contended machine: "
        + ", ".join(
            f"{c['config'].split(',')[0].split(' (')[0]} {c['contended_waits']}"
            for c in mb["configs"]
        )
    )
    lines.append("")
    return lines


def md_layers(lay: dict[str, Any]) -> list[str]:
    lines = md_table_head(
        "MobileNet v1 per layer: measured vs roofline",
        f"{lay['within_2x']} of {lay['timed_layers']} timed layers within 2x of the roofline "
        "(folded batch norms are not timed). Outliers:",
        "layer | type | roofline us | measured us | ratio",
    )
    for o in lay["outliers"]:
        lines.append(
            f"| {o['name']} | {o['type']} | {o['roofline_us']:.1f} | {o['measured_us']:.1f} | "
            f"{o['ratio']:.2f} |"
        )
    lines.append("")
    lines.append("<details><summary>full table</summary>")
    lines.append("")
    lines.append(lay["markdown"])
    lines.append("")
    lines.append("</details>")
    lines.append("")
    return lines


def md_convert(rows: list[dict[str, Any]]) -> list[str]:
    lines = md_table_head(
        "convert on a ResNet-18 layout (20 convs, random weights)",
        "",
        "policy | converted | median s | model MACs after",
    )
    for c in rows:
        frac = "" if c["mac_fraction"] is None else f"{c['mac_fraction']:.1%}"
        lines.append(
            f"| {c['policy']} | {c['converted']}/{c['convs']} | {c['median_s']:.2f} | {frac} |"
        )
    lines.append("")
    return lines


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# sepconv.nn benchmarks — {res['machine']} — {res['date']}", ""]
    lines.append(
        f"torch {res['versions']['torch']}, {res['threads']} threads, CPU: {res['cpu']}. "
        f"Machine rates: GEMM {res['rates']['gemm_macs_per_s'] / 1e9:.1f} GMAC/s, copy "
        f"bandwidth {res['rates']['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (main memory)."
    )
    lines.append("")
    if "mobilenet" in res:
        lines += md_mobilenet(res)
    sections = {
        "layers": md_layers,
        "convert": md_convert,
        "latency": md_latency,
        "recover": md_recover,
    }
    for name, md in sections.items():
        if name in res:
            lines += md(res[name])
    lines.append(
        "Machine checks (two-thread ReLU probe, ~40 us when both cores are free; CPU share "
        "used by other processes while we wait):"
    )
    lines.append("")
    for p in res["probes"]:
        lines.append(
            f"- before {p['before']}: probe {p['probe_us']:.0f} us, others "
            f"{p['others_busy']:.0%}"
            + ("" if p["quiet"] else f" (still busy after {p['waited_s']:.0f} s)")
        )
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: The benchmark's sections, in the order they run.
SECTIONS = ("mobilenet", "layers", "convert", "latency", "recover")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settle", type=float, default=60.0, help="max wait for a quiet machine")
    ap.add_argument("--profile-runs", type=int, default=3, help="per-layer: min over runs")
    ap.add_argument("--sessions", type=int, default=3, help="latency comparison sessions")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=None,
        help="sections to run (default: all; on a GPU: mobilenet layers)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), or cuda / cuda:N: the GPU sections (MobileNet v1 vs Conv "
        "MobileNet at --batches x --dtypes with CUDA graphs and events; the per-layer "
        "profile on the GPU)",
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="GPU: batch sizes")
    ap.add_argument(
        "--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"],
        help="GPU: dtypes",
    )  # fmt: skip
    ap.add_argument("--resolution", type=int, default=224, help="GPU: input resolution")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="run the GPU sections' code on the CPU (host clock, no graphs) to check it",
    )
    ap.add_argument("--budget", type=float, default=0.5, help="latency section: the budget")
    ap.add_argument(
        "--latency-kinds", nargs="+", default=["depthwise", "tucker2"], help="latency section"
    )
    ap.add_argument("--recover-seeds", type=int, default=5, help="recover section: seeds")
    ap.add_argument(
        "--recover-kinds", nargs="+", default=["depthwise"], help="recover section: kinds"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 5)
    if args.device != "cpu" or args.dry_run:
        args.only = args.only or list(GPU_SECTIONS)
        if set(args.only) - set(GPU_SECTIONS):
            ap.error(f"--only on a GPU: choose from {list(GPU_SECTIONS)}, got {args.only}")
        return main_gpu(args)
    args.only = args.only or list(SECTIONS)
    torch.set_num_threads(args.threads)
    log: list[dict[str, Any]] = []
    settle(args.threads, args.settle, log, "machine rates")
    rates = machine_rates(args.threads, refresh=True)
    res: dict[str, Any] = {
        "machine": socket.gethostname(),
        "date": dt.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": args.threads,
        "repeats": args.repeats,
        "sessions": args.sessions,
        "versions": {
            "torch": torch.__version__,
            "sepconv": sepconv.__version__,
            "python": platform.python_version(),
        },
        "rates": rates.to_dict(),
    }
    runners = {
        "mobilenet": bench_mobilenet,
        "layers": bench_layers,
        "convert": bench_convert,
        "latency": bench_latency,
        "recover": bench_recover,
    }
    for name in SECTIONS:
        if name in args.only:
            print(f"{name} ...", file=sys.stderr)
            res[name] = runners[name](args, log)
    res["probes"] = log
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if set(args.only) == set(SECTIONS) else "-" + "-".join(args.only)
    stem = args.out / f"nn-{res['machine']}-{res['date']}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
