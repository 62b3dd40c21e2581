"""Each Triton kernel of the GPU engine, run a few times on one large array: the program that
``ncu`` (Nsight Compute) profiles in a device session, to see where the engine's kernels sit
against the memory bandwidth (issue 13: the passes are 4-16x a copy, the goal is 3x).

    PYTHONPATH=src python benchmarks/gpu_kernels.py            # on a GPU: 8192^2 float32
    PYTHONPATH=src python benchmarks/gpu_kernels.py --quick    # tiny, in the interpreter

``bash benchmarks/gpu_session.sh kernels`` runs it under ``ncu`` (one report per kernel:
``_rows_kernel`` along the first axis, ``_last_kernel`` along the last, ``_fused_kernel`` for
both, ``_direct_kernel``). It prints each kernel's median time (CUDA events) and the bandwidth
it would imply if it read and wrote the array once, next to a device-to-device copy's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the interpreter on a CPU)")
    p.add_argument("--k", type=int, default=25, help="taps per pass (odd, Gaussian)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per kernel")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.quick = True
    from sepconv.engine import triton_gpu as tg
    from sepconv.job import Job, dense_job

    tg.AUTOTUNE = not args.quick and tg.AUTOTUNE
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 48 if args.quick else 8192
    x = torch.rand((n, n), generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.empty_like(x)
    r = args.k // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / (r / 4)) ** 2)
    w /= w.sum()
    modes = {0: "reflect", 1: "reflect"}
    kernels: dict[str, Any] = {
        "copy": lambda: y.copy_(x),
        "_rows_kernel (axis 0)": lambda: tg.separable(
            x, Job(((1.0, ((0, w, 0),)),), modes, 0.0), out=y
        ),
        "_last_kernel (axis 1)": lambda: tg.separable(
            x, Job(((1.0, ((1, w, 0),)),), modes, 0.0), out=y
        ),
        "_fused_kernel (both)": lambda: tg.separable(
            x, Job(((1.0, ((0, w, 0), (1, w, 0))),), modes, 0.0), out=y
        ),
        "two passes (both)": lambda: tg.separable(
            x, Job(((1.0, ((0, w, 0), (1, w, 0))),), modes, 0.0), out=y, fuse=False
        ),
        "_direct_kernel (7x7)": lambda: tg.direct(
            x,
            dense_job(
                np.outer(w[r - 3 : r + 4], w[r - 3 : r + 4]), (0, 1), (0, 0), modes, 0.0, "direct"
            ),
            out=y,
        ),
    }
    nbytes = 2 * x.numel() * x.element_size()
    print(
        f"{tg.__name__} on {device} ({'interpreter' if tg.interpreted() else 'compiled'}), "
        f"{n}x{n} float32, k={args.k}"
    )
    for name, fn in kernels.items():
        fn()  # compile / autotune
        if device.type == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(args.reps):
            if device.type == "cuda":
                from sepconv._timing import cuda_seconds

                times.append(cuda_seconds(fn))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(
            f"  {name:24s} {med * 1e3:9.3f} ms  {nbytes / med / 1e9:8.1f} GB/s (read + write once)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
