"""Shared test setup.

Without a GPU, Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``). triton reads
that variable when it is first imported, and any test module may be the first to import it, so
it is set here, before any test module is collected (a machine with an NVIDIA device compiles
the kernels instead). Checked without importing torch: no ``/dev/nvidiactl``, no CUDA device.
"""

from __future__ import annotations

import os

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
