"""FFT correlation of the padded input (scipy.fft, multithreaded with ``workers``).

Precision: the transform is always computed in float64. An FFT's rounding error is relative to
the *largest* value in the array, not to each output: in float32 a 1e6 pixel leaves errors of
~3e-4 relative on outputs of size 1 far away from it, where direct or separable passes give
~1e-7. In float64 the same error is ~1e-16 x max|x| x sum|K|, below float32 rounding of any
output whose size is within ~1e8 of the array's maximum. Non-finite data never reaches the FFT
(see :mod:`sepconv.engine.nonfinite`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft

from .._modes import pad

__all__ = ["fft"]


def fft(
    x: np.ndarray,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    cval: float,
    workers: int = 1,
) -> np.ndarray:
    """Correlate ``x`` with ``kernel`` over ``axes`` by FFT of the padded input ("valid" part)."""
    padded = pad(x, axes, kernel.shape, origins, modes, cval).astype(np.float64, copy=False)
    order = np.argsort(axes)
    ax = [int(a) for a in np.asarray(axes)[order]]
    k = kernel.transpose(order)  # kernel axes in increasing data-axis order
    size = [sfft.next_fast_len(padded.shape[a], real=True) for a in ax]
    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim], dtype=np.float64)
    kshape = [1] * x.ndim
    for a, n in zip(ax, k.shape, strict=True):
        kshape[a] = n
    fx = sfft.rfftn(padded, s=size, axes=ax, workers=workers)
    fk = sfft.rfftn(flipped.reshape(kshape), s=size, axes=ax, workers=workers)
    fx *= fk
    full = sfft.irfftn(fx, s=size, axes=ax, workers=workers)
    sl: list[slice] = [slice(None)] * x.ndim
    for a, n in zip(ax, k.shape, strict=True):
        sl[a] = slice(n - 1, n - 1 + x.shape[a])
    return np.ascontiguousarray(full[tuple(sl)], dtype=x.dtype)
