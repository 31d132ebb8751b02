#!/bin/bash
# tests/test_docs_api.sh - every curl example in docs/api.md works as written.
#
# Starts a real redis-server and `sluice serve` (CPU backend, the real model)
# on free loopback ports, takes the curl commands of the doc's code blocks
# (```sh and untagged ones alike) in order (other commands there, `make run`
# say, are not run), points their URLs
# (localhost:8080, 127.0.0.1:8080) at the live server, runs them one after
# another in one bash (so a variable one sets is there for the next) and
# checks the HTTP status each gets against the doc:
#   - a marker `# -> NNN` at the end of the command states its status
#     (`curl -s localhost:8080/v1/embeddings -d '{"input": ""}'   # -> 400`);
#   - a curl without one is an example of success: it must get a 2xx;
#   - an id written shortened with "..." in a URL (`/v1/tasks/5f0c...`)
#     stands for the last "id" an earlier example was answered with.
# Every curl of every code block must have run and be answered as shown: an
# example found but not run (or a count that does not add up) is a failure.
# One line per example, then a Criterion-style synthesis line that
# tests/run.sh counts.
#
# usage: tests/test_docs_api.sh [DOC]      (run from the repository root)
# environment: SLUICE_BIN (bin/sluice), SLUICE_TEST_MODEL (models/all-minilm-l6-v2),
#   SLUICE_REDIS_SERVER (redis-server)
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
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ]; }
PORT=""
for _ in $(seq 1 600); do
    [ -s "$TMP/port" ] && PORT=$(cat "$TMP/port") && ready && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ] || ! ready; then
    echo "docs_api: sluice serve did not become ready; its log:"
    tail -20 "$TMP/serve.log"
    [ -n "$PORT" ] && curl -s "http://127.0.0.1:$PORT/readyz"
    echo
    synthesis 1 0 1
    exit 1
fi

# ---- the examples: the script to run, and the expected statuses (line:status)
awk -v port="$PORT" -v script="$TMP/examples.sh" -v expect="$TMP/expected" '
    function flush(   n, m, s, rest, i, st) {
        if (logical == "") return
        # curl as a command word (at the start, after ; & | ( or a space)
        n = 0; s = logical
        while (match(s, /(^|[;&|( ])curl[ \t]/)) { n++; s = substr(s, RSTART + RLENGTH) }
        if (n > 0) {
            print "# doc line " first >> script
            print text >> script
            m = 0; rest = logical
            while (match(rest, /#[ \t]*(->|=>)[ \t]*[1-5][0-9][0-9]/)) {
                st = substr(rest, RSTART, RLENGTH); sub(/.*[^0-9]/, "", st)
                print first ":" st >> expect
                m++; rest = substr(rest, RSTART + RLENGTH)
            }
            for (i = m; i < n; i++) print first ":2xx" >> expect
        }
        logical = ""; text = ""
    }
    /^[ \t]*```/ {
        if (inblock) { flush(); inblock = 0; next }
        inblock = 1
        next
    }
    inblock {
        line = $0
        gsub(/(http:\/\/)?(localhost|127\.0\.0\.1):8080/, "http://127.0.0.1:" port, line)
        if (logical == "") first = NR
        logical = logical " " line
        text = text (text == "" ? "" : "\n") line
        if (line !~ /\\$/) flush()
    }
' "$DOC"
[ -s "$TMP/expected" ] || { echo "docs_api: no curl example in $DOC"; synthesis 1 0 1; exit 1; }

# Every curl records the status of its last answer (after 100s and redirects)
# and the first "id" in its answer; "<id>..." in an argument becomes that id.
cat >"$TMP/run.sh" <<'PROLOGUE'
curl() {
    local hdr body rc st a id args=()
    hdr=$(mktemp "$DOCS_TMP/hdr.XXXXXX")
    body=$(mktemp "$DOCS_TMP/body.XXXXXX")
    id=$(cat "$DOCS_TMP/last_id" 2>/dev/null)
    for a in "$@"; do
        if [[ $a =~ ^(.*/)[0-9A-Za-z_-]*\.\.\.(.*)$ ]]; then a="${BASH_REMATCH[1]}$id${BASH_REMATCH[2]}"; fi
        args+=("$a")
    done
    command curl -sS --max-time 60 -D "$hdr" "${args[@]}" | tee "$body"
    rc=${PIPESTATUS[0]}
    st=$(grep -a '^HTTP/' "$hdr" | tail -1 | awk '{print $2}')
    echo "${st:-000}" >>"$DOCS_TMP/statuses"
    id=$(grep -ao '"id" *: *"[^"]*"' "$body" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
    [ -n "$id" ] && echo "$id" >"$DOCS_TMP/last_id"
    rm -f "$hdr" "$body"
    return "$rc"
}
PROLOGUE
cat "$TMP/examples.sh" >>"$TMP/run.sh"
: >"$TMP/statuses"
DOCS_TMP=$TMP timeout 600 bash "$TMP/run.sh" >"$TMP/out" 2>&1

# ---- compare, example by example
mapfile -t want <"$TMP/expected"
mapfile -t got <"$TMP/statuses"
pass=0
fail=0
for i in "${!want[@]}"; do
    line=${want[$i]%%:*}
    st=${want[$i]#*:}
    g=${got[$i]:-none}
    cmd=$(sed -n "${line}p" "$DOC" | sed 's/^[ \t]*//' | cut -c1-100)
    if [ "$g" = "$st" ] || { [ "$st" = 2xx ] && [[ $g =~ ^2[0-9][0-9]$ ]]; }; then
        echo "[PASS] $DOC:$line -> $g: $cmd"
        pass=$((pass + 1))
    else
        echo "[FAIL] $DOC:$line: the doc shows $st, the server answered $g: $cmd"
        fail=$((fail + 1))
    fi
done
if [ "${#got[@]}" -ne "${#want[@]}" ]; then
    echo "[FAIL] docs_api: ${#want[@]} curl calls in the doc, ${#got[@]} made (a curl in a loop or a function?)"
    fail=$((fail + 1))
fi
# Counted apart from the extraction above: every curl as a command word in a code
# block is an example, and each must have been one of those run.
found=$(awk '/^[ \t]*```/ { inblock = !inblock; next } inblock' "$DOC" | grep -oE '(^|[;&|( ])curl[ \t]' | wc -l)
if [ "$found" -ne "${#want[@]}" ]; then
    echo "[FAIL] docs_api: $found curl calls in the code blocks of $DOC, ${#want[@]} examples were taken from them"
    fail=$((fail + 1))
fi
if [ $fail -gt 0 ]; then
    echo "---- output of the examples (last 40 lines)"
    tail -40 "$TMP/out"
    echo
fi
synthesis $((pass + fail)) $pass $fail
[ $fail -eq 0 ]
