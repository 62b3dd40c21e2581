"""Closed-form optimal factorization of a trained convolution into a structured layer.

Four structures, each with its error computed exactly (relative Frobenius norm of the weight
difference, ``||W - W_r|| / ||W||``):

``kind='depthwise'`` (per-input-channel truncated SVD)
    For input channel ``i`` the slice ``M_i = W[:, i]`` reshaped to ``C_out x prod(k)`` is what
    the channel contributes. A depthwise-separable layer with depth multiplier ``m`` can give
    each ``M_i`` any matrix of rank <= ``m`` and nothing else, and the channels are independent
    in the Frobenius norm, so the best such layer is the rank-``m`` truncated SVD of every
    ``M_i`` (Eckart–Young): ``error**2 = sum_i sum_{j >= m} s_ij**2 / ||W||**2``. The right
    singular vectors become the depthwise filters, the left ones the pointwise weights (each
    scaled by ``sqrt(s)``). A weight that is depthwise separable has rank-``m`` slices and
    converts exactly.
``kind='spatial'`` (SVD of the spatial rearrangement)
    2-D: ``W[o, i, a, b]`` as the ``(C_in k_h) x (C_out k_w)`` matrix ``M[(i, a), (o, b)]``; a
    ``k_h x 1`` conv ``C_in -> r`` followed by a ``1 x k_w`` conv ``r -> C_out`` realises
    exactly the rank-``r`` matrices, so the truncated SVD is optimal with error from the
    discarded singular values. 3-D (a chain ``k_d``, ``k_h``, ``k_w`` through ``(r_1, r_2)``
    channels): first the ``(C_in k_d) x (C_out k_h k_w)`` SVD truncated at ``r_1``
    (``W ~= U_1 B_1`` with orthonormal ``U_1``), then the 2-D scheme on ``B_1`` viewed as a
    ``(r_1 k_h) x (C_out k_w)`` matrix, truncated at ``r_2``. The two residuals are orthogonal
    (the first lies outside the column space of ``U_1``, the second inside it, and ``U_1``
    preserves norms), so ``error**2 = e_1**2 + e_2**2`` exactly. Each step is optimal given the
    previous one; the chain as a whole is not guaranteed jointly optimal.
``kind='cp'`` (canonical polyadic decomposition)
    ``W ~= sum_t c_t (x) a_t (x) f_1t (x) ... (x) f_dt``: pointwise ``C_in -> r`` (the ``a_t``),
    one depthwise 1-D conv per axis (the ``f``), pointwise ``r -> C_out`` (the ``c_t``).
    Fitted by :mod:`sepconv.factor`'s alternating least squares (the one CP-ALS) from a
    higher-order SVD start; the error is that of the dense difference (a best rank-``r`` CP
    fit need not exist; cancelling terms are reported, by ``sepconv.factor``'s rule).
``kind='tucker2'`` (Tucker decomposition of the two channel modes, Kim et al. 2016)
    ``W ~= G x_0 A x_1 B`` with ``A`` (``C_out x r_out``) and ``B`` (``C_in x r_in``)
    orthonormal and the core ``G`` (``r_out x r_in x k``): a 1x1 conv ``C_in -> r_in``
    (``B^T``), the core conv ``r_in -> r_out`` with the original kernel, stride, padding and
    dilation, and a 1x1 conv ``r_out -> C_out`` (``A``, with the bias). Fitted by higher-order
    orthogonal iteration (HOOI) started from the truncated HOSVD (leading left singular vectors
    of the mode-0 and mode-1 unfoldings), sweeping until ``||G||`` stops growing. The error is
    that of the dense difference; the predicted error is the HOSVD bound
    ``sqrt(sum_{j >= r_out} s0_j**2 + sum_{j >= r_in} s1_j**2) / ||W||`` (``s0``, ``s1``: the
    spectra of the two unfoldings), an upper bound of it (HOOI only improves on the HOSVD),
    while ``sqrt(max(...))`` of the two sums is a lower bound (Eckart–Young on each unfolding).

Rank selection (every kind): an explicit ``rank``; ``tol`` (the smallest rank, or for tucker2
the cheapest pair, whose closed-form error meets it); ``rank='vbmf'`` (analytic empirical
variational Bayesian matrix factorization, Nakajima et al. 2013, on the matrices each kind
truncates, see :func:`evbmf`); by default the smallest exact rank. ``rank_multiple`` rounds the
rank up to a multiple (never above the full rank).

Grouped convolutions are factorized group by group (ranks are per group) into grouped layers.
Bias, stride, padding, dilation and padding mode carry over: the layer has the original's
output shape for every setting, and exactly its output when the factorization is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar
from torch import Tensor, nn

from .. import cost
from .._torch_threads import torch_threads
from .._validate import check_nonnegative_int, check_tol
from ..factor import _cp_als, _CPFit
from ._args import ConvGeometry, same_pads
from .layers import LAYERS, _StructuredConv

__all__ = ["KINDS", "VBMF", "LayerReport", "evbmf", "factorize"]

#: Structures ``factorize`` and ``convert`` can produce.
KINDS = ("depthwise", "spatial", "cp", "tucker2")

Rank = int | tuple[int, int]


@dataclass
class LayerReport:
    """What factorizing one convolution gives and costs.

    Attributes
    ----------
    name : str
        The layer's name in its model (``''`` for :func:`factorize`).
    kind : str
        ``'depthwise'``, ``'spatial'``, ``'cp'`` or ``'tucker2'``.
    rank : int, tuple of int or None
        Depth multiplier (depthwise), intermediate channels per group (spatial; ``(r_1, r_2)``
        in 3-D), CP rank per group or ``(r_in, r_out)`` per group (tucker2); None when the
        layer was left alone.
    converted : bool
        False when the layer was left alone (``note`` says why).
    macs_before, macs_after : int
        Multiply-accumulates (bias additions not included): totals for the calibration or
        example input when one was given (``macs_unit == 'total'``), else per output pixel of
        the layer for a large input (``'per_output_pixel'``: each stage counted at its own
        resolution relative to the output).
    params_before, params_after : int
        Parameters including biases.
    weight_error : float or None
        ``||W - W_f|| / ||W||`` of the returned layer's dense equivalent ``W_f`` (computed, so
        it includes float rounding and, with calibration, the refinement).
    predicted_error : float or None
        The closed-form weight error of the initial factorization, from the discarded singular
        values (depthwise, spatial); for cp the error of the fit; for tucker2 the HOSVD bound
        from the discarded singular values of both unfoldings, an upper bound of the HOOI
        fit's error.
    output_error : float or None
        ``||y_f - y|| / ||y||`` on the calibration batch (None without calibration).
    init_output_error : float or None
        The same before least-squares refinement of the last stage.
    note : str
        Why the layer was left alone, or remarks (degenerate CP fit, clipped rank, ...).
    """

    name: str
    kind: str
    rank: Rank | None
    converted: bool
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    weight_error: float | None = None
    predicted_error: float | None = None
    output_error: float | None = None
    init_output_error: float | None = None
    macs_unit: str = "per_output_pixel"
    note: str = ""

    @property
    def mac_ratio(self) -> float:
        """``macs_before / macs_after``."""
        return self.macs_before / self.macs_after if self.macs_after else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["rank"], tuple):
            d["rank"] = list(d["rank"])
        return d


# ----------------------------------------------------------------------------------------------
# the convolution being factorized
# ----------------------------------------------------------------------------------------------


@dataclass
class _Conv:
    """A validated ``nn.Conv*d`` with its weight as float64 (CPU) and its geometry."""

    module: Any  # the nn.Conv*d
    dims: int
    cin: int
    cout: int
    groups: int
    kernel: tuple[int, ...]
    geo: ConvGeometry
    bias: bool
    W: Tensor
    norm2: float
    device: torch.device
    dtype: torch.dtype

    @property
    def cin_g(self) -> int:
        return self.cin // self.groups

    @property
    def cout_g(self) -> int:
        return self.cout // self.groups

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def is_pointwise(self) -> bool:
        return self.taps == 1

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.cin and self.groups > 1

    def layer_kwargs(self) -> dict[str, Any]:
        padding = self.module.padding  # a tuple of ints, 'same' or 'valid'
        return {
            "kernel_size": self.kernel,
            "stride": self.geo.stride,
            "padding": padding,
            "dilation": self.geo.dilation,
            "padding_mode": self.geo.padding_mode,
            "bias": self.bias,
            "groups": self.groups,
            "device": self.device,
            "dtype": self.dtype,
        }


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _as_conv(conv: Any, name: str = "conv") -> _Conv:
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        raise TypeError(
            f"{name} must be a torch.nn.Conv1d, Conv2d or Conv3d, got the transposed "
            f"convolution {type(conv).__name__} (not supported: factorize its forward twin)"
        )
    if not isinstance(conv, _CONV_TYPES):
        raise TypeError(
            f"{name} must be a torch.nn.Conv1d, Conv2d or Conv3d, got {type(conv).__name__}"
        )
    weight = conv.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{name} is a lazy convolution that has not been initialised yet")
    dims = weight.ndim - 2
    if not weight.is_floating_point() or weight.is_complex():
        raise TypeError(f"{name} must have a real floating-point weight, got {weight.dtype}")
    W = weight.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(W).all():
        raise ValueError(f"{name} has non-finite weights (NaN or Inf)")
    geo = ConvGeometry(
        dims, tuple(conv.kernel_size), conv.stride, conv.padding, conv.dilation, conv.padding_mode
    )
    return _Conv(
        module=conv,
        dims=dims,
        cin=conv.in_channels,
        cout=conv.out_channels,
        groups=conv.groups,
        kernel=geo.kernel_size,
        geo=geo,
        bias=conv.bias is not None,
        W=W,
        norm2=float((W * W).sum()),
        device=weight.device,
        dtype=weight.dtype,
    )


def _exact_tol(dtype: torch.dtype) -> float:
    """Relative weight error that counts as 'exact': float rounding of the weight's dtype.

    A rank-r weight rounded to its dtype is within ``eps / 2`` (relative, Frobenius) of the
    rank-r weight, so ``2 * eps`` leaves a margin of 4 while keeping the promise for half
    precision too (bfloat16: 1.6 %, float16: 0.2 %; ``64 * eps`` let a bfloat16 conv's
    rank-3 fit with 40 % error pass as exact). The factorization runs in float64, whose own
    rounding (``64 * eps`` of float64) is the floor.
    """
    return max(2.0 * torch.finfo(dtype).eps, 64.0 * torch.finfo(torch.float64).eps)


def _int(rank: Rank | None) -> int:
    if not isinstance(rank, int):
        raise TypeError(f"an integer rank is needed here, got {rank!r}")
    return rank


def _pair(rank: Rank | None) -> tuple[int, int]:
    if isinstance(rank, int):
        return (rank, rank)
    if rank is None or len(rank) != 2:
        raise TypeError(f"a pair of ranks is needed here, got {rank!r}")
    return (int(rank[0]), int(rank[1]))


# ----------------------------------------------------------------------------------------------
# costs: stages of each structure, counted with sepconv.cost
# ----------------------------------------------------------------------------------------------

# a stage: (in channels, out channels, kernel, groups, axis) with axis -1 = all, None = 1x1
_Stage = tuple[int, int, tuple[int, ...], int, int | None]


def _stages(c: _Conv, kind: str | None, rank: Rank | None) -> list[_Stage]:
    d, g, k = c.dims, c.groups, c.kernel
    one = (1,) * d

    def along(a: int) -> tuple[int, ...]:
        return tuple(n if b == a else 1 for b, n in enumerate(k))

    if kind is None:
        return [(c.cin, c.cout, k, g, -1)]
    if kind == "depthwise":
        m = _int(rank)
        return [(c.cin, c.cin * m, k, c.cin, -1), (c.cin * m, c.cout, one, g, None)]
    if kind == "spatial":
        ranks = (rank,) if isinstance(rank, int) else tuple(_pair(rank))
        widths = [c.cin, *(g * r for r in ranks), c.cout]
        return [(widths[a], widths[a + 1], along(a), g, a) for a in range(d)]
    if kind == "tucker2":
        r_in, r_out = _pair(rank)
        return [
            (c.cin, g * r_in, one, g, None),
            (g * r_in, g * r_out, k, g, -1),
            (g * r_out, c.cout, one, g, None),
        ]
    r = _int(rank)
    stages: list[_Stage] = [(c.cin, g * r, one, g, None)]
    stages += [(g * r, g * r, along(a), g * r, a) for a in range(d)]
    stages.append((g * r, c.cout, one, g, None))
    return stages


def _costs(
    c: _Conv, kind: str | None, rank: Rank | None, in_size: Sequence[int] | None
) -> tuple[int, int]:
    """(MACs, params) of the dense conv (kind None) or a factorized form.

    With ``in_size`` (spatial input size) the MACs are totals for one sample; without, per
    output pixel for a large input (each stage counted at its resolution relative to the
    output: a stage before the stride along an axis runs ``stride`` times more pixels).
    """
    d = c.dims
    geo = c.geo
    if in_size is None:
        sizes = list(geo.stride)
        out = [1] * d
    else:
        out = list(geo.output_size(in_size))
        sizes = list(in_size)
        if geo.pad_first:  # one explicit pad before the stages
            pads = same_pads(in_size, geo.kernel_size, geo.stride, geo.dilation)
            sizes = [n + lo + hi for n, (lo, hi) in zip(sizes, pads, strict=True)]
    stages = _stages(c, kind, rank)
    macs = params = 0
    for i, (cin, cout, k, groups, axis) in enumerate(stages):
        if axis == -1:
            sizes = list(out)
        elif axis is not None:
            sizes[axis] = out[axis]
        macs += cost.conv_macs(cin, cout, k, dims=d, groups=groups) * math.prod(sizes)
        params += cost.conv_params(
            cin, cout, k, dims=d, groups=groups, bias=c.bias and i == len(stages) - 1
        )
    return macs, params


# ----------------------------------------------------------------------------------------------
# decompositions: errors for every rank, and the layer for a chosen rank
# ----------------------------------------------------------------------------------------------


class _Decomposition:
    kind = ""

    def __init__(self, c: _Conv) -> None:
        self.c = c

    def _layer(self, **rank: Any) -> Any:
        """A new layer of this structure with the conv's geometry (weights set by ``build``)."""
        c = self.c
        return LAYERS[self.kind][c.dims](c.cin, c.cout, **rank, **c.layer_kwargs())

    def max_rank(self) -> Rank:
        raise NotImplementedError

    def error2(self, rank: Rank) -> float:
        """Relative squared weight error of the closed-form factorization at ``rank``."""
        raise NotImplementedError

    def rank_for(self, tol: float, cap: Rank | None) -> Rank:
        raise NotImplementedError

    def candidates(self) -> list[Rank]:
        """Ranks worth considering under a MAC budget (cheapest last)."""
        raise NotImplementedError

    def vbmf_rank(self) -> Rank:
        """The rank EVBMF (:func:`evbmf`) keeps in the matrices this structure truncates."""
        raise NotImplementedError

    def round_up(self, rank: Rank, multiple: int) -> Rank:
        """``rank`` rounded up to a multiple of ``multiple``, never above the full rank."""
        top = self.max_rank()
        if isinstance(rank, tuple):
            assert isinstance(top, tuple)
            return (
                min(_ceil_to(rank[0], multiple), top[0]),
                min(_ceil_to(rank[1], multiple), top[1]),
            )
        return min(_ceil_to(rank, multiple), _int(top))

    def check_rank(self, rank: Any) -> Rank:
        top = self.max_rank()
        r = check_nonnegative_int(rank, "rank", minimum=1)
        if r > _int(top):
            raise ValueError(self._range_text(top, rank))
        return r

    def _range_text(self, top: Any, rank: Any) -> str:
        return (
            f"rank must be between 1 and {top} for kind={self.kind!r} on a conv with weight "
            f"shape {tuple(self.c.W.shape)}, got {rank!r}"
        )

    def build(self, rank: Rank) -> _StructuredConv:
        raise NotImplementedError

    def notes(self, rank: Rank) -> str:
        return ""


