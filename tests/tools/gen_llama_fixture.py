#!/usr/bin/env python3
"""Reference logits and greedy continuations for the Llama fidelity test
(tests/test_llama.c), from HF transformers on the GGUF file itself.

transformers dequantizes the GGUF's Q4_1/Q8_0 weights to fp32 (and undoes
llama.cpp's Q/K row permutation); we run it in fp32 on the CPU with an
all-ones attention mask (with pad_token_id=2 and no mask, transformers masks
every <|im_end|> of a prompt). Prompt ids come from HF `tokenizers` on the
GGUF's vocabulary with the corrected pre-tokenizer (transformers' GGUF
tokenizer ignores tokenizer.ggml.pre = smollm, so it lacks the digit split);
they are stored in the fixture, so the C test does not depend on our own
tokenizer.

Full logits (49,152 per position) are too big to commit. Per prompt position
we keep the top-20 ids and values, the values at a fixed pseudo-random set of
256 vocabulary ids, and the max abs over those 256. Per prompt, a greedy
continuation of 48 tokens (no stop token: generation goes on past
<|im_end|>) with the top-1/top-2 logit margin at each step, so the test can
stop comparing at the first near-tie.

Output: tests/fixtures/llama_fixture.json (prompts, ids, continuations,
margins, the sampled vocabulary ids, offsets into the binary) and
tests/fixtures/llama_logits.bin (little-endian; per position: int32 top_ids[20],
float32 top_vals[20], float32 sample_vals[256], float32 sample_maxabs).

usage: gen_llama_fixture.py GGUF_PATH [OUT_DIR]
needs: torch (CPU), transformers, gguf, accelerate, tokenizers, numpy
"""
import json
import os
import sys

import numpy as np

TOPN = 20
NSAMPLE = 256
NGEN = 48
SEED = 20261203

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

LONG = (
    "The history of the river town begins with a ford, a shallow place where cattle could cross when the "
    "water was low in late summer. Traders came next, carrying salt and iron from the coast, and they built "
    "a few wooden sheds on the northern bank to wait out the autumn floods. Over two centuries the sheds "
    "became warehouses, the warehouses became a market, and the market drew craftsmen who needed a steady "
    "supply of customers: smiths, coopers, weavers and the brewers who kept all of them content. A stone "
    "bridge replaced the ford in the year the old abbey burned, and the tolls it earned paid for a wall, a "
    "guildhall and, eventually, a school where the children of merchants learned to read ledgers and write "
    "letters in three languages. Floods still came every few decades. The townspeople measured them against "
    "marks cut into the bridge's central pier, and the highest mark, from a spring when the snow melted all "
    "at once in the hills, sits well above a tall man's head. When the railway arrived it followed the "
    "valley floor, and the station was built on the southern bank, which had always been the poorer side. "
    "Within a generation the balance had shifted: new houses, a hospital and a library rose south of the "
    "river, while the old market square became quiet, its warehouses turned into workshops and, later, "
    "into apartments for people who commuted to the city. Today visitors walk across the bridge to look at "
    "the flood marks, and few of them know that the town exists because cattle once needed a place to cross."
)


def chatml(messages, add_generation_prompt=True):
    out = ""
    if messages[0][0] != "system":
        out += "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
    for role, text in messages:
        out += "<|im_start|>" + role + "\n" + text + "<|im_end|>\n"
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


