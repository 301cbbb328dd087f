"""Cluster administration over gRPC: list, add and remove members, transfer
leadership. Any node answers; changes are made on the leader (a follower
passes the request on, once). A node that runs alone has no cluster: every
RPC answers FAILED_PRECONDITION."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shardlite.node import auth, names
from shardlite.node.errors import FailedPrecondition, InvalidArgument, Unavailable
from shardlite.node.peers import PeerChannels
from shardlite.replication.raft.transport import address_problem
from shardlite.replication.replicator import (
    Leadership,
    Membership,
    Rejected,
    RejectReason,
    Replicator,
)
from shardlite.v1 import raft_pb2, raft_pb2_grpc

R = TypeVar("R")
FORWARDED = "shardlite-forwarded"
RELAY_TIMEOUT = 30.0


class ClusterService:
    def __init__(self, replicator: Replicator, channels: PeerChannels) -> None:
        self._membership = replicator if isinstance(replicator, Membership) else None
        self._leadership = replicator if isinstance(replicator, Leadership) else None
        self._status = replicator.status
        self.channels = channels

    @property
    def membership(self) -> Membership:
        if self._membership is None:
            raise FailedPrecondition(
                "this node runs alone (no --peers or --join): it has no cluster"
            )
        return self._membership

    def _members(self) -> list[raft_pb2.Member]:
        return [
            raft_pb2.Member(
                name=m.name, id=m.id, address=m.address, learner=m.learner,
                leader=m.leader, match_index=m.match_index, client_address=m.client_address,
            )
            for m in self.membership.member_list()
        ]  # fmt: skip

    async def _on_leader(
        self,
        context: Any,
        here: Callable[[], Awaitable[R]],
        there: Callable[[raft_pb2_grpc.ClusterAsyncStub, Any], Awaitable[R]],
    ) -> R:
        """Run `here` if this node leads, else `there` against the leader (its
        status, if it fails, is relayed as it is by node/rpc.py)."""
        _ = self.membership  # FAILED_PRECONDITION on a single node, before anything
        try:
            return await here()
        except Rejected as exc:
            forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED)
            if exc.reason is not RejectReason.NOT_LEADER or forwarded:
                raise
        leader = self._leadership.leader_address if self._leadership is not None else ""
        if not leader:
            raise Unavailable("no leader elected right now; retry shortly") from None
        stub = raft_pb2_grpc.ClusterStub(self.channels.get(leader))
        return await there(stub, ((FORWARDED, "1"), *auth.passed_on(context)))

    async def Members(
        self, request: raft_pb2.MembersRequest, context: Any
    ) -> raft_pb2.MembersResponse:
        members = self._members()
        status = self._status()
        return raft_pb2.MembersResponse(members=members, leader=status.leader, term=status.term)

    async def AddMember(
        self, request: raft_pb2.AddMemberRequest, context: Any
    ) -> raft_pb2.AddMemberResponse:
        async def here() -> raft_pb2.AddMemberResponse:
            names.check_namespace(request.name)  # member names follow the same rules
            problem = address_problem(request.address)
            if problem is not None:
                raise InvalidArgument(f"address: {problem}")
            await self.membership.add_member(
                request.name, request.address, learner_only=request.learner_only
            )
            return raft_pb2.AddMemberResponse(members=self._members())

        async def there(
            stub: raft_pb2_grpc.ClusterAsyncStub, md: Any
        ) -> raft_pb2.AddMemberResponse:
            reply: raft_pb2.AddMemberResponse = await stub.AddMember(
                request, timeout=RELAY_TIMEOUT, metadata=md
            )
            return reply

        return await self._on_leader(context, here, there)

    async def RemoveMember(
        self, request: raft_pb2.RemoveMemberRequest, context: Any
    ) -> raft_pb2.RemoveMemberResponse:
        async def here() -> raft_pb2.RemoveMemberResponse:
            await self.membership.remove_member(request.name)
            return raft_pb2.RemoveMemberResponse(members=self._members())

        async def there(
            stub: raft_pb2_grpc.ClusterAsyncStub, md: Any
        ) -> raft_pb2.RemoveMemberResponse:
            reply: raft_pb2.RemoveMemberResponse = await stub.RemoveMember(
                request, timeout=RELAY_TIMEOUT, metadata=md
            )
            return reply

        return await self._on_leader(context, here, there)

    async def TransferLeader(
        self, request: raft_pb2.TransferLeaderRequest, context: Any
    ) -> raft_pb2.TransferLeaderResponse:
        async def here() -> raft_pb2.TransferLeaderResponse:
            leader = await self.membership.transfer_leader(request.name)
            return raft_pb2.TransferLeaderResponse(leader=leader)

        async def there(
            stub: raft_pb2_grpc.ClusterAsyncStub, md: Any
        ) -> raft_pb2.TransferLeaderResponse:
            reply: raft_pb2.TransferLeaderResponse = await stub.TransferLeader(
                request, timeout=RELAY_TIMEOUT, metadata=md
            )
            return reply

        return await self._on_leader(context, here, there)
