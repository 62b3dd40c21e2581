"""sepconv.nn.convert: policies, what is left alone, reports, and that the input is untouched."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import sepconv.nn as snn
from sepconv.nn import convert
from sepconv.nn.models import resnet18, small_cnn


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in now)


class Shuffled(nn.Module):
    """Registration order (late, early, pointwise, depthwise, head) differs from forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(8, 8, 3, padding=1)
        self.early = nn.Conv2d(3, 8, 3, padding=1)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Conv2d(8, 4, 5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.early(x))
        x = torch.relu(self.pointwise(x))
        x = torch.relu(self.late(x))
        x = self.depthwise(x)
        return self.head(x)


def test_convert_replaces_convs_and_leaves_the_original_unchanged():
    torch.manual_seed(0)
    model = small_cnn(width=8, depth=2)
    saved = state(model)
    types = {n: type(m) for n, m in model.named_modules()}
    new, report = convert(model, "depthwise", rank=1, input_shape=(1, 3, 16, 16))
    assert same_state(model, saved)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert new is not model
    assert isinstance(new.stem.conv, snn.DepthwiseSeparableConv2d)
    assert isinstance(new.blocks[0][0], snn.DepthwiseSeparableConv2d)
    assert [r.name for r in report.converted] == ["stem.conv", "blocks.0.0", "blocks.1.0"]
    x = torch.randn(2, 3, 16, 16)
    assert new(x).shape == model(x).shape


def test_inplace_converts_the_argument_itself():
    model = small_cnn(width=8, depth=2)
    new, _ = convert(model, rank=1, inplace=True)
    assert new is model and isinstance(model.stem.conv, snn.DepthwiseSeparableConv2d)


def test_forward_order_slice_pointwise_and_depthwise_left_alone():
    model = Shuffled()
    _, report = convert(model, rank=1, input_shape=(1, 3, 12, 12))
    assert report.order == "forward"
    assert [r.name for r in report.layers] == ["early", "pointwise", "late", "depthwise", "head"]
    notes = {r.name: r.note for r in report.layers}
    assert "1x1" in notes["pointwise"] and "depthwise conv" in notes["depthwise"]
    assert [r.name for r in report.converted] == ["early", "late", "head"]
    # "the first two" in forward order
    new, report = convert(model, rank=1, layers=slice(0, 2), input_shape=(1, 3, 12, 12))
    assert [r.name for r in report.layers] == ["early", "pointwise"]
    assert isinstance(new.early, snn.DepthwiseSeparableConv2d) and isinstance(new.late, nn.Conv2d)
    # without an input the order is the registration order, and the report says so
    _, report = convert(model, rank=1)
    assert report.order == "registration" and report.layers[0].name == "late"


def test_layers_by_name():
    model = Shuffled()
    new, report = convert(model, "spatial", rank=2, layers=["head", "late"])
    assert [r.name for r in report.layers] == ["late", "head"]
    assert isinstance(new.head, snn.SpatiallySeparableConv2d)
    assert isinstance(new.early, nn.Conv2d)


def test_unknown_layer_name_is_refused_and_nothing_changes():
    model = Shuffled()
    saved = state(model)
    with pytest.raises(ValueError, match=r"layers names \['nope'\] that are not convolutions"):
        convert(model, rank=1, layers=["early", "nope"], inplace=True)
    with pytest.raises(TypeError, match="layers must be None, a slice"):
        convert(model, rank=1, layers=3)
    assert same_state(model, saved) and isinstance(model.early, nn.Conv2d)


def test_tol_gives_each_layer_the_smallest_rank_meeting_it():
    torch.manual_seed(1)
    model = Shuffled()
    _, report = convert(model, tol=0.5, input_shape=(1, 3, 12, 12))
    for r in report.layers:
        if r.converted:
            assert r.weight_error <= 0.5
            if r.rank > 1:
                _, lower = snn.factorize(getattr(model, r.name), rank=r.rank - 1)
                assert lower.weight_error > 0.5


def test_exact_policy_leaves_layers_that_would_cost_more():
    torch.manual_seed(2)
    model = Shuffled()
    _, report = convert(model, input_shape=(1, 3, 12, 12))
    assert report.policy == "exact"
    assert not report.converted
    assert all(
        "would cost more" in r.note for r in report.layers if r.name in {"early", "late", "head"}
    )


def test_exact_policy_converts_a_layer_that_is_depthwise_separable():
    torch.manual_seed(3)
    ds = snn.DepthwiseSeparableConv2d(16, 32, 3, padding=1, bias=False)
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False))
    model[0] = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        model[0].weight.copy_(ds.dense_weight())
    new, report = convert(model, input_shape=(1, 16, 8, 8))
    assert report.layers[0].converted and report.layers[0].rank == 1
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        diff = float((new(x) - model(x)).abs().max())
    assert diff < 1e-4


