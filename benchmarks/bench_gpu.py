"""GPU benchmark: sepconv's Triton engine against the torch path, cupyx and a plain copy.

One command, no network, sepconv from the source tree::

    PYTHONPATH=src python benchmarks/bench_gpu.py            # the grid of issue #13, ~3-5 min
    PYTHONPATH=src python benchmarks/bench_gpu.py --quick    # tiny sizes (also on a CPU under
                                                             # TRITON_INTERPRET=1, set here)

Contenders, alternating in one process on the same tensors (medians of CUDA-event timings
after warm-up, which includes Triton's compilation and autotuning):

``triton``          ``sepconv.engine.triton_gpu.separable`` into a preallocated output
                    (the last two axes fused in one kernel)
``triton-2pass``    the same engine with ``fuse=False`` (one kernel per axis), 2-D cases only
``sepconv``         sepconv's public filter on the tensor (``sepconv.gaussian_filter``;
                    ``sepconv.correlate`` with the dense rank-r kernel for the low-rank cases):
                    the Triton engine plus argument checks and planning, what users get
``sepconv-cupy``    the same public filter on a CuPy array (zero-copy through DLPack)
``torch-path``      the same public filter with ``SEPCONV_TORCH_ENGINE=torch``: torch's own
                    convolutions (what sepconv ran on a GPU before the Triton engine)
``cupyx``           ``cupyx.scipy.ndimage.gaussian_filter`` (``correlate1d`` per pass and
                    term for low rank) on the same memory through DLPack, preallocated output
``copy``            ``out.copy_(x)``: reading and writing the array once, the bandwidth limit

Cases marked ``grad`` time a forward and a backward pass (``y.backward(g)``) of the public
filter on a tensor that requires gradients: ``sepconv`` (the Triton engine both ways) against
``torch-path`` (torch's autograd through its convolutions); the gradient is checked against a
float64 reference.

Every contender's result is checked against the reference (cupyx where it runs, else the
torch path) on a strided subsample; a failing contender or case is reported and skipped,
never ending the run. Writes ``benchmarks/results/gpu-<device>-<date>.{json,md}`` (or
``--out DIR``) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def log(*args: Any) -> None:
    print(*args, flush=True)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch missing
        return False


if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch


def import_engine() -> tuple[Any, str]:
    """``sepconv.engine.triton_gpu``; if the package cannot be imported here (numba missing on
    the GPU machine, say), the engine module alone, which needs only numpy, torch, triton."""
    try:
        from sepconv.engine import triton_gpu

        return triton_gpu, "sepconv package"
    except Exception as exc:
        note = f"sepconv package import failed ({type(exc).__name__}: {exc}); engine loaded alone"
        for name in [m for m in sys.modules if m == "sepconv" or m.startswith("sepconv.")]:
            del sys.modules[name]
        src = ROOT / "src" / "sepconv"
        for name, path in (("sepconv", src), ("sepconv.engine", src / "engine")):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
        from sepconv.engine import triton_gpu

        return triton_gpu, note


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------


def gaussian_weights(sigma: float, radius: int | None = None) -> np.ndarray:
    """scipy.ndimage's order-0 Gaussian: radius int(4 sigma + 0.5), normalised."""
    r = int(4.0 * sigma + 0.5) if radius is None else radius
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def cases(quick: bool) -> list[dict[str, Any]]:
    """The grid of issue #13 (``quick``: tiny sizes of the same shapes of problem)."""
    s2 = (40, 48) if quick else (8192, 8192)
    s3 = (6, 8, 10) if quick else (512, 512, 512)
    s4 = (2, 2, 9, 12) if quick else (64, 3, 512, 512)
    out = [
        dict(name="2d k=9", shape=s2, sigma=1.0, axes=(0, 1), dtype="float32"),
        dict(name="2d k=25", shape=s2, sigma=3.0, axes=(0, 1), dtype="float32"),
        dict(name="2d k=65", shape=s2, sigma=8.0, axes=(0, 1), dtype="float32"),
        dict(name="3d sigma=2", shape=s3, sigma=2.0, axes=(0, 1, 2), dtype="float32"),
        dict(name="BCHW sigma=2 axes=(2,3)", shape=s4, sigma=2.0, axes=(2, 3), dtype="float32"),
        dict(name="2d k=25 bfloat16", shape=s2, sigma=3.0, axes=(0, 1), dtype="bfloat16"),
        dict(name="2d k=25 float16", shape=s2, sigma=3.0, axes=(0, 1), dtype="float16"),
        dict(name="1d pass k=25 axis 0", shape=s2, sigma=3.0, axes=(0,), dtype="float32"),
        dict(name="1d pass k=25 axis 1", shape=s2, sigma=3.0, axes=(1,), dtype="float32"),
        dict(name="2d k=25 rank 1", shape=s2, sigma=3.0, axes=(0, 1), dtype="float32", rank=1),
        dict(name="2d k=25 rank 2", shape=s2, sigma=3.0, axes=(0, 1), dtype="float32", rank=2),
        dict(name="2d k=25 rank 3", shape=s2, sigma=3.0, axes=(0, 1), dtype="float32", rank=3),
        dict(name="2d k=9 grad", shape=s2, sigma=1.0, axes=(0, 1), dtype="float32", grad=True),
        dict(name="BCHW grad", shape=s4, sigma=2.0, axes=(2, 3), dtype="float32", grad=True),
    ]
    for c in out:
        c["k"] = 2 * int(4.0 * c["sigma"] + 0.5) + 1
    return out


