#!/bin/sh
# Make (once) a virtualenv holding one PyPI package, for the checks that run a
# real third-party Python client. Later runs reuse it offline; without PyPI it
# fails clearly and within bounded time.
# usage: tests/tools/pyvenv.sh VENV_DIR IMPORT_NAME PIP_SPEC LABEL
VENV=$1 MOD=$2 SPEC=$3 LABEL=$4
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import $MOD" 2>/dev/null; then exit 0; fi
rm -rf "$VENV"
python3 -m venv "$VENV" || { echo "$LABEL: FAIL: python3 -m venv failed (install python3-venv)"; exit 1; }
if ! timeout 300 "$VENV/bin/pip" install --disable-pip-version-check --quiet --timeout 20 --retries 2 "$SPEC"; then
    rm -rf "$VENV"
    echo "$LABEL: FAIL: cannot install $SPEC from PyPI (offline?)"
    exit 1
fi
