#!/usr/bin/env python3
"""tests/tools/mma_emu.py - matmul_q's tensor-core kernel (kernels/cuda/quant_matmul.cu)
run on the host, for editing it on a machine without a GPU.

The kernel's own source (the MM_* constants, h4_t, put2, qtile and
matmul_q_mma_kernel, cut from the .cu file) is compiled as C++ with shims:
each CUDA thread is a std::thread, __shared__ arrays are the function's
statics (one block runs at a time), __syncthreads is a std::barrier, and
mma.sync m16n8k16 is emulated by gathering the warp's A and B fragments
through the layout the PTX ISA gives (row groupID + 8 (i & 1), column
2 threadID_in_group + 8 (i >> 1) for A's register i; k 2 threadID_in_group +
8 i, column groupID for B's; C rows groupID and groupID + 8). fp16 tiles
(_Float16) only. It checks the staging, dequantization, fragment indexing and
epilogue against the double reference of tests/support_decoder_ref.c; it says
nothing about the hardware's own behaviour, which only the GPU run checks.

usage (repo root, after `make CUDA=0 build/libsluice.a build/tests/support_decoder_ref.o
build/tests/support_ref.o`): python3 tests/tools/mma_emu.py [T K N ...]
Exit status 1 when a shape's relative error is over 2e-3 or an output is not written.
"""
import os
import re
import subprocess
import sys
import tempfile

PRELUDE = r'''
#include <barrier>
#include <thread>
#include <vector>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstdlib>
extern "C" {
#include "kernels/ops.h"
}
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(x)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local_shared
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
static inline float4 __ldg(const float4 *p) { return *p; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline uint16_t ld_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline float half_bits_to_f32(uint16_t h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
template <typename T> static inline T from_f32(float v);
template <> inline _Float16 from_f32<_Float16>(float v) { return (_Float16)v; }
struct dim3_ { int x, y, z; };
static thread_local dim3_ threadIdx, blockIdx;
// shared memory: one block at a time, so function statics shared by all threads emulate it
#define thread_local_shared
static std::barrier<> *block_bar;
static inline void __syncthreads() { block_bar->arrive_and_wait(); }
struct warpx { uint32_t a[32][4], b[32][2]; std::barrier<> *bar; };
static warpx W[4];
template <typename H> static void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warpx &w = W[warp];
    memcpy(w.a[lane], a, 16); memcpy(w.b[lane], b, 8);
    w.bar->arrive_and_wait();
    const int g = lane >> 2, q = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int r = g + 8 * (e / 2), n = 2 * q + e % 2;
        float s = c[e];
        for (int k = 0; k < 16; k++) {
            const int la = (r % 8) * 4 + (k % 8) / 2, ia = (r / 8) + 2 * (k / 8), lb = n * 4 + (k % 8) / 2, ib = k / 8;
            uint16_t ha = (uint16_t)(w.a[la][ia] >> (16 * (k % 2))), hb = (uint16_t)(w.b[lb][ib] >> (16 * (k % 2)));
            s += half_bits_to_f32(ha) * half_bits_to_f32(hb);
        }
        c[e] = s;
    }
    w.bar->arrive_and_wait();
}
'''

MAIN = r'''extern "C" {
#include "tests/support_decoder_ref.h"
#include "tests/support_ref.h"
}
int main(int argc, char **argv) {
    int T = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]), wt = atoi(argv[4]);
    ref_rng_t rng; ref_rng_init(&rng, 7);
    void *Wq = dref_random_weights(&rng, (ops_wtype_t)wt, N, K);
    std::vector<float> x((size_t)T * K), out((size_t)T * N, NAN);
    ref_fill_uniform(&rng, x.data(), x.size(), -1, 1);
    std::vector<double> ref((size_t)T * N);
    dref_matmul_q(ref.data(), x.data(), Wq, (ops_wtype_t)wt, T, K, N);
    size_t rb = dref_row_bytes((ops_wtype_t)wt, K);
    for (int i = 0; i < 4; i++) W[i].bar = new std::barrier<>(32);
    for (int by = 0; by < (T + 63) / 64; by++)
        for (int bx = 0; bx < (N + 63) / 64; bx++) {
            std::barrier<> bb(128); block_bar = &bb;
            std::vector<std::thread> th;
            for (int t = 0; t < 128; t++)
                th.emplace_back([&, t] {
                    threadIdx = {t, 0, 0}; blockIdx = {bx, by, 0};
                    switch (wt) {
                    case OPS_W_Q8_0: matmul_q_mma_kernel<OPS_W_Q8_0, _Float16>(out.data(), x.data(), (const uint8_t *)Wq, T, K, N, rb); break;
                    case OPS_W_Q4_0: matmul_q_mma_kernel<OPS_W_Q4_0, _Float16>(out.data(), x.data(), (const uint8_t *)Wq, T, K, N, rb); break;
                    case OPS_W_Q4_1: matmul_q_mma_kernel<OPS_W_Q4_1, _Float16>(out.data(), x.data(), (const uint8_t *)Wq, T, K, N, rb); break;
                    }
                });
            for (auto &h : th) h.join();
        }
    long bad = ref_first_nonfinite(out.data(), out.size());
    printf("T=%d K=%d N=%d wt=%d: rel_err %.3e, first non-finite %ld\n", T, K, N, wt, ref_rel_error(out.data(), ref.data(), out.size()), bad);
    return 0;
}
'''


def main():
    src = open("kernels/cuda/quant_matmul.cu").read()
    a = src.index("template <typename H> struct __align__(8) h4_t")
    b = src.index("template <typename H>\nstatic int launch_mma")
    defs = [re.sub(r"(#define MM_\w+ \d+).*", r"\1", l) for l in src.splitlines() if l.startswith("#define MM_")]
    shapes = [int(v) for v in sys.argv[1:]] or [70, 96, 130, 64, 32, 1, 129, 576, 65]
    with tempfile.TemporaryDirectory() as d:
        cpp, exe = os.path.join(d, "emu.cpp"), os.path.join(d, "emu")
        with open(cpp, "w") as f:
            f.write(PRELUDE + "\n".join(defs) + "\n" + src[a:b] + MAIN)
        libs = "-ljansson -lopenblas -lutf8proc -lm -lpthread -lmicrohttpd -lhiredis -lcrypto".split()
        subprocess.run(["g++", "-std=c++20", "-O1", "-I.", "-D_GNU_SOURCE", cpp, "build/tests/support_decoder_ref.o",
                        "build/tests/support_ref.o", "build/libsluice.a", *libs, "-o", exe], check=True)
        bad = 0
        for i in range(0, len(shapes) - 2, 3):
            for wt in (2, 3, 4):  # OPS_W_Q8_0, OPS_W_Q4_0, OPS_W_Q4_1
                out = subprocess.run([exe, *map(str, shapes[i:i + 3]), str(wt)], capture_output=True, text=True,
                                     check=True).stdout
                m = re.search(r"rel_err ([0-9.e+-]+), first non-finite (-?\d+)", out)
                ok = m and float(m.group(1)) <= 2e-3 and int(m.group(2)) < 0
                bad += not ok
                print(("PASS " if ok else "FAIL ") + out.strip())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
