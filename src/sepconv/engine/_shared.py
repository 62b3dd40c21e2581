"""Numba pieces shared by the sweep engines (:mod:`.recursive`, :mod:`.running`).

The split of a pass's units of work over threads, the units of a pass along an outer axis
(outer index, chunk of the axis, tile of the row), and the block transpose that writes a
per-thread ring of ``_LANES`` lines back into the output. Written once here; each engine
keeps its own tile width (a compile-time constant of its kernels).

The helpers marked ``inline='always'`` are inlined into the callers' numba IR, so the
callers compile to the code they would have with the lines written out. A caller's numba
cache does not notice a change here (numba checks the caller's own source file): after
editing this module, remove the engines' cached ``*.nbi``/``*.nbc`` files.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["longest", "split", "tile_units", "transpose_out", "unit"]

_FM = {"contract"}


@njit(cache=True, nogil=True, inline="always")
def split(units, nthreads):  # pragma: no cover - compiled
    """``(threads, per)``: ``units`` on at most ``nthreads`` threads (at least one), ``per``
    consecutive units each (thread ``th`` runs ``th * per .. min(units, (th + 1) * per)``)."""
    nthreads = max(1, min(nthreads, units))
    return nthreads, (units + nthreads - 1) // nthreads


@njit(cache=True, nogil=True, inline="always")
def tile_units(x, nchunk, tile):  # pragma: no cover - compiled
    """``(units, ntiles, width)`` of a pass along axis 1 of ``x`` (outer, n, inner): units
    (outer index, one of ``nchunk`` chunks of n, tile of ``tile`` columns); ``width`` is the
    widest tile."""
    inner = x.shape[2]
    ntiles = (inner + tile - 1) // tile
    return x.shape[0] * nchunk * ntiles, ntiles, min(inner, tile)


@njit(cache=True, nogil=True, inline="always")
def unit(u, nchunk, ntiles, tile, inner):  # pragma: no cover - compiled
    """``(o, ch, c0, m)`` of unit ``u`` of :func:`tile_units`: outer index, chunk, first
    column and column count of its tile."""
    o = u // (nchunk * ntiles)
    rest = u - o * nchunk * ntiles
    ch = rest // ntiles
    c0 = (rest - ch * ntiles) * tile
    return o, ch, c0, min(tile, inner - c0)


@njit(cache=True, nogil=True, inline="always")
def longest(starts):  # pragma: no cover - compiled
    """The longest chunk ``starts[ch + 1] - starts[ch]``."""
    rows = 0
    for ch in range(starts.shape[0] - 1):
        rows = max(rows, starts[ch + 1] - starts[ch])
    return rows


@njit(fastmath=_FM, cache=True, nogil=True)
def transpose_out(ring, nl, count, out, o, row0, i0):  # pragma: no cover - compiled
    """``out[o, row0 + ln, i0 + j] = ring[0, j, ln]`` for ``ln < nl``, ``j < count``."""
    u0 = np.uint64(i0)
    for ln in range(nl):
        for j in range(np.uint64(count)):
            out[o, row0 + ln, u0 + j] = ring[0, j, ln]
