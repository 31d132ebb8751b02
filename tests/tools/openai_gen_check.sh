#!/bin/sh
# Run tests/tools/openai_gen_check.py (the OpenAI Python SDK generating text)
# in the virtualenv of tests/tools/openai_client_check.sh (made once under
# build/venv-openai by tests/tools/pyvenv.sh; PyPI needed then).
# usage: tests/tools/openai_gen_check.sh SLUICE_BIN LLM_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODEL=${2:-models/smollm2-135m-instruct}
VENV=${3:-build}/venv-openai
OPENAI_VERSION=${OPENAI_VERSION:-">=1.40,<4"}
if ! ls "$MODEL"/*.gguf >/dev/null 2>&1; then
    echo "[SKIP] openai-gen: no GGUF in $MODEL (make model)"
    exit 0
fi
sh tests/tools/pyvenv.sh "$VENV" openai "openai$OPENAI_VERSION" openai-gen || exit 1
exec timeout 300 "$VENV/bin/python" tests/tools/openai_gen_check.py "$BIN" "$MODEL"
