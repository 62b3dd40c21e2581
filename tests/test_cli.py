"""Tests for the ``sepconv`` command line (typer's CliRunner, plus one real subprocess)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sepconv
from sepconv.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def _refuse_constant(name: str) -> float:
    raise AssertionError(f"output is not strict JSON: it contains {name}")


def run_json(*args: str) -> dict:
    """Run a --json command; its stdout must be strict JSON (no NaN/Infinity tokens)."""
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout, parse_constant=_refuse_constant)


def assert_user_error(result, *needles: str) -> str:
    """Exit status 2, one line on stderr starting 'sepconv: error:', naming every needle."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("sepconv: error: ")
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def log3d() -> dict:
    return run_json("analyze", "laplacian_of_gaussian:sigma=1.5,ndim=3", "--json")


# ----------------------------------------------------------------------------------------------
# analyze --json
# ----------------------------------------------------------------------------------------------

ANALYZE_KEYS = {
    "schema",
    "kernel",
    "shape",
    "rank",
    "multilinear_rank",
    "singular_values",
    "mode_spectra",
    "tol",
    "tol_rank",
    "errors",
    "data_shape",
    "macs",
    "speedup",
}
ROW_KEYS = {"rank", "error", "error_bound", "macs", "speedup", "exact", "degenerate", "method"}


def test_analyze_gaussian_json_follows_the_documented_schema():
    d = run_json("analyze", "gaussian:sigma=2", "--json")
    assert ANALYZE_KEYS <= set(d)
    assert d["schema"] == 1
    assert d["kernel"] == "gaussian:sigma=2"
    assert set(d["macs"]) == {"direct", "separable", "lowrank", "fft"}
    assert set(d["speedup"]) == {"separable", "lowrank", "fft"}
    for row in d["errors"]:
        assert set(row) >= ROW_KEYS
    assert d["tol"] is None
    assert d["tol_rank"] is None


def test_analyze_gaussian_is_rank_1_with_direct_macs_17_squared():
    d = run_json("analyze", "gaussian:sigma=2", "--json")
    # radius int(4 * 2 + 0.5) = 8 -> 17 taps per axis
    assert d["shape"] == [17, 17]
    assert d["rank"] == 1
    assert d["multilinear_rank"] == [1, 1]
    assert d["macs"]["direct"] == math.prod(d["shape"]) == 17 * 17
    assert d["macs"]["separable"] == sum(d["shape"]) == 34
    assert d["macs"]["lowrank"] == 34
    assert d["speedup"]["separable"] == pytest.approx(289 / 34)
    assert d["speedup"]["fft"] == pytest.approx(289 / d["macs"]["fft"])
    assert len(d["errors"]) == 1
    row = d["errors"][0]
    assert row["rank"] == 1
    assert row["error"] < 1e-12
    assert row["exact"] is True
    assert row["degenerate"] is False
    assert row["macs"] == 34
    assert d["data_shape"] == [1024, 1024]
    assert len(d["singular_values"]) == 17
    assert d["mode_spectra"] == [d["singular_values"], d["singular_values"]]


def test_analyze_log_2d_is_rank_2_and_errors_match_discarded_singular_values():
    d = run_json("analyze", "laplacian_of_gaussian:sigma=2", "--json")
    assert d["rank"] == 2
    s = np.array(d["singular_values"])
    assert np.all(np.diff(s) <= 0)
    total = math.sqrt(float(np.sum(s**2)))
    assert [row["rank"] for row in d["errors"]] == [1, 2]
    for row in d["errors"]:
        r = row["rank"]
        expected = math.sqrt(float(np.sum(s[r:] ** 2))) / total
        assert row["error"] == pytest.approx(expected, rel=1e-9, abs=1e-14)
        assert row["macs"] == r * sum(d["shape"])
        assert row["speedup"] == pytest.approx(math.prod(d["shape"]) / row["macs"])
    assert d["errors"][0]["exact"] is False
    assert d["errors"][1]["exact"] is True
    assert d["macs"]["lowrank"] == 2 * sum(d["shape"])


