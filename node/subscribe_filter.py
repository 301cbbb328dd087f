"""Which committed frames a Subscribe stream carries, and how much of each.

A frame writes one shard (one org, one namespace), so the org and namespace
filters -- and the caller's token, which may read only some orgs -- keep or
drop whole frames; what the stream never sends is never built. A key prefix
narrows a kept frame to its ops on keys under the prefix (with their results,
which stand beside the ops one for one) and its conditions on such keys; a
frame with no op under the prefix is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardlite.node import names
from shardlite.v1 import frame_pb2, kv_pb2


@dataclass(frozen=True)
class FrameFilter:
    orgs: frozenset[str] | None  # None: every org
    namespace: str  # "": every namespace
    prefix: str
    may_read: Callable[[str], bool]

    @classmethod
    def of(cls, request: kv_pb2.SubscribeRequest, may_read: Callable[[str], bool]) -> FrameFilter:
        """The filter a request asks for, its names checked (INVALID_ARGUMENT)."""
        orgs = frozenset(names.check_org(org) for org in request.orgs) or None
        namespace = names.check_namespace(request.namespace) if request.namespace else ""
        return cls(orgs, namespace, request.prefix, may_read)

    def keeps(self, frame: frame_pb2.Frame) -> bool:
        """Whether the frame's shard is one this stream carries. Decided before
        anything else about the frame is looked at."""
        if self.orgs is not None and frame.org not in self.orgs:
            return False
        if self.namespace and frame.namespace != self.namespace:
            return False
        return self.may_read(frame.org)

    def narrow(self, response: kv_pb2.SubscribeResponse) -> kv_pb2.SubscribeResponse | None:
        """The response cut to the prefix (in place), or None when no op is left."""
        prefix = self.prefix
        if not prefix:
            return response
        frame = response.frame
        ops = frame.ops
        kept = [i for i, op in enumerate(ops) if _key_of(op).startswith(prefix)]
        if not kept:
            return None
        if len(kept) < len(ops):
            results = response.result.results
            if len(results) == len(ops):  # applied: one result per op
                _keep(results, kept)
            _keep(ops, kept)
        conditions = frame.conditions
        held = [i for i, c in enumerate(conditions) if c.key.startswith(prefix)]
        if len(held) < len(conditions):
            _keep(conditions, held)
        return response


def _keep(repeated: Any, positions: list[int]) -> None:
    """Keep only these positions of a repeated message field, in order (copied
    out first: what is deleted from a repeated field is not to be held on to)."""
    kept = [type(repeated[i])() for i in positions]
    for copy, i in zip(kept, positions, strict=True):
        copy.CopyFrom(repeated[i])
    del repeated[:]
    repeated.extend(kept)


def _key_of(op: frame_pb2.Op) -> str:
    kind = op.WhichOneof("kind")
    if kind == "put":
        return op.put.key
    if kind == "delete":
        return op.delete.key
    return ""
