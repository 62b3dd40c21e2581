"""Experiment ``layers``: do early layers lose little when made depthwise-separable?

A small standard CNN is trained on scikit-learn's handwritten digits (shipped with the
package; upsampled to 16x16). Its convolutions are then converted to depthwise-separable form
with the optimal initialisation of ``sepconv.nn.convert`` (per-input-channel truncated SVD,
depth multiplier 1): (a) early layers only, (b) late layers only, (c) all; and (d) by a
latency budget (``convert(..., latency_budget=0.5)``) followed by ``sepconv.nn.recover``.
Accuracy is measured right after conversion and after a short fine-tune, with MACs and
latency, once per seed (5 by default); every figure is a mean with a Student-t 95 %
confidence interval (clipped to the values' range; with fewer than 3 seeds, the seeds' own
values instead), and early and late layers are compared seed by seed (paired).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._torch_threads import torch_threads
from ._common import Report, Timer, accuracy, mean_ci, setup_matplotlib, shell_command, train

#: seeds of a full run and of a quick one (``seeds=`` overrides)
SEEDS_FULL, SEEDS_QUICK = 5, 2
#: the latency row: ``convert(..., latency_budget=LATENCY_BUDGET)`` then ``recover``
LATENCY_BUDGET = 0.5
ORIGINAL = "original (standard)"
BUDGET = f"latency budget {LATENCY_BUDGET} + recover"
#: the issue's target for the latency row: within this many points of the original
TARGET_POINTS = 1.0
#: fewest seeds for a Student-t interval; with fewer the report shows the seeds' values (a
#: t-interval from 2 seeds has 1 degree of freedom: +-12.7 x |a - b| / 2)
MIN_CI_SEEDS = 3
#: the range each summarised quantity can take (an interval is clipped to it)
ACCURACY, POINTS, FRACTION = (0.0, 1.0), (-100.0, 100.0), (0.0, math.inf)


def load_digits_16() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = np.kron(x, np.ones((1, 2, 2), dtype=np.float32))[:, None]  # (n, 1, 16, 16)
    return x, d.target.astype(np.int64)


def seed_list(seeds: int | Sequence[int] | None, quick: bool = False) -> list[int]:
    """The seeds to run: ``None`` (5, or 2 with ``quick``), a count ``n`` (``0..n-1``) or a
    sequence of distinct integers; at least two, or there is no confidence interval."""
    if seeds is None:
        return list(range(SEEDS_QUICK if quick else SEEDS_FULL))
    if isinstance(seeds, (bool, np.bool_)) or not isinstance(
        seeds, (int, np.integer, Sequence, np.ndarray)
    ):
        raise TypeError(
            f"seeds must be a count (int) or a sequence of ints, got {type(seeds).__name__}"
        )
    if isinstance(seeds, (int, np.integer)):
        if seeds < 2:
            raise ValueError(f"seeds must be at least 2 (a confidence interval), got {seeds}")
        return list(range(int(seeds)))
    out = list(seeds)
    if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) for s in out):
        raise TypeError(f"seeds must be a count (int) or a sequence of ints, got {out!r}")
    if len(out) < 2 or len(set(out)) != len(out) or min(out) < 0:
        raise ValueError(
            f"seeds must hold at least 2 distinct non-negative ints (a confidence interval), "
            f"got {out!r}"
        )
    return [int(s) for s in out]


def spread(values: Sequence[float] | np.ndarray, bounds: tuple[float, float]) -> dict[str, Any]:
    """How a quantity varies over the seeds, as the report shows it.

    With at least :data:`MIN_CI_SEEDS` values: :func:`mean_ci`'s 95 % Student-t interval
    (``kind='t95'``), clipped to ``bounds`` (``clipped``; the unclipped ends in ``t_low``,
    ``t_high``). With fewer: ``kind='seeds'``, ``low``/``high`` the smallest and largest
    value and no ``half_width``; every reading of it is ``'inconclusive'``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < MIN_CI_SEEDS:
        if v.size < 1 or not np.all(np.isfinite(v)):
            raise ValueError(f"values must be finite numbers, got {v.tolist()!r}")
        return {
            "kind": "seeds",
            "n": int(v.size),
            "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "values": v.tolist(),
            "low": float(v.min()),
            "high": float(v.max()),
            "half_width": None,
            "clipped": False,
        }
    ci: dict[str, Any] = dict(mean_ci(v), kind="t95")
    lo, hi = bounds
    ci.update(t_low=ci["low"], t_high=ci["high"])
    ci.update(low=max(ci["low"], lo), high=min(ci["high"], hi))
    ci["clipped"] = ci["low"] != ci["t_low"] or ci["high"] != ci["t_high"]
    return ci