def two_convs(seed: int) -> nn.Sequential:
    """Two 3x3 convs; the second is nearly depthwise separable, so cheap to compress."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
    )
    ds = snn.DepthwiseSeparableConv2d(32, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        model[2].weight.copy_(ds.dense_weight() + 1e-5 * torch.randn(32, 32, 3, 3))
    return model


def test_mac_budget_is_met_and_spent_where_error_per_saved_mac_is_smallest():
    model = two_convs(4)  # the budget goes to the nearly depthwise-separable second conv
    new, report = convert(model, mac_budget=0.8, input_shape=(1, 16, 8, 8))
    total = (9 * 16 * 32 + 9 * 32 * 32) * 64
    assert report.macs_before == total
    assert report.macs_after <= 0.8 * total
    rows = {r.name: r for r in report.layers}
    assert rows["2"].converted and rows["2"].weight_error < 0.01
    assert not rows["0"].converted and rows["0"].note == "kept dense by the MAC budget"
    # the converted model really costs what the report says (counted by the profiler)
    counted = sum(r.macs for r in snn.profile(new, (1, 16, 8, 8), measure=False).layers)
    assert counted == report.macs_after


def test_mac_budget_on_resnet18_layout():
    torch.manual_seed(5)
    model = resnet18(width_mult=0.25)
    new, report = convert(model, mac_budget=0.5, input_shape=(1, 3, 64, 64))
    assert report.mac_fraction <= 0.5
    counted = sum(r.macs for r in snn.profile(new, (1, 3, 64, 64), measure=False).layers)
    assert counted == report.macs_after
    assert len(report.layers) == 20


def test_mac_budget_unreachable_is_reported():
    model = Shuffled()
    _, report = convert(model, mac_budget=0.01, input_shape=(1, 3, 12, 12))
    assert any("not reachable" in n for n in report.notes)


def test_rank_above_a_layers_maximum_is_clipped_and_noted():
    model = nn.Sequential(nn.Conv2d(4, 4, 3))
    _, report = convert(model, rank=50)
    # depthwise rank <= min(C_out, 9) = 4: and 4 costs more than the dense conv
    assert "would cost more" in report.layers[0].note


def test_calibration_reports_layer_and_model_output_errors():
    torch.manual_seed(6)
    model = small_cnn(width=8, depth=2).eval()
    x = torch.randn(8, 3, 16, 16)
    new, report = convert(model, rank=2, calibration=x)
    for r in report.converted:
        assert r.output_error is not None and r.init_output_error is not None
        assert r.macs_unit == "total"
    assert report.model_output_error is not None
    with torch.no_grad():
        y, ref = new.eval()(x), model(x)
    assert report.model_output_error == pytest.approx(
        float((y - ref).norm() / ref.norm()), rel=1e-4
    )


def test_calibration_that_does_not_fit_is_refused_and_nothing_changes():
    model = small_cnn(width=8, depth=2)
    saved = state(model)
    with pytest.raises(ValueError, match="calibration of shape"):
        convert(model, rank=1, calibration=torch.randn(2, 5, 16, 16), inplace=True)
    with pytest.raises(TypeError, match=r"calibration must be a torch\.Tensor"):
        convert(model, rank=1, calibration=np.zeros((2, 3, 16, 16)))
    assert same_state(model, saved)


def test_bad_policy_arguments():
    model = Shuffled()
    with pytest.raises(ValueError, match="give at most one of rank, tol, mac_budget and"):
        convert(model, rank=1, tol=0.1)
    with pytest.raises(ValueError, match=r"mac_budget must be a fraction .* in \(0, 1\]"):
        convert(model, mac_budget=1.5, input_shape=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="mac_budget needs calibration= or input_shape="):
        convert(model, mac_budget=0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        convert(model, "svd")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        convert("resnet")
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        convert(model, rank=0)
    with pytest.raises(ValueError, match="input_shape of shape"):
        convert(model, rank=1, input_shape=(1, 4, 8, 8))


def test_converting_twice_does_not_touch_structured_layers():
    model = small_cnn(width=8, depth=2)
    once, _ = convert(model, rank=1)
    _, report = convert(once, rank=1)
    assert not report.layers  # no plain convs left
    with pytest.raises(ValueError, match="stages of sepconv structured layers"):
        convert(once, rank=1, layers=["stem.conv.conv_dw"])


@pytest.mark.parametrize("dims", [1, 3])
def test_convert_one_and_three_dimensional_models(dims):
    torch.manual_seed(7)
    model = small_cnn(dims=dims, width=4, depth=2, resolution=12)
    kind = "cp" if dims == 1 else "spatial"
    new, report = convert(model, kind, rank=2, input_shape=model.default_input_shape)
    assert len(report.converted) == 3
    x = torch.randn(model.default_input_shape)
    assert new(x).shape == model(x).shape


def test_spatial_conversion_of_a_1d_model_leaves_layers_alone():
    model = small_cnn(dims=1, width=4, depth=1)
    _, report = convert(model, "spatial", rank=1)
    assert all("1-D conv" in r.note for r in report.layers)


def test_report_table_and_json():
    model = Shuffled()
    _, report = convert(model, rank=1, input_shape=(1, 3, 12, 12))
    text = str(report)
    for col in ("layer", "MACs before", "MACs after", "weight error", "output error"):
        assert col in text
    assert "model MACs" in text
    md = report.to_markdown()
    assert md.startswith("| layer |")
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["schema"] == 1 and len(doc["layers"]) == 5
    conv = report.converted[0]
    assert conv.mac_ratio == pytest.approx(conv.macs_before / conv.macs_after)
    assert math.isfinite(conv.weight_error)


def test_mac_budget_with_a_calibration_batch_counts_per_sample():
    torch.manual_seed(8)
    model = small_cnn(width=8, depth=2).eval()
    x = torch.randn(6, 3, 16, 16)
    new, report = convert(model, mac_budget=0.6, calibration=x)
    per_sample = sum(r.macs for r in snn.profile(model, (1, 3, 16, 16), measure=False).layers)
    assert report.macs_before == per_sample
    after = sum(r.macs for r in snn.profile(new, (1, 3, 16, 16), measure=False).layers)
    assert report.macs_after == after <= 0.6 * per_sample


def test_a_conv_the_forward_pass_does_not_run_is_left_alone():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Conv2d(3, 8, 3)
            self.spare = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.used(x)

    _, report = convert(Unused(), rank=1, input_shape=(1, 3, 8, 8))
    rows = {r.name: r for r in report.layers}
    assert rows["used"].converted and not rows["spare"].converted
    assert "not run by the forward pass" in rows["spare"].note


def test_tucker2_rank_pair_is_clipped_per_mode():
    # was an IndexError: the pair was taken for the 3-D spatial (r_1, r_2)
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3))
    new, report = convert(model, "tucker2", rank=(6, 12), input_shape=(1, 8, 10, 10))
    rows = {r.name: r for r in report.layers}
    assert rows["0"].rank == (6, 12) and rows["0"].note == ""
    # the second conv has 16 input and 4 output channels: r_out is clipped to 4
    assert rows["2"].rank == (6, 4) and rows["2"].note == "rank (6, 12) clipped to (6, 4)"
    assert isinstance(new[2], snn.Tucker2Conv2d) and new[2].rank == (6, 4)
    x = torch.randn(2, 8, 10, 10)
    assert new(x).shape == model(x).shape
    with pytest.raises(ValueError, match=r"rank must be \(r_in, r_out\)"):
        convert(model, "tucker2", rank=(1, 2, 3))


@pytest.mark.parametrize(
    ("dims", "groups", "stride", "dilation", "padding", "mode"),
    [
        (2, 1, 1, 1, 1, "zeros"),
        (2, 2, 2, 1, 2, "reflect"),
        (1, 3, 1, 2, "same", "zeros"),
        (3, 1, 2, 1, 1, "circular"),
    ],
)
def test_tucker2_conv_functional_equals_the_dense_conv(
    dims, groups, stride, dilation, padding, mode
):
    # functional twin of Tucker2Conv*d; reference: the dense conv whose weight is the Tucker-2
    # product computed in numpy, run by torch.nn.functional.conv*d
    gen = torch.Generator().manual_seed(10)
    cin, cout, r_in, r_out, k = 6, 12, 2, 4, 3
    w_in = torch.randn(
        groups * r_in, cin // groups, *(1,) * dims, generator=gen, dtype=torch.float64
    )
    w_core = torch.randn(groups * r_out, r_in, *(k,) * dims, generator=gen, dtype=torch.float64)
    w_out = torch.randn(cout, r_out, *(1,) * dims, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    P1 = w_in.numpy().reshape(groups, r_in, cin // groups)
    C = w_core.numpy().reshape(groups, r_out, r_in, -1)
    P2 = w_out.numpy().reshape(groups, cout // groups, r_out)
    W = np.einsum("gob,gbak,gai->goik", P2, C, P1).reshape(cout, cin // groups, *(k,) * dims)
    x = torch.randn(2, cin, *(11,) * dims, generator=gen, dtype=torch.float64)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](
        cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=mode, dtype=torch.float64,
    )  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(W))
        conv.bias.copy_(bias)
        expected = conv(x)
    got = snn.tucker2_conv(
        x, w_in, w_core, w_out, bias, stride=stride, padding=padding, dilation=dilation,
        groups=groups, padding_mode=mode,
    )  # fmt: skip
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_tucker2_conv_functional_checks_shapes():
    x = torch.randn(1, 6, 8, 8)
    w_in, w_core, w_out = torch.randn(2, 6, 1, 1), torch.randn(3, 2, 3, 3), torch.randn(5, 3, 1, 1)
    with pytest.raises(ValueError, match=r"weight_in must have shape"):
        snn.tucker2_conv(x, torch.randn(2, 5, 1, 1), w_core, w_out)
    with pytest.raises(ValueError, match=r"weight_core must have shape"):
        snn.tucker2_conv(x, w_in, torch.randn(3, 4, 3, 3), w_out)
    with pytest.raises(ValueError, match=r"weight_out must have shape"):
        snn.tucker2_conv(x, w_in, w_core, torch.randn(5, 2, 1, 1))
    with pytest.raises(ValueError, match=r"groups must be a positive integer"):
        snn.tucker2_conv(x, w_in, w_core, w_out, groups=4)
    with pytest.raises(TypeError, match=r"weight_core must be a torch\.Tensor"):
        snn.tucker2_conv(x, w_in, None, w_out)


# -- latency budget: the selection logic under a deterministic clock ------------------------


def fake_clock(slow_cin: int | None = None, factor: float = 100.0):
    """``timer(module, x)``: 1 ns per MAC of every conv the call runs, plus 1 us per conv call;
    the stages of structured layers with ``slow_cin`` input channels cost ``factor`` times
    more. MACs counted here from each conv's output (out elements x C_in/groups x taps)."""
    calls: list[nn.Module] = []

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        calls.append(module)
        macs: dict[str, int] = {}
        handles = []
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):

                def hook(mod, args, out, name=name):
                    taps = math.prod(mod.kernel_size)
                    macs[name] = out.numel() * mod.in_channels // mod.groups * taps

                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                module(x)
        finally:
            for h in handles:
                h.remove()
        slow = [
            n
            for n, m in module.named_modules()
            if isinstance(m, snn.DepthwiseSeparableConv2d) and m.in_channels == slow_cin
        ]
        total = 0.0
        for n, v in macs.items():
            t = v * 1e-9 + 1e-6
            if any(p == "" or n == p or n.startswith(p + ".") for p in slow):
                t *= factor
            total += t
        return total

    timer.calls = calls  # type: ignore[attr-defined]
    return timer