def _tail2(S: Tensor) -> Tensor:
    """``t[r] = sum_{j >= r} S[..., j]**2`` summed over the leading axes, for r = 0..q."""
    s2 = (S * S).reshape(-1, S.shape[-1]).sum(0)
    tail = torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0])
    return torch.cat([tail, tail.new_zeros(1)])


def _svd(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of a (batch of) matrices, on ``LINALG_THREADS`` threads."""
    with torch_threads(LINALG_THREADS):
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return U, S, Vh


def _ceil_to(r: int, multiple: int) -> int:
    return -(-r // multiple) * multiple


def _vbmf_max(S: Tensor, shape: tuple[int, int]) -> int:
    """Largest EVBMF rank over a batch of spectra (last axis) of matrices of ``shape``, at
    least 1 (EVBMF keeps nothing of a matrix it takes for pure noise)."""
    spectra = S.reshape(-1, S.shape[-1]).numpy()
    return max(1, *(_evbmf_spectrum(s, shape).rank for s in spectra))


def _smallest(tail: Tensor, bound: float, top: int) -> int:
    """Smallest r in 1..top with tail[r] <= bound (top if none)."""
    for r in range(1, top + 1):
        if float(tail[r]) <= bound:
            return r
    return top


def _set(conv: Any, weight: Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))


class _DepthwiseDecomposition(_Decomposition):
    kind = "depthwise"

    def __init__(self, c: _Conv) -> None:
        super().__init__(c)
        g, co_g, cin_g = c.groups, c.cout_g, c.cin_g
        M = c.W.reshape(g, co_g, cin_g, -1).permute(0, 2, 1, 3).reshape(c.cin, co_g, -1)
        self.U, self.S, self.Vh = _svd(M)
        self.tail = _tail2(self.S) / max(c.norm2, 1e-300)

    def max_rank(self) -> int:
        return int(self.S.shape[-1])

    def error2(self, rank: Rank) -> float:
        return float(self.tail[_int(rank)])

    def rank_for(self, tol: float, cap: Rank | None) -> int:
        top = self.max_rank() if cap is None else _int(cap)
        return _smallest(self.tail, tol * tol, top)

    def candidates(self) -> list[Rank]:
        return list(range(self.max_rank(), 0, -1))

    def vbmf_rank(self) -> int:
        # one depth multiplier for all channels: the largest rank any channel's matrix keeps
        return _vbmf_max(self.S, (self.c.cout_g, self.c.taps))

    def build(self, rank: Rank) -> _StructuredConv:
        c, m = self.c, _int(rank)
        layer = self._layer(depth_multiplier=m)
        sq = self.S[:, :m].sqrt()
        D = self.Vh[:, :m, :] * sq[..., None]  # (C_in, m, K)
        P = self.U[:, :, :m] * sq[:, None, :]  # (C_in, co_g, m)
        P = P.reshape(c.groups, c.cin_g, c.cout_g, m).permute(0, 2, 1, 3)
        _set(layer.conv_dw, D.to(c.dtype))
        _set(layer.conv_pw, P.to(c.dtype))
        _copy_bias(layer.conv_pw, c)
        return layer


def _copy_bias(conv: Any, c: _Conv) -> None:
    if c.bias:
        with torch.no_grad():
            conv.bias.copy_(c.module.bias.detach())


class _SpatialDecomposition(_Decomposition):
    kind = "spatial"

    def __init__(self, c: _Conv) -> None:
        super().__init__(c)
        if c.dims == 1:
            raise ValueError(
                "kind='spatial' needs a 2-D or 3-D convolution (a 1-D kernel has no spatial "
                "factorization; use kind='depthwise' or 'cp')"
            )
        g, co_g, cin_g, k = c.groups, c.cout_g, c.cin_g, c.kernel
        Wg = c.W.reshape(g, co_g, cin_g, *k)
        # (C_in k_0) x (C_out k_1 ... k_{d-1}), per group
        M1 = Wg.permute(0, 2, 3, 1, *range(4, 3 + c.dims)).reshape(g, cin_g * k[0], -1)
        self.U1, self.S1, self.Vh1 = _svd(M1)
        self.tail1 = _tail2(self.S1) / max(c.norm2, 1e-300)
        self._second: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    # 3-D: the 2-D scheme on B_1 = S_1 V_1^T, per r_1
    def _stage2(self, r1: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if r1 not in self._second:
            c = self.c
            g, co_g, (_, kh, kw) = c.groups, c.cout_g, c.kernel
            B1 = self.S1[:, :r1, None] * self.Vh1[:, :r1, :]  # (g, r1, co_g kh kw)
            M2 = B1.reshape(g, r1, co_g, kh, kw).permute(0, 1, 3, 2, 4).reshape(g, r1 * kh, -1)
            U2, S2, Vh2 = _svd(M2)
            self._second[r1] = (U2, S2, Vh2, _tail2(S2) / max(c.norm2, 1e-300))
        return self._second[r1]

    def max_rank(self) -> Rank:
        q1 = int(self.S1.shape[-1])
        if self.c.dims == 2:
            return q1
        return (q1, min(q1 * self.c.kernel[1], self.c.cout_g * self.c.kernel[2]))

    def _range_text(self, top: Any, rank: Any) -> str:
        if self.c.dims == 2:
            return super()._range_text(top, rank)
        return (
            f"rank must be (r_1, r_2) with 1 <= r_1 <= {top[0]} and 1 <= r_2 <= "
            f"min(r_1 * k_h, C_out / groups * k_w) (<= {top[1]}) for kind='spatial' on a conv "
            f"with weight shape {tuple(self.c.W.shape)}, got {rank!r}"
        )

    def check_rank(self, rank: Any) -> Rank:
        if self.c.dims == 2:
            return super().check_rank(rank)
        top = self.max_rank()
        assert isinstance(top, tuple)
        if isinstance(rank, (tuple, list)):
            if len(rank) != 2:
                raise ValueError(self._range_text(top, rank))
            r1, r2 = (check_nonnegative_int(r, "rank", minimum=1) for r in rank)
        else:
            r1 = r2 = check_nonnegative_int(rank, "rank", minimum=1)
        if r1 > top[0] or r2 > min(r1 * self.c.kernel[1], self.c.cout_g * self.c.kernel[2]):
            raise ValueError(self._range_text(top, rank))
        return (r1, r2)

    def error2(self, rank: Rank) -> float:
        if self.c.dims == 2:
            return float(self.tail1[_int(rank)])
        r1, r2 = _pair(rank)
        return float(self.tail1[r1]) + float(self._stage2(r1)[3][r2])

    def rank_for(self, tol: float, cap: Rank | None) -> Rank:
        if self.c.dims == 2:
            top2 = _int(self.max_rank() if cap is None else cap)
            return _smallest(self.tail1, tol * tol, top2)
        # 3-D: half the squared budget to each step (documented), both capped by ``cap``
        top = self.max_rank()
        assert isinstance(top, tuple)
        cap1, cap2 = top if cap is None else _pair(cap)
        r1 = _smallest(self.tail1, tol * tol / 2, min(cap1, top[0]))
        tail2 = self._stage2(r1)[3]
        q2 = min(cap2, tail2.shape[0] - 1)
        r2 = _smallest(tail2, tol * tol - float(self.tail1[r1]), q2)
        return (r1, r2)

    def candidates(self) -> list[Rank]:
        top = self.max_rank()
        if self.c.dims == 2:
            return list(range(_int(top), 0, -1))
        assert isinstance(top, tuple)
        q1 = top[0]
        r1s = sorted({max(1, round(q1 * f)) for f in (1, 0.75, 0.5, 0.375, 0.25, 0.125, 0.0625)})
        out: list[Rank] = []
        for r1 in sorted(r1s, reverse=True):
            q2 = self._stage2(r1)[3].shape[0] - 1
            out += [(r1, r2) for r2 in range(q2, 0, -1)]
        return out

    def vbmf_rank(self) -> Rank:
        c = self.c
        k = c.kernel
        r1 = _vbmf_max(self.S1, (c.cin_g * k[0], c.cout_g * math.prod(k[1:])))
        if c.dims == 2:
            return r1
        r2 = _vbmf_max(self._stage2(r1)[1], (r1 * k[1], c.cout_g * k[2]))
        return (r1, r2)

    def round_up(self, rank: Rank, multiple: int) -> Rank:
        if self.c.dims == 2:
            return super().round_up(rank, multiple)
        r1, r2 = _pair(rank)
        top = self.max_rank()
        assert isinstance(top, tuple)
        r1 = min(_ceil_to(r1, multiple), top[0])
        bound2 = min(r1 * self.c.kernel[1], self.c.cout_g * self.c.kernel[2])
        return (r1, min(_ceil_to(r2, multiple), bound2))

    def build(self, rank: Rank) -> _StructuredConv:
        c = self.c
        g, co_g, cin_g, k = c.groups, c.cout_g, c.cin_g, c.kernel
        layer = self._layer(rank=rank)
        if c.dims == 2:
            r = _int(rank)
            sq = self.S1[:, :r].sqrt()
            A = (self.U1[:, :, :r] * sq[:, None, :]).reshape(g, cin_g, k[0], r)
            B = (self.Vh1[:, :r, :] * sq[:, :, None]).reshape(g, r, co_g, k[1])
            _set(layer.conv_h, A.permute(0, 3, 1, 2).to(c.dtype))
            _set(layer.conv_w, B.permute(0, 2, 1, 3).to(c.dtype))
            _copy_bias(layer.conv_w, c)
            return layer
        r1, r2 = _pair(rank)
        U2, S2, Vh2, _ = self._stage2(r1)
        # balance: conv_d gets sqrt(s_1) per channel, conv_h the inverse on its inputs
        b = self.S1[:, :r1].sqrt()
        inv = torch.where(b > 0, 1.0 / torch.where(b > 0, b, 1.0), torch.zeros_like(b))
        A = (self.U1[:, :, :r1] * b[:, None, :]).reshape(g, cin_g, k[0], r1)
        sq2 = S2[:, :r2].sqrt()
        Bh = (U2[:, :, :r2] * sq2[:, None, :]).reshape(g, r1, k[1], r2) * inv[:, :, None, None]
        Cw = (Vh2[:, :r2, :] * sq2[:, :, None]).reshape(g, r2, co_g, k[2])
        _set(layer.conv_d, A.permute(0, 3, 1, 2).to(c.dtype))
        _set(layer.conv_h, Bh.permute(0, 3, 1, 2).to(c.dtype))
        _set(layer.conv_w, Cw.permute(0, 2, 1, 3).to(c.dtype))
        _copy_bias(layer.conv_w, c)
        return layer


# -- CP ------------------------------------------------------------------------------------------


def cp_als(
    T: Tensor, rank: int, *, max_iter: int = 300, target: float = 0.0, seed: int = 0
) -> _CPFit:
    """CP fit of a tensor by :mod:`sepconv.factor`'s alternating least squares (its one CP-ALS,
    with its stopping and degeneracy rules), started from a higher-order SVD.

    The start takes the leading left singular vectors of each mode unfolding (seeded random
    columns where a mode has fewer than ``rank``). ALS stops at ``max_iter`` sweeps, when the
    relative error reaches ``target``, when it stalls, or when the terms start to cancel (an
    initialisation for fine-tuning, not a certified optimum). The fit's factors ``A`` are
    float64 numpy arrays, one ``(T.shape[n], rank)`` per mode; its ``error`` is relative.
    """
    gen = torch.Generator().manual_seed(seed)
    A: list[Tensor] = []
    with torch_threads(LINALG_THREADS):
        for n in range(T.ndim):
            u = _leading_left(T.movedim(n, 0).reshape(T.shape[n], -1))
            if u.shape[1] >= rank:
                A.append(u[:, :rank].clone())
            else:
                extra = torch.randn(T.shape[n], rank - u.shape[1], generator=gen, dtype=T.dtype)
                A.append(torch.cat([u, extra / math.sqrt(T.shape[n])], 1))
    G = T.detach().to(dtype=torch.float64).numpy()
    start = [a.to(dtype=torch.float64).numpy() for a in A]
    if not G.any():  # nothing to fit: zero terms, zero error
        return _CPFit([M * 0 for M in start], 0.0, 0.0, 0.0)
    return _cp_als(G, start, target, max_iter=max_iter)


#: Threads for the factorizations' dense linear algebra (SVD, eigh, solves, CP sweeps). One:
#: with the MKL build of torch, multithreaded LAPACK calls on these small and medium matrices
#: measured 2-50x *slower* than one thread (thread hand-off dominates), e.g. a 512x512 eigh
#: 0.07 s on one thread and 0.25-7 s on two.
LINALG_THREADS = 1


def _leading_left(X: Tensor) -> Tensor:
    """Left singular vectors of a wide matrix (by singular value), via its small Gram matrix."""
    if X.shape[0] > X.shape[1]:
        return torch.linalg.svd(X, full_matrices=False)[0]
    _, evecs = torch.linalg.eigh(X @ X.T)
    return evecs.flip(1)


class _CPDecomposition(_Decomposition):
    kind = "cp"

    def __init__(self, c: _Conv, *, max_iter: int = 300) -> None:
        super().__init__(c)
        self.max_iter = max_iter
        self.blocks = list(c.W.reshape(c.groups, c.cout_g, c.cin_g, *c.kernel))
        self.norms = [float(T.norm()) for T in self.blocks]
        self.fits: dict[int, list[_CPFit]] = {}

    def max_rank(self) -> int:
        shape = (self.c.cout_g, self.c.cin_g, *self.c.kernel)
        return max(1, math.prod(shape) // max(shape))

    def fit(self, rank: int, target: float = 0.0) -> list[_CPFit]:
        if rank not in self.fits:
            self.fits[rank] = [
                cp_als(T, rank, max_iter=self.max_iter, target=target) for T in self.blocks
            ]
        return self.fits[rank]

    def error2(self, rank: Rank) -> float:
        fits = self.fit(_int(rank))
        error2 = sum((f.error * n) ** 2 for f, n in zip(fits, self.norms, strict=True))
        return error2 / max(self.c.norm2, 1e-300)

    def rank_for(self, tol: float, cap: Rank | None) -> int:
        top = self.max_rank() if cap is None else _int(cap)
        ok = lambda r: self.error2(r) <= tol * tol  # noqa: E731
        lo, hi = 0, 1  # ok(hi) unknown; find a feasible rank by doubling, then bisect
        while hi < top and not ok(hi):
            lo, hi = hi, min(2 * hi, top)
        if not ok(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        return hi

    def candidates(self) -> list[Rank]:
        top = self.max_rank()
        ranks = {top}
        r = 1
        while r < top:
            ranks.add(r)
            r *= 2
        return sorted(ranks, reverse=True)

    def vbmf_rank(self) -> int:
        # CP rank >= every multilinear rank: the largest EVBMF rank of the two channel-mode
        # unfoldings (a lower estimate; CP has no matrix it truncates)
        c = self.c
        r = 1
        for T in self.blocks:
            M0 = T.reshape(c.cout_g, -1)
            M1 = T.transpose(0, 1).reshape(c.cin_g, -1)
            for M in (M0, M1):
                with torch_threads(LINALG_THREADS):
                    S = torch.linalg.svdvals(M)
                r = max(r, _vbmf_max(S, (M.shape[0], M.shape[1])))
        return min(r, self.max_rank())

    def notes(self, rank: Rank) -> str:
        fits = self.fit(_int(rank))
        if any(f.degenerate for f in fits):  # sepconv.factor's rule (one definition)
            worst = max(f.cancellation for f in fits)
            return (
                f"degenerate CP fit: terms cancel (sum of term norms {worst:.0f}x the norm of "
                "their sum); a best fit of this rank may not exist"
            )
        return ""

    def build(self, rank: Rank) -> _StructuredConv:
        c, r = self.c, _int(rank)
        layer = self._layer(rank=r)
        pw1: list[Tensor] = []
        pw2: list[Tensor] = []
        dws: list[list[Tensor]] = [[] for _ in range(c.dims)]
        n = c.dims + 2
        for fit in self.fit(r):
            factors = [torch.from_numpy(M) for M in fit.A]
            norms = [a.norm(dim=0) for a in factors]
            lam = torch.ones(r, dtype=torch.float64)
            for nn_ in norms:
                lam = lam * nn_
            share = lam ** (1.0 / n)
            unit = [
                a / torch.where(nrm > 0, nrm, 1.0) * share
                for a, nrm in zip(factors, norms, strict=True)
            ]
            pw2.append(unit[0])  # (co_g, r)
            pw1.append(unit[1].T)  # (r, cin_g)
            for a in range(c.dims):
                dws[a].append(unit[2 + a].T)  # (r, k_a)
        _set(layer.conv_pw1, torch.cat(pw1).to(c.dtype))
        _set(layer.conv_pw2, torch.cat(pw2).to(c.dtype))
        for a, conv in enumerate(layer._depthwise()):
            _set(conv, torch.cat(dws[a]).to(c.dtype))
        _copy_bias(layer.conv_pw2, c)
        return layer


# -- Tucker-2 ------------------------------------------------------------------------------------


@dataclass
class _Tucker2Fit:
    """One group's HOOI fit: ``T ~= G x_0 A x_1 B`` (orthonormal ``A``, ``B``)."""

    A: Tensor  # (co_g, r_out)
    B: Tensor  # (cin_g, r_in)
    G: Tensor  # (r_out, r_in, K)
    sweeps: int
    converged: bool