def _sign_reading(ci: dict[str, Any]) -> str:
    """``'supported'`` when the whole interval of ``early - late`` is below 0 (early layers
    lose less), ``'contradicted'`` when it is above 0, else ``'inconclusive'`` (always, with
    too few seeds for an interval)."""
    if ci["kind"] != "t95":
        return "inconclusive"
    if ci["high"] < 0:
        return "supported"
    if ci["low"] > 0:
        return "contradicted"
    return "inconclusive"


def _target_reading(ci: dict[str, Any]) -> str:
    """The latency row's drop against the target: met, missed, or inconclusive."""
    if ci["kind"] != "t95":
        return "inconclusive"
    if ci["high"] <= TARGET_POINTS:
        return "met"
    if ci["low"] > TARGET_POINTS:
        return "missed"
    return "inconclusive"


def _spread(values: Sequence[int], form: str) -> str:
    """One value, or ``min-max`` where the seeds differ (the latency row's choices)."""
    lo, hi = min(values), max(values)
    return form.format(lo) if lo == hi else f"{form.format(lo)}-{form.format(hi)}"


def _load_note(load: Any) -> str:
    """The machine's load average at the start and end of the run, for the latency note."""
    if not load:
        return "load average not available"
    return f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"


def _pm(ci: dict[str, Any], digits: int = 3) -> str:
    """The mean with its interval (``± half-width``, or ``[low, high]`` where clipped), or
    with the seeds' values when there are too few for an interval."""
    if ci["kind"] != "t95":
        each = ", ".join(f"{v:.{digits}f}" for v in ci["values"])
        return f"{ci['mean']:.{digits}f} (seeds: {each})"
    if ci["clipped"]:
        return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"
    return f"{ci['mean']:.{digits}f} ± {ci['half_width']:.{digits}f}"


def _interval(ci: dict[str, Any]) -> str:
    if ci["kind"] != "t95":
        return "seeds " + ", ".join(f"{v:+.2f}" for v in ci["values"])
    return f"[{ci['low']:+.2f}, {ci['high']:+.2f}]"


def _with(ci: dict[str, Any]) -> str:
    """``95 % CI [low, high]``, or the seeds' values when there are too few for one."""
    if ci["kind"] == "t95":
        return f"95 % CI {_interval(ci)}" + (" (clipped)" if ci["clipped"] else "")
    return f"per seed {', '.join(f'{v:+.2f}' for v in ci['values'])}"


def _agreement(diffs: Sequence[float]) -> str:
    """Whether the seeds agree on the sign of drop(early) - drop(late)."""
    each = ", ".join(f"{d:+.2f}" for d in diffs)
    if all(d > 0 for d in diffs):
        return f"every seed had early layers lose more ({each} points)"
    if all(d < 0 for d in diffs):
        return f"every seed had early layers lose less ({each} points)"
    return f"the seeds disagree ({each} points)"


def _interval_name(n: int) -> str:
    """What the report calls the spread it shows for ``n`` seeds."""
    return "95 % CI" if n >= MIN_CI_SEEDS else f"too few seeds for a CI ({n})"