def test_latency_budget_spends_time_where_error_per_saved_second_is_smallest():
    model = two_convs(11)
    timer = fake_clock()
    new, report = convert(
        model, latency_budget=0.7, input_shape=(1, 16, 8, 8), timer=timer, threads=1
    )
    rows = {r.name: r for r in report.layers}
    assert rows["2"].converted and rows["2"].weight_error < 0.01
    assert not rows["0"].converted and rows["0"].note == "kept dense by the latency budget"
    assert report.policy == "latency_budget=0.7"
    # whole models: the clock's own totals of the original and of the converted model
    x = torch.zeros(1, 16, 8, 8)
    assert report.latency_before == pytest.approx(timer(model, x))
    assert report.latency_after == pytest.approx(timer(new, x))
    assert report.latency_fraction <= 0.7
    # per layer: the conv and its replacement, as the clock times them
    before, after = report.layer_times["2"]
    assert before == pytest.approx(timer(model[2], torch.zeros(1, 32, 8, 8)))
    assert after == pytest.approx(timer(new[2], torch.zeros(1, 32, 8, 8)))
    assert report.layer_times["0"][0] == report.layer_times["0"][1]
    assert report.timing["clock"] == "custom timer" and report.timing["rounds"]


def test_latency_budget_never_uses_a_replacement_measured_slower():
    model = two_convs(12)
    # every depthwise form of the 32-channel conv is 100x slower than its MACs say
    timer = fake_clock(slow_cin=32)
    new, report = convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), timer=timer)
    rows = {r.name: r for r in report.layers}
    assert not rows["2"].converted and isinstance(new[2], nn.Conv2d)
    assert rows["2"].note.startswith("no depthwise form measured faster than the conv")
    # the budget then falls on the other conv, at whatever error it costs
    assert rows["0"].converted
    timed = [m for m in timer.calls if isinstance(m, snn.DepthwiseSeparableConv2d)]
    assert any(m.in_channels == 32 for m in timed)  # they were timed, and refused
    for name, (before, after) in report.layer_times.items():
        if rows[name].converted:
            assert after < before
    # 0.5 cannot be met with layer 0 alone: the report says so
    assert report.latency_fraction > 0.5
    assert any("latency_budget 0.5 not reached in the final measurement" in n for n in report.notes)