def _leading(M: Tensor, r: int) -> Tensor:
    """An orthonormal basis of the ``r`` leading left singular vectors of ``M`` (``n x m``),
    completed by an orthonormal basis of the rest of the space when ``M`` has rank below
    ``r``: the top eigenvectors of the ``n x n`` Gram matrix when ``m >= n`` (cheaper than the
    SVD); when ``r <= m < n`` the span of ``M V`` (``V``: the top eigenvectors of the small
    ``m x m`` Gram matrix ``M^T M``), orthonormalized by QR (3x faster than the SVD on the
    ``512 x 144`` matrices of a rank-16 HOOI sweep); else the full SVD."""
    n, m = M.shape
    if m >= n:
        return torch.linalg.eigh(M @ M.T)[1][:, n - r :]
    if r <= m:
        V = torch.linalg.eigh(M.T @ M)[1][:, m - r :]
        return torch.linalg.qr(M @ V)[0]
    return torch.linalg.svd(M, full_matrices=True)[0][:, :r]


def _hooi(
    T: Tensor, B: Tensor, r_out: int, max_sweeps: int, gain: float
) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    """HOOI on the first two modes of ``T`` (``co x ci x K``) from the mode-1 factor ``B``,
    with a safeguarded extrapolation along the path of ``B``.

    A sweep sets ``A`` to the leading left singular vectors of ``T x_1 B^T`` (mode-0
    unfolding), then ``B`` to those of ``T x_0 A^T`` (mode-1 unfolding); each step maximises
    ``||G||**2 = ||T||**2 - ||T - T_hat||**2`` given the other factor, so the fit never gets
    worse. After every sweep one more is tried from ``B`` pushed on along its last move
    (``orth(B + beta (B - B_prev R))``, ``R`` aligning the two bases), in the spirit of the
    line searches that speed up CP-ALS: kept only where its fit is higher, ``beta`` growing
    on success and shrinking on failure. Measured (float64, one thread): the same fits in
    0.4-0.5x the sweeps on low-rank-plus-noise weights ((64, 64) of a 256-channel layer:
    199 sweeps in 5.5 s instead of 500 in 11.8 s), and better fits at the sweep cap on
    Gaussian weights. Stops when a sweep gains at most ``gain * ||T||**2``, or after
    ``max_sweeps`` sweeps, the tried ones counted.
    """
    co, ci, K = T.shape
    r_in = B.shape[1]
    n2 = float((T * T).sum())
    T0 = T.reshape(co, ci * K)
    Tk = T.permute(0, 2, 1).reshape(co * K, ci)  # rows (o, k)

    def sweep(B: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        A = _leading((Tk @ B).reshape(co, K * r_in), r_out)  # T x_1 B^T, mode 0
        Z = (A.T @ T0).reshape(r_out, ci, K)  # T x_0 A^T
        Bn = _leading(Z.transpose(0, 1).reshape(ci, r_out * K), r_in)
        G = (Z.transpose(1, 2) @ Bn).transpose(1, 2)  # (r_out, r_in, K)
        return A, Bn, G, float((G * G).sum())

    fit, beta, sweeps = -1.0, 1.0, 0
    A = G = T.new_zeros(0)
    with torch_threads(LINALG_THREADS):
        while sweeps < max_sweeps:
            A, Bn, G, new = sweep(B)
            sweeps += 1
            if fit >= 0 and sweeps < max_sweeps:
                u, _, vt = torch.linalg.svd(B.T @ Bn)  # B (u vt): B's basis nearest Bn's
                At, Bt, Gt, tried = sweep(torch.linalg.qr(Bn + beta * (Bn - B @ (u @ vt)))[0])
                sweeps += 1
                if tried > new:
                    A, Bn, G, new, beta = At, Bt, Gt, tried, beta * 1.5
                else:
                    beta = max(1.0, beta / 2)
            if new - fit <= gain * n2:
                return A, Bn, G.contiguous(), sweeps, True
            fit, B = new, Bn
    return A, B, G.contiguous(), max_sweeps, False


def _tucker2_closed_form(
    T: Tensor, U0: Tensor, U1: Tensor, r_in: int, r_out: int
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The optimal Tucker-2 factors in closed form when one rank is large enough, else None.

    ``||G||**2 <= ||A^T T_(0)||**2 <= sum_{j < r_out} s0_j**2`` for any orthonormal ``A``,
    ``B`` (``T_(0)``: the mode-0 unfolding, ``s0`` its singular values). If ``r_in`` is at
    least the rank of ``Z = T x_0 A^T`` in mode 1 (at most ``min(C_in, r_out K)``), ``B`` can
    keep all of ``Z``: with ``A`` the leading ``r_out`` left singular vectors of ``T_(0)``
    (the HOSVD factor) both bounds are attained, the global optimum, which HOOI only
    approaches sweep by sweep (hundreds of sweeps for Gaussian weights). The same holds with
    the modes exchanged (``r_out >= min(C_out, r_in K)``).
    """
    co, ci, K = T.shape
    with torch_threads(LINALG_THREADS):
        if r_in >= min(ci, r_out * K):
            A = U0[:, :r_out]
            Z = (A.T @ T.reshape(co, ci * K)).reshape(r_out, ci, K)
            B = _leading(Z.transpose(0, 1).reshape(ci, r_out * K), r_in)
        elif r_out >= min(co, r_in * K):
            B = U1[:, :r_in]
            Tk = T.permute(0, 2, 1).reshape(co * K, ci)
            A = _leading((Tk @ B).reshape(co, K * r_in), r_out)
            Z = (A.T @ T.reshape(co, ci * K)).reshape(r_out, ci, K)
        else:
            return None
        G = (Z.transpose(1, 2) @ B).transpose(1, 2)  # (r_out, r_in, K)
    return A, B, G.contiguous()


class _Tucker2Decomposition(_Decomposition):
    kind = "tucker2"

    #: HOOI sweeps at most, and the gain of ``||G||**2 / ||W||**2`` per sweep at or below
    #: which the fit counts as no longer improving.
    MAX_SWEEPS = 500
    MIN_GAIN = 1e-12

    def __init__(self, c: _Conv) -> None:
        super().__init__(c)
        g, co, ci = c.groups, c.cout_g, c.cin_g
        self.T = c.W.reshape(g, co, ci, -1)
        self.U0, self.S0, _ = _svd(self.T.reshape(g, co, -1))  # mode 0: C_out x (C_in K)
        self.U1, self.S1, _ = _svd(self.T.transpose(1, 2).reshape(g, ci, -1))  # mode 1
        self.tail0 = _tail2(self.S0) / max(c.norm2, 1e-300)
        self.tail1 = _tail2(self.S1) / max(c.norm2, 1e-300)
        self.fits: dict[tuple[int, int], list[_Tucker2Fit]] = {}

    def max_rank(self) -> tuple[int, int]:
        return (int(self.S1.shape[-1]), int(self.S0.shape[-1]))

    def _range_text(self, top: Any, rank: Any) -> str:
        return (
            f"rank must be (r_in, r_out) with 1 <= r_in <= {top[0]} and 1 <= r_out <= "
            f"{top[1]}, or an integer between 1 and {max(top)} (used for both, clipped to each) "
            f"for kind='tucker2' on a conv with weight shape {tuple(self.c.W.shape)}, "
            f"got {rank!r}"
        )

    def check_rank(self, rank: Any) -> tuple[int, int]:
        top = self.max_rank()
        if isinstance(rank, (tuple, list)):
            if len(rank) != 2:
                raise ValueError(self._range_text(top, rank))
            r_in, r_out = (check_nonnegative_int(r, "rank", minimum=1) for r in rank)
            if r_in > top[0] or r_out > top[1]:
                raise ValueError(self._range_text(top, rank))
            return (r_in, r_out)
        r = check_nonnegative_int(rank, "rank", minimum=1)
        if r > max(top):
            raise ValueError(self._range_text(top, rank))
        return (min(r, top[0]), min(r, top[1]))

    def error2(self, rank: Rank) -> float:
        """The HOSVD bound (squared, relative): an upper bound of the HOOI fit's error."""
        r_in, r_out = _pair(rank)
        return float(self.tail1[r_in]) + float(self.tail0[r_out])

    def fit(self, rank: Rank) -> list[_Tucker2Fit]:
        r_in, r_out = _pair(rank)
        if (r_in, r_out) not in self.fits:
            fits = []
            for T, U0, U1 in zip(self.T, self.U0, self.U1, strict=True):
                exact = _tucker2_closed_form(T, U0, U1, r_in, r_out)
                if exact is not None:  # the global optimum: no sweeps needed
                    fits.append(_Tucker2Fit(*exact, 0, True))
                    continue
                B0 = U1[:, :r_in]
                A, B, G, sweeps, ok = _hooi(T, B0, r_out, self.MAX_SWEEPS, self.MIN_GAIN)
                fits.append(_Tucker2Fit(A, B, G, sweeps, ok))
            self.fits[(r_in, r_out)] = fits
        return self.fits[(r_in, r_out)]

    def fit_error2(self, rank: Rank) -> float:
        """Relative squared error of the HOOI fit: ``(||W||**2 - sum ||G||**2) / ||W||**2``."""
        kept = sum(float((f.G * f.G).sum()) for f in self.fit(rank))
        return max(self.c.norm2 - kept, 0.0) / max(self.c.norm2, 1e-300)

    def rank_for(self, tol: float, cap: Rank | None) -> tuple[int, int]:
        """The pair with the fewest MACs whose HOSVD bound meets ``tol`` (within ``cap``)."""
        top = self.max_rank()
        cap_in, cap_out = top if cap is None else _pair(cap)
        budget = tol * tol
        best: tuple[tuple[int, float], tuple[int, int]] | None = None
        for r_out in range(1, cap_out + 1):
            rest = budget - float(self.tail0[r_out])
            if rest < 0:
                continue
            r_in = _smallest(self.tail1, rest, cap_in)
            if float(self.tail1[r_in]) > rest:
                continue
            key = (_costs(self.c, self.kind, (r_in, r_out), None)[0], self.error2((r_in, r_out)))
            if best is None or key < best[0]:
                best = (key, (r_in, r_out))
        return (cap_in, cap_out) if best is None else best[1]

    def candidates(self) -> list[Rank]:
        q_in, q_out = self.max_rank()
        fractions = (1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.1875, 0.125, 0.0625, 0.03125)
        ins = sorted({max(1, round(q_in * f)) for f in fractions}, reverse=True)
        outs = sorted({max(1, round(q_out * f)) for f in fractions}, reverse=True)
        pairs: list[Rank] = [(a, b) for a in ins for b in outs]
        return sorted(pairs, key=lambda r: _costs(self.c, self.kind, r, None)[0], reverse=True)

    def vbmf_rank(self) -> tuple[int, int]:
        c = self.c
        r_out = _vbmf_max(self.S0, (c.cout_g, c.cin_g * c.taps))
        r_in = _vbmf_max(self.S1, (c.cin_g, c.cout_g * c.taps))
        return (r_in, r_out)

    def notes(self, rank: Rank) -> str:
        fits = self.fit(rank)
        if all(f.converged for f in fits):
            return ""
        return (
            f"HOOI stopped after {self.MAX_SWEEPS} sweeps while the fit was still improving "
            f"(by more than {self.MIN_GAIN:g} of ||W||^2 per sweep)"
        )

    def build(self, rank: Rank) -> _StructuredConv:
        c = self.c
        r_in, r_out = _pair(rank)
        layer = self._layer(rank=(r_in, r_out))
        fits = self.fit((r_in, r_out))
        B = torch.stack([f.B for f in fits])  # (g, cin_g, r_in)
        G = torch.stack([f.G for f in fits])  # (g, r_out, r_in, K)
        A = torch.stack([f.A for f in fits])  # (g, co_g, r_out)
        _set(layer.conv_pw1, B.transpose(1, 2).to(c.dtype))
        _set(layer.conv_core, G.to(c.dtype))
        _set(layer.conv_pw2, A.to(c.dtype))
        _copy_bias(layer.conv_pw2, c)
        return layer


# -- EVBMF ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VBMF:
    """Rank chosen by analytic empirical VBMF (:func:`evbmf`).

    Attributes
    ----------
    rank : int
        Singular values above ``threshold``.
    sigma2 : float
        The noise variance per entry (estimated, or the one given).
    threshold : float
        ``sqrt(M sigma2 (1 + tau) (1 + alpha / tau))`` with ``alpha = L / M`` (``L <= M`` the
        matrix's sides) and ``tau`` the positive zero of
        ``log(1 + t) + alpha log(1 + t / alpha) - t``.
    """

    rank: int
    sigma2: float
    threshold: float


def _tau_bar(alpha: float) -> float:
    """The positive zero of ``log(1 + t) + alpha log(1 + t / alpha) - t`` (0 < alpha <= 1)."""

    def f(t: float) -> float:
        return math.log1p(t) + alpha * math.log1p(t / alpha) - t

    lo, hi = 1e-3 * alpha, 1.0
    while f(hi) > 0:
        lo, hi = hi, 2 * hi
    return float(brentq(f, lo, hi, xtol=1e-15, rtol=1e-15))


def _evbmf_spectrum(s: Any, shape: tuple[int, int], sigma2: float | None = None) -> VBMF:
    """EVBMF from all ``min(shape)`` singular values ``s`` of a matrix of ``shape``."""
    L, M = sorted(int(n) for n in shape)
    g2 = np.sort(np.asarray(s, dtype=np.float64) ** 2)[::-1]
    if g2.shape != (L,):
        raise ValueError(f"need all {L} singular values of a {shape} matrix, got {g2.shape}")
    alpha = L / M
    tau = _tau_bar(alpha)
    xbar = (1 + tau) * (1 + alpha / tau)
    if sigma2 is None:
        sigma2 = _evbmf_sigma2(g2, L, M, alpha, xbar)
    if sigma2 <= 0:
        return VBMF(int(np.count_nonzero(g2)), 0.0, 0.0)
    threshold = math.sqrt(M * sigma2 * xbar)
    return VBMF(int(np.count_nonzero(g2 > threshold * threshold)), float(sigma2), threshold)


def _evbmf_sigma2(g2: Any, L: int, M: int, alpha: float, xbar: float) -> float:
    """The noise variance minimising the EVB free energy (Nakajima et al. 2013, 2015).

    With ``x_h = g2_h / (M sigma2)`` the free energy is, up to constants,
    ``sum_h psi0(x_h) + sum_{x_h > xbar} psi1(x_h)`` with ``psi0(x) = x - log x`` and
    ``psi1(x) = log(tau(x) + 1) + alpha log(tau(x) / alpha + 1) - tau(x)``,
    ``tau(x) = (x - 1 - alpha + sqrt((x - 1 - alpha)**2 - 4 alpha)) / 2``. It is smooth between
    the points where some ``x_h`` crosses ``xbar``; each piece inside the bounds of the
    estimator (Nakajima et al. 2015, Theorem 8) is minimised and the best kept.
    """
    total = float(g2.sum())
    if total <= 0:
        return 0.0
    hi = total / (L * M)
    h_ub = math.ceil(L / (1 + alpha)) - 1  # at most this many components can be signal
    lo = max(g2[h_ub] / (M * xbar), float(g2[h_ub:].sum()) / (M * (L - h_ub)))
    lo = max(lo, hi * (64 * np.finfo(np.float64).eps) ** 2)  # a rounding-level floor
    if lo >= hi:
        return hi
    log_g2 = np.log(np.maximum(g2, 1e-300))

    def omega(u: float) -> float:  # u = log(sigma2); psi0 without its constant -log(g2 / M)
        x = np.exp(log_g2 - u) / M
        value = float(x.sum()) + L * u
        z = x[x > xbar]
        if z.size:
            t = 0.5 * (z - (1 + alpha) + np.sqrt((z - (1 + alpha)) ** 2 - 4 * alpha))
            value += float(np.sum(np.log1p(t) + alpha * np.log1p(t / alpha) - t))
        return value

    u_lo, u_hi = math.log(lo), math.log(hi)
    cuts = log_g2 - math.log(M * xbar)
    edges = np.unique(np.concatenate([[u_lo, u_hi], cuts[(cuts > u_lo) & (cuts < u_hi)]]))
    best_u = min(edges, key=omega)
    best = omega(best_u)
    for a, b in itertools.pairwise(edges):
        res = minimize_scalar(omega, bounds=(a, b), method="bounded", options={"xatol": 1e-10})
        if res.fun < best:
            best, best_u = float(res.fun), float(res.x)
    return math.exp(best_u)


def evbmf(matrix: Any, sigma2: float | None = None) -> VBMF:
    """Rank of a noisy low-rank matrix by analytic empirical VBMF.

    The global analytic solution of empirical variational Bayesian matrix factorization
    (Nakajima, Sugiyama, Babacan and Tomioka, JMLR 2013), as Kim et al. (2016) use it to pick
    Tucker-2 ranks: with ``Y = X + E``, ``E`` i.i.d. Gaussian of variance ``sigma2``, EVB keeps
    exactly the singular values above ``sigma * sqrt(M (1 + tau) (1 + alpha / tau))``
    (``L <= M`` the sides, ``alpha = L / M``, ``tau`` the positive zero of
    ``log(1 + t) + alpha log(1 + t / alpha) - t``; ``tau = 2.5129...`` for a square matrix).
    Without ``sigma2`` the noise variance is estimated by minimising the EVB free energy
    between the bounds of Nakajima et al. (2015).

    Parameters
    ----------
    matrix : array_like or Tensor, 2-D
        Real, finite.
    sigma2 : float, optional
        The noise variance, when known.

    Returns
    -------
    VBMF
        ``rank``, ``sigma2`` (estimated or given) and the singular-value ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> from sepconv.nn import evbmf
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 60)) * 3
    >>> Y += 0.1 * rng.standard_normal((40, 60))
    >>> v = evbmf(Y)
    >>> v.rank, round(v.sigma2 ** 0.5, 2)
    (3, 0.1)
    """
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().cpu().double().numpy()
    Y = np.asarray(matrix)
    if Y.ndim != 2 or Y.size == 0 or not np.isrealobj(Y):
        raise ValueError(f"matrix must be a non-empty real 2-D array, got shape {Y.shape}")
    Y = Y.astype(np.float64)
    if not np.isfinite(Y).all():
        raise ValueError("matrix must be finite (it has NaN or Inf)")
    if sigma2 is not None:
        if not isinstance(sigma2, (int, float)) or not math.isfinite(sigma2) or sigma2 <= 0:
            raise ValueError(f"sigma2 must be a finite number > 0 or None, got {sigma2!r}")
        sigma2 = float(sigma2)
    s = np.linalg.svd(Y, compute_uv=False)
    return _evbmf_spectrum(s, (Y.shape[0], Y.shape[1]), sigma2)


_DECOMPOSITIONS: dict[str, type[_Decomposition]] = {
    "depthwise": _DepthwiseDecomposition,
    "spatial": _SpatialDecomposition,
    "cp": _CPDecomposition,
    "tucker2": _Tucker2Decomposition,
}


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return str(kind)


def _decompose(c: _Conv, kind: str) -> _Decomposition:
    return _DECOMPOSITIONS[kind](c)


# ----------------------------------------------------------------------------------------------
# calibration: least squares on the last stage
# ----------------------------------------------------------------------------------------------


def _check_calibration(calibration: Any, c: _Conv, name: str = "calibration") -> Tensor:
    if not isinstance(calibration, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor batch of the layer's inputs, "
            f"got {type(calibration).__name__}"
        )
    spatial = ", ".join("*" * c.dims)
    if (
        calibration.ndim != c.dims + 2
        or calibration.shape[1] != c.cin
        or calibration.shape[0] < 1
        or not calibration.is_floating_point()
    ):
        raise ValueError(
            f"{name} must be a floating-point batch of shape (N, {c.cin}, {spatial}) for this "
            f"{c.dims}-D conv with {c.cin} input channels, got {tuple(calibration.shape)} "
            f"({calibration.dtype})"
        )
    if not bool(torch.isfinite(calibration).all()):
        bad = int((~torch.isfinite(calibration)).sum())
        raise ValueError(
            f"{name} must be finite: {bad} of its {calibration.numel()} values are NaN or Inf "
            "(they would turn the fitted weights into NaN)"
        )
    x = calibration.detach().to(device=c.device, dtype=c.dtype)
    try:
        c.geo.output_size(tuple(x.shape[2:]))
        with torch.no_grad():
            c.module(x[:1])
    except RuntimeError as exc:
        raise ValueError(
            f"{name} of spatial size {tuple(x.shape[2:])} does not fit this conv "
            f"(kernel {c.kernel}, dilation {c.geo.dilation}): {exc}"
        ) from None
    return x


def _relative(a: Tensor, b: Tensor) -> float:
    den = float(b.double().norm())
    num = float((a.double() - b.double()).norm())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def _last_stage(layer: Any) -> Any:
    if hasattr(layer, "conv_pw2"):
        return layer.conv_pw2
    if hasattr(layer, "conv_pw"):
        return layer.conv_pw
    return layer.conv_w


#: Calibration rows (output pixels x batch) needed per refitted weight of the last stage.
MIN_ROWS_PER_WEIGHT = 4
#: Ridge of the refit towards the closed-form weights, relative to the Gram's mean diagonal.
REFIT_RIDGE = 1e-3


def _refine(layer: Any, c: _Conv, x: Tensor, y: Tensor, *, chunk: int = 8) -> str:
    """Least-squares refit of the last stage (and bias) so the layer's output matches ``y``.

    The last stage is linear in its weights: its output is ``features @ theta`` where the
    features are the taps of its input (one per input channel and kernel tap, extracted by a
    one-hot depthwise conv with the stage's stride, padding and dilation). The normal
    equations are accumulated in float64 over chunks of the batch, per group, and solved
    with a small ridge towards the closed-form weights (``REFIT_RIDGE`` of the Gram's mean
    diagonal), which keeps the refit from chasing noise along directions the batch barely
    excites. With fewer than ``MIN_ROWS_PER_WEIGHT`` rows per weight the fit would be
    underdetermined or overfitted: the closed form is kept and a note returned.
    """
    last = _last_stage(layer)
    captured: list[Tensor] = []
    handle = last.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0]))
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk):
                layer(x[start : start + chunk])
    finally:
        handle.remove()
    cin = last.in_channels
    g = last.groups
    taps = math.prod(last.kernel_size)
    extract = type(last)(
        cin,
        cin * taps,
        last.kernel_size,
        stride=last.stride,
        padding=last.padding,
        dilation=last.dilation,
        groups=cin,
        bias=False,
        padding_mode=last.padding_mode,
    ).to(device=c.device, dtype=torch.float64)
    with torch.no_grad():
        eye = torch.eye(taps, dtype=torch.float64, device=c.device)
        extract.weight.copy_(eye.repeat(cin, 1).reshape(extract.weight.shape))
    cg, og = cin // g, c.cout // g
    n_feat = cg * taps + (1 if c.bias else 0)
    rows = x.shape[0] * math.prod(y.shape[2:])
    if rows < MIN_ROWS_PER_WEIGHT * n_feat:
        return (
            f"calibration too small to refit ({rows} output pixels for {n_feat} weights per "
            f"output channel, need {MIN_ROWS_PER_WEIGHT}x): closed form kept"
        )
    G = torch.zeros(g, n_feat, n_feat, dtype=torch.float64, device=c.device)
    R = torch.zeros(g, n_feat, og, dtype=torch.float64, device=c.device)
    with torch.no_grad():
        for i, z in enumerate(captured):
            start = i * chunk
            feats = extract(z.double())  # (n, cin * taps, *out)
            target = y[start : start + z.shape[0]].double()
            F_ = feats.movedim(1, -1).reshape(-1, g, cg * taps)
            if c.bias:
                F_ = torch.cat([F_, F_.new_ones(F_.shape[0], g, 1)], 2)
            Y_ = target.movedim(1, -1).reshape(-1, g, og)
            G += torch.einsum("pga,pgb->gab", F_, F_)
            R += torch.einsum("pga,pgo->gao", F_, Y_)
        w0 = last.weight.detach().double().reshape(g, og, cg * taps).transpose(1, 2)
        if c.bias:
            w0 = torch.cat([w0, last.bias.detach().double().reshape(g, 1, og)], 1)
        lam = REFIT_RIDGE * G.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)[:, None, None]
        eye_f = torch.eye(n_feat, dtype=torch.float64, device=c.device)
        with torch_threads(LINALG_THREADS):
            theta = torch.linalg.solve(G + lam * eye_f, R + lam * w0)  # (g, n_feat, og)
        w = theta[:, : cg * taps, :].permute(0, 2, 1).reshape(c.cout, cg, *last.kernel_size)
        last.weight.copy_(w.to(last.weight.dtype))
        if c.bias:
            last.bias.copy_(theta[:, -1, :].reshape(c.cout).to(last.bias.dtype))
    return ""


