"""Scoping torch's thread count (torch imported only when used: ``import sepconv`` stays light)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(n)`` (``None``: as it is); yields the count.

    The previous count is restored on the way out, also after an error or when the block
    itself changed it; torch is asked to change it only when it differs (setting it costs a
    thread-pool rebuild in some builds). Checking ``n`` is the caller's business.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1) as n:
    ...     n, torch.get_num_threads()
    (1, 1)
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
