#!/usr/bin/env bash
# The GPU speed check, and nothing else: the runtime-axis speed benchmark on one CUDA device
# (torch eager channels_last in fp32 / fp16 / bf16, CUDA events), backbone at 224x224 and
# 600x1000, the whole detector at 2,000 and 300 RoIs, ranks rounded to 8 (fp16 tensor-core
# kernels) and, for comparison, to 16. A few minutes on a recent GPU (plus .venv setup).
#
#     tools/benchmark_gpu.sh [OUTPUT]        # default output/benchmark_gpu
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-output/benchmark_gpu}"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
"$py" -c 'import torch; print(torch.cuda.get_device_name(0), "torch", torch.__version__)'
for multiple in 8 16; do
  "$py" tools/benchmark_runtimes.py --device cuda --round-ranks "$multiple" --seconds 5 \
    --output "$out/ranks_x$multiple"
done
echo "tables: $out/ranks_x8/benchmark_runtimes.md $out/ranks_x16/benchmark_runtimes.md"
