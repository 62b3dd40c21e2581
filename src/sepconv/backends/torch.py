"""The torch backend: jobs on torch tensors, on the tensor's device, differentiable.

Pass along an axis
    The input is padded along that axis with ``index_select`` through the same extension
    table as the numpy engine (so every mode, reflect/mirror/wrap and kernels longer than the
    axis included, is exact, and the padding is differentiable), then correlated by
    ``conv1d``/``conv2d`` on a ``(outer, 1, n + k - 1, inner)`` view: no transposes.
Dense kernels (``method='direct'``)
    The padded input with the filtered axes moved last, through ``conv1d``/``conv2d``/
    ``conv3d``; more than three filtered axes run as a shift-and-add over the kernel's taps.
FFT (``method='fft'``)
    ``torch.fft.rfftn`` of the padded input in float64, cropped to the valid part.

See :mod:`sepconv.torch` (the public facade) for precision and threads.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._modes import complex_of as _np_complex_of
from .._modes import extension_table, native, saturation_bounds, work_dtype
from .._torch_threads import torch_threads
from ..job import Job, chain, dense_job, ordered

__all__ = [
    "ENGINES",
    "check_input",
    "device_kind",
    "gpu_engine",
    "has_nonfinite",
    "resolve_output",
    "run",
]

_LOW = (torch.float16, torch.bfloat16)
#: Index tensors of border extensions kept on their devices (:func:`_table`, :func:`_fold_index`).
_INDEX_CACHE = 256


def check_input(x: torch.Tensor) -> torch.Tensor:
    """Any float, complex, integer or bool tensor."""
    return x


def _torch_dtype(dtype: Any, name: str = "output") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        try:  # a byte order means nothing for a tensor: '>f8' is float64
            dt = torch.from_numpy(np.empty(0, dtype=native(np.dtype(dtype)))).dtype
        except TypeError:
            raise TypeError(
                f"{name} must be None, a dtype torch has or a tensor, got {dtype!r}"
            ) from None
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


def device_kind(x: torch.Tensor) -> str:
    """Whose time model the planner uses: ``'cuda'`` for CUDA tensors, else ``'cpu'``."""
    return "cuda" if x.device.type == "cuda" else "cpu"


def has_nonfinite(x: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds NaN or Inf."""
    return x.is_floating_point() and not bool(torch.isfinite(x).all())


def run(
    x: torch.Tensor, job: Job, dtype: torch.dtype, out: torch.Tensor | None, workers: int | None
) -> torch.Tensor:
    """``job`` on ``x`` (on its device); the result has ``dtype`` (or is ``out``).

    CUDA tensors run on the Triton engine (:func:`gpu_engine`; differentiable: the gradient is
    the job's adjoint on the same engine, :class:`_OnEngine`), others on torch's own
    convolutions (differentiable by torch's autograd; on CUDA without TF32).
    """
    with _threads(x, workers), _ieee(x):
        xw = _work(x, dtype, job.cval)
        if xw.numel() == 0:
            return _finish(xw, dtype, out)
        tg = gpu_engine(xw)

        def terms(v: torch.Tensor, ts: Any, c: float) -> torch.Tensor:
            if tg is not None:
                return _on_engine(v, replace(job, terms=tuple(ts), cval=c), tg)
            return _terms(v, ts, job.modes, c)

        if job.reduction == "hypot":
            acc = torch.zeros_like(xw)
            nan = torch.zeros_like(xw, dtype=torch.bool)
            for term in job.terms:  # hypot: sqrt(a^2 + d^2) without overflowing
                d = terms(xw, (term,), job.cval)
                acc = _Hypot.apply(acc, d)
                nan = nan | torch.isnan(d)  # hypot(inf, nan) is inf; the root of a sum is NaN
            return _finish(torch.where(nan, torch.full_like(acc, math.nan), acc), dtype, out)
        if job.kernel is None:
            return _finish(terms(xw, job.terms, job.cval), dtype, out)
        kernel, axes, origins = job.kernel, job.axes, job.origins
        if not job.dense:

            def compute(v: torch.Tensor, c: float) -> torch.Tensor:
                return terms(v, job.terms, c)
        elif job.method == "direct" and tg is not None:

            def compute(v: torch.Tensor, c: float) -> torch.Tensor:
                return _on_engine(v, replace(job, cval=c), tg)
        else:

            def compute(v: torch.Tensor, c: float) -> torch.Tensor:
                return _dense(v, replace(job, cval=c))

        result = _nonfinite_safe(xw, job.cval, kernel, axes, origins, job.modes, compute)
        return _finish(result, dtype, out)