def test_analyze_log_3d_is_rank_3_multilinear_2_2_2_with_degenerate_rank_2(log3d):
    d = log3d
    assert d["shape"] == [13, 13, 13]
    assert d["rank"] == 3
    assert d["multilinear_rank"] == [2, 2, 2]
    assert d["singular_values"] is None
    assert len(d["mode_spectra"]) == 3
    assert all(len(spec) == 13 for spec in d["mode_spectra"])
    rows = {row["rank"]: row for row in d["errors"]}
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["degenerate"] is True
    assert rows[1]["degenerate"] is False
    assert rows[3]["exact"] is True
    assert rows[3]["error"] < 1e-10
    assert d["data_shape"] == [256, 256, 256]
    assert d["macs"]["direct"] == 13**3
    assert d["macs"]["lowrank"] == 3 * 39


def test_analyze_gabor_with_tol_reports_tol_rank_2():
    d = run_json("analyze", "gabor:sigma=3,theta=30,frequency=0.15", "--tol", "0.01", "--json")
    assert d["tol"] == 0.01
    assert d["tol_rank"] == 2
    assert d["errors"][0]["error"] > 0.01  # so rank 1 is not enough


def test_analyze_tol_rank_is_smallest_rank_whose_error_meets_tol():
    for tol, expected in [("0.3", 1), ("0.1", 2), ("0", 2)]:
        d = run_json("analyze", "laplacian_of_gaussian:sigma=2", "--tol", tol, "--json")
        first_ok = min(row["rank"] for row in d["errors"] if row["error"] <= float(tol) + 1e-15)
        assert d["tol_rank"] == first_ok == expected, tol


def test_analyze_data_shape_sets_fft_model_size():
    d = run_json("analyze", "gaussian:sigma=2", "--data-shape", "512,512", "--json")
    assert d["data_shape"] == [512, 512]
    padded = (512 + 16) ** 2
    expected = padded / 512**2 * (2.5 * math.log2(padded) + 2)
    assert d["macs"]["fft"] == pytest.approx(expected, rel=1e-12)


def test_analyze_npy_outer_product_is_rank_1(tmp_path):
    path = tmp_path / "outer.npy"
    np.save(path, np.outer([1.0, 2.0, 3.0], [4.0, -5.0, 6.0, 7.0]))
    d = run_json("analyze", str(path), "--json")
    assert d["shape"] == [3, 4]
    assert d["rank"] == 1
    assert d["macs"]["direct"] == 12
    assert d["macs"]["separable"] == 7
    assert d["errors"][0]["error"] < 1e-12


def test_analyze_csv_outer_product_is_rank_1_and_sum_of_two_is_rank_2(tmp_path):
    path = tmp_path / "k.csv"
    np.savetxt(path, np.outer([1, 2, 1], [-1, 0, 1]), delimiter=",")
    d = run_json("analyze", str(path), "--json")
    assert d["shape"] == [3, 3]
    assert d["rank"] == 1
    path2 = tmp_path / "k2.csv"
    np.savetxt(
        path2, np.outer([1, 2, 1], [-1, 0, 1]) + np.outer([0, 1, 0], [1, 1, 1]), delimiter=","
    )
    assert run_json("analyze", str(path2), "--json")["rank"] == 2


def test_analyze_all_zero_kernel_is_rank_0(tmp_path):
    path = tmp_path / "zeros.npy"
    np.save(path, np.zeros((3, 3)))
    d = run_json("analyze", str(path), "--json")
    assert d["rank"] == 0
    assert d["errors"] == []
    text = run("analyze", str(path))
    assert text.exit_code == 0
    assert "rank 0" in text.stdout


# ----------------------------------------------------------------------------------------------
# analyze (text)
# ----------------------------------------------------------------------------------------------


