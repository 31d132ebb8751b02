"""Generation tasks (op generate) through sluice_client against the real decoder
(models/smollm2-135m-instruct) on the real server and Redis of conftest.py.
Answers stay a few tokens long: the suite must stay quick on 2 cores."""
import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from sluice_client import (APIError, AsyncClient, Choice, Completion, TaskCancelled, Usage, parse_result)

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _usage_adds_up(u, at_most):
    assert isinstance(u, Usage)
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= at_most
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_task_gives_the_same_answer_as_chat_completions(client, stack, decoder):
    body = {"model": decoder, "messages": CHAT, "max_tokens": 6, "temperature": 0}
    t = client.generate(body, priority=3)
    assert t.state == "queued" and len(t.id) == 32
    r = client.result(t.id, timeout=60)
    assert isinstance(r, Completion) and r.object == "chat.completion" and r.model == decoder
    assert len(r.choices) == 1 and r.choices[0].role == "assistant" and r.text
    assert r.finish_reason in ("stop", "length")
    _usage_adds_up(r.usage, 6)
    # greedy: the task's text is the synchronous route's text
    direct = httpx.post(stack.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert r.text == direct["choices"][0]["message"]["content"]
    assert r.finish_reason == direct["choices"][0]["finish_reason"]
    assert r.usage.completion_tokens == direct["usage"]["completion_tokens"]
    task = client.get(t.id)
    assert task.state == "done" and task.priority == 3 and task.attempts == 1


def test_prompt_task_with_two_choices(client, decoder):
    t = client.generate({"model": decoder, "prompt": "The capital of France is", "max_tokens": 3,
                         "temperature": 0, "n": 2})
    r = client.result(t.id, timeout=60)
    assert isinstance(r, Completion) and r.object == "text_completion"
    assert [c.index for c in r.choices] == [0, 1] and all(c.role is None for c in r.choices)
    assert r.choices[0].text == r.choices[1].text and r.choices[0].text  # greedy twice
    # 3 tokens are too few for the answer to end on its own: cut by max_tokens
    assert [c.finish_reason for c in r.choices] == ["length", "length"]
    _usage_adds_up(r.usage, 6)
    assert r.usage.completion_tokens == 6


def test_the_task_stream_in_redis_holds_the_result_text(client, stack, decoder):
    """The {queue}:s:<id> stream (docs/api.md), for Redis clients: its deltas make up the result."""
    t = client.generate({"model": decoder, "prompt": "One, two, three,", "max_tokens": 5, "temperature": 0})
    r = client.result(t.id, timeout=60)
    import json
    out = stack.redis_cli("XRANGE", "{pyq}:s:" + t.id, "-", "+").split("\n")
    # redis-cli prints each entry as: id, "token", N, kind, json
    entries = [(out[i + 3], json.loads(out[i + 4])) for i in range(0, len(out) - 4, 5)]
    assert "".join(e["text"] for k, e in entries if k == "delta" and e["index"] == 0) == r.text
    assert [e["finish_reason"] for k, e in entries if k == "done"] == [r.finish_reason]


def test_generation_refusals_name_the_field(client, stack, decoder):
    with pytest.raises(APIError) as e:
        client.generate({"model": decoder, "prompt": "x", "temprature": 1})
    assert e.value.status == 400 and e.value.code == "unknown_parameter" and e.value.param == "temprature"
    with pytest.raises(APIError) as e:
        client.generate({"model": stack.model_of_kind("encoder"), "prompt": "x"})
    assert e.value.status == 400 and e.value.code == "invalid_model" and e.value.param == "model"
    with pytest.raises(APIError) as e:
        client.generate({"model": decoder})
    assert e.value.status == 400 and e.value.code == "missing_field" and e.value.param == "prompt"
    with pytest.raises(APIError) as e:
        client.generate({"model": decoder, "prompt": "x", "max_tokens": 100_000})
    assert e.value.code == "context_length_exceeded" and e.value.param == "max_tokens"
    with pytest.raises(APIError) as e:
        client.generate({"model": "nope", "prompt": "x"})
    assert e.value.status == 404 and e.value.code == "model_not_found"
    with pytest.raises(ValueError):  # task options go as keywords, not in the body
        client.generate({"model": decoder, "prompt": "x", "priority": 3})


def test_cancel_a_running_generation(client, decoder):
    t = client.generate({"model": decoder, "prompt": "Count: 1, 2, 3,", "max_tokens": 4000, "temperature": 0})
    for _ in range(100):
        if client.get(t.id, wait=0.1).state == "leased":
            break
    assert client.cancel(t.id) in ("cancelling", "cancelled")
    with pytest.raises(TaskCancelled) as e:
        client.result(t.id, timeout=30)
    assert e.value.task.state == "cancelled" and e.value.task.cancel_requested


def test_async_generation(stack, decoder):
    async def main():
        async with AsyncClient(stack.url, queue="pyq") as c:
            ts = [await c.generate({"model": decoder, "messages": CHAT, "max_tokens": 4, "temperature": 0}),
                  await c.generate({"prompt": "Hello", "max_tokens": 4}, priority=9)]  # no model: the one decoder
            rs = await asyncio.gather(*(c.result(t.id, timeout=60) for t in ts))
            assert all(isinstance(r, Completion) and r.text for r in rs)
            assert [r.object for r in rs] == ["chat.completion", "text_completion"] and rs[1].model == decoder
            with pytest.raises(APIError) as e:
                await c.generate({"model": decoder, "messages": CHAT, "colour": 1})
            assert e.value.param == "colour"

    asyncio.run(main())


def test_completion_parse():
    r = parse_result({"id": "cmpl-1", "object": "text_completion", "model": "m",
                      "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                                "prompt_tokens_details": {"cached_tokens": 1}},
                      "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop", "logprobs": None}]})
    assert isinstance(r, Completion) and r.text == " Paris" and r.finish_reason == "stop"
    assert r.choices == [Choice(index=0, text=" Paris", finish_reason="stop")]
    assert r.usage == Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5, cached_tokens=1)
    chat = parse_result({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "length",
                                                                   "message": {"role": "assistant", "content": "hi"}}]})
    assert chat.text == "hi" and chat.choices[0].role == "assistant" and chat.usage.total_tokens == 0


def test_the_generate_example_runs(stack, decoder):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SLUICE_URL=stack.url, SLUICE_QUEUE="pyq", SLUICE_MAX_TOKENS="6")
    out = subprocess.run([sys.executable, os.path.join(here, "..", "examples", "generate_tasks.py")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "chat ->" in out.stdout and "completion ->" in out.stdout and "finish_reason" in out.stdout
