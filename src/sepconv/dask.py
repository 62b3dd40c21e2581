"""Filter dask arrays lazily, chunk by chunk: out of core, on threads, processes or a cluster.

Every sepconv filter accepts a ``dask.array.Array`` and returns one (lazy; nothing is computed
until you call ``.compute()``, ``.to_zarr()``, ``dask.array.store`` ...). The functions here
are the same filters, with numpy input wrapped by ``dask.array.asarray``::

    import dask.array as da, sepconv
    x = da.from_zarr("volume.zarr")                       # larger than memory
    y = sepconv.gaussian_filter(x, sigma=2)              # lazy, same chunks as x
    y.to_zarr("smoothed.zarr")                           # streams chunk by chunk

Semantics
---------
The result is *identical* (to float rounding) to the in-memory filter for every mode, origin,
kernel length and chunking, chunks smaller than the kernel radius included. Each chunk of the
output is computed from a *window*: the chunk plus the halo its kernel reads, assembled from the
neighbouring chunks and, at the true array edges only, from the border extension of the mode
(the same ``_modes.extension_table`` the in-memory engine uses, so reflect/mirror/wrap and
kernels longer than the axis come out the same). The in-memory engine then runs on the window
and the halo is cropped away.

Strategies
----------
``'passes'``
    A separable filter runs pass by pass, each pass with the halo of its own axis only, and
    constant mode carries ``cval * sum(weights)`` from pass to pass exactly as the in-memory
    engine does. Low-rank sums run term by term. Best when the halo is large against the chunk.
``'fused'``
    One window per chunk with the whole N-D halo; all passes (and all terms) of the filter run
    on it in one task. Fewer tasks and no intermediate arrays; best when chunks are much larger
    than the halo.
``'auto'`` (default)
    Picks the one that touches fewer elements: fused costs ``(passes + 1/2) * E`` (one window
    copy, then every pass over the window, ``E`` = window volume / chunk volume), pass by pass
    ``3/2 * sum_p (1 + (k_p - 1) / c_p)`` (a window copy and a pass per pass; a copy costs
    about half a pass). Choose another with :func:`strategy`.

Dense plans (``method='direct'`` or ``'fft'`` of :func:`sepconv.correlate`) always use one
window with the kernel's N-D halo.

Memory: one task holds a window and its result, i.e. about ``2-3 x (chunk + halo)`` bytes in
the work dtype; peak memory is that times the number of tasks running at once (threads or
workers), independent of the array's size.

Threads: each chunk runs the numba engine with ``workers`` threads (default **1**: dask already
runs one task per core). Under numba's ``workqueue`` threading layer, which is not thread-safe,
engine calls are serialised.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import dask.array as da
import numpy as np

from . import engine, filters
from ._modes import check_input as _check_numpy_input
from ._modes import extension_table, native, work_dtype
from ._modes import resolve_output as _resolve_numpy_output

__all__ = [
    "STRATEGIES",
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
    "store",
    "strategy",
    "uniform_filter",
    "uniform_filter1d",
]

#: How separable and low-rank filters are split into tasks (see the module docstring).
STRATEGIES = ("auto", "passes", "fused")
_STRATEGY: contextvars.ContextVar[str] = contextvars.ContextVar("sepconv_dask_strategy")

Pass = tuple[int, np.ndarray, int]
Term = tuple[float, Sequence[Pass]]


@contextlib.contextmanager
def strategy(name: str) -> Iterator[str]:
    """Use strategy ``name`` ('auto', 'passes' or 'fused') for dask filters built in the block.

    The choice is made when the (lazy) result is built, so only the filter calls inside the
    ``with`` block are affected, not a later ``.compute()``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, sepconv
    >>> x = da.from_array(np.arange(16.0).reshape(4, 4), chunks=2)
    >>> with sepconv.dask.strategy("passes"):
    ...     y = sepconv.gaussian_filter(x, 1.0)
    >>> bool(np.allclose(y.compute(), sepconv.gaussian_filter(x.compute(), 1.0), atol=1e-12))
    True
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")
    token = _STRATEGY.set(name)
    try:
        yield name
    finally:
        _STRATEGY.reset(token)


# ----------------------------------------------------------------------------------------------
# the backend protocol used by sepconv.filters
# ----------------------------------------------------------------------------------------------


def check_input(x: da.Array) -> da.Array:
    """The numpy dtype rules (float32/64 or integers), and known chunk sizes."""
    _check_numpy_input(np.empty(0, dtype=x.dtype))
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("input has unknown chunk sizes (nan); call x.compute_chunk_sizes() first")
    return x