def _one_seed(
    seed: int,
    data: tuple[Any, Any, Any, Any],
    settings: dict[str, Any],
    progress: Any,
    task: Any,
) -> tuple[dict[str, Any], list[str]]:
    """Train the CNN with ``seed``, convert it every way, fine-tune; per variant: accuracies,
    MACs, params, weight error, the latency ``convert`` measured (seconds, before and after,
    and their ratio) and the latency row's recover trajectory. Returns the measures and the
    body convs in forward order."""
    import copy

    import torch
    from torch import nn

    from ..nn import convert, recover
    from ..nn.models import small_cnn

    xtr, ytr, xte, yte = data

    def step() -> None:
        if progress:
            progress.advance(task)

    def timing(rep: Any) -> dict[str, Any]:
        before, after = rep.latency_before, rep.latency_after
        return {"latency_before": before, "latency_after": after,
                "latency_fraction": rep.latency_fraction,
                "latency_chosen": (rep.timing or {}).get("chosen_fraction")}  # fmt: skip

    torch.manual_seed(seed)
    base = small_cnn("standard", in_chans=1, num_classes=10, width=16, depth=4, resolution=16)
    train(base, xtr, ytr, settings["epochs"], seed=seed)
    # body convs in forward order; the one-channel stem stays standard, as in MobileNet
    convs = [
        n
        for n, m in base.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size != (1, 1)
        and m.groups == 1
        and m.in_channels > 1
    ]
    half = len(convs) // 2
    policies = {"early": convs[:half], "late": convs[half:], "all": convs}
    acc = accuracy(base, xte, yte)
    _, ref = convert(base, "depthwise", layers=[], input_shape=(1, 1, 16, 16))
    res: dict[str, Any] = {
        ORIGINAL: {
            "layers": [],
            "acc_converted": acc,
            "acc_tuned": acc,
            "macs": ref.macs_before,
            "params": ref.params_before,
            "weight_error": 0.0,
        }
    }
    step()
    for name, layer_names in policies.items():
        # timed as the latency row is (batch 64, one thread; MACs are per image)
        model, rep = convert(
            copy.deepcopy(base),
            "depthwise",
            layers=layer_names,
            rank=1,
            input_shape=(64, 1, 16, 16),
            measure=True,
            threads=1,
        )
        acc0 = accuracy(model, xte, yte)
        train(model, xtr, ytr, settings["fine_tune_epochs"], seed=seed + 1, lr=1e-3)
        errs = [r.weight_error for r in rep.converted if r.weight_error is not None]
        res[f"{name} layers DS"] = {
            "layers": layer_names,
            "acc_converted": acc0,
            "acc_tuned": accuracy(model, xte, yte),
            "macs": rep.macs_after,
            "params": rep.params_after,
            "weight_error": float(np.mean(errs)) if errs else 0.0,
            **timing(rep),
        }
        step()
    # the latency route: measured half latency, then distillation from the original
    student, rep = convert(
        base,
        "depthwise",
        latency_budget=LATENCY_BUDGET,
        input_shape=(64, 1, 16, 16),
        threads=1,
        calibration=xtr[: settings["calibration"]],
    )
    acc0 = accuracy(student, xte, yte)
    trajectory = recover(
        student,
        base,
        (xtr, ytr),
        epochs=settings["recover_epochs"],
        batch_size=settings["recover_batch_size"],
        lr=settings["recover_lr"],
        eval_data=(xte, yte),
        seed=seed,
        progress=False,
    )
    errs = [r.weight_error for r in rep.converted if r.weight_error is not None]
    res[BUDGET] = {
        "layers": [r.name for r in rep.converted],
        "ranks": [r.rank for r in rep.converted],
        "acc_converted": acc0,
        "acc_tuned": accuracy(student, xte, yte),
        "macs": rep.macs_after,
        "params": rep.params_after,
        "weight_error": float(np.mean(errs)) if errs else 0.0,
        **timing(rep),
        "recover_seconds": trajectory.seconds,
        "recover_evaluations": trajectory.evaluations,
    }
    step()
    # the original's latency: every timing of it in this seed (each against a conversion)
    befores = [v["latency_before"] for k, v in res.items() if k != ORIGINAL]
    res[ORIGINAL].update(
        latency_before=float(np.mean(befores)), latency_after=float(np.mean(befores)),
        latency_fraction=1.0,
    )  # fmt: skip
    return res, convs


