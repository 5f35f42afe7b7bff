#!/usr/bin/env bash
# Build the two hive-device environments the edge tests run bundles in:
#   DIR/edge       the `edge` extra only (ai-edge-litert, numpy, soundfile, soxr): no TensorFlow, no librosa
#   DIR/tflite214  tflite-runtime 2.14 + numpy 1.26: what 32-bit Raspberry Pi OS users can install
# Usage: bash .ci/edge-venvs.sh DIR        (PYTHON=python3.11 to choose the interpreter)
# Idempotent: an environment whose stamp matches this script and pyproject.toml is reused as it is.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
python=${PYTHON:-python3}

log() { printf '== %s\n' "$*"; }

# The stamp changes when the requirements could have: this script or the package metadata.
stamp_value=$(cat "$repo/.ci/edge-venvs.sh" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)

# Both environments must keep TensorFlow and librosa out; the check is the point of having them.
check_light() {
  "$1/bin/python" - <<'EOF'
import importlib.util
import sys

heavy = [m for m in ("tensorflow", "librosa", "keras") if importlib.util.find_spec(m) is not None]
if heavy:
    sys.exit(f"the edge environment must not contain {heavy}")
import numpy, soundfile, soxr  # noqa: E401,F401

import beeaudio  # noqa: F401

print(f"numpy {numpy.__version__}, soundfile {soundfile.__version__}, libsndfile {soundfile.__libsndfile_version__}")
EOF
}

build() {  # build NAME INSTALL-FUNCTION INTERPRETER-MODULE
  local name=$1 install=$2 module=$3 env="$dir/$1"
  if [ -f "$env/.beeaudio-stamp" ] && [ "$(cat "$env/.beeaudio-stamp")" = "$stamp_value" ] \
      && "$env/bin/python" -c "import $module" 2>/dev/null && check_light "$env" >/dev/null 2>&1; then
    log "$name: reusing $env"
    return
  fi
  log "$name: creating $env"
  rm -rf "$env"
  "$python" -m venv "$env"
  "$env/bin/python" -m pip install -q --upgrade pip
  "$install" "$env"
  "$env/bin/python" -c "import $module; print('$module OK')"
  check_light "$env"
  echo "$stamp_value" > "$env/.beeaudio-stamp"
}

install_edge() {
  "$1/bin/python" -m pip install -q -e "$repo[edge]"
}

install_tflite214() {
  # One resolver run, so soundfile and soxr are chosen to work with numpy 1.26; then the project itself
  # without its declared dependencies (they would pull numpy 2 back in).
  "$1/bin/python" -m pip install -q "tflite-runtime==2.14.0" "numpy==1.26.4" "soundfile>=0.12.1" "soxr>=0.3" "tqdm>=4.60"
  "$1/bin/python" -m pip install -q --no-deps -e "$repo"
  "$1/bin/python" -c "import numpy; assert numpy.__version__ == '1.26.4', numpy.__version__"
}

build edge install_edge ai_edge_litert.interpreter
build tflite214 install_tflite214 tflite_runtime.interpreter
log "edge environments ready in $dir"