def test_latency_budget_keeps_every_layer_when_nothing_is_faster():
    model = two_convs(13)

    def slow_structures(module: nn.Module, x: torch.Tensor) -> float:
        # any module holding a structured layer is slower than every plain conv
        n = sum(isinstance(m, snn.DepthwiseSeparableConv2d) for m in module.modules())
        return 1.0 + 10.0 * n

    new, report = convert(
        model, latency_budget=0.9, input_shape=(1, 16, 8, 8), timer=slow_structures
    )
    assert not report.converted
    assert all(isinstance(m, nn.Conv2d) for m in (new[0], new[2]))
    assert report.latency_fraction == 1.0


def test_latency_budget_with_tucker2_and_rank_multiple():
    torch.manual_seed(14)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
    new, report = convert(
        model.eval(), "tucker2", latency_budget=0.6, rank_multiple=4, input_shape=(1, 32, 8, 8),
        timer=fake_clock(),
    )  # fmt: skip
    row = report.layers[0]
    assert row.converted and all(r % 4 == 0 for r in row.rank)
    assert isinstance(new[0], snn.Tucker2Conv2d)
    assert report.timing["fold_bn"] == "1 batch norms folded"
    assert report.latency_fraction <= 0.6


def test_measure_reports_times_for_any_policy():
    model = two_convs(15)
    _, report = convert(model, rank=1, input_shape=(1, 16, 8, 8), measure=True, timer=fake_clock())
    assert set(report.layer_times) == {"0", "2"}
    assert all(after < before for before, after in report.layer_times.values())
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["latency_before_s"] > doc["latency_after_s"] > 0
    assert doc["layers"][0]["time_before_s"] == report.layer_times["0"][0]
    text = str(report)
    assert "ms before" in text and "measured latency" in text


