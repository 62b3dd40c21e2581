"""sepconv.nn.factorize kind='tucker2', rank='vbmf', rank_multiple and the MAC guard, against
tensorly's partial_tucker, numpy SVDs, closed forms and dense torch convolutions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from torch import nn

import sepconv.nn as snn
from _helpers import conv_with
from sepconv.nn import evbmf, factorize

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
SIZE = {1: (13,), 2: (11, 10), 3: (7, 8, 6)}


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def dense_from_children(layer) -> np.ndarray:
    """The Tucker-2 layer's dense weight, written here from its three convs (numpy)."""
    g = layer.groups
    pw1 = layer.conv_pw1.weight.detach().double().numpy()  # (g r_in, ci_g, 1..)
    core = layer.conv_core.weight.detach().double().numpy()  # (g r_out, r_in, *k)
    pw2 = layer.conv_pw2.weight.detach().double().numpy()  # (C_out, r_out, 1..)
    r_in, r_out = core.shape[1], core.shape[0] // g
    k = core.shape[2:]
    ci_g, co_g = pw1.shape[1], pw2.shape[0] // g
    W = np.zeros((co_g * g, ci_g, *k))
    for gi in range(g):
        P1 = pw1[gi * r_in : (gi + 1) * r_in].reshape(r_in, ci_g)
        C = core[gi * r_out : (gi + 1) * r_out].reshape(r_out, r_in, -1)
        P2 = pw2[gi * co_g : (gi + 1) * co_g].reshape(co_g, r_out)
        block = np.tensordot(np.tensordot(P2, C, axes=(1, 0)), P1, axes=(1, 0))  # (o, K, i)
        W[gi * co_g : (gi + 1) * co_g] = np.moveaxis(block, 2, 1).reshape(co_g, ci_g, *k)
    return W


def spectrum_tail2(M: np.ndarray, r: int) -> float:
    s = np.linalg.svd(M, compute_uv=False)
    return float(np.sum(s[r:] ** 2))


# ----------------------------------------------------------------------------------------------
# Tucker-2 against tensorly
# ----------------------------------------------------------------------------------------------

tensorly = pytest.importorskip("tensorly", reason="tensorly (dev extra) is the Tucker reference")


def tensorly_error(W: np.ndarray, r_in: int, r_out: int) -> float:
    """Relative error of tensorly's partial_tucker (HOOI) on modes [0, 1], run to convergence."""
    from tensorly.decomposition import partial_tucker
    from tensorly.tenalg import multi_mode_dot

    (core, factors), _ = partial_tucker(
        W, rank=[r_out, r_in], modes=[0, 1], n_iter_max=2000, tol=1e-14
    )
    rec = multi_mode_dot(core, factors, modes=[0, 1])
    return rel(rec, W)


@pytest.mark.parametrize(
    ("shape", "rank"),
    [
        ((16, 12, 3, 3), (5, 7)),
        ((24, 20, 3, 3), (10, 12)),
        ((12, 16, 3, 5), (4, 9)),
        ((8, 6, 5), (3, 4)),
        ((6, 5, 3, 3, 3), (2, 3)),
        ((10, 8, 1, 1), (4, 4)),  # a 1x1 conv: the core is r_out x r_in
    ],
)
def test_tucker2_error_equals_tensorly_partial_tucker(shape, rank):
    gen = torch.Generator().manual_seed(sum(shape))
    W = torch.randn(*shape, dtype=torch.float64, generator=gen)
    layer, report = factorize(conv_with(W), "tucker2", rank=rank)
    reference = tensorly_error(W.numpy(), *rank)
    assert report.rank == rank and report.converted
    ours = rel(dense_from_children(layer), W.numpy())
    assert abs(report.weight_error - ours) < 1e-12
    assert abs(ours - reference) <= 1e-6 * reference, (ours, reference)
    assert ours <= reference + 1e-6