PROMPTS = [
    ("short", "Hello"),
    ("short", "The capital of France is"),
    ("short", "Once upon a time,"),
    ("short", "def fibonacci(n):"),
    ("digits", "12345 + 67890 = "),
    ("digits", "In 2024, the population was 8,118,835 and rising by 0.9% a year; by 2030 it"),
    ("digits", "Call 555-0199 before 10:30 on 2026-12-03, ref #A7Z-3391."),
    ("non-ascii", "Le café où nous étions était fermé à cause de la grève."),
    ("non-ascii", "東京は日本の首都です。人口は約"),
    ("non-ascii", "Привет! Как дела? Сегодня погода"),
    ("non-ascii", "Emoji 🙂🚀 and accents: naïve façade, São Paulo, Zürich → "),
    ("non-ascii", "مرحبا بالعالم، هذه جملة"),
    ("code", "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello\\n\");\n"),
    ("whitespace", "a  1\n\n\tb   22  \n   c"),
    ("long", LONG),
    ("long", "Summarize the following text.\n\n" + LONG[:900]),
    ("chat", chatml([("user", "What is the capital of France?")])),
    ("chat", chatml([("user", "Write a haiku about autumn leaves.")])),
    ("chat", chatml([("system", "You are a terse assistant."), ("user", "2+2?")])),
    ("multi-turn", chatml([("user", "Hi! Can you help me plan a trip?"),
                           ("assistant", "Of course! Where would you like to go, and for how long?"),
                           ("user", "Japan, 10 days in April. I like food and temples.")])),
    ("multi-turn", chatml([("user", "Convert 3 km to miles."),
                           ("assistant", "3 km is about 1.86 miles."),
                           ("user", "And 42 km?"),
                           ("assistant", "42 km is about 26.1 miles, roughly a marathon."),
                           ("user", "Thanks. What about 100 m in feet?")])),
    ("multi-turn", chatml([("user", "Translate 'good morning' into German."),
                           ("assistant", "Guten Morgen."),
                           ("user", "Und auf Französisch? Ça va?")])),
    ("chat", chatml([("user", "Explain recursion in one paragraph, with an example in Python: " + LONG[:300])])),
]


def corrected_tokenizer(gguf_path):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return backend


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gen_llama_fixture.py GGUF_PATH [OUT_DIR]")
    import torch
    from transformers import AutoModelForCausalLM

    gguf_path = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                 "..", "fixtures")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = corrected_tokenizer(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf_path),
                                                 gguf_file=os.path.basename(gguf_path),
                                                 dtype=torch.float32)
    model.eval()
    V = model.config.vocab_size
    sample_ids = np.sort(np.random.RandomState(SEED).choice(V, NSAMPLE, replace=False)).astype(np.int32)

    records = []
    blob = bytearray()
    n_pos = 0
    for kind, text in PROMPTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert len(ids) >= 1
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
        logits = out.logits[0].float().numpy()  # (n, V)
        offset = n_pos
        for row in logits:
            top = np.argsort(-row, kind="stable")[:TOPN].astype(np.int32)
            vals = row[top].astype(np.float32)
            samp = row[sample_ids].astype(np.float32)
            blob += top.tobytes() + vals.tobytes() + samp.tobytes()
            blob += np.array([np.abs(samp).max()], dtype=np.float32).tobytes()
            n_pos += 1
        # greedy continuation with the cache, mask all ones
        past = out.past_key_values
        last = logits[-1]
        gen, margins = [], []
        n_ctx = len(ids)
        for _ in range(NGEN):
            order = np.argsort(-last, kind="stable")
            nxt = int(order[0])
            gen.append(nxt)
            margins.append(float(last[order[0]] - last[order[1]]))
            n_ctx += 1
            with torch.no_grad():
                o = model(input_ids=torch.tensor([[nxt]]), attention_mask=torch.ones((1, n_ctx), dtype=torch.long),
                          past_key_values=past, use_cache=True)
            past = o.past_key_values
            last = o.logits[0, -1].float().numpy()
        records.append({"kind": kind, "text": text, "ids": ids, "logits_offset": offset,
                        "greedy": gen, "margins": [round(m, 6) for m in margins]})
        print(f"{kind:11s} {len(ids):4d} tokens, greedy: {tok.decode(gen)!r}"[:160], file=sys.stderr)

    meta = {
        "model": os.path.basename(gguf_path),
        "generator": "tests/tools/gen_llama_fixture.py (transformers fp32, CPU)",
        "top_n": TOPN,
        "n_sample": NSAMPLE,
        "n_gen": NGEN,
        "vocab": V,
        "sample_ids": sample_ids.tolist(),
        "n_positions": n_pos,
        "record_bytes": 4 * (2 * TOPN + NSAMPLE + 1),
        "prompts": records,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "llama_fixture.json"), "w") as f:
        json.dump(meta, f, ensure_ascii=False, indent=0)
    with open(os.path.join(out_dir, "llama_logits.bin"), "wb") as f:
        f.write(bytes(blob))
    print(f"{len(records)} prompts, {n_pos} positions, {len(blob)} bytes of logits", file=sys.stderr)


if __name__ == "__main__":
    main()