#: Which engine runs torch tensors: ``'auto'`` (the Triton engine for CUDA tensors, torch's
#: convolutions otherwise), ``'torch'`` (always torch's), or ``'triton'``
#: (also CPU tensors, through Triton's interpreter when ``TRITON_INTERPRET=1``: how the tests
#: run the GPU path without a GPU). Set by the environment variable ``SEPCONV_TORCH_ENGINE``.
ENGINES = ("auto", "torch", "triton")


def gpu_engine(x: torch.Tensor) -> Any:
    """The Triton engine module for ``x``, or None for torch's own convolutions."""
    choice = os.environ.get("SEPCONV_TORCH_ENGINE", "auto")
    if choice not in ENGINES:
        raise ValueError(f"SEPCONV_TORCH_ENGINE must be one of {list(ENGINES)}, got {choice!r}")
    if choice == "torch":
        return None
    if x.device.type != "cuda" and not (
        choice == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    ):
        return None
    try:
        from ..engine import triton_gpu
    except ImportError:  # no triton: torch's convolutions on the GPU too
        return None
    return triton_gpu


def _on_engine(x: torch.Tensor, job: Job, tg: Any) -> torch.Tensor:
    """A linear job (terms or a direct dense kernel) on the Triton engine ``tg``, through
    :class:`_OnEngine` when a gradient is needed."""
    if torch.is_grad_enabled() and x.requires_grad:
        result: torch.Tensor = _OnEngine.apply(x, job, tg)
        return result
    if job.dense:
        return tg.direct(x, job, dtype=x.dtype)
    return tg.separable(x, job, dtype=x.dtype)


