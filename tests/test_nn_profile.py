"""sepconv.nn.profile and the reference models: counts against closed forms and the papers."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

import sepconv.nn as snn
from sepconv.nn import profile
from sepconv.nn.models import (
    MOBILENET_V1_BLOCKS,
    ConvNormAct,
    create_model,
    mobilenet_v1,
    resnet18,
    small_cnn,
)
from sepconv.nn.profile import LayerProfile, MachineRates, Profile, count, machine_rates

# ----------------------------------------------------------------------------------------------
# counting against closed forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (nn.Conv2d(8, 16, 3, stride=2, padding=1), (2, 8, 15, 15)),
        (nn.Conv2d(8, 16, (3, 5), groups=4, bias=False), (1, 8, 9, 9)),
        (nn.Conv2d(8, 8, 3, groups=8, padding=1), (1, 8, 6, 6)),  # depthwise
        (nn.Conv1d(4, 6, 5, dilation=2), (3, 4, 20)),
        (nn.Conv3d(2, 4, 3, padding=1), (1, 2, 5, 6, 7)),
    ],
)
def test_conv_macs_count_groups_and_bias_separately(conv, shape):
    rows = count(conv, torch.zeros(shape))
    assert len(rows) == 1
    r = rows[0]
    out = conv(torch.zeros(shape))
    k = math.prod(conv.kernel_size)
    per_output_element = k * conv.in_channels // conv.groups
    assert r.macs == out.numel() * per_output_element
    assert r.bias_adds == (out.numel() if conv.bias is not None else 0)
    assert r.params == sum(p.numel() for p in conv.parameters())
    assert r.output_shape == tuple(out.shape)
    assert r.bytes == 4 * (math.prod(shape) + out.numel() + r.params)


def test_linear_macs_and_norm_activation_rows_have_none():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.ReLU())
    rows = count(model, torch.zeros(4, 10))
    assert [r.type for r in rows] == ["Linear", "BatchNorm1d", "ReLU"]
    assert rows[0].macs == 4 * 10 * 20 and rows[0].bias_adds == 4 * 20
    assert rows[1].macs == 0 and rows[2].macs == 0


def test_a_module_called_twice_is_counted_twice():
    conv = nn.Conv2d(3, 3, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(self.conv(x))

    (row,) = count(Twice(), torch.zeros(1, 3, 4, 4))
    assert row.calls == 2 and row.macs == 2 * 27 * 3 * 16


def mobilenet_closed_form(alpha: float, rho: int, full: bool) -> tuple[int, int]:
    """Mult-adds and weights (conv + FC, no BN) from Howard et al. Table 1, by hand."""
    ch = lambda c: int(c * alpha)  # noqa: E731
    size = rho // 2
    c = ch(32)
    macs = 3 * 3 * 3 * c * size * size
    params = 3 * 3 * 3 * c
    for out, stride in MOBILENET_V1_BLOCKS:
        size = math.ceil(size / stride)
        out = ch(out)
        if full:
            macs += 9 * c * out * size * size
            params += 9 * c * out
        else:
            macs += (9 * c + c * out) * size * size
            params += 9 * c + c * out
        c = out
    return macs + c * 1000, params + c * 1000 + 1000


# Howard et al. 2017: Table 4 (Conv MobileNet), Table 6 (width) and Table 7 (resolution):
# (alpha, rho, full_conv, million mult-adds, million parameters)
PAPER = [
    (1.0, 224, False, 569, 4.2),
    (1.0, 224, True, 4866, 29.3),
    (0.75, 224, False, 325, 2.6),
    (0.5, 224, False, 149, 1.3),
    (0.25, 224, False, 41, 0.5),
    (1.0, 192, False, 418, 4.2),
    (1.0, 160, False, 290, 4.2),
    (1.0, 128, False, 186, 4.2),
]


@pytest.mark.parametrize(("alpha", "rho", "full", "paper_macs", "paper_params"), PAPER)
def test_profile_reproduces_mobilenet_paper(alpha, rho, full, paper_macs, paper_params):
    with torch.device("meta"):  # counting needs shapes only: no weights allocated
        model = mobilenet_v1(alpha, rho, full_conv=full)
    p = profile(model, model.default_input_shape, measure=False)
    macs, weights = mobilenet_closed_form(alpha, rho, full)
    assert p.macs == macs  # the profiler counts exactly the paper's mult-adds: convs + FC
    assert abs(p.macs / 1e6 - paper_macs) <= 0.01 * paper_macs
    # parameters: conv and FC weights plus BN; the paper's figures are rounded to 0.1M
    assert abs(p.params / 1e6 - paper_params) <= max(0.01 * paper_params, 0.05)
    assert p.params == weights + 2 * sum(
        m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_mobilenet_headline_numbers_within_one_percent():
    with torch.device("meta"):
        model, twin = mobilenet_v1(), mobilenet_v1(full_conv=True)
    p = profile(model, (1, 3, 224, 224), measure=False)
    assert abs(p.macs - 569e6) / 569e6 < 0.01 and abs(p.params - 4.2e6) / 4.2e6 < 0.01
    q = profile(twin, (1, 3, 224, 224), measure=False)
    assert abs(q.macs - 4866e6) / 4866e6 < 0.01 and abs(q.params - 29.3e6) / 29.3e6 < 0.01


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def test_mobilenet_structure_follows_table_1():
    with torch.device("meta"):
        model, full = mobilenet_v1(), mobilenet_v1(full_conv=True)
    assert model.conv_stem.stride == (2, 2) and model.conv_stem.out_channels == 32
    assert len(model.blocks) == 13
    for block, (out, stride) in zip(model.blocks, MOBILENET_V1_BLOCKS, strict=True):
        assert isinstance(block, snn.DepthwiseSeparableConv2d)
        assert block.out_channels == out and block.stride == (stride, stride)
        assert isinstance(block.bn1, nn.BatchNorm2d) and isinstance(block.act2, nn.ReLU)
    assert model.classifier.in_features == 1024
    assert all(isinstance(b, ConvNormAct) for b in full.blocks)
    small = mobilenet_v1(0.25, 128, num_classes=10)
    assert small(torch.randn(2, 3, 128, 128)).shape == (2, 10)


def test_resnet18_has_torchvision_parameter_count_and_20_convs():
    model = resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 20
    small = resnet18(num_classes=5, dims=3, width_mult=0.125).eval()
    assert small(torch.randn(1, 3, 16, 16, 16)).shape == (1, 5)


@pytest.mark.parametrize("kind", ["standard", "depthwise", "spatial", "cp"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_small_cnn_family(kind, dims):
    if kind == "spatial" and dims == 1:
        with pytest.raises(ValueError, match="needs dims=2 or 3"):
            small_cnn(kind, dims=dims)
        return
    model = small_cnn(kind, dims=dims, width=4, depth=3, resolution=8, rank=2)
    assert model(torch.randn(2, 3, *(8,) * dims)).shape == (2, 10)


def test_create_model_and_bad_model_arguments():
    assert type(create_model("resnet18", num_classes=3)).__name__ == "ResNet"
    with pytest.raises(ValueError, match="model must be one of"):
        create_model("vgg16")
    with pytest.raises(ValueError, match="width_mult must be a finite number > 0"):
        mobilenet_v1(0)
    with pytest.raises(ValueError, match="resolution must be an integer >= 32"):
        mobilenet_v1(resolution=16)
    with pytest.raises(ValueError, match="kind must be one of"):
        small_cnn("dense")
    for bad, match in [
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"width_mult": -3}, "width_mult must be a finite number > 0, got -3"),
        ({"in_chans": 0}, "in_chans must be an integer >= 1"),
        ({"resolution": 0}, "resolution must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            small_cnn(**bad)


def test_profile_counts_empty_outputs_and_unbatched_inputs():
    """Hand counts: no output features is no work; an unbatched (C, H, W) input is one sample
    (4 * 6 * 9 MACs at each of 7 * 7 output pixels)."""
    with pytest.warns(UserWarning, match="zero-element"):  # torch's own, on creation
        empty = nn.Linear(8, 0)
    assert profile(empty, (1, 8), measure=False).macs == 0
    assert profile(nn.Conv2d(4, 6, 3), (4, 9, 9), measure=False).macs == 4 * 6 * 9 * 7 * 7
    assert profile(nn.Conv1d(4, 6, 3, bias=False), (4, 9), measure=False).macs == 4 * 6 * 3 * 7


# ----------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------


def test_profile_measures_every_layer_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = small_cnn("depthwise", width=8, depth=2).train()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    p = profile(model, (1, 3, 32, 32), threads=1, repeats=3, warmup=1, memory_format="contiguous")
    assert model.training and all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert p.rates is not None and p.rates.threads == 1
    assert p.latency_s is not None and p.latency_s > 0
    assert p.settings["memory_format"] == "contiguous" and p.settings["inference_mode"] is True
    assert "folded" in str(p.settings["fold_bn"])
    folded = [r for r in p.layers if r.note.startswith("folded into")]
    assert folded and all(r.type.startswith("BatchNorm") for r in folded)
    for r in p.layers:
        assert r.measured_s is not None and r.roofline_s is not None
    convs = [r for r in p.layers if r.type == "Conv2d"]
    assert all(
        r.measured_s > 0 and r.roofline_s > 0 and r.bound in ("compute", "memory") for r in convs
    )
    assert torch.get_num_threads() >= 1


def test_profile_auto_memory_format_chooses_and_says_which():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    p = profile(model, (1, 3, 16, 16), threads=1, repeats=2, warmup=1)
    assert p.settings["memory_format"] in ("contiguous", "channels_last")
    assert p.settings["fold_bn"] == "1 batch norms folded"


def test_fold_bn_is_undone_when_outputs_would_change():
    class UsesConvOutputTwice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding the BN into conv would change `y`

    model = UsesConvOutputTwice().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
    p = profile(model, (1, 3, 8, 8), threads=1, repeats=2, warmup=0, memory_format="contiguous")
    assert p.settings["fold_bn"] == "undone (outputs changed)"


def test_machine_rates_are_cached_and_the_roofline_is_the_max_of_both_bounds():
    r1 = machine_rates(1)
    assert r1 is machine_rates(1)
    assert r1.gemm_macs_per_s > 1e8 and r1.bandwidth_bytes_per_s > 1e8
    rates = MachineRates(1e9, 1e9, 1, ((1000, 2e9), (10_000, 1e9)))
    assert rates.roofline(2e9, 10) == (2.0, "compute")
    t, bound = rates.roofline(10, 1e6)
    assert bound == "memory" and t == pytest.approx(1e6 / 1e9)
    assert rates.bandwidth(500) == 2e9 and rates.bandwidth(1e7) == 1e9
    assert 1e9 < rates.bandwidth(3000) < 2e9


def test_outliers_flag_layers_beyond_a_factor_either_way():
    rows = [
        LayerProfile("a", "Conv2d", (), (), 0, 0, 0, 0, roofline_s=1e-3, measured_s=3e-3),
        LayerProfile("b", "Conv2d", (), (), 0, 0, 0, 0, roofline_s=1e-3, measured_s=1.5e-3),
        LayerProfile("c", "ReLU", (), (), 0, 0, 0, 0, roofline_s=1e-3, measured_s=0.2e-3),
        LayerProfile("d", "ReLU", (), (), 0, 0, 0, 0, roofline_s=1e-7, measured_s=1e-5),
    ]
    p = Profile("m", (1,), rows, 0)
    assert [r.name for r in p.outliers()] == ["a", "c", "d"]
    assert [r.name for r in p.outliers(min_time=1e-6)] == ["a", "c"]


def _timed(layer_ms: list[float], latency_ms: float, **settings) -> Profile:
    rows = [
        LayerProfile(f"l{i}", "Conv2d", (), (), 0, 0, 0, 0, roofline_s=1e-6, measured_s=t / 1e3)
        for i, t in enumerate(layer_ms)
    ]
    return Profile("m", (1,), rows, 0, settings=settings, latency_s=latency_ms / 1e3)


def test_profile_warns_when_layer_sum_and_end_to_end_disagree_by_a_large_factor():
    # the case a user hit: 48 ms of layers beside 0.32 ms end to end (150x)
    p = _timed([40.0, 7.5, 0.5], 0.32)
    warning = p.timing_warning
    assert warning is not None and "150x" in warning
    assert "not trustworthy" in warning and "timed alone" in warning
    text = str(p)
    # both numbers are still shown, and the warning says why they differ
    assert "end-to-end median 0.320 ms, sum of layers 48.000 ms" in text
    assert "WARNING: the per-layer times are not trustworthy" in text
    assert "48.000 ms vs end-to-end 0.320 ms" in text
    doc = json.loads(json.dumps(p.to_dict()))
    assert doc["warnings"] == [warning]
    assert doc["totals"]["measured_layers_s"] == pytest.approx(0.048)
    assert doc["totals"]["latency_s"] == pytest.approx(0.00032)
    assert "WARNING" in p.to_markdown()


def test_profile_warns_when_end_to_end_is_far_above_the_layer_sum():
    p = _timed([0.1, 0.1], 1.0)  # 5x: time spent outside the leaf modules
    assert "5x the sum of layers" in p.timing_warning
    assert "outside its leaf modules" in p.timing_warning


def test_profile_timing_warning_names_the_compiled_model():
    p = _timed([10.0], 1.0, compile="torchscript")
    assert "compiled model (torchscript)" in p.timing_warning


@pytest.mark.parametrize(("layers", "latency"), [([0.3], 0.414), ([0.2, 0.4], 1.7), ([1.0], 0.4)])
def test_profile_no_timing_warning_when_times_roughly_agree(layers, latency):
    p = _timed(layers, latency)
    assert p.timing_warning is None
    assert "WARNING" not in str(p) and p.to_dict()["warnings"] == []


def test_profile_no_timing_warning_without_measurements():
    p = profile(small_cnn(width=4, depth=1), (1, 3, 16, 16), measure=False)
    assert p.timing_warning is None and p.to_dict()["warnings"] == []


def test_profile_table_text_markdown_and_json():
    p = profile(small_cnn(width=4, depth=1), (1, 3, 16, 16), measure=False)
    text = str(p)
    for col in ("layer", "params", "MACs", "bias adds", "bytes", "roofline us", "measured us"):
        assert col in text
    # a model this small is counted exactly: no "(0.00M)" in the summary line
    assert f"{p.params:,} params, {p.macs:,} MACs" in text and "0.00M" not in text
    big = profile(small_cnn(width=64, depth=2), (1, 3, 64, 64), measure=False)
    assert f"({big.macs / 1e6:.1f}M mult-adds)" in str(big)
    assert p.to_markdown().startswith("| layer |")
    doc = json.loads(json.dumps(p.to_dict()))
    assert doc["totals"]["macs"] == p.macs and doc["schema"] == 1


def test_profile_bad_input():
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        profile("mobilenet", (1, 3, 8, 8))
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        profile(nn.Conv2d(3, 3, 3), 224)
    with pytest.raises(ValueError, match="input_shape must include the batch and channel"):
        profile(nn.Conv2d(3, 3, 3), (224,))
    with pytest.raises(ValueError, match="input_shape must be an integer >= 1"):
        profile(nn.Conv2d(3, 3, 3), (1, 3, 0, 8))
    with pytest.raises(ValueError, match="does not fit the model"):
        profile(nn.Conv2d(3, 3, 3), (1, 4, 8, 8), measure=False)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        profile(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), memory_format="nhwc")


def test_profile_compiled_with_torchscript_and_bad_compile_value():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    p = profile(
        model, (1, 3, 16, 16), threads=1, repeats=2, warmup=1, memory_format="contiguous",
        compile="torchscript",
    )  # fmt: skip
    assert p.settings["compile"] == "torchscript" and p.latency_s > 0
    with pytest.raises(ValueError, match="compile must be False, True or one of"):
        profile(model, (1, 3, 16, 16), compile="tvm")


# ----------------------------------------------------------------------------------------------
# devices: CUDA (the real-GPU tests are marked gpu and skipped without one)
# ----------------------------------------------------------------------------------------------

HAVE_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")


def test_timed_samples_mark_around_exactly_inner_calls_after_warmup():
    """The CUDA timer's loop, run with the host clock: warm-up calls untimed, each sample the
    clock's span over `inner` calls divided by `inner`."""
    from sepconv.nn.profile import _HostClock, _timed_samples

    log: list[str] = []

    class Recording(_HostClock):
        def mark(self) -> float:
            log.append("mark")
            return super().mark()

    def run() -> None:
        log.append("call")
        time.sleep(0.002)

    samples = _timed_samples(run, Recording(), repeats=3, warmup=2, inner=4)
    assert log == ["call"] * 2 + (["mark"] + ["call"] * 4 + ["mark"]) * 3
    assert len(samples) == 3
    # each call sleeps 2 ms: a sample (seconds per call) is at least that, and not absurd
    assert all(0.002 <= t < 0.5 for t in samples)


