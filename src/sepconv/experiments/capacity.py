"""Experiment ``capacity``: what a depthwise-separable layer cannot represent.

The article's thought experiment made real: detect a red vertical line that *crosses* a blue
horizontal line. Negatives contain the same two lines, not crossing (near misses, T and L
junctions). One standard conv layer and one depthwise-separable layer (depth multiplier 1,
2, 4) with the same receptive field and the same head (ReLU, global max pool, linear) are
trained with the same budget over several seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import cost
from .._torch_threads import torch_threads
from ._common import Report, Timer, accuracy, setup_matplotlib, train

SIZE = 24


def make_dataset(n: int, rng: np.random.Generator, noise: float = 0.05) -> tuple[Any, Any]:
    """``n`` RGB images (n, 3, SIZE, SIZE) and labels (1: the red and blue lines cross)."""
    x = np.zeros((n, 3, SIZE, SIZE), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        crossing = i % 2 == 0
        while True:
            lr, lb = rng.integers(9, 16, size=2)
            col = int(rng.integers(2, SIZE - 2))  # red vertical: column col, rows r0..r0+lr
            r0 = int(rng.integers(0, SIZE - lr + 1))
            row = int(rng.integers(2, SIZE - 2))  # blue horizontal: row row, cols c0..c0+lb
            c0 = int(rng.integers(0, SIZE - lb + 1))
            red_rows = range(r0, r0 + lr)
            blue_cols = range(c0, c0 + lb)
            # a crossing: each line passes through the other with >= 2 pixels on every side
            crosses = (c0 + 2 <= col <= c0 + lb - 3) and (r0 + 2 <= row <= r0 + lr - 3)
            touches = col in blue_cols and row in red_rows
            if crossing and crosses:
                break
            if not crossing and not crosses:
                # half the negatives are hard: the lines meet (T/L junction) or nearly do
                near = touches or (
                    min(abs(col - c0), abs(col - (c0 + lb - 1))) <= 3
                    and min(abs(row - r0), abs(row - (r0 + lr - 1))) <= 3
                )
                if near or rng.random() < 0.5:
                    break
        x[i, 0, r0 : r0 + lr, col] = 1.0
        x[i, 2, row, c0 : c0 + lb] = 1.0
        y[i] = int(crossing)
    x += noise * rng.standard_normal(x.shape).astype(np.float32)
    perm = rng.permutation(n)
    return x[perm], y[perm]


def _model(kind: str, channels: int, k: int, m: int) -> Any:
    import torch
    from torch import nn

    from ..nn import DepthwiseSeparableConv2d

    if kind == "standard":
        conv: nn.Module = nn.Conv2d(3, channels, k, padding=k // 2)
    else:
        conv = DepthwiseSeparableConv2d(3, channels, k, padding=k // 2, depth_multiplier=m)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv
            self.head = nn.Linear(channels, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = torch.relu(self.conv(x)).amax(dim=(2, 3))
            return self.head(f)

    return Net()


def _train(model: Any, data: tuple[Any, ...], epochs: int, seed: int) -> float:
    """Train on the first half of ``data``, return the accuracy on the second."""
    xtr, ytr, xte, yte = data
    train(model, xtr, ytr, epochs, seed)
    return accuracy(model, xte, yte)


def run(out: Path, *, quick: bool = False, progress: Any = None) -> Report:
    import torch

    report = Report("capacity", "What a depthwise-separable layer cannot represent", out, quick)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    epochs = 5 if quick else 10
    n_train, n_test = (600, 400) if quick else (1500, 1000)
    channels, k = 8, 7
    variants = [
        ("standard conv", "standard", 1),
        ("DS, multiplier 1", "ds", 1),
        ("DS, multiplier 2", "ds", 2),
        ("DS, multiplier 4", "ds", 4),
    ]
    acc: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    standard_weights = None
    task = progress.add_task("capacity", total=len(seeds) * len(variants)) if progress else None
    with Timer() as timer, torch_threads(1):  # 24x24 images: one thread beats waking a second
        for seed in seeds:
            rng = np.random.default_rng(1000 + seed)
            xtr, ytr = make_dataset(n_train, rng)
            xte, yte = make_dataset(n_test, rng)
            data = tuple(torch.from_numpy(a) for a in (xtr, ytr, xte, yte))
            for name, kind, m in variants:
                torch.manual_seed(seed)
                model = _model(kind, channels, k, m)
                acc[name].append(_train(model, data, epochs, seed))
                if kind == "standard" and seed == seeds[0]:
                    standard_weights = model.conv.weight.detach().numpy().copy()
                if progress:
                    progress.advance(task)
    report.seconds = timer.seconds
    stats: dict[str, dict[str, Any]] = {
        n: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for n, v in acc.items()
    }
    report.results.update(accuracy=stats, seeds=seeds, epochs=epochs, n_train=n_train)

    report.text(
        f"Task: {SIZE}x{SIZE} RGB images with one red vertical and one blue horizontal line "
        "segment (lengths 9-15 px, Gaussian noise 0.05); label 1 when they cross, i.e. each "
        "line extends at least 2 px beyond the other on both sides. Negatives "
        "contain the same two lines, not crossing; half of them are hard (T or L junctions "
        f"and near misses). {n_train} training and {n_test} test images per seed; each model "
        f"is one {k}x{k} conv layer with {channels} output channels, ReLU, global max pool and "
        f"a linear classifier, trained with Adam (lr 3e-3, batch 64) for {epochs} epochs; "
        f"seeds {seeds}."
    )
    rows = []
    for name, kind, m in variants:
        if kind == "standard":
            macs = cost.conv_macs(3, channels, k)
            params = cost.conv_params(3, channels, k, bias=True)
        else:
            macs = cost.depthwise_separable_macs(3, channels, k, depth_multiplier=m)
            params = cost.depthwise_separable_params(3, channels, k, depth_multiplier=m) + channels
        s = stats[name]
        rows.append(
            [
                name,
                macs,
                params,
                f"{s['mean']:.3f} ± {s['std']:.3f}",
                ", ".join(f"{a:.3f}" for a in s["runs"]),
            ]
        )
    report.table(
        ["layer", "MACs / pixel", "params (conv)", "test accuracy (mean ± std)", "per seed"],
        rows,
        "lrrrl",
    )

    std_mean = stats["standard conv"]["mean"]
    ds_mean = stats["DS, multiplier 1"]["mean"]
    verdict = (
        "The standard layer beats the depthwise-separable one"
        if std_mean > ds_mean
        else "The depthwise-separable layer matched the standard one"
    )
    report.text(
        f"**Finding.** {verdict} ({std_mean:.3f} vs {ds_mean:.3f} mean accuracy over "
        f"{len(seeds)} seeds). With a depth multiplier: "
        f"{stats['DS, multiplier 2']['mean']:.3f} ± {stats['DS, multiplier 2']['std']:.3f} "
        f"at 2, {stats['DS, multiplier 4']['mean']:.3f} ± {stats['DS, multiplier 4']['std']:.3f} "
        "at 4 (per-seed values above: a large spread means some seeds failed to train). "
        "A DS layer with multiplier m gives each input channel only m spatial filters, "
        "shared by all outputs: every output map is a weighted sum of the same few filtered "
        "channels, so it cannot shape, per output, how red and blue structure must co-occur. "
        "The standard layer has one filter per (output, input) pair."
    )
    if standard_weights is not None:
        W = standard_weights  # (C_out, C_in, k, k)
        spectra = []
        for i in range(W.shape[1]):
            sv = np.linalg.svd(W[:, i].reshape(W.shape[0], -1), compute_uv=False)
            spectra.append(sv / sv[0])
        rel = []
        for m in (1, 2, 4):
            num = sum(
                float(
                    np.sum(
                        np.linalg.svd(W[:, i].reshape(W.shape[0], -1), compute_uv=False)[m:] ** 2
                    )
                )
                for i in range(W.shape[1])
            )
            rel.append(float(np.sqrt(num / np.sum(W**2))))
        report.results.update(spectra=[s.tolist() for s in spectra], ds_weight_error=rel)
        report.text(
            "The trained standard layer (seed 0) is far from depthwise-separable: for each "
            "input channel, the matrix of its filters (outputs x taps) would have rank m if "
            "the layer were DS with multiplier m. Relative weight error of the best DS "
            f"approximation: multiplier 1 {rel[0]:.2f}, 2 {rel[1]:.2f}, 4 {rel[2]:.2f}."
        )
        plt = setup_matplotlib()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        ax = axes[0]
        names = [n for n, _, _ in variants]
        means = [stats[n]["mean"] for n in names]
        stds = [stats[n]["std"] for n in names]
        ax.bar(
            range(len(names)),
            means,
            yerr=stds,
            capsize=4,
            color=["tab:blue", "tab:orange", "tab:orange", "tab:orange"],
        )
        for i, n in enumerate(names):
            ax.plot([i] * len(acc[n]), acc[n], "k.", ms=6, label="one seed" if i == 0 else None)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace(", ", "\n") for n in names], fontsize=9)
        ax.set_ylim(0.4, 1.0)
        ax.axhline(0.5, color="gray", ls=":", label="chance (0.5)")
        ax.set_ylabel("test accuracy")
        ax.set_title(
            f"Crossing lines: test accuracy\n(bars: mean ± std over {len(seeds)} seeds)",
            fontsize=11,
        )
        ax.legend(loc="upper right", fontsize=9)
        ax = axes[1]
        for s_k, color in zip(spectra, ("red", "green", "blue"), strict=True):
            ax.plot(np.arange(1, len(s_k) + 1), s_k, "o-", color=color, label=f"{color} channel")
        ax.set_xticks(np.arange(1, len(spectra[0]) + 1))
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("singular value index i")
        ax.set_ylabel("relative singular value s_i / s_1")
        ax.set_title(
            "Trained standard layer: singular values of each input\n"
            "channel's filters (a DS layer with multiplier m has only m)",
            fontsize=11,
        )
        ax.legend(loc="upper right", fontsize=9)
        fig.tight_layout()
        report.figure(
            fig,
            "capacity.png",
            "Left: accuracy of a standard vs depthwise-separable "
            "layer on the crossing task. Right: singular values of the trained "
            "standard layer's filters per input channel (a DS layer has rank m).",
        )
        fig, axes = plt.subplots(2, 4, figsize=(10, 5.2))
        xs, ys = make_dataset(8, np.random.default_rng(7), noise=0.0)
        for ax, img, lab in zip(axes.ravel(), xs, ys, strict=True):
            ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            ax.set_title("crossing" if lab else "not crossing", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("Examples (without noise)")
        report.figure(
            fig,
            "examples.png",
            "Example images: positives cross, negatives contain the same lines without crossing.",
        )
    return report
