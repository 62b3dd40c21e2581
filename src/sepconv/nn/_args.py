"""Argument normalisation for the layers and functions of :mod:`sepconv.nn` (one wording).

Every public constructor and function checks its convolution arguments here, before any tensor
is allocated, and raises ``ValueError``/``TypeError`` naming the parameter, the bad value and
what is allowed (the messages reuse :mod:`sepconv._validate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._validate import check_nonnegative_int, per_axis
from ..cost import check_channels

__all__ = [
    "ACTIVATIONS",
    "AXIS_NAMES",
    "PADDING_MODES",
    "ConvGeometry",
    "check_channels",
    "check_dims",
    "check_ints",
    "check_padding",
    "check_padding_mode",
    "make_activation",
    "make_norm",
    "same_pads",
]

#: Padding modes of ``torch.nn.Conv*d`` (the same names, the same meaning).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

#: Names of the spatial axes in submodule names (``conv_h``, ``conv_dw_w``, ...).
AXIS_NAMES = {1: ("l",), 2: ("h", "w"), 3: ("d", "h", "w")}

#: Activation names accepted by ``activation=`` (a callable returning a module also works).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
    "hardswish": lambda: nn.Hardswish(inplace=True),
}

_BATCH_NORMS: dict[int, type[nn.Module]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}


def check_dims(dims: Any) -> int:
    dims = check_nonnegative_int(dims, "dims", minimum=1)
    if dims > 3:
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
    return dims


def check_ints(value: Any, dims: int, name: str, *, minimum: int) -> tuple[int, ...]:
    """One integer >= ``minimum`` per spatial axis (a scalar is broadcast)."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    return tuple(
        check_nonnegative_int(v, name, minimum=minimum) for v in per_axis(value, dims, name)
    )


def check_padding(padding: Any, dims: int) -> tuple[int, ...] | str:
    """``'same'``, ``'valid'`` (returned as zeros) or one integer >= 0 per axis."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * dims
        if padding == "same":
            return "same"
        raise ValueError(
            f"padding must be 'same', 'valid' or integers >= 0 (one per axis), got {padding!r}"
        )
    return check_ints(padding, dims, "padding", minimum=0)


def check_padding_mode(padding_mode: Any) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}")
    return str(padding_mode)


def same_pads(
    size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> list[tuple[int, int]]:
    """``(before, after)`` padding per axis that makes the output ``ceil(size / stride)`` long.

    TensorFlow's ``'SAME'`` rule (the extra element goes after), which for stride 1 is also
    PyTorch's ``padding='same'``: total ``max((ceil(n/s) - 1) s + d (k - 1) + 1 - n, 0)``.
    """
    pads = []
    for n, k, s, d in zip(size, kernel_size, stride, dilation, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


class ConvGeometry:
    """Validated geometry of an N-D convolution: the part every layer and function shares.

    ``padding`` is a tuple of ints or ``'same'``. Symmetric ``'same'`` with stride 1 becomes
    ordinary integer padding; any other ``'same'`` (an even kernel, or a stride > 1, which
    ``nn.Conv*d`` refuses) is applied by one explicit pad of the input before the convolutions
    (``pad_first``), computed from the input size.
    """

    def __init__(
        self,
        dims: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        padding_mode: Any = "zeros",
    ) -> None:
        self.dims = check_dims(dims)
        self.kernel_size = check_ints(kernel_size, self.dims, "kernel_size", minimum=1)
        self.stride = check_ints(stride, self.dims, "stride", minimum=1)
        self.dilation = check_ints(dilation, self.dims, "dilation", minimum=1)
        self.padding = check_padding(padding, self.dims)
        self.padding_mode = check_padding_mode(padding_mode)
        kd = list(zip(self.kernel_size, self.dilation, strict=True))
        if (
            self.padding == "same"
            and all(s == 1 for s in self.stride)
            and all(d * (k - 1) % 2 == 0 for k, d in kd)
        ):
            self.padding = tuple(d * (k - 1) // 2 for k, d in kd)

    @property
    def pad_first(self) -> bool:
        """True when the padding is applied explicitly before the convolutions."""
        return self.padding == "same"

    def stage_padding(self, axis: int | None) -> tuple[int, ...]:
        """Padding of the conv that handles ``axis`` (``None``: all axes at once)."""
        if isinstance(self.padding, str):
            return (0,) * self.dims
        if axis is None:
            return self.padding
        return tuple(p if a == axis else 0 for a, p in enumerate(self.padding))

    def axis_tuple(self, values: tuple[int, ...], axis: int, fill: int) -> tuple[int, ...]:
        return tuple(v if a == axis else fill for a, v in enumerate(values))

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for an input of spatial ``size`` (as ``nn.Conv`` computes it)."""
        if isinstance(self.padding, str):
            pads = same_pads(size, self.kernel_size, self.stride, self.dilation)
            p = [a + b for a, b in pads]
        else:
            p = [2 * q for q in self.padding]
        geo = zip(size, p, self.kernel_size, self.stride, self.dilation, strict=True)
        return tuple((n + pi - d * (k - 1) - 1) // s + 1 for n, pi, k, s, d in geo)

    def explicit_pads(self, size: Sequence[int]) -> list[int]:
        """Arguments of ``F.pad`` (last axis first) equivalent to this padding at ``size``."""
        if isinstance(self.padding, str):
            pads = same_pads(size, self.kernel_size, self.stride, self.dilation)
        else:
            pads = [(p, p) for p in self.padding]
        flat: list[int] = []
        for before, after in reversed(pads):
            flat += [before, after]
        return flat

    def extra_repr(self) -> str:
        parts = [f"kernel_size={self.kernel_size}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"stride={self.stride}")
        if self.padding == "same" or any(self.padding):
            parts.append(f"padding={self.padding!r}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts)


def make_norm(norm: Any, num_features: int, dims: int, device: Any, dtype: Any) -> nn.Module:
    """``None`` -> Identity; ``'batch'`` -> BatchNormNd; a callable ``f(num_features)``."""
    if norm is None:
        return nn.Identity()
    if isinstance(norm, str):
        if norm != "batch":
            raise ValueError(f"norm must be None, 'batch' or a callable, got {norm!r}")
        return _BATCH_NORMS[dims](num_features, device=device, dtype=dtype)
    if not callable(norm):
        raise TypeError(f"norm must be None, 'batch' or a callable, got {norm!r}")
    module = norm(num_features)
    if not isinstance(module, nn.Module):
        raise TypeError(f"norm(num_features) must return an nn.Module, got {type(module).__name__}")
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    return module


def make_activation(activation: Any) -> nn.Module:
    """``None`` -> Identity; a name in :data:`ACTIVATIONS`; a callable returning a module."""
    if activation is None:
        return nn.Identity()
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be None, one of {sorted(ACTIVATIONS)} or a callable, "
                f"got {activation!r}"
            )
        return ACTIVATIONS[activation]()
    if not callable(activation):
        raise TypeError(
            f"activation must be None, one of {sorted(ACTIVATIONS)} or a callable, "
            f"got {activation!r}"
        )
    module = activation()
    if not isinstance(module, nn.Module):
        raise TypeError(f"activation() must return an nn.Module, got {type(module).__name__}")
    return module
