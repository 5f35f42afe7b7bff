#!/usr/bin/env bash
# Emulated Raspberry Pi OS userlands for the edge tests: Debian bookworm for ARM, run on this x86 machine
# under qemu-user (binfmt_misc), with the beeaudio-edge wheel installed the way device/README.md says.
#
#   arm64  the 64-bit Pi OS stack: beeaudio-edge with its dependencies from PyPI
#          (ai-edge-litert, numpy 2, soundfile, soxr); runs as a Pi 4 (QEMU_CPU=cortex-a72)
#   armhf  the 32-bit Pi OS stack: tflite-runtime 2.14 from PyPI, numpy and soundfile from Debian
#          (PyPI has no armv7l wheel of numpy, soxr or cffi), no soxr: beeaudio's numpy resampler;
#          runs as a Pi 2 (QEMU_CPU=cortex-a7)
#
# Usage: bash .ci/arm64.sh [--arch arm64|armhf|all] [--cache DIR] [--env-file FILE]
#   --arch      which userland(s) (default arm64)
#   --cache     where the userlands live, outside the repository (default /var/cache/beeaudio-ARCH)
#   --env-file  write `export BEEAUDIO_<ARCH>_ROOT=... _PYTHON=... _ENTER=...` lines there (the tests read
#               these variables); without it they are printed
#
# Cached: a userland is rebuilt (debootstrap, ~3-5 min) only when its stamp (suite, architecture, mirror,
# package list) changes; its venv keeps its dependencies while the stamp of device/pyproject.toml and the
# install recipe holds, and only the wheel (built from the working tree) is reinstalled (like edge-venvs.sh).
#
# Each userland gets an `enter` helper next to it: `DIR/enter [--bind HOSTDIR]... [--cpu CPU] [--cwd DIR]
# [--env NAME=VALUE]... -- CMD ARGS...` runs CMD in the userland, in a private mount namespace (proc, sys,
# dev, a fresh /tmp and the bind mounts vanish with it; the network namespace is the host's, so a server on
# the host's 127.0.0.1 is reachable), with a clean environment.
#
# Needs root. When the emulator cannot be set up (no binfmt_misc, no qemu, no debootstrap): with CI=true it
# fails; elsewhere it says why and writes no variables for that architecture, so the tests skip with a reason.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
arches=(arm64)
cache_base=""
env_file=""
while [ $# -gt 0 ]; do
  case $1 in
    --arch)
      case ${2:-} in
        arm64 | armhf) arches=("$2") ;;
        all) arches=(arm64 armhf) ;;
        *) echo "usage: $0 [--arch arm64|armhf|all] [--cache DIR] [--env-file FILE]" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --cache) cache_base=$2; shift 2 ;;
    --env-file) env_file=$2; shift 2 ;;
    *) echo "usage: $0 [--arch arm64|armhf|all] [--cache DIR] [--env-file FILE]" >&2; exit 2 ;;
  esac
done

suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
in_ci() { [ "${CI:-}" = "true" ]; }
log() { printf '== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The emulator could not be set up: fatal in CI, a reason to skip elsewhere (then no variables are written
# for that architecture). Anything else that fails (pip, the wheel) fails the script everywhere.
unavailable() {  # unavailable ARCH REASON
  if in_ci; then
    printf 'ERROR: CI=true but the %s emulator cannot be set up: %s\n' "$1" "$2" >&2
    exit 1
  fi
  printf 'WARNING: no %s userland: %s; the tests that need it will skip\n' "$1" "$2" >&2
}

# -- per-architecture facts --------------------------------------------------------------------------------
qemu_name() { case $1 in arm64) echo aarch64 ;; armhf) echo arm ;; esac; }
uname_of() { case $1 in arm64) echo aarch64 ;; armhf) echo armv7l ;; esac; }
default_cpu() { case $1 in arm64) echo cortex-a72 ;; armhf) echo cortex-a7 ;; esac; }
var_prefix() { case $1 in arm64) echo BEEAUDIO_ARM64 ;; armhf) echo BEEAUDIO_ARMHF ;; esac; }
# What a Pi OS user installs with apt (device/README.md): the rootfs package list, part of its stamp.
packages_of() {
  case $1 in
    arm64) echo "python3,python3-venv,libsndfile1" ;;
    # python3-cffi-backend: python3-soundfile needs it through a virtual package debootstrap cannot resolve.
    armhf) echo "python3,python3-venv,python3-numpy,python3-cffi-backend,python3-soundfile,libsndfile1" ;;
  esac
}
# The pip side of device/README.md, part of the venv's stamp.
venv_recipe() {
  case $1 in
    arm64) echo "venv; pip install WHEEL" ;;
    armhf) echo "venv --system-site-packages; pip install tflite-runtime==2.14.0; pip install --no-deps WHEEL" ;;
  esac
}

