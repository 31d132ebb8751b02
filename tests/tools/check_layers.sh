#!/bin/sh
# The layering check: reads the compiler's include graph (`cc -MM` over every
# C source of the library) and fails, naming the files, when
#   1. a file includes one from a layer above it: kernels < engine < batcher < api,
#      with queue beside engine (engine and queue never include each other);
#   2. modules (a .c and its .h, e.g. api/http/ctl) of different rooms (folders:
#      api/http, api/redis, engine, ...) include each other in a circle, or any
#      two modules of api/ do;
#   3. two library sources share a file name (`ar` keeps one member per name).
# tests/ and bench/ may include anything and are not read.
# usage: tests/tools/check_layers.sh [CC [CFLAGS...]]   (run from the repository root)
CC=${1:-cc}
[ $# -gt 0 ] && shift
CFLAGS=${*:--I. -I/usr/include/hiredis -D_GNU_SOURCE}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

SRC=$(ls kernels/*.c kernels/cpu/*.c kernels/cuda/none.c engine/*.c queue/*.c batcher/*.c api/*.c api/*/*.c \
      2>/dev/null | sort)
for f in $SRC; do
    # one line per source: the source, then every project file it includes (directly or not)
    if ! $CC $CFLAGS -MM "$f" >"$TMP/one" 2>"$TMP/err"; then
        echo "check_layers: $CC -MM $f failed:"; cat "$TMP/err"; exit 2
    fi
    tr '\\\n' '  ' <"$TMP/one" | sed 's/^[^:]*://' | tr ' ' '\n' | grep -v '^$' | grep -v '^/' |
        sed "s#^\./##; s#^#$f #" >>"$TMP/edges"
done

# 3. file names
dups=$(for f in $SRC; do basename "$f"; done | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "check_layers: library sources share a file name (the archive would keep one): $dups"
    exit 1
fi

awk '
function layer(p) {
    if (p ~ /^kernels\//) return 0
    if (p ~ /^engine\// || p ~ /^queue\//) return 1
    if (p ~ /^batcher\//) return 2
    if (p ~ /^api\//) return 3
    return -1
}
function top(p) { sub(/\/.*/, "", p); return p }
function room(p) { sub(/\/[^\/]*$/, "", p); return p }
function module(p) { sub(/\.(c|h|cuh)$/, "", p); return p }
{
    src = $1; dep = $2
    if (src == dep || layer(dep) < 0) next
    ls = layer(src); ld = layer(dep)
    if (ld > ls || (ld == ls && top(src) != top(dep))) {
        printf "check_layers: %s includes %s (%s may not include %s)\n", src, dep, top(src), top(dep)
        bad = 1
    }
    a = module(src); b = module(dep)
    if (a == b) next
    mods[a] = 1; mods[b] = 1
    if (!((a, b) in reach)) { reach[a, b] = 1; why[a, b] = src " includes " dep }
}
END {
    n = 0
    for (m in mods) list[++n] = m
    # transitive closure of the module graph (a few hundred modules: cheap)
    for (k = 1; k <= n; k++) {
        mk = list[k]
        for (i = 1; i <= n; i++) {
            mi = list[i]
            if (!((mi, mk) in reach)) continue
            for (j = 1; j <= n; j++) {
                mj = list[j]
                if ((mk, mj) in reach && !((mi, mj) in reach)) reach[mi, mj] = 1
            }
        }
    }
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) {
        a = list[i]; b = list[j]
        if (!((a, b) in reach) || !((b, a) in reach)) continue
        if (room(a) == room(b) && top(a) != "api") continue
        printf "check_layers: %s and %s include each other in a circle (%s; %s)\n", a, b, \
            ((a, b) in why) ? why[a, b] : a " reaches " b, ((b, a) in why) ? why[b, a] : b " reaches " a
        bad = 1
    }
    exit bad
}' "$TMP/edges" || exit 1
echo "check_layers: ok ($(echo "$SRC" | wc -w) sources; kernels < engine | queue < batcher < api, no circles between rooms)"
