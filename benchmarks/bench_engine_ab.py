"""A/B of two numba-engine choices in one process, on the same arrays (2 threads by default).

    python benchmarks/bench_engine_ab.py slab    # 3-D: plane by plane vs two stages
    python benchmarks/bench_engine_ab.py check   # float32 overflow check on vs off

``slab`` toggles ``engine.numba_cpu._SLAB_PLANES`` (a pass along the third axis from the end
joined to the fused pass over the last two axes, or run as its own stage into an intermediate
volume); ``check`` toggles ``engine.numba_cpu._guarded`` (the row-by-row NaN/Inf check of
float32 results). Medians of ``--repeats`` calls after three warm-up calls, each variant timed
twice in alternation; prints one line per case and round.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np

import sepconv
from sepconv.engine import numba_cpu


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _cases(what: str) -> list[tuple[str, np.ndarray, Callable[..., object]]]:
    rng = np.random.default_rng(0)
    a, b, c = rng.random((3, 5))
    rank2 = np.einsum("i,j,k->ijk", a, b, c) + np.einsum("i,j,k->ijk", b, c, a)
    if what == "slab":
        return [
            ("256^3 float32 Gaussian sigma 2", rng.random((256,) * 3, np.float32),
             lambda x, **kw: sepconv.gaussian_filter(x, 2.0, **kw)),
            ("256^3 uint16 Gaussian sigma 2", (rng.random((256,) * 3) * 4000).astype(np.uint16),
             lambda x, **kw: sepconv.gaussian_filter(x, 2.0, **kw)),
            ("128x512^2 float32 Gaussian sigma 1", rng.random((128, 512, 512), np.float32),
             lambda x, **kw: sepconv.gaussian_filter(x, 1.0, **kw)),
            ("256^3 float32 Sobel axis 0", rng.random((256,) * 3, np.float32),
             lambda x, **kw: sepconv.sobel(x, 0, **kw)),
            ("256^3 float32 rank-2 5^3 kernel", rng.random((256,) * 3, np.float32),
             lambda x, **kw: sepconv.correlate(x, rank2, method="lowrank", **kw)),
            ("16x64x256^2 float32 Gaussian axes 1-3", rng.random((16, 64, 256, 256), np.float32),
             lambda x, **kw: sepconv.gaussian_filter(x, 1.5, axes=(1, 2, 3), **kw)),
        ]  # fmt: skip
    K = rng.random((5, 5))
    return [
        ("4096^2 float32 Gaussian sigma 1", rng.random((4096, 4096), np.float32),
         lambda x, **kw: sepconv.gaussian_filter(x, 1.0, **kw)),
        ("4096^2 float32 Gaussian sigma 3", rng.random((4096, 4096), np.float32),
         lambda x, **kw: sepconv.gaussian_filter(x, 3.0, **kw)),
        ("256^3 float32 Gaussian sigma 2", rng.random((256,) * 3, np.float32),
         lambda x, **kw: sepconv.gaussian_filter(x, 2.0, **kw)),
        ("4096^2 float32 Sobel", rng.random((4096, 4096), np.float32),
         lambda x, **kw: sepconv.sobel(x, **kw)),
        ("1024^2 float32 direct 5x5", rng.random((1024, 1024), np.float32),
         lambda x, **kw: sepconv.correlate(x, K, method="direct", **kw)),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["slab", "check"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    guarded = numba_cpu._guarded
    variants = {
        "slab": (
            ("two stages", lambda: setattr(numba_cpu, "_SLAB_PLANES", 10**9)),
            ("plane by plane", lambda: setattr(numba_cpu, "_SLAB_PLANES", 2)),
        ),
        "check": (
            ("unchecked", lambda: setattr(numba_cpu, "_guarded", lambda x, dt: False)),
            ("checked", lambda: setattr(numba_cpu, "_guarded", guarded)),
        ),
    }[args.what]
    with sepconv.engine.threads(args.threads):
        _run(args, variants)


def _run(args: argparse.Namespace, variants: tuple[tuple[str, Callable[[], None]], ...]) -> None:
    for name, x, fn in _cases(args.what):
        out = np.empty(x.shape, np.float32 if x.dtype == np.float32 else x.dtype)
        for _ in range(args.rounds):
            ms = []
            for _label, choose in variants:
                choose()
                ms.append(
                    (
                        _median_ms(functools.partial(fn, x), args.repeats),
                        _median_ms(functools.partial(fn, x, output=out), args.repeats),
                    )
                )
            (a, ao), (b, bo) = ms
            print(
                f"{name}: {variants[0][0]} {a:.1f} ms, {variants[1][0]} {b:.1f} ms "
                f"(time ratio {b / a:.2f}); into output= {ao:.1f} -> {bo:.1f} ms "
                f"({bo / ao:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
