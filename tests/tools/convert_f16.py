#!/usr/bin/env python3
"""Write a float16 copy of a model folder's model.safetensors (plain Python, no numpy).

usage: convert_f16.py SRC_DIR DST_DIR

The GPU check carries the model to a machine with no network, inside a 64 MiB
working tree: the float32 all-MiniLM-L6-v2 (90 MB) does not fit, its float16
copy (45 MB) does. F32 tensors become F16 (round to nearest even, as struct's
'e' format does; a value beyond float16's range is an error, not an inf); F16
and BF16 tensors are copied as they are; integer tensors (BERT's
embeddings.position_ids buffer) are left out: neither sluice nor transformers
reads them. The small files sentence-transformers and sluice read are copied
beside it.
"""
import json
import os
import shutil
import struct
import sys
from array import array

SMALL_FILES = [
    "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "sentence_bert_config.json", "modules.json", "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
CHUNK = 1 << 20  # values converted per struct call (bounds the memory of the Python lists)


def read_header(f):
    n = struct.unpack("<Q", f.read(8))[0]
    return json.loads(f.read(n)), 8 + n


def to_f16(raw):
    src = array("f")
    src.frombytes(raw)
    if sys.byteorder != "little":
        src.byteswap()
    out = bytearray()
    for i in range(0, len(src), CHUNK):
        part = src[i:i + CHUNK]
        out += struct.pack("<%de" % len(part), *part)
    return bytes(out)


def convert(src_path, dst_path):
    with open(src_path, "rb") as f:
        header, base = read_header(f)
        meta = header.pop("__metadata__", None)
        names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
        out_header, blobs, off = {}, [], 0
        for name in names:
            t = header[name]
            a, b = t["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            if len(raw) != b - a:
                raise SystemExit("%s: tensor %s is cut short" % (src_path, name))
            if t["dtype"] == "F32":
                data, dtype = to_f16(raw), "F16"
            elif t["dtype"] in ("F16", "BF16"):
                data, dtype = raw, t["dtype"]
            else:
                print("convert_f16: leaving out %s (%s)" % (name, t["dtype"]))
                continue
            out_header[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [off, off + len(data)]}
            blobs.append(data)
            off += len(data)
    if meta is not None:
        out_header["__metadata__"] = meta
    hdr = json.dumps(out_header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)  # the data section starts 8-byte aligned
    tmp = dst_path + ".tmp"
    with open(tmp, "wb") as g:
        g.write(struct.pack("<Q", len(hdr)))
        g.write(hdr)
        for data in blobs:
            g.write(data)
    os.replace(tmp, dst_path)
    return len(out_header) - (meta is not None), 8 + len(hdr) + off


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: convert_f16.py SRC_DIR DST_DIR")
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    for rel in SMALL_FILES:
        p = os.path.join(src, rel)
        if os.path.exists(p):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copyfile(p, os.path.join(dst, rel))
    n, size = convert(os.path.join(src, "model.safetensors"), os.path.join(dst, "model.safetensors"))
    print("convert_f16: %d tensors, %.1f MB -> %s" % (n, size / 1e6, dst))


if __name__ == "__main__":
    main()