def test_latency_budget_measured_on_this_machine_runs():
    # real clock: no timing is asserted, only what the selection guarantees
    torch.manual_seed(16)
    model = small_cnn(width=8, depth=2).eval()
    new, report = convert(model, latency_budget=0.9, input_shape=(1, 3, 16, 16), threads=1)
    assert report.latency_before > 0 and report.latency_after > 0
    assert report.timing["threads"] == 1 and report.timing["device"] == "cpu"
    for r in report.layers:
        before, after = report.layer_times[r.name]
        assert (after < before) if r.converted else (after == before)
    x = torch.randn(2, 3, 16, 16)
    assert new(x).shape == model(x).shape


def test_latency_budget_argument_errors():
    model = two_convs(17)
    with pytest.raises(ValueError, match="latency_budget needs calibration= or input_shape="):
        convert(model, latency_budget=0.5)
    with pytest.raises(ValueError, match=r"latency_budget must be a fraction .* in \(0, 1\]"):
        convert(model, latency_budget=2, input_shape=(1, 16, 8, 8))
    with pytest.raises(ValueError, match="give at most one of rank, tol, mac_budget and"):
        convert(model, latency_budget=0.5, mac_budget=0.5, input_shape=(1, 16, 8, 8))
    with pytest.raises(ValueError, match="device must be"):
        convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), device="tpu:7")
    with pytest.raises(TypeError, match="timer must be a callable"):
        convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), timer=3)
    with pytest.raises(ValueError, match="timer must return a number of seconds"):
        convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), timer=lambda m, x: -1)
    with pytest.raises(ValueError, match="threads must be"):
        convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), threads=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="is not available"):
            convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), device="cuda")


def test_vbmf_rank_finds_planted_tucker2_ranks_and_rank_multiple_rounds_up():
    torch.manual_seed(18)
    src = snn.Tucker2Conv2d(32, 48, 3, rank=(4, 6), dtype=torch.float64)
    conv = nn.Conv2d(32, 48, 3, padding=1, dtype=torch.float64)
    with torch.no_grad():
        W = src.dense_weight()
        conv.weight.copy_(W + 0.01 * W.std() * torch.randn_like(W))
    model = nn.Sequential(conv)
    _, report = convert(model, "tucker2", rank="vbmf", input_shape=(1, 32, 8, 8))
    assert report.layers[0].rank == (4, 6) and report.policy == "rank=vbmf"
    _, report = convert(model, "tucker2", rank=(3, 5), rank_multiple=4)
    assert report.layers[0].rank == (4, 8)
    assert "rank (3, 5) rounded up to (4, 8) (rank_multiple=4)" in report.layers[0].note
    with pytest.raises(ValueError, match="rank must be an integer, a pair of integers or 'vbmf'"):
        convert(model, rank="auto")
    with pytest.raises(ValueError, match="rank_multiple must be"):
        convert(model, rank=1, rank_multiple=0)


