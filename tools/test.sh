#!/usr/bin/env bash
# Installs the project with its test extra into .venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
# The LM parity test's reference decoder; it declares numpy<2 but works with numpy 2.
.venv/bin/pip install -q --no-deps pyctcdecode==0.5.0
.venv/bin/ruff check service tests training loadtest benchmarks tools
.venv/bin/ruff format --check service tests training loadtest benchmarks tools
.venv/bin/mypy service
.venv/bin/python -m pytest "$@"
