#!/bin/bash
# tests/test_docs_api.sh - every curl example in docs/api.md works as written.
#
# Starts a real redis-server and `sluice serve` (CPU backend, the real model)
# on free loopback ports, takes the ```sh blocks of the doc in order, points
# their URLs (localhost:8080, 127.0.0.1:8080, redis ...:6379) at the live
# servers, runs them one after another in one bash (so a variable set in one
# block, a task id say, is there in the next) and compares the HTTP status of
# every curl call with the status written after it in the doc:
#
#     curl -s http://localhost:8080/v1/embeddings -d '{"input": "hi"}'   # -> 200
#
# (the marker `# -> NNN` on the line where the command ends, or on any line
# of it; a curl without one fails). One line per example, then a
# Criterion-style synthesis line that tests/run.sh counts.
#
# usage: tests/test_docs_api.sh [DOC]      (run from the repository root)
# environment: SLUICE_BIN (bin/sluice), SLUICE_TEST_MODEL (models/all-minilm-l6-v2),
#   SLUICE_REDIS_SERVER (redis-server), SLUICE_API_KEY (exported to the examples)
DOC=${1:-docs/api.md}
BIN=${SLUICE_BIN:-bin/sluice}
MODEL=${SLUICE_TEST_MODEL:-models/all-minilm-l6-v2}
REDIS=${SLUICE_REDIS_SERVER:-redis-server}

synthesis() { echo "[====] Synthesis: Tested: $1 | Passing: $2 | Failing: $3 | Crashing: 0"; }
skip() {
    echo "[SKIP] docs_api: $*"
    synthesis 0 0 0
    exit 0
}

[ -f "$DOC" ] || skip "$DOC is not there"
[ -x "$BIN" ] || skip "$BIN is not built"
[ -f "$MODEL/config.json" ] || skip "no model in $MODEL (make model)"
command -v "$REDIS" >/dev/null 2>&1 || skip "no redis-server (make deps)"
command -v curl >/dev/null 2>&1 || skip "no curl"

TMP=$(mktemp -d /tmp/sluice-docs-api-XXXXXX)
REDIS_PID=""
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# A port nobody listens on (the kernel's pick of an ephemeral one, if python3 is here).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    echo 0
}

# ---- servers
RPORT=$(free_port)
"$REDIS" --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no --logfile "$TMP/redis.log" \
    --daemonize no >/dev/null 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$RPORT") 2>/dev/null && break
    sleep 0.1
done
"$BIN" serve --port 0 --port-file "$TMP/port" --redis "redis://127.0.0.1:$RPORT/0" --device cpu \
    --models "$(dirname "$MODEL")" --preload "$(basename "$MODEL")" --log-level warn >"$TMP/serve.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 600); do
    [ -s "$TMP/port" ] && PORT=$(cat "$TMP/port") &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ] || [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" != 200 ]; then
    echo "docs_api: sluice serve did not become ready; its log:"
    tail -20 "$TMP/serve.log"
    curl -s "http://127.0.0.1:$PORT/readyz" 2>/dev/null
    synthesis 1 0 1
    exit 1
fi

# ---- the examples: the script to run, and the expected statuses (line, status)
awk -v port="$PORT" -v rport="$RPORT" -v script="$TMP/examples.sh" -v expect="$TMP/expected" '
    function flush(   n, m, s, rest, i) {
        if (logical == "") return
        # curl as a command word (start, after ; & | ( $( or a space), markers "# -> NNN"
        n = 0; s = logical
        while (match(s, /(^|[;&|( ])curl[ \t]/)) { n++; s = substr(s, RSTART + RLENGTH) }
        m = 0; rest = logical
        while (match(rest, /#[ \t]*(->|=>|→)[ \t]*[1-5][0-9][0-9]/)) {
            st = substr(rest, RSTART, RLENGTH); sub(/.*[^0-9]/, "", st)
            print first ":" st >> expect
            m++; rest = substr(rest, RSTART + RLENGTH)
        }
        for (i = m; i < n; i++) print first ":missing" >> expect
        logical = ""
    }
    /^```/ {
        if (inblock) { flush(); inblock = 0; print "# ---- end of block" >> script; next }
        if ($0 ~ /^```(sh|bash|shell|console)[ \t]*$/) { inblock = 1; print "# ---- block at line " NR + 1 >> script }
        next
    }
    inblock {
        line = $0
        gsub(/(localhost|127\.0\.0\.1):8080/, "127.0.0.1:" port, line)
        gsub(/(localhost|127\.0\.0\.1):6379/, "127.0.0.1:" rport, line)
        print line >> script
        if (logical == "") first = NR
        logical = logical " " line
        if (line !~ /\\$/) flush()
    }
' "$DOC"
[ -s "$TMP/expected" ] || { echo "docs_api: no curl example in $DOC"; synthesis 1 0 1; exit 1; }

# Every curl records the status of its last answer (after redirects and 100s).
cat >"$TMP/run.sh" <<EOF
export SLUICE_URL=http://127.0.0.1:$PORT
export SLUICE_API_KEY=\${SLUICE_API_KEY:-}
STATUS_FILE=$TMP/statuses
curl() {
    local hdr=\$(mktemp "$TMP/hdr.XXXXXX") rc st
    command curl -sS --max-time 60 -D "\$hdr" "\$@"
    rc=\$?
    st=\$(grep -a '^HTTP/' "\$hdr" | tail -1 | awk '{print \$2}')
    echo "\${st:-000}" >>"\$STATUS_FILE"
    rm -f "\$hdr"
    return \$rc
}
export -f curl 2>/dev/null
EOF
cat "$TMP/examples.sh" >>"$TMP/run.sh"
: >"$TMP/statuses"
PATH="$(cd "$(dirname "$BIN")" && pwd):$PATH" timeout 600 bash "$TMP/run.sh" >"$TMP/out" 2>&1

# ---- compare, example by example
mapfile -t want <"$TMP/expected"
mapfile -t got <"$TMP/statuses"
pass=0
fail=0
for i in "${!want[@]}"; do
    line=${want[$i]%%:*}
    st=${want[$i]#*:}
    g=${got[$i]:-none}
    cmd=$(sed -n "${line}p" "$DOC" | sed 's/^[ \t]*//' | cut -c1-90)
    if [ "$st" = missing ]; then
        echo "[FAIL] $DOC:$line: a curl without a '# -> STATUS' marker: $cmd"
        fail=$((fail + 1))
    elif [ "$g" = "$st" ]; then
        echo "[PASS] $DOC:$line -> $st: $cmd"
        pass=$((pass + 1))
    else
        echo "[FAIL] $DOC:$line: documented $st, got $g: $cmd"
        fail=$((fail + 1))
    fi
done
if [ "${#got[@]}" -ne "${#want[@]}" ]; then
    echo "docs_api: ${#want[@]} curl calls in the doc, ${#got[@]} made (a curl in a loop, or a block that stopped early)"
fi
if [ $fail -gt 0 ]; then
    echo "---- output of the examples (last 40 lines)"
    tail -40 "$TMP/out"
fi
synthesis $((pass + fail)) $pass $fail
[ $fail -eq 0 ]
