/* kernels/cuda/backend.cu - the CUDA backend's life cycle and memory: create
 * (probe the device, refuse what it cannot run), clone, destroy, device
 * memory, copies, weight conversion, sync and CUDA graph capture. The ops
 * themselves live in one module per family (embed, gemm, layernorm,
 * attention, pool); this file only fills the vtable with them.
 *
 * Everything an op needs beyond its arguments (stream, cuBLASLt handle and
 * workspace, the weight-conversion staging buffer) is allocated here, at
 * create, so no op allocates device memory on the request path. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

#define LT_WORKSPACE_BYTES ((size_t)32 << 20) /* cuBLASLt's advice for Hopper */
#define STAGING_FLOATS ((size_t)1 << 20)      /* 4 MiB: upload_weight converts in chunks of this */
/* attention_paged's split-K partials: 2,048 query tokens x 9 heads x 8 splits of
 * (64 + 2) floats is 39 MB; larger calls run in chunks of query tokens. */
#define ATTN_SCRATCH_BYTES ((size_t)48 << 20)

int cuda_fail(ops_t *ops, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ops->err, sizeof ops->err, fmt, ap);
    va_end(ap);
    return code;
}

int cuda_enter(ops_t *ops) {
    int cur = -1;
    CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != cuda_impl(ops)->device) CUDA_CHECK(cudaSetDevice(cuda_impl(ops)->device));
    return OPS_OK;
}

/* ---- float32 -> bf16 / fp16 ---- */

template <typename T>
static __global__ void f32_to_act_kernel(T *dst, const float *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = from_f32<T>(src[i]);
}

int cuda_f32_to_act(ops_t *ops, void *dst, const float *src, int64_t n) {
    if (n <= 0) return OPS_OK;
    const int threads = 256;
    const unsigned blocks = grid_1d(n, threads, 65535);
    cudaStream_t s = cuda_impl(ops)->stream;
    if (ops->dtype == OPS_BF16)
        f32_to_act_kernel<<<blocks, threads, 0, s>>>((__nv_bfloat16 *)dst, src, n);
    else if (ops->dtype == OPS_F16)
        f32_to_act_kernel<<<blocks, threads, 0, s>>>((__half *)dst, src, n);
    else
        return cuda_fail(ops, OPS_EINVAL, "f32_to_act: the %s backend stores float32", ops_dtype_name(ops->dtype));
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* ---- lifetime ---- */

static void cuda_release(ops_t *ops) {
    if (!ops) return;
    cuda_impl_t *c = cuda_impl(ops);
    if (c) {
        cudaSetDevice(c->device);
        if (c->capturing) { /* an abandoned capture: end it so the stream can be synced and destroyed */
            cudaGraph_t g = NULL;
            if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
            cudaGetLastError();
        }
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->lt) cublasLtDestroy(c->lt);
        cudaFree(c->lt_workspace);
        cudaFree(c->staging);
        cudaFree(c->attn_scratch);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(ops);
}

static void cuda_destroy(ops_t *ops) { cuda_release(ops); }

static ops_t *cuda_open(int device, ops_dtype_t dtype, int sm, char *err, size_t errlen);

static ops_t *cuda_clone(ops_t *ops) {
    cuda_impl_t *c = cuda_impl(ops);
    ops_t *sib = cuda_open(c->device, ops->dtype, c->sm, ops->err, sizeof ops->err);
    return sib;
}

/* ---- memory ---- */

static void *cuda_mem_alloc(ops_t *ops, size_t bytes) {
    void *p = NULL;
    if (cuda_enter(ops) != OPS_OK) return NULL;
    cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 1);
    if (rc != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory is not sticky: clear it */
        cuda_fail(ops, OPS_ENOMEM, "cudaMalloc(%zu bytes) on device %d: %s", bytes, cuda_impl(ops)->device,
                  cudaGetErrorString(rc));
        return NULL;
    }
    return p;
}

static void cuda_mem_free(ops_t *ops, void *p) {
    if (!p || cuda_enter(ops) != OPS_OK) return;
    cudaFree(p);
}

static int cuda_mem_info(ops_t *ops, size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return OPS_OK;
}

/* Pinned host memory: copies from and to it overlap compute. Portable, so a
 * sibling on another thread may use it too. */
static void *cuda_host_alloc(ops_t *ops, size_t bytes) {
    void *p = NULL;
    if (cuda_enter(ops) != OPS_OK) return NULL;
    cudaError_t rc = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        cuda_fail(ops, OPS_ENOMEM, "cudaHostAlloc(%zu bytes): %s", bytes, cudaGetErrorString(rc));
        return NULL;
    }
    return p;
}

static void cuda_host_free(ops_t *ops, void *p) {
    if (!p || cuda_enter(ops) != OPS_OK) return;
    cudaFreeHost(p);
}

/* Copies are asynchronous on this ops_t's stream; from or to pinned host
 * memory the host buffer must stay alive until ops->sync. */
