# Sourced by demo.sh and test.sh: make (or reuse) .venv with the CPU torch pinned, install the
# package with its compiled extension. Never installs an unpinned torch (that pulls a CUDA build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${CPIXELCNN_VENV:-.venv}"
if [ "${CI:-}" = "true" ] || [ "${FRESH_VENV:-}" = "1" ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q "torch==${CPIXELCNN_TORCH:-2.13.0}"
python -m pip install -q --no-build-isolation -e ".[${EXTRAS:-test}]"
