#!/bin/sh
# The decoder on the CPU against transformers fp32 in the same run, same
# prompts (deterministic ids), same thread count: prefill tokens/s and decode
# tokens/s at 1, 8 and 32 sequences, with the box's sgemm rate and the load
# average before each side (this box is shared: read ratios, not absolutes).
# llama.cpp's llama-bench on the same GGUF runs last when it has been built
# (bench/llamacpp_build.sh: ~10 minutes of both cores, cached under build/).
#
# usage: bench/gen_cpu_compare.sh [GGUF] [THREADS]
#   PYTHON=/path/to/python (default: build/venv-fixtures, else /work/venv-fixtures)
#   STEPS=64 (ours) PEER_STEPS=16 (transformers) PROMPT=128
#   CPUTIME=1: both sides on one thread timed by process CPU time (steadier on a busy box)
set -e
GGUF=${1:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
STEPS=${STEPS:-64}
PEER_STEPS=${PEER_STEPS:-16}
PROMPT=${PROMPT:-128}
OURS_CPU=""; PEER_CPU=""
if [ "${CPUTIME:-0}" = 1 ]; then THREADS=1; OURS_CPU="--cpu-time 1"; PEER_CPU="--cpu-time"; fi
if [ -z "$PYTHON" ]; then
    for p in build/venv-fixtures/bin/python /work/venv-fixtures/bin/python; do
        [ -x "$p" ] && PYTHON=$p && break
    done
fi
[ -f "$GGUF" ] || { echo "gen_cpu_compare: $GGUF is missing (run make model)"; exit 1; }
make -s CUDA=0 bin/bench-gen_cpu
echo "== $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== sluice (cpu backend, $THREADS threads), load $(cut -d' ' -f1-3 /proc/loadavg)"
bin/bench-gen_cpu --model "$GGUF" --threads "$THREADS" --prompt "$PROMPT" --steps "$STEPS" $OURS_CPU
if [ -n "$PYTHON" ]; then
    echo "== transformers fp32 ($THREADS threads), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$PYTHON" bench/gen_cpu_peer.py "$GGUF" --threads "$THREADS" --prompt "$PROMPT" --steps "$PEER_STEPS" $PEER_CPU 2>/dev/null
else
    echo "== transformers: no Python with torch/transformers/gguf (make fixtures builds build/venv-fixtures)"
fi
LLAMA_BENCH=${LLAMA_BENCH:-build/llama.cpp/build/bin/llama-bench}
if [ -x "$LLAMA_BENCH" ]; then
    echo "== llama.cpp llama-bench ($THREADS threads; prefill pp$PROMPT, decode tg64), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$LLAMA_BENCH" -m "$GGUF" -t "$THREADS" -p "$PROMPT" -n 64 -r 3 2>/dev/null
else
    echo "== llama.cpp: not built (sh bench/llamacpp_build.sh)"
fi
echo "== done, load $(cut -d' ' -f1-3 /proc/loadavg)"
