#!/usr/bin/env bash
# Create .venv in the repository and install the engine with its test tools (idempotent).
# torch is installed from the pinned CPU build first where this machine offers it, so that no
# later requirement pulls a multi-GB CUDA build (the engine core itself does not need torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
compile_bytecode() {
  # An editable install compiles none of the package's modules, and a shell with
  # PYTHONDONTWRITEBYTECODE set never writes their bytecode: every `aigc` command would then
  # compile about a hundred modules, 0.4 s of its start. compileall skips what is up to date.
  .venv/bin/python -m compileall -q aigc_pipeline plugins >/dev/null || true
}
stamp=.venv/.aigc-setup-$(cat pyproject.toml scripts/setup.sh plugins/*/pyproject.toml | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then
  compile_bytecode
  exit 0
fi
log=.venv/setup.log
run_pip() {  # quiet on success; the log's tail on failure
  if ! "${PIP[@]}" "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup failed: pip $*" >&2
    exit 1
  fi
}
echo "setting up .venv (log: $log)"
run_pip install --upgrade pip
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  # The pinned CPU build lies on this machine's disk; elsewhere it comes from the registry.
  run_pip install torch==2.13.0
fi
run_pip install -e '.[test,models,ray,review,served,parquet]'  # ray: the Ray executor's tests run in CI
run_pip install -e plugins/aigc-brand-kit -e plugins/aigc-webhook  # the first-party plugins
if ! command -v espeak-ng >/dev/null 2>&1; then
  # The tts stage's espeak backend speaks through this program; install it where we may.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >>"$log" 2>&1 \
      || echo "note: could not install espeak-ng; the tts stage's espeak backend will say so"
  else
    echo "note: espeak-ng is not installed (e.g. 'sudo apt-get install espeak-ng'); the tts espeak backend needs it"
  fi
fi
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1 || ! command -v fc-match >/dev/null 2>&1; then
  # compose.video runs ffmpeg (zoompan, drawtext with a TrueType font); the video tests read MP4s with ffprobe.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg fontconfig fonts-dejavu-core) \
      >>"$log" 2>&1 || echo "note: could not install ffmpeg; the compose.video stage will say so"
  else
    echo "note: ffmpeg is not installed (e.g. 'sudo apt-get install ffmpeg fonts-dejavu-core'); compose.video needs it"
  fi
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  # tests/test_report.py opens report.html in a headless Chromium (skipped without one).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >>"$log" 2>&1 \
      || echo "note: could not install chromium; the browser test of report.html will be skipped"
  else
    echo "note: chromium is not installed (e.g. 'sudo apt-get install chromium'); the report's browser test skips"
  fi
fi
.venv/bin/python -c 'import aigc_pipeline'
compile_bytecode

rm -f .venv/.aigc-setup-*
touch "$stamp"
