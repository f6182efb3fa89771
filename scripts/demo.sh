#!/usr/bin/env bash
# Set up (if needed), build the tiny offline models (if needed), and run the marketing pipeline
# over the sample product rows; results land in out/marketing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f models/tiny/sd/model_index.json ] || [ ! -f models/tiny/lm/config.json ]; then
  .venv/bin/aigc models make-tiny models/tiny --only lm --only sd
fi
.venv/bin/aigc run pipelines/marketing.yaml --input pipelines/data/marketing.csv --out out/marketing "$@"
echo "results: out/marketing/results.jsonl (open out/marketing/report.html), images and audio under out/marketing/artifacts/"
echo "(tiny random-weight models: the copy, images and voices are noise; see README)"
