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


class FailedPrecondition(NodeError):
    """The node is not in a state to do this (e.g. a cluster RPC on a single node)."""


class Unavailable(NodeError):
    """The node cannot serve this now (shutting down, no leader); retry later."""

    def __init__(self, message: str, leader_hint: str = "") -> None:
        self.leader_hint = leader_hint
        super().__init__(message)


class OutcomeUnknown(Unavailable):
    """A write may be in the log: it was proposed (or may have reached the
    leader) and then something failed. Never propose it again under a new id:
    retrying with the same request_id applies it at most once."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"outcome unknown: retry with the same request_id ({detail})")


class OutOfRange(NodeError):
    """A requested index is no longer retained."""


class ResourceExhausted(NodeError):
    """Too much at once; back off and retry."""


class StorageError(NodeError):
    """The local disk failed; the outcome of a write is unknown."""


class Unauthenticated(NodeError):
    """Authentication is on and the call carries no valid token."""


class PermissionDenied(NodeError):
    """The token may not do this (an org outside it, a write with a read-only
    token, an admin RPC without an admin token). Decided from the token and the
    request's names alone, never from what exists."""
