#!/usr/bin/env bash
# Installs tatlas with its test extras and the reference stack, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pip install -q torch==2.13.0 -e ".[test]"
python -m pip install -q --no-deps -r requirements/reference.txt
python -m pytest -q "$@"
