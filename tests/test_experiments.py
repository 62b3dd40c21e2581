"""The experiments run (quick form) and their robust findings point the right way."""

from __future__ import annotations

import json

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


def test_capacity_standard_layer_beats_the_depthwise_separable_one(out) -> None:
    run_experiment("capacity", out, quick=True)
    res = _results(out, "capacity")
    acc = res["accuracy"]
    assert acc["standard conv"]["mean"] > acc["DS, multiplier 1"]["mean"]
    assert acc["standard conv"]["mean"] > 0.75  # the task is learnable
    # the trained standard layer is not depthwise-separable: rank > 1 per input channel
    assert res["ds_weight_error"][0] > 0.1
    assert (out / "capacity" / "capacity.png").is_file()


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
    assert np.linalg.matrix_rank(K, tol=1e-12 * np.abs(K).max()) == 2  # "rank 2" as labelled


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
