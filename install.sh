#!/usr/bin/env bash
# Install edge-agent into ./.venv and fetch the default model. Idempotent:
# run it again and it only does what is missing.
#
#   ./install.sh            runtime + default model (Qwen2.5-Coder-0.5B, INT4)
#   ./install.sh --dev      also test tools, Debian test packages, the test models
#   ./install.sh --service  also install the systemd unit (see README)
#
# Environment: PYTHON (default python3), EDGE_AGENT_MODELS_DIR (model cache),
# EDGE_AGENT_CUDA=1 to build llama.cpp with CUDA (Jetson), CMAKE_ARGS to
# pass your own llama.cpp build flags.
set -euo pipefail

DEV=0
SERVICE=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --service) SERVICE=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
say() { printf '\n== %s\n' "$*"; }

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
  apt_install mosquitto chromium-headless-shell  # broker, dashboard test
fi

if [ ! -x .venv/bin/python ]; then
  say "virtual environment .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel

if [ -z "${CMAKE_ARGS:-}" ]; then
  CMAKE_ARGS="-DGGML_NATIVE=ON"
  if [ "${EDGE_AGENT_CUDA:-0}" = "1" ]; then CMAKE_ARGS="$CMAKE_ARGS -DGGML_CUDA=on"; fi
fi
export CMAKE_ARGS
say "edge-agent (llama-cpp-python is compiled for this CPU on first install: minutes)"
if [ "$DEV" -eq 1 ]; then
  "${PIP[@]}" install -e '.[dev]'
else
  "${PIP[@]}" install -e .
fi

say "default model"
.venv/bin/edge-agent models fetch --quiet
if [ "$DEV" -eq 1 ]; then
  say "test models"
  .venv/bin/edge-agent models fetch smollm2-135m --quiet
  .venv/bin/edge-agent models fetch qwen2.5-coder-1.5b --quiet
fi

if [ "$SERVICE" -eq 1 ]; then
  say "systemd service"
  .venv/bin/edge-agent service install
fi

say "done: try  .venv/bin/edge-agent ask \"Turn on the kitchen light\""
