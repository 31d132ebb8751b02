#!/usr/bin/env bash
# bench/gpu-check.sh - the whole GPU check of sluice in one run: build the CUDA
# backend, kernel parity, end-to-end parity of the real model, then sluice
# against sentence-transformers (PyTorch, fp16) on the same GPU, same weights,
# same run, and the expand op's similarity top-k against torch.topk over the
# same matrix product, in bf16, fp16 and fp32; last, one bf16 forward pass of
# 1024 x 128 tokens under Nsight Compute (ncu), summed per kernel. Prints a table
# last; writes OUTDIR/gpu-check.json and logs.
#
# Made for a GPU machine with nvcc, the CUDA libraries, PyTorch and
# sentence-transformers but none of our Debian packages and no network: what
# the build needs travels in .deps/ (fill it here first: sh mk/fetch-gpu-deps.sh).
#
# How it runs with the device tool (from the repo root; see docs/benchmarks.md):
#   here:  sh mk/fetch-gpu-deps.sh            (checks what travels fits 64 MiB)
#   run:   command  "bash bench/gpu-check.sh"
#          carry    [".deps/debs", ".deps/slim"]
#          timeout_s 600
# (bench/gpu-all.sh runs this check and the decoder's in one call.) The model is
# .deps/model-f16 where it is (here), else the packed .deps/slim/model-f16.tar.xz
# is unpacked to /tmp/sluice-model-f16 first (tests/tools/slim_f16.py).
# Everything comes back under $OUT (8 files): gpu-check.log, gpu-check.json,
# build.log, gpu-parity.log, sluice.jsonl, st.json, profile.log, profile.json.
#
# usage: bash bench/gpu-check.sh [OUTDIR]        (default $OUT, else bench/out)
# Environment:
#   GPU_CHECK_BUDGET=540   seconds for the whole script; every stage has its own
#                          limit and none runs past the budget (the report is kept)
#   GPU_CHECK_REHEARSE=1   no GPU here: tiny shapes, sluice timed on the CPU,
#                          sentence-transformers on the CPU, no GEMM rate
#   GPU_CHECK_ARCH         nvcc -gencode flags (default sm_90 only: H100/H200)
#   GPU_CHECK_ONLY="..."   run only these stages (names as printed, e.g. "env unpack
#                          build kernel-parity e2e-parity" for a re-check after a fix);
#                          the others are reported as skipped
# Exit status: 0 every stage passed and every target met; 1 a stage or parity
# check failed; 2 all passed but a performance target was missed.
# Each stage is guarded: a failure is reported and the next stage still runs. The
# profile stage is information only: its failure (no ncu, no permission to read
# the GPU's counters) is reported but does not change the exit status.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
OUTDIR=${1:-${OUT:-bench/out}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
BUDGET=${GPU_CHECK_BUDGET:-540}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
ONLY=${GPU_CHECK_ONLY:-}
ARCH=${GPU_CHECK_ARCH:--gencode arch=compute_90,code=sm_90}
MODEL=${GPU_CHECK_MODEL:-.deps/model-f16}
if [ -z "${GPU_CHECK_MODEL:-}" ] && [ "${GPU_CHECK_LIB:-0}" != 1 ] && [ ! -f "$MODEL/model.safetensors" ] &&
    [ -f .deps/slim/model-f16.tar.xz ]; then
    rm -rf /tmp/sluice-model-f16 && mkdir -p /tmp/sluice-model-f16 &&
        { tar -xJf .deps/slim/model-f16.tar.xz -C /tmp/sluice-model-f16 2>/dev/null ||
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
                .deps/slim/model-f16.tar.xz /tmp/sluice-model-f16; } && MODEL=/tmp/sluice-model-f16/model-f16
fi
FIXTURE=tests/fixtures/embeddings.jsonl
WORK=${GPU_CHECK_WORK:-/tmp/sluice-gpu-check}
BUILD=build/gpu-check          # ignored; kept between calls on a warm machine
BIN=$BUILD/bin
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=20                     # seconds kept for the report
JOBS=$(nproc 2>/dev/null || echo 4)

rm -rf "$WORK" && mkdir -p "$WORK/root" "$WORK/dump"
STAGES=$WORK/stages.tsv
: >"$STAGES"
: >"$OUTDIR/sluice.jsonl"
exec > >(tee "$OUTDIR/${GPU_CHECK_LOG:-gpu-check.log}") 2>&1
TEE_PID=$!

# record NAME STATUS SECONDS NOTE   (STATUS: pass fail timeout skip)
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STAGES"; }

# stage NAME LIMIT_S FUNCTION [ARGS...]: run under a timeout clipped to the budget.
stage() {
    local name=$1 limit=$2 left rc t0 st
    shift 2
    if [ -n "$ONLY" ] && ! printf ' %s ' "$ONLY" | grep -q " $name "; then
        echo "=== $name: not selected (GPU_CHECK_ONLY)"
        record "$name" skip 0 "not selected"
        return 1
    fi
    left=$((DEADLINE - RESERVE - $(date +%s)))
    if [ "$left" -lt 10 ]; then
        echo "=== $name: skipped, the ${BUDGET}s budget is spent"
        record "$name" skip 0 "budget spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit}s, $(date -u +%H:%M:%S) UTC)"
    t0=$(date +%s)
    timeout -k 5 "$limit" bash -c '"$@"' stage "$@"
    rc=$?
    case $rc in 0) st=pass ;; 124 | 137) st=timeout ;; *) st=fail ;; esac
    record "$name" "$st" $(($(date +%s) - t0)) "exit $rc"
    echo "=== $name: $st ($(($(date +%s) - t0)) s)"
    return $rc
}

