#!/bin/sh
# Redis queue A/B: this tree against another commit (default: main), the same
# bench/queue_bench.sh run in each, alternated ROUNDS times so both see the
# same machine load. The other commit is exported with `git archive` into a
# temporary folder and built there (only bin/bench-queue_bench). Prints the
# load average before each run; compare the "redis-server CPU" lines of
# neighbouring runs (docs/benchmarks.md, "Redis queue").
# usage: bench/queue_ab.sh [REF] [TASKS] [ROUNDS]     (from the repository root)
set -e
REF=${1:-main}
TASKS=${2:-100000}
ROUNDS=${3:-3}
OTHER=$(mktemp -d)
trap 'rm -rf "$OTHER"' EXIT
git archive "$REF" | tar -x -C "$OTHER"
echo "building $REF ($(git rev-parse --short "$REF")) in $OTHER"
make --no-print-directory -C "$OTHER" CUDA=0 bin/bench-queue_bench >/dev/null
make --no-print-directory CUDA=0 bin/bench-queue_bench >/dev/null
HERE=$(pwd)
i=1
while [ $i -le "$ROUNDS" ]; do
    for t in "$OTHER" "$HERE"; do
        if [ "$t" = "$HERE" ]; then name="this tree ($(git rev-parse --short HEAD))"; else name="$REF"; fi
        echo "### round $i: $name; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
        (cd "$t" && sh bench/queue_bench.sh "$TASKS" | grep -E 'workers=|redis-server CPU')
    done
    i=$((i + 1))
done
