#!/bin/sh
# Run tests/tools/openai_client_check.py in a virtualenv with the OpenAI SDK.
# The venv is made once under build/venv-openai (PyPI needed then; later runs
# reuse it offline). Fails clearly, and within bounded time, without PyPI.
# usage: tests/tools/openai_client_check.sh SLUICE_BIN MODEL_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODEL=${2:-models/all-minilm-l6-v2}
VENV=${3:-build}/venv-openai
OPENAI_VERSION=${OPENAI_VERSION:-">=1.40,<4"}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || { echo "openai-client: FAIL: python3 -m venv failed (install python3-venv)"; exit 1; }
    if ! timeout 300 "$VENV/bin/pip" install --disable-pip-version-check --quiet --timeout 20 --retries 2 \
        "openai$OPENAI_VERSION"; then
        rm -rf "$VENV"
        echo "openai-client: FAIL: cannot install the openai package from PyPI (offline?)"
        exit 1
    fi
fi
exec timeout 300 "$VENV/bin/python" tests/tools/openai_client_check.py "$BIN" "$MODEL"
