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

__all__ = ["facade", "publish"]


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


#: What each facade's filters do with their input, said first in their docstrings.
NOTES = {
    "dask": (
        "Lazy on a dask array (numpy input is wrapped by ``dask.array.asarray`` first); the "
        "result is a dask array with the input's chunks, or ``output`` (a numpy or zarr array) "
        "after storing into it."
    ),
    "torch": (
        "On a torch tensor (other array-likes are converted by ``torch.as_tensor`` first); the "
        "result is a tensor on the input's device, differentiable with respect to the input; "
        "``output`` may be a torch/numpy dtype or a tensor to write into."
    ),
}


def publish(namespace: dict[str, Any], convert: Callable[[Any], Any], library: str) -> None:
    """Put every wrapped filter into a facade module's ``namespace`` (its ``globals()``)."""
    namespace.update(facade(convert, NOTES[library], namespace["__name__"]))
