#!/usr/bin/env bash
# README command 1: set up, then train a small model on real images that ship with scikit-learn
# (handwritten digits; nothing is downloaded at run time), sample per class, classify.
set -euo pipefail
EXTRAS=real-data . "$(dirname "$0")/setup_env.sh"
exec cpixelcnn demo "$@"
