#!/bin/bash
# Speed figures of issue 17 on a machine with a CUDA GPU, run from the project's root (one prepared script, at most
# 565 s by its steps' time limits). If faiss or submitit is missing there, put their wheels (for that machine's
# Python) in .whl/ at the project root first. Everything goes to ${OUT:-/tmp/gpu_speed}/all.log; the calibration
# file to ${OUT}/calibration/, for run_benchmark.py --dry-run --calibration FILE.
#   1. backbone steps: fp32 (IEEE / TF32), bf16, channels_last, both, and compiled (ResNet-50, 224 px, 128 x 2 views)
#   2. every method of office_home_partial at its shapes (ResNet-50, 224 px, bf16 + channels_last + compile) against
#      a plain step, with host synchronisations per step (torch's sync debug mode), written as a calibration
#   3. --jobs N on one GPU, N = 1, 2, 4, on the quickstart's small-batch methods (one seed)
set -u
OUT=${OUT:-/tmp/gpu_speed}
. scripts/gpu_common.sh
python3 -c "import torch,faiss,submitit;print('torch',torch.__version__,'faiss',faiss.__version__,torch.cuda.get_device_name())"
step train 110 python3 -m benchmark.perf train --arch resnet50 --batch 128 --steps 15 --warmup 3 --compile
step methods 230 python3 -m benchmark.perf methods --suite office_home_partial --device cuda --arch resnet50 --size 224 \
  --precision bf16 --channels-last --compile --compile-cache "$OUT" --plain-steps 10 \
  --calibration "$OUT/calibration/gpu.json"
# the quickstart's shared SimCLR init first (its pretrained row), so that no N pays for it
step init 60 python3 run_benchmark.py --suite quickstart --methods pretrained --seeds 2024 --output "$OUT/init" \
  --cache-dir "$OUT/cache" --device cuda
for n in 1 2 4; do
  step "jobs$n" 55 python3 run_benchmark.py --suite quickstart --methods coda dn2a ucdir dgdir --seeds 2024 \
    --output "$OUT/jobs$n" --cache-dir "$OUT/cache" --device cuda --jobs "$n"
done
echo "=== total ${SECONDS}s"
