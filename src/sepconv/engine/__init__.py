"""Execution engines for 1-D correlation passes.

``numba_cpu`` is the CPU engine: one pass of a 1-D kernel along one axis of a C-contiguous
array viewed as ``(outer, n, inner)``, multithreaded over output rows and vectorised along the
contiguous axis, with the border handled by a precomputed extension table (see
``sepconv._modes.extension_table``). The filters module only calls :func:`correlate_pass`, so
speed work changes this package only.
"""

from .numba_cpu import correlate_pass

__all__ = ["correlate_pass"]