@pytest.mark.parametrize(("rank", "mode"), [((40, 4), 0), ((3, 40), 1)])
def test_lopsided_tucker2_ranks_reach_the_closed_form_optimum(rank, mode):
    # r_in >= min(C_in, r_out * K): the input factor can hold everything the r_out output
    # directions need, so the optimum is the output mode's truncated SVD (and symmetrically);
    # the error is that unfolding's discarded spectrum, and no HOOI fit can do better
    gen = torch.Generator().manual_seed(48)
    W = torch.randn(64, 48, 3, 3, dtype=torch.float64, generator=gen)
    Wn = W.numpy()
    unfolding = np.moveaxis(Wn, mode, 0).reshape(Wn.shape[mode], -1)
    keep = rank[1] if mode == 0 else rank[0]
    expected = math.sqrt(spectrum_tail2(unfolding, keep)) / float(np.linalg.norm(Wn))
    layer, report = factorize(conv_with(W), "tucker2", rank=rank)
    ours = rel(dense_from_children(layer), Wn)
    assert report.rank == rank and report.converted
    assert abs(ours - expected) <= 1e-10 * expected
    assert abs(report.weight_error - ours) < 1e-12
    with warnings.catch_warnings():  # tensorly caps the larger rank at what HOOI can use
        warnings.filterwarnings("ignore", "Trying to compute SVD with n_eigenvecs", UserWarning)
        reference = tensorly_error(Wn, *rank)
    assert ours <= reference + 1e-12


def test_grouped_tucker2_error_equals_tensorly_per_group():
    gen = torch.Generator().manual_seed(11)
    W = torch.randn(12, 5, 3, 3, dtype=torch.float64, generator=gen)  # groups=2: 10 -> 12
    layer, report = factorize(conv_with(W, groups=2), "tucker2", rank=(3, 4))
    Wn = W.numpy()
    total = sum(
        (tensorly_error(Wn[6 * g : 6 * (g + 1)], 3, 4) * np.linalg.norm(Wn[6 * g : 6 * (g + 1)]))
        ** 2
        for g in range(2)
    )
    reference = math.sqrt(total) / float(np.linalg.norm(Wn))
    ours = rel(dense_from_children(layer), Wn)
    assert layer.conv_pw1.groups == layer.conv_core.groups == layer.conv_pw2.groups == 2
    assert abs(ours - reference) <= 1e-6 * reference
    assert abs(report.weight_error - ours) < 1e-12


def test_tucker2_predicted_error_is_the_hosvd_bound_and_brackets_the_error():
    gen = torch.Generator().manual_seed(12)
    W = torch.randn(14, 10, 3, 3, dtype=torch.float64, generator=gen)
    Wn = W.numpy()
    n2 = float(np.sum(Wn**2))
    M0 = Wn.reshape(14, -1)
    M1 = np.moveaxis(Wn, 1, 0).reshape(10, -1)
    for r_in, r_out in [(1, 1), (3, 5), (10, 2), (6, 14), (10, 14)]:
        _, report = factorize(conv_with(W), "tucker2", rank=(r_in, r_out))
        t0, t1 = spectrum_tail2(M0, r_out), spectrum_tail2(M1, r_in)
        bound = math.sqrt((t0 + t1) / n2)
        assert abs(report.predicted_error - bound) < 1e-12
        assert math.sqrt(max(t0, t1) / n2) - 1e-12 <= report.weight_error <= bound + 1e-12
    assert report.weight_error < 1e-13  # full ranks: exact


# ----------------------------------------------------------------------------------------------
# the layer: its forward is the dense conv of its weight
# ----------------------------------------------------------------------------------------------

