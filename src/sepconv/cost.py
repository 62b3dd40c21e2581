"""Cost model: multiply-accumulates (MACs) and parameters of every way to run a kernel or layer.

Two families of formulas, both exact counts except the FFT model:

Filters (per output element, any kernel shape ``(k_0, ..., k_{d-1})``)
    direct ``prod(k)``; separable ``sum(k)``; rank ``r`` ``r * sum(k)``; FFT a model
    ``(M / N) * (FFT_MACS_PER_LOG2 * log2(M) + 2)`` for ``N`` outputs computed through a padded
    transform of ``M`` elements. In 2-D a ``k x k`` kernel costs ``k**2`` vs ``2k``; in 3-D
    ``K**3`` vs ``3K``, a ratio of ``K**2 / 3`` (over 30 for ``K = 10``).

Convolution layers (per output pixel, ``K = prod(kernel_size)``)
    standard ``K * C_in/groups * C_out``; depthwise (depth multiplier ``m``) ``K * C_in * m``;
    pointwise ``C_in * C_out``; depthwise-separable ``K * C_in * m + C_in * m * C_out``; the ratio
    standard / depthwise-separable is ``C_out * K / (K + C_out)`` for ``m = 1`` (independent of
    ``C_in``). Per-pixel costs do not depend on stride; totals multiply by the output size.

Examples
--------
>>> from sepconv import cost
>>> cost.kernel_macs((7, 7)), cost.kernel_macs((7, 7), "separable")
(49, 14)
>>> cost.conv_macs(64, 128, 3), cost.depthwise_separable_macs(64, 128, 3)
(73728, 8768)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._validate import check_bool, check_nonnegative_int, per_axis

__all__ = [
    "FFT_MACS_PER_LOG2",
    "METHODS",
    "LayerCost",
    "compare_conv",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "depthwise_separable_macs",
    "depthwise_separable_params",
    "ds_ratio",
    "kernel_costs",
    "kernel_macs",
]

#: Filter execution methods the cost model knows.
METHODS = ("direct", "separable", "lowrank", "fft")

#: MACs per element per log2(size) of a forward + inverse real FFT pair (a model; the planner
#: may calibrate it per machine).
FFT_MACS_PER_LOG2 = 2.5


def _shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {shape!r}") from None
    if not dims:
        raise ValueError(f"{name} must have at least one axis, got {shape!r}")
    return tuple(check_nonnegative_int(n, name, minimum=1) for n in dims)


def kernel_macs(
    shape: Sequence[int] | int,
    method: str = "direct",
    *,
    rank: int = 1,
    data_shape: Sequence[int] | None = None,
) -> float:
    """Multiply-accumulates per output element to filter with a kernel of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        Kernel shape, one entry per filtered axis.
    method : {'direct', 'separable', 'lowrank', 'fft'}
        ``separable`` is ``lowrank`` with ``rank=1``.
    rank : int, optional
        Number of separable terms for ``lowrank``.
    data_shape : sequence of int, optional
        Shape of the filtered axes of the data; required for ``fft``.

    Returns
    -------
    int or float
        Exact integer counts for direct/separable/lowrank; a float model for fft.

    Examples
    --------
    >>> kernel_macs((10, 10, 10)), kernel_macs((10, 10, 10), "separable")
    (1000, 30)
    >>> kernel_macs((5, 5), "lowrank", rank=2)
    20
    >>> round(kernel_macs((63, 63), "fft", data_shape=(512, 512)), 1)
    60.1
    """
    k = _shape(shape)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    rank = check_nonnegative_int(rank, "rank", minimum=1)
    if rank != 1 and method != "lowrank":  # a silently ignored rank reads as a wrong count
        raise ValueError(
            f"rank applies to method='lowrank' (separable is rank 1), got rank={rank} with "
            f"method={method!r}"
        )
    if method == "direct":
        return math.prod(k)
    if method == "separable":
        return sum(k)
    if method == "lowrank":
        return rank * sum(k)
    if data_shape is None:
        raise ValueError("data_shape is required for method='fft' (its cost depends on it)")
    n = _shape(data_shape, "data_shape")
    if len(n) != len(k):
        raise ValueError(
            f"data_shape must have one entry per kernel axis ({len(k)}), got {tuple(n)}"
        )
    padded = math.prod(ni + ki - 1 for ni, ki in zip(n, k, strict=True))
    outputs = math.prod(n)
    return padded / outputs * (FFT_MACS_PER_LOG2 * math.log2(padded) + 2.0)


def kernel_costs(
    shape: Sequence[int] | int, *, rank: int = 1, data_shape: Sequence[int] | None = None
) -> dict[str, float]:
    """MACs per output element of every method (fft only when ``data_shape`` is given).

    Examples
    --------
    >>> kernel_costs((7, 7), rank=2)
    {'direct': 49, 'separable': 14, 'lowrank': 28}
    """
    out: dict[str, float] = {
        "direct": kernel_macs(shape),
        "separable": kernel_macs(shape, "separable"),
        "lowrank": kernel_macs(shape, "lowrank", rank=rank),
    }
    if data_shape is not None:
        out["fft"] = kernel_macs(shape, "fft", data_shape=data_shape)
    return out


# ----------------------------------------------------------------------------------------------
# convolution layers
# ----------------------------------------------------------------------------------------------


def _ksize(kernel_size: Any, dims: int) -> tuple[int, ...]:
    dims = check_nonnegative_int(dims, "dims", minimum=1)
    return tuple(
        check_nonnegative_int(k, "kernel_size", minimum=1)
        for k in per_axis(kernel_size, dims, "kernel_size")
    )


def check_channels(in_channels: Any, out_channels: Any, groups: Any = 1) -> tuple[int, int, int]:
    """Channel counts >= 1 that ``groups`` divides (also checked here for ``sepconv.nn``)."""
    cin = check_nonnegative_int(in_channels, "in_channels", minimum=1)
    cout = check_nonnegative_int(out_channels, "out_channels", minimum=1)
    groups = check_nonnegative_int(groups, "groups", minimum=1)
    if cin % groups or cout % groups:
        raise ValueError(
            f"groups must divide in_channels ({cin}) and out_channels ({cout}), got {groups}"
        )
    return cin, cout, groups


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    groups: int = 1,
) -> int:
    """MACs per output pixel of a (grouped) convolution: ``prod(k) * C_in/groups * C_out``.

    Examples
    --------
    >>> conv_macs(64, 128, 3)
    73728
    >>> conv_macs(32, 32, 3, groups=32)  # depthwise
    288
    """
    cin, cout, groups = check_channels(in_channels, out_channels, groups)
    return math.prod(_ksize(kernel_size, dims)) * (cin // groups) * cout


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    groups: int = 1,
    bias: bool = False,
) -> int:
    """Parameters of a (grouped) convolution layer: a weight per MAC of an output pixel (+ bias).

    Examples
    --------
    >>> conv_params(64, 128, 3), conv_params(64, 128, 3, bias=True)
    (73728, 73856)
    """
    cin, cout, groups = check_channels(in_channels, out_channels, groups)
    bias = check_bool(bias, "bias")
    return conv_macs(cin, cout, kernel_size, dims=dims, groups=groups) + (cout if bias else 0)


def depthwise_separable_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    depth_multiplier: int = 1,
) -> int:
    """MACs per output pixel of depthwise (``k``, multiplier ``m``) then pointwise (1x1).

    ``prod(k) * C_in * m + C_in * m * C_out``.

    Examples
    --------
    >>> depthwise_separable_macs(64, 128, 3)
    8768
    """
    cin, cout, _ = check_channels(in_channels, out_channels)
    m = check_nonnegative_int(depth_multiplier, "depth_multiplier", minimum=1)
    return math.prod(_ksize(kernel_size, dims)) * cin * m + cin * m * cout


def depthwise_separable_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    depth_multiplier: int = 1,
    bias: bool = False,
) -> int:
    """Parameters of a depthwise-separable layer: a weight per MAC of an output pixel, plus
    biases on both convs when ``bias``.

    Examples
    --------
    >>> depthwise_separable_params(64, 128, 3)
    8768
    """
    cin, cout, _ = check_channels(in_channels, out_channels)
    m = check_nonnegative_int(depth_multiplier, "depth_multiplier", minimum=1)
    bias = check_bool(bias, "bias")
    weights = depthwise_separable_macs(cin, cout, kernel_size, dims=dims, depth_multiplier=m)
    return weights + ((cin * m + cout) if bias else 0)


def ds_ratio(
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    depth_multiplier: int = 1,
) -> float:
    """The article's closed form for standard / depthwise-separable cost: ``C_out K/(K + C_out)``.

    ``K = prod(kernel_size)``; independent of ``C_in``. With a depth multiplier ``m`` the
    separable layer costs ``C_in m (K + C_out)`` MACs per output position, so the ratio is
    ``C_out K / (m (K + C_out))``.

    Examples
    --------
    >>> round(ds_ratio(128, 3), 3)
    8.409
    >>> round(ds_ratio(256, 3), 2)  # typical layers: 8-9x
    8.69
    >>> round(ds_ratio(64, 3, depth_multiplier=2), 3)
    3.945
    """
    cout = check_nonnegative_int(out_channels, "out_channels", minimum=1)
    m = check_nonnegative_int(depth_multiplier, "depth_multiplier", minimum=1)
    K = math.prod(_ksize(kernel_size, dims))
    return cout * K / (m * (K + cout))


def conv_output_size(
    input_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[int, ...]:
    """Spatial output size of a convolution (PyTorch's formula; ``padding='same'`` keeps size).

    Examples
    --------
    >>> conv_output_size(224, 3, stride=2, padding=1)
    (112, 112)
    """
    k = _ksize(kernel_size, dims)
    n = [
        check_nonnegative_int(v, "input_size", minimum=1)
        for v in per_axis(input_size, dims, "input_size")
    ]
    s = [check_nonnegative_int(v, "stride", minimum=1) for v in per_axis(stride, dims, "stride")]
    d = [
        check_nonnegative_int(v, "dilation", minimum=1)
        for v in per_axis(dilation, dims, "dilation")
    ]
    if padding == "same":
        return tuple(-(-ni // si) for ni, si in zip(n, s, strict=True))
    if padding == "valid":
        padding = 0
    p = [check_nonnegative_int(v, "padding", minimum=0) for v in per_axis(padding, dims, "padding")]
    out = tuple(
        (ni + 2 * pi - di * (ki - 1) - 1) // si + 1
        for ni, pi, di, ki, si in zip(n, p, d, k, s, strict=True)
    )
    if min(out) < 1:
        raise ValueError(
            f"input_size {tuple(n)} is too small for kernel_size {k} with padding {tuple(p)} "
            f"and dilation {tuple(d)}"
        )
    return out


@dataclass(frozen=True)
class LayerCost:
    """MACs per output pixel, parameters and (if an input size was given) total MACs."""

    macs_per_pixel: int
    params: int
    macs: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def compare_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    depth_multiplier: int = 1,
    bias: bool = False,
    input_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] = 1,
) -> dict[str, Any]:
    """Standard vs depthwise, pointwise and depthwise-separable: the table behind ``sepconv cost``.

    Returns a dict with ``standard``, ``depthwise``, ``pointwise``, ``depthwise_separable``
    (:class:`LayerCost` each), ``ratio`` (``macs`` and ``params`` standard / separable, and the
    closed-form ``formula``) and the inputs. Padding is ``'same'`` when ``input_size`` is given.

    Examples
    --------
    >>> c = compare_conv(64, 128, 3)
    >>> c["standard"].macs_per_pixel, c["depthwise_separable"].macs_per_pixel
    (73728, 8768)
    >>> round(c["ratio"]["macs"], 2)
    8.41
    """
    k = _ksize(kernel_size, dims)
    m = check_nonnegative_int(depth_multiplier, "depth_multiplier", minimum=1)
    cin, cout, _ = check_channels(in_channels, out_channels)
    for s in per_axis(stride, dims, "stride"):
        check_nonnegative_int(s, "stride", minimum=1)
    bias = check_bool(bias, "bias")
    pixels = None
    if input_size is not None:
        pixels = math.prod(
            conv_output_size(input_size, k, dims=dims, stride=stride, padding="same")
        )

    def layer(macs: int, params: int) -> LayerCost:
        return LayerCost(macs, params, None if pixels is None else macs * pixels)

    standard = layer(
        conv_macs(cin, cout, k, dims=dims), conv_params(cin, cout, k, dims=dims, bias=bias)
    )
    dw = layer(
        conv_macs(cin, cin * m, k, dims=dims, groups=cin),
        conv_params(cin, cin * m, k, dims=dims, groups=cin, bias=bias),
    )
    pw = layer(
        conv_macs(cin * m, cout, 1, dims=dims), conv_params(cin * m, cout, 1, dims=dims, bias=bias)
    )
    ds = layer(dw.macs_per_pixel + pw.macs_per_pixel, dw.params + pw.params)
    return {
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": list(k),
        "dims": dims,
        "depth_multiplier": m,
        "standard": standard,
        "depthwise": dw,
        "pointwise": pw,
        "depthwise_separable": ds,
        "ratio": {
            "macs": standard.macs_per_pixel / ds.macs_per_pixel,
            "params": standard.params / ds.params,
            "formula": ds_ratio(cout, k, dims=dims, depth_multiplier=m),
        },
    }
