#!/usr/bin/env bash
# The GPU check of the speed targets (set on 2026-11-27), for one NVIDIA H100/H200 with JAX (CUDA), flax and
# optax already installed.
# Installs nothing, needs no network, finishes in under 5 minutes:
#
#     bash benchmarks/gpu_check.sh [OUTDIR]      # default: $OUT if set, else benchmarks/gpu_results
#
# ViViT-B models 1-4 at 32x224x224 in bf16 (model 1: train step + forward, MFU against the bf16 matmul peak
# measured in the same run, target >= 0.45; models 2-4: forward, then train if time is left), and a train
# step of the tiny and ViViT-S configs. Writes OUTDIR/gpu_check.json, OUTDIR/gpu_check.md and OUTDIR/gpu_check.log.
set -u
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-benchmarks/gpu_results}}"
mkdir -p "$OUTDIR"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# A persistent cache from an earlier run would make the compile times meaningless; keep this run's own.
unset JAX_COMPILATION_CACHE_DIR

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import jax, flax, optax" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu_check: no python with jax, flax and optax found (set PYTHON=...)" | tee "$OUTDIR/gpu_check.log" >&2
  exit 2
fi
{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $(uname -n)"
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
} 2>&1 | tee "$OUTDIR/gpu_check.log"

# 290 s hard stop (the Python side budgets 255 s and writes its results after every item).
timeout -k 10 290 "$PY" benchmarks/gpu_check.py --out "$OUTDIR" --budget "${GPU_CHECK_BUDGET:-255}" ${GPU_CHECK_ARGS:-} 2>&1 \
  | tee -a "$OUTDIR/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc; results in $OUTDIR/gpu_check.md and $OUTDIR/gpu_check.json" | tee -a "$OUTDIR/gpu_check.log"
exit "$rc"
