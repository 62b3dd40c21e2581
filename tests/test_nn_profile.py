"""sepconv.nn.profile and the reference models: counts against closed forms and the papers."""

from __future__ import annotations

import json
import math

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
    assert "mult-adds" in text
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
