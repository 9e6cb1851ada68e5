#!/usr/bin/env bash
# Training-step speed on one GPU, about 5 minutes: the CUDA-graph and CUDA-stage tests, then `pfadseg bench train`
# (256 px, batch 16, DeSTSeg and PFADSeg, both stages) in fp32 and bf16, eager and with train.cuda_graphs.
# Needs only torch, numpy, pillow, typer, pyyaml, tqdm and pytest (no dvc, dvclive or noise).
# Usage: benchmarks/gpu-train-speed.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu-train-speed.sh OUT_DIR}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
timeout 90 python -m pytest -q -m gpu -p no:cacheprovider tests/train/test_cuda_graphs.py tests/train/test_training.py \
  2>&1 | tail -12 | tee "$out/gpu-tests.txt"
for mode in "amp=false cuda_graphs=false" "amp=true cuda_graphs=false" "amp=true cuda_graphs=true" \
            "amp=false cuda_graphs=true"; do
  set -- $mode
  timeout 75 python -m pfadseg.cli bench train --iterations 30 --device cuda -S "train.$1" -S "train.$2" 2>&1 \
    | grep -v "WARNING\|RANDOM" | tail -5 | tee -a "$out/bench-train.txt"
done
