"""The CuPy backend: jobs on ``cupy.ndarray`` data, on the GPU engine, without copies.

The input is handed to torch through DLPack (``torch.from_dlpack``: the same device memory,
no copy) and the job runs in :mod:`sepconv.backends.torch`, whose CUDA tensors go to the
Triton engine (:mod:`sepconv.engine.triton_gpu`); the result comes back through DLPack too
(``cupy.from_dlpack``). The protocol's ``stream`` argument orders the two libraries' streams
(the consumer's stream waits for the producer's): nothing here waits on the host. An
``output`` array is wrapped the same way and written in place by the torch backend.

Only ``cupy.ndarray`` and ``cupy.from_dlpack`` are used, and the cupy module is looked up when
a function runs, never imported by ``import sepconv``. Dtypes are numpy dtypes, as CuPy's are;
complex data is filtered as its real and imaginary parts (views), as for numpy arrays.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from .._modes import check_input as _check_numpy_input
from .._modes import complex_of, is_complex, real_of  # numpy's dtype rules
from ..job import Job

__all__ = [
    "check_input",
    "complex_of",
    "device_kind",
    "has_nonfinite",
    "is_complex",
    "join",
    "real_of",
    "resolve_output",
    "run",
    "split",
]

_NEEDS = (
    "filtering CuPy arrays needs torch and triton: the data goes to sepconv's GPU engine "
    "through DLPack (pip install 'sepconv[gpu]' and a CUDA build of torch; CuPy itself is the "
    "wheel that matches your CUDA, e.g. pip install cupy-cuda12x)"
)


def _cupy() -> ModuleType:
    return importlib.import_module("cupy")


def _torch_backend() -> ModuleType:
    """:mod:`sepconv.backends.torch`, or an ImportError that says what to install."""
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{_NEEDS}; missing: {exc.name}") from exc
    from . import torch as torch_backend

    return torch_backend


def _tensor(a: Any, name: str = "input") -> Any:
    """The torch tensor on ``a``'s memory (DLPack, zero-copy). Torch has no negative strides
    (it aborts the process on such a capsule), so a reversed view is copied first. A dtype
    this torch cannot import (uint16/32/64 before torch 2.3) is a TypeError naming ``name``."""
    import torch

    if any(s < 0 for s in a.strides):
        a = a.copy()
    try:
        return torch.from_dlpack(a)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} of dtype {a.dtype} cannot be handed to torch {torch.__version__} through "
            f"DLPack ({exc}); convert it first (e.g. to float32)"
        ) from exc


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def check_input(x: Any) -> Any:
    """The numpy dtype rules (float16/32/64, complex, integers, bool); torch and triton present."""
    _check_numpy_input(np.empty(0, dtype=x.dtype))
    _torch_backend()
    return x


def resolve_output(output: Any, x: Any) -> tuple[np.dtype, Any]:
    """None (the input's dtype), a numpy dtype, or a cupy array of the input's shape to write
    into (in place: the engine's result is copied into its memory once, on the device)."""
    cupy = _cupy()
    if isinstance(output, cupy.ndarray):
        if output.shape != x.shape:
            raise ValueError(
                f"output must have the input's shape {tuple(x.shape)}, got {tuple(output.shape)}"
            )
        dt = np.dtype(output.dtype)
        _check_numpy_input(np.empty(0, dtype=dt), "output")
        return dt, output
    if output is None:
        return np.dtype(x.dtype), None
    if not isinstance(output, type) and (
        hasattr(output, "__dlpack__") or hasattr(output, "__array__")
    ):
        # a numpy array or a torch tensor: not an array of cupy's
        raise TypeError(
            "output must be None, a dtype or a cupy array for a cupy input, got "
            f"{type(output).__name__}"
        )
    try:
        dt = np.dtype(output)
    except TypeError:
        raise TypeError(
            f"output must be None, a dtype or a cupy array, got {type(output).__name__}"
        ) from None
    _check_numpy_input(np.empty(0, dtype=dt), "output")
    if not dt.isnative:
        raise ValueError(
            f"output dtype must be in native byte order for a cupy input, got {dt.str}"
        )
    return dt, None


def device_kind(x: Any) -> str:
    """Whose time model the planner uses: ``'cuda'`` for device memory (the torch backend's
    rule for the tensor on it), else ``'cpu'``."""
    return str(_torch_backend().device_kind(_tensor(x)))


def has_nonfinite(x: Any) -> bool:
    """Whether a floating-point array holds NaN or Inf (read on the device)."""
    return x.dtype.kind == "f" and bool(_torch_backend().has_nonfinite(_tensor(x)))


def run(x: Any, job: Job, dtype: np.dtype, out: Any, workers: int | None) -> Any:
    """``job`` on ``x`` by the torch backend (the Triton engine for device data); the result
    has ``dtype`` (a new cupy array) or is ``out``, written in place."""
    tb = _torch_backend()
    target = None if out is None or any(s < 0 for s in out.strides) else _tensor(out, "output")
    result = tb.run(_tensor(x), job, _torch_dtype(np.dtype(dtype)), target, workers)
    return _finish(result, target, out)


def _finish(result: Any, target: Any, out: Any) -> Any:
    """The torch result as a cupy array: ``out`` if given (already written when ``target``
    wraps it; a reversed ``out`` gets the values by assignment), else a DLPack view."""
    if out is None:
        return _cupy().from_dlpack(result)
    if target is None:
        out[...] = _cupy().from_dlpack(result)
    return out


# ----------------------------------------------------------------------------------------------
# complex data: filtered as its real and imaginary parts (sepconv.filters assembles them)
# ----------------------------------------------------------------------------------------------


def split(x: Any) -> tuple[Any, Any | None]:
    """Real and imaginary parts (views); ``(x, None)`` for real data."""
    return (x.real, x.imag) if x.dtype.kind == "c" else (x, None)


def join(re: Any, im: Any, dtype: Any, out: Any) -> Any:
    """``re + 1j * im`` as ``dtype`` (one kernel on the device), written into ``out`` if given."""
    import torch

    result = torch.complex(_tensor(re), _tensor(im)).to(_torch_dtype(np.dtype(dtype)))
    target = None if out is None or any(s < 0 for s in out.strides) else _tensor(out, "output")
    if target is not None:
        target.copy_(result)
    return _finish(result, target, out)