# ---- stages (exported: each runs in its own bash under timeout) ----

env_info() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "host: $(uname -srm), $(nproc) cpus"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
            --format=csv || true
    else
        echo "nvidia-smi: not found (no GPU here)"
    fi
    local nvcc
    nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
    echo "nvcc: ${nvcc:-not found}"
    [ -n "$nvcc" ] && "$nvcc" --version | tail -2
    echo "cc: $(command -v cc || command -v gcc || echo none) $( (cc --version || gcc --version) 2>/dev/null | head -1)"
    echo "make: $(command -v make || echo 'none (the carried one is used)')"
    echo "python3: $(command -v python3 || echo none) $(python3 --version 2>&1)"
    echo "tree: $(du -sh --exclude=.git . 2>/dev/null | cut -f1), model: $MODEL ($(du -sh "$MODEL" 2>/dev/null | cut -f1))"
}

unpack() {
    local n=0 f
    for f in .deps/debs/*.deb; do
        [ -f "$f" ] || continue
        if command -v dpkg >/dev/null; then
            dpkg -x "$f" "$WORK/root" || return 1
        else # no dpkg: a .deb is an ar archive holding data.tar.*
            (mkdir -p "$WORK/ar" && cd "$WORK/ar" && rm -f data.tar.* && ar x "$ROOT/$f" &&
                tar -xf data.tar.* -C "$WORK/root") || return 1
        fi
        n=$((n + 1))
    done
    echo "unpacked $n packages into $WORK/root"
    [ "$n" -gt 0 ] || { echo "no .deb in .deps/debs: run sh mk/fetch-gpu-deps.sh here first and carry .deps"; return 1; }
    ls "$WORK/root/usr/include/jansson.h" "$WORK/root/usr/include/utf8proc.h" \
       "$WORK/root/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h" >/dev/null
}

# Where cuBLAS and the static CUDA runtime live (the Makefile looks in
# $CUDA_HOME/lib64); when they sit elsewhere, point the link there.
cuda_link_env() {
    local nvcc home lib d
    nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || return 0
    home=${nvcc%/bin/nvcc}
    [ -e "$home/lib64/libcublas.so" ] && [ -e "$home/lib64/libcudart_static.a" ] && return 0
    echo "cuBLAS or libcudart_static.a is not in $home/lib64; looking elsewhere" >&2
    mkdir -p "$WORK/cudalib"
    for lib in libcublas libcublasLt libcudart_static; do
        d=$(find "$home/" /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
            -name "$lib.so*" -o -name "$lib.a" 2>/dev/null | sort | head -1)
        [ -n "$d" ] || { echo "  $lib: not found" >&2; continue; }
        echo "  $lib: $d" >&2
        case $d in *.a) ln -sf "$d" "$WORK/cudalib/$lib.a" ;; *) ln -sf "$d" "$WORK/cudalib/$lib.so" ;; esac
        echo "-L$WORK/cudalib -Wl,-rpath,$(dirname "$d")"
    done | sort -u | tr '\n' ' '
}

build() {
    local make=make cc=cc extra targets t rc
    command -v make >/dev/null || make=$WORK/root/usr/bin/make
    command -v cc >/dev/null || cc=gcc
    extra=$(cuda_link_env)
    # gpu-parity: bench/gpu_parity.c linked against engine + kernels only
    targets=""
    for t in ${GPU_CHECK_TARGETS:-gpu-bench gpu-parity}; do targets="$targets $BIN/$t"; done # bench/gpu-gen-check.sh: its own
    echo "make $targets  (CUDA_ARCH=$ARCH, DEPS_ROOT=$WORK/root, $JOBS jobs)"
    LDFLAGS="$extra" "$make" -k -j"$JOBS" CC="$cc" CUDA=1 DEPS_ROOT="$WORK/root" CUDA_ARCH="$ARCH" \
        BUILD="$BUILD" BIN="$BIN" $targets >"$OUTDIR/build.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        # A newer host compiler can warn where ours does not: say so, then try
        # again without -Werror so the GPU run still happens.
        echo "strict build failed (exit $rc); the first errors:"
        grep -m 15 -E 'error|Error' "$OUTDIR/build.log"
        local nvflags
        nvflags=$("$make" --no-print-directory -f Makefile -f - print-nvccflags CUDA=1 CUDA_ARCH="$ARCH" \
            <<<$'print-nvccflags:\n\t@echo $(NVCCFLAGS)' 2>/dev/null | sed 's/,-Werror//g; s/-Werror all-warnings//; s/-Werror[^ ]*//g')
        echo "retrying without -Werror (NVCCFLAGS=$nvflags)"
        echo "==== relaxed build" >>"$OUTDIR/build.log"
        LDFLAGS="$extra" "$make" -k -j"$JOBS" CC="$cc" CUDA=1 DEPS_ROOT="$WORK/root" CUDA_ARCH="$ARCH" \
            WARN="-Wall -Wextra" ${nvflags:+NVCCFLAGS="$nvflags"} BUILD="$BUILD" BIN="$BIN" $targets \
            >>"$OUTDIR/build.log" 2>&1
        echo "relaxed build: exit $?"
        tail -n 25 "$OUTDIR/build.log"
    fi
    for t in $targets; do [ -x "$t" ] && echo "built $t" || { echo "MISSING $t"; rc=1; }; done
    return $rc
}