def test_analyze_text_mentions_rank_and_separable():
    result = run("analyze", "gaussian:sigma=2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Traceback" not in result.output
    assert "rank 1" in out
    assert "separable" in out
    assert "17x17" in out
    assert "289" in out and "34" in out


def test_analyze_text_for_non_separable_kernel_says_how_many_terms():
    result = run("analyze", "laplacian_of_gaussian:sigma=2", "--tol", "0.3")
    assert result.exit_code == 0, result.output
    assert "rank 2" in result.stdout
    assert "not separable, a sum of 2 separable terms" in result.stdout
    assert "smallest rank with error <= 0.3" in result.stdout


def test_analyze_text_for_3d_kernel_shows_multilinear_rank_and_degenerate_row():
    result = run("analyze", "laplacian_of_gaussian:sigma=1.5,ndim=3")
    assert result.exit_code == 0, result.output
    assert "multilinear rank (2, 2, 2)" in result.stdout
    assert "mode-2 spectrum" in result.stdout
    assert "degenerate" in result.stdout
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------------------------
# cost conv / cost kernel
# ----------------------------------------------------------------------------------------------

CONV_KEYS = {
    "schema",
    "in_channels",
    "out_channels",
    "kernel_size",
    "dims",
    "depth_multiplier",
    "standard",
    "depthwise",
    "pointwise",
    "depthwise_separable",
    "ratio",
    "params",
}


def test_cost_conv_json_article_layer():
    d = run_json("cost", "conv", "--cin", "64", "--cout", "128", "--kernel", "3", "--json")
    assert CONV_KEYS <= set(d)
    assert d["schema"] == 1
    assert (d["in_channels"], d["out_channels"], d["dims"], d["depth_multiplier"]) == (
        64,
        128,
        2,
        1,
    )
    assert d["kernel_size"] == [3, 3]
    for key in ("standard", "depthwise", "pointwise", "depthwise_separable"):
        assert set(d[key]) == {"macs_per_pixel", "params", "macs"}
        assert d[key]["macs"] is None
    assert d["standard"]["macs_per_pixel"] == 3 * 3 * 64 * 128 == 73728
    assert d["depthwise"]["macs_per_pixel"] == 9 * 64
    assert d["pointwise"]["macs_per_pixel"] == 64 * 128
    assert d["depthwise_separable"]["macs_per_pixel"] == 9 * 64 + 64 * 128 == 8768
    assert d["ratio"]["macs"] == pytest.approx(73728 / 8768, rel=1e-12)
    assert d["ratio"]["macs"] == pytest.approx(8.4088, abs=1e-4)
    assert d["ratio"]["formula"] == pytest.approx(128 * 9 / (9 + 128), rel=1e-12)
    assert set(d["params"]) == {"standard", "depthwise_separable"}
    assert d["params"] == {"standard": 73728, "depthwise_separable": 8768}


def test_cost_conv_json_says_what_the_total_macs_are_of():
    d = run_json(
        "cost", "conv", "--cin", "64", "--cout", "128", "--kernel", "3",
        "--input-size", "224", "--stride", "2", "--json",
    )  # fmt: skip
    assert (d["stride"], d["input_size"], d["output_size"]) == (2, [224, 224], [112, 112])
    assert d["standard"]["macs"] == 3 * 3 * 64 * 128 * 112 * 112  # per output pixel x pixels
    plain = run_json("cost", "conv", "--cin", "8", "--cout", "8", "--kernel", "3", "--json")
    assert (plain["stride"], plain["input_size"], plain["output_size"]) == (1, None, None)


def test_cost_conv_json_dims_3():
    d = run_json(
        "cost", "conv", "--cin", "16", "--cout", "32", "--kernel", "3", "--dims", "3", "--json"
    )
    assert d["dims"] == 3
    assert d["kernel_size"] == [3, 3, 3]
    assert d["standard"]["macs_per_pixel"] == 27 * 16 * 32
    assert d["depthwise_separable"]["macs_per_pixel"] == 27 * 16 + 16 * 32
    assert d["ratio"]["macs"] == pytest.approx(32 * 27 / (27 + 32), rel=1e-12)


def test_cost_conv_depth_multiplier_closed_form_in_json_and_text():
    """The MAC ratio of 32 -> 64, 3x3, depth multiplier 2 is C_out K / (m (K + C_out)), in
    the JSON and in the text line."""
    args = ("cost", "conv", "--cin", "32", "--cout", "64", "--kernel", "3")
    d = run_json(*args, "--depth-multiplier", "2", "--json")
    want = 64 * 9 / (2 * (9 + 64))
    assert d["ratio"]["formula"] == pytest.approx(want, rel=1e-12)
    assert d["ratio"]["macs"] == pytest.approx(want, rel=1e-12)  # equal for a 1x1 pixel
    result = runner.invoke(app, [*args, "--depth-multiplier", "2"])
    assert result.exit_code == 0
    assert f"C_out*K/(m*(K+C_out)) = {want:.2f}" in result.output


def test_cost_conv_json_non_square_kernel():
    d = run_json("cost", "conv", "--cin", "8", "--cout", "24", "--kernel", "3,5", "--json")
    assert d["kernel_size"] == [3, 5]
    assert d["standard"]["macs_per_pixel"] == 15 * 8 * 24
    assert d["depthwise_separable"]["macs_per_pixel"] == 15 * 8 + 8 * 24
    assert d["ratio"]["formula"] == pytest.approx(24 * 15 / (15 + 24), rel=1e-12)


def test_cost_conv_json_depth_multiplier_2():
    d = run_json(
        "cost", "conv", "--cin", "64", "--cout", "128", "--depth-multiplier", "2", "--json"
    )
    assert d["depth_multiplier"] == 2
    assert d["depthwise"]["macs_per_pixel"] == 9 * 64 * 2
    assert d["pointwise"]["macs_per_pixel"] == 64 * 2 * 128
    assert d["depthwise_separable"]["macs_per_pixel"] == 9 * 128 + 128 * 128
    assert d["ratio"]["macs"] == pytest.approx(73728 / (9 * 128 + 128 * 128), rel=1e-12)


def test_cost_conv_json_input_size_and_stride_give_totals():
    d = run_json(
        "cost",
        "conv",
        "--cin",
        "64",
        "--cout",
        "128",
        "--input-size",
        "224",
        "--stride",
        "2",
        "--json",
    )
    pixels = math.ceil(224 / 2) ** 2
    assert d["standard"]["macs"] == 73728 * pixels
    assert d["depthwise"]["macs"] == 9 * 64 * pixels
    assert d["pointwise"]["macs"] == 64 * 128 * pixels
    assert d["depthwise_separable"]["macs"] == 8768 * pixels


def test_cost_conv_bias_counts_bias_parameters():
    d = run_json("cost", "conv", "--cin", "64", "--cout", "128", "--bias", "--json")
    assert d["params"]["standard"] == 73728 + 128
    assert d["params"]["depthwise_separable"] == 8768 + 64 + 128
    assert d["standard"]["macs_per_pixel"] == 73728


def test_cost_conv_text_shows_thousands_separators_and_ratio():
    result = run("cost", "conv", "--cin", "64", "--cout", "128", "--kernel", "3")
    assert result.exit_code == 0, result.output
    assert "73,728" in result.stdout
    assert "8,768" in result.stdout
    assert "8.41x" in result.stdout
    assert "Traceback" not in result.output


def test_cost_conv_text_with_totals_has_a_total_column():
    result = run("cost", "conv", "--cin", "64", "--cout", "128", "--input-size", "224")
    assert result.exit_code == 0, result.output
    assert "total MACs" in result.stdout
    assert f"{73728 * 224 * 224:,}" in result.stdout


@pytest.mark.parametrize(
    ("args", "title", "total"),
    [
        # 'same' padding: ceil(224 / 2) = 112 outputs per axis
        (("--input-size", "224", "--stride", "2"),
         "3x3 conv, 64 -> 128 channels (2-D), input 224x224, stride 2 -> output 112x112",
         112 * 112),
        (("--input-size", "15,9", "--stride", "4"), "input 15x9, stride 4 -> output 4x3", 4 * 3),
        (("--input-size", "7", "--dims", "3"), "(3-D), input 7x7x7, stride 1 -> output 7x7x7",
         7**3),
    ],
)  # fmt: skip
def test_cost_conv_title_says_what_the_total_macs_are_of(args, title, total):
    result = run("cost", "conv", "--cin", "64", "--cout", "128", "--kernel", "3", *args)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert title in first, first
    per_pixel = 64 * 128 * 3 ** (3 if "3-D" in title else 2)
    assert f"{per_pixel * total:,}" in result.stdout


def test_cost_conv_title_without_input_size_has_no_sizes():
    result = run("cost", "conv", "--cin", "64", "--cout", "128", "--stride", "2")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first == "3x3 conv, 64 -> 128 channels (2-D), stride 2", first
    assert "total MACs" not in result.stdout


def test_cost_kernel_json_10x10x10_is_1000_vs_30():
    d = run_json("cost", "kernel", "--shape", "10,10,10", "--json")
    assert d["schema"] == 1
    assert d["shape"] == [10, 10, 10]
    assert d["macs"]["direct"] == 1000
    assert d["macs"]["separable"] == 30
    assert "fft" not in d["macs"]


def test_cost_kernel_json_rank_and_data_shape():
    d = run_json(
        "cost", "kernel", "--shape", "7,7", "--rank", "3", "--data-shape", "256,256", "--json"
    )
    assert d["macs"]["direct"] == 49
    assert d["macs"]["lowrank"] == 3 * 14
    padded = (256 + 6) ** 2
    assert d["macs"]["fft"] == pytest.approx(
        padded / 256**2 * (2.5 * math.log2(padded) + 2), rel=1e-12
    )


def test_cost_kernel_prints_exact_counts_and_says_what_its_json_is_of():
    """Before: 110889 MACs printed as 1.11e+05; the JSON lacked rank and data_shape."""
    result = run("cost", "kernel", "--shape", "333,333", "--rank", "2")
    assert "110,889" in result.stdout and "1,332" in result.stdout and "e+05" not in result.stdout
    d = run_json("cost", "kernel", "--shape", "333,333", "--rank", "2", "--data-shape", "64,64",
                 "--json")  # fmt: skip
    assert (d["rank"], d["data_shape"]) == (2, [64, 64])
    assert d["macs"]["direct"] == 333 * 333 and d["macs"]["lowrank"] == 2 * 2 * 333


def test_cost_kernel_text_shows_33x_speedup():
    result = run("cost", "kernel", "--shape", "10,10,10")
    assert result.exit_code == 0, result.output
    assert "1,000" in result.stdout
    assert "33.33x" in result.stdout
    assert "add --data-shape (e.g. 1024,1024,1024) for its row" in result.stdout  # no fft row
    with_fft = run("cost", "kernel", "--shape", "10,10,10", "--data-shape", "64,64,64")
    assert "│ fft " in with_fft.stdout and "--data-shape" not in with_fft.stdout


# ----------------------------------------------------------------------------------------------
# demo and --version
# ----------------------------------------------------------------------------------------------


def test_demo_writes_results_json_and_prints_article_numbers(tmp_path):
    out = tmp_path / "x"
    result = run("demo", "--quick", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "73,728" in result.output and "49 vs 14" in result.output
    summary = json.loads((out / "results.json").read_text())
    by_kernel = {row[0]: row for row in summary["analysed"]}
    assert by_kernel["gaussian:sigma=2"][2] == 1
    assert by_kernel["laplacian_of_gaussian:sigma=2"][2] == 2
    assert by_kernel["laplacian_of_gaussian:sigma=1.5,ndim=3"][2] == 3
    for spec, shape, rank, macs, *_ in summary["analysed"]:
        dims = [int(n) for n in shape.split("x")]
        assert macs == f"{math.prod(dims)} -> {rank * sum(dims)}", spec
    text = result.stdout
    assert "7x7 kernel 49 vs 14 MACs" in text
    assert "10x10x10 1000 vs 30 (33.3x)" in text
    assert "73,728" in text and "8,768" in text
    assert not list(out.glob("*.tmp"))


def test_version_prints_the_package_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"sepconv {sepconv.__version__}"


# every command, with the flags it must show as plain flags (they take no value)
HELP_FLAGS = {
    (): ["--version", "--help"],
    ("analyze",): ["--json"],
    ("cost",): ["--help"],
    ("cost", "conv"): ["--json", "--bias"],
    ("cost", "kernel"): ["--json"],
    ("calibrate",): ["--quick", "--json"],
    ("experiment",): ["--quick"],
    ("profile",): ["--json", "--full-conv", "--measure", "--no-measure"],
    ("filter",): ["--overwrite", "--quiet"],
    ("demo",): ["--quick"],
}


@pytest.mark.parametrize("command", list(HELP_FLAGS), ids=lambda c: " ".join(c) or "sepconv")
def test_help_shows_flags_without_a_value_type(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for flag in [*HELP_FLAGS[command], "--help"]:
        line = next((ln for ln in lines if f" {flag} " in ln), None)
        assert line is not None, (flag, result.stdout)
        # nothing between the flag and its help text but spaces (and its --no- twin)
        assert "<bool>" not in line and "BOOLEAN" not in line, line
    assert "<bool>" not in result.stdout
    # options that take a value still show its type
    if command == ("profile",):
        assert any("--width" in ln and "float" in ln.lower() for ln in lines), result.stdout


def test_quick_and_bias_are_plain_flags_without_a_negative_twin():
    for command in (["demo"], ["experiment"], ["calibrate"], ["cost", "conv"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert "--no-quick" not in result.stdout and "--no-bias" not in result.stdout


def test_no_arguments_prints_help():
    result = run()
    assert result.exit_code in (0, 2)
    assert "analyze" in result.output and "cost" in result.output


# ----------------------------------------------------------------------------------------------
# bad input: exit status 2, one line, no traceback
# ----------------------------------------------------------------------------------------------


def test_unknown_kernel_name_is_a_one_line_error():
    line = assert_user_error(run("analyze", "nosuchkernel"), "unknown kernel", "'nosuchkernel'")
    assert "gaussian" in line  # lists the known kernels


def test_unknown_spec_parameter_is_a_one_line_error():
    line = assert_user_error(run("analyze", "gaussian:sigma=1,foo=2"), "unknown parameter", "'foo'")
    assert "sigma" in line  # lists the allowed parameters


def test_malformed_spec_is_a_one_line_error():
    assert_user_error(run("analyze", "gaussian:sigma"), "missing '='", "'sigma'")


def test_missing_kernel_file_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run("analyze", "nope.npy"), "'nope.npy'", "does not exist")


def test_npy_with_nan_is_a_one_line_error(tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[1.0, np.nan], [2.0, 3.0]]))
    assert_user_error(run("analyze", str(path)), "finite", "NaN", "(0, 1)")


def test_zero_dimensional_npy_is_a_one_line_error(tmp_path):
    path = tmp_path / "scalar.npy"
    np.save(path, np.array(3.0))
    assert_user_error(run("analyze", str(path)), "at least one dimension", "0-d")


@pytest.mark.parametrize("tol", ["-1", "-0.01", "nan", "inf"])
def test_negative_or_non_finite_tol_is_a_one_line_error(tol):
    assert_user_error(run("analyze", "gaussian:sigma=2", "--tol", tol), "--tol must be a finite")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--cin", "0", "--cout", "8"), "--cin must be an integer >= 1"),
        (("--cin", "8", "--cout", "-3"), "--cout must be an integer >= 1"),
        (("--cin", "8", "--cout", "8", "--kernel", "abc"), "--kernel must be integers"),
        (("--cin", "8", "--cout", "8", "--kernel", "0"), "--kernel must be positive integers"),
        (("--cin", "8", "--cout", "8", "--kernel", "3,5,7"), "--kernel must be one size or 2"),
        (("--cin", "8", "--cout", "8", "--dims", "0"), "--dims must be 1, 2 or 3"),
        (("--cin", "8", "--cout", "8", "--depth-multiplier", "0"), "--depth-multiplier must"),
        (("--cin", "8", "--cout", "8", "--input-size", "10", "--stride", "0"), "--stride must"),
        (("--cin", "8", "--cout", "8", "--input-size", "x"), "--input-size must"),
    ],
)
def test_cost_conv_bad_numbers_are_one_line_errors(args, needle):
    assert_user_error(run("cost", "conv", *args), needle)


