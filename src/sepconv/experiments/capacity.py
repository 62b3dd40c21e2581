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
                # kept always when the lines meet (T/L junction, near miss) or nearly do, else
                # one time in two (the report counts what this gives)
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


#: How far each line must extend beyond the other, on both sides, for a crossing.
MARGIN = 2

#: Panel titles of the example figure, by :func:`relation`.
TITLES = {
    "crossing": "crossing",
    "apart": "not crossing: apart",
    "L corner": "not crossing: L corner",
    "T junction": "not crossing: T junction",
    "near miss": "not crossing: near miss\n(runs 1 px past: < 2 px)",
}


def relation(img: np.ndarray) -> str:
    """How the red and the blue line of one image ``(3, SIZE, SIZE)`` meet, read from its
    pixels (above 0.5): ``'crossing'`` (each extends at least :data:`MARGIN` px beyond the
    other on both sides), ``'apart'`` (they do not touch), ``'L corner'`` (both end where
    they meet), ``'T junction'`` (one ends on the other) or ``'near miss'`` (they cross, but a
    line runs fewer than :data:`MARGIN` px past the other; none ends on it)."""
    red_rows, red_cols = np.nonzero(img[0] > 0.5)
    blue_rows, blue_cols = np.nonzero(img[2] > 0.5)
    col, row = int(red_cols[0]), int(blue_rows[0])
    # how far each line runs past the other one's axis on each side (< 0: it stops short)
    red = (row - int(red_rows.min()), int(red_rows.max()) - row)
    blue = (col - int(blue_cols.min()), int(blue_cols.max()) - col)
    if min(*red, *blue) < 0:
        return "apart"
    if min(*red, *blue) >= MARGIN:
        return "crossing"
    if min(red) == 0 and min(blue) == 0:
        return "L corner"
    if min(red) == 0 or min(blue) == 0:
        return "T junction"
    return "near miss"


def _examples(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Eight noise-free examples: three crossings and one of each kind of negative (a second
    near miss when there is room), each with its :func:`relation`."""
    xs, _ = make_dataset(400, rng, noise=0.0)
    kinds = [relation(img) for img in xs]
    wanted = ["crossing"] * 3 + ["apart", "L corner", "T junction", "near miss", "near miss"]
    picked: list[int] = []
    for kind in wanted:
        free = [i for i, k in enumerate(kinds) if k == kind and i not in picked]
        if free:
            picked.append(free[0])
    for i in range(len(xs)):  # a kind that never occurred: fill with whatever comes next
        if len(picked) == len(wanted):
            break
        if i not in picked:
            picked.append(i)
    return xs[picked], [kinds[i] for i in picked]


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
    # what the negatives are, read from the first seed's training images
    xs, ys = make_dataset(n_train, np.random.default_rng(1000 + seeds[0]))
    negatives = [relation(img) for img, lab in zip(xs, ys, strict=True) if not lab]
    counts = {k: negatives.count(k) for k in ("apart", "near miss", "T junction", "L corner")}
    report.results["negatives"] = counts

    report.text(
        f"Task: {SIZE}x{SIZE} RGB images with one red vertical and one blue horizontal line "
        "segment (lengths 9-15 px, Gaussian noise 0.05); label 1 when they cross, i.e. each "
        f"line extends at least {MARGIN} px beyond the other on both sides. Negatives "
        "contain the same two lines, not crossing. Of the first seed's "
        f"{len(negatives)} negative training images, {counts['apart']} have the lines apart "
        f"and the rest are hard: {counts['near miss']} near misses (one line runs through the "
        f"other but ends 1 px past it, fewer than the {MARGIN} px a crossing needs), "
        f"{counts['T junction']} T junctions (one line ends on the other) and "
        f"{counts['L corner']} L corners (both end where they meet). "
        f"{n_train} training and {n_test} test images per seed; each model "
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
        fig, axes = plt.subplots(2, 4, figsize=(10, 6.0))
        xs, shown = _examples(np.random.default_rng(7))
        for ax, img, kind in zip(axes.ravel(), xs, shown, strict=True):
            ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            ax.set_title(TITLES[kind], fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(
            f"Examples (without noise). A crossing: each line extends at least {MARGIN} px "
            "beyond the other on both sides;\nnear misses (1 px past), T junctions and L "
            "corners are negatives",
            fontsize=10,
        )
        fig.subplots_adjust(top=0.84, hspace=0.3, wspace=0.08)
        report.results["examples"] = shown
        report.figure(
            fig,
            "examples.png",
            "Example images. Label 1 (crossing) needs each line to extend at least "
            f"{MARGIN} px beyond the other on both sides; the hard negatives include near "
            "misses, where a line runs through the other but ends 1 px past it, T junctions "
            "and L corners.",
        )
    return report
