"""The experiments run (quick form) and their robust findings point the right way."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from sepconv import kernels
from sepconv.cli import app
from sepconv.experiments import EXPERIMENTS, demo, run_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


def _results(out, name):
    return json.loads((out / name / "results.json").read_text())


def test_speedup_reports_the_articles_numbers_and_the_measurements(out) -> None:
    report = run_experiment("speedup", out, quick=True)
    text = (out / "speedup" / "report.md").read_text()
    assert "49 vs 14" in text and "1000 vs 30 = 33.3x" in text
    assert (out / "speedup" / "speedup.png").stat().st_size > 10_000
    rows = _results(out, "speedup")["rows"]
    for ndim, key in ((2, "2d"), (3, "3d")):
        for r in rows[key]:
            assert r["theory"] == pytest.approx(r["k"] ** ndim / (ndim * r["k"]))
    # robust direction: a 10^3 kernel runs faster as separable passes than directly
    ten = next(r for r in rows["3d"] if r["k"] == 10)
    assert ten["sepconv_ratio"] > 1.5 and ten["scipy_ratio"] > 1.5
    assert report.seconds < 60


def _kernels_in(sentence_start: str, text: str) -> set[str]:
    """The kernels listed after ``sentence_start`` up to the sentence's end ('' if absent)."""
    m = re.search(re.escape(sentence_start) + r" ([^\n]*?)\.(?=\s|$)", text)
    return set(re.findall(r"(\d+\^\d) \(", m.group(1))) if m else set()


def test_speedup_conclusions_follow_the_measured_ratios(out) -> None:
    # reuses the quick run of the test above when it ran first, else runs it
    if not (out / "speedup" / "results.json").is_file():
        run_experiment("speedup", out, quick=True)
    text = (out / "speedup" / "report.md").read_text()
    rows = _results(out, "speedup")["rows"]
    every = [(f"{r['k']}^{nd}", r) for nd, key in ((2, "2d"), (3, "3d")) for r in rows[key]]
    for key, who in (("sepconv_ratio", "sepconv"), ("scipy_ratio", "scipy.ndimage")):
        above = {name for name, r in every if r[key] / r["theory"] > 1}
        below = {name for name, r in every if r[key] / r["theory"] <= 1}
        assert _kernels_in(f"{who}'s measured ratio exceeds the MAC ratio for:", text) == above
        assert _kernels_in(f"{who}'s measured ratio is at or below the MAC", text) == below
        faster = sum(r[key] > 1 for _, r in every)
        assert f"faster than direct correlation for {faster} of {len(every)} kernels" in text
    # the old fixed explanations are gone; the copy multiples are the measured ones
    assert "hardly grows with k" not in text and "cannot go faster than memory" not in text
    for nd, key in ((2, "2d"), (3, "3d")):
        m = [r["sepconv separable"] / r["copy"] for r in rows[key]]
        assert f"{nd}-D: {m[0]:.0f} copies at {rows[key][0]['k']}^{nd}" in text
        assert f"(range {min(m):.0f}-{max(m):.0f})" in text
    assert "**Verdict on this run:**" in text


def _speedup_row(k, nd, sep_ratio, scipy_ratio, copies):
    macs, sep = k**nd, nd * k
    return {"k": k, "theory": macs / sep, "macs_direct": macs, "macs_separable": sep,
            "sepconv_ratio": sep_ratio, "scipy_ratio": scipy_ratio, "copy": 1e-4,
            "sepconv separable": copies * 1e-4, "sepconv direct": sep_ratio * copies * 1e-4,
            "scipy direct": 2e-3, "scipy separable": 2e-3 / scipy_ratio}  # fmt: skip


