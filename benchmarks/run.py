"""sepconv benchmark suite: sepconv side by side with its peers, in one process.

Every case runs each contender once to warm up (numba compiles then), then alternates the
contenders (rotating their order) for ``--repeats`` rounds and reports the median time of each,
and ratios. All contenders get the same thread count (``--threads``, default 2): sepconv via
``workers=``, OpenCV ``setNumThreads``, SimpleITK's global default, torch ``set_num_threads``,
scipy.fft ``workers``; scipy.ndimage is single-threaded by design (noted in the table). A
plain array copy of the same data is the memory-bandwidth reference.

Writes ``benchmarks/results/<machine>-<date>.json``, ``.md`` (tables) and ``.png`` (plot).

    python benchmarks/run.py [--threads 2] [--repeats 5] [--quick] [--only NAME ...]
"""

from __future__ import annotations

import os

# Several threading runtimes share this process (numba's OpenMP, torch's, OpenCV's, ITK's);
# with the default active waiting, the one that just finished keeps spinning on the cores the
# next one needs. Passive waiting is the fair setting for alternating contenders.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as dt
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

import sepconv
from sepconv import _timing, kernels

HERE = Path(__file__).resolve().parent


@dataclass
class Contender:
    name: str
    fn: Callable[[], object]
    note: str = ""


@dataclass
class Case:
    name: str
    description: str
    nbytes: int  # bytes of the input array (for bandwidth figures)
    contenders: list[Contender]
    reference: str = "scipy.ndimage"
    targets: dict[str, float] = field(default_factory=dict)  # contender -> max allowed ratio


def _copy(x: np.ndarray) -> Contender:
    """The memory-bandwidth reference: a copy of the input into a preallocated array (warm:
    ``x.copy()`` would measure first-touch page faults of fresh memory, 1.2 GB/s for 64 MB)."""
    out = np.empty_like(x)
    np.copyto(out, x)  # touch it once
    return Contender("copy", lambda: np.copyto(out, x), "memory bound (warm)")


#: ``alternating`` (default): the contenders take turns round by round, so slow drifts of the
#: machine hit all alike. ``blocks``: each contender's runs back to back (timeit's protocol).
#: On a VM the two differ: a contender that allocates a fresh output right after a long
#: single-threaded one (scipy) pays for faulting its pages in, two threads at once, at several
#: times the cost of the same faults back to back (measured: sepconv's 4096^2 float32
#: Gaussian k=7 takes 11 ms into a preallocated output, 15 ms allocating back to back,
#: 21-43 ms allocating right after scipy.ndimage's 300 ms).
PROTOCOL = "alternating"


