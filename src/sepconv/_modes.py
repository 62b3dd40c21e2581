"""Border modes and argument normalisation for the filters, in one place (scipy's _ni_support).

Every filter is defined as the correlation of the *padded* input, where the padded input at an
out-of-range index is given per axis by the mode:

=================  =======================================  ======================
mode               extension of ``a b c d``                 also accepted as
=================  =======================================  ======================
``reflect``        ``d c b a | a b c d | d c b a``           ``grid-mirror``
``mirror``         ``d c b | a b c d | c b a``
``nearest``        ``a a a a | a b c d | d d d d``
``wrap``           ``a b c d | a b c d | a b c d``           ``grid-wrap``
``constant``       ``k k k k | a b c d | k k k k`` (cval k)  ``grid-constant``
=================  =======================================  ======================

Kernels longer than the axis extend by repeated reflection / wrapping, as scipy.ndimage does.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._validate import ArgumentError, scalar_of

__all__ = [
    "MODES",
    "complex_of",
    "extension_table",
    "fold_pass",
    "is_complex",
    "native",
    "normalize_axes",
    "normalize_mode",
    "normalize_modes",
    "normalize_origins",
    "pad",
    "real_of",
    "resolve_output",
    "saturation_bounds",
    "work_dtype",
]

#: Every mode name accepted, mapped to the extension rule it uses.
MODES: dict[str, str] = {
    "reflect": "reflect",
    "grid-mirror": "reflect",
    "mirror": "mirror",
    "nearest": "nearest",
    "wrap": "wrap",
    "grid-wrap": "wrap",
    "constant": "constant",
    "grid-constant": "constant",
}


def normalize_mode(mode: Any, name: str = "mode") -> str:
    """The canonical rule (``reflect``, ``mirror``, ``nearest``, ``wrap``, ``constant``)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{name} must be one of {sorted(MODES)}, got {mode!r}")
    return MODES[mode]


def normalize_modes(mode: Any, naxes: int) -> list[str]:
    """One canonical mode per filtered axis (a string applies to all of them)."""
    if isinstance(mode, str):
        return [normalize_mode(mode)] * naxes
    if not isinstance(mode, (Sequence, np.ndarray)):
        raise ValueError(f"mode must be one of {sorted(MODES)} or a sequence of them, got {mode!r}")
    if len(mode) != naxes:
        raise ArgumentError(
            f"mode must be one of {sorted(MODES)} or a sequence of {naxes} of them (one per "
            f"filtered axis), got {mode!r} (sequence argument must have length equal to input "
            "rank)"
        )
    return [normalize_mode(m) for m in mode]


def normalize_axes(axes: Any, ndim: int) -> tuple[int, ...]:
    """Axes as non-negative ints; ``None`` means all. Refuses repeats and out-of-range axes."""
    if axes is None:
        return tuple(range(ndim))
    axes = scalar_of(axes)
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        raw = [operator.index(a) for a in axes]
    except TypeError:
        items = axes if isinstance(axes, Iterable) else ()
        bad = next((a for a in items if not hasattr(a, "__index__")), axes)
        raise TypeError(
            f"axes must be an int or a sequence of ints, got {axes!r} "
            f"('{type(bad).__name__}' object cannot be interpreted as an integer)"
        ) from None
    out = []
    for a in raw:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axes must be in [{-ndim}, {ndim - 1}] for a {ndim}-D input, got {a} "
                f"(specified axis: {a} is out of range)"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axes must be unique: axes must not repeat an axis, got {tuple(raw)}")
    return tuple(out)