def test_data_shape_of_wrong_length_is_a_one_line_error():
    assert_user_error(
        run("analyze", "gaussian:sigma=2", "--data-shape", "5"),
        "--data-shape must have one entry per kernel axis (2)",
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--shape", "7,0"), "--shape must be positive integers"),
        (("--shape", "7,7", "--rank", "0"), "--rank must be an integer >= 1"),
        (("--shape", "7,7", "--data-shape", "100"), "--data-shape must have one entry"),
    ],
)
def test_cost_kernel_bad_input_is_a_one_line_error(args, needle):
    assert_user_error(run("cost", "kernel", *args), needle)


def test_missing_argument_exits_2_naming_it_without_traceback():
    result = run("analyze")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Missing argument" in result.output
    assert "spec" in result.output.lower()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["analyze"], "SPEC"),
        (["cost", "conv", "--cout", "8"], "--cin"),
        (["cost", "conv", "--cin", "abc", "--cout", "3"], "--cin"),
    ],
)
def test_usage_errors_of_the_installed_script_are_one_line(args, needle):
    script = Path(sys.executable).parent / "sepconv"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sepconv: error: ")
    assert needle in lines[0]


def test_installed_script_exits_2_with_one_line_on_stderr():
    script = Path(sys.executable).parent / "sepconv"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(script), "analyze", "gaussian:sigma=1,foo=2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sepconv: error: spec: unknown parameter 'foo'")


