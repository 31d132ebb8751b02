"""The sluice task API over HTTP: :class:`Client` (sync) and :class:`AsyncClient`.

Both speak to ``sluice serve`` (POST/GET/DELETE /v1/tasks, POST /v1/tasks/batch,
the admin routes /v1/admin/queue/stats and /v1/admin/dlq...). Requests answered
429 or 503 are retried up to ``max_retries`` times after the server's
``Retry-After``; a submit retried this way is safe to repeat when it carries a
``dedup_key`` (without one, a 503 whose enqueue did reach Redis can leave two tasks).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional

import httpx

from . import _core
from ._types import DeadTask, QueueStats, Result, Submitted, Task
from .errors import TaskTimeout

DEFAULT_URL = "http://127.0.0.1:8080"


class _Base:
    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: Optional[str] = None, queue: Optional[str] = None,
                 timeout: float = 30.0, max_retries: int = 5):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.queue = queue  # None: the server's first queue
        self.timeout = timeout
        self.max_retries = max_retries

    def _q(self, queue: Optional[str]) -> Dict[str, str]:
        q = queue if queue is not None else self.queue
        return {"queue": q} if q is not None else {}

    def _with_queue(self, body: Dict[str, Any], queue: Optional[str]) -> Dict[str, Any]:
        body.update(self._q(queue))
        return body

    @staticmethod
    def _wait_for(remaining: Optional[float]) -> float:
        return _core.MAX_WAIT_S if remaining is None else max(0.0, min(_core.MAX_WAIT_S, remaining))


class Client(_Base):
    """A synchronous client. Use as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: Optional[str] = None, queue: Optional[str] = None,
                 timeout: float = 30.0, max_retries: int = 5, http: Optional[httpx.Client] = None):
        super().__init__(base_url, api_key=api_key, queue=queue, timeout=timeout, max_retries=max_retries)
        self._http = http or httpx.Client(base_url=self.base_url, headers=_core.headers(api_key), timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, json: Any = None, params: Optional[Mapping[str, str]] = None,
              timeout: Optional[float] = None, ok: Iterable[int] = (200, 202)) -> Dict[str, Any]:
        for attempt in range(1, self.max_retries + 2):
            resp = self._http.request(method, path, json=json, params=params,
                                      timeout=timeout if timeout is not None else self.timeout)
            if resp.status_code in ok:
                return resp.json()
            if resp.status_code not in _core.RETRY_STATUSES or attempt > self.max_retries:
                raise _core.error_of(resp)
            time.sleep(_core.retry_delay(resp, attempt))
        raise AssertionError("unreachable")

    # ---- producing

    def submit(self, input: Any = None, *, queue: Optional[str] = None, **options: Any) -> Submitted:
        """Enqueue one task (options: op, model, priority 0..255, deadline_ms,
        delay_ms, max_attempts, result_ttl_ms, dedup_key, and the op's fields)."""
        body = self._with_queue(_core.task_body(input, **options), queue)
        return Submitted.from_json(self._call("POST", "/v1/tasks", json=body))

    def submit_many(self, tasks: Iterable[Mapping[str, Any]], *, queue: Optional[str] = None) -> List[Submitted]:
        """Enqueue up to 512 tasks (dicts as :func:`task_body` makes) in one request
        and one Redis round trip. All are validated first: one bad task refuses all."""
        body = _core.batch_body(tasks, queue if queue is not None else self.queue)
        return [Submitted.from_json(o) for o in self._call("POST", "/v1/tasks/batch", json=body)["data"]]

    def generate(self, body: Mapping[str, Any], *, queue: Optional[str] = None, **options: Any) -> Submitted:
        """Enqueue a ``generate`` task: body is a /v1/chat/completions body
        (``messages``) or a /v1/completions body (``prompt``) with their fields
        (model, max_tokens, temperature, n, stop, seed, ...), checked by the
        server now (APIError 400/404 naming the field); options are the task's
        (priority, deadline_ms, dedup_key, ...). ``result()`` then gives a
        :class:`Completion`. ``stream`` is ignored: the text is not streamed
        over HTTP (Redis clients can follow ``{queue}:s:<id>``, docs/api.md)."""
        return Submitted.from_json(self._call("POST", "/v1/tasks",
                                              json=self._with_queue(_core.generate_body(body, **options), queue)))

    # ---- looking

    def get(self, task_id: str, *, wait: float = 0, queue: Optional[str] = None) -> Task:
        """The task now, or after up to ``wait`` seconds (0..300, fractions allowed)
        if it has not ended by then: a wait that runs out answers its current state."""
        params = self._q(queue)
        if wait > 0:
            params["wait"] = "%.3f" % wait
        return Task.from_json(self._call("GET", "/v1/tasks/" + task_id, params=params,
                                         timeout=self.timeout + wait))

    def wait(self, task_id: str, timeout: Optional[float] = None, *, queue: Optional[str] = None) -> Task:
        """Block until the task ends (or raise :class:`TaskTimeout` after timeout seconds; None: no limit)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if end is None else end - time.monotonic()
            t = self.get(task_id, wait=self._wait_for(remaining), queue=queue)
            if t.terminal:
                return t
            if end is not None and time.monotonic() >= end:
                raise TaskTimeout(task_id, t.state, timeout or 0)

    def result(self, task_id: str, timeout: Optional[float] = None, *, queue: Optional[str] = None) -> Result:
        """The typed result (Embeddings, Expansions, Completion) once the task is
        done; raises TaskFailed, TaskExpired, TaskCancelled, TaskError or TaskTimeout."""
        return _core.outcome(self.wait(task_id, timeout, queue=queue))

    def cancel(self, task_id: str, *, queue: Optional[str] = None) -> str:
        """"cancelled" (it had not started) or "cancelling" (it is running; the
        worker drops it). A task that has ended: APIError 409 task_finished."""
        return self._call("DELETE", "/v1/tasks/" + task_id, params=self._q(queue))["state"]

    # ---- operating (admin scope)

    def stats(self, *, queue: Optional[str] = None) -> QueueStats:
        return QueueStats.from_json(self._call("GET", "/v1/admin/queue/stats", params=self._q(queue)))

    def dlq(self, *, offset: int = 0, limit: int = 100, queue: Optional[str] = None) -> List[DeadTask]:
        """Dead-letter entries, oldest first."""
        params = dict(self._q(queue), offset=str(offset), limit=str(limit))
        return [DeadTask(id=o["id"], dead_at_ms=o["dead_at_ms"], attempts=o["attempts"],
                         max_attempts=o["max_attempts"], error=o["error"])
                for o in self._call("GET", "/v1/admin/dlq", params=params)["data"]]

    def dlq_requeue(self, task_id: Optional[str] = None, *, all: bool = False, queue: Optional[str] = None) -> int:
        """Back to ready with attempts reset: one entry, or every one (all=True). Returns how many moved."""
        return self._call("POST", "/v1/admin/dlq/requeue", params=self._q(queue),
                          json=_dlq_requeue_body(task_id, all))["requeued"]

    def dlq_purge(self, *, all: bool = False, keep: Optional[int] = None, older_than_ms: Optional[int] = None,
                  queue: Optional[str] = None) -> int:
        """Delete entries: all, or beyond the newest ``keep`` and/or older than ``older_than_ms``."""
        return self._call("POST", "/v1/admin/dlq/purge", params=self._q(queue),
                          json=_dlq_purge_body(all, keep, older_than_ms))["purged"]


class AsyncClient(_Base):
    """The same calls as :class:`Client`, as coroutines (``async with AsyncClient() as c``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: Optional[str] = None, queue: Optional[str] = None,
                 timeout: float = 30.0, max_retries: int = 5, http: Optional[httpx.AsyncClient] = None):
        super().__init__(base_url, api_key=api_key, queue=queue, timeout=timeout, max_retries=max_retries)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, headers=_core.headers(api_key),
                                               timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, json: Any = None, params: Optional[Mapping[str, str]] = None,
                    timeout: Optional[float] = None, ok: Iterable[int] = (200, 202)) -> Dict[str, Any]:
        for attempt in range(1, self.max_retries + 2):
            resp = await self._http.request(method, path, json=json, params=params,
                                            timeout=timeout if timeout is not None else self.timeout)
            if resp.status_code in ok:
                return resp.json()
            if resp.status_code not in _core.RETRY_STATUSES or attempt > self.max_retries:
                raise _core.error_of(resp)
            await asyncio.sleep(_core.retry_delay(resp, attempt))
        raise AssertionError("unreachable")

    async def submit(self, input: Any = None, *, queue: Optional[str] = None, **options: Any) -> Submitted:
        body = self._with_queue(_core.task_body(input, **options), queue)
        return Submitted.from_json(await self._call("POST", "/v1/tasks", json=body))

    async def submit_many(self, tasks: Iterable[Mapping[str, Any]], *, queue: Optional[str] = None) -> List[Submitted]:
        body = _core.batch_body(tasks, queue if queue is not None else self.queue)
        return [Submitted.from_json(o) for o in (await self._call("POST", "/v1/tasks/batch", json=body))["data"]]

    async def generate(self, body: Mapping[str, Any], *, queue: Optional[str] = None, **options: Any) -> Submitted:
        return Submitted.from_json(await self._call("POST", "/v1/tasks",
                                                    json=self._with_queue(_core.generate_body(body, **options), queue)))

    async def get(self, task_id: str, *, wait: float = 0, queue: Optional[str] = None) -> Task:
        params = self._q(queue)
        if wait > 0:
            params["wait"] = "%.3f" % wait
        return Task.from_json(await self._call("GET", "/v1/tasks/" + task_id, params=params,
                                               timeout=self.timeout + wait))

    async def wait(self, task_id: str, timeout: Optional[float] = None, *, queue: Optional[str] = None) -> Task:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if end is None else end - time.monotonic()
            t = await self.get(task_id, wait=self._wait_for(remaining), queue=queue)
            if t.terminal:
                return t
            if end is not None and time.monotonic() >= end:
                raise TaskTimeout(task_id, t.state, timeout or 0)

    async def result(self, task_id: str, timeout: Optional[float] = None, *, queue: Optional[str] = None) -> Result:
        return _core.outcome(await self.wait(task_id, timeout, queue=queue))

    async def cancel(self, task_id: str, *, queue: Optional[str] = None) -> str:
        return (await self._call("DELETE", "/v1/tasks/" + task_id, params=self._q(queue)))["state"]

    async def stats(self, *, queue: Optional[str] = None) -> QueueStats:
        return QueueStats.from_json(await self._call("GET", "/v1/admin/queue/stats", params=self._q(queue)))

    async def dlq(self, *, offset: int = 0, limit: int = 100, queue: Optional[str] = None) -> List[DeadTask]:
        params = dict(self._q(queue), offset=str(offset), limit=str(limit))
        return [DeadTask(id=o["id"], dead_at_ms=o["dead_at_ms"], attempts=o["attempts"],
                         max_attempts=o["max_attempts"], error=o["error"])
                for o in (await self._call("GET", "/v1/admin/dlq", params=params))["data"]]

    async def dlq_requeue(self, task_id: Optional[str] = None, *, all: bool = False,
                          queue: Optional[str] = None) -> int:
        return (await self._call("POST", "/v1/admin/dlq/requeue", params=self._q(queue),
                                 json=_dlq_requeue_body(task_id, all)))["requeued"]

    async def dlq_purge(self, *, all: bool = False, keep: Optional[int] = None, older_than_ms: Optional[int] = None,
                        queue: Optional[str] = None) -> int:
        return (await self._call("POST", "/v1/admin/dlq/purge", params=self._q(queue),
                                 json=_dlq_purge_body(all, keep, older_than_ms)))["purged"]


def _dlq_requeue_body(task_id: Optional[str], all: bool) -> Dict[str, Any]:
    if (task_id is None) == (not all):
        raise ValueError("dlq_requeue: give a task id or all=True")
    return {"all": True} if all else {"id": task_id}


def _dlq_purge_body(all: bool, keep: Optional[int], older_than_ms: Optional[int]) -> Dict[str, Any]:
    b: Dict[str, Any] = {"all": True} if all else {}
    if keep is not None:
        b["keep"] = keep
    if older_than_ms is not None:
        b["older_than_ms"] = older_than_ms
    return b
