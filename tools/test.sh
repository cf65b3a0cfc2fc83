#!/usr/bin/env bash
# Installs the project with its test extra into .venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
.venv/bin/ruff check service tests training loadtest benchmarks
.venv/bin/mypy service
.venv/bin/python -m pytest "$@"