# (padding, stride, dilation, padding_mode, groups)
GEOMETRIES = [
    (0, 1, 1, "zeros", 1),
    (1, 2, 1, "reflect", 2),
    ("same", 1, 2, "circular", 1),
    (2, 1, 2, "replicate", 2),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("d", [1, 2, 3])
def test_tucker2_layer_forward_equals_dense_conv_of_reconstructed_weight(d):
    torch.manual_seed(60 + d)
    k = (3, 2, 3)[:d]
    x = torch.randn(2, 4, *SIZE[d], dtype=torch.float64)
    for padding, stride, dilation, mode, groups in GEOMETRIES:
        conv = CONV[d](
            4, 6, k, stride, padding, dilation, groups=groups, padding_mode=mode,
            dtype=torch.float64,
        )  # fmt: skip
        layer, report = factorize(conv, "tucker2", rank=(1, 2))
        Wf = torch.from_numpy(dense_from_children(layer))
        bias = conv.bias.detach()
        if mode == "zeros":
            ref = FCONV[d](x, Wf, bias, stride, padding, dilation, groups)
        else:  # pad as nn.Conv*d does, then a valid conv
            ref = conv._conv_forward(x, Wf, bias)
        with torch.no_grad():
            y = layer(x)
        assert y.shape == conv(x).shape
        assert rel(y, ref) < 1e-12, (padding, stride, dilation, mode, groups)
        assert abs(report.weight_error - rel(Wf, conv.weight.detach())) < 1e-12


def test_densified_tucker2_layer_factorizes_back_exactly():
    torch.manual_seed(13)
    src = snn.Tucker2Conv2d(8, 10, 3, rank=(3, 4), dtype=torch.float64)
    with torch.no_grad():
        W = src.dense_weight()
    assert rel(W, dense_from_children(src)) < 1e-14
    conv = conv_with(W, torch.randn(10, dtype=torch.float64), padding=1, stride=2)
    layer, report = factorize(conv, "tucker2")  # default: the exact ranks
    assert report.rank == (3, 4) and report.converted
    assert report.weight_error < 1e-13
    x = torch.randn(2, 8, 12, 11, dtype=torch.float64)
    with torch.no_grad():
        assert rel(layer(x), conv(x)) < 1e-12


def test_tucker2_costs():
    conv = nn.Conv2d(32, 64, 3, padding=1)
    _, rep = factorize(conv, "tucker2", rank=(8, 16))
    assert rep.macs_before == 9 * 32 * 64
    assert rep.macs_after == 32 * 8 + 9 * 8 * 16 + 16 * 64
    assert rep.params_after == 32 * 8 + 9 * 8 * 16 + 16 * 64 + 64  # bias on the last conv
    _, rep = factorize(nn.Conv2d(32, 64, 3, stride=2), "tucker2", rank=(8, 16))
    # the first pointwise conv runs at the input resolution: 4 pixels per output pixel
    assert rep.macs_after == 4 * 32 * 8 + 9 * 8 * 16 + 16 * 64
    _, rep = factorize(nn.Conv2d(32, 64, 3, groups=2), "tucker2", rank=(4, 8))
    assert rep.macs_after == 32 * 4 + 9 * 4 * 8 * 2 + 8 * 2 * 32


def test_tucker2_tol_picks_the_cheapest_pair_whose_bound_meets_it():
    gen = torch.Generator().manual_seed(14)
    W = torch.randn(12, 10, 3, 3, dtype=torch.float64, generator=gen)
    Wn = W.numpy()
    n2 = float(np.sum(Wn**2))
    M0, M1 = Wn.reshape(12, -1), np.moveaxis(Wn, 1, 0).reshape(10, -1)
    for tol in (0.4, 0.7, 0.9):
        _, report = factorize(conv_with(W), "tucker2", tol=tol)
        assert report.weight_error <= report.predicted_error <= tol
        feasible = [
            (10 * a + 9 * a * b + b * 12, (a, b))
            for a in range(1, 11)
            for b in range(1, 13)
            if (spectrum_tail2(M0, b) + spectrum_tail2(M1, a)) / n2 <= tol * tol
        ]
        assert report.macs_after == min(feasible)[0], (tol, report.rank, min(feasible))


def test_tucker2_calibration_refits_the_last_pointwise_conv():
    torch.manual_seed(15)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    basis = torch.randn(3, 8)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(6, 3, 16, 16), basis)
    x = x + 0.05 * torch.randn_like(x)
    _, rep = factorize(conv, "tucker2", rank=(2, 2), calibration=x)
    assert rep.output_error < rep.init_output_error