# -- the host side: qemu-user-static, debootstrap, binfmt_misc ---------------------------------------------
ensure_tools() {
  local need=()
  [ -x /usr/bin/qemu-aarch64-static ] && [ -x /usr/bin/qemu-arm-static ] || need+=(qemu-user-static)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v unshare >/dev/null 2>&1 || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return 0
  log "apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
}

# Register qemu for ARCH with the F flag (the kernel opens the emulator now, so it works inside chroots
# that do not contain it), from the line Debian's qemu-user-static ships in /usr/lib/binfmt.d.
ensure_binfmt() {  # ensure_binfmt ARCH
  local name conf entry line
  name=qemu-$(qemu_name "$1")
  conf=/usr/lib/binfmt.d/$name.conf
  entry=/proc/sys/fs/binfmt_misc/$name
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    log "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || return 1
  fi
  if [ -e "$entry" ] && ! grep -q '^flags:.*F' "$entry"; then
    log "$name is registered without the F flag (chroots would not find it): registering it again"
    echo -1 > "$entry"
  fi
  if [ ! -e "$entry" ]; then
    [ -f "$conf" ] || { echo "$conf missing" >&2; return 1; }
    line=$(grep -v '^#' "$conf" | head -n1)
    case $line in *:*F*) ;; *) line="${line}F" ;; esac  # the flags are the last field
    log "registering $name ($conf)"
    printf '%s' "$line" > /proc/sys/fs/binfmt_misc/register || return 1
  fi
  grep -q '^enabled' "$entry" || echo 1 > "$entry"
  log "$name: $(tr '\n' ' ' < "$entry" | sed 's/magic.*//')"
}

# -- the enter helper --------------------------------------------------------------------------------------
# qemu-user shows the host's x86 /proc/cpuinfo. TF-Lite's cpuinfo library then fails (with /sys mounted:
# ai-edge-litert 2.3 dies with SIGSEGV; without: "failed to parse both lists of possible and present
# processors", and LiteRT runs without its XNNPACK delegate, which no Pi does). So the userland gets the
# /proc/cpuinfo of the Pi's core that QEMU_CPU emulates, one entry per host CPU as /sys lists them.
write_cpuinfo() {  # write_cpuinfo DIR
  local cpu n i
  n=$(nproc --all)
  mkdir -p "$1/cpuinfo"
  for cpu in cortex-a72 cortex-a76 cortex-a53 cortex-a7; do
    : > "$1/cpuinfo/$cpu.tmp"
    for i in $(seq 0 $((n - 1))); do
      case $cpu in  # Pi 4, Pi 5, Pi 3 / Zero 2 W (64-bit); Pi 2 (32-bit)
        cortex-a72) printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" ;;
        cortex-a76) printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$i" ;;
        cortex-a53) printf 'processor\t: %d\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\nCPU revision\t: 4\n\n' "$i" ;;
        cortex-a7) printf 'processor\t: %d\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xc07\nCPU revision\t: 5\n\n' "$i" ;;
      esac >> "$1/cpuinfo/$cpu.tmp"
    done
    printf 'Hardware\t: BCM2835\nModel\t\t: emulated by qemu-user (%s)\n' "$cpu" >> "$1/cpuinfo/$cpu.tmp"
    mv "$1/cpuinfo/$cpu.tmp" "$1/cpuinfo/$cpu"
  done
}

write_enter() {  # write_enter ARCH DIR ROOT
  cat > "$2/enter.tmp" <<EOF
#!/usr/bin/env bash
# Generated by .ci/arm64.sh: run a command in the emulated $1 userland $3.
# Usage: $2/enter [--bind HOSTDIR]... [--cpu CPU] [--cwd DIR] [--env NAME=VALUE]... -- CMD ARGS...
set -euo pipefail
root=$3
cpuinfo=$2/cpuinfo
cpu=\${QEMU_CPU:-$(default_cpu "$1")}
EOF
  cat >> "$2/enter.tmp" <<'EOF'
cwd=/
binds=()
envs=()
while [ $# -gt 0 ]; do
  case $1 in
    --bind) binds+=("$(realpath "$2")"); shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --cwd) cwd=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--bind DIR]... [--cpu CPU] [--cwd DIR] [--env N=V]... -- CMD..." >&2; exit 2; }
