/* tests/support_cuda_decoder.h - parity checks of the CUDA backend's decoder
 * ops (kernels/ops.h "decoder ops") against the plain-C references of
 * tests/support_decoder_ref.c, written once in plain C so the Criterion suite
 * (tests/test_ops_decoder_cuda.c) and the GPU driver (bench/gpu_parity.c,
 * family "decoder") run the same checks.
 *
 * Every check draws fresh random inputs from the seed given (a failure
 * replays with it), uploads them, poisons the device output with NaN, runs the
 * op, downloads and measures ||cuda - ref|| / ||ref|| with the reference in
 * double. Tolerances: 1e-5 for matmul_q's GEMV, add_rms_norm, rope and silu_mul
 * (fp32 math, as on the CPU); 2e-3 (fp16 tiles) and 1e-2 (bf16 tiles) for
 * matmul_q's tensor-core path (T >= ops->mma_min_t: x and the dequantized
 * weights rounded to 16 bits, see support_cuda_decoder.c); 2e-5 for attention_paged (fp32 online softmax
 * against a double softmax; the reference reads the cache's fp16 values, so
 * the fp16 storage itself is not in the error); embed_q and kv_store are
 * compared bit for bit (kv_store against round-to-nearest-even fp16), argmax
 * exactly. The batch-invariance checks compare bits: a row alone and inside a
 * batch (per matmul_q path),
 * a sequence alone and among others (whose longer contexts change the split
 * count), a prompt in two chunks and whole.
 */
#ifndef SLUICE_TEST_SUPPORT_CUDA_DECODER_H
#define SLUICE_TEST_SUPPORT_CUDA_DECODER_H

#include <stdint.h>
#include "kernels/ops.h"
#include "tests/support_cuda_parity.h"

/* The check families, NULL-terminated: "matmul_q", "matmul_q_mma", "embed_q",
 * "add_rms_norm", "rope", "silu_mul", "kv_store", "attention_paged", "argmax",
 * "invariance", "refusals". */
extern const char *const cuda_decoder_families[];

/* Runs every check of one family on gpu (a CUDA backend; the CPU backend is
 * not needed: the references are plain C; "argmax" runs on any backend, and
 * tests/test_ops_decoder.c runs it on the CPU's). report (may be NULL) is called
 * after each check. Returns the number of failed checks, -1 for an unknown
 * family. */
int cuda_decoder_run(ops_t *gpu, const char *family, uint64_t seed, cuda_parity_report_fn report, void *ctx);

#endif
