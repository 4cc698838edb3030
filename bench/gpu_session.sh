#!/usr/bin/env bash
# The GPU measurements this repository still lacks, as one short command for a
# lent GPU machine (about 6 minutes of a 10-minute call on an H100/H200):
#
#   1. recording overhead per step (bench/recording_overhead.py): ResNet-8 and
#      ResNet-18, batch 32 and 64, norms alone and with the phase space;
#   2. ResNet-18 at 224 px (bench/training_throughput.py), batch 256,
#      channels-last: the compute ceiling, the streamed JPEG loader on 15
#      workers and the paper config's full record; float32 (TF32 off, as
#      PyTorch defaults) and bf16 autocast.
#
# It needs only torch, torchvision, numpy and Pillow (the package is imported
# from src/, not installed) and writes the JSON reports and a log to $OUT
# (default /tmp/gpu_session). Each step has its own time limit, so one that
# hangs does not cost the others. Run from the repository root:
#
#   bash bench/gpu_session.sh
#
# Then copy the numbers into bench/README.md (recording_overhead.py,
# training_throughput.py) and the README's "Paper-scale configs" section, and
# compute GPU-hours per config with bench/config_cost.py --images-per-s.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
torch.cuda.get_device_name())"
  timeout 150 "$PY" bench/recording_overhead.py --device cuda --threads 1 \
    --out "$OUT/recording_overhead_cuda.json" || echo "recording_overhead.py: exit $?"
  timeout 150 "$PY" bench/training_throughput.py --device cuda --batch-size 256 --steps 30 --repeats 3 \
    --workers 15 --threads 1 --channels-last --out "$OUT/training_throughput_cuda.json" \
    || echo "training_throughput.py (float32): exit $?"
  timeout 120 "$PY" bench/training_throughput.py --device cuda --batch-size 256 --steps 30 --repeats 3 \
    --workers 15 --threads 1 --channels-last --autocast bfloat16 \
    --out "$OUT/training_throughput_cuda_bf16.json" || echo "training_throughput.py (bf16): exit $?"
  date -u +%Y-%m-%dT%H:%M:%SZ
} 2>&1 | tee "$OUT/log.txt"
