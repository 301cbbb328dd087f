"""Cluster administration over gRPC: list, add and remove members, transfer
leadership. Any node answers; changes are made on the leader (a follower
passes the request on, once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from node import names, rpc
from node.errors import InvalidArgument, Unavailable
from proto import raft_pb2, raft_pb2_grpc
from replication.raft.members import MemberInfo
from replication.raft.replicator import RaftReplicator
from replication.replicator import Rejected, RejectReason

if TYPE_CHECKING:
    from node.server import Node

R = TypeVar("R")
FORWARDED = "shardlite-forwarded"


class ClusterService(raft_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def raft(self) -> RaftReplicator:
        raft = self.node.raft
        if raft is None:
            raise Unavailable("this node runs alone (no --peers or --join): it has no cluster")
        return raft

    def _members(self) -> list[raft_pb2.Member]:
        return [
            raft_pb2.Member(
                name=m.name, id=m.id, address=m.address, learner=m.learner,
                leader=m.leader, match_index=m.match_index,
            )
            for m in self.raft.member_list()
        ]  # fmt: skip

    async def _on_leader(
        self,
        context: Any,
        here: Callable[[], Awaitable[R]],
        there: Callable[[raft_pb2_grpc.ClusterAsyncStub], Awaitable[R]],
    ) -> R:
        """Run `here` if this node leads, else `there` against the leader."""
        try:
            try:
                return await here()
            except Rejected as exc:
                forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED)
                if exc.reason is not RejectReason.NOT_LEADER or forwarded:
                    raise
                leader = self.raft.leader_address
                if not leader:
                    raise Unavailable("no leader elected right now; retry shortly") from None
                stub = raft_pb2_grpc.ClusterStub(self.node.peer_channel(leader))
                return await there(stub)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise
        except Exception as exc:
            code, message, hint = rpc.status_for(exc)
            if hint:
                context.set_trailing_metadata(((rpc.LEADER_METADATA_KEY, hint),))
            await context.abort(code, message)
            raise

    async def Members(
        self, request: raft_pb2.MembersRequest, context: Any
    ) -> raft_pb2.MembersResponse:
        try:
            raft = self.raft
        except Unavailable as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise
        status = raft.status()
        return raft_pb2.MembersResponse(
            members=self._members(), leader=status.leader, term=status.term
        )

    async def AddMember(
        self, request: raft_pb2.AddMemberRequest, context: Any
    ) -> raft_pb2.AddMemberResponse:
        async def here() -> raft_pb2.AddMemberResponse:
            names.check_namespace(request.name)  # member names follow the same rules
            if ":" not in request.address:
                raise InvalidArgument(f"address {request.address!r} is not host:port")
            info = MemberInfo(request.name, request.address, request.learner_only)
            await self.raft.add_member(info)
            return raft_pb2.AddMemberResponse(members=self._members())

        async def there(stub: raft_pb2_grpc.ClusterAsyncStub) -> raft_pb2.AddMemberResponse:
            reply: raft_pb2.AddMemberResponse = await stub.AddMember(
                request, timeout=30, metadata=((FORWARDED, "1"),)
            )
            return reply

        return await self._on_leader(context, here, there)

    async def RemoveMember(
        self, request: raft_pb2.RemoveMemberRequest, context: Any
    ) -> raft_pb2.RemoveMemberResponse:
        async def here() -> raft_pb2.RemoveMemberResponse:
            await self.raft.remove_member(request.name)
            return raft_pb2.RemoveMemberResponse(members=self._members())

        async def there(stub: raft_pb2_grpc.ClusterAsyncStub) -> raft_pb2.RemoveMemberResponse:
            reply: raft_pb2.RemoveMemberResponse = await stub.RemoveMember(
                request, timeout=30, metadata=((FORWARDED, "1"),)
            )
            return reply

        return await self._on_leader(context, here, there)

    async def TransferLeader(
        self, request: raft_pb2.TransferLeaderRequest, context: Any
    ) -> raft_pb2.TransferLeaderResponse:
        async def here() -> raft_pb2.TransferLeaderResponse:
            leader = await self.raft.transfer_leader(request.name)
            return raft_pb2.TransferLeaderResponse(leader=leader)

        async def there(stub: raft_pb2_grpc.ClusterAsyncStub) -> raft_pb2.TransferLeaderResponse:
            reply: raft_pb2.TransferLeaderResponse = await stub.TransferLeader(
                request, timeout=30, metadata=((FORWARDED, "1"),)
            )
            return reply

        return await self._on_leader(context, here, there)
