#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (Triton kernels in interpreter mode and
# compiled for sm_80/sm_90; CUDA sources compiled with the PyPI nvcc of the gpu-check extra).
# CPIXELCNN_TORCH picks the torch release (default: the pinned CPU build), CPIXELCNN_VENV the venv.
set -euo pipefail
SECONDS=0
EXTRAS=test,gpu-check,real-data . "$(dirname "$0")/setup_env.sh"
echo "set-up and build: ${SECONDS} s"
python -c "import cpixelcnn, torch; from cpixelcnn._extension import _C, IMPORT_ERROR; print('torch', torch.__version__, '| cpixelcnn compiled extension:', ('built, CUDA part ' + ('present' if hasattr(_C, 'cached_sample_cuda') else 'absent')) if _C else f'NOT built ({IMPORT_ERROR})')"
exec python -m pytest -q -p no:cacheprovider tests "$@"
