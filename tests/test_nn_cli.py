"""``sepconv profile`` and the torch-free import of sepconv."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
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


def test_profile_of_a_tiny_model_prints_counts_not_zero_millions(tmp_path, monkeypatch):
    (tmp_path / "my_tiny_models.py").write_text(MODULE_IN_CWD)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["profile", "my_tiny_models:build", "--input-shape", "1,3,6,6", "--no-measure"]
    )
    sys.modules.pop("my_tiny_models", None)
    assert result.exit_code == 0, result.output
    first = next(line for line in result.stdout.splitlines() if line.startswith("my_tiny"))
    # 3x3 conv 3 -> 8 and linear 288 -> 10: 216 + 2,880 params; 216 * 36 + 2,880 MACs
    assert "(1, 3, 6, 6): 3,096 params, 10,656 MACs, 0 bias adds," in first, first
    assert "0.00M" not in first and "0.0M" not in first


def test_profile_user_errors_are_one_line_exit_2():
    for args, needle in [
        (["profile", "vgg16"], "model must be one of"),
        (["profile", "resnet18", "--full-conv"], "--full-conv does not apply"),
        (["profile", "mobilenet_v1", "--width", "0"], "--width must be a finite number > 0"),
        (["profile", "mobilenet_v1", "--memory-format", "nhwc"], "--memory-format must be one of"),
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


# -- sepconv convert --------------------------------------------------------------------------


def test_convert_mac_budget_json_and_the_saved_model_reloads(tmp_path):
    import torch

    import sepconv.nn as snn

    out = tmp_path / "r18.pt"
    args = ["convert", "resnet18", "--width", "0.25", "--resolution", "32", "--kind", "tucker2",
            "--mac-budget", "0.5", "-o", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["policy"] == "mac_budget=0.5" and doc["output"] == {
        "path": str(out),
        "format": "state_dict",
    }
    assert doc["macs_after"] <= 0.5 * doc["macs_before"]
    model = snn.load_converted(out)  # rebuilt from the recorded source: resnet18, width 0.25
    converted = {r["name"] for r in doc["layers"] if r["converted"]}
    assert converted and all(
        isinstance(model.get_submodule(n), snn.Tucker2Conv2d) for n in converted
    )
    # the rebuilt model costs what the report says (counted by the profiler)
    counted = sum(r.macs for r in snn.profile(model, (1, 3, 32, 32), measure=False).layers)
    assert counted == doc["macs_after"]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pt"]  # no temporary files


def test_convert_state_dict_in_torchscript_out(tmp_path):
    import torch

    from sepconv.nn import convert
    from sepconv.nn.models import small_cnn

    torch.manual_seed(0)
    model = small_cnn(resolution=16).eval()
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "small.ts"
    args = ["convert", "small_cnn", "--resolution", "16", "--state-dict", str(weights),
            "--rank", "2", "--torchscript", "-o", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "saved" in result.stdout and "TorchScript" in result.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, torch >= 2.9
        scripted = torch.jit.load(str(out))
    expected, _ = convert(model, rank=2)  # the trained weights were loaded before converting
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected.eval()(x), rtol=1e-5, atol=1e-6)


def _help_text(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.replace("\u2502", " ").split())  # rich's box edges


@pytest.mark.parametrize("form", ["checkpoint", "torchscript"])
def test_convert_state_dict_takes_what_its_help_says(tmp_path, form):
    import torch

    from sepconv.nn import convert
    from sepconv.nn.models import small_cnn

    text = _help_text("convert")
    said = (
        "a state dict file (torch.save), a checkpoint with a 'state_dict' entry, or a "
        "TorchScript file (its weights)"
    )
    assert said in text, text
    torch.manual_seed(1)
    model = small_cnn(resolution=16).eval()
    weights = tmp_path / f"{form}.pt"
    if form == "checkpoint":
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, weights)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, torch >= 2.9
            torch.jit.save(torch.jit.script(model), str(weights))
    out = tmp_path / "small.ts"
    args = ["convert", "small_cnn", "--resolution", "16", "--state-dict", str(weights),
            "--rank", "2", "--torchscript", "-o", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(out))
    expected, _ = convert(model, rank=2)  # these weights, not small_cnn's fresh ones
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected.eval()(x), rtol=1e-5, atol=1e-6)


def test_convert_latency_budget_prints_measured_times(tmp_path):
    out = tmp_path / "s.pt"
    args = ["convert", "small_cnn", "--resolution", "16", "--latency-budget", "0.9",
            "--threads", "1", "-o", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["latency_before_s"] > 0 and doc["latency_after_s"] > 0
    assert doc["timing"]["threads"] == 1 and doc["timing"]["rounds"] is not None
    for row in doc["layers"]:  # never a replacement measured slower than its conv
        if row["converted"]:
            assert row["time_after_s"] < row["time_before_s"]


UNSCRIPTABLE = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x, *extra):  # varargs: torch.jit.script refuses this
        return self.conv(x)


def build(**kwargs):
    return Net()
"""