# ----------------------------------------------------------------------------------------------
# public
# ----------------------------------------------------------------------------------------------


def _weight_error(layer: _StructuredConv, c: _Conv) -> float:
    with torch.no_grad():
        Wf = layer.dense_weight().detach().to(device="cpu", dtype=torch.float64)
    return _relative(Wf, c.W)


def _factorize(
    c: _Conv,
    dec: _Decomposition,
    rank: Rank,
    x: Tensor | None,
    y: Tensor | None,
    name: str = "",
    note: str = "",
) -> tuple[_StructuredConv, LayerReport]:
    layer = dec.build(rank)
    layer.train(c.module.training)
    predicted = math.sqrt(max(dec.error2(rank), 0.0))
    notes = [n for n in (note, dec.notes(rank)) if n]
    init_out = out_err = None
    if x is not None and y is not None:
        with torch.no_grad():
            init_out = _relative(layer(x), y)
        skipped = _refine(layer, c, x, y)
        if skipped:
            notes.append(skipped)
        with torch.no_grad():
            out_err = _relative(layer(x), y)
    in_size = None if x is None else tuple(x.shape[2:])
    mb, pb = _costs(c, None, None, in_size)
    ma, pa = _costs(c, dec.kind, rank, in_size)
    report = LayerReport(
        name=name,
        kind=dec.kind,
        rank=rank,
        converted=True,
        macs_before=mb,
        macs_after=ma,
        params_before=pb,
        params_after=pa,
        weight_error=_weight_error(layer, c),
        predicted_error=predicted,
        output_error=out_err,
        init_output_error=init_out,
        macs_unit="per_output_pixel" if in_size is None else "total",
        note="; ".join(notes),
    )
    return layer, report


