"""Which client requests a node starts: none once it fail-stopped, and no
more than `limit` at once, so that an overload is shed at the door with
RESOURCE_EXHAUSTED (the client backs off) instead of queueing without bound
inside the node. Health checks and peer traffic never pass here."""

from __future__ import annotations

from shardlite.node.errors import ResourceExhausted
from shardlite.node.lifecycle import Lifecycle


class Admission:
    def __init__(self, lifecycle: Lifecycle, limit: int) -> None:
        self.lifecycle = lifecycle
        self.limit = limit
        self.in_flight = 0
        self.shed = 0  # requests refused for the limit, since start

    def __call__(self) -> Admission:
        """A place for one request, held while the `with` block runs (a stream
        holds it until it ends). Admission is its own context manager: a
        place has no state of its own, and a generator-based one cost a few
        microseconds on every call."""
        return self

    def __enter__(self) -> None:
        self.lifecycle.check_fatal()
        if self.in_flight >= self.limit:
            self.shed += 1
            raise ResourceExhausted(
                f"this node is serving {self.in_flight} requests, its limit "
                "(--max-concurrent-requests): retry with backoff, or use another node"
            )
        self.in_flight += 1

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1