def test_convert_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch):
    (tmp_path / "my_unscriptable.py").write_text(UNSCRIPTABLE)
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"keep me")
    script = tmp_path / "model.ts"
    script.write_bytes(b"not really torchscript")
    cases = [
        (["convert", "small_cnn", "-o", "exists.pt", "--rank", "1"], "exists; pass --overwrite"),
        (["convert", "small_cnn", "-o", "exists.pt", "--overwrite", "--state-dict", "exists.pt"],
         "is the --state-dict file: never overwritten"),
        (["convert", "model.ts", "-o", "new.pt"], "a TorchScript model cannot be converted"),
        (["convert", "small_cnn", "-o", "new.pt", "--kind", "svd"], "--kind must be one of"),
        (["convert", "small_cnn", "-o", "new.pt", "--rank", "1,2,3"], "--rank must be R"),
        (["convert", "small_cnn", "-o", "new.pt", "--rank", "1", "--latency-budget", "0.5"],
         "give at most one of --rank, --tol, --mac-budget and --latency-budget"),
        (["convert", "small_cnn", "-o", "nope/new.pt"], "does not exist"),
        (["convert", "my_unscriptable:build", "--input-shape", "1,3,8,8", "--rank", "1",
          "--torchscript", "-o", "new.ts"], "cannot be scripted"),
    ]  # fmt: skip
    for args, needle in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("sepconv: error:") and needle in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1
    assert existing.read_bytes() == b"keep me"
    # nothing written, no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("__")) == [
        "exists.pt",
        "model.ts",
        "my_unscriptable.py",
    ]
    sys.modules.pop("my_unscriptable", None)


def test_convert_a_local_module_and_reload_it_from_the_current_directory(tmp_path, monkeypatch):
    import torch

    import sepconv.nn as snn

    (tmp_path / "my_local_net.py").write_text(UNSCRIPTABLE)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["convert", "my_local_net:build", "--input-shape", "1,3,8,8", "--rank", "1",
              "-o", "net.pt"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = snn.load_converted(tmp_path / "net.pt")
    assert isinstance(model.conv, snn.DepthwiseSeparableConv2d)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)
    sys.modules.pop("my_local_net", None)


def test_convert_layers_slice_and_calibration_file(tmp_path):
    import numpy as np

    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "s.pt"
    args = ["convert", "small_cnn", "--resolution", "16", "--layers", "0:2", "--rank", "1",
            "--calibration", str(calib), "-o", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["name"] for r in doc["layers"]] == ["stem.conv", "blocks.0.0"]
    assert all(r["output_error"] is not None for r in doc["layers"])
    assert doc["model_output_error"] is not None
    result = runner.invoke(app, [*args[:4], "--layers", "a,,", "-o", str(tmp_path / "t.pt")])
    assert result.exit_code == 2 and "layers names ['a']" in result.stderr


