#!/usr/bin/env bash
# One prepared GPU session for issues 13 and 15 (no network there; sepconv from the source tree).
#
#   bash benchmarks/gpu_session.sh tests   # the GPU-capable tests on the GPU      (~3-5 min)
#   bash benchmarks/gpu_session.sh bench   # bench_gpu, then bench_nn --device cuda (~5-7 min)
#   bash benchmarks/gpu_session.sh kernels # each engine kernel timed, then under ncu (~2 min)
#
# Results go to $OUT (the device tool's folder) or benchmarks/results. First it prints which
# packages the machine lacks: carry those as wheels (see the device tool's README) and rerun.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0  # compiled kernels (tests/conftest.py would pick the interpreter
                          # where /dev/nvidiactl is missing)
OUT="${OUT:-benchmarks/results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PY" - <<'PYEOF'
import importlib
for name in ("torch", "triton", "cupy", "numpy", "scipy", "numba", "pytest", "hypothesis",
             "xdist", "typer", "rich", "dask"):
    try:
        print(f"{name:10s} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:
        print(f"{name:10s} MISSING ({type(exc).__name__})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
case "${1:-}" in
  tests)
    # the files with CUDA paths or gpu-marked tests; counts in the last line of the log
    workers=()
    "$PY" -c "import xdist" 2>/dev/null && workers=(-n 8)
    "$PY" -m pytest -q -p no:cacheprovider "${workers[@]}" \
      tests/test_triton_engine.py tests/test_torch_backend.py tests/test_cupy_backend.py \
      tests/test_planning.py tests/test_nn_profile.py tests/test_nn_convert.py \
      tests/test_bench_gpu.py 2>&1 | tee "$OUT/gpu-tests.log"
    ;;
  bench)
    "$PY" benchmarks/bench_gpu.py --out "$OUT" 2>&1 | tee "$OUT/bench-gpu.log"
    "$PY" benchmarks/bench_nn.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench-nn-gpu.log"
    ;;
  kernels)
    "$PY" benchmarks/gpu_kernels.py 2>&1 | tee "$OUT/gpu-kernels.log"
    if command -v ncu >/dev/null; then  # fixed tiles: the autotuner's trial launches skipped
      SEPCONV_TRITON_AUTOTUNE=0 ncu --clock-control none --launch-count 16 \
        --kernel-name regex:"_rows_kernel|_last_kernel|_fused_kernel|_direct_kernel" \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section LaunchStats --csv --page details \
        "$PY" benchmarks/gpu_kernels.py --reps 1 > "$OUT/gpu-kernels-ncu.csv" 2> "$OUT/gpu-kernels-ncu.err"
      tail -3 "$OUT/gpu-kernels-ncu.err"
    else
      echo "ncu not found: timings only"
    fi
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh tests|bench|kernels" >&2
    exit 2
    ;;
esac
