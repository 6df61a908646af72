#!/usr/bin/env bash
# README command 1: set up, then train a tiny model on built-in data, sample per class, classify.
set -euo pipefail
EXTRAS=test . "$(dirname "$0")/setup_env.sh"
exec cpixelcnn demo "$@"
