#!/bin/sh
# Two `sluice serve` workers behind nginx and HAProxy (Debian packages) with
# the example configs packaging/nginx-sluice.conf and packaging/haproxy-sluice.cfg:
# for each balancer, checks that both workers answer through it, that a
# long-poll passes unbuffered, that a worker draining on SIGTERM costs no
# failed request (the balancer moves its 503s to the other worker), and runs
# sluice-bench through it; once against one worker directly (same run).
# usage: bench/lb_bench.sh [MODEL_DIR]   (after `make`; needs redis-server, curl
# and nginx or haproxy; a balancer not installed is skipped and said so)
# env: DURATION=5 CONCURRENCY=16 TOKENS=16 BALANCERS="nginx haproxy"
set -e
MODEL_DIR=${1:-models/all-minilm-l6-v2}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-16}
TOKENS=${TOKENS:-16}
for t in redis-server curl; do
    command -v $t >/dev/null 2>&1 || { echo "lb_bench: SKIP: $t not found"; exit 0; }
done
tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
NGINX=$(tool nginx) HAPROXY=$(tool haproxy) RUN=""
for b in ${BALANCERS:-nginx haproxy}; do
    case $b in
    nginx) [ -n "$NGINX" ] && RUN="$RUN nginx" || echo "lb_bench: nginx not found: skipped" ;;
    haproxy) [ -n "$HAPROXY" ] && RUN="$RUN haproxy" || echo "lb_bench: haproxy not found: skipped" ;;
    *) echo "lb_bench: unknown balancer $b"; exit 1 ;;
    esac
