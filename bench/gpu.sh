#!/usr/bin/env bash
# The GPU extraction benchmark in one run (bench/gpu_extract.py): generates 100,000 JPEG crops of 112 px in videos
# of 1,000 frames, then prints the rows (B0 224 end to end vs model-only vs per-image loop, decode on the device
# vs in the workers; B2 260; B0 + ResNet18 decoded once; bf16/fp16 vs fp32 agreement) and writes them as JSON
# lines to $OUT/bench_gpu.jsonl when $OUT is set. Sized for one H200 with 16 cores: under 8 minutes.
#   bash bench/gpu.sh            (PYTHON=... to pick the interpreter; extra arguments go to gpu_extract.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
ARGS=(--device cuda --frames 100000 --per-video 1000 --batch 256 --loop 2000 --agree 4096 --small 20000)
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; ARGS+=(--out "$OUT/bench_gpu.jsonl"); fi
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
"$PY" -m pytest tests/test_extract_jpeg.py -q -m gpu -p no:cacheprovider 2>&1 | tail -3 || true
PYTHONPATH="$PWD" timeout 450 "$PY" bench/gpu_extract.py "${ARGS[@]}" "$@"