def test_tucker2_bad_ranks_are_refused_with_the_range():
    conv = nn.Conv2d(12, 6, 3)  # q_in = 12, q_out = 6
    with pytest.raises(
        ValueError, match=r"rank must be \(r_in, r_out\) with 1 <= r_in <= 12 and 1 <= r_out <= 6"
    ):
        factorize(conv, "tucker2", rank=(13, 1))
    with pytest.raises(ValueError, match="r_out <= 6"):
        factorize(conv, "tucker2", rank=(2, 7))
    with pytest.raises(ValueError, match="or an integer between 1 and 12"):
        factorize(conv, "tucker2", rank=13)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        factorize(conv, "tucker2", rank=(0, 2))
    with pytest.raises(ValueError, match=r"rank must be \(r_in, r_out\)"):
        factorize(conv, "tucker2", rank=(1, 2, 3))
    _, rep = factorize(conv, "tucker2", rank=9)
    assert rep.rank == (9, 6) and "rank 9 clipped to (9, 6)" in rep.note


# ----------------------------------------------------------------------------------------------
# EVBMF
# ----------------------------------------------------------------------------------------------


def tau_bar_reference(alpha: float) -> float:
    """Zero of Phi(t) + Phi(t / alpha), Phi(z) = log(z + 1) / z - 1/2 (Nakajima et al. 2012)."""

    def phi(z):
        return math.log1p(z) / z - 0.5

    return brentq(lambda t: phi(t) + phi(t / alpha), 1e-6, 100.0, xtol=1e-15)


def matrix_with_spectrum(L: int, M: int, s: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((L, L)))[0]
    V = np.linalg.qr(rng.standard_normal((M, L)))[0]
    return (U * s) @ V.T


@pytest.mark.parametrize(("L", "M"), [(30, 30), (20, 80), (50, 35), (1, 40)])
def test_evbmf_threshold_is_the_closed_form(L, M):
    """Known sigma: EVB keeps exactly the singular values above
    sigma sqrt(M (1 + tau) (1 + alpha / tau)) (L <= M the sides, alpha = L / M)."""
    lo, hi = sorted((L, M))
    alpha = lo / hi
    tau = tau_bar_reference(alpha)
    sigma2 = 0.3
    threshold = math.sqrt(hi * sigma2 * (1 + tau) * (1 + alpha / tau))
    factors = np.linspace(1.5, 0.5, lo + 1)[1:] if lo > 1 else np.array([1 - 1e-9])
    if lo > 1:  # one singular value just below the threshold, the next one just above
        i = int(np.argmin(abs(factors - 1)))
        factors[i - 1 : i + 1] = (1 + 1e-9, 1 - 1e-9)
    s = threshold * factors
    v = evbmf(matrix_with_spectrum(L, M, s, seed=L + M) if L <= M else
              matrix_with_spectrum(M, L, s, seed=L + M).T, sigma2=sigma2)  # fmt: skip
    assert v.sigma2 == sigma2
    assert abs(v.threshold - threshold) <= 1e-12 * threshold
    assert v.rank == int(np.sum(s > threshold))
    if L == M:
        assert abs(tau - 2.5129) < 1e-4  # the paper's constant for square matrices


@pytest.mark.parametrize(
    ("L", "M", "r", "sigma"), [(40, 120, 4, 0.1), (64, 64, 6, 2.0), (150, 30, 3, 1.0)]
)
def test_evbmf_recovers_the_rank_of_low_rank_plus_noise(L, M, r, sigma):
    rng = np.random.default_rng(L * M + r)
    lo, hi = min(L, M), max(L, M)
    alpha = lo / hi
    tau = tau_bar_reference(alpha)
    threshold = sigma * math.sqrt(hi * (1 + tau) * (1 + alpha / tau))
    signal = np.linspace(4, 2, r) * threshold  # well above the threshold
    X = matrix_with_spectrum(lo, hi, signal.tolist() + [0] * (lo - r), seed=r)
    if L > M:
        X = X.T
    v = evbmf(X + sigma * rng.standard_normal((L, M)))
    assert v.rank == r
    assert abs(math.sqrt(v.sigma2) / sigma - 1) < 0.1  # the noise level, estimated


def test_evbmf_arguments():
    with pytest.raises(ValueError, match="matrix must be a non-empty real 2-D array"):
        evbmf(np.zeros(5))
    with pytest.raises(ValueError, match="matrix must be finite"):
        evbmf(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="sigma2 must be a finite number > 0"):
        evbmf(np.eye(3), sigma2=-1.0)
    assert evbmf(np.zeros((4, 6))).rank == 0


