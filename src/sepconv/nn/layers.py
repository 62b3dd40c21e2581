"""Structured convolution layers: depthwise-separable, spatially separable, low-rank (CP),
Tucker-2.

Each layer is a flat module of ``torch.nn.Conv*d`` children named by role (timm style:
``conv_dw``, ``bn1``, ``act1``, ``conv_pw``, ...), optional parts are ``nn.Identity`` so
``forward`` reads top to bottom, and each has a functional twin in
:mod:`sepconv.nn.functional`. ``stride``, ``padding``, ``dilation`` and ``padding_mode`` are
those of the *whole* layer, with ``nn.Conv*d``'s meaning: a layer whose weights are an exact
factorization of a dense convolution's weight gives that convolution's output, shape and
values, for every padding, stride and dilation. ``padding='same'`` also works with strides
(TensorFlow's rule, output ``ceil(n / stride)``; an explicit pad then precedes the convs).

Shape:
    input ``(N, C_in, *spatial)``, output ``(N, C_out, *out_spatial)`` with
    ``out_spatial`` as ``nn.Conv*d`` computes it.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_bool, check_nonnegative_int
from ._args import AXIS_NAMES, ConvGeometry, check_channels, make_activation, make_norm

__all__ = [
    "DepthwiseSeparableConv1d",
    "DepthwiseSeparableConv2d",
    "DepthwiseSeparableConv3d",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankConv3d",
    "SpatiallySeparableConv2d",
    "SpatiallySeparableConv3d",
    "Tucker2Conv1d",
    "Tucker2Conv2d",
    "Tucker2Conv3d",
]

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class SamePad(nn.Module):
    """Explicit ``'same'`` padding computed from the input size (TensorFlow's rule).

    Used for ``padding='same'`` with a stride > 1 (which ``nn.Conv*d`` refuses) or with an
    asymmetric total (even kernels), where ``nn.Conv*d`` would pad a copy itself.
    """

    def __init__(
        self,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.kernel_size: list[int] = list(kernel_size)
        self.stride: list[int] = list(stride)
        self.dilation: list[int] = list(dilation)
        self.mode: str = "constant" if padding_mode == "zeros" else padding_mode

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.kernel_size)
        pads: list[int] = []
        for i in range(n - 1, -1, -1):
            size = x.shape[x.dim() - n + i]
            s = self.stride[i]
            out = (size + s - 1) // s
            total = max((out - 1) * s + (self.kernel_size[i] - 1) * self.dilation[i] + 1 - size, 0)
            pads.append(total // 2)
            pads.append(total - total // 2)
        return F.pad(x, pads, mode=self.mode)

    def extra_repr(self) -> str:
        return f"kernel_size={tuple(self.kernel_size)}, stride={tuple(self.stride)}"


class _StructuredConv(nn.Module):
    """What the structured layers share: the constructor, the geometry (plain attributes,
    TorchScript friendly), the child convs and the repr.

    A layer is declared once per structure and spatial dimensions, e.g.
    ``class LowRankConv2d(_LowRankConvNd, dims=2)``: its structure's base builds the convs
    (``_build``), and writes the docstring (``_docstring``) for ``dims``.
    """

    _dims: int = 2
    __jit_unused_properties__ = ["geometry"]  # noqa: RUF012 - TorchScript reads this name

    def __init_subclass__(cls, dims: int = 0, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if dims:
            cls._dims = dims
            cls.__doc__ = cls._docstring(dims)

    @staticmethod
    def _docstring(dims: int) -> str:
        """The docstring of the layer with ``dims`` spatial axes."""
        raise NotImplementedError

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        rank: int | Sequence[int] = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        groups: int = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        cin, cout, groups = check_channels(in_channels, out_channels, groups)
        geo = ConvGeometry(self._dims, kernel_size, stride, padding, dilation, padding_mode)
        bias = check_bool(bias, "bias")
        self.in_channels = cin
        self.out_channels = cout
        self.groups = groups
        self.kernel_size = geo.kernel_size
        self.stride = geo.stride
        self.padding = geo.padding
        self.dilation = geo.dilation
        self.padding_mode = geo.padding_mode
        self.pad: nn.Module = (
            SamePad(geo.kernel_size, geo.stride, geo.dilation, geo.padding_mode)
            if geo.pad_first
            else nn.Identity()
        )
        self._build(geo, rank, bias, device, dtype)

    def _build(self, geo: ConvGeometry, rank: Any, bias: bool, device: Any, dtype: Any) -> None:
        """Check ``rank`` (the structure's width parameter) and add the child convs."""
        raise NotImplementedError

    @property
    def geometry(self) -> ConvGeometry:
        """The layer's convolution geometry (kernel, stride, padding, dilation, mode)."""
        padding = self.padding
        if isinstance(padding, str) or not isinstance(self.pad, nn.Identity):
            padding = "same"
        return ConvGeometry(
            self._dims, self.kernel_size, self.stride, padding, self.dilation, self.padding_mode
        )

    def _conv(
        self,
        geo: ConvGeometry,
        cin: int,
        cout: int,
        axis: int | None,
        groups: int,
        bias: bool,
        device: Any,
        dtype: Any,
    ) -> Any:
        """A child conv: ``axis`` None pointwise, -1 full kernel, else the kernel along it."""
        d = geo.dims
        if axis is None:
            k: tuple[int, ...] = (1,) * d
            stride, dilation, padding = (1,) * d, (1,) * d, (0,) * d
            mode = "zeros"
        elif axis == -1:
            k, stride, dilation = geo.kernel_size, geo.stride, geo.dilation
            padding = geo.stage_padding(None)
            mode = geo.padding_mode
        else:
            k = geo.axis_tuple(geo.kernel_size, axis, 1)
            stride = geo.axis_tuple(geo.stride, axis, 1)
            dilation = geo.axis_tuple(geo.dilation, axis, 1)
            padding = geo.stage_padding(axis)
            mode = geo.padding_mode
        if padding == (0,) * d:
            mode = "zeros"  # nothing to pad (also when an explicit SamePad precedes)
        return _CONVS[d](
            cin,
            cout,
            k,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=mode,
            device=device,
            dtype=dtype,
        )

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, {self.geometry.extra_repr()}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + self._extra_width()

    def _extra_width(self) -> str:
        """The repr of the structure's width parameter."""
        return f", rank={self.rank}"

    def dense_weight(self) -> Tensor:
        """The weight ``(C_out, C_in / groups, *kernel_size)`` of the equivalent dense conv."""
        raise NotImplementedError

    def dense_bias(self) -> Tensor | None:
        """The bias of the equivalent dense convolution (that of the last stage)."""
        raise NotImplementedError


#: Spatial axes in the shapes of the docstrings, and the example's input size.
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
_EXAMPLE = {1: "9", 2: "8, 8", 3: "5, 5, 5"}


def _doc(cls: str, dims: int, head: str, params: str, notes: str, args: str) -> str:
    """A layer's docstring: ``head``, the parameters all layers share around the structure's
    own ``params``, ``notes``, the shapes and an example building ``cls(4, 6, 3, args)``."""
    spatial = _SPATIAL[dims]
    spatial_out = ", ".join(f"{a}_out" for a in spatial.split(", "))
    size = _EXAMPLE[dims]
    return f"""{head}

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation, padding_mode
        As ``torch.nn.Conv{dims}d``, for the layer as a whole{params}
    device, dtype
        Passed to every submodule.
{notes}
    Shape:
        input ``(N, C_in, {spatial})``, output ``(N, C_out, {spatial_out})``.

    Examples
    --------
    >>> import torch
    >>> from sepconv.nn import {cls}
    >>> layer = {cls}(4, 6, 3, padding=1, {args})
    >>> tuple(layer(torch.randn(2, 4, {size})).shape)
    (2, 6, {size})
    """


def _split(w: Tensor, groups: int) -> Tensor:
    """``(g * a, b, *k)`` -> ``(g, a, b, prod(k))``."""
    return w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)


# ----------------------------------------------------------------------------------------------
# depthwise separable
# ----------------------------------------------------------------------------------------------


def _ds_doc(dims: int) -> str:
    k = " x ".join("k" * dims)
    head = f"""{dims}-D depthwise-separable convolution: depthwise {k} conv, then pointwise 1x1.

    ``conv_dw`` (``C_in -> C_in * depth_multiplier``, ``groups=C_in``, carries stride, padding
    and dilation) -> ``bn1`` -> ``act1`` -> ``conv_pw`` (1x1, ``-> C_out``) -> ``bn2`` ->
    ``act2``; norms and activations are ``nn.Identity`` unless requested."""
    params = f"""; ``padding='same'`` also with
        strides (TensorFlow's rule).
    depth_multiplier : int
        Depthwise filters per input channel (Keras's name); the rank per channel of the
        equivalent dense weight.
    bias : bool
        A bias on the pointwise conv (Keras's ``use_bias``: a depthwise bias followed by a
        linear pointwise conv would only add a constant, so there is none).
    norm : None, 'batch' or callable
        ``norm(num_features)`` builds ``bn1`` and ``bn2`` (e.g. ``nn.BatchNorm{dims}d``).
    activation : None, str or callable
        ``'relu'``, ``'relu6'``, ``'silu'``, ``'gelu'``, ``'hardswish'`` or a callable returning
        a module; builds ``act1`` and ``act2``.
    groups : int
        Groups of the pointwise conv (the depthwise-separable form of a grouped conv)."""
    notes = """
    Notes
    -----
    Per output pixel: ``prod(k) C_in m + C_in m C_out / groups`` multiply-adds instead of
    ``prod(k) C_in C_out / groups`` (:func:`sepconv.cost.depthwise_separable_macs`).
    :func:`sepconv.nn.factorize` builds the best approximation of a trained dense conv.
"""
    cls = f"DepthwiseSeparableConv{dims}d"
    return _doc(cls, dims, head, params, notes, 'norm="batch", activation="relu"')


class _DepthwiseSeparableConvNd(_StructuredConv):
    _docstring = staticmethod(_ds_doc)

    # _StructuredConv's parameters with ``depth_multiplier`` for ``rank``, then the norm and
    # activation that follow each conv (written packed: the shared ones are listed there).
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1, depth_multiplier: int = 1, bias: bool = True,
        padding_mode: str = "zeros", norm: Any = None, activation: Any = None, *,
        groups: int = 1, device: Any = None, dtype: Any = None,
    ) -> None:  # fmt: skip
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            depth_multiplier,
            bias,
            padding_mode,
            groups=groups,
            device=device,
            dtype=dtype,
        )
        mid, d = self.conv_dw.out_channels, self._dims
        self.bn1 = make_norm(norm, mid, d, device, dtype)
        self.act1 = make_activation(activation)
        self.bn2 = make_norm(norm, self.out_channels, d, device, dtype)
        self.act2 = make_activation(activation)

    def _build(self, geo: ConvGeometry, rank: Any, bias: bool, device: Any, dtype: Any) -> None:
        m = check_nonnegative_int(rank, "depth_multiplier", minimum=1)
        self.depth_multiplier = m
        cin, cout = self.in_channels, self.out_channels
        self.conv_dw = self._conv(geo, cin, cin * m, -1, cin, False, device, dtype)
        self.bn1 = nn.Identity()  # norms and activations: set by __init__
        self.act1 = nn.Identity()
        self.conv_pw = self._conv(geo, cin * m, cout, None, self.groups, bias, device, dtype)
        self.bn2 = nn.Identity()
        self.act2 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv_dw(self.pad(x))))
        return self.act2(self.bn2(self.conv_pw(x)))

    def _extra_width(self) -> str:
        m = self.depth_multiplier
        return f", depth_multiplier={m}" if m != 1 else ""

    def dense_weight(self) -> Tensor:
        """``W[o, i] = sum_j conv_pw[o, i*m+j] conv_dw[i*m+j]`` (needs no norm/act between)."""
        if not (isinstance(self.bn1, nn.Identity) and isinstance(self.act1, nn.Identity)):
            raise ValueError(
                "dense_weight needs norm=None and activation=None: with a norm or activation "
                "between the depthwise and pointwise convs there is no equivalent dense conv"
            )
        g, m = self.groups, self.depth_multiplier
        cin_g = self.in_channels // g
        D = self.conv_dw.weight.reshape(g, cin_g, m, -1)
        P = self.conv_pw.weight.reshape(g, self.out_channels // g, cin_g, m)
        W = torch.einsum("goij,gijk->goik", P, D)
        return W.reshape(self.out_channels, cin_g, *self.kernel_size)

    def dense_bias(self) -> Tensor | None:
        return self.conv_pw.bias


class DepthwiseSeparableConv1d(_DepthwiseSeparableConvNd, dims=1): ...


class DepthwiseSeparableConv2d(_DepthwiseSeparableConvNd, dims=2): ...


class DepthwiseSeparableConv3d(_DepthwiseSeparableConvNd, dims=3): ...


# ----------------------------------------------------------------------------------------------
# spatially separable
# ----------------------------------------------------------------------------------------------


def _check_rank(rank: Any, dims: int) -> tuple[int, ...]:
    """Spatial ranks: ``dims - 1`` intermediate widths (an int is used for each)."""
    n = dims - 1
    if isinstance(rank, (tuple, list)):
        if len(rank) != n:
            raise ValueError(
                f"rank must be an integer or a sequence of {n} integers for a {dims}-D layer, "
                f"got {rank!r}"
            )
        return tuple(check_nonnegative_int(r, "rank", minimum=1) for r in rank)
    return (check_nonnegative_int(rank, "rank", minimum=1),) * n


#: What the spatially separable layers' docstrings say per spatial dimensions.
_SS_TEXT = {
    2: {
        "chain": "``k_h x 1`` then ``1 x k_w`` through ``rank`` channels",
        "detail": "``conv_h`` (``C_in -> g * rank``, kernel ``(k_h, 1)``) -> ``conv_w`` "
        "(``-> C_out``, kernel ``(1, k_w)``). Per output pixel (stride 1): "
        "``rank (C_in k_h + C_out k_w)`` multiply-adds instead of ``C_in C_out k_h k_w / g``.",
        "rank_type": "int",
        "rank_note": "",
    },
    3: {
        "chain": "``k_d x 1 x 1``, ``1 x k_h x 1``, ``1 x 1 x k_w``",
        "detail": "``conv_d`` (``C_in -> g * r_1``) -> ``conv_h`` (``-> g * r_2``) -> ``conv_w`` "
        "(``-> C_out``). Per output pixel (stride 1): ``C_in r_1 k_d + g r_1 r_2 k_h + "
        "r_2 C_out k_w`` multiply-adds.",
        "rank_type": "int or (int, int)",
        "rank_note": ": ``(r_1, r_2)`` after the depth and height stages (an int is used for both)",
    },
}


def _ss_doc(dims: int) -> str:
    chain, detail, rank_type, rank_note = _SS_TEXT[dims].values()
    head = f"""{dims}-D spatially separable convolution: {chain}.

    {detail}"""
    params = f""": each stage strides, dilates and
        pads its own axis, so the output shape equals the dense conv's.
    rank : {rank_type}
        Intermediate channels per group{rank_note}.
    bias : bool
        A bias on the last stage (the dense conv's bias).
    groups : int
        Each stage is grouped (``rank`` is per group)."""
    return _doc(f"SpatiallySeparableConv{dims}d", dims, head, params, "", "rank=2")


class _SpatiallySeparableConvNd(_StructuredConv):
    _docstring = staticmethod(_ss_doc)
    if (
        TYPE_CHECKING
    ):  # the stages, added by name (declared for mypy; TorchScript must not see them)
        conv_d: nn.Module
        conv_h: nn.Module
        conv_w: nn.Module

    def _build(self, geo: ConvGeometry, rank: Any, bias: bool, device: Any, dtype: Any) -> None:
        ranks = _check_rank(rank, self._dims)
        self.rank = ranks[0] if len(ranks) == 1 else ranks
        g = self.groups
        widths = [self.in_channels] + [g * r for r in ranks] + [self.out_channels]
        for a, name in enumerate(AXIS_NAMES[self._dims]):
            last = a == self._dims - 1
            conv = self._conv(geo, widths[a], widths[a + 1], a, g, bias and last, device, dtype)
            self.add_module(f"conv_{name}", conv)

    def _stages(self) -> list[Any]:
        return [getattr(self, f"conv_{n}") for n in AXIS_NAMES[self._dims]]

    def dense_weight(self) -> Tensor:
        """The dense weight: the stages' 1-D kernels contracted over intermediate channels."""
        g = self.groups
        mats = [_split(c.weight, g) for c in self._stages()]  # (g, c_out, c_in, k_a)
        letters = iter(string.ascii_lowercase[7:])
        chans = [next(letters) for _ in range(len(mats) + 1)]  # c_in, intermediate..., c_out
        taps = [next(letters) for _ in mats]
        ins = [f"g{chans[a + 1]}{chans[a]}{taps[a]}" for a in range(len(mats))]
        out = f"g{chans[-1]}{chans[0]}{''.join(taps)}"
        W = torch.einsum(",".join(ins) + "->" + out, *mats)
        return W.reshape(self.out_channels, self.in_channels // g, *self.kernel_size)

    def dense_bias(self) -> Tensor | None:
        return self._stages()[-1].bias


class SpatiallySeparableConv2d(_SpatiallySeparableConvNd, dims=2):
    def forward(self, x: Tensor) -> Tensor:
        return self.conv_w(self.conv_h(self.pad(x)))


class SpatiallySeparableConv3d(_SpatiallySeparableConvNd, dims=3):
    def forward(self, x: Tensor) -> Tensor:
        return self.conv_w(self.conv_h(self.conv_d(self.pad(x))))


# ----------------------------------------------------------------------------------------------
# low rank (CP)
# ----------------------------------------------------------------------------------------------


def _dw_name(dims: int, axis: int) -> str:
    return "conv_dw" if dims == 1 else f"conv_dw_{AXIS_NAMES[dims][axis]}"


#: The depthwise stages of the low-rank layers, as their docstrings' first lines name them.
_LR_DW = {1: "depthwise k", 2: "depthwise k_h x 1 and 1 x k_w", 3: "depthwise along d, h and w"}


def _lr_doc(dims: int) -> str:
    dw = _LR_DW[dims]
    names = ", ".join(f"``{_dw_name(dims, a)}``" for a in range(dims))
    head = f"""{dims}-D low-rank (CP) convolution: pointwise, {dw}, pointwise.

    ``conv_pw1`` (1x1, ``C_in -> g * rank``) -> {names} (depthwise, one kernel axis each,
    carrying that axis's stride, padding and dilation) -> ``conv_pw2`` (1x1, ``-> C_out``).
    The equivalent dense weight is a sum of ``rank`` outer products per group (the canonical
    polyadic decomposition of the weight tensor)."""
    params = """.
    rank : int
        CP rank per group.
    bias : bool
        A bias on ``conv_pw2`` (the dense conv's bias).
    groups : int
        Both pointwise convs are grouped (``rank`` is per group)."""
    notes = """
    Notes
    -----
    Per output pixel (stride 1): ``rank (C_in + sum(k) + C_out)`` multiply-adds instead of
    ``prod(k) C_in C_out / groups``.
"""
    return _doc(f"LowRankConv{dims}d", dims, head, params, notes, "rank=2")


class _LowRankConvNd(_StructuredConv):
    _docstring = staticmethod(_lr_doc)
    if TYPE_CHECKING:  # the depthwise convs, added by name (for mypy; not for TorchScript)
        conv_dw: nn.Module
        conv_dw_d: nn.Module
        conv_dw_h: nn.Module
        conv_dw_w: nn.Module

    def _build(self, geo: ConvGeometry, rank: Any, bias: bool, device: Any, dtype: Any) -> None:
        self.rank = check_nonnegative_int(rank, "rank", minimum=1)
        g = self.groups
        mid = g * self.rank
        self.conv_pw1 = self._conv(geo, self.in_channels, mid, None, g, False, device, dtype)
        for a in range(self._dims):
            self.add_module(
                _dw_name(self._dims, a), self._conv(geo, mid, mid, a, mid, False, device, dtype)
            )
        self.conv_pw2 = self._conv(geo, mid, self.out_channels, None, g, bias, device, dtype)

    def _depthwise(self) -> list[Any]:
        return [getattr(self, _dw_name(self._dims, a)) for a in range(self._dims)]

    def dense_weight(self) -> Tensor:
        """``W[o, i, a_1, ...] = sum_t pw2[o, t] pw1[t, i] prod_l dw_l[t, a_l]`` per group."""
        g, r = self.groups, self.rank
        A_in = self.conv_pw1.weight.reshape(g, r, -1)  # (g, r, cin_g)
        A_out = self.conv_pw2.weight.reshape(g, -1, r)  # (g, co_g, r)
        fs = [c.weight.reshape(g, r, -1) for c in self._depthwise()]  # (g, r, k_a)
        taps = string.ascii_lowercase[: self._dims]
        spec = "gor,gri," + ",".join(f"gr{t}" for t in taps) + "->goi" + taps
        W = torch.einsum(spec, A_out, A_in, *fs)
        return W.reshape(self.out_channels, self.in_channels // g, *self.kernel_size)

    def dense_bias(self) -> Tensor | None:
        return self.conv_pw2.bias


class LowRankConv1d(_LowRankConvNd, dims=1):
    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pw1(self.pad(x))
        return self.conv_pw2(self.conv_dw(x))


class LowRankConv2d(_LowRankConvNd, dims=2):
    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pw1(self.pad(x))
        x = self.conv_dw_w(self.conv_dw_h(x))
        return self.conv_pw2(x)


class LowRankConv3d(_LowRankConvNd, dims=3):
    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pw1(self.pad(x))
        x = self.conv_dw_w(self.conv_dw_h(self.conv_dw_d(x)))
        return self.conv_pw2(x)


# ----------------------------------------------------------------------------------------------
# Tucker-2
# ----------------------------------------------------------------------------------------------


def _tucker2_rank(rank: Any) -> tuple[int, int]:
    """``(r_in, r_out)`` from an int (both) or a pair."""
    if isinstance(rank, (tuple, list)):
        if len(rank) != 2:
            raise ValueError(
                f"rank must be an integer or a pair (r_in, r_out) for a Tucker-2 layer, "
                f"got {rank!r}"
            )
        r_in, r_out = (check_nonnegative_int(r, "rank", minimum=1) for r in rank)
        return (r_in, r_out)
    r = check_nonnegative_int(rank, "rank", minimum=1)
    return (r, r)


def _t2_doc(dims: int) -> str:
    k = " x ".join("k" * dims)
    head = f"""{dims}-D Tucker-2 convolution: pointwise, {k} core, pointwise.

    ``conv_pw1`` (1x1, ``C_in -> g * r_in``) -> ``conv_core`` (the full {k} kernel,
    ``g * r_in -> g * r_out``, carrying stride, padding and dilation) -> ``conv_pw2`` (1x1,
    ``-> C_out``). The equivalent dense weight is the core contracted with a factor matrix on
    each channel mode (a Tucker decomposition of the two channel modes, Kim et al. 2016)."""
    params = """.
    rank : int or (int, int)
        ``(r_in, r_out)``: channels per group after the first pointwise conv and after the
        core (an int is used for both).
    bias : bool
        A bias on ``conv_pw2`` (the dense conv's bias).
    groups : int
        All three convs are grouped (ranks are per group)."""
    notes = """
    Notes
    -----
    Per output pixel (stride 1): ``C_in r_in + prod(k) g r_in r_out + r_out C_out``
    multiply-adds (``g`` = ``groups``) instead of ``prod(k) C_in C_out / g``.
"""
    return _doc(f"Tucker2Conv{dims}d", dims, head, params, notes, "rank=(2, 3)")


class _Tucker2ConvNd(_StructuredConv):
    _docstring = staticmethod(_t2_doc)

    def _build(self, geo: ConvGeometry, rank: Any, bias: bool, device: Any, dtype: Any) -> None:
        self.rank: tuple[int, int] = _tucker2_rank(rank)
        g = self.groups
        r_in, r_out = self.rank
        cin, cout = self.in_channels, self.out_channels
        self.conv_pw1 = self._conv(geo, cin, g * r_in, None, g, False, device, dtype)
        self.conv_core = self._conv(geo, g * r_in, g * r_out, -1, g, False, device, dtype)
        self.conv_pw2 = self._conv(geo, g * r_out, cout, None, g, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pw1(self.pad(x))
        return self.conv_pw2(self.conv_core(x))

    def dense_weight(self) -> Tensor:
        """``W[o, i, k] = sum_{a, b} pw2[o, b] core[b, a, k] pw1[a, i]`` per group."""
        g = self.groups
        r_in, r_out = self.rank
        P1 = self.conv_pw1.weight.reshape(g, r_in, -1)  # (g, r_in, cin_g)
        C = self.conv_core.weight.reshape(g, r_out, r_in, -1)  # (g, r_out, r_in, K)
        P2 = self.conv_pw2.weight.reshape(g, -1, r_out)  # (g, co_g, r_out)
        W = torch.einsum("gob,gbak,gai->goik", P2, C, P1)
        return W.reshape(self.out_channels, self.in_channels // g, *self.kernel_size)

    def dense_bias(self) -> Tensor | None:
        return self.conv_pw2.bias


class Tucker2Conv1d(_Tucker2ConvNd, dims=1): ...


class Tucker2Conv2d(_Tucker2ConvNd, dims=2): ...


class Tucker2Conv3d(_Tucker2ConvNd, dims=3): ...


#: The layer class of each structure (:data:`sepconv.nn.KINDS`) by spatial dimensions:
#: ``LAYERS["cp"][2]`` is :class:`LowRankConv2d`.
LAYERS: dict[str, dict[int, Callable[..., _StructuredConv]]] = {
    "depthwise": {
        1: DepthwiseSeparableConv1d,
        2: DepthwiseSeparableConv2d,
        3: DepthwiseSeparableConv3d,
    },
    "spatial": {2: SpatiallySeparableConv2d, 3: SpatiallySeparableConv3d},
    "cp": {1: LowRankConv1d, 2: LowRankConv2d, 3: LowRankConv3d},
    "tucker2": {1: Tucker2Conv1d, 2: Tucker2Conv2d, 3: Tucker2Conv3d},
}
