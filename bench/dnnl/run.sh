#!/bin/sh
# oneDNN matmul (weights reordered once) against the CPU backend's own GEMM and
# OpenBLAS, one core each: see bench/dnnl/dnnl_matmul.c. Unpacks Debian's
# libdnnl-dev, libdnnl2 and the OpenCL loader libdnnl2 links against into
# build/dnnl (no system install), builds, runs.
set -e
cd "$(dirname "$0")/../.."
D=build/dnnl
if [ ! -f "$D/x/usr/include/oneapi/dnnl/dnnl.h" ]; then
    mkdir -p "$D"
    (cd "$D" && apt-get download libdnnl-dev libdnnl2 ocl-icd-libopencl1 >/dev/null 2>&1)
    for f in "$D"/*.deb; do dpkg -x "$f" "$D/x"; done
fi
make --no-print-directory CUDA=0 build/libsluice.a >/dev/null
LIB=$(pwd)/$D/x/usr/lib/x86_64-linux-gnu
cc -std=c11 -O2 -D_GNU_SOURCE -I. -I"$D/x/usr/include" -I/usr/include/x86_64-linux-gnu/openblas-pthread \
    bench/dnnl/dnnl_matmul.c build/libsluice.a -L"$LIB" -Wl,-rpath,"$LIB" "$LIB/libdnnl.so.2" \
    -lopenblas -ljansson -lutf8proc -lm -lpthread -o "$D/dnnl_matmul"
OMP_NUM_THREADS=1 LD_LIBRARY_PATH="$LIB" "$D/dnnl_matmul"
