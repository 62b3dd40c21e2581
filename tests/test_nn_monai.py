"""sepconv.nn.convert on real architectures no one here wrote: MONAI's 2-D and 3-D networks
convert, run, match independent references (numpy SVD truncations, the dense original) and
export to ONNX with onnxruntime agreeing to 1e-4."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import sepconv.nn as snn
from sepconv.nn.convert import TRANSPOSED_REASON

monai_nets = pytest.importorskip("monai.networks.nets", reason="monai (dev extra) provides them")

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

# The torch.export-based exporter (torch >= 2.9 default, dynamo=True) emits a FutureWarning
# from torch's own pytree code; it is not ours to fix.
ONNX_WARNING = "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm())


def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Seeded weights everywhere (MONAI's init leaves norms at identity), evaluation mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return net.eval()


def onnx_max_diff(model: nn.Module, x: torch.Tensor, path) -> float:
    """Largest absolute difference of onnxruntime's output from torch's for ``model(x)``."""
    ort = pytest.importorskip("onnxruntime")
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max())


def depthwise_truncation(W: np.ndarray, groups: int, m: int) -> np.ndarray:
    """The best depth-multiplier-``m`` weight, written here: every input channel's
    ``C_out/g x K`` matrix truncated to rank ``m`` by numpy's SVD (Eckart-Young)."""
    co, ci_g = W.shape[:2]
    co_g = co // groups
    out = np.empty_like(W)
    for g in range(groups):
        rows = slice(g * co_g, (g + 1) * co_g)
        for i in range(ci_g):
            M = W[rows, i].reshape(co_g, -1)
            U, s, Vt = np.linalg.svd(M, full_matrices=False)
            out[rows, i] = ((U[:, :m] * s[:m]) @ Vt[:m]).reshape(W[rows, i].shape)
    return out


# ----------------------------------------------------------------------------------------------
# 2-D: BasicUNet, depthwise at multiplier 1 (lossy), against numpy's truncations
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings(ONNX_WARNING)
def test_basic_unet_2d_depthwise_matches_numpy_truncations_and_exports(tmp_path):
    torch.manual_seed(0)
    net = randomize(
        monai_nets.BasicUNet(
            spatial_dims=2, in_channels=2, out_channels=3, features=(4, 4, 8, 8, 16, 4)
        ),
        seed=1,
    )
    x = torch.randn(1, 2, 32, 32)
    new, report = snn.convert(net, "depthwise", rank=1, input_shape=(1, 2, 32, 32))

    convs = {n: m for n, m in net.named_modules() if isinstance(m, CONVS)}
    ups = {n for n, m in net.named_modules() if isinstance(m, TRANSPOSED)}
    converted = {r.name: r for r in report.converted}
    assert len(ups) == 4 and len(converted) >= 15, str(report)
    # every k x k conv is replaced; the 1x1 head and the transposed convs are left alone
    assert set(converted) == {n for n, m in convs.items() if m.kernel_size != (1, 1)}
    rows = {r.name: r for r in report.layers}
    assert {n for n in ups} <= set(rows)
    for n in ups:
        assert not rows[n].converted and rows[n].note == TRANSPOSED_REASON
        assert new.get_submodule(n) is not net.get_submodule(n)  # a copy, untouched
        assert torch.equal(new.get_submodule(n).weight, net.get_submodule(n).weight)

    # the reference: the original with each replaced conv's weight truncated by numpy
    reference = copy.deepcopy(net)
    for name, r in converted.items():
        conv = reference.get_submodule(name)
        W = conv.weight.detach().double().numpy()
        Wf = depthwise_truncation(W, conv.groups, 1)
        assert isinstance(new.get_submodule(name), snn.DepthwiseSeparableConv2d)
        assert r.rank == 1
        assert abs(r.weight_error - np.linalg.norm(W - Wf) / np.linalg.norm(W)) < 1e-5
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(Wf))
    with torch.no_grad():
        ours, ref, dense = new(x), reference(x), net(x)
    assert rel(ours, ref) < 1e-4  # float32 rounding through ~20 layers
    assert rel(ours, dense) > 1e-2  # the conversion is lossy: the check above can fail
    assert report.macs_after < report.macs_before

    assert onnx_max_diff(new, x, tmp_path / "basic_unet_2d.onnx") <= 1e-4


# ----------------------------------------------------------------------------------------------
# 3-D: UNet (residual units, instance norm, transposed up-sampling), exact Tucker-2
# ----------------------------------------------------------------------------------------------