# ---------------------------------------------------------------------------------------------
# analyze --tol: the tol rank is a row of the table within tol (review bug 5)
# ---------------------------------------------------------------------------------------------


def _spec_array(spec: str) -> np.ndarray:
    if spec == "random345":
        return np.random.default_rng(0).random((3, 4, 5))
    return sepconv.kernels.from_spec(spec)


@pytest.mark.parametrize(
    ("spec", "tol"),
    [
        ("ball:radius=3", 1e-3),
        ("laplace:ndim=3", 0.01),
        ("random345", 0.1),
        ("disk:radius=6", 0.05),
    ],
)
def test_analyze_tol_rank_is_the_first_row_within_tol_and_what_separate_returns(
    tmp_path, spec, tol
):
    K = _spec_array(spec)
    arg = spec
    if spec == "random345":
        arg = str(tmp_path / "k3d.npy")
        np.save(arg, K)
    d = run_json("analyze", arg, "--tol", str(tol), "--json")
    rows = d["errors"]
    tol_row = next(r for r in rows if r["rank"] == d["tol_rank"])
    assert tol_row["error"] <= tol
    assert all(r["error"] > tol for r in rows if r["rank"] < d["tol_rank"])
    assert d["tol_rank"] <= d["rank"]
    # the library's answer, checked independently from its own factors
    f = sepconv.separate(K, tol=tol)
    dense = sum(
        float(w) * math.prod(np.ix_(*fs)[k] for k in range(K.ndim))
        for w, fs in zip(f.weights, f.factors, strict=True)
    )
    assert np.linalg.norm(K - dense) / np.linalg.norm(K) <= tol
    assert f.rank == d["tol_rank"]


