"""The peer-facing Raft service of a node: message streams go to the Raft
driver; Forward runs a follower's write here, on the leader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from node import rpc
from proto import raft_pb2
from replication.raft.members import member_id
from replication.raft.transport import RaftServicer

if TYPE_CHECKING:
    from node.server import Node


class PeerService(RaftServicer):
    def __init__(self, node: Node) -> None:
        replicator = node.raft
        assert replicator is not None
        super().__init__(
            replicator.driver.deliver,
            incoming=replicator.incoming_dir,
            on_snapshot=replicator.receive_snapshot,
        )
        self.node = node

    async def Forward(
        self, request: raft_pb2.ForwardRequest, context: Any
    ) -> raft_pb2.ForwardResponse:
        sender = dict(context.invocation_metadata() or ()).get("shardlite-forwarded-by", "")
        if sender and member_id(sender) in self.blocked_from:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "partitioned (fault injection)")
        try:
            # Only the leader proposes; no chains of forwards.
            result = await self.node.write_here(request.frame)
        except Exception as exc:
            code, message, hint = rpc.status_for(exc)
            if hint:
                context.set_trailing_metadata(((rpc.LEADER_METADATA_KEY, hint),))
            await context.abort(code, message)
        return raft_pb2.ForwardResponse(result=result)
