"""Every exception the Raft core raises, in one place."""

from __future__ import annotations

import enum

from .messages import NONE


class RaftError(Exception):
    """Base class of the Raft core's errors."""


class CompactedError(RaftError):
    """The requested index is below the first index: it was compacted into a snapshot."""


class UnavailableError(RaftError):
    """The requested index is above the last index."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage cannot produce a snapshot right now; the leader retries later."""


class DropReason(enum.Enum):
    NOT_LEADER = "not leader"
    TRANSFER_IN_PROGRESS = "leadership transfer in progress"
    CONF_CHANGE_PENDING = "a membership change is already in progress"
    INVALID_CONF_CHANGE = "invalid membership change"
    NOT_READY = "leader has not committed an entry in its term yet"


class ProposalDroppedError(RaftError):
    """The core refused a proposal, a read or a request; nothing was appended.

    ``leader_hint`` is the leader this node knows of (``NONE`` if unknown), so
    the driver can forward the request there.
    """

    def __init__(self, reason: DropReason, leader_hint: int = NONE) -> None:
        super().__init__(f"{reason.value} (leader hint {leader_hint})")
        self.reason = reason
        self.leader_hint = leader_hint
