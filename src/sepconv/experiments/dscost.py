"""Experiment ``ds-cost``: standard vs depthwise-separable convolution, counted and measured.

The article: a standard layer costs k^2 C_in C_out multiply-adds per output pixel (3x3,
64 -> 128: 73,728), a depthwise-separable one k^2 C_in + C_in C_out; the ratio is
C_out k^2 / (k^2 + C_out), "8 to 9 times" for typical layers. Counts come from
``sepconv.cost``; latencies from PyTorch (batch 1, channels-first, inference mode). When a
CUDA device is visible, the same layers are also timed on the GPU (batch 1 and 32; CUDA
events around CUDA-graph replays); otherwise the report says the GPU table was skipped.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .. import cost
from .._timing import median_times
from .._torch_threads import torch_threads
from ._common import Report, Timer, setup_matplotlib


def _torch_latency(cin: int, cout: int, k: int, size: int, repeats: int) -> dict[str, float]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    x = torch.randn(1, cin, size, size)
    std = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).eval()
    ds = nn.Sequential(
        nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
    ).eval()

    def run(m: Any) -> Any:
        with torch.inference_mode():
            return m(x)

    return median_times({"standard": lambda: run(std), "ds": lambda: run(ds)}, repeats)


def _gpu_latency(
    cin: int, cout: int, k: int, size: int, repeats: int, batch: int = 1
) -> dict[str, float]:
    """Median seconds of both layers on the current CUDA device (float32, inference mode):
    CUDA events around replays of a CUDA graph of the call (``sepconv.nn.profile``'s clock)."""
    import torch
    from torch import nn

    from ..nn.profile import cuda_samples

    dev = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    x = torch.randn(batch, cin, size, size, device=dev)
    std = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).to(dev).eval()
    ds = (
        nn.Sequential(
            nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )
        .to(dev)
        .eval()
    )
    out = {}
    with torch.inference_mode():
        for name, m in (("standard", std), ("ds", ds)):
            samples, _ = cuda_samples(lambda: m(x), dev, repeats=repeats, warmup=2)  # noqa: B023
            out[name] = statistics.median(samples)
    return out


def _latencies(
    pairs: list[tuple[int, int]],
    size: int,
    repeats: int,
    progress: Any,
    batches: tuple[int, ...] | None = None,
) -> list[dict[str, Any]]:
    """Measured 3x3 standard and depthwise-separable latencies per channel pair (``batches``:
    on the GPU, per batch size; None: on the CPU, batch 1)."""
    measured = []
    label = "ds-cost latency" + (" (GPU)" if batches else "")
    task = progress.add_task(label, total=len(pairs) * len(batches or (1,))) if progress else None
    for batch in batches or (1,):
        for cin, cout in pairs:
            if batches:
                t = _gpu_latency(cin, cout, 3, size, repeats, batch)
            else:
                t = _torch_latency(cin, cout, 3, size, repeats)
            c = cost.compare_conv(cin, cout, 3)
            row: dict[str, Any] = {} if batches is None else {"batch": batch}
            row.update(
                cin=cin,
                cout=cout,
                standard_ms=t["standard"] * 1e3,
                ds_ms=t["ds"] * 1e3,
                latency_ratio=t["standard"] / t["ds"],
                mac_ratio=c["ratio"]["macs"],
            )
            measured.append(row)
            if progress:
                progress.advance(task)
    return measured


