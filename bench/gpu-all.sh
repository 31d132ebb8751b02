#!/usr/bin/env bash
# bench/gpu-all.sh - both GPU checks in one device call, each under its own
# budget: first the decoder's (bench/gpu-gen-check.sh: build of every GPU
# target, decoder kernel parity, end-to-end parity, generation speed with and
# without graphs, transformers), then the encoder's (bench/gpu-check.sh, which
# finds the build done). A part that overruns is killed at its budget plus a
# grace period (30 s) and the next part still runs: 560 s at worst.
#
# How it runs with the device tool (from the repo root):
#   here:  PATH=/work/venv-fixtures/bin:$PATH sh mk/fetch-gpu-deps.sh
#          (fills .deps and .deps-gen and prints every carry's size; about 49 MiB here)
#   run:   command   "bash bench/gpu-all.sh"
#          carry     [".deps/debs", ".deps/slim", ".deps-gen"]
#          timeout_s 600
# The decoder's files are the 13 MiB subset of the GGUF; the encoder's model is
# the packed .deps/slim/model-f16.tar.xz (tests/tools/slim_f16.py says what it
# holds), unpacked by bench/gpu-check.sh.
#
# Output: this script's log to $OUT/gpu-all.log, both checks' logs and reports
# packed in $OUT/gpu-all-logs.tar.gz (the device tool returns at most 8 files),
# and both reports repeated at the end of stdout.
# Environment: GPU_ALL_GEN_BUDGET (default 330 s), GPU_ALL_ENC_BUDGET (170 s),
# GPU_CHECK_REHEARSE=1 as in the two checks (no GPU: tiny CPU runs).
# Exit status: the larger of the two checks' (0 passed, 2 a target missed,
# 1 a failure); 1 when a part was killed.
set -u
cd "$(dirname "$0")/.." || exit 1
OUTDIR=${1:-${OUT:-bench/out}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
GEN_BUDGET=${GPU_ALL_GEN_BUDGET:-330}
ENC_BUDGET=${GPU_ALL_ENC_BUDGET:-170}
W=/tmp/sluice-gpu-all
rm -rf "$W" && mkdir -p "$W/gen" "$W/enc"
exec > >(tee "$OUTDIR/gpu-all.log") 2>&1
TEE_PID=$!
START=$(date +%s)

echo "sluice gpu-all: decoder check ${GEN_BUDGET}s, then encoder check ${ENC_BUDGET}s"
# What travelled: the tree (tracked and untracked files, as the tool sends them) and the carried paths.
tree=$(du -sb --exclude=.git --exclude=.deps --exclude=.deps-gen --exclude=build . 2>/dev/null | cut -f1)
carried=$(du -sb .deps/debs .deps/slim .deps-gen 2>/dev/null | awk '{s += $1} END {print s + 0}')
awk -v t="${tree:-0}" -v c="$carried" 'BEGIN { printf "carry (as measured here): tree %.1f MiB + .deps/debs .deps/slim .deps-gen %.1f MiB = %.1f MiB (limit 64)\n",
    t / 1048576, c / 1048576, (t + c) / 1048576 }'

# part NAME BUDGET SCRIPT: one check with its budget, killed 30 s past it.
worst=0
part() {
    local name=$1 budget=$2 script=$3 rc
    echo "=== part $name (budget ${budget}s, at $(($(date +%s) - START)) s)"
    GPU_CHECK_BUDGET=$budget GPU_CHECK_TARGETS="gen-gpu gpu-parity gpu-bench" \
        timeout -k 10 $((budget + 30)) bash "$script" "$W/$name"
    rc=$?
    case $rc in 124 | 137) echo "=== part $name: killed after $((budget + 30)) s"; rc=1 ;; esac
    echo "=== part $name: exit $rc"
    if [ $rc -eq 2 ]; then
        [ $worst -eq 0 ] && worst=2
    elif [ $rc -ne 0 ]; then
        worst=1
    fi
    return 0
}
part gen "$GEN_BUDGET" bench/gpu-gen-check.sh
part enc "$ENC_BUDGET" bench/gpu-check.sh

# Both reports again (the device tool keeps the end of the output).
for f in "$W/gen/gpu-gen-check.log" "$W/enc/gpu-check.log"; do
    [ -f "$f" ] || continue
    echo "=== $(basename "$f"): report"
    sed -n '/^=== report/,$p' "$f"
done
tar -czf "$OUTDIR/gpu-all-logs.tar.gz" -C "$W" gen enc 2>/dev/null
echo "gpu-all: exit $worst after $(($(date +%s) - START)) s (logs: gpu-all-logs.tar.gz)"
exec >/dev/null 2>&1 # let tee see the end of its input and finish the log
wait "$TEE_PID" 2>/dev/null
exit $worst
