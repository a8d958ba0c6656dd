#!/usr/bin/env bash
# Set up (first time), lint, type-check and run the whole test suite.
source "$(dirname "$0")/scripts/_env.sh"
ruff check .
ruff format --check .
mypy
exec python -m pytest "$@"
