#!/usr/bin/env bash
# The GPU figures in one command, on a bare CUDA machine that has torch and transformers (the device
# tool's H200): install the wheels carried in .whl/ (diffusers, pydantic and what they need; fetched
# here with ../shared/tools/device-wheels plus typing-extensions), then run gpu_marketing.py with the
# given options. The log and the JSON result go to $OUT when it is set (the device tool brings them back).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
log=${OUT:-/tmp}/gpu_marketing.log
python3 -c "import torch, transformers, diffusers, pydantic; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'diffusers', diffusers.__version__, 'pydantic', pydantic.__version__, 'cuda',
torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee "$log"
python3 benchmarks/gpu_marketing.py "$@" 2>&1 | tee -a "$log"
