#!/bin/sh
# `make run`: serve on defaults. Starts a local redis-server in the background
# (data in a temp dir, stopped when the server exits) unless one already
# answers on 127.0.0.1:6379, then runs `bin/sluice serve` in the foreground.
# usage: mk/run.sh [MODEL_DIR [serve flags...]]   (the models folder is MODEL_DIR's parent)
MODEL_DIR=${1:-models/all-minilm-l6-v2}
[ $# -gt 0 ] && shift # the rest are sluice serve flags
MODELS=${SLUICE_MODELS:-$(dirname "$MODEL_DIR")}
REDIS_PID=""
REDIS_DIR=""

redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
    else
        (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null
    fi
}

cleanup() {
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"
}

if redis_up; then
    echo "run: using the redis-server already on 127.0.0.1:6379" >&2
elif command -v redis-server >/dev/null 2>&1; then
    REDIS_DIR=$(mktemp -d /tmp/sluice-redis-XXXXXX)
    redis-server --port 6379 --bind 127.0.0.1 --dir "$REDIS_DIR" --save "" --appendonly yes \
        --logfile "$REDIS_DIR/redis.log" --daemonize no >/dev/null 2>&1 &
    REDIS_PID=$!
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    i=0
    while ! redis_up && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if redis_up; then echo "run: started redis-server on 127.0.0.1:6379 (data in $REDIS_DIR)" >&2
    else echo "run: redis-server did not come up; serving HTTP only (see $REDIS_DIR/redis.log)" >&2; fi
else
    echo "run: no redis-server found; serving HTTP only (make deps installs it)" >&2
fi

# Not exec: the trap above stops our redis-server when the server exits.
bin/sluice serve --models "$MODELS" "$@" &
SERVE_PID=$!
trap 'kill -TERM $SERVE_PID 2>/dev/null' INT TERM
wait $SERVE_PID
rc=$?
# a signal interrupted the first wait: wait for the graceful shutdown to finish
kill -0 $SERVE_PID 2>/dev/null && wait $SERVE_PID && rc=$?
exit $rc
