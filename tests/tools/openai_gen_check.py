#!/usr/bin/env python3
"""A real third-party client against `sluice serve` generating text: the OpenAI
Python SDK's chat and completions calls (plain, streamed with usage, n=2, stop
strings, seeds, logprobs, errors) against the decoder model.

usage: openai_gen_check.py SLUICE_BIN MODEL_DIR
MODEL_DIR holds the GGUF (models/smollm2-135m-instruct). Starts its own server
on a free port (CPU, no Redis) and stops it with SIGTERM. Run by
tests/tools/openai_gen_check.sh inside a virtualenv that has `openai`.
"""
import os
import sys
import tempfile

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_proc  # noqa: E402

MAX = 8  # tokens per answer: the check must stay quick on 2 cores


def fail(msg):
    serve_proc.fail("openai-gen", msg)


def check(client, model):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    # chat, greedy
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX, temperature=0)
    c = r.choices[0]
    if r.object != "chat.completion" or c.message.role != "assistant" or not c.message.content:
        fail("chat answer malformed: %r" % r)
    if c.finish_reason not in ("stop", "length"):
        fail("finish_reason %r" % c.finish_reason)
    u = r.usage
    if u.prompt_tokens <= 0 or u.completion_tokens <= 0 or u.total_tokens != u.prompt_tokens + u.completion_tokens:
        fail("usage wrong: %r" % u)
    if u.prompt_tokens_details is None or u.prompt_tokens_details.cached_tokens is None:
        fail("usage.prompt_tokens_details.cached_tokens missing: %r" % u)
    greedy = c.message.content

    # streaming with usage: the same text, chunk by chunk
    chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    if text != greedy:
        fail("streamed %r, plain %r" % (text, greedy))
    if chunks[0].choices[0].delta.role != "assistant":
        fail("the first chunk has no role")
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    if finals != [c.finish_reason]:
        fail("finish reasons in the stream: %r" % finals)
    last = chunks[-1]
    if last.choices or last.usage is None or last.usage.completion_tokens != u.completion_tokens:
        fail("the last chunk does not carry the usage: %r" % last)

    # stop strings: cut before the first one, finish_reason stop
    words = greedy.split()
    if len(words) >= 2:
        stop = " " + words[1]
        s = client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX, temperature=0, stop=[stop])
        sc = s.choices[0]
        if sc.finish_reason != "stop" or sc.message.content != greedy[:greedy.index(stop)]:
            fail("stop %r: got %r (%s), greedy %r" % (stop, sc.message.content, sc.finish_reason, greedy))

    # n=2 with a seed: two choices, repeatable with the same seed
    a = client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX, temperature=0.9, n=2, seed=42)
    b = client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX, temperature=0.9, n=2, seed=42)
    if len(a.choices) != 2 or [x.index for x in a.choices] != [0, 1]:
        fail("n=2 gave %d choices" % len(a.choices))
    if [x.message.content for x in a.choices] != [x.message.content for x in b.choices]:
        fail("the same seed gave different answers: %r vs %r" % ([x.message.content for x in a.choices],
                                                                  [x.message.content for x in b.choices]))

    # logprobs
    lp = client.chat.completions.create(model=model, messages=msgs, max_tokens=3, temperature=0, logprobs=True,
                                        top_logprobs=2)
    content = lp.choices[0].logprobs.content
    if not content or len(content[0].top_logprobs) != 2 or content[0].logprob > 0:
        fail("logprobs malformed: %r" % lp.choices[0].logprobs)

    # completions: a prompt array, each prompt its own choice
    cr = client.completions.create(model=model, prompt=["The sky is", "Two plus two is"], max_tokens=4,
                                   temperature=0)
    if cr.object != "text_completion" or len(cr.choices) != 2 or not all(x.text for x in cr.choices):
        fail("completions answer malformed: %r" % cr)
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model=model, prompt="The sky is", max_tokens=4, temperature=0, stream=True) if ch.choices)
    if streamed != cr.choices[0].text:
        fail("streamed completion %r, plain %r" % (streamed, cr.choices[0].text))

    # errors surface as the SDK's exceptions
    try:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=2, extra_body={"temprature": 1})
        fail("an unknown field did not raise")
    except openai.BadRequestError as e:
        if "temprature" not in str(e):
            fail("the error does not name the field: %s" % e)
    try:
        client.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=2)
        fail("an unknown model did not raise")
    except openai.NotFoundError:
        pass
    return greedy


def main():
    binary, model_dir, model = serve_proc.args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = serve_proc.start_server("openai-gen", binary, model_dir, tmp, ["--cpu-threads", "2"])
        try:
            client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="unused", max_retries=0,
                                   timeout=120)
            greedy = check(client, model)
        finally:
            serve_proc.stop_server("openai-gen", proc)
    print("openai-gen: ok (openai %s; greedy answer %r)" % (openai.__version__, greedy))


if __name__ == "__main__":
    main()