def test_analyze_ball_tol_rank_is_not_above_the_exact_rank_in_the_text_table():
    result = run("analyze", "ball:radius=3", "--tol", "0.001")
    assert result.exit_code == 0, result.output
    noted = [line for line in result.stdout.splitlines() if "smallest rank with error" in line]
    assert len(noted) == 1
    cells = [c.strip() for c in noted[0].split("│") if c.strip()]
    assert cells[0] == "5" and float(cells[1]) <= 0.001


# ---------------------------------------------------------------------------------------------
# smaller refusals (review: empty --axes, cost conv --dims 4, missing matplotlib)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", ["", ",", "0,,1", "0,x"])
def test_filter_refuses_empty_or_junk_axes_naming_axes(tmp_path, axes):
    src = tmp_path / "a.npy"
    np.save(src, np.zeros((8, 8)))
    result = run("filter", str(src), str(tmp_path / "o.npy"), "-k", "box:size=3", "--axes", axes)
    assert_user_error(result, "--axes", repr(axes))
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("dims", ["0", "4", "-1"])  # 0 and -1: the library's message
def test_cost_conv_dims_must_be_1_2_or_3(dims):
    result = run("cost", "conv", "--cin", "3", "--cout", "4", "--dims", dims)
    assert_user_error(result, "--dims must be 1, 2 or 3", dims)


