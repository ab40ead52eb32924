#!/usr/bin/env bash
# The CUDA checks of issue 15, in one go, on a machine with a CUDA device:
#   1. the CUDA tests (GPU JPEG decode vs the CPU path; they skip only where there is no CUDA, so this
#      script first refuses to run without it);
#   2. ResNet-50 bf16 images/s of our loop vs a timm benchmark.py-style synthetic-input loop
#      (target ≥ 0.9×), and GPU-decode images/s vs the CPU decode;
#   3. the grouped (K = 4) vs checkpoint-major ratio on the GPU, on a streamed JPEG set;
#   4. --compile vs eager on the GPU (a group of 4 ResNet-50s, warm-up included).
# Every figure is printed with its ratio last.
#
#   bash benchmarks/gpu.sh [JPEG folder, flat <wnid>_<name>.JPEG files; default ../shared/data/imagenet-sample]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/imagenet-sample}"

python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: the GPU figures stay unmeasured")'
python -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'

echo "== 1. CUDA tests"
python -m pytest -q -rs tests/test_streaming.py tests/test_grouped_execution.py -k "gpu or cuda or group"
python -m pytest -q -rs tests/test_world.py -k "on_the_device"

echo "== 2. ResNet-50 bf16: our loop vs timm's synthetic loop; GPU decode"
python benchmarks/gpu_throughput.py --data "$DATA" --model resnet50 --batch-size 256

echo "== 3. grouped (K = 4) vs checkpoint-major on the GPU, streamed JPEGs"
python benchmarks/grouped_decode.py --data "$DATA" --device cuda --model resnet50 --k 4 --batch-size 100

echo "== 4. --compile vs eager on the GPU (ResNet-50 × 4, bf16)"
python benchmarks/compile_vs_eager.py --data "$DATA" --device cuda --model resnet50 -k 4 --batch-size 100
