"""sluice-client: the official Python client of sluice's task API.

    from sluice_client import Client
    with Client("http://127.0.0.1:8080") as c:
        t = c.submit(["hello", "world"], priority=5, dedup_key="doc-17")
        emb = c.result(t.id, timeout=30)      # Embeddings
        print(len(emb.vectors[0]))
"""
from ._core import task_body
from ._types import (TERMINAL_STATES, Choice, Completion, DeadTask, Embedding, Embeddings, Expansion, Expansions,
                     QueueStats, Result, Submitted, Task, Usage, parse_result)
from .client import AsyncClient, Client
from .errors import (APIError, SluiceError, TaskCancelled, TaskEnded, TaskError, TaskExpired, TaskFailed,
                     TaskNotFound, TaskTimeout)

__all__ = ["Client", "AsyncClient", "task_body", "parse_result", "TERMINAL_STATES", "Submitted", "Task",
           "Embedding", "Embeddings", "Expansion", "Expansions", "Completion", "Choice", "Usage", "Result", "DeadTask", "QueueStats",
           "SluiceError", "APIError", "TaskNotFound", "TaskTimeout", "TaskEnded", "TaskFailed", "TaskExpired",
           "TaskCancelled", "TaskError"]
__version__ = "0.1.0"
