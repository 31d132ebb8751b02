#!/usr/bin/env python3
"""tests/tools/slim_f16.py - the float16 MiniLM folder of mk/fetch-gpu-deps.sh,
packed small enough to travel to the GPU machine beside the decoder's files
(bench/gpu-all.sh: one call carries both checks' files in 64 MiB).

The word-embedding rows of the tokens that tests/fixtures/embeddings.jsonl
never uses are set to zero, then the folder is written as one tar.xz. Zero rows
compress to nothing, so 45 MB become about 20. Every value a check reads from a
fixture sentence is the real model's: the encoder check's parity runs CPU and
CUDA on this same folder, sentence-transformers too, and the fixture's stored
embeddings are compared for the fixture's own tokens only. Its timed synthetic
sequences (ids from an LCG) meet zero rows: a gather, whose speed does not
depend on the values, and the position and type embeddings keep every row of
the first LayerNorm's input non-zero.

usage: slim_f16.py MODEL_DIR FIXTURE OUT.tar.xz
Only the standard library: the safetensors header is JSON after an 8-byte length.
"""
import io
import json
import os
import struct
import sys
import tarfile

WORD = "embeddings.word_embeddings.weight"


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    model, fixture, out = sys.argv[1:]
    used = set()
    with open(fixture, encoding="utf-8") as f:
        for line in f:
            used.update(json.loads(line)["tokens"])
    path = os.path.join(model, "model.safetensors")
    blob = bytearray(open(path, "rb").read())
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    if WORD not in header or header[WORD]["dtype"] != "F16":
        print(f"slim_f16: {path} has no F16 {WORD}", file=sys.stderr)
        return 1
    rows, dim = header[WORD]["shape"]
    start = 8 + n + header[WORD]["data_offsets"][0]
    row_bytes = dim * 2
    zero = bytes(row_bytes)
    for r in range(rows):
        if r not in used:
            blob[start + r * row_bytes:start + (r + 1) * row_bytes] = zero
    with tarfile.open(out, "w:xz") as tar:
        for name in sorted(os.listdir(model)):
            full = os.path.join(model, name)
            if name == "model.safetensors":
                info = tarfile.TarInfo("model-f16/" + name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(bytes(blob)))
            else:
                tar.add(full, arcname="model-f16/" + name)
    print(f"slim_f16: {len(used)} of {rows} word-embedding rows kept; {out}: "
          f"{os.path.getsize(out) / 1048576:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