def noisy(W: torch.Tensor, level: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    sigma = level * float(W.norm()) / math.sqrt(W.numel())
    return W + sigma * torch.randn(W.shape, dtype=W.dtype, generator=gen)


def test_vbmf_rank_of_each_kind_on_structured_weights_plus_noise():
    torch.manual_seed(16)
    with torch.no_grad():
        ds = snn.DepthwiseSeparableConv2d(6, 32, 3, depth_multiplier=2, dtype=torch.float64)
        ss = snn.SpatiallySeparableConv2d(16, 24, 3, rank=3, dtype=torch.float64)
        lr = snn.LowRankConv2d(16, 24, 3, rank=2, dtype=torch.float64)
        t2 = snn.Tucker2Conv2d(24, 32, 3, rank=(3, 5), dtype=torch.float64)
        cases = [
            ("depthwise", ds, 2),
            ("spatial", ss, 3),
            ("cp", lr, 2),
            ("tucker2", t2, (3, 5)),
        ]
        for i, (kind, src, expected) in enumerate(cases):
            W = noisy(src.dense_weight(), 0.01, seed=i)
            _, report = factorize(conv_with(W), kind, rank="vbmf")
            assert report.rank == expected, (kind, report.rank)


def test_vbmf_tucker2_ranks_are_evbmf_of_the_unfoldings():
    """The wiring: r_out from the mode-0 unfolding, r_in from the mode-1 unfolding."""
    gen = torch.Generator().manual_seed(17)
    W = torch.randn(20, 12, 3, 3, dtype=torch.float64, generator=gen)
    decay = torch.arange(1, 21, dtype=torch.float64) ** -1.5
    W = W * decay[:, None, None, None] * decay[None, :12, None, None] + 1e-3 * W
    Wn = W.numpy()
    _, report = factorize(conv_with(W), "tucker2", rank="vbmf")
    r_out = evbmf(Wn.reshape(20, -1)).rank
    r_in = evbmf(np.moveaxis(Wn, 1, 0).reshape(12, -1)).rank
    if report.converted:
        assert report.rank == (max(r_in, 1), max(r_out, 1))
    else:  # pure noise: EVBMF may keep nothing (rank 1 then), or more than pays off
        assert f"rank ({max(r_in, 1)}, {max(r_out, 1)})" in report.note


def test_vbmf_with_tol_or_an_unknown_string_is_refused():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match="rank='vbmf' chooses the rank itself"):
        factorize(conv, "tucker2", rank="vbmf", tol=0.1)
    with pytest.raises(ValueError, match="rank must be an integer, a pair of integers or 'vbmf'"):
        factorize(conv, rank="auto")


# ----------------------------------------------------------------------------------------------
# rank_multiple
# ----------------------------------------------------------------------------------------------


def test_rank_multiple_rounds_up_never_above_the_full_rank():
    torch.manual_seed(18)
    with torch.no_grad():
        W = snn.Tucker2Conv2d(6, 40, 3, rank=(3, 5), dtype=torch.float64).dense_weight()
    layer, report = factorize(conv_with(noisy(W, 0.01, 0)), "tucker2", rank="vbmf", rank_multiple=8)
    assert report.rank == (6, 8)  # 3 -> 8 clipped to C_in = 6; 5 -> 8
    assert "rounded up to (6, 8)" in report.note
    assert layer.conv_core.weight.shape[:2] == (8, 6)
    gen = torch.Generator().manual_seed(19)
    W = torch.randn(16, 8, 3, 3, dtype=torch.float64, generator=gen)
    for tol in (0.3, 0.6, 0.9):
        _, plain = factorize(conv_with(W), "depthwise", tol=tol)
        _, rounded = factorize(conv_with(W), "depthwise", tol=tol, rank_multiple=4)
        assert rounded.rank == min(4 * math.ceil(plain.rank / 4), 9)
        assert rounded.weight_error <= plain.weight_error + 1e-12
    _, rep = factorize(conv_with(W), "spatial", rank=5, rank_multiple=4)
    assert rep.rank == 8
    with pytest.raises(ValueError, match="rank_multiple must be an integer >= 1"):
        factorize(conv_with(W), rank_multiple=0)


# ----------------------------------------------------------------------------------------------
# never a costlier layer reported as converted
# ----------------------------------------------------------------------------------------------


