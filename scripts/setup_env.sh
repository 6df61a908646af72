# Sourced by demo.sh, test.sh and test_installed.sh: make (or reuse) a venv with torch pinned, then
# install the package editable with its compiled extension (CPIXELCNN_PACKAGE=none: torch only).
# Never installs an unpinned torch (that pulls a CUDA build of several GB).
#   CPIXELCNN_TORCH   the torch release (default 2.13.0, the CPU build on this project's machines);
#                     an explicit pin also lifts a machine-wide pip cap on torch (PIP_CONSTRAINT)
#   CPIXELCNN_VENV    the venv folder (default .venv); CI=true or FRESH_VENV=1 starts it afresh
#   EXTRAS            the package's extras to install (default: test)
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
if [ -n "${CPIXELCNN_TORCH:-}" ]; then export PIP_CONSTRAINT=/dev/null; fi
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q "torch==${CPIXELCNN_TORCH:-2.13.0}"
if [ "${CPIXELCNN_PACKAGE:-editable}" = "editable" ]; then
  python -m pip install -q --no-build-isolation -e ".[${EXTRAS:-test}]"
fi