def plant_tucker2(net: nn.Module, rank: tuple[int, int], seed: int) -> None:
    """Give every k x k conv a weight that is exactly Tucker-2 of ``rank`` (clipped to its
    channel counts): ``W = G x_0 A x_1 B``, random factors."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if not isinstance(m, CONVS) or all(k == 1 for k in m.kernel_size):
                continue
            co, ci = m.weight.shape[:2]
            r_in, r_out = min(rank[0], ci), min(rank[1], co)
            K = m.weight[0, 0].numel()
            A = torch.randn(co, r_out, generator=gen)
            B = torch.randn(ci, r_in, generator=gen)
            G = torch.randn(r_out, r_in, K, generator=gen)
            W = torch.einsum("oa,abk,ib->oik", A, G, B)
            m.weight.copy_((W / W.std()).reshape(m.weight.shape) * 0.3)


@pytest.mark.filterwarnings(ONNX_WARNING)
def test_unet_3d_exact_tucker2_equals_the_dense_original_and_exports(tmp_path):
    torch.manual_seed(0)
    net = randomize(
        monai_nets.UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=2,
            channels=(4, 8, 16),
            strides=(2, 2),
            num_res_units=1,
        ),
        seed=2,
    )
    plant_tucker2(net, (2, 3), seed=3)
    shape = (1, 1, 16, 16, 16)
    new, report = snn.convert(net, "tucker2", rank=(2, 3), input_shape=shape)
    ups = [n for n, m in net.named_modules() if isinstance(m, TRANSPOSED)]
    assert len(ups) == 2
    converted = report.converted
    assert len(converted) >= 5, str(report)
    for r in converted:
        assert isinstance(new.get_submodule(r.name), snn.Tucker2Conv3d)
        assert r.weight_error < 1e-6, (r.name, r.weight_error)  # exact, to float32 rounding
    for r in report.layers:
        if r.name in ups:
            assert not r.converted and r.note == TRANSPOSED_REASON
    x = torch.randn(*shape)
    with torch.no_grad():
        assert rel(new(x), net(x)) < 1e-5
    assert onnx_max_diff(new, x, tmp_path / "unet_3d.onnx") <= 1e-4


# ----------------------------------------------------------------------------------------------
# 3-D: SegResNet (group norm, nested blocks) under a MAC budget, saved and reloaded
# ----------------------------------------------------------------------------------------------


def segresnet() -> nn.Module:
    return monai_nets.SegResNet(
        spatial_dims=3,
        init_filters=8,
        in_channels=1,
        out_channels=2,
        blocks_down=(1, 1, 1),
        blocks_up=(1, 1),
    )


def test_segresnet_3d_mac_budget_converts_runs_and_reloads(tmp_path):
    net = randomize(segresnet(), seed=4)
    shape = (1, 1, 16, 16, 16)
    calibration = torch.randn(2, 1, 16, 16, 16)
    new, report = snn.convert(net, "tucker2", mac_budget=0.5, calibration=calibration)
    assert report.mac_fraction is not None and report.mac_fraction <= 0.5
    assert len(report.converted) >= 5, str(report)
    # independent check of the reported model error: both models run here
    with torch.no_grad():
        assert report.model_output_error == pytest.approx(
            rel(new(calibration), net(calibration)), rel=1e-4
        )
    path = tmp_path / "segresnet.pt"
    snn.save_converted(new, report, path)
    again = snn.load_converted(path, segresnet())
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(again(x), new.eval()(x))


def test_segresnet_3d_tucker2_errors_are_numpy_s_bounds_and_lopsided_pairs_the_optimum():
    """Every replaced layer's Tucker-2 error lies between the bounds from numpy's SVDs of the
    two unfoldings; where one rank covers the other mode (``r_in >= min(C_in, r_out K)`` or
    the reverse) it equals the lower bound, the global optimum."""
    net = randomize(segresnet(), seed=5)
    _, report = snn.convert(net, "tucker2", mac_budget=0.3, input_shape=(1, 1, 16, 16, 16))
    assert len(report.converted) >= 5, str(report)
    lopsided = 0
    for r in report.converted:
        W = net.get_submodule(r.name).weight.detach().double().numpy()
        co, ci = W.shape[:2]
        K = W[0, 0].size
        s0 = np.linalg.svd(W.reshape(co, -1), compute_uv=False)
        s1 = np.linalg.svd(np.moveaxis(W, 1, 0).reshape(ci, -1), compute_uv=False)
        r_in, r_out = r.rank
        tail0, tail1 = np.sum(s0[r_out:] ** 2), np.sum(s1[r_in:] ** 2)
        n2 = np.sum(W * W)
        lower, upper = np.sqrt(max(tail0, tail1) / n2), np.sqrt((tail0 + tail1) / n2)
        assert lower - 1e-6 <= r.weight_error <= upper + 1e-6, (r.name, r.rank)
        if r_in >= min(ci, r_out * K):
            lopsided += 1
            assert r.weight_error == pytest.approx(np.sqrt(tail0 / n2), abs=1e-6)
        elif r_out >= min(co, r_in * K):
            lopsided += 1
            assert r.weight_error == pytest.approx(np.sqrt(tail1 / n2), abs=1e-6)
    assert lopsided >= 2


def test_too_small_input_for_a_monai_network_is_a_value_error_naming_the_shape():
    net = monai_nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4,) * 6)
    with pytest.raises(ValueError, match=r"input_shape of shape \(1, 1, 8, 8, 8\) does not fit"):
        snn.convert(net, "depthwise", rank=1, input_shape=(1, 1, 8, 8, 8))