def test_speedup_findings_on_made_up_measurements() -> None:
    from sepconv.experiments.speedup import findings

    # the reviewer's quick run: 3^2 theory 1.5x measured 0.9x, 7^2 3.5x vs 1.2x, 15^2 7.5x vs 10.7x
    rows = {
        "2d": [_speedup_row(3, 2, 0.9, 1.2, 50), _speedup_row(7, 2, 1.2, 4.0, 60),
               _speedup_row(15, 2, 10.7, 13.0, 100)],
        "3d": [_speedup_row(10, 3, 40.0, 50.0, 4)],
    }  # fmt: skip
    text = "\n\n".join(findings(rows))
    assert _kernels_in("sepconv's measured ratio exceeds the MAC ratio for:", text) == {
        "15^2",
        "10^3",
    }
    below = _kernels_in("sepconv's measured ratio is at or below the MAC", text)
    assert below == {"3^2", "7^2"}
    assert "3^2 (0.90x vs 1.50x: 60% of it)" in text
    assert "faster than direct correlation for 3 of 4 kernels (not for 3^2)" in text
    assert "**not supported for every kernel**" in text
    # 2-D passes at 50-100 copies: far above the 2-copy floor; 3-D at 4: close to its floor
    assert "2-D: 50 copies at 3^2, 100 at 15^2 (range 50-100)" in text
    assert "25-50x that floor: not limited by memory traffic" in text
    assert "3-D: 4 copies at 10^3, 4 at 10^3 (range 4-4) against a floor of about 3" in text
    assert "close to memory-bound" in text
    # every kernel faster and above the MAC ratio: the claim is supported
    rows = {"2d": [_speedup_row(7, 2, 5.0, 6.0, 3)], "3d": [_speedup_row(10, 3, 40.0, 50.0, 4)]}
    text = "\n\n".join(findings(rows))
    assert "**supported**" in text and "at or below" not in text


def test_lowrank_table_pins_the_exact_ranks(out) -> None:
    run_experiment("lowrank", out, quick=True)
    rows = {r["kernel"]: r for r in _results(out, "lowrank")["rows"]}
    assert rows["Gaussian sigma=2"]["rank"] == 1
    assert rows["Gaussian sigma=2"]["plan"] == "separable"
    assert rows["LoG sigma=2"]["rank"] == 2
    assert rows["Gabor theta=30 (gamma=1)"]["rank"] == 2
    assert rows["Gabor theta=0 (gamma=1)"]["rank"] == 1
    assert rows["LoG sigma=1.5 (3-D)"]["rank"] == 3
    assert rows["LoG sigma=1.5 (3-D)"]["multilinear_rank"] == [2, 2, 2]
    assert rows["anisotropic Gaussian (1, 4) at 30 deg"]["rank"] > 2
    assert (out / "lowrank" / "lowrank.png").is_file()


def test_ds_cost_has_the_articles_example(out) -> None:
    run_experiment("ds-cost", out, quick=True)
    text = (out / "ds-cost" / "report.md").read_text()
    assert "73,728" in text and "8,768" in text and "8.41x" in text
    ratios = _results(out, "ds-cost")["ratios"]
    assert 8 < ratios["3"]["256"] < 9 and ratios["1"]["64"] < 1


def test_reports_give_durations_a_person_can_read(out) -> None:
    from sepconv.experiments._common import format_seconds

    assert [format_seconds(s) for s in (0.0, 0.049, 0.05, 0.34, 9.94, 9.96, 59.4, 119.4)] == [
        "< 0.1 s", "< 0.1 s", "0.1 s", "0.3 s", "9.9 s", "10 s", "59 s", "119 s",
    ]  # fmt: skip
    assert format_seconds(125.2) == "2 min 5 s" and format_seconds(600) == "10 min 0 s"
    if not (out / "ds-cost" / "results.json").is_file():
        run_experiment("ds-cost", out, quick=True)
    seconds = _results(out, "ds-cost")["seconds"]
    head = (out / "ds-cost" / "report.md").read_text().splitlines()[2]
    assert head.endswith(f"took {format_seconds(seconds)}.") and "took 0 s" not in head