def factorize(
    conv: nn.Module,
    kind: str = "depthwise",
    *,
    rank: int | Sequence[int] | str | None = None,
    tol: float | None = None,
    rank_multiple: int | None = None,
    calibration: Tensor | None = None,
) -> tuple[nn.Module, LayerReport]:
    """Best structured replacement of a trained convolution, with its exact error.

    Parameters
    ----------
    conv : torch.nn.Conv1d, Conv2d or Conv3d
        The trained convolution (any groups, stride, padding, dilation, padding mode, bias).
        Transposed convolutions and other modules raise ``TypeError``.
    kind : {'depthwise', 'spatial', 'cp', 'tucker2'}
        Depthwise-separable (per-input-channel truncated SVD; ``rank`` is the depth
        multiplier), spatially separable (SVD of the ``(C_in k_h) x (C_out k_w)``
        rearrangement; 2-D and 3-D), CP (pointwise, depthwise 1-D per axis, pointwise) or
        Tucker-2 (pointwise ``C_in -> r_in``, the full kernel ``r_in -> r_out``, pointwise
        ``r_out -> C_out``; HOOI from the HOSVD).
    rank : int, (int, int) or 'vbmf', optional
        The rank (per group). ``(r_1, r_2)`` for a 3-D spatial chain and ``(r_in, r_out)`` for
        tucker2 (an int: both; for tucker2 clipped to each mode's maximum, with a note).
        ``'vbmf'``: the rank analytic empirical VBMF (:func:`evbmf`) keeps in the matrices the
        structure truncates: every input channel's ``C_out x prod(k)`` matrix (depthwise: the
        largest of their ranks), the spatial rearrangement(s), the two channel-mode unfoldings
        (tucker2: ``r_out`` from mode 0, ``r_in`` from mode 1; cp: the larger of the two, a
        lower estimate of the CP rank); groups: the largest over groups.
    tol : float, optional
        Largest relative weight error ``||W - W_f|| / ||W||``: the smallest rank meeting it
        (capped by ``rank`` when both are given). 3-D spatial: ``r_1`` takes half the squared
        budget, ``r_2`` the rest. cp: found by doubling and bisection over fitted ranks.
        tucker2: the pair with the fewest MACs whose HOSVD bound meets it (the fit's error is
        then at most ``tol``). With ``calibration`` the rank is chosen by ``tol`` first; the
        refit then lowers the output error and may move the weight error above ``tol``.
    rank_multiple : int, optional
        Round the rank (each component of a pair) up to a multiple of this (e.g. 8 for
        hardware-friendly channel counts), never above the full rank.
    calibration : Tensor, shape (N, C_in, *spatial), optional
        A batch of the layer's real inputs. The last stage (the pointwise conv for depthwise,
        cp and tucker2, the ``1 x k_w`` conv for spatial) and the bias are then refitted by
        least squares to minimise the error of the *output* on this batch; the report gives
        the output error before and after, and the weight error of the final layer.

    With neither ``rank`` nor ``tol``: the smallest rank that reproduces the weight to float
    rounding of its dtype (for cp, the smallest rank found by the search). A rank chosen this
    way or by ``'vbmf'`` (after ``rank_multiple``) whose layer would cost more MACs than the
    conv is not used: the conv itself is returned, unconverted, with the reason in the report's
    note. An explicit ``rank`` or ``tol`` is obeyed; the note then says when the layer costs
    more than the conv.

    Returns
    -------
    module : DepthwiseSeparableConvNd, SpatiallySeparableConvNd, LowRankConvNd, Tucker2ConvNd
        On the conv's device and dtype, in its training mode; same output shape as ``conv``
        for every input. ``conv`` itself when it was left alone (``report.converted`` False).
    report : LayerReport
        Rank, MACs and parameters before/after, ``weight_error`` (computed from the dense
        difference) and ``predicted_error`` (from the discarded singular values; they agree
        to float rounding without calibration, except tucker2, where it is an upper bound),
        output errors with calibration.

    Raises
    ------
    TypeError
        ``conv`` is not a (non-transposed) convolution; ``calibration`` is not a tensor.
    ValueError
        Unknown ``kind``; ``rank`` out of range or an unknown string; ``rank='vbmf'`` with
        ``tol``; ``tol`` negative; ``rank_multiple`` not an integer >= 1; ``calibration`` of
        the wrong shape; ``kind='spatial'`` on a 1-D conv.

    Examples
    --------
    >>> import torch
    >>> from sepconv.nn import factorize
    >>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    >>> layer, report = factorize(conv, "depthwise", rank=2)
    >>> type(layer).__name__, report.rank, report.macs_before, report.macs_after
    ('DepthwiseSeparableConv2d', 2, 4608, 1312)
    >>> abs(report.weight_error - report.predicted_error) < 1e-6
    True
    >>> layer, report = factorize(conv, "tucker2", rank=(8, 16))
    >>> type(layer).__name__, report.macs_after, report.weight_error <= report.predicted_error
    ('Tucker2Conv2d', 1792, True)
    """
    c = _as_conv(conv)
    kind = _check_kind(kind)
    tol = check_tol(tol)
    multiple = (
        None
        if rank_multiple is None
        else check_nonnegative_int(rank_multiple, "rank_multiple", minimum=1)
    )
    x = None if calibration is None else _check_calibration(calibration, c)
    dec = _decompose(c, kind)
    notes: list[str] = []
    if isinstance(rank, str):
        if rank != "vbmf":
            raise ValueError(f"rank must be an integer, a pair of integers or 'vbmf', got {rank!r}")
        if tol is not None:
            raise ValueError(
                "rank='vbmf' chooses the rank itself: give rank='vbmf' or tol, not both "
                f"(got tol={tol!r})"
            )
        chosen: Rank = dec.vbmf_rank()
        auto = "VBMF"
    else:
        cap = None if rank is None else dec.check_rank(rank)
        if isinstance(rank, int) and isinstance(cap, tuple) and cap != (rank, rank):
            notes.append(f"rank {rank} clipped to {cap}")
        if tol is None and cap is not None:
            chosen = cap
            auto = ""
        else:
            target = _exact_tol(c.dtype) if tol is None else max(tol, _exact_tol(c.dtype))
            chosen = dec.rank_for(target, cap)
            auto = "exact" if tol is None else ""
    if multiple is not None:
        rounded = dec.round_up(chosen, multiple)
        if rounded != chosen:
            notes.append(f"rank {chosen} rounded up to {rounded} (rank_multiple={multiple})")
        chosen = rounded
    in_size = None if x is None else tuple(x.shape[2:])
    macs_dense, params_dense = _costs(c, None, None, in_size)
    macs = _costs(c, kind, chosen, in_size)[0]
    if macs > macs_dense:
        why = (
            f"the {kind} form at the {auto} rank {chosen} would cost more MACs than the conv "
            f"({macs:,} > {macs_dense:,})"
        )
        if auto:
            report = LayerReport(
                name="",
                kind=kind,
                rank=None,
                converted=False,
                macs_before=macs_dense,
                macs_after=macs_dense,
                params_before=params_dense,
                params_after=params_dense,
                macs_unit="per_output_pixel" if in_size is None else "total",
                note=f"left alone: {why}; give rank= or tol= to trade accuracy for MACs",
            )
            return conv, report
        notes.append(f"costs more MACs than the conv ({macs:,} > {macs_dense:,})")
    y = None
    if x is not None:
        with torch.no_grad():
            y = c.module(x)
    layer, report = _factorize(c, dec, chosen, x, y, note="; ".join(notes))
    return layer, report
