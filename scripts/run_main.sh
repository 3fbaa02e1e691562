#!/usr/bin/env bash
# The main job: napari with the napari-cdma plugin, the GlaS sample image and the bundled model,
# prediction and uncertainty layers on screen. On a machine without a display it runs the same
# work on a virtual X server and writes a screenshot (outputs/screenshot.png) instead.
CDMA_EXTRAS=napari
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh"
cd "$ROOT"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  ensure_venv
  exec "$PY" -m napari_cdma "$@"
fi
ensure_system_packages
ensure_venv
mkdir -p outputs
log "no display: running headless under Xvfb, screenshot -> outputs/screenshot.png"
exec xvfb-run -a -s "-screen 0 1600x1000x24" "$PY" -m napari_cdma --screenshot outputs/screenshot.png --quit "$@"
