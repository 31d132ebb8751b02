#!/bin/sh
# Fill .deps/ and .deps-gen/ (ignored by git) with what the GPU checks need on
# a GPU machine that has nvcc, the CUDA libraries and PyTorch but none of our
# Debian packages and no network:
#   .deps/debs/*.deb    the libraries the engine and kernels link against
#                       (jansson, utf8proc, OpenBLAS + libgfortran, and make in
#                       case the image has none), unpacked there with dpkg -x;
#   .deps/debs-serve/   what bench/gpu-serve-check.sh adds (HTTP, Redis, OpenSSL);
#   .deps/model-f16/    all-MiniLM-L6-v2 with float16 weights (45 MB; the
#                       float32 model, 90 MB, does not fit the 64 MiB tree);
#   .deps/slim/model-f16.tar.xz   the same folder with the word-embedding rows
#                       no fixture sentence uses zeroed, xz-packed (20 MiB;
#                       tests/tools/slim_f16.py says why the checks still hold):
#                       what travels, unpacked by the check scripts there;
#   .deps-gen/smollm2-4layers-v8192.gguf   the decoder's: the real GGUF's first
#                       4 layers, output norm and the first 8,192 rows of its
#                       token embedding (13 MiB; bench/gpu-gen-check.sh).
# Then it prints the size of each check's carry (tracked and untracked-not-
# ignored files plus the carried paths, as the device tool counts) and fails
# when one is above LIMIT_MIB (default 60; the tool's hard limit is 64 MiB):
#   bench/gpu-all.sh          carry .deps/debs .deps/slim .deps-gen
#   bench/gpu-check.sh        carry .deps/debs .deps/slim
#   bench/gpu-gen-check.sh    carry .deps/debs .deps-gen
#   bench/gpu-serve-check.sh  carry .deps/debs .deps/debs-serve .deps/slim
#
# usage (repo root, this machine, network to the Debian mirror):
#   sh mk/fetch-gpu-deps.sh [MODEL_DIR]        (default models/all-minilm-l6-v2)
# Idempotent: a second run fetches nothing it already has.
set -eu
cd "$(dirname "$0")/.."
MODEL_DIR=${1:-models/all-minilm-l6-v2}
DEPS=.deps
LIMIT_MIB=${LIMIT_MIB:-60}
# Runtime + -dev pairs the engine and kernels link against (see the Makefile's
# LDLIBS); libquadmath0 is libgfortran5's own dependency. Nothing for the HTTP
# server, Redis or Criterion: the GPU check builds only engine + kernels drivers.
PKGS="libjansson4 libjansson-dev libutf8proc2 libutf8proc-dev libopenblas0-pthread
libopenblas-pthread-dev libopenblas-dev libgfortran5 libquadmath0 make"

# fetch FOLDER PKG...: download the packages FOLDER lacks into it; their .debs
# stay in $FETCHED until the caller moves them (so they can be slimmed first).
fetch() {
    folder=$1
    shift
    mkdir -p "$folder"
    missing=""
    for p in "$@"; do
        ls "$folder/${p}_"*.deb >/dev/null 2>&1 || missing="$missing $p"
    done
    FETCHED=""
    [ -n "$missing" ] || return 0
    echo "fetch-gpu-deps: downloading$missing"
    FETCHED=$(mktemp -d)
    chmod 755 "$FETCHED"
    if ! (cd "$FETCHED" && apt-get download -q -o APT::Sandbox::User=root $missing >/dev/null); then
        echo "fetch-gpu-deps: apt-get download failed (run 'apt-get update' first?)" >&2
        rm -rf "$FETCHED"
        exit 1
    fi
}

