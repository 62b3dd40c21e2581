"""The dask backend: a job per output chunk, from a window of the chunk plus its halo.

Every chunk of the output is computed from a *window*: the chunk plus the halo its kernel
reads, assembled from the neighbouring chunks and, at the true array edges only, from the
border extension of the mode (the same ``_modes.extension_table`` the in-memory engine uses,
so reflect/mirror/wrap and kernels longer than the axis come out the same). The numba engine
then runs on the window and the halo is cropped away. See :mod:`sepconv.dask` (the public
facade: ``strategy``, ``store`` and the filters) for the strategies and the memory bound.

Chunks of another array library (a dask array whose ``_meta`` is a ``cupy.ndarray``) run
through that library's backend instead of the numba engine: each window is assembled by the
chunks' own indexing and concatenation, handed to the backend's ``run`` (for CuPy: the GPU
engine, through DLPack) and cropped; the result's chunks stay of that library.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any, cast

import dask.array as da
import numpy as np

from .. import engine
from .._modes import check_input as _check_numpy_input
from .._modes import complex_of, extension_table, is_complex, native, real_of, work_dtype
from .._modes import resolve_output as _resolve_numpy_output
from ..job import Job, Term, chain, halos

__all__ = [
    "STRATEGIES",
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

#: How separable and low-rank filters are split into tasks (see :mod:`sepconv.dask`).
STRATEGIES = ("auto", "passes", "fused")
STRATEGY: contextvars.ContextVar[str] = contextvars.ContextVar("sepconv_dask_strategy")


def check_input(x: da.Array) -> da.Array:
    """The numpy dtype rules (float32/64 or integers), and known chunk sizes; chunks of another
    array library (CuPy) also pass that library's backend's check."""
    _check_numpy_input(np.empty(0, dtype=x.dtype))
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("input has unknown chunk sizes (nan); call x.compute_chunk_sizes() first")
    backend = _chunk_backend(x._meta)
    if backend is not None:
        backend.check_input(x._meta)
    return x


def _chunk_backend(block: Any) -> ModuleType | None:
    """The backend of a chunk's array library, or None for numpy chunks (the numba engine)."""
    if type(block) is np.ndarray:
        return None
    from . import for_type
    from . import numpy as numpy_backend

    backend = for_type(type(block))
    return None if backend is numpy_backend else backend


def device_kind(x: da.Array) -> str:
    """Whose time model the planner uses: the chunks' backend's (``'cuda'`` for CuPy chunks),
    ``'cpu'`` for numpy chunks."""
    backend = _chunk_backend(x._meta)
    kind = getattr(backend, "device_kind", None)
    return "cpu" if kind is None else str(kind(x._meta))


def resolve_output(output: Any, x: da.Array) -> tuple[np.dtype, Any]:
    """None or a dtype (lazy result), or an array-like target (numpy, zarr) to store into."""
    if isinstance(output, da.Array):
        raise TypeError(
            "output must be None, a dtype or an array to store into (numpy, zarr) for a dask "
            "input, got a dask array (dask arrays are not written into: use the returned array)"
        )
    dtype_like = output is None or isinstance(output, (str, type, np.dtype))
    if not dtype_like and _chunk_backend(x._meta) is not None:
        raise TypeError(
            f"output must be None or a dtype for a dask array of {type(x._meta).__name__} "
            f"chunks (device memory), got {type(output).__name__}; store the result yourself"
        )
    if output is None or isinstance(output, np.ndarray) or not hasattr(output, "__setitem__"):
        return _resolve_numpy_output(output, cast(Any, x))
    shape = tuple(getattr(output, "shape", ()))
    if shape != x.shape:
        raise ValueError(f"output must have the input's shape {x.shape}, got {shape}")
    dt = np.dtype(output.dtype)
    _check_numpy_input(np.empty(0, dtype=dt), "output")
    return dt, output


def has_nonfinite(x: da.Array) -> bool:
    """Whether a dask array may hold NaN or Inf: any floating-point one (knowing would mean
    computing the lazy array now; the only cost of the caution is that passes longer than
    their axis are not folded)."""
    return x.dtype.kind == "f"


def has_nonfinite_exact(x: da.Array) -> bool:
    """Whether a dask array holds NaN or Inf, computed (one read of the data): asked only
    where the answer saves far more (a mixed-sign pass much longer than its axis, folded)."""
    return x.dtype.kind == "f" and not bool(da.isfinite(x).all().compute())