def test_latency_budget_replaces_nothing_when_every_whole_model_is_measured_slower():
    # each replacement alone is faster than its conv, but any model holding one is slower
    # (as when the calls between layers cost more than the layers save): nothing is used
    model = two_convs(19)
    base = fake_clock()

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        inner = [m for m in module.modules() if isinstance(m, snn.DepthwiseSeparableConv2d)]
        if inner and not isinstance(module, snn.DepthwiseSeparableConv2d):
            return 1.0
        return base(module, x)

    new, report = convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), timer=timer)
    assert not report.converted and isinstance(new[2], nn.Conv2d)
    assert report.latency_fraction == 1.0
    assert all(r["measured"] > 1 for r in report.timing["rounds"])
    assert all(r.note == "kept dense by the latency budget" for r in report.layers)


# -- save_converted / load_converted --------------------------------------------------------


class Mixed(nn.Module):
    """2-D and 3-D convs with groups, strides, 'same' padding and float64 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
        self.b = nn.Conv3d(2, 6, 3, padding="same", bias=False, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y.reshape(y.shape[0], 2, 4, *y.shape[2:]))


@pytest.mark.parametrize("kind", ["depthwise", "spatial", "cp", "tucker2"])
def test_save_and_load_converted_round_trip(tmp_path, kind):
    torch.manual_seed(20)
    model = Mixed()
    new, report = convert(model, kind, rank=2, input_shape=(1, 4, 8, 8))
    assert len(report.converted) == 2
    path = tmp_path / "m.pt"
    snn.save_converted(new, report, path)
    back = snn.load_converted(path, Mixed())
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(back(x), new.eval()(x))
    assert all(p.dtype == torch.float64 for p in back.parameters())
    with pytest.raises(ValueError, match="exists: give overwrite=True"):
        snn.save_converted(new, report, path)
    with pytest.raises(ValueError, match="does not say how to build the original model"):
        snn.load_converted(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_model_converted_twice_saves_and_loads(tmp_path):
    """The file lists every structured layer of the model, not only the last report's: the
    first conversion's layers are in the state dict too."""
    torch.manual_seed(21)
    model = Mixed()
    once, _ = convert(model, "depthwise", rank=2, layers=["a"])
    twice, report = convert(once, "spatial", rank=2, layers=["b"])
    assert [r.name for r in report.converted] == ["b"]
    path = tmp_path / "m.pt"
    snn.save_converted(twice, report, path)
    back = snn.load_converted(path, Mixed())
    assert type(back.a) is type(once.a) and type(back.b) is type(twice.b)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(back(x), twice.eval()(x))