def normalize_origins(origin: Any, sizes: Sequence[int]) -> list[int]:
    """One integer origin per filtered axis, each inside its kernel (scipy's rule)."""
    n = len(sizes)
    origin = scalar_of(origin)
    if isinstance(origin, (Sequence, np.ndarray)) and not isinstance(origin, str):
        if len(origin) != n:
            raise ArgumentError(
                f"origin must be an int or a sequence of {n} ints (one per filtered axis), "
                f"got {origin!r} (sequence argument must have length equal to input rank)"
            )
        values = list(origin)
    else:
        values = [origin] * n
    out = []
    for o, k in zip(values, sizes, strict=True):
        try:
            o = operator.index(o)
        except TypeError:
            raise TypeError(
                f"origin must be an int or a sequence of ints, got {origin!r}"
            ) from None
        if not -(k // 2) <= o <= (k - 1) // 2:
            raise ValueError(
                f"Invalid origin; origin must be between {-(k // 2)} and {(k - 1) // 2} for a "
                f"kernel of length {k}, got {o}"
            )
        out.append(int(o))
    return out


def extension_table(n: int, k: int, offset: int, mode: str) -> np.ndarray:
    """Input index feeding each position of the padded line, ``-1`` for "use cval".

    Position ``m`` (``0 <= m < n + k - 1``) of the padded line is input index
    ``m - offset`` extended by ``mode``; output ``i`` correlates positions ``i .. i + k - 1``.
    A new array each call (short tables are copied from a cache: they are built on every
    call of a filter, which matters for small images).
    """
    if n + k <= _TABLE_CACHE_LEN:
        return _cached_table(int(n), int(k), int(offset), mode).copy()
    return _table(n, k, offset, mode)


#: Longest extension tables kept by :func:`extension_table`'s cache (elements).
_TABLE_CACHE_LEN = 4096


@functools.lru_cache(maxsize=128)
def _cached_table(n: int, k: int, offset: int, mode: str) -> np.ndarray:
    return _table(n, k, offset, mode)


def _table(n: int, k: int, offset: int, mode: str) -> np.ndarray:
    idx = np.arange(n + k - 1, dtype=np.int64) - offset
    if mode == "constant":
        return np.where((idx >= 0) & (idx < n), idx, -1)
    if mode == "nearest":
        return np.clip(idx, 0, n - 1)
    if mode == "wrap":
        return np.mod(idx, n)
    if mode == "reflect":
        idx = np.mod(idx, 2 * n)
        return np.where(idx >= n, 2 * n - 1 - idx, idx)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(idx)
        idx = np.mod(idx, 2 * n - 2)
        return np.where(idx >= n, 2 * n - 2 - idx, idx)
    raise ValueError(f"unknown canonical mode {mode!r}")  # pragma: no cover


def fold_pass(w: np.ndarray, origin: int, n: int, mode: str) -> tuple[np.ndarray, int]:
    """An equivalent shorter 1-D kernel for an axis of ``n`` samples: ``(weights, origin)``.

    Correlating with ``w`` reads the padded line at offsets ``d = j - (len(w) // 2 + origin)``
    from each output. The padded line repeats with period ``P`` for wrap (``n``), reflect
    (``2n``) and mirror (``2n - 2``), so taps whose offsets agree modulo ``P`` read the same
    sample and add up into one tap; for nearest, every offset ``<= -(n - 1)`` reads the first
    sample and every offset ``>= n - 1`` the last; for constant, offsets ``<= -n`` and ``>= n``
    read only ``cval``. The folded kernel has at most ``max(P, 2n + 1)`` taps and gives the
    same result up to the rounding of the summed taps for finite data (not for Inf: folding
    ``inf * w1 + inf * w2`` into ``inf * (w1 + w2)`` loses the NaN of opposite signs), so a
    kernel far longer than the axis (a huge ``sigma`` or ``size``) costs what one of about
    twice the axis length costs. Kernels that are not longer than that are returned unchanged.
    """
    k = len(w)
    if n == 0:
        return w, origin
    offset = k // 2 + origin
    if mode == "wrap":
        period = n
    elif mode == "reflect":
        period = 2 * n
    elif mode == "mirror":
        period = max(1, 2 * n - 2)
    else:
        period = 0
    if period:
        if k <= period:
            return w, origin
        d = np.arange(k) - offset
        half = period // 2
        folded = np.zeros(period, dtype=w.dtype)
        np.add.at(folded, (d + half) % period, w)
        return folded, 0  # offset ``half`` = the centre of the folded kernel
    reach = n - 1 if mode == "nearest" else n
    if k <= 2 * reach + 1:
        return w, origin
    d = np.clip(np.arange(k) - offset, -reach, reach)
    folded = np.zeros(2 * reach + 1, dtype=w.dtype)
    np.add.at(folded, d + reach, w)
    return folded, 0


#: Floating-point dtypes filtered (float16 is computed in float32; complex as its real and
#: imaginary parts); every integer dtype and bool is too, computed in float and rounded.
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))


