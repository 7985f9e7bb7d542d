#!/usr/bin/env bash
# Install edge-agent into ./.venv and fetch the local models. Idempotent:
# run it again and it only does what is missing.
#
#   ./install.sh            runtime + the default model (Qwen2.5-Coder-0.5B, INT4)
#                           + the ladder's tier 1 (Qwen2.5-Coder-1.5B, INT4), which
#                           requests climb to when the default model is unsure
#                           ([ladder] enabled = true; off by default for now)
#   ./install.sh --dev      also test tools, Debian test packages, the test models
#   ./install.sh --service  also install the systemd unit (see README)
#   ./install.sh --platform only check this platform and print the llama.cpp
#                           build flags it would use
#
# Environment: PYTHON (default python3), EDGE_AGENT_MODELS_DIR (model cache),
# EDGE_AGENT_CUDA=1 to build llama.cpp with CUDA (a Jetson's architecture is
# set from its model), CMAKE_ARGS to pass your own llama.cpp build flags.
# Package versions are pinned by constraints.txt.
set -euo pipefail

DEV=0
SERVICE=0
PLATFORM_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --service) SERVICE=1 ;;
    --platform) PLATFORM_ONLY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
say() { printf '\n== %s\n' "$*"; }
refuse() { echo "install.sh: $*" >&2; exit 1; }

# What this machine is. The EDGE_AGENT_TEST_* variables stand in for the real
# machine in tests (tests/test_install_platform.py); nothing else sets them.
MACHINE=${EDGE_AGENT_TEST_MACHINE:-$(uname -m)}
SYSROOT=${EDGE_AGENT_TEST_SYSROOT:-}

glibc_version() {  # "2.36", or nothing on a non-glibc system (musl)
  if [ -n "${EDGE_AGENT_TEST_GLIBC+x}" ]; then echo "$EDGE_AGENT_TEST_GLIBC"; return; fi
  getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'
}

python_bits() {  # a 32-bit userland on a 64-bit kernel still says aarch64 in uname
  if [ -n "${EDGE_AGENT_TEST_PYTHON_BITS:-}" ]; then echo "$EDGE_AGENT_TEST_PYTHON_BITS"; return; fi
  "$PYTHON" -c 'import struct; print(struct.calcsize("P") * 8)' 2>/dev/null || echo 64
}

# llama-cpp-python and llguidance have no 32-bit ARM wheels or builds, and
# the aarch64 wheels need glibc 2.31 (Debian 11, Ubuntu 20.04, Pi OS bullseye).
check_platform() {
  case "$MACHINE" in
    armv6l|armv7l|armv8l|armhf|arm)
      refuse "32-bit ARM ($MACHINE) is not supported: llama-cpp-python and llguidance" \
        "have no 32-bit builds; install 64-bit Raspberry Pi OS (aarch64) instead" ;;
  esac
  if [ "$(python_bits)" = 32 ]; then
    refuse "a 32-bit userland ($MACHINE kernel, 32-bit $PYTHON) is not supported:" \
      "llama-cpp-python and llguidance have no 32-bit builds; install 64-bit Raspberry Pi OS (aarch64) instead"
  fi
  if [ "$MACHINE" = aarch64 ]; then
    local glibc
    glibc=$(glibc_version)
    if [ -z "$glibc" ] || ! printf '%s\n' 2.31 "$glibc" | sort -V -C; then
      refuse "aarch64 needs glibc >= 2.31 (found ${glibc:-none}): use Debian 11," \
        "Ubuntu 20.04, Raspberry Pi OS bullseye or newer"
    fi
  fi
}

jetson_model() {  # the board's model string on an NVIDIA Jetson, else fails
  local model
  model=$({ tr -d '\0' <"$SYSROOT/proc/device-tree/model"; } 2>/dev/null || true)
  if [ -f "$SYSROOT/etc/nv_tegra_release" ] \
    || { [ "$MACHINE" = aarch64 ] && [[ "$model" == *NVIDIA* ]]; }; then
    echo "${model:-NVIDIA Jetson}"
  else
    return 1
  fi
}