@pytest.mark.parametrize("shape", ["7,,7", "7,x", "7,7,"])
def test_cost_kernel_refuses_empty_parts_of_the_shape(shape):
    assert_user_error(run("cost", "kernel", "--shape", shape), "--shape", repr(shape))


def test_experiment_without_matplotlib_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run("experiment", "speedup", "--quick", "--out", str(tmp_path / "x"))
    assert_user_error(result, "matplotlib", "pip install 'sepconv[experiments]'")
    assert not (tmp_path / "x").exists()


def test_demo_console_shows_when_the_plan_used_more_terms_than_the_exact_rank(
    tmp_path, monkeypatch
):
    """The planner's time-bounded CP search can settle for rank 4 on the 3-D LoG (exact rank
    3): the console's plan column and a note say so, and the labels stay on one line."""
    from types import SimpleNamespace

    from sepconv.experiments import demo as demo_module

    row = {"label": "low rank: LoG sigma=1.5", "plan": "lowrank", "rank": 4, "exact_rank": 3,
           "sepconv_ms": 40.0, "scipy_ms": 4000.0, "speedup": 100.0, "rel_diff": 1e-7}  # fmt: skip
    results = {
        "analysed": [],
        "image": [],
        "volume": [row],
        "conv_costs": [],
        "rank_notes": demo_module.rank_notes([row]),
        "mobilenet": [],
    }
    fake = SimpleNamespace(results=results, folder=tmp_path, seconds=0.04, write=lambda: None)
    monkeypatch.setattr(demo_module, "run", lambda out, quick=False: fake)
    result = run("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "low rank: LoG sigma=1.5" in result.output  # one line
    assert "lowrank rank 4" in result.output and "(exact rank 3)" in result.output
    assert results["rank_notes"] and results["rank_notes"][0] in result.output.replace("\n", " ")
    assert "(< 0.1 s)" in result.output  # not '(0 s)'


def test_analyze_of_a_kernel_near_the_float64_maximum_prints_valid_json(tmp_path):
    """Before: bare 'Infinity' in --json (sigma_1 = 3e308 overflows) and RuntimeWarnings."""
    np.save(tmp_path / "big.npy", np.full((3, 3), 1e308))
    result = runner.invoke(app, ["analyze", str(tmp_path / "big.npy"), "--json"])
    assert result.exit_code == 0 and result.stderr == ""
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout
    d = json.loads(result.stdout)
    assert d["rank"] == 1 and d["singular_values"][0] is None  # beyond float64: null


def test_analyze_precision_is_case_insensitive():
    d = run_json("analyze", "gaussian:sigma=1", "--precision", "FLOAT32", "--json")
    assert d["precision"] == "float32"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("laplace:ndim=30000", "ndim must be at most 64"),
        ("gaussian:sigma=1,ndim=10000000", "ndim must be at most 64"),
        ("gaussian:sigma=1,ndim=30", "sigma=1 in 30 dimensions gives a dense kernel"),
    ],
)
def test_analyze_refuses_huge_ndim_at_once(spec, needle):
    """Before: laplace:ndim=30000 used 2.8 GB and died with a MemoryError traceback;
    ndim=10**7 ran for minutes building per-axis vectors."""
    result = run("analyze", spec)
    assert result.exit_code == 2 and needle in result.stderr