[ -f "$cpuinfo/$cpu" ] || { echo "no /proc/cpuinfo for --cpu $cpu (have: $(ls "$cpuinfo"))" >&2; exit 2; }
# A private mount namespace: nothing mounted here outlives the command or shows on the host. The bind
# mounts keep their host paths, so a file is at the same path on both sides.
exec unshare --mount --propagation private -- /bin/bash -c '
  set -euo pipefail
  root=$1 cpu=$2 cwd=$3 nbinds=$4 nenvs=$5 cpuinfo=$6
  shift 6
  mount -t proc proc "$root/proc"
  mount --bind "$cpuinfo" "$root/proc/cpuinfo"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  touch "$root/etc/resolv.conf"
  mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
  for _ in $(seq 1 "$nbinds"); do
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    shift
  done
  envs=("${@:1:$nenvs}")
  shift "$nenvs"
  export QEMU_CPU=$cpu
  exec chroot "$root" /usr/bin/env -i -C "$cwd" \
    PATH=/opt/beeaudio/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 TZ=UTC \
    QEMU_CPU="$cpu" ${envs[@]+"${envs[@]}"} "$@"
' enter "$root" "$cpu" "$cwd" "${#binds[@]}" "${#envs[@]}" "$cpuinfo/$cpu" ${binds[@]+"${binds[@]}"} ${envs[@]+"${envs[@]}"} "$@"
EOF
  chmod 0755 "$2/enter.tmp"
  mv "$2/enter.tmp" "$2/enter"
}

