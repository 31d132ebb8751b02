#!/bin/sh
# Run every Criterion suite, then the sanitizer suites, and print one total line.
# usage: tests/run.sh BUILD_DIR ASAN_BUILD_DIR MODEL_DIR
BUILD=${1:-build}
ASAN=${2:-build/asan}
export SLUICE_TEST_MODEL=${3:-models/all-minilm-l6-v2}
export SLUICE_BIN=${SLUICE_BIN:-bin/sluice}
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
pass=0; fail=0; skip=0; bad=""
# Sanitizer findings are fatal (the sanitized builds also use -fno-sanitize-recover=all)
# and every sanitized process, a child that a test starts with its stderr
# elsewhere included, writes its report to a file under $LOG that run_suite reads.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$LOG/san"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOG/san"
SAN_REPORT='runtime error:|(ERROR|WARNING|SUMMARY): [A-Za-z]*Sanitizer'

run_suite() { # name, command...
    name=$1; shift
    echo "== $name"
    rm -f "$LOG"/san.*
    "$@" >"$LOG/out" 2>&1
    rc=$?
    for r in "$LOG"/san.*; do [ -f "$r" ] && { echo "---- $r"; cat "$r"; } >>"$LOG/out"; done
    rm -f "$LOG"/san.*
    cat "$LOG/out"
    line=$(grep 'Synthesis:' "$LOG/out" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
    # a sanitizer report fails the suite even where Criterion counted a pass
    n=$(grep -cE "$SAN_REPORT" "$LOG/out")
    [ "$n" -gt 0 ] && echo "$name: $n sanitizer report line(s)"
    failed=0
    # pytest's closing line ("3 failed, 12 passed, 1 skipped in 9.04s"): counted test by test too
    pyline=""
    [ -z "$line" ] && pyline=$(grep -E '^=* ?[0-9]+ (passed|failed|errors?|skipped)(,.*)? in [0-9.]+s' "$LOG/out" | tail -1)
    if [ -n "$pyline" ]; then
        p=$(echo "$pyline" | sed -nE 's/(.*[^0-9])?([0-9]+) passed.*/\2/p')
        f=$(echo "$pyline" | sed -nE 's/(.*[^0-9])?([0-9]+) failed.*/\2/p')
        e=$(echo "$pyline" | sed -nE 's/(.*[^0-9])?([0-9]+) errors?([^a-z].*)?$/\2/p')
        s=$(echo "$pyline" | sed -nE 's/(.*[^0-9])?([0-9]+) skipped.*/\2/p')
        pass=$((pass + ${p:-0})); skip=$((skip + ${s:-0})); fail=$((fail + ${f:-0} + ${e:-0}))
        [ $((${f:-0} + ${e:-0})) -gt 0 ] && failed=1
    elif [ -n "$line" ]; then
        p=$(echo "$line" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
        f=$(echo "$line" | sed -n 's/.*Failing: \([0-9]*\).*/\1/p')
        c=$(echo "$line" | sed -n 's/.*Crashing: \([0-9]*\).*/\1/p')
        s=$(grep -c '\[SKIP\]' "$LOG/out")
        pass=$((pass + p)); skip=$((skip + s)); fail=$((fail + f + c))
        [ $((f + c)) -gt 0 ] && failed=1
    elif [ $rc -eq 0 ] && [ "$n" -eq 0 ]; then
        pass=$((pass + 1))
    fi
    # a non-zero exit or a sanitizer report the counts above did not show: one failure more
    if [ $failed -eq 0 ] && { [ $rc -ne 0 ] || [ "$n" -gt 0 ]; }; then
        fail=$((fail + 1)); failed=1
    fi
    [ $failed -eq 1 ] && bad="$bad $name"
    return 0
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "$(basename "$t")" "$t" --jobs 2 --verbose
done
# A real third-party client: the OpenAI Python SDK against `sluice serve`, compared
# with `sluice embed` (its virtualenv is made once under $BUILD; PyPI needed then).
[ -x "$SLUICE_BIN" ] && run_suite "openai-client" sh tests/tools/openai_client_check.sh "$SLUICE_BIN" "$SLUICE_TEST_MODEL" "$BUILD"
# The official Python client (clients/python) and its pytest suite against a real server and
# redis-server (its virtualenv is made once under $BUILD; PyPI needed then).
[ -x "$SLUICE_BIN" ] && run_suite "python-client" sh tests/tools/pyclient_check.sh "$SLUICE_BIN" "$SLUICE_TEST_MODEL" "$BUILD"
# The same SDK generating text (chat, completions, streaming with usage, n=2, stop strings, seeds)
# from the decoder model next to the GGUF of $SLUICE_TEST_LLM.
[ -x "$SLUICE_BIN" ] && run_suite "openai-gen" sh tests/tools/openai_gen_check.sh "$SLUICE_BIN" \
    "$(dirname "${SLUICE_TEST_LLM:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}")" "$BUILD"
# GET /openapi.json through openapi-spec-validator and against the route table of api/http/routes.c
# (its virtualenv is made once under $BUILD; PyPI needed then).
[ -x "$SLUICE_BIN" ] && run_suite "openapi" sh tests/tools/openapi_check.sh "$SLUICE_BIN" "$(dirname "$SLUICE_TEST_MODEL")" "$BUILD"
# The operator's page (GET /) in headless Chromium against live servers with both models and Redis: models
# table, a streamed chat answer, stop, similarity, the key prompt, same-origin requests only; screenshots
# under $BUILD/test-output/page. Skips, saying so, only when Chromium cannot be installed.
[ -x "$SLUICE_BIN" ] && run_suite "page-browser" sh tests/tools/page_check.sh "$SLUICE_BIN" "$(dirname "$SLUICE_TEST_MODEL")" "$BUILD"
# Every curl example in docs/api.md against a live server (skips without the doc, the binary or redis-server).
run_suite docs_api bash tests/test_docs_api.sh docs/api.md
# The Debian package: make deb, dpkg -i into a throwaway root, the unit's command line, purge.
run_suite package sh tests/test_package.sh "$BUILD"
# The request parsers under libFuzzer for a bounded time (FUZZ_SECONDS, default 30, shared by
# the targets: the embeddings/expand parser gets half, the generation parser the rest): no crash,
# no sanitizer report, no leak. New inputs go to a temp corpus; the seeds stay as they are.
FUZZ_TOTAL=${FUZZ_SECONDS:-30}
FUZZ_FIRST=$(( FUZZ_TOTAL / 2 > 0 ? FUZZ_TOTAL / 2 : 1 ))
FUZZ_REST=$(( FUZZ_TOTAL - FUZZ_FIRST > 0 ? FUZZ_TOTAL - FUZZ_FIRST : 1 ))
fuzz_suite() { # name, seconds, seeds
    if [ -x "$BUILD/fuzz/$1" ]; then
        mkdir -p "$LOG/corpus-$1"
        run_suite "$(echo "$1" | tr _ -)" "$BUILD/fuzz/$1" -max_total_time="$2" -timeout=10 \
            -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "$LOG/corpus-$1" "$3"
    else
        echo "== $(echo "$1" | tr _ -)"
        echo "[SKIP] $1: no $BUILD/fuzz/$1 (make fuzz needs clang)"
        skip=$((skip + 1))
    fi
}
fuzz_suite fuzz_request "$FUZZ_FIRST" tests/fuzz/seeds
fuzz_suite fuzz_gen_request "$FUZZ_REST" tests/fuzz/seeds_gen
# AddressSanitizer (with LeakSanitizer) over the loader, the tokenizer, the embed path and the
# control plane; the child processes these suites start are the ASan-built sluice too.
export SLUICE_BIN="$ASAN/bin/sluice"
for t in "$ASAN"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "asan:$(basename "$t")" "$t" --jobs 1 --verbose
done
if [ -x "$ASAN/bin/sluice" ]; then
    # the vectors themselves are checked elsewhere: here only the sanitizer's verdict counts
    run_suite "asan:sluice-embed" sh -c '"$0" embed --device cpu --model "$1" --text "A leak check of the whole embed path." --text "Short." --text "" >/dev/null' "$ASAN/bin/sluice" "$SLUICE_TEST_MODEL"
fi
[ -n "$bad" ] && echo "failed suites:$bad"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
