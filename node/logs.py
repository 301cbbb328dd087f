"""Logging: structlog renders every line, JSON in containers, readable locally.

Code logs through the standard `logging` module as it always did (fields go
in `extra=`); structlog's ProcessorFormatter gives those lines and structlog's
own the same fields and the same format. Every line carries the node's id and
Raft term; a line caused by a request carries its method, org, namespace and
request id (`request_context`, bound by node/rpc.py for the call's duration).
Request values, keys and metadata (tokens) are never put on a line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from google.protobuf.message import Message

# What every line gets besides its own fields: set once per process.
_term_source: Callable[[], int] | None = None


def set_term_source(term: Callable[[], int] | None) -> None:
    """Every line from now on carries `term()` (the node's current Raft term)."""
    global _term_source
    _term_source = term


class RequestContext:
    """The request a task is serving. Its fields are read only when a line is
    written: binding costs one context variable per call, not four."""

    __slots__ = ("_request_id", "method", "request")

    def __init__(self, method: str) -> None:
        self.method = method
        self.request: Message | None = None
        self._request_id = ""

    def fields(self) -> dict[str, str]:
        fields = {"method": self.method}
        request = self.request
        if request is not None:
            for name in ("org", "namespace"):
                if name in request.DESCRIPTOR.fields_by_name:
                    fields[name] = getattr(request, name)
        fields["request_id"] = self.request_id
        return fields

    @property
    def request_id(self) -> str:
        """The client's request id (client_id:seq) when the request has one,
        else one made up for this call, so its lines can be told apart."""
        if not self._request_id:
            rid = getattr(self.request, "request_id", None) if self.request else None
            if rid is not None and rid.client_id:
                self._request_id = f"{rid.client_id}:{rid.seq}"
            else:
                self._request_id = os.urandom(6).hex()
        return self._request_id


# The context of the call a task serves: one context variable, read only
# when a line is written (binding it in structlog's contextvars as well cost
# a few microseconds on every call).
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "shardlite_request", default=None
)


class RequestScope:
    """A call's context, bound to the running task while the block runs."""

    __slots__ = ("_token", "context")
    _token: contextvars.Token[RequestContext | None]

    def __init__(self, method: str) -> None:
        self.context = RequestContext(method)

    def __enter__(self) -> RequestContext:
        self._token = _current.set(self.context)
        return self.context

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def request_context(method: str) -> RequestScope:
    """`with request_context(name):` binds the call's context until the block ends."""
    return RequestScope(method)


def note_request(request: Message) -> None:
    """The parsed request of the call being served (if one is bound)."""
    context = _current.get()
    if context is not None:
        context.request = request


EventDict = MutableMapping[str, Any]


class _NodeFields:
    """Adds the node id and term, and expands a bound request context."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def __call__(self, logger: object, method: str, event: EventDict) -> EventDict:
        context = _current.get()
        if context is not None:
            for key, value in context.fields().items():
                event.setdefault(key, value)
        event.setdefault("node", self.node_id)
        if _term_source is not None and "term" not in event:
            with contextlib.suppress(Exception):
                event["term"] = _term_source()
        return event


_LEADING = ("ts", "level", "node", "term", "logger", "msg")


def _leading_keys(logger: object, method: str, event: EventDict) -> EventDict:
    """The fields every line has first, the line's own after them."""
    ordered = {key: event.pop(key) for key in _LEADING if key in event}
    ordered.update(event)
    return ordered


def _upper_level(logger: object, method: str, event: EventDict) -> EventDict:
    event["level"] = str(event.get("level", "")).upper()
    return event


def setup_logging(fmt: str, level: str, node_id: str) -> None:
    """One handler on the root logger, on stderr: JSON lines (`fmt` "json":
    ts, level, node, term, logger, msg, then the line's own fields) or text."""
    # ConsoleRenderer puts "timestamp" first; JSON lines keep the old "ts".
    ts_key = "ts" if fmt == "json" else "timestamp"

    def shared(*extra: Any) -> list[Any]:
        return [
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            *extra,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key=ts_key),
            _NodeFields(node_id),
        ]

    renderer: list[Any]
    if fmt == "json":
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            _leading_keys,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        renderer = [_upper_level, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared(structlog.stdlib.ExtraAdder()),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