done
[ -n "$RUN" ] || { echo "lb_bench: SKIP: neither nginx nor haproxy found"; exit 0; }
[ -x bin/sluice ] && [ -x bin/sluice-bench ] || { echo "lb_bench: build first (make)"; exit 1; }
TMP=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
fail() { echo "lb_bench: FAIL: $*"; for f in "$TMP"/*.log; do echo "-- $f"; tail -5 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no --logfile "$TMP/redis.log" &
PIDS="$PIDS $!"
start_worker() { # 1 or 2: starts it, sets W1/W2, waits until ready
    rm -f "$TMP/port$1"
    bin/sluice serve --port 0 --port-file "$TMP/port$1" --device cpu --cpu-threads 1 --log-level warn \
        --redis "redis://127.0.0.1:$RPORT/0" --models "$MODEL_DIR" --preload all --drain-timeout-ms 3000 \
        2>>"$TMP/worker$1.log" &
    eval "W$1=$!"
    PIDS="$PIDS $!"
    i=0
    until [ -s "$TMP/port$1" ] && curl -sf "http://127.0.0.1:$(cat "$TMP/port$1")/readyz" >/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && fail "worker $1 not ready"; sleep 0.1
    done
}
start_worker 1
start_worker 2
start_nginx() { # the example config, addresses substituted
    mkdir -p "$TMP/nginx"
    sed -e "s/127.0.0.1:8081/127.0.0.1:$P1/" -e "s/127.0.0.1:8082/127.0.0.1:$P2/" \
        -e "s/listen 127.0.0.1:8080/listen 127.0.0.1:$LB/" packaging/nginx-sluice.conf >"$TMP/nginx/sluice.conf"
    cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    include $TMP/nginx/sluice.conf;
}
CONF
    "$NGINX" -t -q -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2>"$TMP/nginx-t.log" || fail "nginx -t: $(cat "$TMP/nginx-t.log")"
    "$NGINX" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2>>"$TMP/nginx.log" &
    LBPID=$!
    # nginx's X-Sluice-Worker is the upstream address
    TAG1=":$P1" TAG2=":$P2" VERSION=$("$NGINX" -v 2>&1 | cut -d' ' -f3)
}

start_haproxy() { # the example config after a global section, addresses substituted
    mkdir -p "$TMP/haproxy"
    { printf 'global\n    pidfile %s/haproxy/haproxy.pid\n\n' "$TMP"
      sed -e "s/127.0.0.1:8081/127.0.0.1:$P1/" -e "s/127.0.0.1:8082/127.0.0.1:$P2/" \
          -e "s/bind 127.0.0.1:8080/bind 127.0.0.1:$LB/" packaging/haproxy-sluice.cfg; } >"$TMP/haproxy/haproxy.cfg"
    "$HAPROXY" -c -q -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy-c.log" 2>&1 || fail "haproxy -c: $(cat "$TMP/haproxy-c.log")"
    "$HAPROXY" -db -f "$TMP/haproxy/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    LBPID=$!
    # HAProxy's X-Sluice-Worker is the server's name
    TAG1=w1 TAG2=w2 VERSION=haproxy/$("$HAPROXY" -v 2>&1 | head -1 | cut -d' ' -f3)
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null); workers: --device cpu --cpu-threads 1; sluice-bench --concurrency $CONCURRENCY --gen-tokens $TOKENS --duration $DURATION"
# One sluice-bench run; prints its table row: | load | requests/s | inputs/s |
# tokens/s | p50 | p90 | p99 | p99.9 | errors | ...
bench() { # label url
    load=$(cut -d" " -f1-3 /proc/loadavg)
    bin/sluice-bench --url "$2" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1 \
        --gen-tokens "$TOKENS" --vocab "$MODEL_DIR/vocab.txt" --metrics-url none --progress off \
        --json "$TMP/$1.json" >"$TMP/$1.txt" 2>&1 || fail "sluice-bench $1: $(tail -3 "$TMP/$1.txt")"
    line=$(grep '^| closed' "$TMP/$1.txt" | head -1)
    echo "$1: $line (load average before: $load)"
}
bench one-worker "http://127.0.0.1:$(cat "$TMP/port1")"

for lb in $RUN; do
    kill -0 "$W1" 2>/dev/null || start_worker 1 # drained by the previous round
    P1=$(cat "$TMP/port1") P2=$(cat "$TMP/port2") LB=$(free_port)
    start_$lb
    PIDS="$PIDS $LBPID"
    URL=http://127.0.0.1:$LB
    i=0
    until curl -sf "$URL/readyz" >/dev/null; do i=$((i + 1)); [ $i -gt 50 ] && fail "$lb not answering"; sleep 0.1; done
    echo "$lb: $VERSION"

    # Both workers serve through the balancer.
    seen=""
    for i in 1 2 3 4 5 6; do
        w=$(curl -s -o /dev/null -D - -H 'Content-Type: application/json' -d '{"input":"hello"}' "$URL/v1/embeddings" |
            tr -d '\r' | sed -n 's/^[Xx]-[Ss]luice-[Ww]orker: //p')
        seen="$seen $w"
    done
    echo "$seen" | grep -q "$TAG1" && echo "$seen" | grep -q "$TAG2" || fail "$lb: requests did not reach both workers:$seen"
    # A long-poll passes: a task's result waited for through the balancer.
    id=$(curl -sf -H 'Content-Type: application/json' -d '{"input":"a task"}' "$URL/v1/tasks" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
    [ -n "$id" ] || fail "POST /v1/tasks through $lb"
    curl -sf "$URL/v1/tasks/$id?wait=5" | grep -q '"state":"done"' || fail "GET /v1/tasks/$id?wait=5 through $lb"

    bench $lb-2-workers "$URL"
    # Drain: SIGTERM worker 1 while load runs through the balancer: no request fails.
    ( sleep 2; kill -TERM "$W1" ) &
    bench $lb-drain "$URL"
    errors=$(grep '^| closed' "$TMP/$lb-drain.txt" | head -1 | awk -F'|' '{ gsub(/ /, "", $10); print $10 }')
    [ "$errors" = 0 ] || fail "$lb: $errors failed requests while a worker drained"
    wait "$W1" 2>/dev/null || true
    kill -TERM "$LBPID" 2>/dev/null || true
    wait "$LBPID" 2>/dev/null || true
    echo "lb_bench: $lb: PASS (both workers served, long-poll through it, drain with no failed request)"
done
echo "lb_bench: PASS ($(echo $RUN | sed 's/ /, /'))"