def test_ds_cost_point_labels_do_not_overlap() -> None:
    from sepconv.experiments._common import setup_matplotlib
    from sepconv.experiments.dscost import label_points

    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4.6))
    # a quick run's points (close together) and a full run's (some at the same MAC ratio)
    points = [(7.89, 0.52), (8.41, 0.53), (8.69, 0.55), (8.41, 0.6), (8.84, 0.5), (5.76, 0.4)]
    ax.plot(*zip(*points, strict=True), "s")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    texts = label_points(ax, points, [f"p{i}" for i in range(len(points))])
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t) for t in texts]  # the text, without its leader line
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
        for x, y in ax.transData.transform(points):  # no label covers a marker
            assert not a.contains(x, y)
    plt.close(fig)


def test_lowrank_speedup_axis_has_plain_tick_labels(out) -> None:
    from sepconv.experiments._common import plain_log_ticks, setup_matplotlib

    plt = setup_matplotlib()
    fig, ax = plt.subplots()
    ax.barh([0, 1, 2], [0.7, 3.0, 18.0])
    ax.set_xscale("log")
    ticks = plain_log_ticks(ax.xaxis, 0.7, 18.0)
    assert ticks == [0.5, 1, 2, 5, 10, 20]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)]
    shown = [float(t) for t in labels if t]
    assert shown and all(v in ticks for v in shown)  # plain numbers, no 2x10^0
    plt.close(fig)


def test_capacity_standard_layer_beats_the_depthwise_separable_one(out) -> None:
    run_experiment("capacity", out, quick=True)
    res = _results(out, "capacity")
    acc = res["accuracy"]
    assert acc["standard conv"]["mean"] > acc["DS, multiplier 1"]["mean"]
    assert acc["standard conv"]["mean"] > 0.75  # the task is learnable
    # the trained standard layer is not depthwise-separable: rank > 1 per input channel
    assert res["ds_weight_error"][0] > 0.1
    assert (out / "capacity" / "capacity.png").is_file()


def _meeting(img):
    """The test's own reading of a noise-free or noisy crossing-task image: None when the
    lines share no pixel, else how far each runs past the shared pixel on either side."""
    red, blue = img[0] > 0.5, img[2] > 0.5
    both = np.argwhere(red & blue)
    if len(both) == 0:
        return None
    ((r, c),) = both
    column, line = red[:, c], blue[r, :]
    return (column[:r].sum(), column[r + 1 :].sum()), (line[:c].sum(), line[c + 1 :].sum())


def _kind(img):
    m = _meeting(img)
    if m is None:
        return "apart"
    (up, down), (left, right) = m
    if min(up, down, left, right) >= 2:
        return "crossing"
    ends = int(min(up, down) == 0) + int(min(left, right) == 0)
    return {2: "L corner", 1: "T junction", 0: "near miss"}[ends]


def test_capacity_negatives_are_named_by_the_2_px_rule() -> None:
    from sepconv.experiments import capacity

    x, y = capacity.make_dataset(400, np.random.default_rng(5), noise=0.05)
    kinds = [_kind(img) for img in x]
    assert [k == "crossing" for k in kinds] == [bool(v) for v in y]  # the task's labels
    assert [capacity.relation(img) for img in x] == kinds
    assert {"near miss", "T junction"} <= set(kinds)  # hard negatives do occur
    # a near miss runs through the other line: both lines go past the shared pixel
    for img, kind in zip(x, kinds, strict=True):
        if kind == "near miss":
            (up, down), (left, right) = _meeting(img)
            assert min(up, down, left, right) == 1
    # the example figure shows every kind, each titled by what the pixels show
    xs, shown = capacity._examples(np.random.default_rng(7))
    assert [_kind(img) for img in xs] == shown
    assert set(shown) == {"crossing", "apart", "L corner", "T junction", "near miss"}
    assert "< 2 px" in capacity.TITLES["near miss"]