def resolve_output(output: Any, x: da.Array) -> tuple[np.dtype, Any]:
    """None or a dtype (lazy result), or an array-like target (numpy, zarr) to store into."""
    if output is None or isinstance(output, np.ndarray) or not hasattr(output, "__setitem__"):
        return _resolve_numpy_output(output, cast(Any, x))
    shape = tuple(getattr(output, "shape", ()))
    if shape != x.shape:
        raise ValueError(f"output must have the input's shape {x.shape}, got {shape}")
    dt = np.dtype(output.dtype)
    _check_numpy_input(np.empty(0, dtype=dt), "output")
    return dt, output


def run_terms(
    x: da.Array,
    terms: Sequence[Term],
    modes: dict[int, str],
    cval: float,
    dtype: np.dtype,
    out: Any,
    workers: int | None,
    kernel: tuple[np.ndarray, tuple[int, ...], Sequence[int]] | None = None,
) -> Any:
    """``sum_r weight_r * passes_r(x)``, lazily (or stored into ``out``).

    ``kernel`` = (dense kernel, axes, origins) when the terms factorize a kernel given to
    ``correlate``: the result must then be the direct correlation's also where the data is NaN
    or Inf, so each chunk runs in one window (the fused strategy) where non-finite values are
    handled as in memory (:mod:`sepconv.engine.nonfinite`).
    """
    nthreads = _threads(workers)
    xw = x.astype(work_dtype(x.dtype, dtype))
    if xw.size == 0:
        return _finish(xw, dtype, out)
    if kernel is not None:
        halos = _merged_halos(terms)
        fn = functools.partial(
            _terms_block, terms=tuple(terms), halos=halos, nthreads=nthreads, kernel=kernel
        )
        return _finish(_windowed(xw, halos, modes, cval, fn), dtype, out)
    return _finish(_terms(xw, terms, modes, cval, nthreads), dtype, out)


