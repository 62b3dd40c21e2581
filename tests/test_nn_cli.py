"""``sepconv profile`` and the torch-free import of sepconv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepconv.cli import app

runner = CliRunner()


def test_profile_mobilenet_counts_as_json():
    result = runner.invoke(
        app,
        [
            "profile",
            "mobilenet_v1",
            "--width",
            "0.5",
            "--resolution",
            "160",
            "--no-measure",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    # Howard et al. 2017, Tables 6/7 give 149M at 224 for alpha 0.5; at 160 the count scales
    # with the pixels of every layer: 76.5M mult-adds, 1.33M parameters
    assert doc["totals"]["macs"] == 76_524_800
    assert doc["totals"]["params"] == 1_331_592
    assert doc["input_shape"] == [1, 3, 160, 160]
    assert doc["machine"] is None and doc["outliers"] == []


def test_profile_full_conv_text_table():
    result = runner.invoke(app, ["profile", "mobilenet_v1", "--full-conv", "--no-measure"])
    assert result.exit_code == 0, result.output
    assert "4,867,293,184 MACs" in result.stdout and "29.29M" in result.stdout
    assert "blocks.12.conv" in result.stdout


def test_profile_measures_a_small_model():
    result = runner.invoke(
        app,
        ["profile", "small_cnn", "--resolution", "16", "--threads", "1", "--repeats", "2",
         "--memory-format", "contiguous"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "measured: end-to-end median" in result.stdout
    assert "outside 2x of the roofline" in result.stdout


def test_profile_user_factory_and_input_shape():
    result = runner.invoke(
        app,
        ["profile", "torch.nn:Identity", "--input-shape", "1,3,8,8", "--no-measure", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["macs"] == 0


MODULE_IN_CWD = """
import torch


def build(num_classes=10, **kwargs):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, num_classes, bias=False),
    )
"""


def test_profile_imports_a_factory_module_from_the_current_directory(tmp_path):
    # as with `python -m`, a module in the current directory is importable; the installed
    # console script's sys.path[0] is its bin/ folder, so this needs the CLI's help
    (tmp_path / "my_cwd_models.py").write_text(MODULE_IN_CWD)
    script = Path(sys.executable).parent / "sepconv"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(script), "profile", "my_cwd_models:build", "--input-shape", "1,3,6,6",
         "--no-measure", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # independent count: conv 3->8, 3x3 over 6x6 outputs; linear 288 -> 10
    assert doc["totals"]["macs"] == 8 * 3 * 9 * 36 + 288 * 10
    assert doc["totals"]["params"] == 8 * 3 * 9 + 288 * 10


def test_profile_module_from_cwd_in_process_leaves_sys_path_unchanged(tmp_path, monkeypatch):
    (tmp_path / "my_cwd_models2.py").write_text(MODULE_IN_CWD)
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    result = runner.invoke(
        app, ["profile", "my_cwd_models2:build", "--input-shape", "1,3,6,6", "--no-measure"]
    )
    assert result.exit_code == 0, result.output
    assert sys.path == before
    sys.modules.pop("my_cwd_models2", None)


def test_profile_user_errors_are_one_line_exit_2():
    for args, needle in [
        (["profile", "vgg16"], "model must be one of"),
        (["profile", "resnet18", "--full-conv"], "--full-conv does not apply"),
        (["profile", "mobilenet_v1", "--width", "0"], "width_mult must be a finite number > 0"),
        (["profile", "mobilenet_v1", "--memory-format", "nhwc"], "memory_format must be one of"),
        (["profile", "no.such.module:f"], "cannot be imported"),
        (["profile", "torch.nn:Identity"], "give --input-shape"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("sepconv: error:") and needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_import_sepconv_does_not_import_torch():
    code = "import sys, sepconv, sepconv.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
