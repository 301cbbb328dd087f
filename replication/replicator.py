"""The Replicator contract: what every replicator (no-op, Raft) promises the node.

`propose` answers "did it replicate", never "what did applying say": a failed
compare-and-set is the applier's result, not a rejection (hashicorp/raft's split).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shardlite.v1 import frame_pb2

if TYPE_CHECKING:
    from shardlite.replication.observer import Observer


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

    def __init__(
        self, reason: RejectReason, detail: str = "", leader_hint: str = "", leader_peer: str = ""
    ) -> None:
        self.reason = reason
        self.detail = detail
        # Where clients reach the leader, and where members do (a write is
        # forwarded there); either is "" when not known.
        self.leader_hint = leader_hint
        self.leader_peer = leader_peer
        text = reason.value + (f": {detail}" if detail else "")
        if leader_hint:
            text += f" (leader: {leader_hint})"
        super().__init__(text)


class MalformedPeerMessage(Exception):
    """A peer sent a message that decodes but names nothing we know (an
    unknown message or entry type): the sender is broken or not one of us."""


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
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        """Committed frames in index order from `from_index` (>= 1), then live
        ones, in batches: each a non-empty list of what was there to take at
        once (an applier applies a batch in one go, with no task between it
        and the commit).

        Indices may skip entries that carry no frame (Raft's own entries); with
        `marks`, such an entry comes as (index, None) instead, so an applier
        knows it is past it. Raises Compacted when `from_index` is older than
        the oldest retained."""
        ...

    async def read_barrier(self) -> int:
        """An index a linearizable read must wait to be applied before reading."""
        ...

    def status(self) -> ReplicatorStatus: ...

    def compact(self, applied_index: int) -> None:
        """Everything up to `applied_index` is durably applied; older frames may go."""
        ...

    async def close(self) -> None: ...


# -- optional capabilities ----------------------------------------------------
#
# What only some replicators can do is asked for, not type-checked: the node
# tests `isinstance(replicator, Leadership)` (a structural check, like Go's
# interface assertion in hashicorp/raft's WithPeers) and gets the capability or
# runs without it. The no-op replicator has only ProposeMany; Raft has all.


@runtime_checkable
class Leadership(Protocol):
    """Proposals go through a leader that may be another node."""

    @property
    def leader_address(self) -> str:
        """Where the current leader serves its peers ("" while none is known)."""
        ...

    @property
    def leader_client_address(self) -> str:
        """Where the current leader serves clients ("" while not known)."""
        ...

    async def leader_changed(self, within: float) -> None:
        """Return when the leader changes, or after `within` seconds."""
        ...

    def leader_unreachable(self) -> bool:
        """True when this node cannot send to the leader it knows (a partition
        made on purpose): a forward would certainly not arrive."""
        ...

    def peer_metadata(self) -> tuple[tuple[str, str], ...]:
        """What a call to another member carries (the cluster's id)."""
        ...


@runtime_checkable
class ProposeMany(Protocol):
    """Many frames proposed at once (a MultiWrite): one hand-off to the
    replicator and one wait for the lot, instead of one per frame."""

    async def propose_many(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        """Order each frame as its own entry (its own index: a version names one
        value), in the given order; return once every frame that was taken is
        committed. One outcome per frame, in order, with the meanings of
        `propose`: Accepted(index), or the Rejected that `propose` would have
        raised for it. A refusal of one frame (too large, the pending bounds)
        leaves the others alone; a refusal of the replicator (not leader,
        shutting down) is every frame's. Never raises Rejected itself."""
        ...


@runtime_checkable
class MemberFeatures(Protocol):
    """A replicator whose members may run different versions (a rolling
    upgrade): what each can apply is known before the leader relies on it."""

    def every_member_understands(self, feature: str) -> bool:
        """True once every other member announced `feature`."""
        ...


class MemberView(Protocol):
    """One member as the replicator sees it."""

    @property
    def name(self) -> str: ...
    @property
    def id(self) -> int: ...
    @property
    def address(self) -> str:
        """Where members reach it."""
        ...

    @property
    def client_address(self) -> str:
        """Where clients reach it ("" while not known)."""
        ...

    @property
    def learner(self) -> bool: ...
    @property
    def leader(self) -> bool: ...
    @property
    def match_index(self) -> int: ...


@runtime_checkable
class Membership(Protocol):
    """The set of members can change (dissertation §4). Changes are made on the
    leader: elsewhere they raise Rejected(NOT_LEADER, leader_hint=...)."""

    def member_list(self) -> Sequence[MemberView]: ...

    def remember_member(self, name: str, address: str) -> None:
        """Learn a member's address (a node joining learns them from the answer)."""
        ...

    async def add_member(self, name: str, address: str, *, learner_only: bool = False) -> None: ...

    async def remove_member(self, name: str) -> None: ...

    async def transfer_leader(self, name: str) -> str:
        """Hand leadership to `name` ("" = the best other voter); the new leader."""
        ...


@runtime_checkable
class PeerEndpoint(Protocol):
    """The replicator hears its peers through the node's gRPC server."""

    def peer_servicer(self) -> PeerServicer:
        """The implementation of the peer service's Send and SendSnapshot."""
        ...


class PeerServicer(Protocol):
    async def Send(self, request_iterator: Any, context: Any) -> Any: ...
    async def MessagePort(self, request: Any, context: Any) -> Any: ...
    async def SendSnapshot(self, request_iterator: Any, context: Any) -> Any: ...

    def refusal(self, context: Any) -> str | None:
        """Why the caller may not talk to this member (another cluster), or None."""
        ...

    def close(self) -> None:
        """End every incoming stream now (peers reconnect to someone alive)."""
        ...


@runtime_checkable
class Partitioning(Protocol):
    """Fault injection: drop traffic to or from chosen members, as a network
    partition would (symmetric or not)."""

    def partition(
        self, drop_to: Sequence[str], drop_from: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """Replace the partition; return (dropping_to, dropping_from) by name."""
        ...

    def drops_from(self, name: str) -> bool:
        """True when what `name` sends is dropped."""
        ...


@runtime_checkable
class Observable(Protocol):
    """The replicator reports its events (replication/observer.py) and tells
    what a scrape asks beyond status(): its log's size, its peer links."""

    def observe(self, observer: Observer) -> None:
        """Report every event from now on to `observer`."""
        ...

    def log_bytes(self) -> int:
        """Bytes of the log on disk."""
        ...

    def peer_connections(self) -> dict[str, bool]:
        """Each peer by name: True while a message stream to it is open."""
        ...