static int cuda_upload(ops_t *ops, void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return OPS_OK;
    if (!dst || !src_host) return cuda_fail(ops, OPS_EINVAL, "upload: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, cuda_impl(ops)->stream));
    return OPS_OK;
}

static int cuda_download(ops_t *ops, void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return OPS_OK;
    if (!dst_host || !src) return cuda_fail(ops, OPS_EINVAL, "download: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, cuda_impl(ops)->stream));
    return OPS_OK;
}

/* fp32: a plain copy. bf16, fp16: chunks of the host array go to the staging buffer
 * and are converted from there; stream order keeps a chunk's conversion ahead
 * of the next chunk's copy, so the staging buffer is reused without a sync. */
static int cuda_upload_weight(ops_t *ops, void *dst, const float *src_host, size_t n) {
    if (ops->dtype == OPS_F32) return cuda_upload(ops, dst, src_host, n * sizeof(float));
    if (!n) return OPS_OK;
    if (!dst || !src_host) return cuda_fail(ops, OPS_EINVAL, "upload_weight: NULL buffer");
    cuda_impl_t *c = cuda_impl(ops);
    if (c->capturing) return cuda_fail(ops, OPS_EINVAL, "upload_weight: not allowed during graph capture");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    for (size_t done = 0; done < n;) {
        size_t m = n - done < c->staging_n ? n - done : c->staging_n;
        CUDA_CHECK(cudaMemcpyAsync(c->staging, src_host + done, m * sizeof(float), cudaMemcpyHostToDevice,
                                   c->stream));
        rc = cuda_f32_to_act(ops, (char *)dst + done * ops_dtype_size(ops->dtype), c->staging, (int64_t)m);
        if (rc) return rc;
        done += m;
    }
    /* The caller may free src_host on return: wait for the last chunk's copy. */
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return OPS_OK;
}

static int cuda_sync(ops_t *ops) {
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaStreamSynchronize(cuda_impl(ops)->stream));
    return OPS_OK;
}

/* ---- CUDA graphs ---- */

/* Thread-local mode: another thread's unrelated CUDA calls (another ops_t's
 * cudaMalloc, say) neither break nor join this capture. */
static int cuda_capture_begin(ops_t *ops) {
    cuda_impl_t *c = cuda_impl(ops);
    if (c->capturing) return cuda_fail(ops, OPS_EINVAL, "capture_begin: a capture is already open");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = 1;
    return OPS_OK;
}

static int cuda_capture_end(ops_t *ops, void **graph) {
    cuda_impl_t *c = cuda_impl(ops);
    if (!graph) return cuda_fail(ops, OPS_EINVAL, "capture_end: NULL graph pointer");
    *graph = NULL;
    if (!c->capturing) return cuda_fail(ops, OPS_EINVAL, "capture_end: no capture is open");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    c->capturing = 0;
    cudaGraph_t g = NULL;
    CUDA_CHECK(cudaStreamEndCapture(c->stream, &g));
    cudaGraphExec_t exec = NULL;
    cudaError_t irc = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (irc != cudaSuccess)
        return cuda_fail(ops, OPS_EDEVICE, "cudaGraphInstantiate: %s (%s:%d)", cudaGetErrorString(irc), __FILE__,
                         __LINE__);
    *graph = (void *)exec;
    return OPS_OK;
}

static int cuda_graph_launch(ops_t *ops, void *graph) {
    if (!graph) return cuda_fail(ops, OPS_EINVAL, "graph_launch: NULL graph");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph, cuda_impl(ops)->stream));
    return OPS_OK;
}

