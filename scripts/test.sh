#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (Triton kernels in interpreter mode and
# compiled for sm_80/sm_90; CUDA sources compiled with the PyPI nvcc of the gpu-check extra).
set -euo pipefail
EXTRAS=test,gpu-check,real-data . "$(dirname "$0")/setup_env.sh"
python -c "import cpixelcnn; print('cpixelcnn compiled extension:', 'built' if cpixelcnn.extension_available() else 'NOT built')"
exec python -m pytest -q -p no:cacheprovider tests "$@"
