"""The sepconv filters on torch tensors: CPU or CUDA, any float dtype, differentiable.

Every sepconv filter accepts a ``torch.Tensor`` and returns one on the same device; the
functions here are the same filters, with other array-likes converted by
``torch.as_tensor``::

    import torch, sepconv
    x = torch.rand(8, 3, 256, 256, device="cuda", requires_grad=True)  # batch, channel, H, W
    y = sepconv.gaussian_filter(x, 2.0, axes=(2, 3))                   # per image and channel
    y.sum().backward()                                                  # gradients flow

Semantics are those of the numpy API (scipy.ndimage's names, modes, origins, ``axes``,
``cval`` and ``output``; see :mod:`sepconv.filters`): the plan, the kernel's separable terms
and the constant-mode ``cval`` carry are shared, only the execution differs. Batch and channel
dimensions are simply axes that are not filtered.

Execution: :mod:`sepconv.backends.torch` (padding by ``index_select`` through the numpy
engine's extension table, passes as ``conv1d``/``conv2d``, dense kernels as ``convNd``, FFT by
``torch.fft`` in float64).

Precision: float64 tensors compute in float64, float32 in float32, float16 and bfloat16 in
float32 (the result is rounded back once); integer tensors are computed in floating point and
rounded to nearest and saturated, as in the numpy API. Gradients are taken with respect to the
input (kernels are constants). ``workers`` sets torch's CPU threads for the call (ignored on
CUDA). Only the input needs to be a tensor: kernels are numpy or specs as everywhere else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import filters
from ._facade import publish
from ._modes import native

__all__ = list(filters.__all__)


def _as_tensor(input: Any) -> Any:
    if isinstance(input, np.ndarray) and (
        not input.flags.writeable or not input.dtype.isnative or min(input.strides, default=0) < 0
    ):
        # a copy: torch has no read-only tensors, no other byte order, no negative strides
        return torch.from_numpy(np.array(input, dtype=native(input.dtype), order="C"))
    return input if isinstance(input, torch.Tensor) else torch.as_tensor(input)


publish(globals(), _as_tensor, "torch")
