"""sepconv.nn.factorize against closed forms (numpy SVDs written here) and dense convolutions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import sepconv.nn as snn
from _helpers import conv_with
from sepconv.nn import factorize

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
SIZE = {1: (13,), 2: (11, 10), 3: (7, 8, 6)}


def rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------------------------
# closed forms (numpy, independent of the library)
# ----------------------------------------------------------------------------------------------


def ds_error_closed_form(W: np.ndarray, m: int, groups: int = 1) -> float:
    """sqrt(sum_i sum_{j >= m} s_ij^2) / ||W|| over input channels i (per-channel SVD)."""
    cout, cin_g = W.shape[:2]
    co_g = cout // groups
    total = 0.0
    for gi in range(groups):
        for i in range(cin_g):
            M = W[gi * co_g : (gi + 1) * co_g, i].reshape(co_g, -1)
            s = np.linalg.svd(M, compute_uv=False)
            total += float(np.sum(s[m:] ** 2))
    return math.sqrt(total) / float(np.linalg.norm(W))


def spatial2d_error_closed_form(W: np.ndarray, r: int) -> float:
    cout, cin, kh, kw = W.shape
    M = np.zeros((cin * kh, cout * kw))
    for o, i, a, b in itertools.product(range(cout), range(cin), range(kh), range(kw)):
        M[i * kh + a, o * kw + b] = W[o, i, a, b]
    s = np.linalg.svd(M, compute_uv=False)
    return math.sqrt(float(np.sum(s[r:] ** 2))) / float(np.linalg.norm(W))


def spatial3d_error_closed_form(W: np.ndarray, r1: int, r2: int) -> float:
    """(C_in k_d) x (C_out k_h k_w) SVD at r1, then the 2-D scheme on S V^T at r2."""
    cout, cin, kd, kh, kw = W.shape
    M1 = np.transpose(W, (1, 2, 0, 3, 4)).reshape(cin * kd, cout * kh * kw)
    _, s, Vt = np.linalg.svd(M1, full_matrices=False)
    e1 = float(np.sum(s[r1:] ** 2))
    B = (s[:r1, None] * Vt[:r1]).reshape(r1, cout, kh, kw)
    M2 = np.transpose(B, (0, 2, 1, 3)).reshape(r1 * kh, cout * kw)
    s2 = np.linalg.svd(M2, compute_uv=False)
    e2 = float(np.sum(s2[r2:] ** 2))
    return math.sqrt(e1 + e2) / float(np.linalg.norm(W))


# ----------------------------------------------------------------------------------------------
# depthwise
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_depthwise_weight_error_equals_discarded_singular_values(d, groups):
    gen = torch.Generator().manual_seed(d * 10 + groups)
    W = torch.randn(8, 6 // groups, *((3, 4, 2)[:d]), dtype=torch.float64, generator=gen)
    conv = conv_with(W, groups=groups)
    K = math.prod(W.shape[2:])
    for m in range(1, min(8 // groups, K) + 1):
        layer, report = factorize(conv, "depthwise", rank=m)
        expected = ds_error_closed_form(W.numpy(), m, groups)
        assert report.rank == m and layer.depth_multiplier == m
        assert abs(report.predicted_error - expected) < 1e-12, (m, report.predicted_error)
        assert abs(report.weight_error - expected) < 1e-12, (m, report.weight_error)
        # the error of the layer's actual dense weight, computed here from the children
        dense = torch.zeros_like(W).reshape(8, 6 // groups, K)
        layer.requires_grad_(False)
        D = layer.conv_dw.weight.reshape(6, m, K)
        P = layer.conv_pw.weight.reshape(8, 6 // groups, m)
        for o in range(8):
            for il in range(6 // groups):
                i = (o // (8 // groups)) * (6 // groups) + il
                dense[o, il] = (P[o, il, :, None] * D[i]).sum(0)
        assert abs(rel(dense.reshape(W.shape), W) - expected) < 1e-12


def test_depthwise_truncation_is_optimal_per_channel():
    """No other rank-1 factor pair for a channel does better than its truncated SVD."""
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(5, 1, 3, 3, dtype=torch.float64, generator=gen)
    _, report = factorize(conv_with(W), "depthwise", rank=1)
    M = W[:, 0].reshape(5, 9)
    for _ in range(50):
        u = torch.randn(5, 1, dtype=torch.float64, generator=gen)
        v = torch.randn(1, 9, dtype=torch.float64, generator=gen)
        scale = float((u.T @ M @ v.T) / ((u.T @ u) * (v @ v.T)))  # best scale for this pair
        assert rel(scale * u @ v, M) >= report.weight_error - 1e-12


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_densified_depthwise_separable_conv_factorizes_back_exactly(d, m, dtype):
    torch.manual_seed(20 + d)
    cls = {1: snn.DepthwiseSeparableConv1d, 2: snn.DepthwiseSeparableConv2d}.get(
        d, snn.DepthwiseSeparableConv3d
    )
    ds = cls(6, 10, 3, depth_multiplier=m, dtype=dtype)
    with torch.no_grad():
        D = ds.conv_dw.weight.reshape(6, m, -1)
        P = ds.conv_pw.weight.reshape(10, 6, m)
        W = torch.einsum("oij,ijk->oik", P, D).reshape(10, 6, *((3,) * d))
    bias = torch.randn(10, dtype=dtype)
    conv = conv_with(W, bias, stride=2, padding=1, dilation=2)
    layer, report = factorize(conv, "depthwise")
    assert report.rank == m
    x = torch.randn(2, 6, *SIZE[d], dtype=dtype)
    with torch.no_grad():
        y, ref = layer(x), conv(x)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert y.shape == ref.shape
    assert float((y - ref).abs().max()) <= tol * float(ref.abs().max()), "not exact"
    assert report.weight_error <= (1e-13 if dtype == torch.float64 else 1e-5)


# ----------------------------------------------------------------------------------------------
# spatial
# ----------------------------------------------------------------------------------------------


def test_spatial_2d_weight_error_equals_svd_of_rearrangement():
    gen = torch.Generator().manual_seed(4)
    W = torch.randn(5, 4, 3, 5, dtype=torch.float64, generator=gen)
    conv = conv_with(W, padding=(1, 2))
    for r in range(1, 13):
        layer, report = factorize(conv, "spatial", rank=r)
        expected = spatial2d_error_closed_form(W.numpy(), r)
        assert abs(report.weight_error - expected) < 1e-12
        assert abs(report.predicted_error - expected) < 1e-12
        assert layer.conv_h.weight.shape == (r, 4, 3, 1)
        assert layer.conv_w.weight.shape == (5, r, 1, 5)
    assert report.weight_error < 1e-13  # rank 12 = min(4*3, 5*5): exact


def test_spatial_3d_error_is_sum_of_both_truncations():
    gen = torch.Generator().manual_seed(5)
    W = torch.randn(4, 3, 2, 3, 3, dtype=torch.float64, generator=gen)
    conv = conv_with(W, padding=1)
    for r1, r2 in [(1, 1), (2, 3), (4, 2), (6, 8), (6, 12)]:
        _, report = factorize(conv, "spatial", rank=(r1, r2))
        expected = spatial3d_error_closed_form(W.numpy(), r1, r2)
        assert report.rank == (r1, r2)
        assert abs(report.weight_error - expected) < 1e-12, (r1, r2)
        assert abs(report.predicted_error - expected) < 1e-12, (r1, r2)


@pytest.mark.parametrize("d", [2, 3])
def test_densified_spatial_chain_factorizes_back_exactly(d):
    torch.manual_seed(30 + d)
    rank = 2 if d == 2 else (2, 3)
    cls = snn.SpatiallySeparableConv2d if d == 2 else snn.SpatiallySeparableConv3d
    src = cls(5, 7, (3, 5, 3)[:d], rank=rank, dtype=torch.float64, padding="same", stride=2)
    with torch.no_grad():
        W = src.dense_weight()
    conv = conv_with(W, src.conv_w.bias.detach(), padding=(1, 2, 1)[:d], stride=2)
    layer, report = factorize(conv, "spatial")
    if d == 2:
        assert report.rank == 2
    else:
        assert report.rank[0] == 2 and report.rank[1] <= 3
    x = torch.randn(2, 5, *SIZE[d], dtype=torch.float64)
    with torch.no_grad():
        assert rel(layer(x), conv(x)) < 1e-12


# ----------------------------------------------------------------------------------------------
# cp
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3])
def test_densified_low_rank_conv_factorizes_back_exactly(d):
    torch.manual_seed(40 + d)
    cls = {1: snn.LowRankConv1d, 2: snn.LowRankConv2d, 3: snn.LowRankConv3d}[d]
    src = cls(6, 5, (3, 4, 3)[:d], rank=2, dtype=torch.float64)
    with torch.no_grad():
        W = src.dense_weight()
    conv = conv_with(W, padding=1)
    layer, report = factorize(conv, "cp", rank=2)
    assert report.weight_error < 1e-8
    x = torch.randn(2, 6, *SIZE[d], dtype=torch.float64)
    with torch.no_grad():
        assert rel(layer(x), conv(x)) < 1e-8


def test_cp_reports_the_error_of_the_dense_difference():
    gen = torch.Generator().manual_seed(6)
    W = torch.randn(6, 5, 3, 3, dtype=torch.float64, generator=gen)
    layer, report = factorize(conv_with(W), "cp", rank=4)
    r = 4
    A_in = layer.conv_pw1.weight.reshape(r, 5)
    A_out = layer.conv_pw2.weight.reshape(6, r)
    fh = layer.conv_dw_h.weight.reshape(r, 3)
    fw = layer.conv_dw_w.weight.reshape(r, 3)
    dense = torch.einsum("or,ri,ra,rb->oiab", A_out, A_in, fh, fw)
    assert abs(report.weight_error - rel(dense, W)) < 1e-12
    assert 0 < report.weight_error < 1


def test_cp_tol_picks_a_rank_meeting_it():
    gen = torch.Generator().manual_seed(7)
    W = torch.randn(3, 4, 3, 2, dtype=torch.float64, generator=gen)
    _, report = factorize(conv_with(W), "cp", tol=0.5)
    assert report.weight_error <= 0.5
    _, smaller = factorize(conv_with(W), "cp", rank=max(1, report.rank // 2))
    assert smaller.weight_error > 0.5 or report.rank == 1


# ----------------------------------------------------------------------------------------------
# geometry is carried: same output shape for every setting
# ----------------------------------------------------------------------------------------------

# (padding, stride, dilation, padding_mode, groups): every value of each, in a few combinations
GEOMETRIES = [
    (0, 1, 1, "zeros", 1),
    (1, 2, 1, "reflect", 2),
    ("same", 1, 2, "circular", 1),
    ("valid", 2, 2, "zeros", 2),
    (2, 1, 2, "replicate", 1),
    ("same", 1, 1, "reflect", 2),
    (1, 2, 2, "circular", 1),
]


# nn.Conv*d warns that its asymmetric 'same' (even kernels) may copy the input.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize(
    ("kind", "d"),
    [(k, d) for k in ("depthwise", "spatial", "cp") for d in (1, 2, 3) if (k, d) != ("spatial", 1)],
)
def test_factorized_layer_has_the_original_output_shape_everywhere(kind, d):
    torch.manual_seed(50 + d)
    k = (3, 2, 3)[:d]
    x = torch.randn(1, 4, *SIZE[d])
    for padding, stride, dilation, mode, groups in GEOMETRIES:
        if padding == "same" and stride > 1:
            continue  # nn.Conv*d refuses strided 'same'
        conv = CONV[d](4, 6, k, stride, padding, dilation, groups=groups, padding_mode=mode)
        rank = 1 if kind != "spatial" or d == 2 else (1, 1)
        layer, _ = factorize(conv, kind, rank=rank)
        with torch.no_grad():
            got, want = layer(x).shape, conv(x).shape
        assert got == want, (padding, stride, dilation, mode, groups)


@pytest.mark.parametrize("kind", ["depthwise", "spatial", "cp"])
def test_structured_weight_converts_exactly_with_bias_padding_mode_and_groups(kind):
    torch.manual_seed(8)
    cls = {
        "depthwise": snn.DepthwiseSeparableConv2d,
        "spatial": snn.SpatiallySeparableConv2d,
        "cp": snn.LowRankConv2d,
    }[kind]
    rank_arg = "depth_multiplier" if kind == "depthwise" else "rank"
    src = cls(4, 6, (3, 2), groups=2, dtype=torch.float64, **{rank_arg: 2})
    with torch.no_grad():
        W = src.dense_weight()
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                     padding_mode="reflect", dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(W)
    layer, report = factorize(conv, kind, rank=2 if kind == "cp" else None)
    assert report.rank == 2
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        assert rel(layer(x), conv(x)) < 1e-9, report


def test_tol_gives_the_smallest_rank_meeting_it():
    gen = torch.Generator().manual_seed(9)
    W = torch.randn(16, 8, 3, 3, dtype=torch.float64, generator=gen)
    conv = conv_with(W)
    for tol in (0.3, 0.6, 0.9):
        _, report = factorize(conv, "depthwise", tol=tol)
        m = report.rank
        assert ds_error_closed_form(W.numpy(), m) <= tol
        assert m == 1 or ds_error_closed_form(W.numpy(), m - 1) > tol


def test_report_costs_follow_the_cost_formulas():
    conv = nn.Conv2d(32, 64, 3, padding=1, bias=False)
    _, rep = factorize(conv, "depthwise", rank=2)
    assert rep.macs_unit == "per_output_pixel"
    assert rep.macs_before == 9 * 32 * 64
    assert rep.macs_after == 9 * 32 * 2 + 32 * 2 * 64
    assert rep.params_before == 9 * 32 * 64 and rep.params_after == 9 * 32 * 2 + 32 * 2 * 64
    _, rep = factorize(conv, "spatial", rank=5)
    assert rep.macs_after == 5 * (32 * 3 + 64 * 3)
    _, rep = factorize(nn.Conv2d(32, 64, 3, stride=2), "cp", rank=4)
    # the first pointwise runs at the input resolution: 4 pixels per output pixel
    assert rep.macs_after == 4 * 32 * 4 + 4 * 3 * 2 + 4 * 3 + 4 * 64
    x = torch.randn(2, 32, 16, 16)
    _, rep = factorize(conv, "depthwise", rank=1, calibration=x)
    assert rep.macs_unit == "total"
    assert rep.macs_before == 9 * 32 * 64 * 16 * 16


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["depthwise", "spatial", "cp"])
def test_calibration_refit_lowers_the_output_error_and_reports_both(kind):
    torch.manual_seed(10)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    # correlated inputs: a low-dimensional signal, so the output error differs from weight error
    basis = torch.randn(3, 8)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(6, 3, 16, 16), basis)
    x = x + 0.05 * torch.randn_like(x)
    layer0, plain = factorize(conv, kind, rank=1)
    layer, rep = factorize(conv, kind, rank=1, calibration=x)
    assert plain.output_error is None and rep.output_error is not None
    with torch.no_grad():
        y = conv(x)
        assert abs(rep.init_output_error - rel(layer0(x), y)) < 1e-5
        assert abs(rep.output_error - rel(layer(x), y)) < 1e-5
    assert rep.output_error < rep.init_output_error
    assert rep.predicted_error == pytest.approx(plain.predicted_error)


def test_calibration_too_small_keeps_closed_form_and_says_so():
    conv = nn.Conv2d(16, 16, 3)
    _, rep = factorize(conv, "depthwise", rank=2, calibration=torch.randn(1, 16, 4, 4))
    assert "calibration too small" in rep.note
    assert rep.output_error == pytest.approx(rep.init_output_error)


def test_calibration_of_wrong_shape_is_refused():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(
        ValueError, match=r"calibration must be a floating-point batch of shape \(N, 4"
    ):
        factorize(conv, calibration=torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="calibration must be"):
        factorize(conv, calibration=torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="calibration of spatial size"):
        factorize(conv, calibration=torch.randn(1, 4, 2, 2))
    with pytest.raises(TypeError, match=r"calibration must be a torch\.Tensor"):
        factorize(conv, calibration=np.zeros((1, 4, 8, 8)))


# ----------------------------------------------------------------------------------------------
# bad input; module properties kept
# ----------------------------------------------------------------------------------------------


def test_factorize_refuses_non_convolutions_and_transposed_convs():
    with pytest.raises(
        TypeError, match=r"conv must be a torch\.nn\.Conv1d, Conv2d or Conv3d, got Linear"
    ):
        factorize(nn.Linear(3, 4))
    with pytest.raises(TypeError, match="transposed convolution ConvTranspose2d"):
        factorize(nn.ConvTranspose2d(3, 4, 3))
    with pytest.raises(ValueError, match="lazy convolution"):
        factorize(nn.LazyConv2d(4, 3))


def test_factorize_bad_kind_rank_tol():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        factorize(conv, "tucker")
    with pytest.raises(ValueError, match=r"rank must be between 1 and 6 for kind='depthwise'"):
        factorize(conv, rank=7)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        factorize(conv, rank=0)
    with pytest.raises(ValueError, match=r"rank must be between 1 and 12 for kind='spatial'"):
        factorize(conv, "spatial", rank=13)
    with pytest.raises(ValueError, match=r"rank must be \(r_1, r_2\)"):
        factorize(nn.Conv3d(4, 6, 3), "spatial", rank=(13, 1))
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        factorize(conv, tol=-0.1)
    with pytest.raises(ValueError, match="kind='spatial' needs a 2-D or 3-D"):
        factorize(nn.Conv1d(4, 6, 3), "spatial")


def test_factorized_module_keeps_dtype_device_and_training_mode():
    conv = nn.Conv2d(4, 6, 3, dtype=torch.float64).eval()
    layer, _ = factorize(conv, "cp", rank=2)
    assert not layer.training
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    conv.train()
    layer, _ = factorize(conv, "depthwise", rank=1)
    assert layer.training


def test_factorize_does_not_modify_the_conv():
    conv = nn.Conv2d(4, 6, 3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    factorize(conv, "spatial", rank=2, calibration=torch.randn(4, 4, 12, 12))
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items())


# ----------------------------------------------------------------------------------------------
# what counts as exact, and calibration that cannot be used
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_exact_rank_of_half_precision_weights_is_exact_to_their_rounding(dtype):
    """A random half-precision conv has full rank: no lower rank is 'exact' (a 64-eps slack
    once took a bfloat16 rank-3 fit with 40 % error). A rank-1 weight rounded to the dtype
    is found at rank 1, within the dtype's rounding of the dense conv."""
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 6, 3, padding=1).to(dtype)
    _, report = factorize(conv, "depthwise")
    W = conv.weight.detach().double().reshape(6, 4, 9).permute(1, 0, 2)  # per input channel
    s = torch.linalg.svdvals(W)  # (4, min(6, 9)) singular values, largest first
    for r in range(1, s.shape[1]):  # every lower rank leaves far more than the rounding
        left = float(s[:, r:].square().sum().sqrt() / s.square().sum().sqrt())
        assert left > 4 * torch.finfo(dtype).eps
    assert report.rank is None or report.rank == s.shape[1]
    W1 = torch.einsum("oi,hw->oihw", torch.randn(6, 4).double(), torch.randn(3, 3).double())
    conv1 = conv_with(W1, None, padding=1).to(dtype)
    _, report = factorize(conv1, "depthwise")
    assert report.rank == 1 and report.weight_error <= 2 * torch.finfo(dtype).eps


def test_non_finite_calibration_is_refused_before_it_poisons_the_weights():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    cal = torch.randn(8, 4, 16, 16)
    cal[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"calibration must be finite: 1 of its 8192"):
        factorize(conv, "depthwise", rank=1, calibration=cal)
    cal[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="calibration must be finite"):
        snn.convert(nn.Sequential(conv), "depthwise", rank=1, calibration=cal)