# ---- Debian packages ----
fetch "$DEPS/debs" $PKGS
if [ -n "$FETCHED" ]; then
    # Slim the two big OpenBLAS packages: the static archive (58 MB unpacked)
    # and the separate BLAS/LAPACK alternatives are never linked; libopenblas.so
    # carries both. Saves 7 MB of the 64 MiB.
    for deb in "$FETCHED"/libopenblas-pthread-dev_*.deb "$FETCHED"/libopenblas0-pthread_*.deb; do
        [ -f "$deb" ] || continue
        dpkg-deb -R "$deb" "$FETCHED/x"
        rm -f "$FETCHED"/x/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r*.a \
              "$FETCHED"/x/usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3 \
              "$FETCHED"/x/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
        dpkg-deb -Zxz -b "$FETCHED/x" "$deb" >/dev/null
        rm -rf "$FETCHED/x"
    done
    mv "$FETCHED"/*.deb "$DEPS/debs/"
    rm -rf "$FETCHED"
fi

# ---- what bench/gpu-serve-check.sh adds: the whole server (HTTP, Redis, OpenSSL headers) ----
fetch "$DEPS/debs-serve" libmicrohttpd12 libmicrohttpd-dev libhiredis0.14 libhiredis-dev libssl-dev
if [ -n "$FETCHED" ]; then
    mv "$FETCHED"/*.deb "$DEPS/debs-serve/"
    rm -rf "$FETCHED"
fi

# ---- the float16 model ----
if [ ! -f "$DEPS/model-f16/model.safetensors" ] || [ "$MODEL_DIR/model.safetensors" -nt "$DEPS/model-f16/model.safetensors" ]; then
    if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
        echo "fetch-gpu-deps: $MODEL_DIR/model.safetensors missing (run 'make model' first)" >&2
        exit 1
    fi
    python3 tests/tools/convert_f16.py "$MODEL_DIR" "$DEPS/model-f16"
fi

# ---- the packed model that travels ----
if [ ! -f "$DEPS/slim/model-f16.tar.xz" ] || [ "$DEPS/model-f16/model.safetensors" -nt "$DEPS/slim/model-f16.tar.xz" ]; then
    mkdir -p "$DEPS/slim"
    python3 tests/tools/slim_f16.py "$DEPS/model-f16" tests/fixtures/embeddings.jsonl "$DEPS/slim/model-f16.tar.xz.tmp"
    mv "$DEPS/slim/model-f16.tar.xz.tmp" "$DEPS/slim/model-f16.tar.xz"
fi

# ---- the decoder check's model: the real GGUF's first 4 layers, output norm, 8,192 token rows ----
# (bench/gpu-gen-check.sh: the whole file, 98 MB, does not travel; 13 MiB do. The
# speed file made there from it gets the real vocabulary's size back.)
LLM=${LLM:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
GEN=.deps-gen
SUB=$GEN/smollm2-4layers-v8192.gguf
rm -f "$GEN/smollm2-4layers.gguf" # the earlier full-vocabulary subset (38 MB): too large to travel with the encoder's
if [ ! -f "$SUB" ] || [ "$LLM" -nt "$SUB" ]; then
    if [ -f "$LLM" ]; then
        make --no-print-directory CUDA=0 bin/gen-gpu >/dev/null
        mkdir -p "$GEN"
        bin/gen-gpu layers --from "$LLM" --layers 4 --vocab 8192 --out "$SUB"
    else
        echo "fetch-gpu-deps: $LLM missing: no decoder model for bench/gpu-gen-check.sh" >&2
    fi
fi

# ---- what travels ----
# The device tool sends tracked and untracked-not-ignored files plus the
# carried paths; count the same (files deleted from the tree count nothing).
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
       awk '{s += $1} END {print s + 0}')
(cd "$DEPS" && find debs debs-serve model-f16 slim -type f -printf '%s %p\n' | sort -k2) >"$DEPS/MANIFEST"
too_large=0
# carry NAME PATH...: the size of one check's carry, against the limit
carry() {
    name=$1
    shift
    c=$(du -sb "$@" | awk '{s += $1} END {print s + 0}')
    awk -v n="$name" -v t="$tree" -v c="$c" -v lim="$LIMIT_MIB" -v p="$*" 'BEGIN {
        printf "fetch-gpu-deps: %-22s tree %.1f MiB + %s %.1f MiB = %.1f MiB (limit %d MiB)\n",
               n, t / 1048576, p, c / 1048576, (t + c) / 1048576, lim }'
    if [ $((tree + c)) -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "fetch-gpu-deps: $name: the carry is too large for the device tool" >&2
        too_large=1
    fi
}
carry gpu-all.sh "$DEPS/debs" "$DEPS/slim" "$GEN"
carry gpu-check.sh "$DEPS/debs" "$DEPS/slim"
carry gpu-gen-check.sh "$DEPS/debs" "$GEN"
carry gpu-serve-check.sh "$DEPS/debs" "$DEPS/debs-serve" "$DEPS/slim"
[ "$too_large" = 0 ] || exit 1
