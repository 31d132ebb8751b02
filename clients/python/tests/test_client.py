"""sluice_client against a real sluice serve + redis-server (conftest.py)."""
import asyncio
import json
import math
import threading
import time

import httpx
import pytest

from sluice_client import (APIError, AsyncClient, Client, Embeddings, Expansions, QueueStats, TaskCancelled,
                           TaskError, TaskExpired, TaskFailed, TaskNotFound, TaskTimeout, task_body)


def test_submit_and_typed_embeddings(client):
    t = client.submit(["the cat sat on the mat", "short"], priority=7, dimensions=32)
    assert t.state == "queued" and not t.deduplicated and len(t.id) == 32
    r = client.result(t.id, timeout=60)
    assert isinstance(r, Embeddings)
    assert [len(v) for v in r.vectors] == [32, 32]
    assert r.prompt_tokens > 0
    task = client.get(t.id)
    assert task.state == "done" and task.priority == 7 and task.attempts == 1
    assert task.finished_at_ms >= task.enqueued_at_ms > 1_700_000_000_000


def test_same_vectors_as_http(client, stack):
    import httpx
    t = client.submit("a sentence to compare")
    vec = client.result(t.id, timeout=60).vectors[0]
    direct = httpx.post(stack.url + "/v1/embeddings", json={"input": "a sentence to compare"}, timeout=60).json()
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vec, direct["data"][0]["embedding"]))


def test_submit_many_dedup_and_options(client):
    ts = client.submit_many([
        task_body("one", dedup_key="pybatch"),
        task_body("two", dedup_key="pybatch"),
        task_body(op="expand", terms=["cat"], k=3, max_attempts=5, result_ttl_ms=60_000),
    ])
    assert len(ts) == 3
    assert ts[1].deduplicated and ts[1].id == ts[0].id and ts[1].state == "deduplicated"
    exp = client.result(ts[2].id, timeout=60)
    assert isinstance(exp, Expansions)
    assert exp.data[0].term == "cat" and len(exp.data[0].neighbours) <= 3
    assert client.get(ts[2].id).max_attempts == 5
    # a later submit with the key answers the same task while it lives
    again = client.submit("one", dedup_key="pybatch")
    assert again.deduplicated and again.id == ts[0].id


def test_unknown_field_and_bad_values_are_refused(client):
    with pytest.raises(APIError) as e:
        client.submit("x", prioritty=3)
    assert e.value.status == 400 and e.value.code == "unknown_field" and "prioritty" in e.value.message
    with pytest.raises(APIError) as e:
        client.submit("x", priority=256)
    assert e.value.param == "priority"
    with pytest.raises(APIError) as e:  # one bad task refuses the batch, naming it
        client.submit_many([task_body("fine"), task_body("")])
    assert "tasks[1]" in e.value.message
    with pytest.raises(TaskNotFound):
        client.get("0" * 32)


def test_cancel_a_delayed_task(client):
    t = client.submit("later", delay_ms=60_000)
    assert client.get(t.id).state == "delayed"
    assert client.cancel(t.id) == "cancelled"
    with pytest.raises(TaskCancelled) as e:
        client.result(t.id, timeout=5)
    assert e.value.task.state == "cancelled"
    with pytest.raises(APIError) as e:
        client.cancel(t.id)
    assert e.value.status == 409


def test_deadline_expires_a_waiting_task(client):
    t = client.submit("never in time", delay_ms=3000, deadline_ms=100)
    with pytest.raises(TaskExpired):
        client.result(t.id, timeout=20)


def test_wait_that_runs_out_raises_timeout_and_the_task_goes_on(client):
    t = client.submit("slow start", delay_ms=1500)
    start = time.monotonic()
    with pytest.raises(TaskTimeout) as e:
        client.result(t.id, timeout=0.3)  # fractions of a second are allowed
    assert e.value.state == "delayed" and time.monotonic() - start < 5
    assert isinstance(client.result(t.id, timeout=30), Embeddings)