def test_convert_with_several_kinds_names_each_layers_kind(tmp_path):
    import sepconv.nn as snn

    out = tmp_path / "r18.pt"
    args = ["convert", "resnet18", "--width", "0.25", "--resolution", "32", "--kind",
            "depthwise, tucker2", "--mac-budget", "0.3", "-o", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "depthwise+tucker2"
    assert doc["macs_after"] <= 0.3 * doc["macs_before"]
    kinds = {r["name"]: r["kind"] for r in doc["layers"] if r["converted"]}
    assert kinds and set(kinds.values()) <= {"depthwise", "tucker2"}
    model = snn.load_converted(out)
    classes = {"depthwise": snn.DepthwiseSeparableConv2d, "tucker2": snn.Tucker2Conv2d}
    assert all(isinstance(model.get_submodule(n), classes[k]) for n, k in kinds.items())
    bad = runner.invoke(app, [*args[:7], "depthwise,cp2", *args[8:11], str(tmp_path / "b.pt")])
    assert bad.exit_code == 2 and "'cp2' in ('depthwise', 'cp2') is not a kind" in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pt"]


# ---------------------------------------------------------------------------------------------
# missing extras, bad model options, shapes and empty --layers: one line, exit 2
# ---------------------------------------------------------------------------------------------


def _one_line_exit_2(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sepconv: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _without_torch(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter where ``import torch`` fails (not installed)."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # import torch now raises ImportError\n"
        "from sepconv.cli import main\n"
        f"sys.argv = ['sepconv', *{list(argv)!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("profile", "small_cnn", "--no-measure"),
        ("convert", "small_cnn", "--rank", "1", "-o", "m.pt"),
    ],
)
def test_profile_and_convert_without_torch_say_which_extra(tmp_path, argv):
    proc = _without_torch(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"sepconv: error: sepconv {argv[0]} needs the torch package: pip install 'sepconv[nn]'"
    ]
    assert list(tmp_path.iterdir()) == []


def test_profile_without_torch_in_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    result = runner.invoke(app, ["profile", "small_cnn", "--no-measure"])
    _one_line_exit_2(result, "torch", "pip install 'sepconv[nn]'")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--num-classes", "0"], ["--num-classes", "0"]),
        (["--width", "-1"], ["--width", "-1"]),
        (["--width", "0"], ["--width", "0"]),
        (["--width", "nan"], ["--width", "nan"]),
    ],
)
@pytest.mark.parametrize("command", ["profile", "convert"])
def test_bad_model_options_are_one_line_exit_2(tmp_path, monkeypatch, command, args, needles):
    monkeypatch.chdir(tmp_path)
    if command == "profile":
        argv = ["profile", "small_cnn", "--no-measure", *args]
    else:
        argv = ["convert", "small_cnn", "--rank", "1", "-o", "a.pt", *args]
    _one_line_exit_2(runner.invoke(app, argv), *needles)
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize("shape", ["1,3,x", "1,,3,32,32", "1,3,32,", "1,3,3.5,32", ","])
@pytest.mark.parametrize("command", ["profile", "convert"])
def test_junk_in_input_shape_is_refused_with_the_text(tmp_path, monkeypatch, command, shape):
    monkeypatch.chdir(tmp_path)
    if command == "profile":
        argv = ["profile", "small_cnn", "--no-measure", "--input-shape", shape]
    else:
        argv = ["convert", "small_cnn", "--rank", "1", "-o", "a.pt", "--input-shape", shape]
    _one_line_exit_2(runner.invoke(app, argv), "--input-shape", repr(shape))
    assert not (tmp_path / "a.pt").exists()


def test_input_shape_with_x_separators_still_parses():
    result = runner.invoke(
        app, ["profile", "small_cnn", "--no-measure", "--input-shape", "2x3x32x32", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input_shape"] == [2, 3, 32, 32]


@pytest.mark.parametrize("layers", ["5:1", "3:3", "40:", ":0"])
def test_convert_refuses_an_empty_layers_slice_and_writes_nothing(tmp_path, monkeypatch, layers):
    import torch.nn as tnn

    from sepconv.nn.models import small_cnn

    monkeypatch.chdir(tmp_path)
    convs = sum(isinstance(m, tnn.Conv2d) for m in small_cnn().modules())
    result = runner.invoke(
        app, ["convert", "small_cnn", "--rank", "1", "--layers", layers, "-o", "a.pt"]
    )
    line = _one_line_exit_2(result, "--layers", repr(layers))
    assert f"has {convs}" in line
    assert not (tmp_path / "a.pt").exists()


def test_convert_a_non_empty_layers_slice_still_converts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["convert", "small_cnn", "--rank", "1", "--layers", "0:2", "-o", "a.pt", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["layers"]) == 2
    assert (tmp_path / "a.pt").is_file()