def test_exact_rank_costing_more_returns_the_conv_unconverted():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3)  # depthwise exact rank 9: 9*8*9 + 8*9*12 = 1512 > 864 MACs
    module, report = factorize(conv, "depthwise")
    assert module is conv
    assert not report.converted and report.rank is None
    assert report.macs_before == report.macs_after == 9 * 8 * 12
    assert "would cost more MACs than the conv (1,512 > 864)" in report.note
    # an explicit rank is obeyed, and the note says what it costs
    _, report = factorize(conv, "depthwise", rank=9)
    assert report.converted and report.macs_after == 1512
    assert "costs more MACs than the conv (1,512 > 864)" in report.note


@pytest.mark.parametrize("kind", ["depthwise", "spatial", "cp", "tucker2"])
@pytest.mark.parametrize("rank", [None, "vbmf"])
def test_automatic_ranks_never_give_a_costlier_converted_layer(kind, rank):
    torch.manual_seed(20)
    for cin, cout, k in [(3, 4, 3), (8, 12, 3), (6, 6, (3, 1))]:
        conv = nn.Conv2d(cin, cout, k)
        for multiple in (None, 8):
            module, report = factorize(conv, kind, rank=rank, rank_multiple=multiple)
            if report.converted:
                assert report.macs_after <= report.macs_before, (cin, cout, k, multiple)
            else:
                assert module is conv and "would cost more MACs" in report.note


def plain_hooi(W: np.ndarray, r_in: int, r_out: int, gain: float) -> tuple[int, float]:
    """Textbook HOOI on modes 0 and 1 from the HOSVD input factor (numpy SVDs), stopped like
    sepconv's (a sweep gaining at most ``gain * ||W||**2``): (sweeps, relative error**2)."""
    co, ci, _ = W.shape
    n2 = float((W**2).sum())
    B = np.linalg.svd(np.moveaxis(W, 1, 0).reshape(ci, -1), full_matrices=False)[0][:, :r_in]
    fit = -1.0
    for sweep in range(1, 5001):
        M = np.einsum("oik,ib->okb", W, B).reshape(co, -1)
        A = np.linalg.svd(M, full_matrices=False)[0][:, :r_out]
        Z = np.einsum("oik,oa->aik", W, A)
        B = np.linalg.svd(np.moveaxis(Z, 1, 0).reshape(ci, -1), full_matrices=False)[0][:, :r_in]
        new = float((np.einsum("aik,ib->abk", Z, B) ** 2).sum())
        if new - fit <= gain * n2:
            return sweep, 1 - new / n2
        fit = new
    raise AssertionError("plain HOOI did not converge in 5000 sweeps")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rank", [(12, 16), (28, 28)])
def test_extrapolated_hooi_reaches_plain_hoois_fit_in_fewer_sweeps(seed, rank):
    from sepconv.nn.factorize import _hooi, _svd

    # multilinear rank (20, 20) plus 5 % noise: a spectrum like a trained layer's
    gen = torch.Generator().manual_seed(seed)
    co, ci, K, q = 96, 80, 9, 20
    A = torch.linalg.qr(torch.randn(co, q, dtype=torch.float64, generator=gen))[0]
    B = torch.linalg.qr(torch.randn(ci, q, dtype=torch.float64, generator=gen))[0]
    core = torch.randn(q, q, K, dtype=torch.float64, generator=gen)
    W = torch.einsum("oa,abk,ib->oik", A, core, B)
    noise = torch.randn(W.shape, dtype=torch.float64, generator=gen)
    W = W + 0.05 * W.norm() / math.sqrt(W.numel()) * noise
    plain_sweeps, plain_err2 = plain_hooi(W.numpy(), *rank, gain=1e-12)
    B0 = _svd(W.transpose(0, 1).reshape(1, ci, -1))[0][0][:, : rank[0]]
    _, _, G, sweeps, converged = _hooi(W, B0, rank[1], 500, 1e-12)
    err2 = 1 - float((G * G).sum()) / float((W * W).sum())
    assert converged
    assert err2 <= plain_err2 + 1e-12
    assert sweeps < plain_sweeps  # the tried sweeps counted too