kernel_parity() {
    [ -x "$BIN/gpu-parity" ] || { echo "no $BIN/gpu-parity"; return 1; }
    "$BIN/gpu-parity" ${GPU_CHECK_PARITY:-} >"$OUTDIR/gpu-parity.log" 2>&1 # families (default: all)
    local rc=$?
    tail -n 40 "$OUTDIR/gpu-parity.log"
    return $rc
}

e2e_parity() {
    [ -x "$BIN/gpu-bench" ] || { echo "no $BIN/gpu-bench"; return 1; }
    "$BIN/gpu-bench" parity --model "$MODEL" --fixture "$FIXTURE" --dump "$WORK/dump" | tee -a "$OUTDIR/sluice.jsonl"
    return "${PIPESTATUS[0]}"
}

sluice_bench() { # dtype
    [ -x "$BIN/gpu-bench" ] || { echo "no $BIN/gpu-bench"; return 1; }
    if [ "$REHEARSE" = 1 ]; then
        "$BIN/gpu-bench" bench --model "$MODEL" --device cpu --dtype fp32 --shapes 1x16,1x32,4x64 --mixed-limit 8 \
            --runners 2 \
            --fixture "$FIXTURE" --seconds 0.1 | tee -a "$OUTDIR/sluice.jsonl"
    else
        "$BIN/gpu-bench" bench --model "$MODEL" --device cuda --dtype "$1" \
            --shapes 1x16,1x32,32x128,256x128,1024x128 --fixture "$FIXTURE" --seconds 0.5 --runners 2 |
            tee -a "$OUTDIR/sluice.jsonl"
    fi
    return "${PIPESTATUS[0]}"
}

