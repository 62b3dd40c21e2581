"""What several test files share: scipy's border modes, random data, one closeness check and
a dense torch convolution holding given weights.

Imported by the test modules (``from _helpers import ...``: pytest puts ``tests/`` on the
path). The references stay independent of sepconv: the mode names are scipy.ndimage's.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

#: scipy.ndimage's border modes (each spelling that behaves differently).
MODES = [
    "reflect",
    "constant",
    "nearest",
    "mirror",
    "wrap",
    "grid-mirror",
    "grid-constant",
    "grid-wrap",
]


def rand(shape: Any, seed: int = 0, dtype: Any = np.float64) -> np.ndarray:
    """Standard normal samples of ``shape`` from a seeded generator."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


#: The array libraries the filters run on.
BACKENDS = ["numpy", "dask", "torch"]


def run_on(backend: str, fn: Any, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """``fn(x, ...)`` with ``x`` as a numpy array, a dask array (several chunks, never
    thousands) or a torch tensor (native byte order), returned as a numpy array."""
    if backend == "numpy":
        return np.asarray(fn(x, *args, **kwargs))
    if backend == "dask":
        import dask.array as da

        chunks = tuple(max(3, n // 3) for n in x.shape)
        return np.asarray(fn(da.from_array(x, chunks=chunks), *args, **kwargs).compute())
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    return fn(t, *args, **kwargs).numpy()


def to_numpy(a: Any) -> np.ndarray:
    """float64 numpy copy of an array, a dask array or a torch tensor (any device)."""
    if hasattr(a, "detach"):  # torch
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def assert_close(got: Any, ref: Any, tol: float = 1e-12, scale: float | None = None) -> None:
    """``|got - ref| <= tol * scale`` everywhere, and the same shape.

    ``scale`` defaults to ``max(1, max |ref|)`` over the finite values of ``ref``; a NaN or
    infinite value in ``ref`` must be matched exactly (NaN by NaN, +Inf by +Inf).
    """
    ref = to_numpy(ref)
    got_f = to_numpy(got)
    assert got_f.shape == ref.shape
    if scale is None:
        finite = ref[np.isfinite(ref)]
        scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    diff = np.abs(got_f - ref)
    bad = ~(diff <= tol * scale)
    same_nonfinite = (np.isnan(got_f) & np.isnan(ref)) | (got_f == ref)
    bad &= ~same_nonfinite
    assert not bad.any(), f"max abs diff {np.nanmax(diff):.3g} > {tol * scale:.3g}"


def conv_with(weight: Any, bias: Any = None, **kw: Any) -> Any:
    """An ``nn.Conv*d`` holding ``weight`` ``(C_out, C_in / groups, *k)`` (and ``bias``), in
    ``weight``'s dtype; ``kw`` (``groups``, ``stride``, ``padding``, ...) go to the conv."""
    import torch
    from torch import nn

    convs = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    groups = kw.pop("groups", 1)
    conv = convs[weight.ndim - 2](
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        groups=groups,
        bias=bias is not None,
        dtype=weight.dtype,
        **kw,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


class FakeArray(np.ndarray):
    """A stand-in ``cupy.ndarray``: numpy memory, exchanged through DLPack; numpy's functions of
    it return it (as numpy's functions of cupy arrays return cupy arrays)."""

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        return result.view(FakeArray) if type(result) is np.ndarray else result


def fake_cupy() -> types.ModuleType:
    """A module to install as ``sys.modules['cupy']``: ``ndarray`` (:class:`FakeArray`) and
    ``from_dlpack``, all sepconv's cupy backend uses. CPU tensors made from it run through
    Triton's interpreter with ``SEPCONV_TORCH_ENGINE=triton``."""
    fake = types.ModuleType("cupy")
    fake.ndarray = FakeArray  # type: ignore[attr-defined]
    fake.from_dlpack = lambda obj: np.from_dlpack(obj).view(FakeArray)  # type: ignore[attr-defined]
    return fake
