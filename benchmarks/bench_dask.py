"""Dask vs in-memory: what chunked execution costs, and the out-of-core run's peak memory.

Rows (float32 volume, ``gaussian_filter(sigma=2)``, 17 taps per axis, and a dense rank-2
5x5x5 kernel):

* in memory: ``sepconv.gaussian_filter(x, 2, workers=T)`` (the reference);
* dask, threads: the same filter on ``dask.array.from_array(x, chunks=C)``, computed into a
  preallocated array with T threads (``strategy`` auto, and forced 'passes' / 'fused');
* scipy.ndimage (single-threaded by design), and a plain copy (memory bandwidth);
* out of core: a Zarr volume several times a memory budget, streamed Zarr -> Zarr by
  ``sepconv.dask.store`` in a child process, with its peak RSS above the post-import baseline.

Every contender runs once to warm up (numba compiles), then the contenders alternate
(rotating order) for ``--repeats`` rounds; the median is reported, with ratios to in-memory.
Writes ``benchmarks/results/dask-<machine>-<date>.json`` and ``.md``.

    python benchmarks/bench_dask.py [--threads 2] [--repeats 5] [--size 256] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

import sepconv
from sepconv import _timing

HERE = Path(__file__).resolve().parent


def median_times(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Warm-up once each, then alternating rounds: the median seconds (sepconv._timing)."""
    return _timing.median_times(contenders, repeats, budget_s=None)


