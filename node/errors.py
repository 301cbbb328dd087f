"""The node's exceptions. One place (node/rpc.py) maps them to gRPC statuses."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node reports to a client."""


class InvalidArgument(NodeError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class ConditionFailed(NodeError):
    """A compare-and-set condition did not hold; nothing was applied."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"condition failed on key {key!r}: expected version {expected}, current version "
            f"{actual}" + (" (key does not exist)" if actual == 0 else "")
        )


class ConditionFailedRemote(NodeError):
    """A forwarded write's condition failed on the leader (its message says how)."""


class Unavailable(NodeError):
    """The node cannot serve this now (shutting down, no leader); retry later."""

    def __init__(self, message: str, leader_hint: str = "") -> None:
        self.leader_hint = leader_hint
        super().__init__(message)


class OutOfRange(NodeError):
    """A requested index is no longer retained."""


class ResourceExhausted(NodeError):
    """Too much at once; back off and retry."""


class StorageError(NodeError):
    """The local disk failed; the outcome of a write is unknown."""