def rank_terms(case: dict[str, Any]) -> list[tuple[float, list[tuple[int, np.ndarray, int]]]]:
    """Rank-r terms, all of the case's kernel length: Gaussians of decreasing sigma with
    alternating signs (a difference of Gaussians for r = 2). Plain Gaussian without ``rank``."""
    radius = case["k"] // 2
    rank = case.get("rank")
    if rank is None:
        w = gaussian_weights(case["sigma"])
        return [(1.0, [(a, w, 0) for a in case["axes"]])]
    terms = []
    for i in range(rank):
        w = gaussian_weights(case["sigma"] * (1.0 - 0.2 * i), radius)
        terms.append(((-1.0) ** i / (i + 1), [(a, w, 0) for a in case["axes"]]))
    return terms


# ----------------------------------------------------------------------------------------------
# contenders
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def engine(name: str) -> Iterator[None]:
    """``SEPCONV_TORCH_ENGINE=name`` during the block (read by sepconv at every call)."""
    before = os.environ.get("SEPCONV_TORCH_ENGINE")
    os.environ["SEPCONV_TORCH_ENGINE"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["SEPCONV_TORCH_ENGINE"]
        else:
            os.environ["SEPCONV_TORCH_ENGINE"] = before


def on(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with ``SEPCONV_TORCH_ENGINE=name``."""

    def call() -> Any:
        with engine(name):
            return fn()

    return call


def grad_contenders(case: dict[str, Any], x: torch.Tensor, notes: list[str]) -> dict:
    """Forward + backward of the public filter: the Triton engine against torch's autograd;
    ``reference``: the gradient in float64 (torch's path, untimed)."""
    import sepconv

    auto = "auto" if x.device.type == "cuda" else "triton"  # CPU: the interpreter
    gen = torch.Generator(device="cpu").manual_seed(1)
    g = torch.rand(x.shape, generator=gen, dtype=torch.float32).to(x.device, x.dtype)

    def fwd_bwd(t: torch.Tensor, gt: torch.Tensor) -> Callable[[], Any]:
        leaf = t.detach().clone().requires_grad_(True)

        def fn() -> Any:
            leaf.grad = None
            sepconv.gaussian_filter(leaf, case["sigma"], axes=case["axes"]).backward(gt)
            return leaf.grad

        return fn

    out: dict[str, Callable[[], Any]] = {
        "sepconv": on(auto, fwd_bwd(x, g)),
        "torch-path": on("torch", fwd_bwd(x, g)),
        "reference": on("torch", fwd_bwd(x.double(), g.double())),
    }
    y3 = torch.empty_like(x)
    out["copy"] = lambda: y3.copy_(x)
    return out


def contenders(case: dict[str, Any], x: torch.Tensor, tg: Any, notes: list[str]) -> dict:
    """name -> zero-argument callable returning the result (a tensor or a cupy array); an
    entry ``reference`` is run once, untimed, as the correctness reference."""
    from sepconv.job import Job

    if case.get("grad"):
        return grad_contenders(case, x, notes)
    terms = rank_terms(case)
    modes = dict.fromkeys(case["axes"], "reflect")
    job = Job(tuple(terms), modes, 0.0)
    out: dict[str, Callable[[], Any]] = {}
    auto = "auto" if x.device.type == "cuda" else "triton"  # CPU: the interpreter
    y = torch.empty_like(x)
    out["triton"] = lambda: tg.separable(x, job, out=y)
    if len(case["axes"]) == 2 and case["axes"][-1] == x.ndim - 1:  # fused vs two kernels
        y2 = torch.empty_like(x)
        out["triton-2pass"] = lambda: tg.separable(x, job, out=y2, fuse=False)
    try:
        import sepconv

        if case.get("rank") is None:

            def public(a: Any) -> Any:
                return sepconv.gaussian_filter(a, case["sigma"], axes=case["axes"])
        else:
            K = sum(
                wt * np.multiply.outer(ps[0][1], ps[1][1]) for wt, ps in terms
            )  # dense rank-r kernel

            def public(a: Any) -> Any:
                return sepconv.correlate(a, K)

        out["sepconv"] = on(auto, lambda: public(x))
        out["torch-path"] = on("torch", lambda: public(x))
        if x.device.type == "cuda":
            try:
                import cupy

                cx_public = cupy.from_dlpack(x)
                out["sepconv-cupy"] = lambda: public(cx_public)
            except Exception as exc:
                notes.append(f"sepconv-cupy unavailable: {type(exc).__name__}: {exc}")
    except Exception as exc:
        notes.append(f"public filters unavailable: {type(exc).__name__}: {exc}")
    if x.device.type == "cuda":
        try:
            import cupy
            from cupyx.scipy import ndimage as cnd

            cx = cupy.from_dlpack(x)  # same memory
            cy = cupy.empty_like(cx)
            if case.get("rank") is None:
                sig = [case["sigma"] if a in case["axes"] else 0.0 for a in range(x.ndim)]
                out["cupyx"] = lambda: cnd.gaussian_filter(cx, sig, output=cy, mode="reflect")
            else:
                tmp = cupy.empty_like(cx)
                acc = cupy.empty_like(cx)
                cterms = [(wt, [(a, cupy.asarray(w), o) for a, w, o in ps]) for wt, ps in terms]

                def cupyx_lowrank() -> Any:
                    for i, (wt, ps) in enumerate(cterms):
                        cur = cx
                        for axis, w, _ in ps:
                            nxt = tmp if cur is not tmp else cy
                            cnd.correlate1d(cur, w, axis=axis, output=nxt, mode="reflect")
                            cur = nxt
                        if i == 0:
                            cupy.multiply(cur, wt, out=acc)
                        else:
                            cupy.add(acc, wt * cur, out=acc)
                    return acc

                out["cupyx"] = cupyx_lowrank
        except Exception as exc:
            notes.append(f"cupyx unavailable: {type(exc).__name__}: {exc}")
    y3 = torch.empty_like(x)
    out["copy"] = lambda: y3.copy_(x)
    return out


def as_tensor(r: Any) -> torch.Tensor:
    if isinstance(r, torch.Tensor):
        return r
    return torch.from_dlpack(r)  # a cupy array


def rel_diff(a: Any, b: Any, step: int) -> float:
    """max |a - b| / max(1, max |b|) on every ``step``-th element along each axis."""
    ta, tb = as_tensor(a), as_tensor(b)
    sl = tuple(slice(None, None, step) for _ in range(ta.ndim))
    da = ta[sl].to(torch.float64)
    db = tb[sl].to(torch.float64)
    scale = max(1.0, float(db.abs().max()))
    return float((da - db).abs().max()) / scale


TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """One call's time in ms: CUDA events on a GPU, perf_counter otherwise."""
    if device.type == "cuda":
        from sepconv._timing import cuda_seconds  # stdlib only: loads with the engine alone

        return cuda_seconds(fn) * 1e3
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run_case(case: dict[str, Any], tg: Any, args: argparse.Namespace, device: torch.device):
    dtype = getattr(torch, case["dtype"])
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(case["shape"], generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    notes: list[str] = []
    fns = contenders(case, x, tg, notes)
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    t_start = time.perf_counter()
    reference = fns.pop("reference", None)
    if reference is not None:
        try:
            outputs["reference"] = reference()
        except Exception as exc:
            notes.append(f"reference failed: {type(exc).__name__}: {exc}")
    for name, fn in list(fns.items()):  # warm-up: compilation, autotuning, caches
        try:
            t0 = time.perf_counter()
            first = fn()
            outputs[name] = first.clone() if isinstance(first, torch.Tensor) else first
            for _ in range(args.warmup - 1):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            results[name] = {"warmup_s": round(time.perf_counter() - t0, 3)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"    {name}: FAILED in warm-up: {type(exc).__name__}: {exc}")
            if args.verbose:
                traceback.print_exc()
            del fns[name]
    # correctness on a subsample, against cupyx (else the torch path)
    ref_name = "reference" if "reference" in outputs else None
    ref_name = ref_name or next(
        (n for n in ("cupyx", "torch-path") if n in outputs and n in fns), None
    )
    step = max(1, round(x.numel() ** (1 / x.ndim) / 512)) if not args.quick else 1
    for name in list(fns):
        if name == "copy" or ref_name is None or name == ref_name:
            continue
        try:
            d = rel_diff(outputs[name], outputs[ref_name], step)
            results[name][f"rel_diff_vs_{ref_name}"] = d
            results[name]["correct"] = bool(d <= TOL[case["dtype"]])
            if not results[name]["correct"]:
                tol = TOL[case["dtype"]]
                log(f"    {name}: differs from {ref_name} by {d:.3g} (tolerance {tol})")
        except Exception as exc:
            results[name]["check_error"] = f"{type(exc).__name__}: {exc}"
    outputs.clear()
    # alternate the contenders, rep by rep, within the case's time budget
    times: dict[str, list[float]] = {n: [] for n in fns}
    budget = args.case_budget
    t_loop = time.perf_counter()
    for rep in range(args.reps):
        for name, fn in list(fns.items()):
            try:
                times[name].append(timed(fn, device))
            except Exception as exc:
                results[name]["error"] = f"{type(exc).__name__}: {exc}"
                del fns[name]
        if rep >= 2 and time.perf_counter() - t_loop > budget:
            notes.append(f"stopped after {rep + 1} reps (case budget {budget:.0f} s)")
            break
    for name, ts in times.items():
        if ts:
            results[name]["median_ms"] = statistics.median(ts)
            results[name]["reps"] = len(ts)
    copy = results.get("copy", {}).get("median_ms")
    for r in results.values():
        if copy and "median_ms" in r:
            r["x_copy"] = r["median_ms"] / copy
    notes.append(f"case wall time {time.perf_counter() - t_start:.1f} s")
    del x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results, notes


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------

COLUMNS = ["triton", "triton-2pass", "sepconv", "sepconv-cupy", "torch-path", "cupyx", "copy"]


def fmt_ms(r: dict[str, Any] | None) -> str:
    if not r:
        return "—"
    if "median_ms" not in r:
        return "failed" if "error" in r else "—"
    s = f"{r['median_ms']:.3f}"
    if r.get("correct") is False:
        s += " (WRONG)"
    return s


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or "median_ms" not in a or "median_ms" not in b:
        return "—"
    return f"{b['median_ms'] / a['median_ms']:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU benchmark: {report['device']} ({report['date']})",
        "",
        f"`{report['command']}`; torch {report['torch']}, triton {report['triton']}, "
        f"cupy {report['cupy']}; medians of {report['timer']} times (ms) after warm-up; "
        f"autotune {'on' if report['autotune'] else 'off'}. Ratios: the contender's time over "
        "the Triton engine's (> 1: the engine is faster; grad cases: over the public filter's "
        "forward + backward); 'x copy': the engine's time over a device-to-device copy of the "
        "same array (the bandwidth limit).",
        "",
        "| case | " + " | ".join(COLUMNS) + " | x copy | vs torch-path | vs cupyx |",
        "|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for c in report["cases"]:
        r = c["results"]
        t = r.get("triton") or r.get("sepconv")  # grad cases: the public filter, both ways
        cells = [fmt_ms(r.get(n)) for n in COLUMNS]
        xc = f"{t['x_copy']:.2f}" if t and "x_copy" in t else "—"
        lines.append(
            f"| {c['name']} | "
            + " | ".join(cells)
            + f" | {xc} | {ratio(t, r.get('torch-path'))} | {ratio(t, r.get('cupyx'))} |"
        )
    lines += ["", "Correctness (max relative difference on a subsample):", ""]
    for c in report["cases"]:
        checks = [
            f"{n} {v:.2g}"
            for n, r in c["results"].items()
            for k, v in r.items()
            if k.startswith("rel_diff_vs_")
        ]
        errors = [f"{n}: {r['error']}" for n, r in c["results"].items() if "error" in r]
        lines.append(
            f"- {c['name']}: "
            + (", ".join(checks) or "no reference")
            + (("; errors: " + "; ".join(errors)) if errors else "")
            + (("; " + "; ".join(c["notes"])) if c["notes"] else "")
        )
    if report.get("gpu_time_model"):
        lines += [
            "",
            "The planner's time model measured on this GPU (`sepconv calibrate --device cuda`; "
            "ms = Mpixel x (a x MACs + b x passes) + c x passes):",
            "",
            "| method | a: per MAC | b: per pass | c: per call |",
            "|---|---|---|---|",
        ]
        for name, (a, b, c) in report["gpu_time_model"].items():
            lines.append(f"| {name} | {a:.3g} | {b:.3g} | {c:.3g} |")
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        raw = torch.cuda.get_device_name(device)
    else:
        raw = f"cpu-interpreter-{platform.machine()}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", raw).strip("-").lower()
    return slug or "unknown-device"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU interpreter: seconds)")
    p.add_argument("--reps", type=int, default=None, help="timed calls per contender")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender first")
    p.add_argument("--case-budget", type=float, default=20.0, help="seconds of timing per case")
    p.add_argument(
        "--cases",
        default="",
        help="only cases whose name contains one of these comma-separated strings",
    )
    p.add_argument("--no-autotune", action="store_true", help="fixed tiles (faster start)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 15
    if args.quick:
        args.warmup = 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.quick:
        log("no CUDA device: running --quick sizes under the Triton interpreter")
        args.quick = True
    tg, how = import_engine()
    if args.no_autotune:
        tg.AUTOTUNE = False
    import triton

    try:
        import cupy

        cupy_version = cupy.__version__
    except Exception:
        cupy_version = "not installed"
    notes = [f"engine: {how}"]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else "CPU (Triton interpreter)",
        "date": datetime.date.today().isoformat(),
        "command": "PYTHONPATH=src python benchmarks/bench_gpu.py "
        + " ".join(argv or sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cupy": cupy_version,
        "autotune": bool(tg.AUTOTUNE) and device.type == "cuda",
        "timer": "CUDA-event" if device.type == "cuda" else "perf_counter (interpreter)",
        "quick": args.quick,
        "cases": [],
        "notes": notes,
    }
    log(
        f"device {report['device']}; torch {torch.__version__}, triton {triton.__version__}, "
        f"cupy {cupy_version}; {how}"
    )
    selected = [
        c
        for c in cases(args.quick)
        if not args.cases or any(s in c["name"] for s in args.cases.split(","))
    ]
    stem = f"gpu-{device_name(device)}-{report['date']}"
    stem += ("-quick" if args.quick else "") + ("-subset" if args.cases else "")
    t0 = time.perf_counter()
    for i, case in enumerate(selected):
        log(
            f"[{i + 1}/{len(selected)}] {case['name']} {tuple(case['shape'])} {case['dtype']} "
            f"k={case['k']} ({time.perf_counter() - t0:.0f} s elapsed)"
        )
        try:
            results, cnotes = run_case(case, tg, args, device)
        except Exception as exc:  # allocation failures and the like: report, go on
            results, cnotes = {}, [f"case failed: {type(exc).__name__}: {exc}"]
            log(f"    case FAILED: {type(exc).__name__}: {exc}")
            if args.verbose:
                traceback.print_exc()
        for name, r in results.items():
            if "median_ms" in r:
                log(
                    f"    {name:13s} {r['median_ms']:9.3f} ms"
                    + (f"  ({r['x_copy']:.2f}x copy)" if "x_copy" in r else "")
                )
        entry = {k: v for k, v in case.items() if k != "shape"}
        entry["shape"] = list(case["shape"])
        entry["results"] = results
        entry["notes"] = cnotes
        report["cases"].append(entry)
        report["total_s"] = round(time.perf_counter() - t0, 1)
        if not write(report, stem, args.out, quiet=True):  # after every case: a run cut
            return 1  # short still leaves its results
    if device.type == "cuda" and not args.cases:  # the planner's GPU time model, measured
        log("planner time model on this GPU (sepconv calibrate --device cuda) ...")
        try:
            from sepconv.calibrate import calibrate

            t1 = time.perf_counter()
            report["gpu_time_model"] = calibrate(device="cuda", save=False)["time_model"]
            notes.append(f"GPU time model measured in {time.perf_counter() - t1:.0f} s")
        except Exception as exc:
            notes.append(f"GPU time model failed: {type(exc).__name__}: {exc}")
    md = write(report, stem, args.out)
    if md is None:
        return 1
    log("")
    log(md)
    return 0


def write(report: dict[str, Any], stem: str, out: str, quiet: bool = False) -> str | None:
    """Write ``stem``.json and .md into ``out`` (created); the markdown, or None on failure."""
    md = markdown(report)
    try:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out_dir / f"{stem}.md").write_text(md)
    except OSError as exc:
        log(f"could not write results to {out}: {exc}")
        return None
    if not quiet:
        log(f"wrote {out_dir / stem}.json and .md")
    return md


if __name__ == "__main__":
    sys.exit(main())
