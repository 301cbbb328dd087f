"""ReadIndex bookkeeping (dissertation §6.4).

The leader records the commit index when a read arrives, then confirms it is
still the leader with a round of heartbeats carrying the read's context. Once a
majority has answered, the read (and every read queued before it) may be served
as soon as the state machine has applied that index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import NONE


@dataclass(slots=True)
class ReadIndexStatus:
    index: int  # commit index when the request arrived
    context: bytes
    frm: int  # NONE (or the leader itself) for a local request, else the follower to answer
    # The leader's clock when the round began, and the configuration it may
    # ground a read lease in (None: it may not; see lease.py).
    started: float = 0.0
    lease_conf: int | None = None
    answer: bool = True  # False: a round only to renew the lease, nobody waits on it
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(
        self,
        index: int,
        context: bytes,
        frm: int = NONE,
        *,
        started: float = 0.0,
        lease_conf: int | None = None,
        answer: bool = True,
    ) -> None:
        if context in self.pending:
            return  # a duplicate request; the first one answers it
        self.pending[context] = ReadIndexStatus(index, context, frm, started, lease_conf, answer)
        self.queue.append(context)

    def recv_ack(self, node: int, context: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(context)
        if rs is None:
            return None
        rs.acks[node] = True
        return rs.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Release the request with ``context`` and every request queued before it:
        a heartbeat round that confirms a later read confirms the earlier ones."""
        try:
            i = self.queue.index(context)
        except ValueError:
            return []
        released = [self.pending.pop(c) for c in self.queue[: i + 1]]
        del self.queue[: i + 1]
        return released

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
