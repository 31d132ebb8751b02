#!/usr/bin/env python3
"""A producer, as a Python user writes one: run `make run` in the repository, then

    pip install ./clients/python
    python clients/python/examples/embed_tasks.py

SLUICE_URL (default http://127.0.0.1:8080), SLUICE_API_KEY and SLUICE_QUEUE
(default: the server's first queue) point it elsewhere.
"""
import os
import sys

from sluice_client import Client, Embeddings, TaskCancelled, TaskTimeout, task_body

DOCS = {
    "doc-1": "Redis queues hold the backlog while the GPU works.",
    "doc-2": "Micro-batching puts many small requests into one forward pass.",
    "doc-3": "A dead-letter queue keeps what failed for a human to look at.",
}


def main() -> int:
    url = os.environ.get("SLUICE_URL", "http://127.0.0.1:8080")
    with Client(url, api_key=os.environ.get("SLUICE_API_KEY"), queue=os.environ.get("SLUICE_QUEUE")) as c:
        # many tasks, one request; dedup keys make a re-run of this script a no-op while results live
        tasks = c.submit_many([task_body(text, dedup_key=key, priority=10, deadline_ms=120_000)
                               for key, text in DOCS.items()])
        for key, t in zip(DOCS, tasks):
            try:
                r = c.result(t.id, timeout=60)
            except TaskTimeout as e:
                print("%s: still %s, try again later" % (key, e.state))
                continue
            assert isinstance(r, Embeddings)
            v = r.vectors[0]
            print("%s -> task %s%s: %d dims, first %.4f" % (key, t.id, " (deduplicated)" if t.deduplicated else "",
                                                            len(v), v[0]))
        # a task for later, cancelled before it runs
        later = c.submit("not needed after all", delay_ms=60_000)
        c.cancel(later.id)
        try:
            c.result(later.id, timeout=5)
        except TaskCancelled:
            print("task %s cancelled before it ran" % later.id)
        s = c.stats()
        print("queue %s: ready %d, delayed %d, leased %d, dlq %d, acked %d" % (
            s.queue, s.ready, s.delayed, s.leased, s.dlq, s.counters.get("acked", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
