#!/usr/bin/env bash
# Stage one, and stage two's commands, on a lent GPU machine, in one call of at most 9 minutes.
#
# Measures, for resnet18 and resnet50 in bfloat16 (decoding on the CPU): `actrec extract`
# frames/s, GPU busy %, the model's ceiling and the decoders' ceiling (decode alone, the same
# workers); then one `actrec train` and a short `actrec tune` on cuda, to show stage two runs
# there. Records lscpu, the CPUs this process may use, and the GPU, driver, torch and PyAV.
#
# There, python3 already has CUDA torch, torchvision, h5py, click, tqdm and nvidia-ml-py; PyAV
# (and optuna, for tune) travel as wheels. Before the call, on the development machine, in the
# repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl av optuna sqlalchemy alembic colorlog mako greenlet
# then run `bash bench/gpu.sh` there with `.whl` carried. Results: $OUT (or bench/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

site=/tmp/actrec-site
rm -rf "$site"  # a warm machine keeps the last call's install, which pip would not replace
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .
export PYTHONPATH=$site

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^Core|^Socket"
    echo "avx512_bf16: $(grep -c avx512_bf16 /proc/cpuinfo) amx_bf16: $(grep -c amx_bf16 /proc/cpuinfo)"
    python3 -c "import os, torch, torchvision, av; print('usable cpus', len(os.sched_getaffinity(0)), 'of', os.cpu_count()); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'av', av.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/machine.txt"

# A large batch, bf16 autocast, a decoding worker per spare core, and eight videos of each
# length (about 11,000 frames of 320x240 H.264), so that the GPU has something to chew on.
# decode ceiling = decode alone with the same workers; model ceiling = forward passes alone.
workers=$(( $(python3 -c "import os; print(len(os.sched_getaffinity(0)))") - 2 ))
timeout 330 python3 bench/bench_extract.py --device cuda --resnet50 --no-vit \
    --precisions bfloat16 --batch-size 256 --workers "$workers" --copies 8 --skip-memory \
    --skip-naive --repeats 1 --dir /tmp/actrec-bench-videos 2>&1 | tee "$OUT/gpu_bench.log"
cp bench/results/extract_gpu.json "$OUT/" 2>/dev/null || true

# Stage two on cuda: the demo's set (extract, then train mean and gru), one more train, and a
# short tune over the same cache.
demo=/tmp/actrec-demo
timeout 150 python3 -m actrec demo -o "$demo" --device cuda --clips-per-class 20 --epochs 5 \
    2>&1 | tail -n 20 | tee "$OUT/gpu_demo.log"
cache=$(ls "$demo"/features_*.h5 2>/dev/null | head -n 1)
if [ -n "$cache" ]; then
    timeout 60 python3 -m actrec train "$cache" --head lstm -o /tmp/actrec-train --epochs 5 \
        --device cuda 2>&1 | tail -n 5 | tee "$OUT/gpu_train.log"
    timeout 90 python3 -m actrec tune "$cache" -o /tmp/actrec-tune --heads mean,gru \
        --trials 4 --time-budget 1 --device cuda --quiet 2>&1 | tail -n 12 | tee "$OUT/gpu_tune.log"
else
    echo "no cache from the demo: stage two not run" | tee "$OUT/gpu_train.log"
fi