topk_bench() { # dtype: the expand op's similarity GEMM + top-k
    [ -x "$BIN/gpu-bench" ] || { echo "no $BIN/gpu-bench"; return 1; }
    if [ "$REHEARSE" = 1 ]; then
        "$BIN/gpu-bench" topk --device cpu --dtype fp32 --sizes 5000,20000 --nq 1,16 --k 10,100 --seconds 0.1 |
            tee -a "$OUTDIR/sluice.jsonl"
    else
        "$BIN/gpu-bench" topk --device cuda --dtype "$1" --sizes "$TOPK_SIZES" --nq 1,256 --k 10,100 --seconds 0.3 |
            tee -a "$OUTDIR/sluice.jsonl"
    fi
    return "${PIPESTATUS[0]}"
}

st_bench() {
    command -v python3 >/dev/null || { echo "no python3"; return 1; }
    if [ "$REHEARSE" = 1 ]; then
        python3 bench/st_gpu_bench.py --model "$MODEL" --out "$OUTDIR/st.json" --fixture "$FIXTURE" \
            --dump "$WORK/dump" --device cpu --skip-gemm --fp32 --shapes 1x16,1x32,4x64 --seconds 0.1 \
            --mixed-limit 8 --topk-sizes 5000,20000 --topk-nq 1,16 --topk-k 10,100
    else
        python3 bench/st_gpu_bench.py --model "$MODEL" --out "$OUTDIR/st.json" --fixture "$FIXTURE" \
            --dump "$WORK/dump" --shapes 1x16,1x32,32x128,256x128,1024x128 --seconds 0.5 \
            --topk-sizes "$TOPK_SIZES" --topk-nq 1,256 --topk-k 10,100
    fi
}

# One bf16 forward pass of 1024 x 128 tokens without graphs under ncu: every
# kernel's duration (one metric, so one pass per kernel; clocks and caches left
# as they run), summed per kernel by bench/ncu_table.py. The weight conversion
# kernels of the load run before the pass and are left out of the table. Where
# ncu cannot profile (no tool, no permission to read the GPU's counters), Nsight
# Systems' kernel trace gives the same table if nsys is there.
PROFILE_ARGS="profile --model $MODEL --device cuda --dtype bf16 --n 1024 --len 128"
profile_ncu() {
    [ -x "$BIN/gpu-bench" ] || { echo "no $BIN/gpu-bench"; return 1; }
    local ncu nsys rc
    if [ "$REHEARSE" = 1 ]; then # no GPU: the subcommand only, and the table from a made-up ncu CSV
        "$BIN/gpu-bench" profile --model "$MODEL" --device cpu --dtype fp32 --n 4 --len 16 || return 1
        python3 bench/ncu_table.py --selftest --json "$OUTDIR/profile.json"
        return $?
    fi
    : >"$OUTDIR/profile.log"
    ncu=$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu \
        /usr/local/cuda/nsight-compute*/ncu 2>/dev/null | sort -V | tail -1)
    if [ -n "$ncu" ] && [ -x "$ncu" ]; then
        echo "ncu: $ncu ($("$ncu" --version 2>&1 | tail -1))"
        # shellcheck disable=SC2086
        timeout 40 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
            -f -o "$WORK/profile" "$BIN/gpu-bench" $PROFILE_ARGS >>"$OUTDIR/profile.log" 2>&1
        rc=$?
        grep -E '^\{|==ERROR==|==WARNING==|ERR_NVGPUCTRPERM' "$OUTDIR/profile.log" | head -n 12
        if [ $rc -eq 0 ] && [ -f "$WORK/profile.ncu-rep" ]; then
            # per launch, in base units, for our own sums; ncu's per-kernel summary into profile.log
            "$ncu" -i "$WORK/profile.ncu-rep" --csv --page details --print-units base >"$WORK/profile.csv" \
                2>>"$OUTDIR/profile.log"
            "$ncu" -i "$WORK/profile.ncu-rep" --print-summary per-kernel >>"$OUTDIR/profile.log" 2>&1
            python3 bench/ncu_table.py "$WORK/profile.csv" --json "$OUTDIR/profile.json" \
                --title "ncu: one bf16 forward pass, 1024 x 128 tokens, no graphs" && return 0
            echo "the ncu CSV gave no table; the end of ncu's own per-kernel summary:"
            tail -n 40 "$OUTDIR/profile.log"
        else
            echo "ncu: exit $rc, no report (profile.log has its output)"
            tail -n 5 "$OUTDIR/profile.log"
        fi
    else
        echo "ncu: not found (PATH, /opt/nvidia/nsight-compute/*/, /usr/local/cuda)"
    fi
    nsys=$(command -v nsys || ls -d /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null |
        sort -V | tail -1)
    [ -n "$nsys" ] && [ -x "$nsys" ] || { echo "nsys: not found either; no profile"; return 1; }
    echo "falling back to nsys: $nsys ($("$nsys" --version 2>&1 | tail -1))"
    # shellcheck disable=SC2086
    "$nsys" profile --trace=cuda --sample=none --cpuctxsw=none --force-overwrite=true -o "$WORK/profile-nsys" \
        "$BIN/gpu-bench" $PROFILE_ARGS >>"$OUTDIR/profile.log" 2>&1 || { echo "nsys profile failed"; tail -n 5 "$OUTDIR/profile.log"; return 1; }
    "$nsys" stats --report cuda_gpu_kern_sum --format csv --force-export=true "$WORK/profile-nsys.nsys-rep" \
        >"$WORK/profile-nsys.csv" 2>>"$OUTDIR/profile.log" || { echo "nsys stats failed"; return 1; }
    python3 bench/ncu_table.py "$WORK/profile-nsys.csv" --json "$OUTDIR/profile.json" \
        --title "nsys: one bf16 forward pass, 1024 x 128 tokens, no graphs"
}