def _warm_memory(nbytes: int = 1 << 30) -> None:
    """Touch and free 1 GB once: on a VM, memory the guest has never touched (or handed
    back to the host) first costs host-side faults, which would land on whichever contender
    allocates its result first (measured: sepconv's 4096^2 float32 Gaussian k=7, the first
    case, 83 ms allocating its output, 10.6 ms into a preallocated one; OpenCV 15 ms)."""
    block = np.ones(nbytes // 8)
    del block


def _into(x: np.ndarray, fn: Callable[[np.ndarray], object]) -> Contender:
    """sepconv into a preallocated output: the filter without the first-touch page faults of
    a fresh 64 MB result, which on our VM cost 1-80 ms depending on the kernel's memory state
    (transparent huge pages, host-side faults): sepconv's own compute time."""
    out = np.empty_like(x)
    out.fill(0)
    return Contender("sepconv output=", lambda: fn(out), "preallocated output")


def median_times(contenders: list[Contender], repeats: int) -> dict[str, float]:
    """Each contender warmed up once (numba compilation), then timed ``repeats`` times by
    :data:`PROTOCOL`: the median seconds of each (sepconv._timing)."""
    if PROTOCOL == "blocks":
        return {
            c.name: _timing.median_times({c.name: c.fn}, repeats, budget_s=None)[c.name]
            for c in contenders
        }
    return _timing.median_times({c.name: c.fn for c in contenders}, repeats, budget_s=None)


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated through numpy during one call (tracemalloc sees numpy buffers)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return int(peak)


# ----------------------------------------------------------------------------------------------
# peers
# ----------------------------------------------------------------------------------------------


def setup_threads(n: int) -> dict[str, str]:
    info = {}
    try:
        import cv2

        cv2.setNumThreads(n)
        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
        info["simpleitk"] = sitk.Version.VersionString()
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(n)
        info["torch"] = torch.__version__
    except ImportError:
        pass
    import numba
    import scipy

    info.update(numpy=np.__version__, scipy=scipy.__version__, numba=numba.__version__)
    info["sepconv"] = sepconv.__version__
    return info


def torch_separable(x: np.ndarray, g: np.ndarray, ndim: int) -> Callable[[], object]:
    """torch conv passes with replicate padding: a timing reference, not the same borders."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x)[None, None]
    k = len(g)
    w = torch.from_numpy(g.astype(x.dtype))
    conv = F.conv2d if ndim == 2 else F.conv3d
    shapes = []
    for a in range(ndim):
        s = [1] * ndim
        s[a] = k
        shapes.append(w.reshape(1, 1, *s))

    def run() -> object:
        with torch.inference_mode():
            y = t
            for a, ws in enumerate(shapes):
                pad = [0] * (2 * ndim)
                pad[2 * (ndim - 1 - a)] = pad[2 * (ndim - 1 - a) + 1] = k // 2
                y = conv(F.pad(y, pad, mode="replicate"), ws)
            return y

    return run


def torch_dense2d(x: np.ndarray, K: np.ndarray) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x)[None, None]
    w = torch.from_numpy(K.astype(x.dtype))[None, None]
    ph, pw = K.shape[0] // 2, K.shape[1] // 2

    def run() -> object:
        with torch.inference_mode():
            return F.conv2d(F.pad(t, [pw, pw, ph, ph], mode="replicate"), w)

    return run


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------


def gaussian_2d_case(size: int, k: int, dtype: type, threads: int) -> Case:
    import cv2

    sigma = {7: 1.0, 19: 3.0}[k]
    radius = k // 2
    rng = np.random.default_rng(0)
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    x = (rng.random((size, size)) * scale).astype(dtype)
    g = kernels.gaussian1d(sigma, radius=radius)
    gf = g.astype(np.float32)
    name = f"2d-{np.dtype(dtype).name}-k{k}"
    contenders = [
        Contender(
            "sepconv", lambda: sepconv.gaussian_filter(x, sigma, radius=radius, workers=threads)
        ),
        Contender(
            "scipy.ndimage", lambda: ndimage.gaussian_filter(x, sigma, radius=radius), "1 thread"
        ),
        Contender(
            "opencv.sepFilter2D",
            lambda: cv2.sepFilter2D(x, -1, gf, gf, borderType=cv2.BORDER_REFLECT),
        ),
        Contender(
            "opencv.GaussianBlur",
            lambda: cv2.GaussianBlur(x, (k, k), sigma, borderType=cv2.BORDER_REFLECT),
        ),
    ]
    if dtype == np.float32:
        contenders.append(Contender("torch.conv2d", torch_separable(x, g, 2), "2 passes"))
        contenders.append(_into(x, lambda out: sepconv.gaussian_filter(
            x, sigma, radius=radius, workers=threads, output=out
        )))  # fmt: skip
    contenders.append(_copy(x))
    return Case(
        name,
        f"{size}x{size} {np.dtype(dtype).name}, Gaussian sigma={sigma} (k={k}), reflect",
        x.nbytes,
        contenders,
        targets=(
            {"opencv.sepFilter2D": 1.0, "opencv.GaussianBlur": 1.0, "scipy.ndimage": 1 / 6}
            if dtype == np.float32
            else {"opencv.GaussianBlur": 1.0}
        ),
    )


def wide_gaussian_case(size: int, sigma: float, threads: int, tol: float | None) -> Case:
    """A wide Gaussian (background subtraction): exact (``auto``), or within ``tol`` (the
    recursive Gaussian allowed)."""
    import cv2

    x = np.random.default_rng(0).random((size, size)).astype(np.float32)
    k = 2 * int(4 * sigma + 0.5) + 1
    kw = {} if tol is None else {"tol": tol}
    what = "exact (auto)" if tol is None else f"tol={tol:g}"
    contenders = [
        Contender(
            "sepconv",
            lambda: sepconv.gaussian_filter(x, sigma, workers=threads, **kw),
            what,
        ),
        Contender("scipy.ndimage", lambda: ndimage.gaussian_filter(x, sigma), "1 thread"),
        Contender(
            "opencv.GaussianBlur",
            lambda: cv2.GaussianBlur(x, (k, k), sigma, borderType=cv2.BORDER_REFLECT),
        ),
        _copy(x),
    ]
    targets = {"scipy.ndimage": 1 / 20, "opencv.GaussianBlur": 1.0}
    if tol is not None:
        targets = {"opencv.GaussianBlur": 1 / 10}
    name = f"wide-s{sigma:g}" + ("" if tol is None else f"-tol{tol:g}")
    return Case(
        name,
        f"{size}x{size} float32, Gaussian sigma={sigma:g} (k={k}), reflect, {what}",
        x.nbytes,
        contenders,
        targets=targets,
    )


def box_case(size: int, box: int, threads: int) -> Case:
    import cv2

    x = np.random.default_rng(0).random((size, size)).astype(np.float32)
    return Case(
        f"box-{box}",
        f"{size}x{size} float32, uniform_filter size {box}, reflect",
        x.nbytes,
        [
            Contender("sepconv", lambda: sepconv.uniform_filter(x, box, workers=threads)),
            Contender("scipy.ndimage", lambda: ndimage.uniform_filter(x, box), "1 thread"),
            Contender(
                "opencv.blur",
                lambda: cv2.blur(x, (box, box), borderType=cv2.BORDER_REFLECT),
            ),
            _copy(x),
        ],
        targets={"scipy.ndimage": 1 / 10},
    )


def gaussian_3d_case(size: int, threads: int) -> Case:
    import SimpleITK as sitk

    x = np.random.default_rng(0).random((size,) * 3).astype(np.float32)
    img = sitk.GetImageFromArray(x)
    radius = int(4 * 2.0 + 0.5)
    g = kernels.gaussian1d(2.0, radius=radius)
    discrete = sitk.DiscreteGaussianImageFilter()
    discrete.SetVariance(4.0)
    discrete.SetMaximumKernelWidth(2 * radius + 1)
    discrete.SetMaximumError(1e-3)
    discrete.SetUseImageSpacing(False)
    recursive = sitk.SmoothingRecursiveGaussianImageFilter()
    recursive.SetSigma(2.0)
    return Case(
        f"3d-float32-s2-{size}",
        f"{size}^3 float32, Gaussian sigma=2 (k={2 * radius + 1}), reflect",
        x.nbytes,
        [
            Contender("sepconv", lambda: sepconv.gaussian_filter(x, 2.0, workers=threads)),
            Contender("scipy.ndimage", lambda: ndimage.gaussian_filter(x, 2.0), "1 thread"),
            Contender("sitk.DiscreteGaussian", lambda: discrete.Execute(img)),
            Contender(
                "sitk.SmoothingRecursiveGaussian",
                lambda: recursive.Execute(img),
                "IIR approximation",
            ),
            Contender("torch.conv3d", torch_separable(x, g, 3), "3 passes"),
            _into(x, lambda out: sepconv.gaussian_filter(x, 2.0, workers=threads, output=out)),
            _copy(x),
        ],
        targets={
            "scipy.ndimage": 1 / 8,
            "sitk.DiscreteGaussian": 1.0,
            "sitk.SmoothingRecursiveGaussian": 1.0,
        },
    )


def dense_case(
    name: str,
    desc: str,
    K: np.ndarray,
    size: int,
    threads: int,
    targets: dict[str, float] | None = None,
) -> Case:
    import cv2

    x = np.random.default_rng(0).random((size, size)).astype(np.float32)
    Kf = K.astype(np.float32)
    plan = sepconv.make_plan(K, x.shape)
    contenders = [
        Contender(
            "sepconv",
            lambda: sepconv.correlate(x, K, workers=threads),
            f"auto -> {plan.method}" + (f" rank {plan.rank}" if plan.rank else ""),
        ),
        Contender("scipy.ndimage", lambda: ndimage.correlate(x, K), "1 thread"),
        Contender(
            "opencv.filter2D", lambda: cv2.filter2D(x, -1, Kf, borderType=cv2.BORDER_REFLECT)
        ),
        Contender("torch.conv2d", torch_dense2d(x, K), "dense"),
        _copy(x),
    ]
    return Case(name, f"{size}x{size} float32, {desc}", x.nbytes, contenders, targets=targets or {})


def five_d_case(threads: int, quick: bool) -> Case:
    shape = (2, 32, 32, 32, 3) if quick else (4, 64, 64, 64, 3)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    axes = (1, 2, 3)
    return Case(
        "5d-3axes",
        f"{shape} float32, Gaussian sigma=1.5 along axes {axes}",
        x.nbytes,
        [
            Contender(
                "sepconv", lambda: sepconv.gaussian_filter(x, 1.5, axes=axes, workers=threads)
            ),
            Contender(
                "scipy.ndimage", lambda: ndimage.gaussian_filter(x, 1.5, axes=axes), "1 thread"
            ),
            _copy(x),
        ],
    )


# ----------------------------------------------------------------------------------------------
# single passes against the copy (memory bandwidth)
# ----------------------------------------------------------------------------------------------


def pass_bandwidth(threads: int, repeats: int, quick: bool) -> list[dict]:
    rows = []
    for shape in [(1024, 1024), (64,) * 3] if quick else [(4096, 4096), (256,) * 3]:
        x = np.random.default_rng(0).random(shape).astype(np.float32)
        out = np.empty_like(x)
        w = kernels.gaussian1d(1.0, radius=3)
        for axis in range(x.ndim):
            contenders = [
                Contender(
                    "pass",
                    lambda a=axis, x=x, w=w, out=out: sepconv.correlate1d(
                        x, w, axis=a, output=out, workers=threads
                    ),
                ),
                Contender("copy", lambda x=x, out=out: np.copyto(out, x)),
            ]
            t = median_times(contenders, repeats)
            moved = 2 * x.nbytes
            rows.append(
                {
                    "shape": list(shape),
                    "axis": axis,
                    "k": len(w),
                    "pass_s": t["pass"],
                    "copy_s": t["copy"],
                    "pass_GBps": moved / t["pass"] / 1e9,
                    "copy_GBps": moved / t["copy"] / 1e9,
                    "pass_over_copy": t["pass"] / t["copy"],
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------
# planner sweep: auto vs the best fixed method
# ----------------------------------------------------------------------------------------------


def planner_sweep(threads: int, repeats: int, quick: bool) -> list[dict]:
    size = 256 if quick else 512
    x = np.random.default_rng(0).random((size, size)).astype(np.float32)
    rng = np.random.default_rng(1)
    rows = []
    sizes = [3, 9, 25, 63] if quick else [3, 5, 9, 15, 25, 41, 63]
    for k in sizes:
        ranks = sorted({1, 2, 4, max(1, k // 2), k} & set(range(1, k + 1)))
        for r in ranks:
            K = sum(np.outer(rng.standard_normal(k), rng.standard_normal(k)) for _ in range(r))
            f = sepconv.separate(K)
            methods = {
                "direct": lambda K=K: sepconv.correlate(x, K, method="direct", workers=threads),
                "fft": lambda K=K: sepconv.correlate(x, K, method="fft", workers=threads),
                "lowrank": lambda f=f: sepconv.correlate(x, f, method="lowrank", workers=threads),
                "auto": lambda K=K: sepconv.correlate(x, K, workers=threads),
            }
            t = median_times([Contender(n, fn) for n, fn in methods.items()], repeats)
            fixed = {m: t[m] for m in ("direct", "fft", "lowrank")}
            best = min(fixed, key=fixed.__getitem__)
            rows.append(
                {
                    "k": k,
                    "rank": f.rank,
                    "choice": sepconv.make_plan(K, x.shape).method,
                    "best": best,
                    **{f"{m}_s": v for m, v in t.items()},
                    "auto_over_best": t["auto"] / fixed[best],
                }
            )
    return rows


def planning_times(quick: bool) -> list[dict]:
    """``make_plan`` for 3-D kernels up to 15^3 on a 256^3 volume: cold (every cache of the
    planner emptied) and cached (the same call again). Targets: <= 50 ms cold, <= 1 ms
    cached."""
    from sepconv import plan as planmod

    data = (64,) * 3 if quick else (256,) * 3
    rng = np.random.default_rng(5)
    g = kernels.gaussian1d(2.0, radius=7)
    cases = {
        "ball r=4 (9^3)": kernels.ball(4),
        "ball r=7 (15^3)": kernels.ball(7),
        "gaussian 15^3 (rank 1)": np.einsum("i,j,k->ijk", g, g, g),
        "LoG 15^3": kernels.laplacian_of_gaussian(1.75, ndim=3),
        "random 15^3": rng.standard_normal((15, 15, 15)),
        "random 5^3": rng.standard_normal((5, 5, 5)),
    }
    rows = []
    for name, K in cases.items():
        cold = []
        for _ in range(3):
            with planmod._LOCK:
                planmod._PLANS.clear()
                planmod._CACHE.clear()
                planmod._WITHIN.clear()
            t = time.perf_counter()
            p = sepconv.make_plan(K, data)
            cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(100):
            sepconv.make_plan(K, data)
        cached = (time.perf_counter() - t) / 100
        rows.append(
            {
                "kernel": name,
                "method": p.method,
                "rank": p.rank,
                "cold_s": float(np.median(cold)),
                "cached_s": cached,
            }
        )
    return rows


def compile_times() -> dict[str, float]:
    code = (
        "import time; t=time.perf_counter(); import numpy as np, sepconv; "
        "x=np.zeros((64,64),np.float32); sepconv.gaussian_filter(x,2.0); "
        "sepconv.correlate(x, np.ones((5,5)), method='direct'); "
        "print(time.perf_counter()-t)"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_cache_s", "warm_cache_s"):
            res = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            out[label] = float(res.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def run_case(case: Case, repeats: int) -> dict:
    times = median_times(case.contenders, repeats)
    ours = times["sepconv"]
    peak = peak_memory(case.contenders[0].fn)
    rows = []
    for c in case.contenders:
        t = times[c.name]
        rows.append(
            {
                "contender": c.name,
                "note": c.note,
                "median_s": t,
                "sepconv_speedup": t / ours,  # > 1: sepconv is faster
                "GBps": 2 * case.nbytes / t / 1e9,
            }
        )
    targets = []
    for name, limit in case.targets.items():
        if name in times:
            ratio = ours / times[name]
            targets.append(
                {"vs": name, "sepconv_over_peer": ratio, "limit": limit, "met": ratio <= limit}
            )
    return {
        "case": case.name,
        "description": case.description,
        "rows": rows,
        "sepconv_peak_bytes": peak,
        "input_bytes": case.nbytes,
        "targets": targets,
    }


def markdown(results: dict) -> str:
    lines = [f"# sepconv benchmarks — {results['machine']} — {results['date']}", ""]
    lines.append(
        f"Threads: {results['threads']} for every contender (scipy.ndimage is "
        "single-threaded). Median of "
        f"{results['repeats']} "
        + (
            "runs of each contender back to back"
            if results.get("protocol") == "blocks"
            else "alternating runs"
        )
        + " after warm-up. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + "."
    )
    lines.append("")
    ct = results["compile"]
    lines.append(
        f"Numba compilation (first calls in a fresh process): {ct['cold_cache_s']:.1f} s "
        f"with an empty cache, {ct['warm_cache_s']:.1f} s with the on-disk cache."
    )
    for case in results["cases"]:
        lines += ["", f"## {case['case']}: {case['description']}", ""]
        lines.append("| contender | median ms | sepconv speed-up | GB/s (read+write) | note |")
        lines.append("|---|---:|---:|---:|---|")
        for r in case["rows"]:
            lines.append(
                f"| {r['contender']} | {r['median_s'] * 1e3:.1f} | "
                f"{r['sepconv_speedup']:.2f}x | {r['GBps']:.2f} | {r['note']} |"
            )
        peak = case["sepconv_peak_bytes"] / case["input_bytes"]
        lines.append("")
        lines.append(f"sepconv peak numpy memory: {peak:.2f}x the input size.")
        for t in case["targets"]:
            mark = "met" if t["met"] else "MISSED"
            lines.append(
                f"- target sepconv/{t['vs']} <= {t['limit']:.3g}: "
                f"{t['sepconv_over_peer']:.3f} ({mark})"
            )
    lines += [
        "",
        "## Single passes vs a plain copy (float32, k=7)",
        "",
        "| shape | axis | pass ms | copy ms | pass GB/s | copy GB/s | pass / copy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["passes"]:
        lines.append(
            f"| {tuple(r['shape'])} | {r['axis']} | {r['pass_s'] * 1e3:.2f} | "
            f"{r['copy_s'] * 1e3:.2f} | {r['pass_GBps']:.2f} | {r['copy_GBps']:.2f} | "
            f"{r['pass_over_copy']:.2f} |"
        )
    lines += [
        "",
        "## Planner: method='auto' vs the best fixed method (float32 2-D)",
        "",
        "| k | rank | auto chose | fastest | direct ms | fft ms | lowrank ms | auto ms |"
        " auto / best |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["planner"]:
        lines.append(
            f"| {r['k']} | {r['rank']} | {r['choice']} | {r['best']} | "
            f"{r['direct_s'] * 1e3:.2f} | {r['fft_s'] * 1e3:.2f} | "
            f"{r['lowrank_s'] * 1e3:.2f} | {r['auto_s'] * 1e3:.2f} | "
            f"{r['auto_over_best']:.2f} |"
        )
    if results["planner"]:
        worst = max(r["auto_over_best"] for r in results["planner"])
        lines += ["", f"Worst auto / best: {worst:.2f} (target <= 1.25)."]
    if results.get("planning"):
        lines += [
            "",
            "## Planning time: make_plan of 3-D kernels for a 256^3 volume",
            "",
            "Targets: <= 50 ms cold (every planner cache emptied), <= 1 ms cached.",
            "",
            "| kernel | plan | cold ms | cached ms |",
            "|---|---|---:|---:|",
        ]
        for r in results["planning"]:
            rank = f" rank {r['rank']}" if r["rank"] else ""
            lines.append(
                f"| {r['kernel']} | {r['method']}{rank} | {r['cold_s'] * 1e3:.1f} | "
                f"{r['cached_s'] * 1e3:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["cases"]
    pl = results["planner"]
    if pl:
        fig, axes = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [2, 1]})
    else:  # no planner sweep run (--only): no empty panel
        fig, ax0 = plt.subplots(1, 1, figsize=(12, 6))
        axes = [ax0]
    ax = axes[0]
    peers = sorted({r["contender"] for c in cases for r in c["rows"]} - {"sepconv"})
    width = 0.8 / max(1, len(peers))
    for i, peer in enumerate(peers):
        xs, ys = [], []
        for j, c in enumerate(cases):
            for r in c["rows"]:
                if r["contender"] == peer:
                    xs.append(j + i * width)
                    ys.append(r["sepconv_speedup"])
        ax.bar(xs, ys, width, label=peer)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
    ax.set_xticklabels([c["case"] for c in cases], rotation=30, ha="right")
    ax.set_ylabel("peer time / sepconv time  (> 1: sepconv faster)")
    ax.set_title(f"sepconv vs peers, {results['threads']} threads, {results['machine']}")
    ax.legend(fontsize=8, ncol=2)
    if not pl:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    ax = axes[1]
    ax.scatter(
        [r["k"] for r in pl],
        [r["auto_over_best"] for r in pl],
        c=[r["rank"] / r["k"] for r in pl],
        cmap="viridis",
    )
    ax.axhline(1.25, color="r", ls="--", label="target 1.25")
    ax.set_xlabel("kernel size k (k x k)")
    ax.set_ylabel("auto time / best fixed method time")
    ax.set_title("planner (colour: rank / k)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--only", nargs="*", help="run only the cases whose name contains these")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument(
        "--protocol",
        choices=["alternating", "blocks"],
        default="alternating",
        help="contenders take turns (default) or run back to back (see PROTOCOL)",
    )
    args = p.parse_args(argv)
    global PROTOCOL
    PROTOCOL = args.protocol
    if args.repeats < 5 and not args.quick:
        p.error("--repeats must be at least 5 (medians of fewer runs are not reported)")
    versions = setup_threads(args.threads)
    _warm_memory()
    q = args.quick
    s2, s3 = (512, 64) if q else (4096, 256)
    builders: list[Callable[[], Case]] = [
        lambda: gaussian_2d_case(s2, 7, np.float32, args.threads),
        lambda: gaussian_2d_case(s2, 19, np.float32, args.threads),
        lambda: gaussian_2d_case(s2, 7, np.uint8, args.threads),
        lambda: gaussian_2d_case(s2, 19, np.uint8, args.threads),
        lambda: gaussian_2d_case(s2, 7, np.uint16, args.threads),
        lambda: gaussian_2d_case(s2, 19, np.uint16, args.threads),
        lambda: wide_gaussian_case(s2, 32.0, args.threads, None),
        lambda: wide_gaussian_case(s2, 4.0, args.threads, 1e-3),
        lambda: wide_gaussian_case(s2, 32.0, args.threads, 1e-3),
        lambda: wide_gaussian_case(s2, 64.0, args.threads, 1e-3),
        lambda: box_case(s2, 101, args.threads),
        lambda: gaussian_3d_case(s3, args.threads),
        lambda: dense_case(
            "dense-separable-9x9",
            "a separable 9x9 kernel handed over dense",
            np.outer(kernels.binomial(9, ndim=1), kernels.gaussian1d(2.0, radius=4)),
            512 if q else 2048,
            args.threads,
            targets={"scipy.ndimage": 0.1},
        ),
        lambda: dense_case(
            "disk-r8",
            "anti-aliased disk radius 8 (17x17, low rank)",
            kernels.disk(8, antialias=True),
            512 if q else 2048,
            args.threads,
        ),
        lambda: dense_case(
            "dense-63x63",
            "63x63 non-separable kernel (FFT territory)",
            kernels.gabor(10.0, theta=30, frequency=0.05, gamma=0.5, truncate=3.0)[:63, :63],
            256 if q else 512,
            args.threads,
        ),
        lambda: five_d_case(args.threads, q),
    ]
    cases = []
    t_start = time.perf_counter()
    for build in builders:
        case = build()
        if args.only and not any(o in case.name for o in args.only):
            continue
        print(
            f"[{time.perf_counter() - t_start:6.1f}s] {case.name}: {case.description}", flush=True
        )
        cases.append(run_case(case, args.repeats))
        for r in cases[-1]["rows"]:
            print(
                f"    {r['contender']:34s} {r['median_s'] * 1e3:9.2f} ms  "
                f"sepconv speed-up {r['sepconv_speedup']:6.2f}x",
                flush=True,
            )

    def wanted(name: str) -> bool:
        return not args.only or any(o in name for o in args.only)

    passes, planner = [], []
    if wanted("passes"):
        print(f"[{time.perf_counter() - t_start:6.1f}s] single passes vs copy", flush=True)
        passes = pass_bandwidth(args.threads, args.repeats, q)
    if wanted("planner"):
        print(f"[{time.perf_counter() - t_start:6.1f}s] planner sweep", flush=True)
        planner = planner_sweep(args.threads, args.repeats, q)
    planning = planning_times(q) if wanted("planning") else []
    results = {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": dt.date.today().isoformat(),
        "threads": args.threads,
        "repeats": args.repeats,
        "protocol": PROTOCOL,
        "quick": q,
        "versions": versions,
        "compile": compile_times(),
        "cases": cases,
        "passes": passes,
        "planner": planner,
        "planning": planning,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['machine']}-{results['date']}" + ("-quick" if q else "")
    stem += "" if PROTOCOL == "alternating" else f"-{PROTOCOL}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(results))
    plot(results, args.out / f"{stem}.png")
    print(markdown(results))
    print(f"wrote {args.out / stem}.{{json,md,png}} in {time.perf_counter() - t_start:.0f} s")
    return 0 if all(math.isfinite(r["median_s"]) for c in cases for r in c["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
