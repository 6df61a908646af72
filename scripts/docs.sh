#!/usr/bin/env bash
# The docs site (MkDocs + Material + mkdocstrings, pinned in pyproject.toml's `docs` extra):
# `bash scripts/docs.sh` builds it strictly into site/ — a broken link or anchor, a public name
# without a docstring, any warning fails; `bash scripts/docs.sh serve` serves it at
# http://127.0.0.1:8000 while you edit. Its own venv (.venv-docs) holds the docs extra alone: the
# build reads the package's sources (mkdocstrings, statically) and imports neither it nor torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CPIXELCNN_DOCS_VENV:-.venv-docs}"
if [ "${CI:-}" = "true" ]; then rm -rf "$VENV"; fi
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python - <<'PY' > "$VENV/docs-requirements.txt"
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))
PY
python -m pip install -q -r "$VENV/docs-requirements.txt"
export NO_MKDOCS_2_WARNING=1
if [ "${1:-build}" = "serve" ]; then
  exec python -m mkdocs serve
fi
python -m mkdocs build --strict --site-dir "${SITE_DIR:-site}"
echo "docs built into ${SITE_DIR:-site}/ (open its index.html)"
