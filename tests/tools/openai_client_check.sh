#!/bin/sh
# Run tests/tools/openai_client_check.py in a virtualenv with the OpenAI SDK.
# The venv is made once under build/venv-openai by tests/tools/pyvenv.sh (PyPI
# needed then; later runs reuse it offline; fails clearly without PyPI).
# usage: tests/tools/openai_client_check.sh SLUICE_BIN MODEL_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODEL=${2:-models/all-minilm-l6-v2}
VENV=${3:-build}/venv-openai
OPENAI_VERSION=${OPENAI_VERSION:-">=1.40,<4"}
sh tests/tools/pyvenv.sh "$VENV" openai "openai$OPENAI_VERSION" openai-client || exit 1
exec timeout 300 "$VENV/bin/python" tests/tools/openai_client_check.py "$BIN" "$MODEL"
