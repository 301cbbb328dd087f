"""The Replicator contract: what every replicator (no-op, Raft) promises the node.

`propose` answers "did it replicate", never "what did applying say": a failed
compare-and-set is the applier's result, not a rejection (hashicorp/raft's split).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from proto import frame_pb2


class RejectReason(enum.Enum):
    NOT_LEADER = "not leader"
    LEADERSHIP_LOST = "leadership lost"
    SHUTTING_DOWN = "shutting down"
    QUEUE_FULL = "queue full"
    TOO_LARGE = "too large"
    INVALID = "invalid"
    TRANSFER_IN_PROGRESS = "leadership transfer in progress"
    STORAGE_FAILED = "storage failed"
    CONFLICT = "a conflicting change is in progress"


class Rejected(Exception):
    """The frame was not accepted and will never be applied (for LEADERSHIP_LOST
    and STORAGE_FAILED it may still be: the outcome is unknown)."""

    def __init__(self, reason: RejectReason, detail: str = "", leader_hint: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.leader_hint = leader_hint
        text = reason.value + (f": {detail}" if detail else "")
        if leader_hint:
            text += f" (leader: {leader_hint})"
        super().__init__(text)


class Compacted(Exception):
    """A subscriber asked for an index that is no longer retained."""

    def __init__(self, requested: int, first_index: int) -> None:
        self.requested = requested
        self.first_index = first_index
        super().__init__(
            f"index {requested} is no longer retained; the oldest retained index is {first_index}"
        )


@dataclass(frozen=True)
class Accepted:
    index: int


@dataclass(frozen=True)
class ReplicatorStatus:
    kind: str
    role: str
    term: int
    leader: str
    commit_index: int
    first_index: int
    last_index: int
    members: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Replicator(Protocol):
    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        """Order `frame`; return once it is committed (durable on a quorum).

        Raises Rejected when it was not accepted."""
        ...

    def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[tuple[int, frame_pb2.Frame | None]]:
        """Committed frames in index order from `from_index` (>= 1), then live ones.

        Indices may skip entries that carry no frame (Raft's own entries); with
        `marks`, such an entry yields (index, None) instead, so an applier knows
        it is past it. Raises Compacted when `from_index` is older than the
        oldest retained."""
        ...

    async def read_barrier(self) -> int:
        """An index a linearizable read must wait to be applied before reading."""
        ...

    def status(self) -> ReplicatorStatus: ...

    def compact(self, applied_index: int) -> None:
        """Everything up to `applied_index` is durably applied; older frames may go."""
        ...

    async def close(self) -> None: ...
