#!/bin/sh
# Install the Debian packages sluice needs to build and test; quiet and quick
# when they are all present.
set -e
PKGS="build-essential pkg-config libhiredis-dev libmicrohttpd-dev libjansson-dev libcriterion-dev
libopenblas-dev libutf8proc-dev libpcre2-dev libssl-dev redis-server python3 python3-venv curl unzip gnuplot-nox
clang libclang-rt-14-dev nginx haproxy chromium"
missing=""
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
