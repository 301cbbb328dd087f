"""The peer-facing Raft service of a node: message streams go to the
replicator's peer servicer; Forward runs a follower's write here, on the
leader (node/paths.py `run_forwarded`)."""

from __future__ import annotations

from typing import Any

from shardlite.node.errors import FailedPrecondition, Unavailable
from shardlite.node.paths import FORWARDED_BY, Paths
from shardlite.replication.replicator import Partitioning, PeerServicer
from shardlite.v1 import raft_pb2


class PeerService:
    def __init__(
        self, replication: PeerServicer, paths: Paths, partitioning: Partitioning | None
    ) -> None:
        self.replication = replication
        self.paths = paths
        self.partitioning = partitioning

    async def Send(self, request_iterator: Any, context: Any) -> raft_pb2.SendAck:
        reply: raft_pb2.SendAck = await self.replication.Send(request_iterator, context)
        return reply

    async def MessagePort(
        self, request: raft_pb2.MessagePortRequest, context: Any
    ) -> raft_pb2.MessagePortResponse:
        reply: raft_pb2.MessagePortResponse = await self.replication.MessagePort(request, context)
        return reply

    async def SendSnapshot(self, request_iterator: Any, context: Any) -> raft_pb2.SnapshotAck:
        reply: raft_pb2.SnapshotAck = await self.replication.SendSnapshot(request_iterator, context)
        return reply

    async def Forward(
        self, request: raft_pb2.ForwardRequest, context: Any
    ) -> raft_pb2.ForwardResponse:
        refused = self.replication.refusal(context)
        if refused is not None:
            raise FailedPrecondition(refused)
        sender = dict(context.invocation_metadata() or ()).get(FORWARDED_BY, "")
        if sender and self.partitioning is not None and self.partitioning.drops_from(sender):
            # As a lost request would be: the sender cannot know it never arrived.
            raise Unavailable("partitioned (fault injection)")
        return await self.paths.run_forwarded(request.frame)

    def close(self) -> None:
        self.replication.close()