def run(x: da.Array, job: Job, dtype: np.dtype, out: Any, workers: int | None) -> Any:
    """``job`` on ``x``, lazily: a dask array of ``dtype`` (or ``out`` after storing into it).

    ``workers`` sets the engine's threads per chunk task (default 1: dask already runs one
    task per core). Dense jobs and jobs whose terms factorize a dense kernel (``correlate``,
    where NaN/Inf must get the direct correlation's result) run each chunk in one window with
    the whole halo; other separable jobs run pass by pass or fused (:func:`choose`).
    """
    nthreads = 1 if workers is None else engine.check_workers(workers)
    xw = x.astype(work_dtype(x.dtype, dtype, job.cval))
    if xw.size == 0:
        return _finish(xw, dtype, out)
    if job.reduction == "hypot":
        result = _hypot(xw, job, nthreads)
    elif job.dense or job.kernel is not None:
        fn = functools.partial(_job_block, job=job, halos=job.halos(), nthreads=nthreads)
        result = _windowed(xw, job.halos(), job.modes, job.cval, fn)
    else:
        result = _terms(xw, job, nthreads)
    return _finish(result, dtype, out)


def _hypot(xw: da.Array, job: Job, nthreads: int) -> da.Array:
    """``sqrt(sum_r term_r ** 2)`` by ``hypot``, NaN wherever a term is NaN."""
    acc = nan = None
    for term in job.terms:
        d = _terms(xw, Job((term,), job.modes, job.cval), nthreads)
        acc = abs(d) if acc is None else da.hypot(acc, d)
        nan = da.isnan(d) if nan is None else nan | da.isnan(d)  # hypot(inf, nan) is inf
    assert acc is not None and nan is not None
    return da.where(nan, np.nan, acc)


