"""The sepconv filters on torch tensors: CPU or CUDA, any float dtype, differentiable.

Every sepconv filter accepts a ``torch.Tensor`` and returns one on the same device; the
functions here are the same filters, with other array-likes converted by
``torch.as_tensor``::

    import torch, sepconv
    x = torch.rand(8, 3, 256, 256, device="cuda", requires_grad=True)  # batch, channel, H, W
    y = sepconv.gaussian_filter(x, 2.0, axes=(2, 3))                   # per image and channel
    y.sum().backward()                                                  # gradients flow

Semantics are those of the numpy API (scipy.ndimage's names, modes, origins, ``axes``,
``cval`` and ``output``; see :mod:`sepconv.filters`): the plan, the kernel's separable terms
and the constant-mode ``cval`` carry are shared, only the execution differs. Batch and channel
dimensions are simply axes that are not filtered.

Execution
---------
Pass along an axis
    The input is padded along that axis with ``index_select`` through the same extension
    table as the numpy engine (so every mode, reflect/mirror/wrap and kernels longer than the
    axis included, is exact, and the padding is differentiable), then correlated by
    ``conv1d``/``conv2d`` on a ``(outer, 1, n + k - 1, inner)`` view: no transposes.
Dense kernels (``method='direct'``)
    The padded input with the filtered axes moved last, through ``conv1d``/``conv2d``/
    ``conv3d``; more than three filtered axes run as a shift-and-add over the kernel's taps.
FFT (``method='fft'``)
    ``torch.fft.rfftn`` of the padded input, cropped to the valid part.

Precision: float64 tensors compute in float64, float32 in float32, float16 and bfloat16 in
float32 (the result is rounded back once); integer tensors are computed in floating point and
rounded to nearest and saturated, as in the numpy API. Gradients are taken with respect to the
input (kernels are constants). ``workers`` sets torch's CPU threads for the call (ignored on
CUDA). Only the input needs to be a tensor: kernels are numpy or specs as everywhere else.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from . import engine, filters
from ._modes import extension_table, saturation_bounds, work_dtype

__all__ = [
    "convolve",
    "convolve1d",
    "correlate",
    "correlate1d",
    "filter",
    "gaussian_filter",
    "gaussian_filter1d",
    "gaussian_gradient_magnitude",
    "gaussian_laplace",
    "laplace",
    "prewitt",
    "sobel",
    "uniform_filter",
    "uniform_filter1d",
]

Pass = tuple[int, np.ndarray, int]
Term = tuple[float, Sequence[Pass]]

_LOW = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# the backend protocol used by sepconv.filters
# ----------------------------------------------------------------------------------------------


def check_input(x: torch.Tensor) -> torch.Tensor:
    """Real tensors only: any float dtype, or integers (computed in floating point)."""
    if x.is_complex():
        raise TypeError(
            f"input must be real; got complex dtype {x.dtype} (filter .real and .imag separately)"
        )
    return x


def _torch_dtype(dtype: Any, name: str = "output") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        try:
            dt = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
        except TypeError:
            raise TypeError(
                f"{name} must be None, a dtype or a tensor, got {type(dtype).__name__}"
            ) from None
    if dt.is_complex:
        raise TypeError(f"{name} dtype must be a real float, integer or bool type, got {dt}")
    return dt


def resolve_output(output: Any, x: torch.Tensor) -> tuple[torch.dtype, torch.Tensor | None]:
    """None (the input's dtype), a torch or numpy dtype, or a tensor to write into."""
    if output is None:
        return x.dtype, None
    if isinstance(output, torch.Tensor):
        if output.shape != x.shape:
            raise ValueError(
                f"output must have the input's shape {tuple(x.shape)}, got {tuple(output.shape)}"
            )
        return _torch_dtype(output.dtype), output
    if isinstance(output, np.ndarray):
        raise TypeError("output must be None, a dtype or a tensor for a tensor input, got ndarray")
    return _torch_dtype(output), None


def run_terms(
    x: torch.Tensor,
    terms: Sequence[Term],
    modes: dict[int, str],
    cval: float,
    dtype: torch.dtype,
    out: torch.Tensor | None,
    workers: int | None,
    kernel: tuple[np.ndarray, tuple[int, ...], Sequence[int]] | None = None,
) -> torch.Tensor:
    """``sum_r weight_r * passes_r(x)`` on the tensor's device.

    ``kernel`` = (dense kernel, axes, origins) when the terms factorize a kernel given to
    ``correlate``: NaN/Inf data then gets the direct correlation's result (see
    :mod:`sepconv.engine.nonfinite`).
    """
    with _threads(x, workers):
        xw = _work(x, dtype)
        if xw.numel() == 0:
            return _finish(xw, dtype, out)
        if kernel is None:
            return _finish(_terms(xw, terms, modes, cval), dtype, out)
        result = _nonfinite_safe(xw, cval, *kernel, modes, lambda v, c: _terms(v, terms, modes, c))
        return _finish(result, dtype, out)


def run_dense(
    x: torch.Tensor,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    cval: float,
    method: str,
    dtype: torch.dtype,
    out: torch.Tensor | None,
    workers: int | None,
) -> torch.Tensor:
    """Direct (convNd) or FFT correlation with a dense kernel."""
    with _threads(x, workers):
        xw = _work(x, dtype)
        if xw.numel() == 0:
            return _finish(xw, dtype, out)
        result = _nonfinite_safe(
            xw,
            cval,
            kernel,
            axes,
            origins,
            modes,
            lambda v, c: _dense(v, kernel, axes, origins, modes, c, method),
        )
        return _finish(result, dtype, out)


def gradient_magnitude(
    x: torch.Tensor,
    passes: Sequence[Sequence[Pass]],
    modes: dict[int, str],
    cval: float,
    dtype: torch.dtype,
    out: torch.Tensor | None,
    workers: int | None,
) -> torch.Tensor:
    """``sqrt(sum_i (passes_i applied to x) ** 2)``."""
    with _threads(x, workers):
        xw = _work(x, dtype)
        if xw.numel() == 0:
            return _finish(xw, dtype, out)
        acc = torch.zeros_like(xw)
        nan = torch.zeros_like(xw, dtype=torch.bool)
        for p in passes:  # hypot: sqrt(a^2 + d^2) without overflowing where d^2 would
            d = _terms(xw, [(1.0, p)], modes, cval)
            acc = torch.hypot(acc, d)
            nan = nan | torch.isnan(d)  # hypot(inf, nan) is inf; sqrt(inf^2 + nan^2) is NaN
        return _finish(torch.where(nan, torch.full_like(acc, math.nan), acc), dtype, out)


# ----------------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _threads(x: torch.Tensor, workers: int | None) -> Iterator[None]:
    if workers is None or x.device.type != "cpu":
        if workers is not None:
            engine.check_workers(workers)
        yield
        return
    n = engine.check_workers(workers)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _np_dtype(dt: torch.dtype) -> np.dtype:
    """The numpy dtype of the same kind (float16/bfloat16 count as float32: they are
    computed in float32)."""
    if dt in _LOW:
        return np.dtype(np.float32)
    return torch.empty(0, dtype=dt).numpy().dtype


def _work(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tensor in its compute dtype: the numpy API's rule (``_modes.work_dtype``) for input
    and result dtypes; float16/bfloat16 are computed in float32."""
    wd = work_dtype(_np_dtype(x.dtype), _np_dtype(dtype))
    return x.to(torch.float32 if wd == np.float32 else torch.float64)


def _finish(result: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None) -> torch.Tensor:
    if not dtype.is_floating_point:
        # round and saturate as the numpy engine does: values past the integer range go to
        # its ends exactly, NaN to 0
        if dtype == torch.bool:
            lo, hi = 0, 1
        else:
            info = torch.iinfo(dtype)
            lo, hi = int(info.min), int(info.max)
        flo, fhi = saturation_bounds(lo, hi, _np_dtype(result.dtype))
        rounded = torch.round(torch.clamp(result, flo, fhi))
        rounded = torch.where(result > fhi, torch.full_like(rounded, fhi), rounded)
        ints = rounded.nan_to_num(0.0).to(torch.int64 if dtype != torch.uint64 else dtype)
        ints = torch.where(result > fhi, torch.full_like(ints, hi), ints)
        ints = torch.where(result < flo, torch.full_like(ints, lo), ints)
        result = ints
    result = result.to(dtype)
    if out is None:
        return result
    out.copy_(result)
    return out


def _table(n: int, k: int, offset: int, mode: str, device: torch.device):
    table = extension_table(n, k, offset, mode)
    outside = table < 0
    idx = torch.from_numpy(np.where(outside, 0, table)).to(device)
    mask = torch.from_numpy(outside).to(device) if outside.any() else None
    return idx, mask


def _pad(x: torch.Tensor, axis: int, k: int, offset: int, mode: str, cval: float) -> torch.Tensor:
    """``x`` extended along ``axis`` to ``n + k - 1`` by ``mode`` (differentiable)."""
    idx, mask = _table(x.shape[axis], k, offset, mode, x.device)
    padded = x.index_select(axis, idx)
    if mask is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        padded = padded.masked_fill(mask.reshape(shape), cval)
    return padded


def _pass(x: torch.Tensor, axis: int, w: np.ndarray, origin: int, mode: str, cval: float):
    """One 1-D correlation along ``axis``: pad, then a valid convolution on a 3-D/4-D view."""
    k = len(w)
    padded = _pad(x, axis, k, k // 2 + origin, mode, cval).contiguous()
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    length = padded.shape[axis]
    weight = torch.tensor(np.asarray(w), dtype=x.dtype, device=x.device)
    if inner == 1:
        y = F.conv1d(padded.reshape(outer, 1, length), weight.reshape(1, 1, k))
    else:
        y = F.conv2d(padded.reshape(outer, 1, length, inner), weight.reshape(1, 1, k, 1))
    return y.reshape(x.shape)


def _terms(
    x: torch.Tensor, terms: Sequence[Term], modes: dict[int, str], cval: float
) -> torch.Tensor:
    total: torch.Tensor | None = None
    for weight, passes in terms:
        cur = x
        c = cval
        for axis, w, origin in sorted(passes, key=lambda p: p[0]):
            cur = _pass(cur, axis, w, origin, modes[axis], c)
            c = c * float(np.sum(w))  # constant mode: the padded value after this pass
        term = cur * weight if weight != 1.0 or cur is x else cur
        total = term if total is None else total + term
    if total is None:  # pragma: no cover - filters always pass at least one term
        return torch.zeros_like(x)
    return total


def _dense(
    x: torch.Tensor,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    cval: float,
    method: str,
) -> torch.Tensor:
    padded = x
    for a, k, o in zip(axes, kernel.shape, origins, strict=True):
        padded = _pad(padded, a, k, k // 2 + o, modes[a], cval)
    if method == "fft":
        return _fft_valid(padded, kernel, axes)
    return _direct_valid(padded, kernel, axes)


def _nonfinite_safe(
    x: torch.Tensor,
    cval: float,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    run: Callable[[torch.Tensor, float], torch.Tensor],
) -> torch.Tensor:
    """``run(x, cval)`` with NaN/Inf handled as :mod:`sepconv.engine.nonfinite` does: the plan
    runs on finite data; the outputs non-finite values reach through the kernel's non-zero
    taps are set from exact indicator counts (NaN; +Inf/-Inf after the taps' signs)."""
    finite = bool(torch.isfinite(x).all())
    if finite and math.isfinite(cval):
        return run(x, cval)
    nan, pos, neg = torch.isnan(x), x == math.inf, x == -math.inf
    x0 = torch.where(nan | pos | neg, torch.zeros_like(x), x)
    result = run(x0, cval if math.isfinite(cval) else 0.0)
    constant = any(modes[a] == "constant" for a in axes)
    c = cval if constant else 0.0

    def count(ind: torch.Tensor, cval_in: bool, support: np.ndarray) -> torch.Tensor | None:
        if not support.any() or not (cval_in or bool(ind.any())):
            return None
        method = "fft" if np.count_nonzero(support) > 32 else "direct"
        k = support.astype(np.float64)
        cnt = _dense(ind.to(x.dtype), k, axes, origins, modes, float(cval_in), method)
        return cnt > 0.5

    def union(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        return b if a is None else (a if b is None else a | b)

    def fill(res: torch.Tensor, mask: torch.Tensor | None, value: float) -> torch.Tensor:
        return res if mask is None else torch.where(mask, torch.full_like(res, value), res)

    up = union(count(pos, c == math.inf, kernel > 0), count(neg, c == -math.inf, kernel < 0))
    down = union(count(pos, c == math.inf, kernel < 0), count(neg, c == -math.inf, kernel > 0))
    result = fill(result, up, math.inf)
    result = fill(result, down, -math.inf)
    if up is not None and down is not None:
        result = fill(result, up & down, math.nan)
    return fill(result, count(nan, math.isnan(c), kernel != 0), math.nan)


def _direct_valid(padded: torch.Tensor, kernel: np.ndarray, axes: Sequence[int]) -> torch.Tensor:
    """Valid N-D correlation of ``padded`` with ``kernel`` (kernel axis i on ``axes[i]``)."""
    ndim, d = padded.ndim, len(axes)
    others = [a for a in range(ndim) if a not in axes]
    perm = [*others, *axes]
    moved = padded.permute(perm)
    batch_shape = moved.shape[: len(others)]
    spatial = moved.shape[len(others) :]
    K = torch.tensor(np.asarray(kernel), dtype=padded.dtype, device=padded.device)
    if d <= 3:
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        y = conv(moved.reshape(-1, 1, *spatial), K.reshape(1, 1, *K.shape))
        y = y.reshape(*batch_shape, *y.shape[2:])
    else:  # shift-and-add over the non-zero taps
        valid = [s - k + 1 for s, k in zip(spatial, kernel.shape, strict=True)]
        y = torch.zeros((*batch_shape, *valid), dtype=padded.dtype, device=padded.device)
        lead = (slice(None),) * len(others)
        for tap in zip(*np.nonzero(kernel), strict=True):
            sl = tuple(slice(int(t), int(t) + n) for t, n in zip(tap, valid, strict=True))
            y = y + K[tuple(int(t) for t in tap)] * moved[lead + sl]
    inverse = [perm.index(a) for a in range(ndim)]
    return y.permute(inverse)


def _fft_valid(padded: torch.Tensor, kernel: np.ndarray, axes: Sequence[int]) -> torch.Tensor:
    """Valid correlation by FFT over ``axes`` (circular wrap-around falls in the cropped part)."""
    order = np.argsort(axes)
    ax = [int(a) for a in np.asarray(axes)[order]]
    # .copy(): a 1-element flipped view keeps its negative strides through ascontiguousarray
    k = kernel.transpose(order)[(slice(None, None, -1),) * kernel.ndim].copy()
    size = [padded.shape[a] for a in ax]
    kshape = [1] * padded.ndim
    for a, n in zip(ax, k.shape, strict=True):
        kshape[a] = n
    # float64 transforms: an FFT's error is relative to the array's largest value (see
    # sepconv.engine.fft), too coarse in float32
    K = torch.tensor(k, dtype=torch.float64, device=padded.device).reshape(kshape)
    fx = torch.fft.rfftn(padded.to(torch.float64), s=size, dim=ax)
    fk = torch.fft.rfftn(K, s=size, dim=ax)
    full = torch.fft.irfftn(fx * fk, s=size, dim=ax).to(padded.dtype)
    sl: list[slice] = [slice(None)] * padded.ndim
    for a, n in zip(ax, k.shape, strict=True):
        sl[a] = slice(n - 1, padded.shape[a])
    return full[tuple(sl)]


# ----------------------------------------------------------------------------------------------
# public functions: the sepconv filters, with array-likes converted to tensors
# ----------------------------------------------------------------------------------------------

Fn = TypeVar("Fn", bound=Callable[..., Any])


def _tensor(fn: Fn) -> Fn:
    @functools.wraps(fn)
    def wrapper(input: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input, np.ndarray) and not input.flags.writeable:
            input = torch.tensor(input)  # a copy: torch has no read-only tensors
        elif not isinstance(input, torch.Tensor):
            input = torch.as_tensor(input)
        return fn(input, *args, **kwargs)

    wrapper.__module__ = __name__
    wrapper.__doc__ = (
        f":func:`sepconv.{fn.__name__}` of a torch tensor (same parameters, same result).\n\n"
        "    Other array-likes are converted by ``torch.as_tensor`` first. The result is a\n"
        "    tensor on the input's device, differentiable with respect to the input; ``output``\n"
        "    may be a torch/numpy dtype or a tensor to write into.\n"
    )
    return wrapper  # type: ignore[return-value]


correlate1d = _tensor(filters.correlate1d)
convolve1d = _tensor(filters.convolve1d)
uniform_filter1d = _tensor(filters.uniform_filter1d)
gaussian_filter1d = _tensor(filters.gaussian_filter1d)
gaussian_filter = _tensor(filters.gaussian_filter)
uniform_filter = _tensor(filters.uniform_filter)
sobel = _tensor(filters.sobel)
prewitt = _tensor(filters.prewitt)
laplace = _tensor(filters.laplace)
gaussian_laplace = _tensor(filters.gaussian_laplace)
gaussian_gradient_magnitude = _tensor(filters.gaussian_gradient_magnitude)
correlate = _tensor(filters.correlate)
convolve = _tensor(filters.convolve)
filter = _tensor(filters.filter)