class Shared(nn.Module):
    """One conv called twice (weights shared), at 16x16 and again at 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.pool(self.c(x)))


@pytest.mark.parametrize("calibrated", [False, True])
def test_a_conv_called_twice_is_counted_at_every_call(calibrated):
    """Hand count: dense 9*4*4 MACs per pixel, depthwise rank 1 9*4 + 4*4, over 256 + 64
    output pixels."""
    torch.manual_seed(22)
    shape = (2, 4, 16, 16)
    data = {"calibration": torch.randn(shape)} if calibrated else {"input_shape": shape}
    new, report = convert(Shared(), "depthwise", rank=1, **data)
    before, after = 9 * 4 * 4 * (256 + 64), (9 * 4 + 4 * 4) * (256 + 64)
    (layer,) = report.layers
    assert (layer.macs_before, layer.macs_after) == (before, after)
    assert (report.macs_before, report.macs_after) == (before, after)
    assert report.macs_after == snn.profile(new, shape, measure=False).macs // shape[0]
    assert ("called 2 times" in layer.note) == calibrated


def test_load_converted_refuses_other_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(nn.Conv2d(1, 1, 1).state_dict(), plain)
    with pytest.raises(ValueError, match="is not a sepconv converted model"):
        snn.load_converted(plain, nn.Conv2d(1, 1, 1))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot be read as a checkpoint"):
        snn.load_converted(junk, nn.Conv2d(1, 1, 1))
    model = small_cnn(width=4, depth=1)
    new, report = convert(model, rank=1)
    path = tmp_path / "m.pt"
    snn.save_converted(new, report, path, source="small_cnn", source_kwargs={"width": 4})
    with pytest.raises(ValueError, match="does not fit the model"):
        snn.load_converted(path)  # rebuilt with width 4 but depth 4: other convs


def test_latency_budget_with_calibration_only_times_one_sample():
    model = two_convs(21)
    x = torch.randn(6, 16, 8, 8)
    _, report = convert(model, latency_budget=0.7, calibration=x, timer=fake_clock())
    assert report.timing["input_shape"] == [1, 16, 8, 8]
    assert report.model_output_error is not None  # calibration still refits and reports
    assert all(r.output_error is not None for r in report.converted)


def test_latency_budget_tries_the_other_memory_format():
    # the depthwise form of the 32-channel conv is slow unless its input is channels-last;
    # the dense model is as fast either way (so it is timed contiguous)
    model = two_convs(22)
    fast, slow = fake_clock(), fake_clock(slow_cin=32)

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return fast(module, x) if nhwc else slow(module, x)

    new, report = convert(model, latency_budget=0.5, input_shape=(1, 16, 8, 8), timer=timer)
    assert report.timing["memory_format"] == "contiguous"
    assert report.timing["memory_format_converted"] == "channels_last"
    assert {r["memory_format"] for r in report.timing["rounds"]} == {"contiguous", "channels_last"}
    # channels-last, the nearly separable conv alone meets the budget (least error)
    assert [r.name for r in report.converted] == ["2"] and isinstance(new[0], nn.Conv2d)
    assert report.latency_fraction <= 0.5


# -- several kinds weighed per layer ------------------------------------------------------------


class Planted(nn.Module):
    """Four 3x3 convs, 24 -> 24 channels: one exactly depthwise separable (multiplier 1), one
    exactly Tucker-2 of ranks (3, 3), one exactly spatially separable of rank 2 (3x1 then
    1x3), one random (no cheap exact form). Each planted form is far cheaper in MACs than
    the other kinds' exact forms of the same weight."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.ds = nn.Conv2d(24, 24, 3, padding=1, bias=False, dtype=torch.float64)
        self.tk = nn.Conv2d(24, 24, 3, padding=1, bias=False, dtype=torch.float64)
        self.sp = nn.Conv2d(24, 24, 3, padding=1, bias=False, dtype=torch.float64)
        self.rand = nn.Conv2d(24, 24, 3, padding=1, bias=False, dtype=torch.float64)
        kw = {"padding": 1, "bias": False, "dtype": torch.float64}
        planted = {
            "ds": snn.DepthwiseSeparableConv2d(24, 24, 3, **kw),
            "tk": snn.Tucker2Conv2d(24, 24, 3, rank=(3, 3), **kw),
            "sp": snn.SpatiallySeparableConv2d(24, 24, 3, rank=2, **kw),
        }
        with torch.no_grad():
            for name, layer in planted.items():
                getattr(self, name).weight.copy_(layer.dense_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rand(torch.tanh(self.sp(torch.tanh(self.tk(torch.tanh(self.ds(x)))))))


PLANTED_KIND = {"ds": "depthwise", "tk": "tucker2", "sp": "spatial"}


def test_auto_gives_each_layer_the_kind_its_weight_was_built_from():
    model = Planted(30)
    new, report = convert(model, "auto", tol=1e-6, input_shape=(1, 24, 8, 8))
    assert report.kind == "depthwise+spatial+tucker2" and report.policy == "tol=1e-06"
    rows = {r.name: r for r in report.layers}
    for name, kind in PLANTED_KIND.items():
        row = rows[name]
        assert row.converted and row.kind == kind, (name, row.kind)
        assert row.weight_error < 1e-6
        # the replacement is the planted weight: its dense form equals the conv's weight
        dense = new.get_submodule(name).dense_weight()
        torch.testing.assert_close(dense, model.get_submodule(name).weight, rtol=0, atol=1e-10)
    assert rows["tk"].rank == (3, 3) and rows["sp"].rank == 2 and rows["ds"].rank == 1
    # the random conv has no exact form cheaper than itself in any kind: left alone
    assert not rows["rand"].converted and "would cost more" in rows["rand"].note
    # each layer costs what the cheapest single-kind conversion of it costs
    for name in PLANTED_KIND:
        alone = [
            {r.name: r for r in convert(model, k, tol=1e-6, input_shape=(1, 24, 8, 8))[1].layers}
            for k in ("depthwise", "spatial", "tucker2")
        ]
        cheapest = min(a[name].macs_after for a in alone)
        assert rows[name].macs_after == cheapest
    x = torch.randn(2, 24, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-9, atol=1e-9)


def test_several_kinds_under_a_mac_budget_lose_no_more_than_any_kind_alone():
    model = Planted(31)
    shape = (1, 24, 8, 8)
    _, mixed = convert(model, ("depthwise", "spatial", "tucker2"), mac_budget=0.2,
                       input_shape=shape)  # fmt: skip
    assert mixed.macs_after <= 0.2 * mixed.macs_before
    rows = {r.name: r for r in mixed.layers}
    assert {rows[n].kind for n in PLANTED_KIND if rows[n].converted} == {
        PLANTED_KIND[n] for n in PLANTED_KIND if rows[n].converted
    }

    def total(report):
        return sum(r.weight_error**2 for r in report.layers if r.converted)

    for kind in ("depthwise", "spatial", "tucker2"):
        _, alone = convert(model, kind, mac_budget=0.2, input_shape=shape)
        assert alone.macs_after <= 0.2 * alone.macs_before
        assert total(mixed) <= total(alone) + 1e-12, kind


def test_latency_budget_with_two_kinds_takes_the_kind_the_clock_finds_fast():
    model = two_convs(32)
    shape = (1, 16, 8, 8)
    # depthwise forms of the 32-channel conv run 100x slower than their MACs: it must become
    # Tucker-2 (or stay dense), while the depthwise form stays open to the 16-channel conv
    timer = fake_clock(slow_cin=32)
    new, report = convert(
        model, ["depthwise", "tucker2"], latency_budget=0.5, input_shape=shape, timer=timer
    )
    rows = {r.name: r for r in report.layers}
    assert rows["2"].converted and rows["2"].kind == "tucker2"
    assert isinstance(new[2], snn.Tucker2Conv2d)
    timed = {type(m) for m in timer.calls}
    assert snn.DepthwiseSeparableConv2d in timed and snn.Tucker2Conv2d in timed
    x = torch.zeros(shape)
    assert report.latency_after == pytest.approx(timer(new, x))
    assert report.latency_fraction <= 0.5
    for name, (before, after) in report.layer_times.items():
        if rows[name].converted:
            assert after < before
    # the same clock without the slow depthwise forms: the nearly depthwise conv goes depthwise
    _, plain = convert(
        model, ["depthwise", "tucker2"], latency_budget=0.5, input_shape=shape,
        timer=fake_clock(),
    )  # fmt: skip
    assert {r.name: r.kind for r in plain.converted}.get("2") == "depthwise"


def test_mixed_kinds_save_and_load(tmp_path):
    model = Planted(33)
    new, report = convert(model, "auto", tol=1e-6, input_shape=(1, 24, 8, 8))
    path = tmp_path / "m.pt"
    snn.save_converted(new, report, path)
    back = snn.load_converted(path, Planted(0))
    assert {type(back.get_submodule(n)).__name__ for n in PLANTED_KIND} == {
        "DepthwiseSeparableConv2d",
        "Tucker2Conv2d",
        "SpatiallySeparableConv2d",
    }
    x = torch.randn(2, 24, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(back(x), new.eval()(x))


def test_kind_arguments_are_checked():
    model = two_convs(34)
    shape = (1, 16, 8, 8)
    saved = state(model)
    with pytest.raises(ValueError, match="rank=2 fixes the rank of one kind"):
        convert(model, "auto", rank=2, input_shape=shape)
    with pytest.raises(ValueError, match=r"'dense' in .* is not a kind"):
        convert(model, ["depthwise", "dense"], tol=0.1)
    with pytest.raises(ValueError, match="got an empty list"):
        convert(model, [], tol=0.1)
    with pytest.raises(ValueError, match="'auto', or a sequence of kinds, got 'all'"):
        convert(model, "all", tol=0.1)
    with pytest.raises(TypeError, match="got int"):
        convert(model, 3, tol=0.1)
    assert same_state(model, saved)
    # a single kind in a list is that kind; repeats are dropped
    _, one = convert(model, ["tucker2", "tucker2"], rank=2, input_shape=shape)
    assert one.kind == "tucker2"


def test_spatial_among_several_kinds_skips_only_where_it_cannot_apply():
    torch.manual_seed(35)
    model = nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 8, 3))
    _, report = convert(model, ["spatial", "depthwise"], tol=0.5, input_shape=(1, 4, 16))
    assert all(r.kind == "depthwise" for r in report.converted) and report.converted
    _, only = convert(model, "spatial", tol=0.5, input_shape=(1, 4, 16))
    assert not only.converted
    assert all(r.note == "1-D conv: kind='spatial' needs 2-D or 3-D" for r in only.layers)


def test_convert_refuses_a_misspelt_device_even_without_measuring():
    """Before: convert(model, device='cdua') was accepted when nothing was timed."""
    m = nn.Sequential(nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N'.*got 'cdua'"):
        convert(m, "depthwise", device="cdua", inplace=False)
    convert(m, "depthwise", device="cuda", inplace=False)  # unused without measuring: no GPU needed