class _OnEngine(torch.autograd.Function):
    """A job on the Triton engine, differentiable: the gradient is the job's adjoint, run on
    the same engine (exact IEEE arithmetic both ways, no TF32).

    A pass ``y[i] = sum_j w[j] * e[i + j]`` reads the border extension ``e[p] = x[t[p]]``
    (``t``: ``_modes.extension_table``; constant mode reads ``cval``, which has no gradient).
    Its adjoint is the full correlation of the gradient with the flipped taps, ``ge[p] =
    sum_j w[j] * g[p - j]`` for ``p < n + k - 1`` (a constant-mode pass with zero ``cval`` on
    the gradient extended by ``k - 1`` zeros, origin ``(k - 1) // 2``), folded back onto the
    input through the table (``index_add``). A term's passes run backwards in reverse order;
    a dense kernel is flipped on every axis and folded axis by axis. The backward calls this
    function again, so second derivatives work too.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, job: Job, tg: Any) -> torch.Tensor:
        ctx.job, ctx.tg = job, tg
        if job.dense:
            return tg.direct(x, job, dtype=x.dtype)
        return tg.separable(x, job, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _adjoint(g.contiguous(), ctx.job, ctx.tg), None, None


def _adjoint(g: torch.Tensor, job: Job, tg: Any) -> torch.Tensor:
    """``job``'s linear part transposed, applied to ``g`` (see :class:`_OnEngine`)."""
    if job.dense:
        kernel = job.dense_kernel()
        flipped = np.ascontiguousarray(kernel[(slice(None, None, -1),) * kernel.ndim])
        extended = g
        for a, k in zip(job.axes, kernel.shape, strict=True):
            extended = _extend(extended, a, k - 1)
        full = _OnEngine.apply(
            extended,
            dense_job(
                flipped,
                job.axes,
                [(k - 1) // 2 for k in kernel.shape],
                dict.fromkeys(job.axes, "constant"),
                0.0,
                "direct",
            ),
            tg,
        )
        for a, k, o in zip(job.axes, kernel.shape, job.origins, strict=True):
            full = _fold(full, a, g.shape[a], k, k // 2 + o, job.modes[a])
        return full
    total: torch.Tensor | None = None
    for weight, passes in job.terms:
        cur = g
        for axis, w, origin in reversed(ordered(passes)):
            k = len(w)
            single = Job(
                ((1.0, ((axis, np.ascontiguousarray(w[::-1]), (k - 1) // 2),)),),
                {axis: "constant"},
                0.0,
            )
            full = _OnEngine.apply(_extend(cur, axis, k - 1), single, tg)
            cur = _fold(full, axis, cur.shape[axis], k, k // 2 + origin, job.modes[axis])
        term = cur * weight if weight != 1.0 or cur is g else cur
        total = term if total is None else total + term
    assert total is not None  # jobs always hold at least one term
    return total


def _extend(x: torch.Tensor, axis: int, count: int) -> torch.Tensor:
    """``x`` with ``count`` zeros appended along ``axis`` (differentiable)."""
    if count == 0:
        return x
    shape = list(x.shape)
    shape[axis] = count
    return torch.cat([x, x.new_zeros(shape)], dim=axis)


def _fold(ge: torch.Tensor, axis: int, n: int, k: int, offset: int, mode: str) -> torch.Tensor:
    """The adjoint of the border extension along ``axis``: each of the ``n + k - 1`` extended
    positions of ``ge`` added onto the input position it reads (positions reading ``cval``
    dropped)."""
    src, dst = _fold_index(n, k, offset, mode, ge.device)
    shape = list(ge.shape)
    shape[axis] = n
    return ge.new_zeros(shape).index_add(axis, dst, ge.index_select(axis, src))


def _ieee(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """cuDNN convolutions in IEEE float32 (no TF32, on by default in torch) during the call, for
    CUDA tensors: a float32 filter is float32-exact on the GPU too."""
    if x.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(**{**_CUDNN_KEEP, "allow_tf32": False})


#: Every cuDNN flag None (left as it is); the flags' names differ between torch versions.
_CUDNN_KEEP: dict[str, Any] = dict.fromkeys(
    inspect.signature(torch.backends.cudnn.flags).parameters
)


@contextlib.contextmanager
def _threads(x: torch.Tensor, workers: int | None) -> Iterator[None]:
    """``workers`` threads for torch's CPU kernels during the call (ignored on CUDA)."""
    if workers is None:
        n = None
    else:  # numba's thread bound (imported here only: a GPU-only setup may lack numba)
        from ..engine import check_workers

        n = check_workers(workers)
    with torch_threads(n if x.device.type == "cpu" else None):
        yield


def _np_dtype(dt: torch.dtype) -> np.dtype:
    """The numpy dtype of the same kind (float16/bfloat16 count as float32: they are
    computed in float32)."""
    if dt in _LOW:
        return np.dtype(np.float32)
    return torch.empty(0, dtype=dt).numpy().dtype


def _work(x: torch.Tensor, dtype: torch.dtype, cval: float = 0.0) -> torch.Tensor:
    """The tensor in its compute dtype: the numpy API's rule (``_modes.work_dtype``) for input
    and result dtypes (and ``cval``); float16/bfloat16 are computed in float32."""
    wd = work_dtype(_np_dtype(x.dtype), _np_dtype(dtype), cval)
    return x.to(torch.float32 if wd == np.float32 else torch.float64)


def _finish(result: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None) -> torch.Tensor:
    if not (dtype.is_floating_point or dtype.is_complex):
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


@functools.lru_cache(maxsize=_INDEX_CACHE)
def _fold_index(
    n: int, k: int, offset: int, mode: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(extended positions that read the input, the input position each reads)`` on
    ``device``, cached (never modified): a backward pass uploads no index tensors."""
    table = extension_table(n, k, offset, mode)
    inside = np.flatnonzero(table >= 0)
    with torch.inference_mode(False):  # cached: usable by autograd after an inference call
        return torch.from_numpy(inside).to(device), torch.from_numpy(table[inside]).to(device)


@functools.lru_cache(maxsize=_INDEX_CACHE)
def _table(n: int, k: int, offset: int, mode: str, device: torch.device):
    """``(index, mask of the cval positions or None)`` of the border extension on ``device``,
    cached (never modified)."""
    table = extension_table(n, k, offset, mode)
    outside = table < 0
    with torch.inference_mode(False):  # cached: usable by autograd after an inference call
        idx = torch.from_numpy(np.where(outside, 0, table)).to(device)
        mask = torch.from_numpy(outside).to(device) if outside.any() else None
    return idx, mask


class _Hypot(torch.autograd.Function):
    """``torch.hypot`` whose gradient at ``hypot(a, b) == 0`` is 0, not ``0 / 0`` (as
    ``torch.linalg.vector_norm``'s: a flat region of a gradient magnitude trains)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = torch.hypot(a, b)
        ctx.save_for_backward(a, b, h)
        return h

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, h = ctx.saved_tensors
        zero = h == 0
        scale = torch.where(zero, torch.zeros_like(grad), grad / torch.where(zero, 1.0, h))
        return scale * a, scale * b


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
    x: torch.Tensor, terms: Sequence[Any], modes: dict[int, str] | Any, cval: float
) -> torch.Tensor:
    total: torch.Tensor | None = None
    for weight, passes in terms:
        cur = x
        for (axis, w, origin), c in chain(passes, cval):
            cur = _pass(cur, axis, w, origin, modes[axis], c)
        term = cur * weight if weight != 1.0 or cur is x else cur
        total = term if total is None else total + term
    if total is None:  # pragma: no cover - jobs always hold at least one term
        return torch.zeros_like(x)
    return total


def _dense(x: torch.Tensor, job: Job) -> torch.Tensor:
    """A dense job by torch's convolution ('direct') or FFTs ('fft')."""
    kernel, padded = job.dense_kernel(), x
    for a, k, o in zip(job.axes, kernel.shape, job.origins, strict=True):
        padded = _pad(padded, a, k, k // 2 + o, job.modes[a], job.cval)
    if job.method == "fft":
        return _fft_valid(padded, kernel, job.axes)
    return _direct_valid(padded, kernel, job.axes)


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
    taps are set from exact indicator counts (NaN; +Inf/-Inf after the taps' signs).

    ``run`` always sees finite data and ``cval``, so a non-finite value in a float32 result is
    an overflow: of the result, or of a partial sum only (float32 data near its maximum, a
    dense kernel's partial sums or a low-rank plan's terms, where scipy's float64 sums do
    not overflow). That call is computed again in float64 and rounded to float32 once, as the
    numpy engine does."""

    def checked(v: torch.Tensor, c: float) -> torch.Tensor:
        r = run(v, c)
        if v.dtype == torch.float32 and not bool(torch.isfinite(r).all()):
            r = run(v.double(), c).to(torch.float32)
        return r

    finite = bool(torch.isfinite(x).all())
    if finite and math.isfinite(cval):
        return checked(x, cval)
    nan, pos, neg = torch.isnan(x), x == math.inf, x == -math.inf
    x0 = torch.where(nan | pos | neg, torch.zeros_like(x), x)
    result = checked(x0, cval if math.isfinite(cval) else 0.0)
    constant = any(modes[a] == "constant" for a in axes)
    c = cval if constant else 0.0

    def count(ind: torch.Tensor, cval_in: bool, support: np.ndarray) -> torch.Tensor | None:
        if not support.any() or not (cval_in or bool(ind.any())):
            return None
        method = "fft" if np.count_nonzero(support) > 32 else "direct"
        k = support.astype(np.float64)
        cnt = _dense(ind.to(x.dtype), dense_job(k, axes, origins, modes, float(cval_in), method))
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
# complex data: filtered as its real and imaginary parts (sepconv.filters assembles them)
# ----------------------------------------------------------------------------------------------


def is_complex(dtype: torch.dtype) -> bool:
    return dtype.is_complex


def complex_of(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype a complex result of ``dtype`` data has (float32 -> complex64)."""
    if dtype.is_complex:
        return dtype
    # numpy's rule (8/16-bit integers and float32 -> complex64); float16/bfloat16 as float32
    return torch.complex64 if _np_complex_of(_np_dtype(dtype)) == np.complex64 else torch.complex128


def real_of(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of each part of a complex ``dtype`` (complex64 -> float32)."""
    return dtype.to_real()


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real and imaginary parts; ``(x, None)`` for real data."""
    return (x.real, x.imag) if x.is_complex() else (x, None)


def join(
    re: torch.Tensor, im: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None
) -> torch.Tensor:
    """``re + 1j * im`` as ``dtype`` (differentiable), written into ``out`` if given."""
    result = torch.complex(re, im).to(dtype)
    if out is None:
        return result
    out.copy_(result)
    return out
