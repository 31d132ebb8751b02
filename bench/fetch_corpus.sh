#!/bin/sh
# Real text no one here wrote, for every published figure: the quotations of
# Debian's `fortunes` package (thousands of entries of natural lengths, from a
# few words to a few paragraphs). Writes bench/data/fortunes.txt, one entry a
# line, whitespace folded; ASCII-art files are left out. Cached.
set -e
OUT=bench/data/fortunes.txt
[ -s "$OUT" ] && exit 0
mkdir -p bench/data
TMP=$(mktemp -d)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && apt-get download fortunes >/dev/null)
dpkg -x "$TMP"/fortunes_*.deb "$TMP/x"
for f in "$TMP"/x/usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8|*/art|*/ascii-art) continue ;; esac
    [ -f "$f" ] && cat "$f" && echo "%"
done | awk 'BEGIN { RS = "\n%\n" } { gsub(/[ \t\r\n]+/, " "); sub(/^ /, ""); sub(/ $/, ""); if (length($0) > 0) print }' > "$OUT"
echo "corpus: $OUT, $(wc -l < "$OUT") entries"
