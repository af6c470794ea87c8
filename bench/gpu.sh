#!/usr/bin/env bash
# Stage-one benchmark on a lent GPU machine, in one call of at most 8 minutes.
#
# There, python3 already has CUDA torch, torchvision, h5py, click, tqdm and nvidia-ml-py; PyAV
# and timm travel as wheels (timm runs random-init models without its optional hub packages).
# Before the call, on the development machine, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl av timm
# then run `bash bench/gpu.sh` there with `.whl` carried. Results: $OUT (or bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

site=/tmp/actrec-site
rm -rf "$site"  # a warm machine keeps the last call's install, which pip would not replace
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .
export PYTHONPATH=$site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, av; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'av', av.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"

# resnet18, resnet50 and DINOv2's ViT-S/14 (timm, at 224x224), a large batch, bf16 autocast, a
# decoding worker per spare core, and eight videos of each length (about 11,000 frames), so that
# the GPU has something to chew on.
workers=$(( $(nproc) - 2 ))
timeout 420 python3 bench/bench_extract.py --device cuda --resnet50 --precisions bfloat16 \
    --batch-size 256 --workers "$workers" --copies 8 --skip-memory --dir /tmp/actrec-bench-videos \
    2>&1 | tee "$OUT/gpu_bench.log"
cp bench/results/extract_gpu.json "$OUT/" 2>/dev/null || true
