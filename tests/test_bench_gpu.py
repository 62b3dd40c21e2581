"""``benchmarks/bench_gpu.py`` runs end to end (here: --quick sizes under Triton's interpreter),
so the one command a GPU session runs is known to work before GPU time is spent on it.

The contenders' results are checked inside the script against an independent reference (a
float64 gradient from torch's autograd for the grad cases, the torch path otherwise); this test
checks that every contender ran and was judged correct.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# found, not imported: triton reads TRITON_INTERPRET when first imported, and the engine tests
# that share this process set it first
if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
    pytest.skip("needs torch and triton", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_and_every_contender_is_correct(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRITON_INTERPRET": "1"}
    env.pop("SEPCONV_TORCH_ENGINE", None)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick"]
    cmd += ["--cases", "2d k=9 grad,rank 2,BCHW grad", "--out", str(tmp_path), "--reps", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("gpu-*-quick-subset.json")
    report = json.loads(path.read_text())
    names = [c["name"] for c in report["cases"]]
    assert names == ["2d k=25 rank 2", "2d k=9 grad", "BCHW grad"]
    expected = {
        "2d k=9 grad": {"sepconv", "torch-path"},
        "2d k=25 rank 2": {"triton", "triton-2pass", "sepconv"},
        "BCHW grad": {"sepconv", "torch-path"},
    }
    for case in report["cases"]:
        results = case["results"]
        assert "copy" in results and results["copy"]["median_ms"] > 0
        for name in expected[case["name"]]:
            r = results[name]
            assert "error" not in r, (case["name"], name, r)
            assert r["correct"] is True, (case["name"], name, r)
            assert r["median_ms"] > 0
    assert (tmp_path / path.name.replace(".json", ".md")).read_text().startswith("# GPU benchmark")


def test_kernel_profiling_driver_runs(tmp_path) -> None:
    """``benchmarks/gpu_kernels.py`` (what ``gpu_session.sh kernels`` runs under ncu) runs every
    engine kernel; here in the interpreter on tiny arrays."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_kernels.py"), "--quick", "--reps", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("_rows_kernel", "_last_kernel", "_fused_kernel", "two passes", "_direct_kernel"):
        assert name in proc.stdout, proc.stdout
