# Sourced by run_main.sh and run_tests.sh: creates or reuses a virtual environment and installs
# napari-cdma with the extras in $CDMA_EXTRAS. torch is installed first and pinned, as a CPU build
# when no GPU is present, so that no other package can pull a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CDMA_VENV:-$ROOT/.venv}"
TORCH_VERSION="2.13.0"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# System libraries napari needs to render under Xvfb (Debian/Ubuntu; installed only when missing).
APT_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxkbcommon0 libxcb-cursor0
  libdbus-1-3 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libfontconfig1 libglib2.0-0 libxrender1 libxi6 libsm6 libice6"

ensure_system_packages() {
  command -v dpkg >/dev/null 2>&1 || { log "not a Debian system: install Xvfb and Mesa yourself"; return 0; }
  local missing=()
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing system packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if have_gpu; then
      log "GPU found: installing torch==$TORCH_VERSION (CUDA build)"
      "$PY" -m pip install "torch==$TORCH_VERSION"
    elif "$PY" -m pip install -q --no-index --no-deps "torch==$TORCH_VERSION+cpu" >/dev/null 2>&1; then
      # a CPU wheel in pip's local find-links: take it, then its dependencies from the usual index
      log "installed torch==$TORCH_VERSION+cpu from the local wheel cache"
      "$PY" -m pip install -q "torch==$TORCH_VERSION+cpu"
    else
      log "no GPU: installing the CPU build torch==$TORCH_VERSION+cpu from the PyTorch CPU index"
      "$PY" -m pip install --retries 2 --timeout 30 "torch==$TORCH_VERSION+cpu" \
        --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
    fi
  fi
  local stamp="$VENV/.napari-cdma-${CDMA_EXTRAS:-none}.stamp"
  if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
    log "installing napari-cdma[${CDMA_EXTRAS:-}]"
    "$PY" -m pip install -q -e "$ROOT${CDMA_EXTRAS:+[$CDMA_EXTRAS]}"
    "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" \
      || { log "torch was replaced by another build; refusing to continue"; exit 1; }
    touch "$stamp"
  fi
}