def run(
    out: Path,
    *,
    quick: bool = False,
    progress: Any = None,
    seeds: int | Sequence[int] | None = None,
) -> Report:
    """Run the experiment for every seed (default 5; quick: 2) and write its report.

    Parameters
    ----------
    out : Path
        Folder of the reports (this one goes to ``out/layers``).
    quick : bool
        Fewer epochs (4 + 1 fine-tune, 1 recover epoch) and seeds, 64 calibration samples.
    progress : rich Progress, optional
    seeds : int or sequence of int, optional
        A count ``n`` (seeds ``0..n-1``) or the seeds themselves; at least 2.

    Returns
    -------
    Report
    """
    import torch

    seeds_run = seed_list(seeds, quick)
    report = Report("layers", "Early vs late layers made depthwise-separable", out, quick)
    if seeds is not None:  # the command that makes this report names the seeds it ran
        given = [str(seeds)] if isinstance(seeds, int) else [",".join(map(str, seeds_run))]
        report.command = shell_command(
            "sepconv", "experiment", "layers", *(["--quick"] if quick else []),
            "--seeds", *given, "--out", str(out),
        )  # fmt: skip
    epochs, tune = (4, 1) if quick else (15, 3)
    settings = {
        "epochs": epochs,
        "fine_tune_epochs": tune,
        "recover_epochs": 1 if quick else 3,
        "recover_batch_size": 16,
        "recover_lr": 1e-2,
        "calibration": 64 if quick else 256,
    }
    x, y = load_digits_16()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    n_train = int(0.75 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    xtr, ytr = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    xte, yte = torch.from_numpy(x[te]), torch.from_numpy(y[te])
    task = progress.add_task("layers", total=5 * len(seeds_run)) if progress else None
    per_seed: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    with Timer() as timer, torch_threads(1):  # 16x16 images: one thread beats waking a second
        for seed in seeds_run:
            res, convs = _one_seed(seed, (xtr, ytr, xte, yte), settings, progress, task)
            per_seed.append(res)
    load += [os.getloadavg()[0]] if load else []
    report.seconds = timer.seconds
    rows = _rows(per_seed)
    comparisons = _comparisons(per_seed)
    by = {r["variant"]: r for r in rows}
    fractions = [r[BUDGET]["latency_fraction"] for r in per_seed]
    latency_ci = by[BUDGET]["ci"]["latency_vs_original"]
    report.results.update(
        rows=rows,
        comparisons=comparisons,
        seeds=seeds_run,
        n=len(seeds_run),
        confidence=0.95,
        convs=convs,
        epochs=epochs,
        fine_tune_epochs=tune,
        settings=settings,
        latency_budget=LATENCY_BUDGET,
        latency_fraction=fractions,
        latency_fraction_ci=latency_ci,
        per_seed=per_seed,
        load_average=load,
    )
    _write_text(report, rows, comparisons, by, latency_ci, convs, settings, len(xtr), len(te))
    report.results["conclusion"] = comparisons[1]["reading"]
    _figure(report, rows, comparisons, len(seeds_run))
    return report


def _rows(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: the means (in the keys of the one-seed report), per-seed values
    and their intervals; drops in points from each seed's own original."""
    rows = []
    orig = np.array([r[ORIGINAL]["acc_tuned"] for r in per_seed])
    for variant, first in per_seed[0].items():
        vals = {
            k: np.array([r[variant][k] for r in per_seed], dtype=np.float64)
            for k in (
                "acc_converted",
                "acc_tuned",
                "weight_error",
                "macs",
                "params",
                "latency_after",
                "latency_fraction",
            )
        }
        drop0, drop1 = 100 * (orig - vals["acc_converted"]), 100 * (orig - vals["acc_tuned"])
        macs = [int(v) for v in vals["macs"]]
        rows.append(
            {
                "variant": variant,
                "layers": first["layers"],
                "acc_converted": float(vals["acc_converted"].mean()),
                "acc_tuned": float(vals["acc_tuned"].mean()),
                "macs": macs[0] if len(set(macs)) == 1 else float(np.mean(macs)),
                "params": round(float(vals["params"].mean())),
                "weight_error": float(vals["weight_error"].mean()),
                "latency_ms": float(vals["latency_after"].mean()) * 1e3,
                "latency_vs_original": float(vals["latency_fraction"].mean()),
                "latency_vs_original_median": float(np.median(vals["latency_fraction"])),
                "per_seed": {
                    "acc_converted": vals["acc_converted"].tolist(),
                    "acc_tuned": vals["acc_tuned"].tolist(),
                    "drop_converted_points": drop0.tolist(),
                    "drop_tuned_points": drop1.tolist(),
                    "macs": macs,
                    "latency_ms": (vals["latency_after"] * 1e3).tolist(),
                    "latency_vs_original": vals["latency_fraction"].tolist(),
                    "params": [int(v) for v in vals["params"]],
                    "layers": [r[variant]["layers"] for r in per_seed],
                },
                "ci": {
                    "acc_converted": spread(vals["acc_converted"], ACCURACY),
                    "acc_tuned": spread(vals["acc_tuned"], ACCURACY),
                    "drop_converted_points": spread(drop0, POINTS),
                    "drop_tuned_points": spread(drop1, POINTS),
                    "latency_vs_original": spread(vals["latency_fraction"], FRACTION),
                },
            }
        )
    return rows


def _comparisons(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Early minus late accuracy drop, seed by seed, right after conversion and after the
    fine-tune (negative: early layers lose less), each read from its 95 % interval."""
    out = []
    for when, key in (
        ("right after conversion", "acc_converted"),
        ("after fine-tune", "acc_tuned"),
    ):
        # drop_early - drop_late = acc_late - acc_early (the same original in both)
        diff = [100 * (r["late layers DS"][key] - r["early layers DS"][key]) for r in per_seed]
        ci = spread(diff, POINTS)
        out.append(
            {
                "comparison": f"drop(early) - drop(late), {when}",
                "points_per_seed": diff,
                "ci": ci,
                "reading": _sign_reading(ci),
            }
        )
    return out


def _write_text(
    report: Report,
    rows: list[dict[str, Any]],
    comparisons: list[dict[str, Any]],
    by: dict[str, dict[str, Any]],
    latency_ci: dict[str, float],
    convs: list[str],
    settings: dict[str, Any],
    n_train: int,
    n_test: int,
) -> None:
    n = report.results["n"]
    seeds = report.results["seeds"]
    half = len(convs) // 2
    report.text(
        f"scikit-learn digits (1,797 8x8 images, upsampled to 16x16; {n_train} train / "
        f"{n_test} test, one fixed split). Model: `sepconv.nn.models.small_cnn` (stem + 4 conv "
        f"blocks, 3x3, width 16 -> 64), trained {settings['epochs']} epochs with Adam. "
        "Conversion: `sepconv.nn.convert(model, 'depthwise', layers=..., rank=1)` "
        "(per-input-channel truncated SVD, depth multiplier 1: the optimal weights, no data); "
        f"fine-tune: {settings['fine_tune_epochs']} epoch(s) at lr 1e-3. Body convolutions in "
        "forward order: "
        + ", ".join(f"`{c}`" for c in convs)
        + f"; early = the first {half}, late = the rest. The stem has a single input channel "
        "and stays standard, as MobileNet keeps its first layer a full convolution "
        "(multiplier 1 would force all its filters to be multiples of one filter).",
        f"**Latency row.** `convert(model, 'depthwise', latency_budget={LATENCY_BUDGET}, "
        "input_shape=(64, 1, 16, 16), threads=1, "
        f"calibration=x_train[:{settings['calibration']}])` "
        "(candidates timed on this machine, batch 64, one thread; never a layer slower than "
        f"the conv), then `recover(student, model, (x_train, y_train), "
        f"epochs={settings['recover_epochs']}, batch_size={settings['recover_batch_size']}, "
        f"lr={settings['recover_lr']:g})` (distillation from the original) in place of the "
        "fine-tune. Its weight error is that of the calibration refit (fitted to the layers' "
        "outputs, not to the weights), so it can exceed 1.",
        f"**Statistics.** n = {n} seeds ({', '.join(map(str, seeds))}): seed s initialises and "
        "orders the CNN's training, s + 1 its fine-tunes, s the recover run; the split is the "
        "same for all, so the spread over the seeds covers training randomness, not the choice "
        f"of test digits (one digit is {100 / n_test:.2f} points). "
        + (
            "Every entry is the mean over the seeds ± the half-width of its 95 % Student-t "
            f"confidence interval (n - 1 = {n - 1} degrees of freedom); where that interval "
            "passes the range a quantity can take (accuracy 0-1, drops -100 to +100 points, "
            "latency ratios above 0) it is clipped to it and shown as [low, high]. "
            if n >= MIN_CI_SEEDS
            else f"With {n} seeds there is no useful confidence interval (a Student-t interval "
            f"from {n} seeds has {n - 1} degree(s) of freedom and runs past 0 and 1 for "
            "accuracies), so every entry is the mean followed by the seeds' own values, and no "
            f"reading below is more than inconclusive: run at least {MIN_CI_SEEDS} seeds "
            "(`--seeds 5`) for intervals. "
        )
        + "Drops are in points of accuracy, each seed against its own original. "
        "Standard deviations and per-seed values are in `results.json`.",
    )
    report.table(
        [
            "variant",
            "converted layers",
            "weight error (mean)",
            "MACs / image",
            "params",
            "latency ms (batch 64, mean)",
            "latency / original (mean of per-seed ratios)",
            "acc. after conversion",
            "acc. after fine-tune",
            "drop after fine-tune (points)",
        ],
        [
            [
                r["variant"],
                _spread([len(names) for names in r["per_seed"]["layers"]], "{:d}"),
                r["weight_error"],
                _spread(r["per_seed"]["macs"], "{:,d}") if r["macs"] else "n/a",
                _spread(r["per_seed"]["params"], "{:,d}"),
                f"{r['latency_ms']:.2f}",
                (
                    _pm(r["ci"]["latency_vs_original"], 2)
                    + (
                        f" (median {r['latency_vs_original_median']:.2f})"
                        if n >= MIN_CI_SEEDS
                        else ""
                    )
                    if r["variant"] != ORIGINAL
                    else "1"
                ),
                _pm(r["ci"]["acc_converted"]),
                _pm(r["ci"]["acc_tuned"]),
                _pm(r["ci"]["drop_tuned_points"], 2),
            ]
            for r in rows
        ],
        "lrrrrrrrrr",
    )
    report.text(
        "Latency: measured by `convert` on every conversion (`measure=True` for the "
        "early/late/all rows; the latency row's own final timing): the original and the "
        "converted model prepared alike (evaluation mode, batch norm folded, inference mode, "
        "the faster memory format), one thread, batch 64, taking turns, each the fastest of "
        "its calls. The ratio column is the mean over the seeds of each seed's ratio (the "
        "converted model's time over the original's, both from the same `convert` call); the "
        "ms column is the mean of the converted model's times and, for the original, of all "
        "its timings, so dividing one ms entry by the original's is not the ratio column. "
        "Latency does not depend on the weights, so its spread over the "
        "seeds is the machine's noise; the median resists a timing spoiled by other work "
        f"({_load_note(report.results.get('load_average'))})."
    )
    seeds_of = report.results["seeds"]
    report.text("The latency row seed by seed (`convert` decides on its own timings):")
    report.table(
        ["seed", "convs replaced", "MACs / image", "latency / original", "acc. original",
         "acc. after conversion", "acc. after recover", "drop (points)"],
        [
            [
                s,
                ", ".join(f"`{c}`" for c in names) or "none",
                f"{macs:,}",
                f"{frac:.3f}",
                f"{a_orig:.4f}",
                f"{a0:.4f}",
                f"{a1:.4f}",
                f"{d:.2f}",
            ]
            for s, names, macs, frac, a_orig, a0, a1, d in zip(
                seeds_of,
                by[BUDGET]["per_seed"]["layers"],
                by[BUDGET]["per_seed"]["macs"],
                by[BUDGET]["per_seed"]["latency_vs_original"],
                by[ORIGINAL]["per_seed"]["acc_tuned"],
                by[BUDGET]["per_seed"]["acc_converted"],
                by[BUDGET]["per_seed"]["acc_tuned"],
                by[BUDGET]["per_seed"]["drop_tuned_points"],
                strict=True,
            )
        ],
        "rlrrrrrr",
    )  # fmt: skip
    report.table(
        ["paired comparison (points)", "per seed", "mean", "std", _interval_name(n), "reading"],
        [
            [
                c["comparison"],
                ", ".join(f"{d:+.2f}" for d in c["points_per_seed"]),
                f"{c['ci']['mean']:+.2f}",
                f"{c['ci']['std']:.2f}",
                _interval(c["ci"]) if c["ci"]["kind"] == "t95" else "n/a",
                c["reading"],
            ]
            for c in comparisons
        ],
        "lrrrrl",
    )
    early, late, budget = by["early layers DS"], by["late layers DS"], by[BUDGET]
    c0, c1 = comparisons
    phrase = {
        "supported": "**supported**: converting the early layers costs less accuracy than "
        "converting the late ones, and the whole 95 % interval of the difference is below 0",
        "contradicted": "**contradicted**: converting the early layers costs more accuracy "
        "than converting the late ones, and the whole 95 % interval of the difference is "
        "above 0",
        "inconclusive": "**inconclusive**: the 95 % interval of the difference contains 0, so "
        f"{n} seeds cannot tell early from late layers here",
    }
    if n < MIN_CI_SEEDS:
        agree = _agreement(comparisons[1]["points_per_seed"])
        phrase["inconclusive"] = (
            f"**inconclusive**: {n} seeds are too few for a confidence interval (at least "
            f"{MIN_CI_SEEDS} are needed); {agree}"
        )

    def saved(r: dict[str, Any]) -> str:
        r0 = by[ORIGINAL]
        return f"{1 - r['macs'] / r0['macs']:.0%}" if r["macs"] and r0["macs"] else "n/a"

    d1 = budget["ci"]["drop_tuned_points"]
    fractions = budget["per_seed"]["latency_vs_original"]
    met = sum(f <= LATENCY_BUDGET for f in fractions)
    lat = (
        f"measured by `convert` at {_pm(latency_ci, 2)} of the original latency, median "
        f"{budget['latency_vs_original_median']:.2f}; the budget of {LATENCY_BUDGET:g} met on "
        f"{met} of {n} seeds"
    )
    reading = _target_reading(d1)
    report.text(
        f"**Finding (n = {n}).** After the fine-tune the early layers lose "
        f"{_pm(early['ci']['drop_tuned_points'], 2)} points (MACs saved {saved(early)}, "
        f"latency {_pm(early['ci']['latency_vs_original'], 2)} of the original), the late "
        f"layers {_pm(late['ci']['drop_tuned_points'], 2)} (MACs saved {saved(late)}, latency "
        f"{_pm(late['ci']['latency_vs_original'], 2)}); "
        f"seed by seed, drop(early) - drop(late) = {c1['ci']['mean']:+.2f} points, "
        f"{_with(c1['ci'])}. The article's claim that early layers lose little when made "
        f"depthwise-separable, read as 'less than late layers', is {phrase[c1['reading']]}. "
        f"Right after conversion (optimal weights, no training) the difference is "
        f"{c0['ci']['mean']:+.2f} points, {_with(c0['ci'])} ({c0['reading']}): "
        "a trained 3x3 conv is far from depthwise-separable (mean relative weight error "
        f"{float(np.mean([early['weight_error'], late['weight_error']])):.2f} at multiplier "
        "1), so a converted layer needs fine-tuning; the optimal initialisation is where it "
        f"starts. The latency route ({lat}; "
        f"{_spread([len(x) for x in budget['per_seed']['layers']], '{:d}')} of "
        f"{len(convs) + 1} convs replaced, MACs saved {saved(budget)} on average) loses "
        f"{_pm(budget['ci']['drop_converted_points'], 2)} points right "
        f"after conversion and {_pm(d1, 2)} after `recover`"
        + (f" ({_with(d1)})" if d1["kind"] == "t95" else "")
        + f": the target of at "
        f"most {TARGET_POINTS:g} point "
        + {
            "met": "is met (the whole interval is within it).",
            "missed": "is missed (the whole interval is above it).",
            "inconclusive": "is neither met nor missed with confidence ("
            + (
                "the interval straddles it)."
                if d1["kind"] == "t95"
                else f"{n} seeds are too few for an interval)."
            ),
        }[reading]
    )
    report.results["latency_row_target"] = reading


def _tick(row: dict[str, Any]) -> str:
    """A variant's axis label on three lines, with its MACs."""
    name = row["variant"].replace(" + ", "\n+ ").replace(" DS", "\nDS")
    return f"{name}\n{row['macs'] / 1e6:.2f} M MACs"


def _bars(cis: list[dict[str, Any]]) -> np.ndarray:
    """Error bars from each mean down to ``low`` and up to ``high`` (clipped intervals and
    seed ranges are not symmetric)."""
    return np.array([[c["mean"] - c["low"] for c in cis], [c["high"] - c["mean"] for c in cis]])


def _bar_name(n: int) -> str:
    if n >= MIN_CI_SEEDS:
        return f"mean ± 95 % CI over {n} seeds (clipped to the possible range)"
    return f"mean and range of {n} seeds (too few for a CI)"


def _figure(
    report: Report, rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], n: int
) -> None:
    plt = setup_matplotlib()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13.5, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})
    xs = np.arange(len(rows))
    for dx, key, marker, label in (
        (-0.12, "acc_converted", "o", "right after conversion"),
        (0.12, "acc_tuned", "s", "after fine-tune (latency row: recover)"),
    ):
        ci = [r["ci"][key] for r in rows]
        shown = xs if key == "acc_tuned" else xs[1:]  # the original is not converted
        for i in shown:
            vals = rows[i]["per_seed"][key]
            ax.plot([i + dx] * len(vals), vals, ".", color="gray", alpha=0.5, ms=4)
        ax.errorbar(
            shown + dx,
            [ci[i]["mean"] for i in shown],
            yerr=_bars([ci[i] for i in shown]),
            fmt=marker,
            ms=7,
            capsize=4,
            label=label,
            mfc="white" if marker == "o" else None,
        )
    ax.set_xticks(xs, [_tick(r) for r in rows], fontsize=8)
    ax.set_ylim(0, 1.04)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy: {_bar_name(n)} (dots: seeds)", fontsize=10)
    # below the axes: inside, it covered an error bar
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
    # right: drops after fine-tune, and the paired early - late difference
    items = [(r["variant"], r["ci"]["drop_tuned_points"], r["per_seed"]["drop_tuned_points"])
             for r in rows[1:]]  # fmt: skip
    c1 = comparisons[1]
    items.append(("drop(early) - drop(late)\n(paired by seed)", c1["ci"], c1["points_per_seed"]))
    ys = np.arange(len(items))[::-1]
    for y, (_, ci, vals) in zip(ys, items, strict=True):
        bx.plot(vals, [y] * len(vals), ".", color="gray", alpha=0.5, ms=5)
        bx.errorbar(ci["mean"], y, xerr=_bars([ci]), fmt="s", ms=6, capsize=4, color="C3")
    bx.axvline(0, color="k", lw=1)
    bx.axvline(TARGET_POINTS, color="C2", lw=1, ls="--")
    bx.text(TARGET_POINTS, 1.0, f" {TARGET_POINTS:g}-point target", color="C2", fontsize=8,
            va="bottom", transform=bx.get_xaxis_transform())  # fmt: skip
    bx.axhline(ys[-1] + 0.5, color="gray", lw=0.8, ls=":")
    bx.set_yticks(ys, [name for name, _, _ in items], fontsize=8)
    bx.set_xlabel("accuracy drop after fine-tune / recover (points; < 0: better)")
    bx.set_title(f"Drop from the original: {_bar_name(n)} (dots: seeds)", fontsize=10, pad=14)
    fig.tight_layout()
    report.figure(
        fig,
        "pareto.png",
        f"Left: test accuracy of the original CNN and its depthwise-separable conversions "
        f"(early/late/all layers at multiplier 1, and by a half-latency budget + recover), "
        f"right after conversion and after fine-tuning, {_bar_name(n)}. Right: "
        "accuracy drop after fine-tuning, and the paired early - late difference.",
    )
