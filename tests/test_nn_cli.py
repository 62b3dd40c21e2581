"""``sepconv profile`` and the torch-free import of sepconv."""

from __future__ import annotations

import json
import subprocess
import sys

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
