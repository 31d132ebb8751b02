#!/usr/bin/env bash
# bench/gpu-gen-check.sh - the decoder's GPU check in one run: build the CUDA
# backend, the decoder ops' kernel parity, end-to-end parity of the CUDA
# decoder against the CPU backend, then the generation benchmark against HF
# transformers (fp16, static cache, generate) on the same card in the same
# run. Prints a table last; writes OUTDIR/gen-report.json and logs.
#
# What travels, and why the figures still stand (64 MiB per run):
#   The GGUF is 98 MB. What is carried is .deps/debs (the build's packages) and
#   .deps-gen/smollm2-4layers-v8192.gguf (13 MiB): the real file's first 4
#   layers (Q4_1), output norm and the first 8,192 rows of its token embedding
#   (Q8_0, also the LM head), made here by `bin/gen-gpu layers --vocab 8192`
#   (sh mk/fetch-gpu-deps.sh does it; small enough to travel beside the
#   encoder check's files, bench/gpu-all.sh).
#   - parity runs on that model: the CPU and CUDA backends on the same weights,
#     the fixture prompts' token ids (mod 8,192) plus prompts of 1..300 tokens;
#     greedy tokens from the device against the CPU's; batch invariance per
#     matmul_q path; decode-step graphs against plain launches;
#   - the speed figures run on a 30-layer, 49,152-token file built on the GPU
#     machine from the carried layers and embedding rows repeated: the real
#     model's shapes and block types, so the same bytes read and FLOPs per
#     token; speed does not depend on the values. The transformers peer is a
#     LlamaForCausalLM of SmolLM2-135M's configuration with random fp16 weights.
#
# How it runs with the device tool (from the repo root; see docs/benchmarks.md):
#   here:  sh mk/fetch-gpu-deps.sh            (fills .deps and .deps-gen, checks every carry fits)
#   run:   command  "bash bench/gpu-gen-check.sh"
#          carry    [".deps/debs", ".deps-gen"]
#          timeout_s 600
#   (or bench/gpu-all.sh: this check and the encoder's in one call)
# Everything comes back under $OUT: gpu-gen-check.log, gen-report.json,
# build.log, gpu-parity.log, sluice-gen.jsonl, peer-gen.json.
#
# Environment: as bench/gpu-check.sh (GPU_CHECK_BUDGET, GPU_CHECK_REHEARSE=1 for
# a machine without a GPU: CPU on both sides, tiny sizes; GPU_CHECK_ARCH;
# GPU_CHECK_ONLY with the stage names below).
# Exit status: 0 all passed and every target met; 1 a stage or parity check
# failed; 2 all passed but a performance target was missed.
set -u
export GPU_CHECK_LIB=1 GPU_CHECK_LOG=gpu-gen-check.log GPU_CHECK_TARGETS="${GPU_CHECK_TARGETS:-gen-gpu gpu-parity}" \
    GPU_CHECK_PARITY=decoder
# shellcheck source=bench/gpu-check.sh
source "$(dirname "$0")/gpu-check.sh" "$@"

SUB=${GPU_GEN_SUBSET:-.deps-gen/smollm2-4layers-v8192.gguf}
FULL=$WORK/smollm2-30layers-repeated.gguf
LLAMA_FIXTURE=tests/fixtures/llama_fixture.json
export SUB FULL LLAMA_FIXTURE

gen_models() {
    [ -f "$SUB" ] || { echo "no $SUB: run sh mk/fetch-gpu-deps.sh here and carry .deps-gen"; return 1; }
    [ "$REHEARSE" = 1 ] && { echo "rehearsal: the speed figures run on the 4-layer subset"; return 0; }
    "$BIN/gen-gpu" layers --from "$SUB" --layers 30 --vocab 49152 --out "$FULL"
}

gen_parity() {
    local dev=cuda steps=32
    [ "$REHEARSE" = 1 ] && dev=cpu steps=4
    "$BIN/gen-gpu" parity --model "$SUB" --fixture "$LLAMA_FIXTURE" --steps $steps --device $dev |
        tee -a "$OUTDIR/sluice-gen.jsonl"
    return "${PIPESTATUS[0]}"
}

# Decode steps replayed from CUDA graphs (the default), then the same launched
# op by op; greedy ids from the device either way.
gen_bench() {
    local rc
    if [ "$REHEARSE" = 1 ]; then
        "$BIN/gen-gpu" speed --model "$SUB" --device cpu --streams 1,2 --prompt 16 --new 4 | tee -a "$OUTDIR/sluice-gen.jsonl"
        return "${PIPESTATUS[0]}"
    fi
    "$BIN/gen-gpu" speed --model "$FULL" --streams 1,8,32,64,256 --prompt 128 --new 256 --graphs 1 |
        tee -a "$OUTDIR/sluice-gen.jsonl"
    rc=${PIPESTATUS[0]}
    "$BIN/gen-gpu" speed --model "$FULL" --streams 1,8,32,64 --prompt 128 --new 128 --graphs 0 |
        tee -a "$OUTDIR/sluice-gen.jsonl"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    # matmul_q's tensor-core threshold (ops.h mma_min_t, default 64) moved: tensor cores from 16 tokens,
    # and never (the GEMV for prefill too); each run also times the 2,048-token prefill
    SLUICE_CUDA_MMA_MIN_T=16 "$BIN/gen-gpu" speed --model "$FULL" --streams 32,64,256 --prompt 128 --new 64 |
        tee -a "$OUTDIR/sluice-gen.jsonl"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    SLUICE_CUDA_MMA_MIN_T=0 "$BIN/gen-gpu" speed --model "$FULL" --streams 64,256 --prompt 128 --new 64 |
        tee -a "$OUTDIR/sluice-gen.jsonl"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    return "$rc"
}

gen_peer() {
    command -v python3 >/dev/null || { echo "no python3"; return 1; }
    if [ "$REHEARSE" = 1 ]; then
        python3 bench/gen_gpu_peer.py --out "$OUTDIR/peer-gen.json" --device cpu --tiny --streams 1,2 --prompt 16 --new 4
    else
        python3 bench/gen_gpu_peer.py --out "$OUTDIR/peer-gen.json" --streams 1,8,32,64,256 --prompt 128 --new 256
    fi
}
export -f gen_models gen_parity gen_bench gen_peer

: >"$OUTDIR/sluice-gen.jsonl"
echo "sluice gpu-gen-check: budget ${BUDGET}s, out $OUTDIR$([ "$REHEARSE" = 1 ] && echo ', REHEARSAL (no GPU)')"
stage env 30 env_info
stage unpack 60 unpack
stage build 240 build
stage kernel-parity 90 kernel_parity
stage gen-models 30 gen_models
stage gen-parity 90 gen_parity
stage gen-bench 150 gen_bench
stage gen-peer 120 gen_peer

report_and_exit gpu-gen-check bench/gen_gpu_report.py --stages "$STAGES" --sluice "$OUTDIR/sluice-gen.jsonl" \
    --peer "$OUTDIR/peer-gen.json" --out "$OUTDIR/gen-report.json" --rehearse "$REHEARSE"