def _round_block(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    backend = _chunk_backend(block)
    if backend is not None:  # the backend's own rounding, by a one-tap identity pass
        return backend.run(block, _IDENTITY, dtype, None, 1)
    out = np.empty(block.shape, dtype=native(dtype))
    with _engine_guard(), engine.threads(1):
        engine.round_saturate(block, out)
    return out if out.dtype == dtype else out.astype(dtype)


#: The job that leaves a block as it is: one pass of the tap 1 along axis 0.
_IDENTITY = Job(((1.0, ((0, np.ones(1), 0),)),), {0: "constant"}, 0.0)


def _finish(result: da.Array, dtype: np.dtype, out: Any) -> Any:
    """Round and saturate to an integer dtype (the engine's rule), cast, store into ``out``."""
    if dtype.kind in "iub":
        meta = result._meta.astype(dtype)
        result = da.map_blocks(_round_block, result, dtype, dtype=dtype, meta=meta)
    result = result.astype(dtype)
    if out is None:
        return result
    da.store(result, out, lock=not isinstance(out, np.ndarray))
    return out


def choose(terms: Sequence[Term], chunks: tuple[tuple[int, ...], ...]) -> str:
    """'fused' or 'passes' for a separable job (see :mod:`sepconv.dask`, Strategies)."""
    chosen = STRATEGY.get("auto")
    if chosen != "auto":
        return chosen
    if any(len({a for a, _, _ in p}) < len(p) for _, p in terms):
        return "passes"  # repeated axes: the in-memory engine re-pads between them
    npasses = sum(len(p) for _, p in terms)
    if npasses <= 1:
        return "fused"
    merged = Job(tuple(terms), {}, 0.0).halos()

    def size(a: int) -> float:
        return float(np.mean(chunks[a]))

    expansion = math.prod(1 + (lo + hi) / size(a) for a, (lo, hi) in merged.items())
    fused = expansion * (npasses + _COPY)
    passes = sum((1 + _COPY) * (1 + (len(w) - 1) / size(a)) for _, p in terms for a, w, _ in p)
    return "fused" if fused <= passes else "passes"


#: Cost of assembling a window relative to one engine pass over it (measured: copies stream
#: at about twice the speed of a short pass).
_COPY = 0.5


def _terms(x: da.Array, job: Job, nthreads: int) -> da.Array:
    """The sum of a job's terms of a work-dtype dask array (not yet rounded or cast)."""
    if choose(job.terms, x.chunks) == "fused":
        fn = functools.partial(_job_block, job=job, halos=job.halos(), nthreads=nthreads)
        return _windowed(x, job.halos(), job.modes, job.cval, fn)
    total: da.Array | None = None
    for weight, passes in job.terms:
        cur = x if passes else da.map_blocks(_quiet, np.multiply, x, x.dtype.type(weight))
        steps = list(chain(passes, job.cval))
        for i, (p, c) in enumerate(steps):
            wt = weight if i == len(steps) - 1 else 1.0
            step = Job(((wt, (p,)),), job.modes, c)
            fn = functools.partial(_job_block, job=step, halos=halos([p]), nthreads=nthreads)
            cur = _windowed(cur, halos([p]), job.modes, c, fn)
        total = cur if total is None else da.map_blocks(_quiet, np.add, total, cur)
    assert total is not None
    return total


def _quiet(op: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    """``op(*args)`` without numpy's warnings for ``inf - inf`` and ``0 * inf``: NaN there is
    the result (the in-memory engine gives it silently too)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return op(*args)


def _windowed(
    x: da.Array,
    halos: dict[int, tuple[int, int]],
    modes: dict[int, str],
    cval: float,
    fn: Callable[[np.ndarray], np.ndarray],
) -> da.Array:
    """``fn`` applied to every chunk's window (chunk + halo); ``fn`` returns the chunk.

    One task per output chunk: it receives the neighbouring chunks it needs (only those), cuts
    from each the range it reads, joins them and, where the window reaches past the array's
    edge, maps positions through the mode's extension table (``cval`` for constant). Any
    chunking works, chunks smaller than the halo and wrap-around included.
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    specs = {
        a: [_window_spec(x.chunks[a], j, lo, hi, modes[a]) for j in range(len(x.chunks[a]))]
        for a, (lo, hi) in halos.items()
        if lo or hi
    }
    name = "sepconv-window-" + tokenize(x.name, sorted(halos.items()), modes, cval, fn)
    dsk: dict[Any, Any] = {}
    for idx in np.ndindex(*x.numblocks):
        per_axis = [
            specs[a][i] if a in specs else (((i, None),), None, None) for a, i in enumerate(idx)
        ]
        keys = _nested_keys(x.name, [[b for b, _ in spec[0]] for spec in per_axis])
        window_spec = tuple((tuple(r for _, r in s[0]), s[1], s[2]) for s in per_axis)
        key = (name, *idx)
        dsk[key] = (_window_task, keys, window_spec, cval, fn)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[cast(Any, x)])
    return da.Array(graph, name, chunks=x.chunks, meta=x._meta)


def _window_spec(
    chunks: tuple[int, ...], j: int, lo: int, hi: int, mode: str
) -> tuple[tuple[tuple[int, tuple[int, int] | None], ...], np.ndarray | None, np.ndarray | None]:
    """Along one axis, what the window of chunk ``j`` needs.

    Returns ``(blocks, table, outside)``: ``blocks`` lists ``(block index, (start, stop))``
    ranges to cut and join in that order; ``table`` maps each window position to an index of
    the joined ranges (None when it is the identity); ``outside`` marks cval positions (None
    when there are none).
    """
    n = int(sum(chunks))
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
    start = int(edges[j])
    full = extension_table(n, lo + hi + 1, lo, mode)  # padded position p <-> index p - lo
    idx = full[start : start + chunks[j] + lo + hi]
    outside = idx < 0
    used = idx[~outside]
    block_of = np.searchsorted(edges, used, side="right") - 1
    blocks = []
    offset = {}
    total = 0
    for b in np.unique(block_of):
        sel = used[block_of == b]
        lo_i, hi_i = int(sel.min()), int(sel.max()) + 1
        blocks.append((int(b), (lo_i - int(edges[b]), hi_i - int(edges[b]))))
        offset[int(b)] = total - lo_i
        total += hi_i - lo_i
    local = np.zeros(len(idx), dtype=np.int64)
    if used.size:
        local[~outside] = used + np.array([offset[int(b)] for b in block_of], dtype=np.int64)
    identity = not outside.any() and np.array_equal(local, np.arange(len(idx)))
    return (
        tuple(blocks),
        None if identity else local,
        outside if outside.any() else None,
    )


def _nested_keys(name: str, per_axis: list[list[int]], prefix: tuple[int, ...] = ()) -> Any:
    if len(prefix) == len(per_axis):
        return (name, *prefix)
    return [_nested_keys(name, per_axis, (*prefix, b)) for b in per_axis[len(prefix)]]


def _window_task(blocks: Any, spec: tuple, cval: float, fn: Callable[[np.ndarray], np.ndarray]):
    """Cut, join and extend the needed blocks into the window, then run ``fn`` on it."""

    def cut(nested: Any, depth: int) -> Any:
        if depth == len(spec):
            return nested
        ranges = spec[depth][0]
        return [_cut_axis(cut(item, depth + 1), depth, ranges[k]) for k, item in enumerate(nested)]

    from dask.array.core import concatenate3

    window = concatenate3(cut(blocks, 0))
    for axis, (_, table, outside) in enumerate(spec):
        lead = (slice(None),) * axis
        if table is not None:  # indexing, not np.take: the same on cupy chunks
            index = (*lead, table)
            window = window[index]
        if outside is not None:  # positions, not a mask: a mask would synchronise a GPU
            index = (*lead, np.flatnonzero(outside))
            window[index] = cval
    if type(window) is np.ndarray:  # native byte order: a chunk may differ from its meta
        return fn(np.ascontiguousarray(window, dtype=native(window.dtype)))
    return fn(window)


def _cut_axis(part: Any, axis: int, rng: tuple[int, int] | None) -> Any:
    """Cut range ``rng`` along ``axis`` of every array in a nested list (None: keep all)."""
    if rng is None:
        return part
    if isinstance(part, list):
        return [_cut_axis(p, axis, rng) for p in part]
    sl = [slice(None)] * part.ndim
    sl[axis] = slice(*rng)
    return part[tuple(sl)]


_ENGINE_LOCK = threading.Lock()
_SERIAL: list[bool] = []


def _engine_guard() -> contextlib.AbstractContextManager[Any]:
    """A lock if numba's threading layer is ``workqueue`` (not thread-safe), else nothing."""
    if not _SERIAL:
        import numba

        engine.separable(
            np.zeros((2, 2)), Job(((1.0, ((0, np.ones(1), 0),)),), {0: "nearest"}, 0.0)
        )
        try:
            layer = numba.threading_layer()
        except ValueError:  # pragma: no cover - no parallel kernel ran
            layer = "workqueue"
        _SERIAL.append(layer == "workqueue")
    return _ENGINE_LOCK if _SERIAL[0] else contextlib.nullcontext()


def _crop(block: np.ndarray, halos: dict[int, tuple[int, int]]) -> np.ndarray:
    sl = [slice(None)] * block.ndim
    for axis, (lo, hi) in halos.items():
        sl[axis] = slice(lo, block.shape[axis] - hi)
    part = block[tuple(sl)]
    return np.ascontiguousarray(part) if type(part) is np.ndarray else part.copy()


def _job_block(
    block: np.ndarray, job: Job, halos: dict[int, tuple[int, int]], nthreads: int
) -> np.ndarray:
    """Run ``job`` on one window and crop the halo (the window holds every value read, so
    the modes are never consulted: constant 0 stands in). NaN/Inf in the window get the
    dense kernel's direct correlation (``engine.nonfinite``), as in memory."""
    modes = {a: "constant" for a in range(block.ndim)}
    backend = _chunk_backend(block)
    if backend is not None:  # another library's chunks (CuPy: the GPU engine)
        window_job = replace(job, modes=modes, cval=0.0)
        return _crop(backend.run(block, window_job, block.dtype, None, nthreads), halos)
    xw = np.ascontiguousarray(block)
    bad = None
    with _engine_guard(), engine.threads(nthreads):
        if job.method == "direct":
            assert job.kernel is not None
            result = engine.direct(xw, replace(job, modes=modes, cval=0.0))
            return _crop(result, halos)
        if job.kernel is not None:
            xw, _, bad = engine.nonfinite.split(xw, 0.0)
        if job.method == "fft":
            assert job.kernel is not None
            result = engine.fft(xw, replace(job, modes=modes, cval=0.0), nthreads)
        else:
            result = engine.separable(xw, replace(job, modes=modes, cval=0.0))
        if bad is not None:
            assert job.kernel is not None
            engine.nonfinite.patch(result, bad, job.kernel, job.axes, job.origins, modes)
    return _crop(result, halos)


# ----------------------------------------------------------------------------------------------
# complex data: filtered as its real and imaginary parts (sepconv.filters assembles them)
# ----------------------------------------------------------------------------------------------


def split(x: da.Array) -> tuple[da.Array, da.Array | None]:
    """Real and imaginary parts (lazy); ``(x, None)`` for real data."""
    return (x.real, x.imag) if x.dtype.kind == "c" else (x, None)


def _complex_block(re: np.ndarray, im: np.ndarray, dtype: Any) -> np.ndarray:
    """The numpy backend's ``join`` of one block: the parts set one by one (``re + 1j * im``
    would turn an infinite imaginary part into a NaN real one: ``1j * inf`` is ``nan + inf j``)."""
    from . import numpy as numpy_backend

    return numpy_backend.join(re, im, dtype, None)


def join(re: da.Array, im: da.Array, dtype: Any, out: Any) -> Any:
    """The complex array ``re + i im`` as ``dtype``, lazily (or stored into ``out``)."""
    dt = np.dtype(dtype)
    result = da.map_blocks(_complex_block, re, im, dt, dtype=dt, meta=np.empty((0,) * re.ndim, dt))
    if out is None:
        return result
    da.store(result, out, lock=not isinstance(out, np.ndarray))
    return out
