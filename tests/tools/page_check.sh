#!/bin/sh
# The operator's page in headless Chromium (tests/tools/page_check.py, driven
# through the DevTools protocol with the standard library: no PyPI, no
# chromedriver). Skips, saying so, only when Chromium is not installed and
# cannot be (mk/deps.sh installs it); the screenshots go to OUT_DIR.
# usage: tests/tools/page_check.sh SLUICE_BIN MODELS_DIR [BUILD_DIR]
BIN=${1:-bin/sluice}
MODELS=${2:-models}
OUT=${3:-build}/test-output/page
# environment: SLUICE_CHROMIUM (chromium), the browser to drive
CHROMIUM=${SLUICE_CHROMIUM:-chromium}
if ! command -v "$CHROMIUM" >/dev/null 2>&1; then
    sh mk/deps.sh >/dev/null 2>&1
    if ! command -v "$CHROMIUM" >/dev/null 2>&1; then
        echo "[SKIP] page: $CHROMIUM is not installed and mk/deps.sh could not install it"
        echo "[====] Synthesis: Tested: 0 | Passing: 0 | Failing: 0 | Crashing: 0"
        exit 0
    fi
fi
for m in all-minilm-l6-v2 smollm2-135m-instruct; do
    [ -d "$MODELS/$m" ] || { echo "page: FAIL: no $MODELS/$m (make model)"; exit 1; }
done
SLUICE_CHROMIUM=$(command -v "$CHROMIUM") exec timeout 120 python3 tests/tools/page_check.py "$BIN" "$MODELS" "$OUT"