cuda_arch() {  # the compute capability of a Jetson model string
  case "$1" in
    *Orin*) echo 87 ;;         # AGX Orin, Orin NX, Orin Nano
    *Xavier*) echo 72 ;;       # AGX Xavier, Xavier NX
    *TX2*) echo 62 ;;
    *Nano*|*TX1*) echo 53 ;;   # the original Jetson Nano
    *) echo "" ;;
  esac
}

llama_cmake_args() {  # llama.cpp build flags for this machine (CMAKE_ARGS wins)
  if [ -n "${CMAKE_ARGS:-}" ]; then echo "$CMAKE_ARGS"; return; fi
  local args="-DGGML_NATIVE=ON" model arch
  if [ "${EDGE_AGENT_CUDA:-0}" = "1" ]; then
    args="$args -DGGML_CUDA=on"
    if model=$(jetson_model); then
      arch=$(cuda_arch "$model")
      if [ -n "$arch" ]; then
        args="$args -DCMAKE_CUDA_ARCHITECTURES=$arch"
      else
        echo "install.sh: unknown Jetson '$model': CUDA architecture left to CMake" \
          "(pass CMAKE_ARGS=... to choose)" >&2
      fi
    fi
  elif model=$(jetson_model); then
    echo "install.sh: $model: EDGE_AGENT_CUDA=1 would build llama.cpp for its GPU" >&2
  fi
  echo "$args"
}

check_platform
if [ "$PLATFORM_ONLY" -eq 1 ]; then
  echo "platform: $MACHINE, glibc $(glibc_version), ${EDGE_AGENT_CUDA:+CUDA=$EDGE_AGENT_CUDA, }supported"
  if model=$(jetson_model); then echo "jetson: $model"; fi
  echo "CMAKE_ARGS=$(llama_cmake_args)"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install.sh: need root (or sudo) for: $*" >&2; return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get: install $* yourself" >&2; return 0; }
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# A C/C++ toolchain builds llama.cpp for *this* CPU (NEON on a Pi, AVX2 on x86).
command -v cc >/dev/null && command -v c++ >/dev/null && command -v cmake >/dev/null \
  || apt_install build-essential cmake
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv

# bubblewrap lets the sandbox contain any tool, as root too (edge-agent doctor says
# what it grants); small, and the install goes on without it.
apt_install bubblewrap || echo "install.sh: bubblewrap not installed; see edge-agent doctor" >&2
if [ "$DEV" -eq 1 ]; then
  # broker, dashboard test, kernel headers (seccomp numbers checked against them)
  apt_install mosquitto chromium-headless-shell linux-libc-dev
fi

if [ ! -x .venv/bin/python ]; then
  say "virtual environment .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel

CMAKE_ARGS=$(llama_cmake_args)
export CMAKE_ARGS
if [[ "$CMAKE_ARGS" == *GGML_CUDA=on* ]] && ! command -v nvcc >/dev/null \
  && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"  # JetPack installs nvcc off the PATH
fi
say "edge-agent (llama-cpp-python is compiled for this CPU on first install: minutes)"
# constraints.txt pins every dependency (and llama-cpp-python, whose private
# API the engine uses: tests/engine/test_llama_contract.py) to tested versions.
PINS=(-c constraints.txt)
PYVER=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$PYVER" != 3.11 ]; then
  echo "install.sh: constraints.txt pins versions for Python 3.11, this is $PYVER:" \
    "installing the newest compatible versions instead (untested)" >&2
  PINS=()
fi
if [ "$DEV" -eq 1 ]; then
  "${PIP[@]}" install "${PINS[@]}" -e '.[dev]'
else
  "${PIP[@]}" install "${PINS[@]}" -e .
fi

say "default model, and tier 1 of the ladder"
.venv/bin/edge-agent models fetch --quiet
.venv/bin/edge-agent models fetch qwen2.5-coder-1.5b --quiet
if [ "$DEV" -eq 1 ]; then
  say "test models"
  .venv/bin/edge-agent models fetch smollm2-135m --quiet
fi

if [ "$SERVICE" -eq 1 ]; then
  say "systemd service"
  .venv/bin/edge-agent service install
fi

say "done: try  .venv/bin/edge-agent ask \"Turn on the kitchen light\""
