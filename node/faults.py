"""Fault injection (only with --fault-injection): drop this node's traffic to
or from chosen members, as a network partition would, symmetric or not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from proto import raft_pb2, raft_pb2_grpc
from replication.raft.members import member_id

if TYPE_CHECKING:
    from node.server import Node


class FaultService(raft_pb2_grpc.FaultsServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def _state(self) -> raft_pb2.PartitionResponse:
        raft = self.node.raft
        assert raft is not None
        assert self.node.peer_service is not None
        names = raft.members.name
        return raft_pb2.PartitionResponse(
            dropping_to=sorted(names(n) for n in raft.driver.transport.blocked),
            dropping_from=sorted(names(n) for n in self.node.peer_service.blocked_from),
        )

    async def Partition(
        self, request: raft_pb2.PartitionRequest, context: Any
    ) -> raft_pb2.PartitionResponse:
        raft, peers = self.node.raft, self.node.peer_service
        if raft is None or peers is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not a cluster member")
            raise AssertionError("unreachable")
        raft.driver.transport.blocked = {member_id(n) for n in request.drop_to}
        peers.blocked_from = {member_id(n) for n in request.drop_from}
        return self._state()

    async def Heal(self, request: raft_pb2.HealRequest, context: Any) -> raft_pb2.PartitionResponse:
        return await self.Partition(raft_pb2.PartitionRequest(), context)