def test_done_with_an_error_result_raises_task_error(client, stack):
    # a task whose payload the worker refuses: it ends done, its result an error object
    tid = "e" * 32
    stack.redis_cli("HSET", "{pyq}:t:" + tid, "payload", json.dumps({"model": "nope", "op": "embed",
                                                                      "inputs": {"input": "x"}}),
                    "prio", "0", "score", "1", "state", "ready", "maxatt", "3", "enq", "1")
    stack.redis_cli("ZADD", "{pyq}:ready", "1", tid)
    with pytest.raises(TaskError) as e:
        client.result(tid, timeout=30)
    assert e.value.task.state == "done" and e.value.status == 404 and e.value.code == "model_not_found"


def test_dead_letter_queue_and_stats(client, stack):
    tid = "d" * 32
    stack.redis_cli("HSET", "{pyq}:t:" + tid, "payload", "{}", "state", "dlq", "attempts", "3", "maxatt", "3",
                    "error", "worker crashed", "score", "1", "dead_at", "1000")
    stack.redis_cli("ZADD", "{pyq}:dlq", "1000", tid)
    with pytest.raises(TaskFailed) as e:
        client.result(tid, timeout=5)
    assert "worker crashed" in str(e.value)
    dead = client.dlq(limit=10)
    assert [d.id for d in dead] == [tid] and dead[0].error == "worker crashed" and dead[0].attempts == 3
    s = client.stats()
    assert isinstance(s, QueueStats) and s.queue == "pyq" and s.dlq == 1 and s.counters["enqueued"] >= 1
    assert client.dlq_purge(all=True) == 1
    assert client.dlq() == []
    with pytest.raises(ValueError):
        client.dlq_requeue()


def test_queues_are_separate(client):
    t = client.submit("in the other queue", queue="other")
    assert t.queue == "other"
    with pytest.raises(TaskNotFound):
        client.get(t.id)  # the client's queue is pyq
    assert isinstance(client.result(t.id, timeout=60, queue="other"), Embeddings)


def test_429_is_retried_after_retry_after(limited):
    with Client(limited.url, queue="pyq", max_retries=0) as c:
        with pytest.raises(APIError) as e:
            for i in range(6):
                c.submit("burst %d" % i)
        assert e.value.status == 429 and e.value.code == "rate_limited"
    with Client(limited.url, queue="pyq", max_retries=8) as c:
        start = time.monotonic()
        ids = [c.submit("paced %d" % i).id for i in range(6)]
        assert len(set(ids)) == 6
        assert time.monotonic() - start >= 1.0  # it waited as Retry-After said
    with Client(limited.url, queue="pyq") as c:
        with pytest.raises(APIError) as e:
            c.submit("x", queue="nope")
        assert e.value.status == 404  # not retried


def _recording(cls, url, seen):
    """An httpx client that notes (status, Retry-After, time) of every answer."""
    def note(resp):
        seen.append((resp.status_code, resp.headers.get("retry-after"), time.monotonic()))
    if cls is AsyncClient:
        async def anote(resp):
            note(resp)
        return httpx.AsyncClient(base_url=url, event_hooks={"response": [anote]})
    return httpx.Client(base_url=url, event_hooks={"response": [note]})


