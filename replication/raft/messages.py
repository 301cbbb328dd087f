"""Plain data carried in and out of the Raft core.

Everything here is a small dataclass or enum with no behaviour beyond
encoding a membership change into entry bytes. Node ids are positive ints;
``NONE`` (0) means "no node" (no leader, no vote).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NONE = 0
"""The id that means "nobody": no leader known, no vote cast."""


class MessageType(enum.IntEnum):
    """Every message the core consumes or produces.

    Local messages (``HUP``, ``BEAT``, ``CHECK_QUORUM``, ``UNREACHABLE``,
    ``SNAP_STATUS``) never travel over the network; the core builds them
    itself or the driver reports them through a method.
    """

    HUP = 0  # local: start an election (§5.2)
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # local: a proposal (see RaftCore.propose)
    APP = 3  # AppendEntries (§5.3)
    APP_RESP = 4
    VOTE = 5  # RequestVote (§5.2)
    VOTE_RESP = 6
    SNAP = 7  # InstallSnapshot (§7)
    HEARTBEAT = 8  # an empty AppendEntries, carries commit and ReadIndex context
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach a peer
    SNAP_STATUS = 11  # local: the transport finished (or failed) sending a snapshot
    CHECK_QUORUM = 12  # local: leader checks it still hears from a quorum
    TRANSFER_LEADER = 13  # dissertation §3.10
    TIMEOUT_NOW = 14  # dissertation §3.10: "start an election now"
    READ_INDEX = 15  # dissertation §6.4
    READ_INDEX_RESP = 16
    PRE_VOTE = 17  # dissertation §9.6
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.PROP,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)


class EntryType(enum.IntEnum):
    """What an entry's ``data`` holds."""

    NORMAL = 0  # opaque application bytes (a serialized Frame)
    CONF_CHANGE = 1  # an encoded ConfChange (dissertation §4)
    EMPTY = 2  # the empty entry a new leader appends in its term (§5.4.2, §8); no data


ENTRY_OVERHEAD = 16
"""Bytes an entry counts for beyond its data (flow control, message size)."""


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes counted against message-size and in-flight limits."""
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before any message depending on it is sent (§5, Figure 2)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration: voters decide elections and commits, learners only follow."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        # Invariant: a node is a voter or a learner, never both.
        assert not (self.voters & self.learners), "voters and learners overlap"

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state at ``meta.index`` (§7); ``data`` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def index(self) -> int:
        return self.meta.index

    @property
    def term(self) -> int:
        return self.meta.term


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to react to (fail reads on leadership loss...)."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine applied ``index`` (§6.4)."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver. Handle the fields in this order:

    1. ``messages`` may be sent at once, even before anything is persisted
       (the leader's appends and heartbeats, vote requests, forwarded reads).
    2. Persist ``snapshot`` (if any), then ``entries`` (truncating any stored
       entry with index >= ``entries[0].index`` first), then ``hard_state``,
       with an fsync when ``must_sync`` is true.
    3. Only after that is durable, send ``persisted_messages`` (append and vote
       responses: they promise the sender that our state is on disk).
    4. Install ``snapshot`` into the state machine, then apply
       ``committed_entries`` in order. They may include entries from this
       Ready's ``entries``, hence after step 2.
    5. Serve ``read_states`` once the applied index reaches their index.
    6. Call ``RaftCore.advance(ready)``. Only then may ``ready()`` be called again.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
    # Messages the core sends to itself once this Ready is durable (the
    # leader's own append acknowledgement, a candidate's own vote). The driver
    # never sees them: advance() steps them back in.
    local: list[Message] = field(default_factory=list)


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # add a node as a voter, or promote a learner
    ADD_LEARNER = 1  # add a node as a learner, or demote a voter
    REMOVE_NODE = 2


_CC_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change (dissertation §4.1)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEADER.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node_id = _CC_HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[_CC_HEADER.size :]))

    def apply(self, cs: ConfState) -> ConfState:
        """The configuration that results from applying this change to ``cs``."""
        n = self.node_id
        if self.type is ConfChangeType.ADD_VOTER:
            return ConfState(cs.voters | {n}, cs.learners - {n})
        if self.type is ConfChangeType.ADD_LEARNER:
            return ConfState(cs.voters - {n}, cs.learners | {n})
        return ConfState(cs.voters - {n}, cs.learners - {n})

    def is_noop_for(self, cs: ConfState) -> bool:
        """True when applying the change would not alter ``cs``."""
        return self.apply(cs) == cs
