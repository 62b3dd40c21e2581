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
import math
from collections.abc import Callable, Iterator
from typing import Any

import dask.array as da
import numpy as np

from . import filters
from ._facade import publish
from ._validate import check_memory_limit
from .backends.dask import STRATEGIES, STRATEGY

__all__ = ["STRATEGIES", "store", "strategy", *filters.__all__]


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
    token = STRATEGY.set(name)
    try:
        yield name
    finally:
        STRATEGY.reset(token)


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

    if not isinstance(source, da.Array):
        raise TypeError(f"source must be a dask array, got {type(source).__name__}")
    shape = tuple(getattr(target, "shape", ()))
    if shape != source.shape:
        raise ValueError(f"target must have the source's shape {source.shape}, got {shape}")
    limit = check_memory_limit(memory_limit)
    total = math.prod(source.numblocks)
    if source.size == 0:
        if progress is not None:
            progress(total, total)
        return target
    if source.ndim == 0:  # one number: no axis to slab along
        target[()] = source.compute(scheduler=scheduler)
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
# the filters, with numpy input wrapped as a dask array
# ----------------------------------------------------------------------------------------------


def _as_dask(input: Any) -> Any:
    return input if isinstance(input, da.Array) else da.asarray(input)


publish(globals(), _as_dask, "dask")