def label_points(ax: Any, points: list[tuple[float, float]], labels: list[str]) -> list[Any]:
    """Label each point with a thin leader line from a column of labels in the axes' upper
    right corner (the points lie close together, often at the same MAC ratio, so labels
    next to them overlap); labels are stacked in the order of the points' x, then y."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    step = min(0.07, 0.5 / max(1, len(points)))
    out = []
    for row, i in enumerate(order):
        out.append(
            ax.annotate(
                labels[i],
                xy=points[i],
                xytext=(0.98, 0.62 - step * row),
                textcoords="axes fraction",
                ha="right",
                va="center",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray", "shrinkB": 3},
            )
        )
    return out


#: Batch sizes of the GPU table.
GPU_BATCHES = (1, 32)


def _gpu(pairs: list[tuple[int, int]], size: int, repeats: int, progress: Any) -> dict[str, Any]:
    """The GPU table's measurements, or why it was skipped (``skipped``)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an extra
        return {"skipped": "torch is not installed", "measured": []}
    if not torch.cuda.is_available():
        return {
            "skipped": "no CUDA device is visible (torch.cuda.is_available() is False)",
            "measured": [],
        }
    from ..nn.profile import _tf32

    return {
        "skipped": None,
        "device": torch.cuda.get_device_name(),
        "tf32": _tf32(conv=True),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "batches": list(GPU_BATCHES),
        "measured": _latencies(pairs, size, repeats, progress, GPU_BATCHES),
    }


