"""Functional twins of the :mod:`sepconv.nn` layers (weights passed explicitly).

Each function computes exactly what its module computes with the same weights; the modules
hold ``torch.nn.Conv*d`` children so that other tools (BN folding, quantization, profilers)
recognise them. Shapes use ``C_in``, ``C_out``, ``g`` (groups), ``m`` (depth multiplier) and
``r`` (rank per group).

All four run the chain of convolutions a structured layer is made of; the argument
conventions (``stride``, ``padding``, ``dilation``, ``padding_mode``) are those of
``torch.nn.Conv*d`` and apply to the layer as a whole, so that the result has the shape (and,
for weights that are an exact factorization, the values) of the dense convolution. In addition
``padding='same'`` works with strides > 1 (TensorFlow's rule: output ``ceil(n / stride)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .._validate import check_nonnegative_int
from ._args import ConvGeometry

__all__ = [
    "depthwise_separable_conv",
    "low_rank_conv",
    "spatially_separable_conv",
    "tucker2_conv",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_tensor(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_shape(t: Tensor, expected: Sequence[int | None], name: str, dims_text: str) -> None:
    ok = t.ndim == len(expected) and all(
        e is None or s == e for s, e in zip(t.shape, expected, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {dims_text} = {want}, got {tuple(t.shape)}")


def _check_input(x: Tensor, dims: int) -> None:
    if x.ndim != dims + 2:
        spatial = ", ".join("*" * dims)
        raise ValueError(
            f"input must have shape (N, C_in, {spatial}) for a {dims}-D convolution, "
            f"got {tuple(x.shape)}"
        )


def _run(
    x: Tensor,
    geo: ConvGeometry,
    stages: Sequence[tuple[Tensor, int | None, int]],
    bias: Tensor | None,
) -> Tensor:
    """Run ``(weight, axis, groups)`` stages; ``axis`` -1: all axes, ``None``: pointwise.

    Padding and stride of the layer go to the stage that handles each axis. Non-zero padding
    modes and asymmetric or strided ``'same'`` are applied once to the input: padding along one axis
    commutes with every stage that works along the others (and with pointwise stages, which
    have no bias), so this equals padding inside each stage.
    """
    d = geo.dims
    conv = _CONV[d]
    pre = geo.pad_first or (geo.padding_mode != "zeros" and geo.padding != (0,) * d)
    if pre:
        mode = "constant" if geo.padding_mode == "zeros" else geo.padding_mode
        x = F.pad(x, geo.explicit_pads(tuple(x.shape[2:])), mode=mode)
    last = len(stages) - 1
    for i, (w, axis, groups) in enumerate(stages):
        b = bias if i == last else None
        if axis is None:
            x = conv(x, w, b, 1, 0, 1, groups)
            continue
        if axis == -1:
            stride, dilation, padding = geo.stride, geo.dilation, geo.stage_padding(None)
        else:
            stride = geo.axis_tuple(geo.stride, axis, 1)
            dilation = geo.axis_tuple(geo.dilation, axis, 1)
            padding = geo.stage_padding(axis)
        if pre:
            padding = (0,) * d
        x = conv(x, w, b, stride, padding, dilation, groups)
    return x


def _check_tensors(value: Any, name: str, allowed: tuple[int, ...]) -> list[Tensor]:
    """A sequence of one tensor per spatial axis, for ``allowed`` numbers of axes."""
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of tensors, got {type(value).__name__}")
    ts = [_check_tensor(w, f"{name}[{a}]") for a, w in enumerate(value)]
    if len(ts) not in allowed:
        text = "2 or 3" if allowed == (2, 3) else "1 to 3"
        raise ValueError(f"{name} must hold one tensor per spatial axis ({text}), got {len(ts)}")
    return ts


def _spatial_dims(w: Tensor, name: str, shape: str) -> int:
    """The spatial axes (1 to 3) of the weight ``w`` whose ``shape`` ends in ``*kernel_size``."""
    if w.ndim not in (3, 4, 5):
        raise ValueError(
            f"{name} must have shape {shape} with 1 to 3 spatial axes, got {tuple(w.shape)}"
        )
    return w.ndim - 2


def _check_groups(groups: int, cin: int, cout: int) -> None:
    groups = check_nonnegative_int(groups, "groups", minimum=1)
    if cin % groups or cout % groups:
        raise ValueError(f"groups must divide C_in ({cin}) and C_out ({cout}), got {groups}")


def _finish(
    x: Tensor,
    kernel: Sequence[int],
    stages: Sequence[tuple[Tensor, int | None, int]],
    bias: Tensor | None,
    cout: int,
    geometry: tuple[Any, Any, Any, Any],
) -> Tensor:
    """Check ``bias`` (``cout`` values), then run ``stages`` with the layer's ``geometry``
    (``stride, padding, dilation, padding_mode``) for ``kernel``."""
    if bias is not None:
        _check_shape(_check_tensor(bias, "bias"), (cout,), "bias", "(C_out,)")
    geo = ConvGeometry(len(kernel), tuple(kernel), *geometry)
    return _run(x, geo, stages, bias)


def depthwise_separable_conv(
    input: Tensor, weight_dw: Tensor, weight_pw: Tensor, bias: Tensor | None = None, *,
    stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, padding_mode: str = "zeros",
) -> Tensor:  # fmt: skip
    """Depthwise convolution (multiplier ``m``) then a pointwise (1x1) convolution.

    The functional twin of :class:`sepconv.nn.DepthwiseSeparableConv2d` (and its 1-D and 3-D
    versions) without norms or activations.

    Parameters
    ----------
    input : Tensor, shape (N, C_in, *spatial)
        1-D, 2-D or 3-D (the number of spatial axes is read from ``weight_dw``).
    weight_dw : Tensor, shape (C_in * m, 1, *kernel_size)
        Depthwise filters; output channel ``i * m + j`` filters input channel ``i``.
    weight_pw : Tensor, shape (C_out, C_in * m / groups, 1, ...)
        Pointwise weights (grouped when ``groups > 1``).
    bias : Tensor, shape (C_out,), optional
        Added after the pointwise convolution.
    stride, padding, dilation, padding_mode
        As ``torch.nn.Conv*d``; stride and dilation act in the depthwise stage.
    groups : int
        Groups of the pointwise convolution (the depthwise form of a grouped convolution).

    Returns
    -------
    Tensor, shape (N, C_out, *out_spatial)
        Equal to ``conv(input, W)`` with ``W[o, i] = sum_j weight_pw[o, i*m+j] weight_dw[i*m+j]``
        (within each group).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1, 4, 8, 8)
    >>> y = depthwise_separable_conv(x, torch.randn(4, 1, 3, 3), torch.randn(6, 4, 1, 1), padding=1)
    >>> tuple(y.shape)
    (1, 6, 8, 8)
    """
    w_dw = _check_tensor(weight_dw, "weight_dw")
    w_pw = _check_tensor(weight_pw, "weight_pw")
    d = _spatial_dims(w_dw, "weight_dw", "(C_in * m, 1, *kernel_size)")
    x = _check_tensor(input, "input")
    _check_input(x, d)
    cin = x.shape[1]
    if w_dw.shape[1] != 1 or w_dw.shape[0] % cin:
        raise ValueError(
            f"weight_dw must have shape (C_in * m, 1, *kernel_size) with C_in = {cin} "
            f"(the input's channels), got {tuple(w_dw.shape)}"
        )
    mid, cout = w_dw.shape[0], w_pw.shape[0]
    _check_groups(groups, cin, cout)
    text = "(C_out, C_in * m / groups" + ", 1" * d + ")"
    _check_shape(w_pw, (None, mid // groups) + (1,) * d, "weight_pw", text)
    stages = [(w_dw, -1, cin), (w_pw, None, groups)]
    geometry = (stride, padding, dilation, padding_mode)
    return _finish(x, w_dw.shape[2:], stages, bias, cout, geometry)


def spatially_separable_conv(
    input: Tensor, weights: Sequence[Tensor], bias: Tensor | None = None, *,
    stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, padding_mode: str = "zeros",
) -> Tensor:  # fmt: skip
    """A chain of 1-D convolutions, one per spatial axis, through intermediate channels.

    The functional twin of :class:`sepconv.nn.SpatiallySeparableConv2d` and ``...Conv3d``.

    Parameters
    ----------
    input : Tensor, shape (N, C_in, *spatial)
    weights : sequence of Tensor
        One per spatial axis, in axis order; ``weights[a]`` has shape
        ``(C_a, C_{a-1} / groups, 1, ..., k_a, ..., 1)`` (the kernel along axis ``a`` only),
        with ``C_{-1} = C_in`` and the last ``C_a = C_out``. In 2-D: ``k_h x 1`` from ``C_in``
        to ``g * r`` channels, then ``1 x k_w`` to ``C_out``.
    bias : Tensor, shape (C_out,), optional
        Added after the last convolution.
    stride, padding, dilation, groups, padding_mode
        Of the whole layer, as ``torch.nn.Conv*d``; each stage strides, dilates and pads its
        own axis.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1, 3, 9, 9)
    >>> y = spatially_separable_conv(x, [torch.randn(2, 3, 5, 1), torch.randn(4, 2, 1, 5)])
    >>> tuple(y.shape)
    (1, 4, 5, 5)
    """
    x = _check_tensor(input, "input")
    ws = _check_tensors(weights, "weights", (2, 3))
    d = len(ws)
    _check_input(x, d)
    kernel = []
    channels = x.shape[1]
    for a, w in enumerate(ws):
        expected: list[int | None] = [None, None] + [1] * d
        expected[2 + a] = None
        text = "(C, C_prev / groups" + "".join(", k" if b == a else ", 1" for b in range(d)) + ")"
        _check_shape(w, expected, f"weights[{a}]", text)
        if channels % groups or w.shape[0] % groups or w.shape[1] != channels // groups:
            raise ValueError(
                f"weights[{a}] must have C_prev / groups = {channels} / {groups} input channels "
                f"and a multiple of groups output channels, got shape {tuple(w.shape)}"
            )
        kernel.append(w.shape[2 + a])
        channels = w.shape[0]
    stages = [(w, a, groups) for a, w in enumerate(ws)]
    geometry = (stride, padding, dilation, padding_mode)
    return _finish(x, kernel, stages, bias, channels, geometry)


def low_rank_conv(
    input: Tensor, weight_in: Tensor, weights_dw: Sequence[Tensor], weight_out: Tensor,
    bias: Tensor | None = None, *, stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:  # fmt: skip
    """CP (canonical polyadic) form: pointwise, one depthwise 1-D conv per axis, pointwise.

    The functional twin of the :class:`sepconv.nn.LowRankConv2d` family (1-D to 3-D).

    Parameters
    ----------
    input : Tensor, shape (N, C_in, *spatial)
    weight_in : Tensor, shape (g * r, C_in / g, 1, ...)
        First pointwise convolution (``C_in -> g * r``).
    weights_dw : sequence of Tensor
        One per spatial axis; ``weights_dw[a]`` has shape ``(g * r, 1, 1, ..., k_a, ..., 1)``.
    weight_out : Tensor, shape (C_out, r, 1, ...)
        Last pointwise convolution (``g * r -> C_out``).
    bias : Tensor, shape (C_out,), optional
        Added after the last convolution.
    stride, padding, dilation, groups, padding_mode
        Of the whole layer, as ``torch.nn.Conv*d``.

    Notes
    -----
    The dense equivalent is the CP tensor
    ``W[o, i, a_1, ...] = sum_t weight_out[o, t] weight_in[t, i] prod_l weights_dw[l][t, a_l]``.
    Per output pixel it costs ``r (C_in + sum_l k_l + C_out)`` multiply-adds instead of
    ``C_in C_out prod_l k_l / g`` (plus the first pointwise at the input resolution when
    strided).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1, 3, 8, 8)
    >>> dw = [torch.randn(2, 1, 3, 1), torch.randn(2, 1, 1, 3)]
    >>> y = low_rank_conv(x, torch.randn(2, 3, 1, 1), dw, torch.randn(5, 2, 1, 1), padding=1)
    >>> tuple(y.shape)
    (1, 5, 8, 8)
    """
    x = _check_tensor(input, "input")
    w_in = _check_tensor(weight_in, "weight_in")
    w_out = _check_tensor(weight_out, "weight_out")
    dws = _check_tensors(weights_dw, "weights_dw", (1, 2, 3))
    d = len(dws)
    _check_input(x, d)
    cin = x.shape[1]
    _check_groups(groups, cin, w_out.shape[0])
    ones = (1,) * d
    _check_shape(w_in, (None, cin // groups, *ones), "weight_in", "(g * r, C_in / g, 1, ...)")
    mid = w_in.shape[0]
    if mid % groups:
        raise ValueError(
            f"weight_in must have g * r output channels (a multiple of groups={groups}), got {mid}"
        )
    kernel: list[int] = []
    for a, w in enumerate(dws):
        expected: list[int | None] = [mid, 1, *([1] * d)]
        expected[2 + a] = None
        _check_shape(w, expected, f"weights_dw[{a}]", "(g * r, 1, 1, ..., k, ..., 1)")
        kernel.append(w.shape[2 + a])
    _check_shape(w_out, (None, mid // groups, *ones), "weight_out", "(C_out, r, 1, ...)")
    stages = [(w_in, None, groups)] + [(w, a, mid) for a, w in enumerate(dws)]
    stages.append((w_out, None, groups))
    geometry = (stride, padding, dilation, padding_mode)
    return _finish(x, kernel, stages, bias, w_out.shape[0], geometry)


def tucker2_conv(
    input: Tensor, weight_in: Tensor, weight_core: Tensor, weight_out: Tensor,
    bias: Tensor | None = None, *, stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:  # fmt: skip
    """Tucker-2 form: pointwise ``C_in -> g r_in``, the full-kernel core, pointwise ``-> C_out``.

    The functional twin of :class:`sepconv.nn.Tucker2Conv2d` (and its 1-D and 3-D versions).

    Parameters
    ----------
    input : Tensor, shape (N, C_in, *spatial)
        1-D, 2-D or 3-D (the number of spatial axes is read from ``weight_core``).
    weight_in : Tensor, shape (g * r_in, C_in / g, 1, ...)
        First pointwise convolution (``conv_pw1``).
    weight_core : Tensor, shape (g * r_out, r_in, *kernel_size)
        The core convolution (``conv_core``), grouped like the layer; it carries the stride,
        padding and dilation.
    weight_out : Tensor, shape (C_out, r_out, 1, ...)
        Last pointwise convolution (``conv_pw2``).
    bias : Tensor, shape (C_out,), optional
    stride, padding, dilation, groups, padding_mode
        Of the whole layer, as ``torch.nn.Conv*d``.

    Notes
    -----
    Within each group the dense equivalent is
    ``W[o, i, k] = sum_{a, b} weight_out[o, b] weight_core[b, a, k] weight_in[a, i]``; per
    output pixel (stride 1) it costs ``C_in r_in + prod(k) g r_in r_out + r_out C_out``
    multiply-adds.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1, 6, 8, 8)
    >>> w_in, w_core = torch.randn(2, 6, 1, 1), torch.randn(3, 2, 3, 3)
    >>> y = tucker2_conv(x, w_in, w_core, torch.randn(5, 3, 1, 1), padding=1)
    >>> tuple(y.shape)
    (1, 5, 8, 8)
    """
    x = _check_tensor(input, "input")
    w_in = _check_tensor(weight_in, "weight_in")
    w_core = _check_tensor(weight_core, "weight_core")
    w_out = _check_tensor(weight_out, "weight_out")
    d = _spatial_dims(w_core, "weight_core", "(g * r_out, r_in, *kernel_size)")
    _check_input(x, d)
    cin = x.shape[1]
    if not isinstance(groups, int) or groups < 1 or cin % groups or w_out.shape[0] % groups:
        raise ValueError(
            f"groups must be a positive integer dividing C_in ({cin}) and C_out "
            f"({w_out.shape[0]}), got {groups!r}"
        )
    ones = (1,) * d
    _check_shape(w_in, (None, cin // groups, *ones), "weight_in", "(g * r_in, C_in / g, 1, ...)")
    mid_in = w_in.shape[0]
    mid_out = w_core.shape[0]
    if mid_in % groups or mid_out % groups:
        raise ValueError(
            f"weight_in and weight_core must have a multiple of groups={groups} output channels "
            f"(g * r_in, g * r_out), got {mid_in} and {mid_out}"
        )
    _check_shape(
        w_core,
        (mid_out, mid_in // groups, *([None] * d)),
        "weight_core",
        "(g * r_out, r_in" + ", k" * d + ")",
    )
    _check_shape(w_out, (None, mid_out // groups, *ones), "weight_out", "(C_out, r_out, 1, ...)")
    stages = [(w_in, None, groups), (w_core, -1, groups), (w_out, None, groups)]
    geometry = (stride, padding, dilation, padding_mode)
    return _finish(x, w_core.shape[2:], stages, bias, w_out.shape[0], geometry)
