#!/usr/bin/env bash
# The test command: sets up (or reuses) the environment, then runs the whole test suite.
# GUI tests run in a real napari viewer on a virtual X server (pytest-xvfb starts Xvfb).
CDMA_EXTRAS=testing
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh"
ensure_system_packages
ensure_venv
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$PY" -m pytest "$@"
