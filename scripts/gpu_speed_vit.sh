#!/bin/bash
# Speed figures of issue 24 (foundation backbones) on a machine with a CUDA GPU, run from the project's root (one
# prepared script, at most 560 s by its steps' time limits; not run yet: no GPU was lent when it was written). Random
# weights: no weights file is needed. Everything goes to ${OUT:-/tmp/gpu_speed_vit}/all.log; the calibration file to
# ${OUT}/calibration/, for run_benchmark.py --dry-run --calibration FILE on a suite from DINOv2 ViT-B/14.
#   1. backbone steps at 224 px, 64 x 2 views: fp32, bf16, compiled (and channels_last for ResNet-50), for ResNet-50,
#      DINOv2 ViT-S/14, ViT-B/14 and CLIP ViT-B/16, with each one's weights, GFLOP and activation memory per image
#   2. every method of office_home_partial from DINOv2 ViT-B/14 (bf16 + compile) against a plain step
set -u
OUT=${OUT:-/tmp/gpu_speed_vit}
. scripts/gpu_common.sh
python3 -c "import torch,timm,faiss;print('torch',torch.__version__,'timm',timm.__version__,torch.cuda.get_device_name())"
for arch in resnet50 vit_small_patch14_dinov2 vit_base_patch14_dinov2 vit_base_patch16_clip_quickgelu_224; do
  step "train-$arch" 80 python3 -m benchmark.perf train --arch "$arch" --size 224 --batch 64 --steps 10 --warmup 3 \
    --compile
done
step methods 230 python3 -m benchmark.perf methods --suite office_home_partial --device cuda \
  --arch vit_base_patch14_dinov2 --size 224 --precision bf16 --compile --compile-cache "$OUT" --plain-steps 5 \
  --no-syncs --calibration "$OUT/calibration/gpu-vit_base_patch14_dinov2.json"
echo "=== total ${SECONDS}s"
