"""What the sync and async clients share: request bodies, answers, retries."""
from __future__ import annotations

import random
from typing import Any, Dict, Iterable, List, Mapping, Optional

import httpx

from ._types import Result, Task, parse_result
from .errors import APIError, TaskCancelled, TaskError, TaskExpired, TaskFailed, TaskNotFound

#: The task's own fields; everything else in a task body belongs to its op.
TASK_FIELDS = ("op", "model", "queue", "priority", "deadline_ms", "delay_ms", "max_attempts", "result_ttl_ms",
               "dedup_key")

#: Longest single long-poll the server allows (GET /v1/tasks/{id}?wait= takes 0..300 s).
MAX_WAIT_S = 300.0

RETRY_STATUSES = (429, 503)


def task_body(input: Any = None, *, op: Optional[str] = None, model: Optional[str] = None,
              priority: Optional[int] = None, deadline_ms: Optional[int] = None, delay_ms: Optional[int] = None,
              max_attempts: Optional[int] = None, result_ttl_ms: Optional[int] = None,
              dedup_key: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
    """One task object for POST /v1/tasks. ``input`` goes to the op's input field
    (``input`` for embed; pass ``terms=`` for expand, ``body=`` fields for generate)."""
    b: Dict[str, Any] = {}
    for k, v in (("op", op), ("model", model), ("priority", priority), ("deadline_ms", deadline_ms),
                 ("delay_ms", delay_ms), ("max_attempts", max_attempts), ("result_ttl_ms", result_ttl_ms),
                 ("dedup_key", dedup_key)):
        if v is not None:
            b[k] = v
    if input is not None:
        b["input"] = input
    b.update({k: v for k, v in fields.items() if v is not None})
    return b


def generate_body(body: Mapping[str, Any], **task: Any) -> Dict[str, Any]:
    """A ``generate`` task: the OpenAI-style request body (model, messages or
    prompt, max_tokens, temperature, ...) passes through as the task's fields."""
    overlap = set(body) & set(TASK_FIELDS) - {"model"}
    if overlap:
        raise ValueError("generate: %s are task options; pass them as keywords" % ", ".join(sorted(overlap)))
    b = dict(body)
    b.update(task_body(op="generate", **task))
    return b


def batch_body(tasks: Iterable[Mapping[str, Any]], queue: Optional[str]) -> Dict[str, Any]:
    items: List[Dict[str, Any]] = [dict(t) for t in tasks]
    for i, t in enumerate(items):
        if "queue" in t:
            raise ValueError("submit_many: tasks[%d] names a queue; a batch goes to one queue (queue=)" % i)
    b: Dict[str, Any] = {"tasks": items}
    if queue is not None:
        b["queue"] = queue
    return b


def error_of(resp: httpx.Response) -> APIError:
    try:
        body = resp.json()
        e = body.get("error") or {}
    except ValueError:
        body, e = None, {}
    cls = TaskNotFound if resp.status_code == 404 and e.get("code") == "task_not_found" else APIError
    return cls(resp.status_code, e.get("code") or "http_%d" % resp.status_code,
               e.get("message") or resp.text[:200], e.get("param"), body)


def retry_delay(resp: Optional[httpx.Response], attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1-based): the server's Retry-After
    when it gives one (capped at 60 s), else 0.25 s doubling to 8 s, jittered."""
    if resp is not None:
        ra = resp.headers.get("retry-after")
        if ra:
            try:
                return min(max(float(ra), 0.0), 60.0)
            except ValueError:
                pass
    base = min(8.0, 0.25 * 2 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)


def outcome(task: Task) -> Result:
    """The typed result of a finished task, or the exception its end calls for."""
    if task.state == "dlq":
        raise TaskFailed(task, "task %s failed after %d attempt(s): %s" % (task.id, task.attempts, task.error))
    if task.state == "expired":
        raise TaskExpired(task, "task %s expired: %s" % (task.id, task.error))
    if task.state == "cancelled":
        raise TaskCancelled(task, "task %s was cancelled: %s" % (task.id, task.error))
    r = task.result
    if isinstance(r, dict) and isinstance(r.get("error"), dict):
        e = r["error"]
        raise TaskError(task, int(r.get("status") or e.get("status") or 500), e.get("code") or "error",
                        e.get("message") or "")
    return parse_result(r)


def headers(api_key: Optional[str]) -> Dict[str, str]:
    h = {"user-agent": "sluice-client-python/0.1"}
    if api_key:
        h["authorization"] = "Bearer " + api_key
    return h