def throughput_cases(size: int, threads: int, repeats: int, quick: bool) -> list[dict]:
    import dask
    import dask.array as da

    import sepconv.dask as sdask

    x = np.random.default_rng(0).random((size,) * 3, dtype=np.float32)
    out = np.empty_like(x)
    rng = np.random.default_rng(1)
    K = sum(np.einsum("i,j,k->ijk", *(rng.standard_normal(5) for _ in range(3))) for _ in range(2))
    chunk_sizes = [size // 4] if quick else [size // 8, size // 4, size // 2]
    rows = []
    for label, fn in (
        ("gaussian sigma=2 (17^3, separable)", lambda a, **kw: sepconv.gaussian_filter(a, 2, **kw)),
        ("dense 5^3 rank 2 (low-rank)", lambda a, **kw: sepconv.correlate(a, K, **kw)),
    ):
        contenders: dict[str, Callable[[], object]] = {
            "in memory": lambda fn=fn: fn(x, workers=threads, output=out),
            "copy": lambda: np.copyto(out, x),
        }
        if not quick and "gaussian" in label:
            contenders["scipy.ndimage (1 thread)"] = lambda: ndimage.gaussian_filter(x, 2)
        for c in chunk_sizes:
            dx = da.from_array(x, chunks=c)
            for strat in ("auto",) if quick else ("auto", "passes", "fused"):
                with sdask.strategy(strat):
                    y = fn(dx)
                name = f"dask {c}^3 {strat}"

                def run(y=y) -> None:
                    with dask.config.set(scheduler="threads", num_workers=threads):
                        da.store(y, out, lock=False)

                contenders[name] = run
        times = median_times(contenders, repeats)
        ref = times["in memory"]
        for name, t in times.items():
            rows.append(
                {
                    "case": label,
                    "contender": name,
                    "seconds": t,
                    "mvoxel_per_s": x.size / t / 1e6,
                    "ratio_to_in_memory": t / ref,
                }
            )
    return rows


_OUT_OF_CORE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, dask.array as da, zarr
    import sepconv, sepconv.dask, sepconv.io

    src, dst, limit, threads, scheduler = sys.argv[1:6]
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    def hwm():  # VmHWM: ru_maxrss would include the parent's peak, inherited across fork
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith("VmHWM:")).split()[1]) * 1024
    sepconv.gaussian_filter(da.from_array(np.zeros((8, 8, 8), np.float32), chunks=4), 1).compute()
    client = None
    if scheduler == "distributed":
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=int(threads), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark after warm-up
    base = rss()
    x = da.from_zarr(src)
    target = sepconv.io.create_zarr(dst, x.shape, x.chunksize, x.dtype, compress=False)
    t0 = time.perf_counter()
    sepconv.dask.store(sepconv.gaussian_filter(x, 2.0), target, memory_limit=int(limit),
                       scheduler=client or "threads")
    t = time.perf_counter() - t0
    peak = hwm()
    if client is not None:
        client.close(); cluster.close()
    print(json.dumps({"seconds": t, "base": base, "peak": peak, "nbytes": x.nbytes}))
    """
)


def out_of_core(threads: int, quick: bool) -> list[dict]:
    from sepconv import io

    shape = (512, 256, 256) if quick else (1024, 256, 256)
    chunks = (16, 128, 128)
    budget = 64 * 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.zarr")
        z = io.create_zarr(src, shape, chunks, np.float32, compress=False)
        rng = np.random.default_rng(0)
        for i in range(0, shape[0], 64):
            z[i : i + 64] = rng.random((64, *shape[1:]), dtype=np.float32)
        for scheduler in ("threads", "distributed"):
            dst = os.path.join(tmp, f"dst-{scheduler}.zarr")
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            args = [src, dst, str(budget // 2), str(threads), scheduler]
            proc = subprocess.run(
                [sys.executable, "-c", _OUT_OF_CORE, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "scheduler": scheduler,
                    "volume_mib": r["nbytes"] / 2**20,
                    "budget_mib": budget / 2**20,
                    "memory_limit_mib": budget / 2 / 2**20,
                    "peak_over_baseline_mib": (r["peak"] - r["base"]) / 2**20,
                    "baseline_mib": r["base"] / 2**20,
                    "seconds": r["seconds"],
                    "mvoxel_per_s": np.prod(shape) / r["seconds"] / 1e6,
                }
            )
    return rows


def markdown(results: dict) -> str:
    lines = [
        f"# sepconv dask vs in-memory — {results['machine']} — {results['date']}",
        "",
        f"{results['size']}^3 float32, {results['threads']} threads for every contender, "
        f"median of {results['repeats']} alternating runs after warm-up.",
        "",
        "| case | contender | time (s) | Mvoxel/s | ratio to in-memory |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['case']} | {r['contender']} | {r['seconds']:.3f} | {r['mvoxel_per_s']:.1f} "
            f"| {r['ratio_to_in_memory']:.2f} |"
        )
    if results["out_of_core"]:
        lines += [
            "",
            "Out of core (Zarr -> Zarr, `sepconv.dask.store`, gaussian sigma=2, uncompressed "
            "chunks 16x128x128, child process; peak RSS of the client process above its "
            "post-import baseline; with distributed the workers hold the data, each bounded "
            "by its own memory limit):",
            "",
            "| scheduler | volume (MiB) | budget (MiB) | peak over baseline (MiB) | time (s) "
            "| Mvoxel/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in results["out_of_core"]:
            lines.append(
                f"| {r['scheduler']} | {r['volume_mib']:.0f} | {r['budget_mib']:.0f} | "
                f"{r['peak_over_baseline_mib']:.1f} | {r['seconds']:.2f} | "
                f"{r['mvoxel_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="fewer rows, smaller out-of-core run")
    p.add_argument("--no-out-of-core", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    import dask
    import numba

    results = {
        "machine": platform.node() or "host",
        "date": dt.date.today().isoformat(),
        "threads": args.threads,
        "repeats": args.repeats,
        "size": args.size,
        "versions": {
            "sepconv": sepconv.__version__,
            "dask": dask.__version__,
            "numpy": np.__version__,
            "numba": numba.__version__,
        },
        "throughput": throughput_cases(args.size, args.threads, args.repeats, args.quick),
        "out_of_core": [] if args.no_out_of_core else out_of_core(args.threads, args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"dask-{results['machine']}-{results['date']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
