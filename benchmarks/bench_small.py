"""Per-call cost on small arrays: sepconv against scipy.ndimage in one process.

    python benchmarks/bench_small.py            # 64^2, 128^2, 256^2, 512^2; float64/float32/uint8
    python benchmarks/bench_small.py --sizes 32,64 --repeats 400

On small arrays a call's fixed cost (argument checks, building the job, planning from the
cache, dispatch to the numba engine) outweighs the arithmetic; this prints where sepconv
breaks even with scipy. Each entry is the best of 5 rounds of ``--repeats`` back-to-back
calls (microseconds per call), sepconv and scipy alternating round by round on the same
array, after a warm-up call (the numba engine compiled or loaded from its cache first).
The ratio is sepconv's time over scipy's: below 1 means sepconv is faster.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

import sepconv

W5 = np.array([1.0, 2.0, 3.0, 2.0, 1.0]) / 9.0
K3 = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])  # a separable 3x3 given dense

CASES: list[tuple[str, Callable[..., object], Callable[..., object]]] = [
    ("gaussian_filter sigma 1", lambda x: sepconv.gaussian_filter(x, 1.0),
     lambda x: ndimage.gaussian_filter(x, 1.0)),
    ("correlate 3x3 (separable)", lambda x: sepconv.correlate(x, K3),
     lambda x: ndimage.correlate(x, K3)),
    ("uniform_filter 5", lambda x: sepconv.uniform_filter(x, 5),
     lambda x: ndimage.uniform_filter(x, 5)),
    ("sobel", lambda x: sepconv.sobel(x), lambda x: ndimage.sobel(x)),
    ("correlate1d 5 taps", lambda x: sepconv.correlate1d(x, W5),
     lambda x: ndimage.correlate1d(x, W5)),
]  # fmt: skip


def _per_call_us(fn: Callable[..., object], x: np.ndarray, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512", help="square sizes, e.g. 64,128")
    ap.add_argument("--dtypes", default="float64,float32,uint8")
    ap.add_argument("--repeats", type=int, default=200, help="calls per round")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'case':28s} {'size':>9s} {'dtype':8s} {'sepconv us':>11s} {'scipy us':>9s} ratio")
    for n in (int(s) for s in args.sizes.split(",")):
        repeats = max(5, args.repeats * 64 * 64 // (n * n))
        for dt in args.dtypes.split(","):
            x = (rng.random((n, n)) * 200).astype(dt)
            for name, ours, theirs in CASES:
                ours(x), theirs(x)  # warm-up (compiles or loads the engine)
                a, b = [], []
                for _ in range(5):
                    a.append(_per_call_us(ours, x, repeats))
                    b.append(_per_call_us(theirs, x, repeats))
                ta, tb = min(a), min(b)
                print(f"{name:28s} {f'{n}^2':>9s} {dt:8s} {ta:11.1f} {tb:9.1f} {ta / tb:5.2f}")


if __name__ == "__main__":
    main()
