"""bench/expand_bench.py - the faiss side of bench/expand_bench.sh, and its data.

  expand_bench.py gen --n N --dim D --out FILE [--seed S]
      N random unit vectors (float32 rows) for the synthetic index.
  expand_bench.py faiss --index FILE [--dim D] --k K --batch B --queries Q --reps R --threads T
                  [--compare SLUICE_IDS]
      faiss IndexFlatIP on the same rows, the same queries (row (i * 7919) mod N) in the same
      batches as bench-expand_bench; one JSON line with the best and median wall time of R passes
      and the least process CPU time of a pass, and
      with --compare the mean recall@k of sluice's ids against faiss's. --blas-threshold sets
      faiss.cvar.distance_compute_blas_threshold (queries per search from which faiss scores
      with a BLAS GEMM instead of its SIMD scan).
"""
import argparse
import json
import struct
import time

import numpy as np

QUERY_STRIDE = 7919


def load(path, dim):
    if path.endswith(".safetensors"):
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        t = header["embeddings"]
        assert t["dtype"] == "F32", t["dtype"]
        start, end = t["data_offsets"]
        x = np.memmap(path, dtype=np.float32, mode="r", offset=8 + hlen + start, shape=tuple(t["shape"]))
        return np.ascontiguousarray(x)
    x = np.fromfile(path, dtype=np.float32)
    return x.reshape(-1, dim)


def gen(args):
    rng = np.random.default_rng(args.seed)
    with open(args.out, "wb") as f:
        for start in range(0, args.n, 65536):
            rows = min(65536, args.n - start)
            x = rng.standard_normal((rows, args.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x.tofile(f)


def run_faiss(args):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.blas_threshold is not None:  # faiss 1.15 scans with SIMD below 128000 queries by default
        faiss.cvar.distance_compute_blas_threshold = args.blas_threshold
    x = load(args.index, args.dim)
    n, d = x.shape
    index = faiss.IndexFlatIP(d)
    index.add(x)
    rows = (np.arange(args.queries, dtype=np.int64) * QUERY_STRIDE) % n
    ids = np.empty((args.queries, args.k), dtype=np.int64)

    def one_pass():
        for q0 in range(0, args.queries, args.batch):
            q = np.ascontiguousarray(x[rows[q0 : q0 + args.batch]])
            _, i = index.search(q, args.k)
            ids[q0 : q0 + len(q)] = i

    one_pass()  # warm-up, untimed, as the C side does
    times, cpus = [], []
    for _ in range(args.reps):
        t0, c0 = time.perf_counter(), time.process_time()
        one_pass()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)  # all threads of the process
    times.sort()
    out = {"engine": "faiss", "version": faiss.__version__,
           "blas_threshold": faiss.cvar.distance_compute_blas_threshold, "n": n, "d": d, "k": args.k, "batch": args.batch,
           "queries": args.queries, "best_s": round(times[0], 6), "median_s": round(times[len(times) // 2], 6), "best_cpu_s": round(min(cpus), 6),
           "qps": round(args.queries / times[0], 1)}
    if args.compare:
        ours = np.fromfile(args.compare, dtype=np.int32).reshape(args.queries, args.k)
        hits = sum(len(set(ours[i]).intersection(ids[i])) for i in range(args.queries))
        out["recall"] = round(hits / (args.queries * args.k), 4)
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--dim", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=7)
    f = sub.add_parser("faiss")
    f.add_argument("--index", required=True)
    f.add_argument("--dim", type=int, default=0)
    f.add_argument("--k", type=int, default=10)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--queries", type=int, default=1024)
    f.add_argument("--reps", type=int, default=3)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--compare")
    f.add_argument("--blas-threshold", type=int)
    args = p.parse_args()
    gen(args) if args.cmd == "gen" else run_faiss(args)


if __name__ == "__main__":
    main()