def test_capacity_report_counts_the_kinds_of_negatives(out) -> None:
    if not (out / "capacity" / "results.json").is_file():
        run_experiment("capacity", out, quick=True)
    res = _results(out, "capacity")
    from sepconv.experiments.capacity import make_dataset

    x, y = make_dataset(res["n_train"], np.random.default_rng(1000 + res["seeds"][0]))
    kinds = [_kind(img) for img, lab in zip(x, y, strict=True) if not lab]
    text = (out / "capacity" / "report.md").read_text()
    assert f"{len(kinds)} negative training images, {kinds.count('apart')} have" in text
    assert f"{kinds.count('near miss')} near misses" in text
    assert f"{kinds.count('T junction')} T junctions" in text
    assert f"{kinds.count('L corner')} L corners" in text
    assert "at least 2 px beyond the other on both sides" in text
    assert "half of them are hard" not in text
    assert len(res["examples"]) == 8


def test_layers_converts_early_late_and_all_layers(out) -> None:
    run_experiment("layers", out, quick=True)
    rows = {r["variant"]: r for r in _results(out, "layers")["rows"]}
    original = rows["original (standard)"]
    assert original["acc_tuned"] > 0.8  # the CNN learned the digits
    for name in ("early layers DS", "late layers DS", "all layers DS"):
        assert rows[name]["macs"] < original["macs"]  # converting saves MACs
        assert 0 < rows[name]["weight_error"] < 1  # optimal init: better than zero weights
    assert rows["all layers DS"]["macs"] < rows["early layers DS"]["macs"]
    assert (out / "layers" / "pareto.png").is_file()


