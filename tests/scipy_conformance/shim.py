"""A stand-in for ``scipy.ndimage``: sepconv's filters under scipy's names, scipy's the rest.

The wrappers only record the call (which test called which sepconv function, and the first
exception a sepconv function raised in that test) and pass everything through unchanged.
Every other attribute (``median_filter``, ``_ni_support``, ...) is scipy.ndimage's own.

``SCIPY_CONFORMANCE_FAULT=name`` (environment) makes the wrapper of ``name`` return its
float results times 1.5: the harness's own test uses it to show that a wrong sepconv result
fails scipy's tests and is reported.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as _np
import scipy.ndimage as _ndimage

import sepconv as _sepconv

#: the scipy.ndimage names that sepconv serves (its drop-in surface)
SEPCONV_NAMES: tuple[str, ...] = (
    "correlate1d",
    "convolve1d",
    "correlate",
    "convolve",
    "gaussian_filter1d",
    "gaussian_filter",
    "uniform_filter1d",
    "uniform_filter",
    "sobel",
    "prewitt",
    "laplace",
    "gaussian_laplace",
    "gaussian_gradient_magnitude",
)

#: the test being run (set by the runner's plugin); calls outside a test are not recorded
current_test: str | None = None
#: test id -> {sepconv function name: number of calls}
calls: dict[str, dict[str, int]] = {}
#: test id -> first exception raised by a sepconv function in it: (function, type, message)
raised: dict[str, tuple[str, str, str]] = {}


_FAULT = os.environ.get("SCIPY_CONFORMANCE_FAULT", "")


def _wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    faulty = name == _FAULT

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        test = current_test
        if test is not None:
            per_test = calls.setdefault(test, {})
            per_test[name] = per_test.get(name, 0) + 1
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            if test is not None and test not in raised:
                raised[test] = (name, type(exc).__name__, str(exc)[:300])
            raise
        if faulty and isinstance(result, _np.ndarray) and result.dtype.kind == "f":
            return result * 1.5
        return result

    wrapper.__sepconv_shim__ = True  # type: ignore[attr-defined]
    return wrapper


def _register_capabilities(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    # scipy's tests look their functions up in scipy's array-API capabilities table
    # (``make_xp_test_case(ndimage.correlate)``): give the wrapper scipy's entry.
    try:
        from scipy._lib._array_api import xp_capabilities_table
    except ImportError:  # an older scipy without the table
        return
    if original in xp_capabilities_table:
        xp_capabilities_table[wrapper] = xp_capabilities_table[original]


if _FAULT and _FAULT not in SEPCONV_NAMES:
    raise ValueError(f"SCIPY_CONFORMANCE_FAULT must be one of {SEPCONV_NAMES}, got {_FAULT!r}")
for _name in SEPCONV_NAMES:
    _wrapper = _wrap(_name, getattr(_sepconv, _name))
    _register_capabilities(_wrapper, getattr(_ndimage, _name))
    setattr(sys.modules[__name__], _name, _wrapper)


def __getattr__(name: str) -> Any:
    return getattr(_ndimage, name)


def __dir__() -> list[str]:
    return sorted(set(dir(_ndimage)) | set(globals()))
