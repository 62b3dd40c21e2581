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


def test_mac_budget_is_met_and_spent_where_error_per_saved_mac_is_smallest():
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
    )
    # the second conv is nearly depthwise separable: cheap to compress, so the budget goes there
    ds = snn.DepthwiseSeparableConv2d(32, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        model[2].weight.copy_(ds.dense_weight() + 1e-5 * torch.randn(32, 32, 3, 3))
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
    with pytest.raises(ValueError, match="give at most one of rank, tol and mac_budget"):
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
