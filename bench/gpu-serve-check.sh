#!/usr/bin/env bash
# bench/gpu-serve-check.sh - `sluice serve` end to end on a GPU machine: build the
# whole binary with the CUDA backend from carried packages, serve the carried fp16
# copy of the model on CUDA (fp16, two runners, CUDA graphs: the serving defaults),
# send the fixture sentences over HTTP from 64 threads, compare every vector with
# the CPU backend's on the same weights, read the batch sizes from /metrics, then
# SIGTERM and expect a clean exit 0.
#
# Needs, beyond bench/gpu-check.sh's .deps: .deps/debs-serve (libmicrohttpd,
# hiredis, libssl-dev headers; `mk/fetch-gpu-deps.sh` fills it). The machine's
# own libcrypto.so.3 and libgnutls.so.30 are used. With the device tool:
#   command "bash bench/gpu-serve-check.sh", carry [".deps/debs", ".deps/debs-serve", ".deps/slim"]
# (the model: .deps/model-f16 where it is, else the packed .deps/slim/model-f16.tar.xz unpacked first)
# usage: bash bench/gpu-serve-check.sh [OUTDIR]   (default $OUT, else bench/out)
# GPU_SERVE_DEVICE=cpu rehearses everything but the GPU on a machine without one.
set -u
cd "$(dirname "$0")/.." || exit 1
OUTDIR=${1:-${OUT:-bench/out}}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu-serve-check.log") 2>&1
ROOT=/tmp/sluice-serve-root
rm -rf "$ROOT" && mkdir -p "$ROOT"
for f in .deps/debs/*.deb .deps/debs-serve/*.deb; do dpkg -x "$f" "$ROOT" || exit 1; done
LIB=$ROOT/usr/lib/x86_64-linux-gnu
crypto=$(ldconfig -p | awk '/libcrypto\.so\.3 /{print $NF; exit}')
[ -n "$crypto" ] && ln -sf "$crypto" "$LIB/libcrypto.so" || echo "no libcrypto.so.3 on this machine"
ldconfig -p | grep -q 'libgnutls\.so\.30' || echo "warning: no libgnutls.so.30 here (libmicrohttpd needs it)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
MODEL=.deps/model-f16
if [ ! -f "$MODEL/model.safetensors" ] && [ -f .deps/slim/model-f16.tar.xz ]; then
    rm -rf /tmp/sluice-model-f16 && mkdir -p /tmp/sluice-model-f16 &&
        { tar -xJf .deps/slim/model-f16.tar.xz -C /tmp/sluice-model-f16 2>/dev/null ||
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
                .deps/slim/model-f16.tar.xz /tmp/sluice-model-f16; } && MODEL=/tmp/sluice-model-f16/model-f16
fi
make=make
command -v make >/dev/null || make=$ROOT/usr/bin/make
B=build/gpu-serve/bin/sluice
echo "== build"
if ! $make -j"$(nproc)" CUDA=1 DEPS_ROOT="$ROOT" WARN="-Wall -Wextra" CUDA_ARCH='-gencode arch=compute_90,code=sm_90' \
        BUILD=build/gpu-serve BIN=build/gpu-serve/bin "$B" >"$OUTDIR/serve-build.log" 2>&1; then
    tail -30 "$OUTDIR/serve-build.log"
    echo "result: build FAILED"
    exit 1
fi
echo "== reference: the CPU backend on the same fp16 weights"
$B embed --device cpu --model "$MODEL" --file <(python3 -c '
import json
for l in open("tests/fixtures/embeddings.jsonl", encoding="utf-8"): print(json.loads(l)["text"])') \
    >/tmp/sluice-serve-ref.jsonl || { echo "result: reference FAILED"; exit 1; }
MODELS=/tmp/sluice-serve-models
rm -rf "$MODELS" && mkdir -p "$MODELS" && ln -s "$(cd "$MODEL" && pwd)" "$MODELS/minilm"
rm -f /tmp/sluice-serve-port
echo "== serve (${GPU_SERVE_DEVICE:-cuda}, defaults)"
$B serve --device "${GPU_SERVE_DEVICE:-cuda}" --redis none --models "$MODELS" --preload all --port 0 --port-file /tmp/sluice-serve-port \
    >"$OUTDIR/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 120); do
    [ -s /tmp/sluice-serve-port ] && curl -sf "http://127.0.0.1:$(cat /tmp/sluice-serve-port)/readyz" >/dev/null 2>&1 && break
    kill -0 $PID 2>/dev/null || break
    sleep 0.5
done
if ! [ -s /tmp/sluice-serve-port ]; then
    tail -20 "$OUTDIR/serve.log"
    echo "result: server did not start"
    exit 1
fi
PORT=$(cat /tmp/sluice-serve-port)
grep -m1 '"listening"' "$OUTDIR/serve.log"
curl -s "http://127.0.0.1:$PORT/readyz"; echo
echo "== 64 concurrent clients, 8 rounds of the 209 fixture sentences"
timeout 120 python3 bench/gpu_serve_client.py "$PORT" minilm /tmp/sluice-serve-ref.jsonl
crc=$?
echo "== SIGTERM"
kill -TERM $PID
wait $PID
src=$?
echo "server exit status: $src"
grep -c '"level":"error"' "$OUTDIR/serve.log" | sed 's/^/error log lines: /'
if [ $crc -eq 0 ] && [ $src -eq 0 ]; then echo "result: PASS"; exit 0; fi
echo "result: FAILED (client $crc, server $src)"
exit 1