def test_503_queue_unavailable_is_retried_after_retry_after(outage):
    """Redis stopped: the task routes answer 503 queue_unavailable with Retry-After (the queue's
    breaker); the client waits as told, gives up after max_retries, and succeeds once Redis is back."""
    outage.stop_redis()
    seen = []
    with Client(outage.url, queue="pyq", max_retries=1, http=_recording(Client, outage.url, seen)) as c:
        with pytest.raises(APIError) as e:
            c.submit("while Redis is down", dedup_key="outage-1")
    assert e.value.status == 503 and e.value.code == "queue_unavailable"
    assert [s for s, _, _ in seen] == [503, 503]  # the first try and one retry
    assert all(ra and int(ra) >= 1 for _, ra, _ in seen)
    assert seen[1][2] - seen[0][2] >= int(seen[0][1]) - 0.05  # it waited Retry-After seconds

    async def async_gives_up():
        aseen = []
        async with AsyncClient(outage.url, queue="pyq", max_retries=2,
                               http=_recording(AsyncClient, outage.url, aseen)) as ac:
            with pytest.raises(APIError) as ae:
                await ac.get("0" * 32)
        assert ae.value.status == 503 and [s for s, _, _ in aseen] == [503, 503, 503]
        assert aseen[2][2] - aseen[0][2] >= int(aseen[0][1]) + int(aseen[1][1]) - 0.1
    asyncio.run(async_gives_up())

    seen.clear()
    restart = threading.Timer(1.5, outage.start_redis)
    restart.start()
    try:
        with Client(outage.url, queue="pyq", max_retries=10, http=_recording(Client, outage.url, seen)) as c:
            t = c.submit("after the outage", dedup_key="outage-1")
            assert t.state == "queued" and not t.deduplicated
            assert c.get(t.id).state in ("ready", "leased", "done")
    finally:
        restart.join()
    codes = [s for s, _, _ in seen]
    assert codes[0] == 503 and codes[-2:] == [202, 200] and set(codes[:-2]) == {503}
    assert seen[-2][2] - seen[0][2] >= 1.0


def test_async_client(stack):
    async def main():
        async with AsyncClient(stack.url, queue="pyq") as c:
            ts = await c.submit_many([task_body("async one"), task_body("async two", priority=200)])
            rs = await asyncio.gather(*(c.result(t.id, timeout=60) for t in ts))
            assert all(isinstance(r, Embeddings) for r in rs)
            t = await c.submit("async later", delay_ms=60_000)
            assert await c.cancel(t.id) == "cancelled"
            with pytest.raises(TaskCancelled):
                await c.result(t.id, timeout=5)
            assert (await c.stats()).counters["cancelled"] >= 1

    asyncio.run(main())


def test_the_example_runs(stack):
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SLUICE_URL=stack.url, SLUICE_QUEUE="pyq")
    out = subprocess.run([sys.executable, os.path.join(here, "..", "examples", "embed_tasks.py")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "doc-3 -> task" in out.stdout and "cancelled before it ran" in out.stdout and "queue pyq" in out.stdout


def test_a_producer_written_from_docs_queue_md(client, stack):
    """Straight to Redis as docs/queue.md says (prelude + enqueue.lua, its ARGV), then read over HTTP."""
    import os
    import secrets
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    lua = "".join(open(os.path.join(root, "queue", "lua", f)).read() for f in ("prelude.lua", "enqueue.lua"))
    assert stack.redis_cli("GET", "{pyq}:protocol") == "1"
    tid = secrets.token_hex(16)
    payload = json.dumps({"model": "all-minilm-l6-v2", "op": "embed", "inputs": {"input": "from Redis"}})
    out = stack.redis_cli("EVAL", lua, "1", "{pyq}:seq", "0", "3600000", "120000",
                          tid, payload, "5", "0", "0", "3", "", "", "0")
    assert out.split() == ["0", tid]
    r = client.result(tid, timeout=60)
    assert isinstance(r, Embeddings) and len(r.vectors[0]) == 384


def test_failed_attempts_are_logged_and_end_in_the_dlq(starved):
    with Client(starved.url, queue="pyq") as c:
        t = c.submit("no room for the model", max_attempts=2)
        with pytest.raises(TaskFailed) as e:
            c.result(t.id, timeout=30)
        assert e.value.task.attempts == 2 and "memory budget" in e.value.task.error
        assert [d.id for d in c.dlq()] == [t.id]
        assert c.dlq_requeue(t.id) == 1  # back to ready, it fails again
        with pytest.raises(TaskFailed):
            c.result(t.id, timeout=30)
    starved.log.flush()
    lines = [json.loads(l) for l in open(starved.log.name) if l.startswith("{")]
    fails = [l for l in lines if l.get("task") == t.id and l["msg"].startswith("task failed")]
    assert [(l["attempt"], l["next"]) for l in fails][:2] == [(1, "retry"), (2, "dlq")]
    assert fails[0]["retry_in_ms"] > 0 and "memory budget" in fails[0]["error"] and fails[0]["max_attempts"] == 2
    assert fails[1]["msg"] == "task failed, moved to the dead-letter queue"
