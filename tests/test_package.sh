#!/bin/sh
# The Debian package end to end, in a throwaway root (this machine is shared):
# `make deb`, then dpkg --root=R -i (maintainer scripts run with DPKG_ROOT=R),
# the files, the sluice user, the key file's owner and mode, the unit's
# ExecStart run once (--help, then a short serve answering /healthz with the
# settings of /etc/sluice/sluice.env), then dpkg --purge.
# usage: tests/test_package.sh [BUILD_DIR]   (exit 0: pass; prints SKIP without dpkg-deb)
set -u
BUILD=${1:-build}
fail() { echo "FAIL: $*"; exit 1; }
for tool in dpkg dpkg-deb curl useradd; do
    command -v $tool >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 0; }
done
R=$(mktemp -d /tmp/sluice-pkg-XXXXXX)
SERVE_PID=""
cleanup() { [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT

make --no-print-directory -s CUDA=${CUDA:-0} BUILD="$BUILD" deb >"$R.log" 2>&1 || { cat "$R.log"; rm -f "$R.log"; fail "make deb"; }
rm -f "$R.log"
DEB=$(ls -t "$BUILD"/sluice_*.deb | head -1)
[ -f "$DEB" ] || fail "no .deb under $BUILD"
dpkg-deb -I "$DEB" control | grep -q '^Package: sluice' || fail "control file"
dpkg-deb -I "$DEB" conffiles | grep -qx '/etc/sluice/sluice.env' || fail "sluice.env is not a conffile"

# A root with an empty dpkg database and a copy of this machine's users.
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/etc"
: >"$R/var/lib/dpkg/status"
for f in passwd group shadow gshadow; do [ -f /etc/$f ] && cp -p /etc/$f "$R/etc/$f"; done
dpkg --root="$R" --force-script-chrootless --force-depends --force-not-root -i "$DEB" >"$R/dpkg.log" 2>&1 ||
    { cat "$R/dpkg.log"; fail "dpkg -i"; }

for f in usr/bin/sluice usr/bin/sluice-bench lib/systemd/system/sluice.service etc/sluice/sluice.env \
         usr/share/doc/sluice/operations.md usr/share/doc/sluice/sluice-move-slot.lua; do
    [ -e "$R/$f" ] || fail "$f not installed"
done
grep -q '^sluice:' "$R/etc/passwd" || fail "no sluice user"
uid=$(awk -F: '$1 == "sluice" { print $3 }' "$R/etc/passwd")
[ "$(stat -c '%u %a' "$R/etc/sluice/keys")" = "$uid 600" ] || fail "key file: $(stat -c '%U(%u) %a' "$R/etc/sluice/keys"), want sluice 600"
[ "$(stat -c '%a' "$R/etc/sluice/sluice.env")" = 640 ] || fail "sluice.env mode $(stat -c %a "$R/etc/sluice/sluice.env")"
[ "$(stat -c '%u' "$R/var/lib/sluice")" = "$uid" ] || fail "/var/lib/sluice not owned by sluice"
unit="$R/lib/systemd/system/sluice.service"
for want in 'User=sluice' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
            'ReadWritePaths=/var/lib/sluice' 'EnvironmentFile=/etc/sluice/sluice.env'; do
    grep -qx "$want" "$unit" || fail "unit lacks $want"
done

# The unit's command line, its binary taken from the root.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
cmd=$(echo "$exec_start" | sed "s|^/usr/bin/|$R/usr/bin/|")
$cmd --help >"$R/help.txt" 2>&1 || fail "$exec_start --help"
grep -q 'usage: sluice serve' "$R/help.txt" || fail "--help printed no usage"

# A short serve with the packaged settings (as systemd reads them: KEY=VALUE
# lines), only the port and the models folder moved into the throwaway root.
mkdir -p "$R/models"
(
    set -a
    . "$R/etc/sluice/sluice.env"
    set +a
    SLUICE_PORT=0 SLUICE_PORT_FILE="$R/port" SLUICE_MODELS="$R/models" exec $cmd
) >"$R/serve.log" 2>&1 &
SERVE_PID=$!
i=0
while [ ! -s "$R/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$R/port" ] || { cat "$R/serve.log"; fail "serve did not start"; }
code=$(curl -s -o "$R/healthz" -w '%{http_code}' "http://127.0.0.1:$(cat "$R/port")/healthz")
[ "$code" = 200 ] || { cat "$R/serve.log"; fail "/healthz answered $code"; }
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve exited non-zero on SIGTERM"
SERVE_PID=""

dpkg --root="$R" --force-script-chrootless --force-not-root --purge sluice >"$R/purge.log" 2>&1 ||
    { cat "$R/purge.log"; fail "dpkg --purge"; }
for f in usr/bin/sluice etc/sluice/keys etc/sluice/sluice.env var/lib/sluice; do
    [ -e "$R/$f" ] && fail "$f left after purge"
done
echo "package: $(basename "$DEB") installed, served /healthz, purged: PASS"
