#!/usr/bin/env bash
# Set up (if needed) and run the demo pipeline over the sample rows; results land in out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/aigc run pipelines/product_copy.yaml --input pipelines/data/products.csv --out out/demo "$@"
echo "results: out/demo/results.jsonl"
