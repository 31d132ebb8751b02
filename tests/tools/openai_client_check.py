#!/usr/bin/env python3
"""A real third-party client against `sluice serve`: the OpenAI Python SDK calls
/v1/embeddings and must get the same vectors as `sluice embed` (within 1e-6).

usage: openai_client_check.py SLUICE_BIN MODEL_DIR
Starts its own server on a free port (CPU, no Redis) and stops it with SIGTERM.
Run by tests/tools/openai_client_check.sh inside a virtualenv that has `openai`.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_proc  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "sluice batches requests from HTTP and Redis into one forward pass.",
    "Short.",
    "Ünïcödé text, CJK 漢字, and punctuation!?",
]
TOL = 1e-6


def fail(msg):
    serve_proc.fail("openai-client", msg)


def sluice_embed(binary, model_dir, texts):
    args = [binary, "embed", "--device", "cpu", "--model", model_dir]
    for t in texts:
        args += ["--text", t]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r["embedding"] for r in sorted(rows, key=lambda r: r["index"])]


def max_diff(a, b):
    if len(a) != len(b):
        return math.inf
    return max(abs(x - y) for x, y in zip(a, b))


def main():
    binary, model_dir, model = serve_proc.args(__doc__)
    reference = sluice_embed(binary, model_dir, TEXTS)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = serve_proc.start_server("openai-client", binary, model_dir, tmp, ["--max-queue-delay-ms", "2"])
        try:
            client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="unused", max_retries=0,
                                   timeout=60)
            # the SDK's default (it asks for base64 and decodes it) and explicit floats
            for fmt in (None, "float"):
                kw = {} if fmt is None else {"encoding_format": fmt}
                resp = client.embeddings.create(model=model, input=TEXTS, **kw)
                if len(resp.data) != len(TEXTS):
                    fail("%d embeddings for %d inputs" % (len(resp.data), len(TEXTS)))
                for d in resp.data:
                    diff = max_diff(list(d.embedding), reference[d.index])
                    if diff > TOL:
                        fail("input %d (%s): max |diff| %.3g vs sluice embed" % (d.index, fmt or "default", diff))
                if resp.usage.prompt_tokens <= 0 or resp.model != model:
                    fail("usage/model fields wrong: %r %r" % (resp.usage, resp.model))
            # one string, and dimensions (cut and re-normalised)
            one = client.embeddings.create(model=model, input=TEXTS[0], dimensions=64, encoding_format="float")
            v = one.data[0].embedding
            norm = math.sqrt(sum(x * x for x in reference[0][:64]))
            if len(v) != 64 or max_diff(v, [x / norm for x in reference[0][:64]]) > 1e-5:
                fail("dimensions=64 does not match the cut, re-normalised reference")
            # errors surface as the SDK's exceptions
            try:
                client.embeddings.create(model="no-such-model", input="x")
                fail("unknown model did not raise")
            except openai.NotFoundError:
                pass
            try:
                client.embeddings.create(model=model, input=[])
                fail("empty input did not raise")
            except openai.BadRequestError:
                pass
        finally:
            serve_proc.stop_server("openai-client", proc)
    print("openai-client: ok (openai %s, %d inputs, max diff <= %g)" % (openai.__version__, len(TEXTS), TOL))


if __name__ == "__main__":
    main()