def _t_interval(values):
    """scipy's own 95 % Student-t interval of the mean (the reference for mean_ci)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if np.all(v == v[0]):  # scipy's scale must be > 0; identical values: a point
        return v[0], v[0]
    return stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))


def test_layers_statistics_over_seeds_and_the_latency_row(out) -> None:
    # reuses the quick run above when it ran first (module-scoped folder), else runs it
    if not (out / "layers" / "results.json").is_file():
        run_experiment("layers", out, quick=True)
    res = _results(out, "layers")
    seeds, n = res["seeds"], res["n"]
    assert seeds == [0, 1] and n == 2  # quick: two seeds, too few for a t-interval
    rows = {r["variant"]: r for r in res["rows"]}
    assert list(rows) == [
        "original (standard)",
        "early layers DS",
        "late layers DS",
        "all layers DS",
        "latency budget 0.5 + recover",
    ]
    original = np.array(rows["original (standard)"]["per_seed"]["acc_tuned"])
    for r in rows.values():
        for key in ("acc_converted", "acc_tuned"):
            vals = np.array(r["per_seed"][key])
            assert vals.shape == (n,) and np.all((vals >= 0) & (vals <= 1))
            ci = r["ci"][key]
            assert ci["n"] == n and ci["mean"] == pytest.approx(vals.mean(), abs=1e-12)
            assert r[key] == pytest.approx(vals.mean(), abs=1e-12)  # the row keeps the mean
            # two seeds: their own values and range, no interval
            assert ci["kind"] == "seeds" and ci["half_width"] is None
            assert ci["values"] == pytest.approx(vals.tolist(), abs=1e-12)
            assert (ci["low"], ci["high"]) == pytest.approx((vals.min(), vals.max()), abs=1e-12)
        drop = 100 * (original - np.array(r["per_seed"]["acc_tuned"]))
        assert r["per_seed"]["drop_tuned_points"] == pytest.approx(drop.tolist(), abs=1e-9)
        assert r["ci"]["drop_tuned_points"]["mean"] == pytest.approx(drop.mean(), abs=1e-9)
    # paired: per seed, drop(early) - drop(late) = acc(late) - acc(early)
    early = np.array(rows["early layers DS"]["per_seed"]["acc_tuned"])
    late = np.array(rows["late layers DS"]["per_seed"]["acc_tuned"])
    paired = res["comparisons"][1]
    assert "after fine-tune" in paired["comparison"]
    diff = 100 * (late - early)
    assert paired["points_per_seed"] == pytest.approx(diff.tolist(), abs=1e-9)
    # two seeds cannot support or contradict the claim, whatever they show
    assert paired["reading"] == "inconclusive" == res["conclusion"]
    assert res["latency_row_target"] == "inconclusive"
    # the latency row: measured by convert on every seed, fewer MACs than the original
    budget = rows["latency budget 0.5 + recover"]
    assert len(res["latency_fraction"]) == n
    # never a slower model: convert's choice measured faster when it was made (the final
    # measurement is a new one, as noisy as the machine running the tests)
    chosen = [seed["latency budget 0.5 + recover"]["latency_chosen"] for seed in res["per_seed"]]
    assert all(0 < f < 1 for f in chosen), chosen
    assert all(0 < f for f in res["latency_fraction"])
    assert budget["per_seed"]["latency_vs_original"] == res["latency_fraction"]
    for r in rows.values():  # every conversion timed by convert on every seed
        frac = np.array(r["per_seed"]["latency_vs_original"])
        assert frac.shape == (n,) and np.all(frac > 0)
        assert r["ci"]["latency_vs_original"]["mean"] == pytest.approx(frac.mean(), abs=1e-12)
        assert r["latency_vs_original_median"] == pytest.approx(np.median(frac), abs=1e-12)
    original_macs = rows["original (standard)"]["macs"]
    assert all(0 < m < original_macs for m in budget["per_seed"]["macs"])
    assert res["settings"]["recover_epochs"] <= 3
    text = (out / "layers" / "report.md").read_text()
    assert f"n = {n} seeds" in text and "too few for a confidence interval" in text
    assert "±" not in text  # no t-interval from 2 seeds anywhere
    assert f"**{paired['reading']}**" in text
    # the table shows each seed's accuracy after fine-tune, as measured
    vals = rows["early layers DS"]["per_seed"]["acc_tuned"]
    assert f"(seeds: {vals[0]:.3f}, {vals[1]:.3f})" in text
    # the ratio column says how it is computed
    assert "latency / original (mean of per-seed ratios)" in text


def test_layers_spread_clips_intervals_and_needs_three_seeds() -> None:
    from sepconv.experiments.layers import ACCURACY, POINTS, _sign_reading, spread

    # three seeds near 100 %: scipy's t-interval passes 1; the report's stops at 1
    acc = [0.99, 0.97, 1.0]
    lo, hi = _t_interval(acc)
    assert hi > 1
    s = spread(acc, ACCURACY)
    assert s["kind"] == "t95" and s["clipped"]
    assert (s["t_low"], s["t_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert (s["low"], s["high"]) == pytest.approx((lo, 1.0), abs=1e-12)
    inside = spread([0.5, 0.55, 0.6], ACCURACY)
    assert not inside["clipped"] and inside["half_width"] > 0
    # two seeds: their values and range, and no verdict even when both agree
    two = spread([-3.0, -1.0], POINTS)
    assert two["kind"] == "seeds" and (two["low"], two["high"]) == (-3.0, -1.0)
    assert _sign_reading(two) == "inconclusive"
    assert _sign_reading(spread([-3.0, -2.8, -3.2], POINTS)) == "supported"
    assert _sign_reading(spread([3.0, 2.8, 3.2], POINTS)) == "contradicted"
    assert _sign_reading(spread([-3.0, -1.0, -2.0], POINTS)) == "inconclusive"  # [-4.5, 0.5]


def test_layers_mean_ci_matches_scipy_and_refuses_bad_input() -> None:
    from scipy import stats

    from sepconv.experiments._common import mean_ci
    from sepconv.experiments.layers import seed_list

    rng = np.random.default_rng(3)
    for n in (2, 5, 12):
        v = rng.normal(1.0, 0.5, n)
        ci = mean_ci(v)
        ref = stats.ttest_1samp(v, 0.0).confidence_interval(0.95)
        assert (ci["low"], ci["high"]) == pytest.approx((ref.low, ref.high), rel=1e-12)
        assert ci["std"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    # closed form: two values a, b: mean +- t_{0.975, 1} |a - b| / 2, t = 12.7062...
    ci = mean_ci([1.0, 3.0])
    assert ci["half_width"] == pytest.approx(12.706204736, rel=1e-9)
    ci90 = mean_ci([1.0, 3.0], confidence=0.9)
    assert ci90["half_width"] == pytest.approx(6.313751515, rel=1e-9)
    assert mean_ci([0.5] * 5)["half_width"] == 0.0  # identical seeds: a point interval
    with pytest.raises(ValueError, match="values must hold at least two"):
        mean_ci([1.0])
    with pytest.raises(ValueError, match="values must hold at least two"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        mean_ci([1.0, 2.0], confidence=1.5)
    assert seed_list(None) == [0, 1, 2, 3, 4] and seed_list(None, quick=True) == [0, 1]
    assert seed_list(3) == [0, 1, 2] and seed_list([7, 2]) == [7, 2]
    for bad in (1, [4], [1, 1], [-1, 2]):
        with pytest.raises(ValueError, match="seeds must"):
            seed_list(bad)
    for wrong in (2.0, True, [1, 2.5], "12"):
        with pytest.raises(TypeError, match="seeds must be a count"):
            seed_list(wrong)


def test_cli_runs_an_experiment_and_refuses_unknown_names(tmp_path) -> None:
    result = runner.invoke(app, ["experiment", "ds-cost", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds-cost" / "report.md").is_file()
    # the report names the command that made it, options included
    head = (tmp_path / "ds-cost" / "report.md").read_text().splitlines()[:3]
    assert head[0] == "# Standard vs depthwise-separable convolution" and head[1] == ""
    assert f"`sepconv experiment ds-cost --quick --out {tmp_path}`" in head[2]
    result = runner.invoke(app, ["experiment", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "experiment must be one of" in result.output


def test_seeds_reach_the_seeded_experiments_only(tmp_path, monkeypatch) -> None:
    from sepconv.experiments import layers

    seen = {}

    def fake_run(out, *, quick=False, progress=None, seeds=None):
        seen["seeds"] = seeds
        raise RuntimeError("stop here")  # the forwarding is what is tested

    monkeypatch.setattr(layers, "run", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):
        run_experiment("layers", tmp_path, quick=True, seeds=3)
    assert seen["seeds"] == 3
    with pytest.raises(ValueError, match="seeds applies to the experiments \\['layers'\\]"):
        run_experiment("lowrank", tmp_path, seeds=3)
    result = runner.invoke(app, ["experiment", "ds-cost", "--seeds", "3", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "seeds applies" in result.output
    assert not (tmp_path / "ds-cost").exists()
    for bad, message in (("1", "at least 2"), ("two", "count N or a list"), ("1,1", "distinct")):
        result = runner.invoke(
            app, ["experiment", "layers", "--seeds", bad, "--out", str(tmp_path)]
        )
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
    result = runner.invoke(app, ["experiment", "layers", "--seeds", "0,4", "--out", str(tmp_path)])
    assert seen["seeds"] == [0, 4]


def test_every_registered_experiment_has_a_module() -> None:
    import importlib

    for module, _ in EXPERIMENTS.values():
        assert hasattr(importlib.import_module(f"sepconv.experiments.{module}"), "run")


def test_demo_odd_gabor_is_antisymmetric_and_rank_2() -> None:
    # the demo's "odd Gabor" (phase=90 degrees) must be odd: K flipped on both axes is -K
    specs = [spec for label, spec in demo.IMAGE_KERNELS if "odd Gabor" in label]
    assert len(specs) == 1
    K = kernels.from_spec(specs[0])
    assert np.array_equal(K[::-1, ::-1], -K)
    assert np.linalg.matrix_rank(K, tol=1e-12 * np.abs(K).max()) == 2  # a low-rank example


def test_demo_labels_claim_no_rank_and_fit_the_console_table() -> None:
    # the rank the planner uses can differ from run to run (its CP search is time-bounded):
    # a label must not state one; the plan column and the report's notes do
    for label, _ in demo.IMAGE_KERNELS + demo.VOLUME_KERNELS:
        assert not re.search(r"rank\s*\d|\d\s*terms?", label), label
        assert len(label) <= demo.MAX_LABEL, label


def test_demo_rank_notes_name_a_plan_above_the_exact_rank() -> None:
    def row(label, plan, rank, exact):
        return {"label": label, "plan": plan, "rank": rank, "exact_rank": exact, "rel_diff": 1e-7}

    rows = [
        row("low rank: LoG sigma=1.5", "lowrank", 4, 3),  # a busy machine's plan
        row("low rank: odd Gabor at 30 deg", "lowrank", 2, 2),
        row("separable: Gaussian sigma=2", "separable", 1, 1),
        row("non-separable: ball r=3", "direct", None, None),
    ]
    notes = demo.rank_notes(rows)
    assert len(notes) == 1
    assert notes[0].startswith("low rank: LoG sigma=1.5: the planner's time-bounded search")
    assert "settled for rank 4" in notes[0] and "exactly rank 3" in notes[0]
    assert demo.plan_text(rows[0]) == "lowrank rank 4 (exact rank 3)"
    assert demo.plan_text(rows[1]) == "lowrank rank 2"
    assert demo.plan_text(rows[3]) == "direct"


def test_demo_axial_slice_puts_the_front_of_the_head_at_the_top() -> None:
    # anatomical.nii is stored (x: right to left, y: back to front, z: up)
    vol = np.zeros((4, 6, 5))
    vol[:, -1, 2] = 1.0  # the frontmost row of the middle axial slice
    vol[0, :, 2] = 2.0  # the patient's right side (x = 0) of that slice
    img, label = demo.axial_slice(vol)
    assert img.shape == (6, 4)  # rows: back-to-front reversed, columns: x
    assert np.all(img[0, 1:] == 1.0)  # front at the top
    assert np.all(img[:, 0] == 2.0)  # x = 0 on the left of the image
    assert "axial slice 2 of 5" in label


def test_demo_mri_is_a_native_float_volume_of_the_real_data() -> None:
    pytest.importorskip("nibabel")
    vol, name = demo.volume(zoom=1)
    assert vol.shape == (33, 41, 25) and vol.dtype == np.float32 and vol.dtype.isnative
    assert "anatomical.nii" in name and vol.max() == 1.0


def test_demo_writes_a_report_and_a_figure(tmp_path) -> None:
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    # report.md starts with the command that made it, not an experiment name
    head = (tmp_path / "demo" / "report.md").read_text().splitlines()[:3]
    assert head[0] == "# sepconv demo"
    assert head[2].startswith(f"Made by `sepconv demo --out {tmp_path / 'demo'} --quick`")
    assert "sepconv experiment" not in head[2]
    assert "Filtering a photograph" in result.output
    assert "73,728" in result.output
    assert (tmp_path / "demo" / "report.md").is_file()
    assert (tmp_path / "demo" / "filters.png").stat().st_size > 50_000
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    for r in res["image"] + res["volume"]:
        assert r["rel_diff"] < 1e-5  # sepconv agrees with scipy.ndimage
        assert r["label"] in result.output  # on one line of the console's table
    # exact ranks, from an independent reference: numpy's SVD rank for the 2-D kernels; the
    # 3-D LoG is rank 3 (pinned by the lowrank test); a plain Gaussian is rank 1
    for r in res["image"]:
        if r["exact_rank"] is not None:
            K = kernels.from_spec(r["spec"])
            assert r["exact_rank"] == np.linalg.matrix_rank(K, tol=1e-6 * np.abs(K).max())
    exact = {r["spec"]: r["exact_rank"] for r in res["volume"]}
    assert exact["laplacian_of_gaussian:sigma=1.5,ndim=3"] == 3
    assert exact["gaussian:sigma=2,ndim=3"] == 1
    # a note where (and only where) the plan used more terms than the kernel's rank
    text = (tmp_path / "demo" / "report.md").read_text()
    above = [r for r in res["image"] + res["volume"] if r["rank"] and r["rank"] > r["exact_rank"]]
    assert len(res["rank_notes"]) == len(above) == text.count("time-bounded search settled")
    for r in above:
        assert f"settled for rank {r['rank']}" in text and f"exactly rank {r['exact_rank']}" in text
