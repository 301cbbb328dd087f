"""Raft, split the way etcd-io/raft splits it: a pure core (this package's
``RaftCore``) that a driver ticks, steps and drains through ``Ready``."""

from .core import CAMPAIGN_TRANSFER, Config, Logger, Proposed, RaftCore, Status
from .errors import (
    CompactedError,
    DropReason,
    ProposalDroppedError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .progress import ProgressState, ProgressStatus
from .read_context import ReadContexts
from .storage import MemoryStorage, Storage, bootstrap_entries

__all__ = [
    "CAMPAIGN_TRANSFER",
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "DropReason",
    "Entry",
    "EntryType",
    "HardState",
    "Logger",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDroppedError",
    "Proposed",
    "RaftCore",
    "RaftError",
    "ReadContexts",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "Storage",
    "UnavailableError",
    "bootstrap_entries",
]
