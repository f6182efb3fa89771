#!/usr/bin/env bash
# Set up (if needed), build the tiny offline models (if needed), run the marketing pipeline over the
# sample product rows (copy, hero image, voice-over, ad video; results in out/marketing), then a
# text-to-video teaser for the first three products (out/teaser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f models/tiny/sd/model_index.json ] || [ ! -f models/tiny/lm/config.json ] \
  || [ ! -f models/tiny/video/model_index.json ]; then
  .venv/bin/aigc models make-tiny models/tiny --only lm --only sd --only video
fi
.venv/bin/aigc run pipelines/marketing.yaml --input pipelines/data/marketing.csv --out out/marketing "$@"
.venv/bin/aigc run pipelines/teaser.yaml --input pipelines/data/marketing.csv --out out/teaser --limit 3 -q
echo "results: out/marketing/results.jsonl (open out/marketing/report.html), images, audio and ad videos under out/marketing/artifacts/"
echo "teasers: out/teaser/report.html"
echo "(tiny random-weight models: the copy, images, voices and clips are noise; see README)"
