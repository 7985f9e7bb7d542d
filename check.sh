#!/usr/bin/env bash
# Every check CI runs, in one place: lint, format, import direction, types, tests.
# Run ./install.sh --dev first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
V=.venv/bin
echo "== ruff";   "$V/ruff" check .
echo "== format"; "$V/ruff" format --check .
echo "== imports"; "$V/lint-imports" --no-cache | sed -n '/^Contracts:/,$p'
echo "== mypy";   "$V/mypy" && MYPYPATH=tools "$V/mypy" tools/*.py
if [ $# -gt 0 ]; then
  echo "== pytest"; "$V/python" -m pytest "$@"
else
  # The fast tests first (no model: pure code, the named scripted fake, real
  # brokers), so a plain mistake fails in about two minutes; then the rest
  # (real models, and real processes per case: sandboxes, MCP servers, the CLI).
  echo "== pytest: fast"; "$V/python" -m pytest -m "not model and not slow"
  echo "== pytest: models and slow"; "$V/python" -m pytest -m "model or slow"
fi
