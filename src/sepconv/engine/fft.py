"""FFT correlation of the padded input (scipy.fft, multithreaded with ``workers``)."""

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
    padded = pad(x, axes, kernel.shape, origins, modes, cval)
    order = np.argsort(axes)
    ax = [int(a) for a in np.asarray(axes)[order]]
    k = kernel.transpose(order)  # kernel axes in increasing data-axis order
    size = [sfft.next_fast_len(padded.shape[a], real=True) for a in ax]
    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim], dtype=x.dtype)
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