static void cuda_graph_destroy(ops_t *ops, void *graph) {
    if (!graph || cuda_enter(ops) != OPS_OK) return;
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- create ---- */

#define OPEN_CHECK(stmt)                                                                                   \
    do {                                                                                                   \
        cudaError_t open_rc_ = (stmt);                                                                     \
        if (open_rc_ != cudaSuccess) {                                                                     \
            snprintf(err, errlen, "%s: %s (%s:%d)", #stmt, cudaGetErrorString(open_rc_), __FILE__, __LINE__); \
            goto fail;                                                                                     \
        }                                                                                                  \
    } while (0)

/* One ops_t on a device already probed by ops_cuda_create (or by the ops_t cloned). */
static ops_t *cuda_open(int device, ops_dtype_t dtype, int sm, char *err, size_t errlen) {
    char tmp[512];
    if (!err || !errlen) {
        err = tmp;
        errlen = sizeof tmp;
    }
    ops_t *ops = (ops_t *)calloc(1, sizeof *ops);
    cuda_impl_t *c = (cuda_impl_t *)calloc(1, sizeof *c);
    if (!ops || !c) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        free(c);
        free(ops);
        return NULL;
    }
    int mma_min_t = 0;
    ops->impl = c;
    c->device = device;
    c->sm = sm;
    OPEN_CHECK(cudaSetDevice(device));
    /* Non-blocking: siblings' streams must not serialise through the legacy default stream. */
    OPEN_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    {
        cublasStatus_t brc = cublasLtCreate(&c->lt);
        if (brc != CUBLAS_STATUS_SUCCESS) {
            c->lt = NULL;
            snprintf(err, errlen, "cublasLtCreate: %s", cublasLtGetStatusString(brc));
            goto fail;
        }
    }
    {
        const char *fallback = getenv("SLUICE_CUDA_FALLBACK");
        c->fallback = fallback && !strcmp(fallback, "1");
        const char *mt = getenv("SLUICE_CUDA_MMA_MIN_T");
        mma_min_t = mt && *mt ? atoi(mt) : OPS_CUDA_MMA_MIN_T;
        if (mma_min_t < 0 || c->fallback) mma_min_t = 0; /* the plain kernels only */
    }
    c->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    OPEN_CHECK(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes));
    c->attn_scratch_bytes = ATTN_SCRATCH_BYTES;
    OPEN_CHECK(cudaMalloc((void **)&c->attn_scratch, c->attn_scratch_bytes));
    if (dtype != OPS_F32) {
        c->staging_n = STAGING_FLOATS;
        OPEN_CHECK(cudaMalloc((void **)&c->staging, c->staging_n * sizeof(float)));
    }

    *ops = (ops_t){
        .name = "cuda",
        .dtype = dtype,
        .impl = c,
        .err = {0},
        .destroy = cuda_destroy,
        .clone = cuda_clone,
        .mem_alloc = cuda_mem_alloc,
        .mem_free = cuda_mem_free,
        .mem_info = cuda_mem_info,
        .upload = cuda_upload,
        .download = cuda_download,
        .upload_weight = cuda_upload_weight,
        .sync = cuda_sync,
        .host_alloc = cuda_host_alloc,
        .host_free = cuda_host_free,
        .embed_ln = cuda_embed_ln,
        .matmul = cuda_matmul,
        .add_ln = cuda_add_ln,
        .attention = cuda_attention,
        .mean_pool = cuda_mean_pool,
        .topk_workspace = cuda_topk_workspace,
        .similarity_topk = cuda_similarity_topk,
        /* the decoder ops: float32 activations whatever dtype is, KV cache in fp16 */
        .kv_dtype = OPS_F16,
        .mma_min_t = mma_min_t,
        .matmul_q = cuda_matmul_q,
        .embed_q = cuda_embed_q,
        .add_rms_norm = cuda_add_rms_norm,
        .rope = cuda_rope,
        .silu_mul = cuda_silu_mul,
        .kv_store = cuda_kv_store,
        .attention_paged = cuda_attention_paged,
        .argmax = cuda_argmax,
        .capture_begin = cuda_capture_begin,
        .capture_end = cuda_capture_end,
        .graph_launch = cuda_graph_launch,
        .graph_destroy = cuda_graph_destroy,
    };
    return ops;
fail:
    cudaGetLastError(); /* leave no sticky non-fatal error behind for the next caller */
    cuda_release(ops);
    return NULL;
}

extern "C" ops_t *ops_cuda_create(int device, ops_dtype_t dtype, char *err, size_t errlen) {
    char tmp[512];
    if (!err || !errlen) {
        err = tmp;
        errlen = sizeof tmp;
    }
    err[0] = '\0';
    if (dtype != OPS_F32 && dtype != OPS_BF16 && dtype != OPS_F16) {
        snprintf(err, errlen, "cuda backend: unknown dtype %d", (int)dtype);
        return NULL;
    }
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "no usable CUDA device: cudaGetDeviceCount: %s%s", cudaGetErrorString(rc),
                 rc == cudaErrorInsufficientDriver ? " (no NVIDIA driver, or one older than this CUDA runtime)" : "");
        return NULL;
    }
    if (count <= 0) {
        snprintf(err, errlen, "no CUDA device found");
        return NULL;
    }
    if (device < 0 || device >= count) {
        snprintf(err, errlen, "CUDA device %d does not exist (%d device%s found)", device, count,
                 count == 1 ? "" : "s");
        return NULL;
    }
    cudaDeviceProp prop;
    rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "cudaGetDeviceProperties(%d): %s", device, cudaGetErrorString(rc));
        return NULL;
    }
    int sm = prop.major * 10 + prop.minor;
    if (sm < 80 && dtype == OPS_BF16) {
        snprintf(err, errlen, "bf16 needs compute capability 8.0 or newer; device %d (%s) is %d.%d: use fp32",
                 device, prop.name, prop.major, prop.minor);
        return NULL;
    }
    if (sm < 80) {
        /* The binary carries sm_80/sm_90 code and compute_90 PTX only (fp16's
         * mma.m16n8k16 would run on sm_75, but nvcc 13 builds no older code). */
        snprintf(err, errlen, "device %d (%s) is compute capability %d.%d; this build needs 8.0 or newer", device,
                 prop.name, prop.major, prop.minor);
        return NULL;
    }
    return cuda_open(device, dtype, sm, err, errlen);
}

extern "C" int ops_cuda_built(void) { return 1; }
