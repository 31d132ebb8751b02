#!/bin/sh
# bench/expand_bench.sh - term expansion's similarity top-k on the CPU against faiss-cpu
# IndexFlatIP, on the same vectors, the same queries and the same threads, in one run.
#
#   sh bench/expand_bench.sh [MODEL_DIR]        (default models/all-minilm-l6-v2)
#
# Indexes: the model's vocabulary index (~21,800 terms, the expand cache that `sluice expand`
# writes beside the model; built first if missing) and 1,000,000 random unit vectors of the
# model's width (bench/out/expand/, made once). Queries are index rows (row i*7919 mod N), sent
# in batches of 64 (a micro-batch) and of 1 (a lone request); k = 10 and 100. Each engine does
# an untimed pass, then REPS timed passes; the two engines alternate ROUNDS times and each keeps
# its best pass (the machine may be shared). Two measures: queries per second of wall time, and
# queries per CPU-second of the whole process (all its threads): on a machine shared with other
# work the second is the steadier comparison of what each engine costs. recall = share of
# faiss's ids that sluice returned.
# faiss runs at its best here: OMP_WAIT_POLICY=PASSIVE (its OpenMP threads otherwise spin and,
# on a shared machine, spend most of the time spinning) and distance_compute_blas_threshold=20
# (faiss's classic default: a BLAS GEMM from 20 queries per search; 1.15 ships 128000, which
# scores a batch of 64 with its SIMD scan, about 15x slower here).
# Env: REPS (3), ROUNDS (2), THREADS (all cores), SIZES ("vocab 1m"), VENV (.venv-expand-bench).
set -eu
MODEL=${1:-models/all-minilm-l6-v2}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-$(nproc)}
SIZES=${SIZES:-"vocab 1m"}
VENV=${VENV:-.venv-expand-bench}
OUT=bench/out/expand
mkdir -p "$OUT"

make --no-print-directory bin/sluice bin/bench-expand_bench >/dev/null
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet numpy faiss-cpu
fi
PY="$VENV/bin/python"

# the vocabulary index: the cache file sluice writes (any term makes it)
if ! ls "$MODEL"/expand-*.safetensors >/dev/null 2>&1; then
    echo "building the vocabulary index of $MODEL ..." >&2
    bin/sluice expand --device cpu --model "$MODEL" car >/dev/null
fi
VOCAB=$(ls -t "$MODEL"/expand-*.safetensors | head -1)
DIM=$("$PY" -c "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; print(json.loads(f.read(n))['embeddings']['shape'][1])" "$VOCAB")
SYN="$OUT/unit_1m_$DIM.f32"
case " $SIZES " in *" 1m "*)
    [ -s "$SYN" ] || { echo "writing 1,000,000 random unit vectors to $SYN ..." >&2; "$PY" bench/expand_bench.py gen --n 1000000 --dim "$DIM" --out "$SYN"; } ;;
esac

field() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ''))" "$1" "$2"; }
best() { "$PY" -c "import sys; print(min(float(x) for x in sys.argv[1:] if x))" "$@"; }

echo "# similarity top-k, CPU, $THREADS threads, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| index | N | batch | k | sluice q/s | faiss IndexFlatIP q/s | sluice / faiss | sluice q/CPU-s | faiss q/CPU-s | sluice / faiss (CPU) | recall |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for size in $SIZES; do
    if [ "$size" = vocab ]; then idx=$VOCAB; name="vocab ($(basename "$MODEL"))"; dimarg=""; else idx=$SYN; name="random unit"; dimarg="--dim $DIM"; fi
    for batch in 64 1; do
        if [ "$size" = vocab ]; then q=$([ "$batch" = 1 ] && echo 256 || echo 1024); else q=$([ "$batch" = 1 ] && echo 8 || echo 256); fi
        for k in 10 100; do
            s_best=""; f_best=""; s_cpu=""; f_cpu=""; recall=""; n=""
            r=0
            while [ "$r" -lt "$ROUNDS" ]; do
                s=$(bin/bench-expand_bench --index "$idx" $dimarg --k "$k" --batch "$batch" --queries "$q" \
                    --reps "$REPS" --threads "$THREADS" --dump "$OUT/ids.i32")
                f=$(OMP_WAIT_POLICY=PASSIVE "$PY" bench/expand_bench.py faiss --index "$idx" $dimarg --k "$k" \
                    --batch "$batch" --queries "$q" --reps "$REPS" --threads "$THREADS" --blas-threshold 20 \
                    --compare "$OUT/ids.i32")
                s_best="$s_best $(field "$s" best_s)"; f_best="$f_best $(field "$f" best_s)"
                s_cpu="$s_cpu $(field "$s" best_cpu_s)"; f_cpu="$f_cpu $(field "$f" best_cpu_s)"
                recall=$(field "$f" recall); n=$(field "$s" n)
                r=$((r + 1))
            done
            sb=$(best $s_best); fb=$(best $f_best); sc=$(best $s_cpu); fc=$(best $f_cpu)
            "$PY" -c "
import sys
q, s, f, sc, fc = int(sys.argv[1]), *map(float, sys.argv[2:6])
name, n, batch, k, recall = sys.argv[6:11]
print(f'| {name} | {n} | {batch} | {k} | {q/s:,.0f} | {q/f:,.0f} | {f/s:.2f} | {q/sc:,.0f} | {q/fc:,.0f} | {fc/sc:.2f} | {recall} |')" \
                "$q" "$sb" "$fb" "$sc" "$fc" "$name" "$n" "$batch" "$k" "$recall"
        done
    done
done
