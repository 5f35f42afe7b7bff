#!/usr/bin/env bash
# Build the two hive-device environments the edge tests run bundles in, each from the beeaudio-edge wheel
# (device/pyproject.toml: the edge core and the agent only), installed the way a Pi installs it:
#   DIR/edge       beeaudio-edge with its dependencies (ai-edge-litert, numpy, soundfile, soxr)
#   DIR/tflite214  tflite-runtime 2.14 + numpy 1.26: what 32-bit Raspberry Pi OS users can install
# Usage: bash .ci/edge-venvs.sh DIR        (PYTHON=python3.11 to choose the interpreter)
# Idempotent: an environment whose stamp matches this script and device/pyproject.toml keeps its
# dependencies; the beeaudio-edge wheel is rebuilt from the working tree and reinstalled on every run.
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
stamp_value=$(cat "$repo/.ci/edge-venvs.sh" "$repo/device/pyproject.toml" | sha256sum | cut -d' ' -f1)

# Both environments must keep TensorFlow and librosa out; the check is the point of having them.
check_light() {
  "$1/bin/python" -P - <<'EOF'
import importlib.util
import sys

heavy = [m for m in ("tensorflow", "librosa", "keras", "fastapi", "sqlalchemy") if importlib.util.find_spec(m)]
if heavy:
    sys.exit(f"the edge environment must not contain {heavy}")
import numpy, soundfile, soxr  # noqa: E401,F401

import beeaudio.core.inference, beeaudio.device.agent  # noqa: E401,F401

# The device installs the edge core and the agent, not the desktop tools or the collector.
rooms = [m for m in ("beeaudio.desktop", "beeaudio.collector") if importlib.util.find_spec(m)]
if rooms:
    sys.exit(f"the edge environment must not contain {rooms}")

print(f"numpy {numpy.__version__}, soundfile {soundfile.__version__}, libsndfile {soundfile.__libsndfile_version__}")
EOF
}

# The wheel a desktop builds and copies to a Pi (device/README.md), from the working tree as it is now.
log "building the beeaudio-edge wheel"
rm -rf "$dir/wheels"
"$python" -m pip wheel -q --no-deps -w "$dir/wheels" "$repo/device"
rm -rf "$repo/device/build" "$repo/device"/*.egg-info
wheel=$(ls "$dir/wheels"/beeaudio_edge-*.whl)

build() {  # build NAME INSTALL-FUNCTION INTERPRETER-MODULE
  local name=$1 install=$2 module=$3 env="$dir/$1"
  if [ -f "$env/.beeaudio-stamp" ] && [ "$(cat "$env/.beeaudio-stamp")" = "$stamp_value" ] \
      && "$env/bin/python" -c "import $module" 2>/dev/null; then
    log "$name: reusing $env's dependencies; reinstalling beeaudio-edge"
    "$env/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
    check_light "$env"
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
  "$1/bin/python" -m pip install -q "$wheel"
}

install_tflite214() {
  # One resolver run, so soundfile and soxr are chosen to work with numpy 1.26; then beeaudio-edge without
  # its declared dependencies (they would pull numpy 2 and ai-edge-litert back in).
  "$1/bin/python" -m pip install -q "tflite-runtime==2.14.0" "numpy==1.26.4" "soundfile>=0.12.1" "soxr>=0.3"
  "$1/bin/python" -m pip install -q --no-deps "$wheel"
  "$1/bin/python" -c "import numpy; assert numpy.__version__ == '1.26.4', numpy.__version__"
}

build edge install_edge ai_edge_litert.interpreter
build tflite214 install_tflite214 tflite_runtime.interpreter
log "edge environments ready in $dir"
