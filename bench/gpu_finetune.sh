#!/usr/bin/env bash
# The GPU fine-tuning benchmark (bench/bench_finetune.py) in one run, for one GPU machine with ~16 cores:
#   1. B0 (tf_efficientnet_b0, random weights) at 224 px, bf16, batch 256, 14 decode workers, on 20,000 generated
#      112 px JPEG crops (2 epochs of 10,000 frames): training frames/s of epoch 2 vs the same network's
#      forward+backward on random tensors (goal >= 0.8), and the input pipeline alone vs that ceiling;
#   2. the same with fp16 autocast and gradient scaling on 4,000 frames (the fp16 path works on CUDA);
# then the fine-tuning tests on the CPU side of that machine. Rows go to $OUT/bench_finetune.jsonl when $OUT is
# set. About 3-4 minutes on an H100.
#   bash bench/gpu_finetune.sh          (PYTHON=... to pick the interpreter; extra arguments go to run 1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
JSON=()
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; JSON=(--out "$OUT/bench_finetune.jsonl"); fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
PYTHONPATH="$PWD" timeout 300 "$PY" bench/bench_finetune.py --device cuda --frames 20000 --per-video 500 \
    --batch 256 --workers 14 --amp bf16 "${JSON[@]}" "$@"
PYTHONPATH="$PWD" timeout 150 "$PY" bench/bench_finetune.py --device cuda --frames 4000 --per-video 500 \
    --batch 256 --workers 14 --amp fp16 "${JSON[@]}"
PYTHONPATH="$PWD" timeout 120 "$PY" -m pytest tests/test_extract_finetune.py -q -m "not slow" \
    -p no:cacheprovider \
    2>&1 | tail -3 || true