TOPK_SIZES=${GPU_CHECK_TOPK_SIZES:-20000,1000000} # expand: the vocab-sized and a 1M-row index
export ROOT OUTDIR MODEL FIXTURE WORK BUILD BIN ARCH JOBS REHEARSE TOPK_SIZES PROFILE_ARGS
export -f env_info unpack cuda_link_env build kernel_parity e2e_parity sluice_bench topk_bench st_bench profile_ncu
export LD_LIBRARY_PATH="$WORK/root/usr/lib/x86_64-linux-gnu:$WORK/root/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# report_and_exit NAME SCRIPT ARGS...: the table (python3 SCRIPT ARGS; without
# python3 the raw stage list), then exit with its status.
report_and_exit() {
    local name=$1 rc
    shift
    echo "=== report"
    if command -v python3 >/dev/null; then
        python3 "$@"
        rc=$?
    else
        cat "$STAGES"
        rc=1
        grep -qv "	pass	" "$STAGES" || rc=0
    fi
    echo "$name: exit $rc after $(($(date +%s) - START)) s"
    exec >/dev/null 2>&1 # let tee see the end of its input and finish the log
    wait "$TEE_PID" 2>/dev/null
    exit $rc
}

# Sourced by bench/gpu-gen-check.sh (GPU_CHECK_LIB=1): the set-up and stage
# functions above serve it; it runs its own stages and report.
[ "${GPU_CHECK_LIB:-0}" = 1 ] && return 0

echo "sluice gpu-check: budget ${BUDGET}s, out $OUTDIR$([ "$REHEARSE" = 1 ] && echo ', REHEARSAL (no GPU)')"
stage env 30 env_info
stage unpack 60 unpack
stage build 300 build
stage kernel-parity 120 kernel_parity
stage e2e-parity 120 e2e_parity
if [ "$REHEARSE" = 1 ]; then
    stage bench-cpu 60 sluice_bench fp32
else
    stage bench-bf16 90 sluice_bench bf16
    stage bench-fp16 90 sluice_bench fp16
    stage bench-fp32 90 sluice_bench fp32
fi
stage sentence-transformers 180 st_bench
if [ "$REHEARSE" = 1 ]; then
    stage topk-cpu 60 topk_bench fp32
else
    stage topk-bf16 60 topk_bench bf16
    stage topk-fp16 60 topk_bench fp16
    stage topk-fp32 60 topk_bench fp32
fi
stage profile 60 profile_ncu

# ---- report: the table last ----
report_and_exit gpu-check bench/gpu_report.py --stages "$STAGES" --outdir "$OUTDIR" --log "$OUTDIR/gpu-check.log" \
    --model "$MODEL" --rehearse "$REHEARSE"
