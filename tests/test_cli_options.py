"""Every command's bad numeric or list option is refused in one line naming that option.

The library names its parameters (``in_channels must be ...``); the command line must name
the option the user typed (``--cin must be ...``), with the bad value, and leave the library's
own messages unchanged for Python callers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sepconv import cli, cost

runner = CliRunner()

CONV = ("cost", "conv", "--cin", "8", "--cout", "8")
KERNEL = ("cost", "kernel", "--shape", "7,7")
ANALYZE = ("analyze", "gaussian:sigma=2")
PROFILE = ("profile", "small_cnn", "--no-measure")
CONVERT = ("convert", "small_cnn", "-o", "{tmp}/m.pt", "--rank", "1")
FILTER = ("filter", "{tmp}/v.npy", "{tmp}/o.npy", "-k", "box:size=3")
EXPERIMENT = ("experiment", "layers", "--quick", "--out", "{tmp}/x")

# (command, the bad option and value, what else the line must say)
CASES = [
    (ANALYZE, ("--tol", "-1"), "finite number >= 0"),
    (ANALYZE, ("--data-shape", "10,abc"), "'10,abc'"),
    (ANALYZE, ("--data-shape", "0,4"), "positive integers"),
    (ANALYZE, ("--data-shape", "10"), "one entry per kernel axis (2)"),
    (ANALYZE, ("--precision", "half"), "'half'"),
    ((*CONV[:2], "--cin", "0", "--cout", "8"), ("--cin", "0"), ">= 1, got 0"),
    ((*CONV[:2], "--cin", "8", "--cout", "-3"), ("--cout", "-3"), ">= 1, got -3"),
    (CONV, ("--kernel", "abc"), "'abc'"),
    (CONV, ("--kernel", "0"), "positive integers"),
    (CONV, ("--kernel", "3,5,7"), "one size or 2 sizes"),
    (CONV, ("--dims", "0"), "1, 2 or 3, got 0"),
    (CONV, ("--dims", "4"), "1, 2 or 3, got 4"),
    (CONV, ("--depth-multiplier", "0"), ">= 1, got 0"),
    (CONV, ("--input-size", "x"), "'x'"),
    (CONV, ("--input-size", "10,10,10"), "one size or 2 sizes"),
    ((*CONV, "--input-size", "10"), ("--stride", "0"), ">= 1, got 0"),
    (KERNEL[:2], ("--shape", "7,0"), "'7,0'"),
    (KERNEL, ("--rank", "0"), ">= 1, got 0"),
    (KERNEL, ("--data-shape", "10,abc"), "'10,abc'"),
    (KERNEL, ("--data-shape", "100"), "one entry per kernel axis (2)"),
    (EXPERIMENT, ("--seeds", "a"), "'a'"),
    (EXPERIMENT, ("--seeds", "1"), "at least 2"),
    (FILTER, ("--channel-axis", "7"), "[-3, 2]"),
    (FILTER, ("--channel-axis", "x"), "'x'"),
    (FILTER[:3], ("--kernel", "nope:x=1"), "unknown kernel 'nope'"),
    (FILTER, ("--axes", "0,7"), "[-3, 2]"),
    (FILTER, ("--axes", "0,0"), "(0, 0)"),
    (FILTER, ("--axes", "a"), "'a'"),
    (FILTER, ("--mode", "edge"), "'edge'"),
    (FILTER, ("--method", "fast"), "'fast'"),
    (FILTER, ("--tol", "-1"), "finite number >= 0"),
    (FILTER, ("--dtype", "banana"), "'banana'"),
    (FILTER, ("--workers", "0"), "got 0"),
    (FILTER, ("--chunks", "a,b"), "'a,b'"),
    (FILTER, ("--chunks", "0"), "'0'"),
    (FILTER, ("--scheduler", "gpu"), "'gpu'"),
    ((*FILTER, "--chunks", "4"), ("--memory-limit", "lots"), "'lots'"),
    (FILTER[:3], ("--sigma-mm", "-1"), "got -1"),
    (PROFILE, ("--width", "0"), "> 0, got 0"),
    (PROFILE, ("--resolution", "0"), ">= 1, got 0"),
    (PROFILE, ("--batch", "0"), ">= 1, got 0"),
    (PROFILE, ("--num-classes", "0"), ">= 1, got 0"),
    (PROFILE, ("--input-shape", "1,3,x"), "'1,3,x'"),
    (PROFILE, ("--input-shape", "1,3"), "does not fit the model"),
    (PROFILE, ("--threads", "0"), ">= 1, got 0"),
    (PROFILE[:2], ("--repeats", "0"), ">= 1, got 0"),
    (PROFILE, ("--memory-format", "nhwc"), "'nhwc'"),
    (PROFILE, ("--compile", "jit"), "none, inductor or torchscript, got 'jit'"),
    (PROFILE, ("--device", "tpu"), "'tpu'"),
    (CONVERT, ("--kind", "svd"), "'svd'"),
    (CONVERT[:4], ("--rank", "0"), "'0'"),
    (CONVERT[:4], ("--tol", "-1"), "finite number >= 0"),
    (CONVERT[:4], ("--mac-budget", "2"), "(0, 1], got 2.0"),
    (CONVERT[:4], ("--latency-budget", "0"), "> 0, got 0.0"),
    (CONVERT, ("--rank-multiple", "0"), ">= 1, got 0"),
    (CONVERT, ("--layers", "nope"), "['nope']"),
    (CONVERT, ("--width", "-1"), "> 0, got -1"),
    (CONVERT, ("--resolution", "0"), ">= 1, got 0"),
    (CONVERT, ("--batch", "0"), ">= 1, got 0"),
    (CONVERT, ("--num-classes", "0"), ">= 1, got 0"),
    (CONVERT, ("--input-shape", "0"), "'0'"),
    (CONVERT, ("--threads", "0"), ">= 1, got 0"),
]

#: the library's parameter names that must not reach a command-line user
LIBRARY_NAMES = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "depth_multiplier",
    "input_size",
    "data_shape",
    "width_mult",
    "input_shape",
    "channel_axis",
    "sigma_mm",
    "memory_limit",
    "memory_format",
    "mac_budget",
    "latency_budget",
    "rank_multiple",
    "num_classes",
)


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sepconv: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("command", "bad", "detail"), CASES, ids=[f"{c[0]}-{' '.join(b)}" for c, b, _ in CASES]
)
def test_a_bad_option_is_named_as_typed(tmp_path: Path, monkeypatch, command, bad, detail):
    if command[0] in ("profile", "convert"):
        pytest.importorskip("torch")
    if command[0] == "experiment":
        pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "v.npy", np.zeros((6, 6, 6), np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(tmp=tmp_path) for a in (*command, *bad)]
    line = one_line(runner.invoke(cli.app, argv))
    option, value = bad
    assert line.startswith((f"sepconv: error: {option} ", f"sepconv: error: {option}: ")), line
    # the value as typed, as a tuple (1,3 -> (1, 3)) or its bad entry (0,7 -> got 7)
    shown = (value, f"({value.replace(',', ', ')})", f"got {value.split(',')[-1]}")
    assert any(v in line for v in shown) and detail in line, line
    for name in LIBRARY_NAMES:
        assert name not in line, line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before


def test_convert_names_the_policy_options_given_together(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["convert", "small_cnn", "-o", "m.pt", "--rank", "2", "--mac-budget", "0.5"]
    line = one_line(runner.invoke(cli.app, argv))
    assert line == (
        "sepconv: error: give at most one of --rank, --tol, --mac-budget and "
        "--latency-budget, got --rank and --mac-budget"
    )
    assert not (tmp_path / "m.pt").exists()


def test_only_a_leading_parameter_given_on_the_command_line_becomes_its_option():
    msg = "tol must be a finite number >= 0, got -1.0"
    assert cli._as_typed(msg, cli.analyze, {"tol": -1.0}) == "--" + msg
    # left at its default: not named as if the user had typed it
    assert cli._as_typed(msg, cli.analyze, {"tol": None}) == msg
    # a library name for an option with another name
    got = cli._as_typed("in_channels must be >= 1, got 0", cli.cost_conv, {"cin": 0})
    assert got == "--cin must be >= 1, got 0"
    # an argument (filter's OUTPUT) is not an option
    msg = "output 'o.tif' exists; pass --overwrite to replace it"
    assert cli._as_typed(msg, cli.filter_command, {"output": Path("o.tif")}) == msg
    # the word must be the whole first word, not a prefix of it
    msg = "tolerance is too small"
    assert cli._as_typed(msg, cli.analyze, {"tol": 0.5}) == msg


def test_the_library_keeps_naming_its_parameters_for_python_callers():
    with pytest.raises(ValueError, match=r"^in_channels must be an integer >= 1, got 0$"):
        cost.compare_conv(0, 8, 3)
    with pytest.raises(ValueError, match=r"^tol must be a finite number >= 0"):
        cli.analyze_kernel("gaussian:sigma=2", tol=-1.0)


def test_filter_and_convert_refuse_an_existing_output_in_the_same_words(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", np.zeros((6, 6), np.float32))
    for name in ("o.npy", "m.pt"):
        Path(name).write_bytes(b"keep")
    lines = [
        one_line(runner.invoke(cli.app, ["filter", "v.npy", "o.npy", "-k", "box:size=3"])),
        one_line(runner.invoke(cli.app, ["convert", "small_cnn", "--rank", "1", "-o", "m.pt"])),
    ]
    assert lines == [
        "sepconv: error: output 'o.npy' exists; pass --overwrite to replace it",
        "sepconv: error: --output 'm.pt' exists; pass --overwrite to replace it",
    ]
    assert Path("o.npy").read_bytes() == Path("m.pt").read_bytes() == b"keep"


def test_experiment_seeds_help_says_which_experiments_take_it_and_the_others_refuse_it(tmp_path):
    pytest.importorskip("matplotlib")
    from sepconv.experiments import EXPERIMENTS, SEEDED
    from sepconv.experiments.layers import SEEDS_FULL, SEEDS_QUICK

    result = runner.invoke(cli.app, ["experiment", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("\u2502", " ").split())  # rich's box edges
    assert SEEDED == ("layers",)
    assert "Seeds the layers experiment repeats over (also within all)" in text, text
    assert f"default {SEEDS_FULL} (--quick: {SEEDS_QUICK})" in text, text
    assert "The other experiments' seeds are fixed: they refuse --seeds." in text, text
    for name in sorted(set(EXPERIMENTS) - set(SEEDED)):
        argv = ["experiment", name, "--quick", "--seeds", "3", "--out", str(tmp_path / "x")]
        line = one_line(runner.invoke(cli.app, argv))
        assert line == (
            f"sepconv: error: --seeds applies to the experiments ['layers'], not {name!r} "
            "(its seeds are fixed)"
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("name", "seeds", "said"),
    [
        ("all", "1", "--seeds must be at least 2 (a confidence interval), got 1"),
        ("all", "0,0", "--seeds must hold at least 2 distinct non-negative ints"),
        ("layers", "x", "--seeds must be a count N or a list of integers such as 0,3,7, got 'x'"),
    ],
)
def test_bad_seeds_are_refused_before_any_experiment_runs(tmp_path, monkeypatch, name, seeds, said):
    pytest.importorskip("matplotlib")
    import sepconv.experiments

    def ran(*args, **kwargs):
        raise AssertionError("an experiment ran before --seeds was checked")

    if name == "all":
        monkeypatch.setattr(sepconv.experiments, "run_experiment", ran)
    argv = ["experiment", name, "--quick", "--seeds", seeds, "--out", str(tmp_path / "x")]
    result = runner.invoke(cli.app, argv)
    assert result.exit_code == 2, result.output
    # exactly one line: no blank line left by a progress bar on a stderr that is no terminal
    assert result.stderr.startswith(f"sepconv: error: {said}"), repr(result.stderr)
    assert result.stderr.count("\n") == 1, repr(result.stderr)
    assert not (tmp_path / "x").exists()
