#!/bin/sh
# The official Python client (clients/python) and its pytest suite against a
# real `sluice serve` and redis-server (the suite starts both). The virtualenv
# build/venv-pyclient is made once with httpx, pytest and the build tools from
# PyPI (fails clearly without PyPI); every run then installs the client from
# the repository into it offline, so the tests see the code as it is now.
# usage: tests/tools/pyclient_check.sh SLUICE_BIN MODEL_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODEL=${2:-models/all-minilm-l6-v2}
VENV=${3:-build}/venv-pyclient
LABEL=python-client
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import httpx, pytest, wheel" 2>/dev/null; }; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || { echo "$LABEL: FAIL: python3 -m venv failed (install python3-venv)"; exit 1; }
    if ! timeout 300 "$VENV/bin/pip" install --disable-pip-version-check --quiet --timeout 20 --retries 2 \
        "httpx>=0.23,<1" "pytest>=7" "setuptools>=61" wheel; then
        rm -rf "$VENV"
        echo "$LABEL: FAIL: cannot install httpx, pytest, setuptools, wheel from PyPI (offline?)"
        exit 1
    fi
fi
# built from a copy, so the source tree gets no build/ or egg-info
rm -rf "$VENV/client-src" && cp -r clients/python "$VENV/client-src" &&
"$VENV/bin/pip" install --disable-pip-version-check --quiet --no-index --no-deps --no-build-isolation \
    --force-reinstall "$VENV/client-src" >"$VENV/install.log" 2>&1 ||
    { cat "$VENV/install.log"; echo "$LABEL: FAIL: cannot install clients/python into $VENV"; exit 1; }
SLUICE_BIN=$BIN SLUICE_TEST_MODEL=$MODEL exec timeout 600 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    clients/python/tests