def test_profile_cpu_settings_and_machine_are_as_before():
    """An explicit device='cpu' times as the default does: the CPU settings, no GPU fields."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    p = profile(model, (1, 3, 12, 12), device="cpu", threads=1, repeats=2, warmup=1)
    assert set(p.settings) == {
        "threads", "fold_bn", "memory_format", "inference_mode", "compile", "warmup", "repeats",
    }  # fmt: skip
    assert p.rates is machine_rates(1) and p.rates.device == "cpu" and p.rates.gemm_rates == ()
    assert p.to_dict()["machine"]["gemm_rates"] == {}
    assert "threads; roofline total" in str(p) and "device:" not in str(p)
    assert machine_rates(device="cpu") is machine_rates()


@pytest.mark.skipif(HAVE_CUDA, reason="checks the refusal without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_profile_on_cuda_without_a_gpu_names_the_device(device):
    name = str(torch.device(device))
    with pytest.raises(ValueError, match=rf"device '{name}' is not available \(no CUDA device"):
        profile(small_cnn(width=4, depth=1), (1, 3, 16, 16), device=device)
    with pytest.raises(ValueError, match=rf"device '{name}' is not available"):
        profile(small_cnn(width=4, depth=1), (1, 3, 16, 16), device=device, measure=False)
    with pytest.raises(ValueError, match=rf"device '{name}' is not available"):
        machine_rates(device=device)


def test_profile_bad_device_and_threads_on_a_gpu():
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or a torch"):
        profile(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), device="tpu")
    with pytest.raises(ValueError, match="device must be a CPU or a CUDA device, got 'meta'"):
        profile(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), device="meta")
    from sepconv.nn.profile import _cpu_only_threads

    with pytest.raises(ValueError, match="threads applies to CPU timing only, got threads=2"):
        _cpu_only_threads(2, torch.device("cuda", 0))
    _cpu_only_threads(2, torch.device("cpu"))
    _cpu_only_threads(None, torch.device("cuda", 0))


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_profile_refuses_bad_threads_naming_them(threads):
    """Before: threads=0 reached torch.set_num_threads, which raised its own RuntimeError."""
    err = TypeError if isinstance(threads, (bool, float)) else ValueError
    with pytest.raises(err, match=rf"threads must be .*got {threads!r}"):
        profile(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), threads=threads, repeats=1, warmup=0)


def test_gpu_machine_rates_pick_the_gemm_rate_of_the_precision_and_name_the_device():
    rates = MachineRates(
        1e12, 2e12, 0, ((1_000, 1e11), (10**9, 2e12)), device="Some GPU",
        gemm_rates=(("float32", 1e12), ("tf32", 8e12), ("bfloat16", 16e12)),
    )  # fmt: skip
    assert rates.gemm() == rates.gemm("float32") == rates.gemm("float64") == 1e12
    assert rates.roofline(8e12, 10, "tf32") == (1.0, "compute")
    assert rates.roofline(8e12, 10, "bfloat16") == (0.5, "compute")
    assert rates.roofline(8e12, 10) == (8.0, "compute")
    row = LayerProfile("c", "Conv2d", (), (), 0, 8e12, 0, 10, roofline_s=1.0, measured_s=1.0)
    text = str(Profile("m", (1,), [row], 0, rates=rates))
    assert "device: Some GPU: GEMM (TMAC/s) float32 1.0, tf32 8.0, bfloat16 16.0" in text
    assert "copy bandwidth 2000 GB/s (device memory" in text
    assert json.loads(json.dumps(rates.to_dict()))["gemm_rates"]["tf32"] == 8e12


def test_layer_precision_follows_dtype_and_the_tf32_switches():
    from sepconv.nn.profile import _matmul_precision, _precision

    conv, linear = nn.Conv2d(2, 2, 1), nn.Linear(2, 2)
    assert _precision(conv, torch.bfloat16) == "bfloat16"
    assert _precision(linear, torch.float16) == "float16"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        assert _precision(conv, torch.float32) == "float32"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        assert _precision(conv, torch.float32) == "tf32"
    before = torch.get_float32_matmul_precision()
    with _matmul_precision("highest") as ok:
        assert ok and _precision(linear, torch.float32) == "float32"
    with _matmul_precision("high") as ok:
        assert ok and _precision(linear, torch.float32) == "tf32"
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.skipif(HAVE_CUDA, reason="checks the refusal without CUDA")
def test_cli_profile_device_cuda_without_a_gpu_is_one_line_exit_2():
    from typer.testing import CliRunner

    from sepconv.cli import app

    result = CliRunner().invoke(app, ["profile", "small_cnn", "--device", "cuda"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["sepconv: error: --device 'cuda' is not available (no CUDA device is visible)"]


@pytest.mark.gpu
@needs_cuda
def test_profile_on_cuda_counts_as_on_cpu_and_times_with_the_gpu_roofline():
    from sepconv.nn.profile import _precision

    torch.manual_seed(0)
    model = small_cnn("depthwise", width=16, depth=3, resolution=32)
    cpu = profile(model, (8, 3, 32, 32), measure=False)
    p = profile(model, (8, 3, 32, 32), device="cuda", repeats=5, warmup=2)
    assert next(model.parameters()).device.type == "cpu"  # the user's model stays
    assert [r.macs for r in p.layers] == [r.macs for r in cpu.layers] and p.macs == cpu.macs
    assert p.rates is not None and p.rates.device == torch.cuda.get_device_name()
    assert p.rates.threads == 0 and p.rates is machine_rates(device="cuda")
    gemm = dict(p.rates.gemm_rates)
    assert set(gemm) >= {"float32", "tf32", "bfloat16", "float16"}
    assert p.rates.bandwidth_bytes_per_s > 1e11 and gemm["float32"] > 1e11
    assert p.settings["device"].startswith("cuda:") and "CUDA events" in p.settings["clock"]
    timed = [r for r in p.layers if not r.note.startswith("folded")]
    assert timed and all(r.measured_s > 0 for r in timed)
    for r in timed:
        if r.macs:  # the roofline from the GPU's rates at the layer's precision, by hand
            m = dict(model.named_modules())[r.name]
            rate = gemm[_precision(m, torch.float32)]
            # the timed conv has the folded batch norm's bias, the counted one none
            folded_bias = "batch norm folded in" in r.note and m.bias is None
            nbytes = r.bytes + (4 * m.out_channels if folded_bias else 0)
            bw = p.rates.bandwidth(nbytes)
            assert r.roofline_s == pytest.approx(max(r.macs / rate, nbytes / bw), rel=1e-6)
    assert p.latency_s > 0
    # each layer alone pays one graph launch (a few us), the whole model one for all
    factor = p.measured_layers_s / p.latency_s
    assert 1 / 4 < factor < 8, (p.measured_layers_s, p.latency_s)
    assert "device: " + torch.cuda.get_device_name() in str(p)


@pytest.mark.gpu
@needs_cuda
def test_convert_cuda_clock_is_the_profiler_helper():
    import importlib

    from sepconv.nn.profile import _cuda_seconds

    assert importlib.import_module("sepconv.nn.convert")._cuda_seconds is _cuda_seconds
    conv = nn.Conv2d(16, 16, 3, padding=1).cuda().eval()
    x = torch.randn(4, 16, 32, 32, device="cuda")
    with torch.inference_mode():
        assert 0 < _cuda_seconds(conv, x, 5, 2) < 0.1


@pytest.mark.skipif(HAVE_CUDA, reason="checks the report without CUDA")
def test_ds_cost_report_says_the_gpu_table_was_skipped_and_why(tmp_path):
    from sepconv.experiments import run_experiment

    run_experiment("ds-cost", tmp_path, quick=True)
    text = (tmp_path / "ds-cost" / "report.md").read_text()
    assert "GPU table skipped: no CUDA device is visible" in text
    assert "on the GPU" not in text
    res = json.loads((tmp_path / "ds-cost" / "results.json").read_text())
    assert res["gpu"]["measured"] == [] and "no CUDA device" in res["gpu"]["skipped"]


@pytest.mark.gpu
@needs_cuda
def test_ds_cost_gpu_table_times_both_layers_at_every_batch(tmp_path):
    from sepconv.experiments import run_experiment

    run_experiment("ds-cost", tmp_path, quick=True)
    text = (tmp_path / "ds-cost" / "report.md").read_text()
    assert "## Measured PyTorch latency on the GPU (" + torch.cuda.get_device_name() in text
    gpu = json.loads((tmp_path / "ds-cost" / "results.json").read_text())["gpu"]
    assert gpu["skipped"] is None and len(gpu["measured"]) == 3 * len(gpu["batches"])
    for m in gpu["measured"]:
        k2, cin, cout = 9, m["cin"], m["cout"]
        assert m["mac_ratio"] == pytest.approx(k2 * cin * cout / (k2 * cin + cin * cout))
        assert m["standard_ms"] > 0 and m["ds_ms"] > 0
        assert m["latency_ratio"] == pytest.approx(m["standard_ms"] / m["ds_ms"])


def test_bench_nn_gpu_section_dry_run_on_the_cpu(tmp_path):
    """The benchmark's GPU code path, run on the CPU (host clock, no graphs): MAC counts from
    the closed form, one row per dtype x batch, the files named for the device."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_nn.py"
    spec = importlib.util.spec_from_file_location("bench_nn_under_test", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--dry-run", "--only", "mobilenet", "--resolution", "32", "--batches", "1", "2",
            "--dtypes", "float32", "bfloat16", "--repeats", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    (json_file,) = tmp_path.glob("nn-gpu-cpu-dry-run-*-mobilenet.json")
    res = json.loads(json_file.read_text())
    mb = res["mobilenet"]
    v1, conv = mobilenet_closed_form(1.0, 32, False)[0], mobilenet_closed_form(1.0, 32, True)[0]
    assert mb["macs"] == {"mobilenet_v1": v1, "conv_mobilenet": conv}
    assert [(r["dtype"], r["batch"]) for r in mb["rows"]] == [
        ("float32", 1), ("float32", 2), ("bfloat16", 1), ("bfloat16", 2),
    ]  # fmt: skip
    for r in mb["rows"]:
        assert all(len(t) == 2 and min(t) > 0 for t in r["times_s"].values())
        assert r["speedup"] == pytest.approx(
            r["median_s"]["conv_mobilenet"] / r["median_s"]["mobilenet_v1"]
        )
    text = json_file.with_suffix(".md").read_text()
    assert "Dry run on the CPU" in text and "| bfloat16 | 2 |" in text
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda", "--only", "convert"])  # not a GPU section
    if not HAVE_CUDA:
        assert bench.main(["--device", "cuda", "--out", str(tmp_path / "none")]) == 2
        assert not (tmp_path / "none").exists()