def run_dense(
    x: da.Array,
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: dict[int, str],
    cval: float,
    method: str,
    dtype: np.dtype,
    out: Any,
    workers: int | None,
) -> Any:
    """Direct or FFT correlation with ``kernel``: one window per chunk with the N-D halo."""
    nthreads = _threads(workers)
    xw = x.astype(work_dtype(x.dtype, dtype))
    if xw.size == 0:
        return _finish(xw, dtype, out)
    halos = {
        a: (k // 2 + o, k - 1 - (k // 2 + o))
        for a, k, o in zip(axes, kernel.shape, origins, strict=True)
    }
    fn = functools.partial(
        _dense_block,
        kernel=kernel,
        axes=tuple(axes),
        origins=tuple(origins),
        method=method,
        halos=halos,
        nthreads=nthreads,
    )
    return _finish(_windowed(xw, halos, modes, cval, fn), dtype, out)


def gradient_magnitude(
    x: da.Array,
    passes: Sequence[Sequence[Pass]],
    modes: dict[int, str],
    cval: float,
    dtype: np.dtype,
    out: Any,
    workers: int | None,
) -> Any:
    """``sqrt(sum_i (passes_i applied to x) ** 2)`` (Gaussian gradient magnitude)."""
    nthreads = _threads(workers)
    xw = x.astype(work_dtype(x.dtype, dtype))
    if xw.size == 0:
        return _finish(xw, dtype, out)
    acc = nan = None
    for p in passes:  # hypot: sqrt(a^2 + d^2) without overflowing where d^2 would
        d = _terms(xw, [(1.0, p)], modes, cval, nthreads)
        acc = abs(d) if acc is None else da.hypot(acc, d)
        nan = da.isnan(d) if nan is None else nan | da.isnan(d)  # hypot(inf, nan) is inf
    assert acc is not None and nan is not None
    return _finish(da.where(nan, np.nan, acc), dtype, out)


# ----------------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------------


def _threads(workers: int | None) -> int:
    return 1 if workers is None else engine.check_workers(workers)


def _round_block(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(block.shape, dtype=native(dtype))
    with _engine_guard(), engine.threads(1):
        engine.round_saturate(block, out)
    return out if out.dtype == dtype else out.astype(dtype)


def _finish(result: da.Array, dtype: np.dtype, out: Any) -> Any:
    """Round and saturate to an integer dtype (the engine's rule), cast, store into ``out``."""
    if dtype.kind in "iub":
        meta = np.empty((0,) * result.ndim, dtype)
        result = da.map_blocks(_round_block, result, dtype, dtype=dtype, meta=meta)
    result = result.astype(dtype)
    if out is None:
        return result
    da.store(result, out, lock=not isinstance(out, np.ndarray))
    return out


def _halos_of(passes: Sequence[Pass]) -> dict[int, tuple[int, int]]:
    """Left/right halo per axis that a chain of passes reads (sums over passes on one axis)."""
    halos: dict[int, tuple[int, int]] = {}
    for axis, w, origin in passes:
        left = len(w) // 2 + origin
        right = len(w) - 1 - left
        lo, hi = halos.get(axis, (0, 0))
        halos[axis] = (lo + left, hi + right)
    return halos


def _choose(terms: Sequence[Term], chunks: tuple[tuple[int, ...], ...]) -> str:
    chosen = _STRATEGY.get("auto")
    if chosen != "auto":
        return chosen
    if any(len({a for a, _, _ in p}) < len(p) for _, p in terms):
        return "passes"  # repeated axes: the in-memory engine re-pads between them
    npasses = sum(len(p) for _, p in terms)
    if npasses <= 1:
        return "fused"
    halos = _merged_halos(terms)

    def size(a: int) -> float:
        return float(np.mean(chunks[a]))

    expansion = math.prod(1 + (lo + hi) / size(a) for a, (lo, hi) in halos.items())
    fused = expansion * (npasses + _COPY)
    passes = sum((1 + _COPY) * (1 + (len(w) - 1) / size(a)) for _, p in terms for a, w, _ in p)
    return "fused" if fused <= passes else "passes"


#: Cost of assembling a window relative to one engine pass over it (measured: copies stream
#: at about twice the speed of a short pass).
_COPY = 0.5


def _merged_halos(terms: Sequence[Term]) -> dict[int, tuple[int, int]]:
    halos: dict[int, tuple[int, int]] = {}
    for _, passes in terms:
        for a, (lo, hi) in _halos_of(passes).items():
            plo, phi = halos.get(a, (0, 0))
            halos[a] = (max(plo, lo), max(phi, hi))
    return halos


def _terms(
    x: da.Array, terms: Sequence[Term], modes: dict[int, str], cval: float, nthreads: int
) -> da.Array:
    """The sum of terms of a work-dtype dask array (not yet rounded or cast)."""
    if _choose(terms, x.chunks) == "fused":
        halos = _merged_halos(terms)
        fn = functools.partial(_terms_block, terms=tuple(terms), halos=halos, nthreads=nthreads)
        return _windowed(x, halos, modes, cval, fn)
    total: da.Array | None = None
    for weight, passes in terms:
        cur = x
        c = cval
        ordered = list(passes)
        if not ordered:
            cur = x * x.dtype.type(weight)
        for i, (axis, w, origin) in enumerate(ordered):
            wt = weight if i == len(ordered) - 1 else 1.0
            term = ((wt, [(axis, w, origin)]),)
            halos = _halos_of([(axis, w, origin)])
            fn = functools.partial(_terms_block, terms=term, halos=halos, nthreads=nthreads)
            cur = _windowed(cur, halos, modes, c, fn)
            c = c * float(np.sum(w))
        total = cur if total is None else total + cur
    assert total is not None
    return total


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
    meta = np.empty((0,) * x.ndim, dtype=x.dtype)
    return da.Array(graph, name, chunks=x.chunks, meta=meta)


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
        if table is not None:
            window = np.take(window, table, axis=axis)
        if outside is not None:
            sl = [slice(None)] * window.ndim
            sl[axis] = outside
            window[tuple(sl)] = cval
    return fn(np.ascontiguousarray(window))


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

        engine.separable(np.zeros((2, 2)), [(1.0, [(0, np.ones(1), 0)])], {0: "nearest"}, 0.0)
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
    return np.ascontiguousarray(block[tuple(sl)])


def _terms_block(
    block: np.ndarray,
    terms: Sequence[Term],
    halos: dict[int, tuple[int, int]],
    nthreads: int,
    kernel: tuple[np.ndarray, tuple[int, ...], Sequence[int]] | None = None,
) -> np.ndarray:
    """Run the terms on one window and crop the halo (the window holds every value read)."""
    xw = np.ascontiguousarray(block)
    modes = {a: "constant" for a in range(block.ndim)}  # never read: the halo is cropped
    bad = None
    if kernel is not None:
        xw, _, bad = engine.nonfinite.split(xw, 0.0)
    with _engine_guard(), engine.threads(nthreads):
        result = engine.separable(xw, list(terms), modes, 0.0)
        if bad is not None and kernel is not None:
            engine.nonfinite.patch(result, bad, *kernel, modes)
    return _crop(result, halos)


def _dense_block(
    block: np.ndarray,
    kernel: np.ndarray,
    axes: tuple[int, ...],
    origins: tuple[int, ...],
    method: str,
    halos: dict[int, tuple[int, int]],
    nthreads: int,
) -> np.ndarray:
    xw = np.ascontiguousarray(block)
    modes = {a: "constant" for a in axes}
    with _engine_guard(), engine.threads(nthreads):
        if method == "direct":
            result = engine.direct(xw, kernel, axes, origins, modes, 0.0)
        else:  # the FFT runs on finite data, non-finite outputs patched (engine.nonfinite)
            xw, _, bad = engine.nonfinite.split(xw, 0.0)
            result = engine.fft(xw, kernel, axes, origins, modes, 0.0, workers=nthreads)
            if bad is not None:
                engine.nonfinite.patch(result, bad, kernel, axes, origins, modes)
    return _crop(result, halos)


# ----------------------------------------------------------------------------------------------
# bounded-memory computation
# ----------------------------------------------------------------------------------------------


def store(
    source: da.Array,
    target: Any,
    *,
    memory_limit: int | str = "256MiB",
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Compute ``source`` into ``target`` slab by slab, so that memory stays bounded.

    ``source.to_zarr(...)`` / ``dask.array.store`` work too, but dask's scheduler may keep
    many neighbouring chunks of a filter alive at once (its order interleaves several fronts
    through the array). This computes the output in slabs of whole chunk rows along the first
    axis that has several chunks, one slab after the other: each slab holds its input rows
    plus one halo row on each side, its intermediates and its result, so the peak is set by
    ``memory_limit`` and not by the array's size. Input rows at slab borders are read twice.

    Parameters
    ----------
    source : dask.array.Array
        The (lazy) result to compute.
    target : array-like
        Where to write it: a numpy array or memmap, a zarr array, anything with the shape and
        ``__setitem__``. With the processes or a distributed scheduler a numpy target is
        filled from the slab results in this process.
    memory_limit : int or str, optional
        Bytes a slab may use (``"64MiB"``, ``2**30``); about a quarter of it is the slab's
        input. At least one chunk row is computed at a time whatever the limit. Default 256 MiB.
    scheduler : optional
        Any dask scheduler (``'threads'``, ``'processes'``, ``'sync'``, a ``distributed.Client``);
        default: dask's current one. With a distributed client all slabs are submitted at
        once: the cluster's workers bound their own memory (spilling to disk as configured).
    progress : callable, optional
        Called as ``progress(chunks_done, chunks_total)`` after every slab.

    Returns
    -------
    target

    Examples
    --------
    >>> import numpy as np, dask.array as da, sepconv, sepconv.dask
    >>> x = da.from_array(np.random.default_rng(0).random((64, 32)), chunks=8)
    >>> out = np.empty(x.shape)
    >>> _ = sepconv.dask.store(sepconv.gaussian_filter(x, 2.0), out, memory_limit="16KiB")
    >>> bool(np.allclose(out, sepconv.gaussian_filter(x.compute(), 2.0), atol=1e-12))
    True
    """
    import dask
    from dask.utils import parse_bytes

    if not isinstance(source, da.Array):
        raise TypeError(f"source must be a dask array, got {type(source).__name__}")
    shape = tuple(getattr(target, "shape", ()))
    if shape != source.shape:
        raise ValueError(f"target must have the source's shape {source.shape}, got {shape}")
    try:
        limit = parse_bytes(memory_limit)
    except (ValueError, TypeError):
        raise ValueError(
            f"memory_limit must be a number of bytes or a size like '64MiB', got {memory_limit!r}"
        ) from None
    if limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {memory_limit!r}")
    total = math.prod(source.numblocks)
    if source.size == 0:
        if progress is not None:
            progress(total, total)
        return target
    axis = next((a for a, nb in enumerate(source.numblocks) if nb > 1), 0)
    chunks = source.chunks[axis]
    per_row = source.nbytes / source.shape[axis] * max(chunks)
    rows = max(1, int(limit // (4 * max(per_row, 1.0))))
    local = dask.base.get_scheduler(scheduler=scheduler, collections=[source])
    in_process = local in (dask.threaded.get, dask.local.get_sync)
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(int)
    slabs = []
    for b in range(0, len(chunks), rows):
        lo, hi = int(edges[b]), int(edges[min(len(chunks), b + rows)])
        slabs.append(tuple(slice(lo, hi) if a == axis else slice(None) for a in range(source.ndim)))
    client = getattr(local, "__self__", None)
    if type(client).__name__ == "Client" and hasattr(client, "compute"):
        return _store_distributed(client, source, target, slabs, total, progress)
    done = 0
    with contextlib.ExitStack() as stack:
        kwargs: dict[str, Any] = {"scheduler": scheduler}
        if local is dask.multiprocessing.get and dask.config.get("pool", None) is None:
            kwargs["pool"] = stack.enter_context(_process_pool())  # one pool for all slabs
        for region in slabs:
            part = source[region]
            if isinstance(target, np.ndarray) and not in_process:
                target[region] = part.compute(**kwargs)
            else:
                lock = not isinstance(target, np.ndarray)
                da.store(part, target, regions=region, lock=lock, **kwargs)
            done += part.npartitions
            if progress is not None:
                progress(done, total)
    return target


def _store_distributed(client, source, target, slabs, total, progress) -> Any:
    """All slabs at once on a dask.distributed cluster, whose workers bound their own memory.

    Workers write a Zarr-like target themselves (no lock where the slabs follow the target's
    chunks, else a cluster-wide lock); a numpy target is filled here as slabs complete.
    """
    import distributed

    aligned = _aligned(source, target)
    lock: Any = False if aligned else distributed.Lock("sepconv-store")
    futures = {}
    for region in slabs:
        part = source[region]
        if isinstance(target, np.ndarray):
            fut = client.compute(part)
        else:
            fut = client.compute(da.store(part, target, regions=region, lock=lock, compute=False))
        futures[fut] = (region, part.npartitions)
    done = 0
    for fut in distributed.as_completed(list(futures)):
        region, n = futures.pop(fut)
        result = fut.result()
        if isinstance(target, np.ndarray):
            target[region] = result
        fut.release()
        done += n
        if progress is not None:
            progress(done, total)
    return target


def _aligned(source: da.Array, target: Any) -> bool:
    """Whether every chunk of ``source`` covers whole chunks of ``target`` (no shared chunk)."""
    tchunks = getattr(target, "chunks", None)
    if not tchunks or len(tchunks) != source.ndim:
        return False
    for c, t in zip(source.chunks, tchunks, strict=True):
        edges = np.cumsum(c)[:-1]
        if np.any(edges % int(t)):
            return False
    return True


@contextlib.contextmanager
def _process_pool() -> Iterator[Any]:
    """The process pool dask's ``'processes'`` scheduler would make, kept for several computes."""
    import functools as ft
    from concurrent.futures import ProcessPoolExecutor

    import dask
    import dask.multiprocessing as dmp

    workers = dask.config.get("num_workers", None) or dmp.CPU_COUNT
    init = ft.partial(dmp.initialize_worker_process, user_initializer=None)
    pool = ProcessPoolExecutor(workers, mp_context=dmp.get_context(), initializer=init)
    try:
        yield pool
    finally:
        pool.shutdown()


# ----------------------------------------------------------------------------------------------
# public functions: the sepconv filters, with numpy input wrapped as a dask array
# ----------------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _lazy(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(input: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(input, da.Array):
            input = da.asarray(input)
        return fn(input, *args, **kwargs)

    wrapper.__module__ = __name__
    wrapper.__doc__ = (
        f"Lazy :func:`sepconv.{fn.__name__}` of a dask array (same parameters and result).\n\n"
        "    numpy input is wrapped by ``dask.array.asarray`` first; the result is a dask\n"
        "    array with the input's chunks, or ``output`` (a numpy or zarr array) after\n"
        "    storing into it.\n"
    )
    return wrapper  # type: ignore[return-value]


correlate1d = _lazy(filters.correlate1d)
convolve1d = _lazy(filters.convolve1d)
uniform_filter1d = _lazy(filters.uniform_filter1d)
gaussian_filter1d = _lazy(filters.gaussian_filter1d)
gaussian_filter = _lazy(filters.gaussian_filter)
uniform_filter = _lazy(filters.uniform_filter)
sobel = _lazy(filters.sobel)
prewitt = _lazy(filters.prewitt)
laplace = _lazy(filters.laplace)
gaussian_laplace = _lazy(filters.gaussian_laplace)
gaussian_gradient_magnitude = _lazy(filters.gaussian_gradient_magnitude)
correlate = _lazy(filters.correlate)
convolve = _lazy(filters.convolve)
filter = _lazy(filters.filter)