def run(out: Path, *, quick: bool = False, progress: Any = None) -> Report:
    report = Report("ds-cost", "Standard vs depthwise-separable convolution", out, quick)
    couts = [16, 32, 64, 128, 256, 512, 1024]
    ks = [1, 3, 5, 7]
    pairs = (
        [(32, 64), (64, 128), (128, 256)]
        if quick
        else [
            (16, 32),
            (32, 64),
            (64, 128),
            (128, 128),
            (128, 256),
            (256, 256),
            (256, 512),
            (512, 512),
        ]
    )
    size = 28 if quick else 56
    repeats = 3 if quick else 7
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:  # pragma: no cover - torch is an extra
        have_torch = False
    measured = []
    with Timer() as timer:
        if have_torch:
            with torch_threads(2):
                measured = _latencies(pairs, size, repeats, progress)
        gpu = _gpu(pairs, size, repeats, progress)
    report.seconds = timer.seconds

    c = cost.compare_conv(64, 128, 3)
    report.text("The article's numbers:")
    report.table(
        ["claim", "article", "sepconv.cost"],
        [
            [
                "3x3 conv, 64 -> 128, MACs per output pixel",
                "73,728",
                f"{c['standard'].macs_per_pixel:,}",
            ],
            [
                "same layer, depthwise-separable",
                "k^2 C_in + C_in C_out",
                f"{c['depthwise_separable'].macs_per_pixel:,} (576 + 8,192)",
            ],
            [
                "ratio C_out k^2 / (k^2 + C_out)",
                "8 to 9 times for typical layers",
                f"{c['ratio']['formula']:.2f}x here; "
                f"{cost.ds_ratio(256, 3):.2f}x at C_out=256, {cost.ds_ratio(512, 3):.2f}x at 512",
            ],
            [
                "parameters",
                "a similar reduction",
                f"{c['standard'].params:,} vs {c['depthwise_separable'].params:,} "
                f"({c['ratio']['params']:.2f}x)",
            ],
        ],
        "lll",
    )
    report.text("## MAC ratio standard / depthwise-separable (exact; independent of C_in)")
    report.table(
        ["C_out", *[f"k={k}" for k in ks]],
        [[co, *[f"{cost.ds_ratio(co, k):.2f}x" for k in ks]] for co in couts],
    )
    report.text(
        "For k=1 the 'depthwise' stage is a per-channel scale and the separable form costs "
        "more than the conv it replaces (ratio < 1): depthwise separation only pays for "
        "spatial kernels."
    )
    if measured:
        report.text(
            f"## Measured PyTorch latency, 3x3, batch 1, {size}x{size}, 2 threads, "
            "float32, inference mode"
        )
        report.table(
            [
                "C_in -> C_out",
                "MAC ratio",
                "standard ms",
                "DS ms",
                "latency ratio",
                "latency / MAC ratio",
            ],
            [
                [
                    f"{m['cin']} -> {m['cout']}",
                    f"{m['mac_ratio']:.2f}x",
                    f"{m['standard_ms']:.2f}",
                    f"{m['ds_ms']:.2f}",
                    f"{m['latency_ratio']:.2f}x",
                    f"{m['latency_ratio'] / m['mac_ratio']:.0%}",
                ]
                for m in measured
            ],
        )
        report.text(
            "The measured speed-up stays below the MAC ratio: the depthwise stage does only "
            "k^2 multiply-adds per value it reads, so it runs at memory bandwidth, not at the "
            "machine's multiply-add rate (see the roofline in `sepconv profile`); the "
            "pointwise stage is a matrix product and runs near peak. The gap is widest for "
            "small channel counts, where the depthwise share of the work is largest."
        )
    if gpu["skipped"]:
        report.text(f"GPU table skipped: {gpu['skipped']}.")
    else:
        report.text(
            f"## Measured PyTorch latency on the GPU ({gpu['device']}), 3x3, {size}x{size}, "
            f"float32 (cuDNN TF32 {'allowed' if gpu['tf32'] else 'off'}, cudnn.benchmark "
            f"{gpu['cudnn_benchmark']}), inference mode, CUDA events around CUDA-graph replays"
        )
        report.table(
            ["batch", "C_in -> C_out", "MAC ratio", "standard ms", "DS ms", "latency ratio",
             "latency / MAC ratio"],
            [
                [
                    m["batch"],
                    f"{m['cin']} -> {m['cout']}",
                    f"{m['mac_ratio']:.2f}x",
                    f"{m['standard_ms']:.4f}",
                    f"{m['ds_ms']:.4f}",
                    f"{m['latency_ratio']:.2f}x",
                    f"{m['latency_ratio'] / m['mac_ratio']:.0%}",
                ]
                for m in gpu["measured"]
            ],
        )  # fmt: skip

        def share(rows: list[dict[str, Any]]) -> float:
            return statistics.median(m["latency_ratio"] / m["mac_ratio"] for m in rows)

        cpu = f" (CPU, batch 1: {share(measured):.0%})" if measured else ""
        report.text(
            "Median measured speed-up as a share of the MAC ratio over these layers: "
            + ", ".join(
                f"GPU batch {b}: {share([m for m in gpu['measured'] if m['batch'] == b]):.0%}"
                for b in GPU_BATCHES
            )
            + cpu
            + "."
        )
    report.results.update(
        measured=measured,
        gpu=gpu,
        ratios={str(k): {str(co): cost.ds_ratio(co, k) for co in couts} for k in ks},
    )

    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    for k in ks:
        ax.plot(couts, [cost.ds_ratio(co, k) for co in couts], "o-", label=f"k={k} (formula)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("output channels C_out")
    ax.set_ylabel("standard / depthwise-separable MACs")
    ax.axhspan(8, 9, color="tab:green", alpha=0.15, label="article: 8-9x")
    ax.set_title("MAC ratio C_out k^2 / (k^2 + C_out)")
    ax.legend(fontsize=8)
    ax = axes[1]
    if measured:
        ax.plot(
            [m["mac_ratio"] for m in measured],
            [m["latency_ratio"] for m in measured],
            "s",
            label="measured (3x3)",
        )
        label_points(
            ax,
            [(m["mac_ratio"], m["latency_ratio"]) for m in measured],
            [f"{m['cin']}->{m['cout']}" for m in measured],
        )
        for batch in GPU_BATCHES:
            rows = [m for m in gpu["measured"] if m["batch"] == batch]
            if rows:
                ax.plot(
                    [m["mac_ratio"] for m in rows],
                    [m["latency_ratio"] for m in rows],
                    "^" if batch == 1 else "v",
                    label=f"GPU, batch {batch}",
                )
        lim = max(m["mac_ratio"] for m in measured) * 1.1
        ax.plot([0, lim], [0, lim], "k--", lw=1, label="latency ratio = MAC ratio")
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
    ax.set_xlabel("MAC ratio (theory)")
    ax.set_ylabel("latency ratio standard / DS (measured)")
    ax.set_title(f"PyTorch CPU, batch 1, {size}x{size}" + ("" if gpu["skipped"] else " (+ GPU)"))
    ax.legend(fontsize=8)
    report.figure(
        fig,
        "ds_cost.png",
        "Left: the article's cost ratio for several kernel sizes. "
        "Right: measured latency ratio against the MAC ratio.",
    )
    return report
