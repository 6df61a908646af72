#!/usr/bin/env bash
# README command 2: set up (.venv: the pinned torch, the package installed editable with its
# compiled extension), then run the test suite on all cores (pytest-xdist): every test but the slow
# end-to-end cases (marker `slow`) and the classification-quality guard (marker `quality`), which CI
# runs. `--all` runs those too; other arguments go to pytest (a later -m replaces the default one).
# Triton kernels run in interpreter mode and are compiled for sm_80/sm_90; CUDA sources are compiled
# with the PyPI nvcc of the gpu-check extra. CPIXELCNN_TORCH picks the torch release, CPIXELCNN_VENV the venv.
set -euo pipefail
SECONDS=0
EXTRAS=test,gpu-check,real-data . "$(dirname "$0")/setup_env.sh"
echo "set-up and build: ${SECONDS} s"
python -m cpixelcnn doctor --brief
select=(-m "not slow and not quality")
args=()
for arg in "$@"; do
  if [ "$arg" = "--all" ]; then select=(); else args+=("$arg"); fi
done
exec python -m pytest -q -p no:cacheprovider -n "${CPIXELCNN_TEST_WORKERS:-auto}" tests "${select[@]}" "${args[@]}"