def native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in this machine's byte order (big-endian files are common: NIfTI, FITS)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def check_input(x: Any, name: str = "input") -> np.ndarray:
    """The input as an ndarray of a supported dtype (float16/32/64, complex, integer, bool).

    Any byte order is accepted; the filters convert to native order on the way in.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from exc
    dt = arr.dtype
    if dt.kind in "iub" or native(dt) in FLOAT_DTYPES or native(dt) in COMPLEX_DTYPES:
        return arr
    raise TypeError(
        f"{name} dtype must be float16, float32, float64, complex64, complex128, an integer "
        f"type or bool, got {dt}"
    )


#: Output dtypes that a float32 computation fills to within a small fraction of their last
#: bit: float32 itself and integers of at most 16 bits (8-bit data times any kernel stays
#: within ~1e-4 LSB of the exact result at those magnitudes).
_FLOAT32_OUTPUTS = frozenset("?bBhHef")


def work_dtype(dtype: np.dtype, output: np.dtype | None = None, cval: float = 0.0) -> np.dtype:
    """Precision of the computation for input ``dtype`` and result ``output`` (default: same).

    float32 when the input is float16/float32, bool or 8-bit integer *and* the result is
    float16/float32 or an integer/bool of at most 16 bits; float64 otherwise (complex data is
    filtered as its real and imaginary parts, each by this rule). So ``output=np.float64``
    (or a 32/64-bit integer output) always gets a float64 computation, as scipy.ndimage does.
    A finite ``cval`` beyond the float32 range (``1e39``: float32 would pad with inf where
    scipy's float64 gives finite borders) also means float64.
    """
    dt = native(dtype)
    out = dt if output is None else native(np.dtype(output))
    small_in = dt.char in "ef" or (dt.kind in "iub" and dt.itemsize == 1)
    if small_in and out.char in _FLOAT32_OUTPUTS and not _F32_MAX < abs(cval) < math.inf:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


_F32_MAX = float(np.finfo(np.float32).max)


def saturation_bounds(lo: int, hi: int, ftype: Any) -> tuple[float, float]:
    """The range ``[lo, hi]`` of an integer type as floats of type ``ftype`` inside it.

    ``float(2**63 - 1)`` rounds *up* to ``2**63``, and converting that back to int64 overflows
    to ``-2**63``: clipping must use the largest float that is <= ``hi`` (and the smallest that
    is >= ``lo``). Returned as Python floats that are exactly representable in ``ftype``.
    """
    ft = np.dtype(ftype).type
    fhi, flo = ft(hi), ft(lo)
    if int(fhi) > hi:
        fhi = np.nextafter(fhi, ft(0))
    if int(flo) < lo:
        flo = np.nextafter(flo, ft(0))
    return float(flo), float(fhi)


def pad(
    x: np.ndarray,
    axes: Sequence[int],
    shape: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    cval: float,
) -> np.ndarray:
    """The padded input of a correlation with a kernel of ``shape`` over ``axes`` (a copy)."""
    padded = x
    for a, k, o in zip(axes, shape, origins, strict=True):
        table = extension_table(x.shape[a], k, k // 2 + o, modes[a])
        outside = table < 0
        padded = np.take(padded, np.where(outside, 0, table), axis=a)
        if outside.any():
            sl: list[Any] = [slice(None)] * padded.ndim
            sl[a] = outside
            padded[tuple(sl)] = cval
    return np.ascontiguousarray(padded)


def resolve_output(output: Any, x: np.ndarray, name: str = "output") -> tuple[np.dtype, Any]:
    """(dtype of the result, array to write into or None) from scipy's ``output`` argument."""
    if output is None:
        return native(x.dtype), None
    if isinstance(output, np.ndarray):
        if output.shape != x.shape:
            raise ValueError(f"{name} must have the input's shape {x.shape}, got {output.shape}")
        check_input(output, name)
        if not output.flags.writeable:
            raise ValueError(f"{name} array is read-only")
        return output.dtype, output
    try:
        dt = np.dtype(output)
    except TypeError:
        raise TypeError(
            f"{name} must be None, a dtype or an array, got {type(output).__name__}"
        ) from None
    check_input(np.empty(0, dtype=dt), name)
    return dt, None


# numpy's complex dtype rules (the numpy, dask and cupy backends' ``is_complex``,
# ``complex_of`` and ``real_of``; here so that no backend imports another for them)


def is_complex(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "c"


def complex_of(dtype: Any) -> np.dtype:
    """The complex dtype a complex result of ``dtype`` data has (float32 -> complex64)."""
    return np.promote_types(np.dtype(dtype), np.complex64)


def real_of(dtype: Any) -> np.dtype:
    """The real dtype of each part of a complex ``dtype`` (complex64 -> float32)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.complex64 else np.dtype(np.float64)
