"""Exceptions of the sluice client. Every one derives from :class:`SluiceError`."""
from __future__ import annotations

from typing import Any, Dict, Optional


class SluiceError(Exception):
    """Base class."""


class APIError(SluiceError):
    """The server refused a request: ``status`` (HTTP), ``code`` and ``param`` from its error object."""

    def __init__(self, status: int, code: str, message: str, param: Optional[str] = None,
                 body: Optional[Dict[str, Any]] = None):
        super().__init__("%d %s: %s" % (status, code, message))
        self.status, self.code, self.message, self.param, self.body = status, code, message, param, body


class TaskNotFound(APIError):
    """No such task (never made, or its result lifetime passed)."""


class TaskTimeout(SluiceError, TimeoutError):
    """result(timeout=...) ran out while the task was still waiting or running; ``state`` is its last state."""

    def __init__(self, task_id: str, state: str, timeout: float):
        super().__init__("task %s still %s after %gs" % (task_id, state, timeout))
        self.task_id, self.state, self.timeout = task_id, state, timeout


class TaskEnded(SluiceError):
    """The task ended without a usable result; ``task`` is the task as last seen."""

    def __init__(self, task: Any, message: str):
        super().__init__(message)
        self.task = task


class TaskFailed(TaskEnded):
    """Every attempt failed: the task is in the dead-letter queue (state ``dlq``)."""


class TaskExpired(TaskEnded):
    """Its deadline passed before it ran (state ``expired``)."""


class TaskCancelled(TaskEnded):
    """It was cancelled (state ``cancelled``)."""


class TaskError(TaskEnded):
    """The task is ``done`` but its result is an error object (the worker refused it,
    e.g. the model was gone or an input too long): ``status``, ``code`` as over HTTP."""

    def __init__(self, task: Any, status: int, code: str, message: str):
        super().__init__(task, "task %s: %d %s: %s" % (task.id, status, code, message))
        self.status, self.code, self.message = status, code, message
