#!/usr/bin/env python3
"""Text generation as queued tasks: run `make run` in the repository (it serves
the decoder models/smollm2-135m-instruct next to the encoder), then

    pip install ./clients/python
    python clients/python/examples/generate_tasks.py

SLUICE_URL (default http://127.0.0.1:8080), SLUICE_API_KEY, SLUICE_QUEUE
(default: the server's first queue) and SLUICE_MAX_TOKENS (default 32) point
it elsewhere. "model" may be left out when the server has exactly one decoder.
"""
import os
import sys

from sluice_client import Client, Completion, TaskError, TaskFailed


def main() -> int:
    url = os.environ.get("SLUICE_URL", "http://127.0.0.1:8080")
    max_tokens = int(os.environ.get("SLUICE_MAX_TOKENS", "32"))
    with Client(url, api_key=os.environ.get("SLUICE_API_KEY"), queue=os.environ.get("SLUICE_QUEUE")) as c:
        # a chat body (messages) answers a chat.completion, a prompt body a text_completion
        chat = c.generate({"messages": [{"role": "user", "content": "Name three rivers in Europe."}],
                           "max_tokens": max_tokens, "temperature": 0}, priority=5, deadline_ms=120_000)
        prompt = c.generate({"prompt": "The three primary colours are", "max_tokens": max_tokens, "n": 2,
                             "temperature": 0.8, "seed": 7})
        for label, t in (("chat", chat), ("completion", prompt)):
            try:
                r = c.result(t.id, timeout=120)
            except (TaskFailed, TaskError) as e:
                print("%s: task %s failed: %s" % (label, t.id, e))
                return 1
            assert isinstance(r, Completion)
            for ch in r.choices:
                print("%s -> task %s choice %d: %r (finish_reason %s)" % (label, t.id, ch.index, ch.text,
                                                                         ch.finish_reason))
            print("   usage: %d prompt + %d generated tokens (%d from the prefix cache)" % (
                r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