# -- the userland ------------------------------------------------------------------------------------------
ensure_rootfs() {  # ensure_rootfs ARCH DIR
  local arch=$1 dir=$2 root=$2/rootfs stamp
  stamp="debootstrap --arch=$arch --variant=minbase --include=$(packages_of "$arch") $suite $mirror"
  if [ -f "$root/.beeaudio-rootfs-stamp" ] && [ "$(cat "$root/.beeaudio-rootfs-stamp")" = "$stamp" ]; then
    log "$arch: reusing the userland $root"
    return 0
  fi
  if findmnt -rn -o TARGET | grep -q "^$dir/"; then
    echo "something is mounted under $dir; not rebuilding it" >&2
    return 1
  fi
  log "$arch: building the userland ($stamp)"
  rm -rf "$root" "$dir/rootfs.new"
  local started=$SECONDS
  if ! debootstrap --arch="$arch" --variant=minbase --include="$(packages_of "$arch")" \
      "$suite" "$dir/rootfs.new" "$mirror" > "$dir/debootstrap.log" 2>&1; then
    tail -n 30 "$dir/debootstrap.log" >&2
    return 1
  fi
  rm -rf "$dir/rootfs.new/var/cache/apt/archives"/*.deb
  echo "$stamp" > "$dir/rootfs.new/.beeaudio-rootfs-stamp"
  mv "$dir/rootfs.new" "$root" || return 1
  log "$arch: userland built in $((SECONDS - started)) s ($(du -sh "$root" | cut -f1))"
}

# The heavy modules stay out and the edge imports work; prints the versions the tests will run on.
check_light() {  # check_light ARCH DIR
  "$2/enter" -- python -P - <<'EOF'
import importlib.util
import platform
import sys

heavy = [m for m in ("tensorflow", "librosa", "keras", "fastapi", "sqlalchemy") if importlib.util.find_spec(m)]
if heavy:
    sys.exit(f"the edge environment must not contain {heavy}")
rooms = [m for m in ("beeaudio.desktop", "beeaudio.collector") if importlib.util.find_spec(m)]
if rooms:
    sys.exit(f"the edge environment must not contain {rooms}")
import numpy
import soundfile

import beeaudio.core.inference  # noqa: F401
import beeaudio.device.agent  # noqa: F401
from beeaudio.core import audio, inference

runtimes = [m for m in ("ai_edge_litert", "tflite_runtime") if importlib.util.find_spec(m)]
print(
    f"{platform.machine()}: python {platform.python_version()}, numpy {numpy.__version__}, soundfile "
    f"{soundfile.__version__}, libsndfile {soundfile.__libsndfile_version__}, resampler {getattr(audio, 'RESAMPLER', 'soxr')}, "
    f"runtimes {runtimes}"
)
EOF
}

ensure_venv() {  # ensure_venv ARCH DIR WHEEL
  local arch=$1 dir=$2 wheel=$3 root=$2/rootfs venv=/opt/beeaudio/venv stamp module
  stamp=$(printf '%s\n%s\n' "$(cat "$root/.beeaudio-rootfs-stamp")" "$(venv_recipe "$arch")" \
    | cat - "$repo/device/pyproject.toml" | sha256sum | cut -d' ' -f1)
  case $arch in arm64) module=ai_edge_litert.interpreter ;; armhf) module=tflite_runtime.interpreter ;; esac
  mkdir -p "$root/opt/beeaudio/wheels"
  rm -f "$root/opt/beeaudio/wheels"/*.whl
  cp "$wheel" "$root/opt/beeaudio/wheels/"
  local inside
  inside=/opt/beeaudio/wheels/$(basename "$wheel")
  # pip inside trusts what pip on this machine trusts (a TLS-inspecting proxy's CA, if any): Debian's pip
  # reads the system bundle, so hand it this machine's.
  local pip_env=()
  local host_ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  if [ -f "$host_ca" ]; then
    cp "$host_ca" "$root/opt/beeaudio/host-ca.crt"
    pip_env=(--env PIP_CERT=/opt/beeaudio/host-ca.crt)
  fi
  local started=$SECONDS
  if [ -f "$root$venv/.beeaudio-stamp" ] && [ "$(cat "$root$venv/.beeaudio-stamp")" = "$stamp" ] \
      && "$dir/enter" -- python -c "import $module" 2>/dev/null; then
    log "$arch: reusing $venv's dependencies; reinstalling beeaudio-edge"
    "$dir/enter" "${pip_env[@]}" -- python -m pip install -q --no-deps --force-reinstall "$inside"
  else
    log "$arch: creating $venv ($(venv_recipe "$arch"))"
    rm -rf "${root:?}$venv"
    case $arch in
      arm64)
        "$dir/enter" -- /usr/bin/python3 -m venv "$venv"
        "$dir/enter" "${pip_env[@]}" -- python -m pip install -q "$inside"
        ;;
      armhf)
        "$dir/enter" -- /usr/bin/python3 -m venv --system-site-packages "$venv"
        "$dir/enter" "${pip_env[@]}" -- python -m pip install -q "tflite-runtime==2.14.0"
        "$dir/enter" "${pip_env[@]}" -- python -m pip install -q --no-deps "$inside"
        ;;
    esac
    "$dir/enter" -- python -c "import $module; print('$module OK')"
    echo "$stamp" > "$root$venv/.beeaudio-stamp"
  fi
  check_light "$arch" "$dir"
  log "$arch: venv ready in $((SECONDS - started)) s ($(du -sh "$root$venv" | cut -f1) in $venv)"
}

setup_arch() {  # setup_arch ARCH WHEEL -> prints the export lines
  local arch=$1 wheel=$2 dir machine
  dir=${cache_base:-/var/cache/beeaudio-$arch}
  [ -n "$cache_base" ] && dir=$cache_base/$arch
  mkdir -p "$dir"
  ensure_binfmt "$arch" || { unavailable "$arch" "cannot register qemu-$(qemu_name "$arch") in binfmt_misc"; return 0; }
  ensure_rootfs "$arch" "$dir" || { unavailable "$arch" "debootstrap of $suite $arch failed"; return 0; }
  write_cpuinfo "$dir"
  write_enter "$arch" "$dir" "$dir/rootfs"
  machine=$("$dir/enter" -- /bin/uname -m) \
    || { unavailable "$arch" "the $arch userland does not run under qemu"; return 0; }
  [ "$machine" = "$(uname_of "$arch")" ] \
    || { unavailable "$arch" "uname -m in the userland says $machine, not $(uname_of "$arch")"; return 0; }
  log "$arch: userland runs (uname -m: $machine, QEMU_CPU $(default_cpu "$arch"))"
  ensure_venv "$arch" "$dir" "$wheel"
  local prefix
  prefix=$(var_prefix "$arch")
  exports+=("export ${prefix}_ROOT=$dir/rootfs")
  exports+=("export ${prefix}_PYTHON=/opt/beeaudio/venv/bin/python")
  exports+=("export ${prefix}_ENTER=$dir/enter")
}

# -- main --------------------------------------------------------------------------------------------------
started_all=$SECONDS
exports=()
[ "$(id -u)" = 0 ] || { unavailable "${arches[*]}" "needs root (mount, chroot, debootstrap)"; exit 0; }
ensure_tools || { unavailable "${arches[*]}" "cannot install qemu-user-static and debootstrap"; exit 0; }

# The wheel a desktop builds and copies to a Pi (device/README.md), from the working tree as it is now.
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
log "building the beeaudio-edge wheel"
"${PYTHON:-python3}" -m pip wheel -q --no-deps -w "$wheels" "$repo/device"
rm -rf "$repo/device/build" "$repo/device"/*.egg-info
wheel=$(ls "$wheels"/beeaudio_edge-*.whl)

for arch in "${arches[@]}"; do
  # One run at a time per userland (two CI runs on one machine, or a developer beside CI).
  lock_dir=${cache_base:-/var/cache/beeaudio-$arch}
  [ -n "$cache_base" ] && lock_dir=$cache_base/$arch
  mkdir -p "$lock_dir"
  exec 9> "$lock_dir/.lock"
  flock 9
  setup_arch "$arch" "$wheel"
  exec 9>&-
done

if [ -n "$env_file" ]; then
  mkdir -p "$(dirname "$env_file")"
  { echo "# written by .ci/arm64.sh"; printf '%s\n' ${exports[@]+"${exports[@]}"}; } > "$env_file"
  log "variables for the tests in $env_file"
else
  printf '%s\n' ${exports[@]+"${exports[@]}"}
fi
log "done in $((SECONDS - started_all)) s"
