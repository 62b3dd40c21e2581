"""Experiment ``speedup``: separable vs direct convolution, theory vs measured (2-D and 3-D).

The article: a k x k kernel costs k^2 multiply-adds per pixel directly and 2k as two 1-D
passes (7x7: 49 vs 14); a K x K x K kernel K^3 vs 3K, a factor K^2/3 ("over 30 times" for
K = 10). Here the same Gaussian kernel runs both ways, in sepconv and in scipy.ndimage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .. import cost, kernels
from .._timing import median_times
from ..filters import correlate
from ._common import Report, Timer, setup_matplotlib


def _kernel(k: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian of length k (sigma = k / 6): the 1-D factor and the dense k^ndim kernel."""
    g = kernels.gaussian1d(max(k / 6.0, 0.3), radius=k // 2)
    if k % 2 == 0:  # even length: same construction, one sample shorter
        g = kernels.gaussian1d(max(k / 6.0, 0.3), radius=k // 2)[1:]
        g = g / g.sum()
    dense = g
    for _ in range(ndim - 1):
        dense = np.multiply.outer(dense, g)
    return g, dense


def _scipy_separable(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """scipy.ndimage's separable way: one correlate1d pass per axis."""
    out = x
    for axis in range(x.ndim):
        out = ndimage.correlate1d(out, g, axis=axis)
    return out


def run(out: Path, *, quick: bool = False, progress: Any = None) -> Report:
    report = Report("speedup", "Separable vs direct: theory vs measured", out, quick)
    rng = np.random.default_rng(0)
    n2, n3 = (256, 48) if quick else (1024, 96)
    ks2 = [3, 7, 15] if quick else [3, 5, 7, 9, 11, 15, 19, 25, 31]
    ks3 = [3, 7, 10] if quick else [3, 5, 7, 9, 10, 11, 13, 15]
    repeats = 3 if quick else 5
    rows: dict[str, list[dict[str, Any]]] = {"2d": [], "3d": []}
    with Timer() as timer:
        for ndim, n, ks in ((2, n2, ks2), (3, n3, ks3)):
            x = rng.random((n,) * ndim).astype(np.float32)
            task = progress.add_task(f"speedup {ndim}-D", total=len(ks)) if progress else None
            for k in ks:
                g, K = _kernel(k, ndim)
                fns = {
                    "sepconv direct": lambda K=K, x=x: correlate(x, K, method="direct"),
                    "sepconv separable": lambda K=K, x=x: correlate(x, K, method="separable"),
                    "scipy direct": lambda K=K, x=x: ndimage.correlate(x, K),
                    "scipy separable": lambda g=g, x=x: _scipy_separable(x, g),
                }
                t = median_times(fns, repeats, budget_s=2.0 if quick else 6.0)
                copy = median_times({"copy": x.copy}, repeats)["copy"]
                rows[f"{ndim}d"].append(
                    {
                        "k": k,
                        "macs_direct": cost.kernel_macs(K.shape),
                        "macs_separable": cost.kernel_macs(K.shape, "separable"),
                        "theory": cost.kernel_macs(K.shape)
                        / cost.kernel_macs(K.shape, "separable"),
                        **{name: v for name, v in t.items()},
                        "copy": copy,
                        "sepconv_ratio": t["sepconv direct"] / t["sepconv separable"],
                        "scipy_ratio": t["scipy direct"] / t["scipy separable"],
                    }
                )
                if progress:
                    progress.advance(task)
    report.seconds = timer.seconds
    report.results.update(rows=rows, sizes={"2d": n2, "3d": n3})

    seven = next((r for r in rows["2d"] if r["k"] == 7), None)
    ten = next((r for r in rows["3d"] if r["k"] == 10), None)
    report.text(
        "The article's numbers, computed by `sepconv.cost` and measured here:",
    )
    claims = [
        [
            "7x7 kernel, direct vs separable MACs",
            "49 vs 14",
            f"{cost.kernel_macs((7, 7))} vs {cost.kernel_macs((7, 7), 'separable')}",
            f"{seven['sepconv_ratio']:.1f}x (sepconv), {seven['scipy_ratio']:.1f}x (scipy)"
            if seven
            else "n/a",
        ],
        [
            "10x10x10 kernel",
            "over 30 times (K^2/3 = 33.3)",
            f"{cost.kernel_macs((10,) * 3)} vs {cost.kernel_macs((10,) * 3, 'separable')} = "
            f"{cost.kernel_macs((10,) * 3) / cost.kernel_macs((10,) * 3, 'separable'):.1f}x",
            f"{ten['sepconv_ratio']:.1f}x (sepconv), {ten['scipy_ratio']:.1f}x (scipy)"
            if ten
            else "n/a",
        ],
    ]
    report.table(["claim", "article", "cost model", "measured time ratio"], claims, "llll")

    for ndim in (2, 3):
        n = n2 if ndim == 2 else n3
        report.text(f"## {ndim}-D: {n}^{ndim} float32, Gaussian kernels, mode 'reflect'")
        table = []
        for r in rows[f"{ndim}d"]:
            table.append(
                [
                    f"{r['k']}^{ndim}",
                    r["macs_direct"],
                    r["macs_separable"],
                    f"{r['theory']:.1f}x",
                    f"{r['sepconv direct'] * 1e3:.1f}",
                    f"{r['sepconv separable'] * 1e3:.2f}",
                    f"{r['sepconv_ratio']:.1f}x",
                    f"{r['scipy direct'] * 1e3:.0f}",
                    f"{r['scipy separable'] * 1e3:.1f}",
                    f"{r['scipy_ratio']:.1f}x",
                ]
            )
        report.table(
            [
                "kernel",
                "MACs direct",
                "MACs separable",
                "theory",
                "sepconv direct ms",
                "sepconv separable ms",
                "measured",
                "scipy direct ms",
                "scipy separable ms",
                "measured",
            ],
            table,
        )

    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, ndim in zip(axes, (2, 3), strict=True):
        rs = rows[f"{ndim}d"]
        ks = [r["k"] for r in rs]
        ax.plot(ks, [r["theory"] for r in rs], "k--", label="theory (MAC ratio)")
        ax.plot(ks, [r["sepconv_ratio"] for r in rs], "o-", label="sepconv measured")
        ax.plot(ks, [r["scipy_ratio"] for r in rs], "s-", label="scipy.ndimage measured")
        ax.set_yscale("log")
        ax.set_xlabel("kernel size k" + (" (k x k)" if ndim == 2 else " (K x K x K)"))
        ax.set_ylabel("direct time / separable time")
        n = n2 if ndim == 2 else n3
        ax.set_title(f"{ndim}-D, {n}^{ndim} float32: speed-up of separable passes")
        ax.legend()
    report.figure(
        fig,
        "speedup.png",
        "Measured speed-up of separable over direct correlation "
        "against the MAC ratio (k/2 in 2-D, K^2/3 in 3-D).",
    )

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for ndim, marker in ((2, "o"), (3, "s")):
        rs = rows[f"{ndim}d"]
        ax.plot(
            [r["k"] for r in rs],
            [r["sepconv separable"] / r["copy"] for r in rs],
            marker + "-",
            label=f"{ndim}-D separable passes",
        )
    ax.axhline(1.0, color="k", lw=1, label="one array copy (the bandwidth floor)")
    ax.set_yscale("log")
    ax.set_xlabel("kernel size")
    ax.set_ylabel("separable time / time of one array copy")
    ax.set_title("Why the measured speed-up falls short: memory traffic")
    ax.legend()
    fig.tight_layout()
    report.figure(
        fig,
        "bandwidth.png",
        "Separable filter time in units of a plain array copy (the memory-bandwidth floor).",
    )
    r2, r3 = rows["2d"], rows["3d"]
    sep_ours = [r["sepconv separable"] * 1e3 for r in r2 + r3]
    sep_scipy = [r["scipy separable"] * 1e3 for r in r2 + r3]
    big = r3[-1]
    report.text(
        "## Why measured and theoretical ratios differ",
        "The MAC ratio is the speed-up of two equally efficient implementations limited by "
        "arithmetic. Real filters are limited by memory traffic as well: a separable filter is "
        "a few passes over the array, each of which must read and write every element, so its "
        "time hardly grows with k (sepconv "
        f"{min(sep_ours):.1f}-{max(sep_ours):.1f} ms, scipy.ndimage "
        f"{min(sep_scipy):.0f}-{max(sep_scipy):.0f} ms over all kernels above; the second "
        "figure shows sepconv's separable filter in units of one array copy). The measured "
        "ratio is then set by how fast the *direct* correlation is. scipy.ndimage's direct "
        "correlation is a scalar loop over taps, so its ratio rises past the MAC ratio for "
        f"large kernels ({big['scipy_ratio']:.0f}x at {big['k']}^3 against "
        f"{big['theory']:.0f}x). sepconv's direct correlation is itself vectorised and "
        f"multithreaded ({big['scipy direct'] / big['sepconv direct']:.0f}x faster than "
        f"scipy's at {big['k']}^3), so its ratio stays below the MAC ratio for large kernels "
        f"({big['sepconv_ratio']:.0f}x) and its separable passes, which cannot go faster than "
        "memory, are what remains. For small 2-D kernels sepconv's ratio exceeds the MAC "
        "ratio because its direct method pays for a padded copy of the input while the "
        "separable passes are fused and need no temporary.",
    )
    return report
