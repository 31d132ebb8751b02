"""SHA-256 of every Q4_1 and Q8_0 tensor of the SmolLM2 GGUF as the gguf
package dequantizes it (float32, little-endian, row-major in file order), the
reference tests/test_ops_decoder.c holds embed_q to, bit for bit.

usage: gen_dequant_fixture.py GGUF OUT
Output lines: name type numel sha256hex
"""
import hashlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main():
    path, out = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    lines = []
    for t in reader.tensors:
        if t.tensor_type.name not in ("Q4_1", "Q8_0"):
            continue
        values = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype="<f4")
        lines.append(f"{t.name} {t.tensor_type.name} {values.size} {hashlib.sha256(values.tobytes()).hexdigest()}\n")
    with open(out, "w") as f:
        f.writelines(lines)
    print(f"{out}: {len(lines)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
