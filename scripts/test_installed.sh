#!/usr/bin/env bash
# The package as users install it (`pip install .`, `pip install git+URL`, the sdist): build the
# sdist, build a wheel *from that sdist*, install the wheel (not editable) into a fresh venv, run the
# test suite from a copy of tests/ outside the checkout — the checkout's sources are not importable
# there, and conftest.py refuses to run unless cpixelcnn comes from site-packages — then run
# `cpixelcnn demo` from that install. Arguments go to pytest (default: every test, slow ones and the
# quality guard included). CPIXELCNN_TORCH picks the torch release as in setup_env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="$PWD"
SECONDS=0
CPIXELCNN_VENV="${CPIXELCNN_VENV:-.venv-installed}" FRESH_VENV=1 CPIXELCNN_PACKAGE=none . scripts/setup_env.sh
python -m pip install -q build
DIST="$(mktemp -d)"
WORK="$(mktemp -d)"
trap 'rm -rf "$DIST" "$WORK"' EXIT
python -m build -q --sdist --no-isolation --outdir "$DIST" . >/dev/null
python -m pip wheel -q --no-build-isolation --no-deps --wheel-dir "$DIST" "$DIST"/cpixelcnn-*.tar.gz
WHEEL="$(ls "$DIST"/cpixelcnn-*.whl)"
python -m pip install -q "${WHEEL}[${EXTRAS:-test,gpu-check,real-data}]"
echo "installed $(basename "$WHEEL") (built from $(basename "$DIST"/cpixelcnn-*.tar.gz)); set-up and build: ${SECONDS} s"
cp -r tests benchmarks csrc pyproject.toml "$WORK"/
cd "$WORK"
python -m cpixelcnn doctor --brief
CPIXELCNN_EXPECT_INSTALLED=1 CPIXELCNN_SOURCE_TREE="$SOURCE" CPIXELCNN_DIST_DIR="$DIST" \
  python -m pytest -q -p no:cacheprovider -n "${CPIXELCNN_TEST_WORKERS:-auto}" tests "$@"
tests_done=$SECONDS
cpixelcnn demo --out "$WORK/demo" --max-steps "${CPIXELCNN_DEMO_STEPS:-100}"
echo "installed-package phase: tests done at ${tests_done} s, demo took $((SECONDS - tests_done)) s"
