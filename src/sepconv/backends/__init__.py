"""Backends: run a :class:`~sepconv.job.Job` on the input's own array library.

The protocol
------------
A backend is a module with four functions:

``check_input(x) -> x``
    Refuse what the library cannot filter (``TypeError``/``ValueError`` naming ``input``);
    return the array to filter.
``resolve_output(output, x) -> (dtype, out)``
    scipy's ``output`` argument: None (the input's dtype), a dtype, or an array to write into.
``has_nonfinite(x) -> bool``
    Whether a floating-point input holds (or, for a lazy array, may hold) NaN or Inf: folding
    long passes of mixed-sign taps is exact only for finite data. A lazy backend may also
    give ``has_nonfinite_exact(x)`` (computed), asked only where folding saves far more.
``run(x, job, dtype, out, workers) -> result``
    Compute the job, round and saturate to an integer ``dtype`` once, write into ``out`` if
    given and return the result (``out`` itself then).

The registry
------------
:func:`for_type` (or :func:`for_array`) picks the backend by the input's type: a
``dask.array.Array`` goes to :mod:`sepconv.backends.dask`, a ``torch.Tensor`` to
:mod:`sepconv.backends.torch`, a ``cupy.ndarray`` to :mod:`sepconv.backends.cupy` (the
torch backend's GPU engine, through DLPack), anything else to :mod:`sepconv.backends.numpy`.
A library is recognised without importing it: an object can only be one of its arrays if the
library is already loaded, so ``import sepconv`` stays light. Adding an array library means adding a
module and one :func:`register` call; the filters do not change.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["for_array", "for_type", "register"]

#: (module that defines the array type, its attribute path, backend module), checked in order.
_REGISTRY: list[tuple[str, str, str]] = [
    ("dask.array", "Array", "sepconv.backends.dask"),
    ("torch", "Tensor", "sepconv.backends.torch"),
    ("cupy", "ndarray", "sepconv.backends.cupy"),
]


def register(library: str, type_name: str, backend: str) -> None:
    """Send arrays of type ``library.type_name`` to the backend module ``backend``.

    Checked before the built-in entries, only once ``library`` is imported by someone.
    """
    _REGISTRY.insert(0, (library, type_name, backend))


def for_type(kind: type) -> ModuleType:
    """The backend module for arrays of type ``kind`` (numpy for ndarrays and every other
    array-like: lists, scalars, objects with ``__array__``)."""
    if kind.__module__ != "numpy":
        for library, type_name, backend in _REGISTRY:
            lib = sys.modules.get(library)
            cls = getattr(lib, type_name, None) if lib is not None else None
            if cls is not None and issubclass(kind, cls):
                return importlib.import_module(backend)
    from . import numpy as numpy_backend  # (numba: not needed for tensors or CuPy arrays)

    return numpy_backend


def for_array(x: Any) -> ModuleType:
    """The backend module for ``x`` (``for_type(type(x))``)."""
    return for_type(type(x))
