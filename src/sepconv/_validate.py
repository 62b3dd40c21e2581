"""Argument checks shared by every public function (one place, one wording).

Each helper raises ``ValueError``/``TypeError`` naming the parameter, the bad value and what is
allowed, before any work is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_KERNEL_SIZE",
    "MAX_TAPS",
    "ArgumentError",
    "IntegerArgumentError",
    "as_kernel",
    "check_bool",
    "check_kernel_size",
    "check_nonnegative_int",
    "check_positive_float",
    "check_tol",
    "per_axis",
]


def as_kernel(kernel: Any, name: str = "kernel", *, complex_ok: bool = False) -> np.ndarray:
    """Return ``kernel`` as a finite, non-empty float64 array of ndim >= 1.

    Integer and boolean kernels are converted exactly; object, string and other dtypes are
    refused with a ``TypeError``, and so are complex ones unless ``complex_ok`` (the linear
    filters take complex weights: a complex kernel comes back as complex128).

    The copy no longer says what precision the kernel was given in: where ranks or exactness
    will be judged, take ``sepconv.factor.kernel_precision(kernel)`` first and pass it on as
    ``precision=`` (a float32 kernel is exact to float32 rounding, not float64).
    """
    if isinstance(kernel, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got the string {kernel!r}")
    try:
        arr = np.asarray(kernel)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of numbers, got {type(kernel).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must have a real numeric dtype, got dtype object")
    if np.iscomplexobj(arr) and not complex_ok:
        raise TypeError(
            f"{name} must be real; got dtype {arr.dtype} (filter the real and imaginary parts "
            "separately)"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must have a real numeric dtype, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array ({arr!r})")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    out = np.array(arr, dtype=np.complex128 if np.iscomplexobj(arr) else np.float64, copy=True)
    if not np.all(np.isfinite(out)):
        bad = "NaN" if np.isnan(out).any() else "Inf"
        raise ValueError(f"{name} must be finite, got {bad} at index {_first_bad(out)}")
    return out


class ArgumentError(ValueError, RuntimeError):
    """A bad argument where scipy.ndimage raises ``RuntimeError``.

    sepconv raises ``ValueError`` for bad values; for the cases where scipy.ndimage raises
    ``RuntimeError`` (a sequence argument of the wrong length, a kernel of the wrong rank, an
    output of the wrong shape) the exception is both, so code written for either catches it,
    and its message carries scipy's phrase.
    """


class IntegerArgumentError(TypeError, ValueError):
    """A non-integer where an integer is required: a ``TypeError`` (sepconv's rule) that is
    also the ``ValueError`` scipy.ndimage raises for e.g. ``radius=1.1``."""


#: Longest 1-D kernel sepconv builds (a pass along an axis of n samples never needs more than
#: about 2n + 1 taps: longer kernels are folded onto the border extension before running).
MAX_TAPS = 2**24
#: Most elements of a dense N-D kernel sepconv builds (512 MiB of float64).
MAX_KERNEL_SIZE = 2**26


def check_kernel_size(shape: Sequence[float], what: str) -> None:
    """Refuse, before allocating, a kernel longer than ``MAX_TAPS`` on an axis or larger than
    ``MAX_KERNEL_SIZE`` in all. ``shape`` may hold floats (a radius computed from a huge
    ``sigma``); ``what`` names the parameter(s) that set it, e.g. ``"sigma=1e+308"``."""
    longest = max(shape)
    if not longest <= MAX_TAPS:
        raise ValueError(
            f"{what} gives a kernel of {longest:.4g} taps along an axis; at most {MAX_TAPS} are "
            "supported (no filter needs more taps than about twice the samples it filters)"
        )
    size = math.prod(float(n) for n in shape)
    if len(shape) > 1 and not size <= MAX_KERNEL_SIZE:
        raise ValueError(
            f"{what} gives a dense kernel of {size:.4g} elements; at most {MAX_KERNEL_SIZE} are "
            "supported"
        )


def _first_bad(arr: np.ndarray) -> tuple[int, ...]:
    idx = np.argwhere(~np.isfinite(arr))[0]
    return tuple(int(i) for i in idx)


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    value = scalar_of(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v) or v < 0 or (v == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return v


def check_nonnegative_int(value: Any, name: str, *, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (floats with an integral value are refused: say what you mean)."""
    value = scalar_of(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise IntegerArgumentError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def check_tol(tol: Any, name: str = "tol") -> float | None:
    """``None`` or a finite number >= 0."""
    if tol is None:
        return None
    return check_positive_float(tol, name, allow_zero=True)


def scalar_of(value: Any) -> Any:
    """A 0-d numpy array as its scalar (``np.array(2.0)``, ``np.median(...)`` of some
    arrays: scipy.ndimage takes them as numbers); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def per_axis(value: Any, ndim: int, name: str) -> list[Any]:
    """Broadcast a scalar to one value per axis, or check a sequence has ``ndim`` entries."""
    value = scalar_of(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return [value] * ndim
    values = list(value)
    if len(values) != ndim:
        raise ArgumentError(
            f"{name} must be a scalar or a sequence of {ndim} values (one per axis), got "
            f"{value!r} (sequence argument must have length equal to input rank)"
        )
    return values


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (a numpy bool too); ``0``/``1``, strings and ``None`` are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_memory_limit(memory_limit: Any) -> int:
    """A memory budget in bytes: a positive number, or a size like '64MiB' (dask's notation;
    needs dask, whose ``parse_bytes`` reads it)."""
    from dask.utils import parse_bytes

    try:
        limit = int(parse_bytes(memory_limit))
    except (ValueError, TypeError):
        raise ValueError(
            f"memory_limit must be a number of bytes or a size like '64MiB', got {memory_limit!r}"
        ) from None
    if limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {memory_limit!r}")
    return limit
