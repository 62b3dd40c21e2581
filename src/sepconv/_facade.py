"""The filters re-exported for one array library (``sepconv.dask``, ``sepconv.torch``).

Each facade function converts other array-likes to the library's array and calls the filter
of the same name in :mod:`sepconv.filters`; its docstring is a note on the conversion followed
by the filter's own full documentation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import filters

__all__ = ["facade"]


def facade(convert: Callable[[Any], Any], note: str, module: str) -> dict[str, Any]:
    """Every public filter, wrapped: ``{name: fn(convert(input), *args, **kwargs)}``."""
    out: dict[str, Any] = {}
    for name in filters.__all__:
        fn = getattr(filters, name)

        @functools.wraps(fn)
        def wrapper(input: Any, *args: Any, _fn: Any = fn, **kwargs: Any) -> Any:
            return _fn(convert(input), *args, **kwargs)

        wrapper.__module__ = module
        wrapper.__doc__ = f"{note}\n\n{fn.__doc__ or ''}"
        out[name] = wrapper
    return out
