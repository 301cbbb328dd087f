"""Fault injection (only with --fault-injection): drop this node's traffic to
or from chosen members, as a network partition would, symmetric or not."""

from __future__ import annotations

from typing import Any

from shardlite.replication.replicator import Partitioning
from shardlite.v1 import raft_pb2


class FaultService:
    def __init__(self, partitioning: Partitioning) -> None:
        self.partitioning = partitioning

    async def Partition(
        self, request: raft_pb2.PartitionRequest, context: Any
    ) -> raft_pb2.PartitionResponse:
        to, frm = self.partitioning.partition(list(request.drop_to), list(request.drop_from))
        return raft_pb2.PartitionResponse(dropping_to=to, dropping_from=frm)

    async def Heal(self, request: raft_pb2.HealRequest, context: Any) -> raft_pb2.PartitionResponse:
        return await self.Partition(raft_pb2.PartitionRequest(), context)
