#!/bin/sh
# Run tests/tools/prom_check.py in a virtualenv with prometheus_client (made
# once under BUILD_DIR/venv-prom by tests/tools/pyvenv.sh).
# usage: tests/tools/prom_check.sh METRICS_FILE BUILD_DIR [REQUIRED_FAMILY...]
FILE=$1
VENV=${2:-build}/venv-prom
shift 2
sh tests/tools/pyvenv.sh "$VENV" prometheus_client "prometheus_client>=0.17,<1" prom-check || exit 1
exec timeout 60 "$VENV/bin/python" tests/tools/prom_check.py "$FILE" "$@"
