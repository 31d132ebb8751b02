#!/bin/sh
# Run tests/tools/openapi_check.py (GET /openapi.json through
# openapi-spec-validator, and against the route table) in a virtualenv made
# once under build/venv-openapi by tests/tools/pyvenv.sh (PyPI needed then).
# usage: tests/tools/openapi_check.sh SLUICE_BIN MODELS_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODELS=${2:-models}
VENV=${3:-build}/venv-openapi
sh tests/tools/pyvenv.sh "$VENV" openapi_spec_validator "openapi-spec-validator>=0.7,<1" openapi || exit 1
exec timeout 120 "$VENV/bin/python" tests/tools/openapi_check.py "$BIN" "$MODELS" api/http/routes.c
