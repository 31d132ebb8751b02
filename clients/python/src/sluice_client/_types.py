"""Typed views of what the sluice task API answers (docs/api.md, docs/queue.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

#: States a task may be in. ``done`` means the worker answered; the answer can
#: still be an error (see :class:`TaskError`). Terminal: done, dlq, expired, cancelled.
TERMINAL_STATES = frozenset({"done", "dlq", "expired", "cancelled"})


@dataclass(frozen=True)
class Submitted:
    """The answer to a submit: the task's id, and whether an earlier task with
    the same ``dedup_key`` answered instead (``state`` is then ``deduplicated``)."""

    id: str
    queue: str
    state: str  # "queued" | "deduplicated" | "rejected" (batch only: the queue was full)
    deduplicated: bool

    @classmethod
    def from_json(cls, o: Dict[str, Any]) -> "Submitted":
        return cls(id=o.get("id") or "", queue=o.get("queue", ""), state=o["state"],
                   deduplicated=bool(o.get("deduplicated")))


@dataclass(frozen=True)
class Task:
    """A task as GET /v1/tasks/{id} shows it. Times are unix milliseconds."""

    id: str
    queue: str
    state: str
    attempts: int
    max_attempts: int
    priority: int
    enqueued_at_ms: int
    finished_at_ms: Optional[int]
    result: Any
    error: Optional[str]
    cancel_requested: bool = False
    request_id: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, o: Dict[str, Any]) -> "Task":
        return cls(id=o["id"], queue=o.get("queue", ""), state=o["state"], attempts=o.get("attempts", 0),
                   max_attempts=o.get("max_attempts", 0), priority=o.get("priority", 0),
                   enqueued_at_ms=o.get("enqueued_at_ms", 0), finished_at_ms=o.get("finished_at_ms"),
                   result=o.get("result"), error=o.get("error"), cancel_requested=bool(o.get("cancel_requested")),
                   request_id=o.get("request_id"), raw=o)


@dataclass(frozen=True)
class Embedding:
    index: int
    embedding: Union[List[float], str]  # a base64 string when encoding_format was "base64"


@dataclass(frozen=True)
class Embeddings:
    """The result of an ``embed`` task (the /v1/embeddings answer)."""

    model: str
    data: List[Embedding]
    prompt_tokens: int
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def vectors(self) -> List[Union[List[float], str]]:
        return [d.embedding for d in sorted(self.data, key=lambda d: d.index)]


@dataclass(frozen=True)
class Expansion:
    index: int
    term: str
    neighbours: List[Dict[str, Any]]  # [{"term": str, "score": float}, ...], best first


@dataclass(frozen=True)
class Expansions:
    """The result of an ``expand`` task (the /v1/expand answer)."""

    model: str
    data: List[Expansion]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """Token counts of a generation: ``cached_tokens`` of the prompt came from the prefix cache."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0

    @classmethod
    def from_json(cls, o: Dict[str, Any]) -> "Usage":
        return cls(prompt_tokens=int(o.get("prompt_tokens", 0)), completion_tokens=int(o.get("completion_tokens", 0)),
                   total_tokens=int(o.get("total_tokens", 0)),
                   cached_tokens=int((o.get("prompt_tokens_details") or {}).get("cached_tokens") or 0))


@dataclass(frozen=True)
class Choice:
    """One generated answer: ``text`` is the message content (chat) or the text
    (completion); ``finish_reason`` is ``stop`` (end of turn or a stop string)
    or ``length`` (max_tokens or the context ran out)."""

    index: int
    text: str
    finish_reason: Optional[str]
    role: Optional[str] = None  # "assistant" for a chat answer, None for a text completion
    logprobs: Any = None

    @classmethod
    def from_json(cls, i: int, o: Dict[str, Any]) -> "Choice":
        msg = o.get("message")
        text = (msg or {}).get("content") if msg is not None else o.get("text")
        return cls(index=int(o.get("index", i)), text=text or "", finish_reason=o.get("finish_reason"),
                   role=(msg or {}).get("role") if msg is not None else None, logprobs=o.get("logprobs"))


@dataclass(frozen=True)
class Completion:
    """The result of a ``generate`` task: the ``chat.completion`` (a body with
    ``messages``) or ``text_completion`` (a body with ``prompt``) answer of
    /v1/chat/completions or /v1/completions. ``text`` and ``finish_reason``
    are the first choice's; ``n`` > 1 gives more choices, by index."""

    id: str
    object: str  # "chat.completion" | "text_completion"
    model: str
    choices: List[Choice]
    usage: Usage
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> Optional[str]:
        return self.choices[0].finish_reason if self.choices else None

    @classmethod
    def from_json(cls, r: Dict[str, Any]) -> "Completion":
        return cls(id=r.get("id", ""), object=r.get("object", ""), model=r.get("model", ""), raw=r,
                   choices=[Choice.from_json(i, c) for i, c in enumerate(r.get("choices") or [])],
                   usage=Usage.from_json(r.get("usage") or {}))


Result = Union[Embeddings, Expansions, Completion, Dict[str, Any]]


def parse_result(r: Any) -> Result:
    """The typed view of a done task's result (an unknown shape comes back as it is)."""
    if not isinstance(r, dict):
        return r
    data = r.get("data")
    obj = r.get("object")
    if obj in ("chat.completion", "text_completion") or "choices" in r:
        return Completion.from_json(r)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "embedding" in data[0]:
            usage = r.get("usage") or {}
            return Embeddings(model=r.get("model", ""), prompt_tokens=usage.get("prompt_tokens", 0), raw=r,
                              data=[Embedding(index=d.get("index", i), embedding=d["embedding"])
                                    for i, d in enumerate(data)])
        if data[0].get("object") == "expansion":
            return Expansions(model=r.get("model", ""), raw=r,
                              data=[Expansion(index=d.get("index", i), term=d.get("term", ""),
                                              neighbours=d.get("neighbours") or []) for i, d in enumerate(data)])
    return r


@dataclass(frozen=True)
class DeadTask:
    """An entry of the dead-letter queue."""

    id: str
    dead_at_ms: int
    attempts: int
    max_attempts: int
    error: str


@dataclass(frozen=True)
class QueueStats:
    """Depths (ready, delayed, leased, dlq) and the queue's counters since it began."""

    queue: str
    ready: int
    delayed: int
    leased: int
    dlq: int
    counters: Dict[str, int]

    @classmethod
    def from_json(cls, o: Dict[str, Any]) -> "QueueStats":
        depth = ("ready", "delayed", "leased", "dlq")
        return cls(queue=o.get("queue", ""), **{k: int(o.get(k, 0)) for k in depth},
                   counters={k: v for k, v in o.items() if isinstance(v, int) and k not in depth})
