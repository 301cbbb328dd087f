"""What members announce they can apply (raft.proto MessagePortRequest.features):
a leader relies on a feature only once every other member announced it in
its latest introduction (replication/raft/replicator.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from shardlite.replication.raft.members import member_id
from shardlite.replication.raft.replicator import RaftReplicator
from shardlite.replication.raft.transport import MAX_FEATURE_CHARS, MAX_FEATURES
from shardlite.v1 import frame_pb2, raft_pb2, raft_pb2_grpc
from tests.harness import until
from tests.replication.local_raft import NAMES, LocalRaft

FEATURE = "packing"


def frame(n: int) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v"))
    return f


async def heard_from_all(cluster: LocalRaft) -> RaftReplicator:
    """The leader, once every follower has introduced itself to it."""
    for n in range(3):
        await cluster.propose(frame(n))  # followers answer: they stream to the leader
    leader = await cluster.leader()
    others = [member_id(name) for name in NAMES if member_id(name) != leader.id]
    await until(
        lambda: all(leader.client_address(nid) for nid in others),
        10,
        "the leader never heard every follower's introduction",
    )
    return leader


def test_a_feature_counts_once_every_member_announced_it_and_the_latest_word_counts(
    tmp_path: Path,
) -> None:
    """Every member announces the feature: the leader relies on it (and on
    nothing else). Then a member introduces itself again without it, as one
    restarted on an older version would: the leader stops relying on it."""

    async def check() -> None:
        everyone = frozenset({FEATURE})
        cluster = await LocalRaft.open(tmp_path, features=dict.fromkeys(NAMES, everyone))
        try:
            leader = await heard_from_all(cluster)
            assert leader.every_member_understands(FEATURE)
            assert not leader.every_member_understands("something-else")
            follower = next(r for r in cluster.replicators.values() if r is not leader)
            downgraded = raft_pb2.MessagePortRequest(
                sender=follower.id, client_address=follower.settings.address
            )
            async with grpc.aio.insecure_channel(leader.settings.address) as channel:
                await raft_pb2_grpc.RaftStub(channel).MessagePort(
                    downgraded, metadata=leader.cluster.metadata(), timeout=5
                )
            assert not leader.every_member_understands(FEATURE)
        finally:
            await cluster.close()

    asyncio.run(check())


def test_one_member_without_the_feature_holds_it_back(tmp_path: Path) -> None:
    async def check() -> None:
        older = NAMES[2]  # announces nothing, as a member of an older version
        features = {name: frozenset({FEATURE}) for name in NAMES if name != older}
        cluster = await LocalRaft.open(tmp_path, features=features)
        try:
            old = cluster.replicators[older]
            for _ in range(3):  # the leader asked must be a member that announces it
                leader = await heard_from_all(cluster)
                if leader is not old:
                    break
                await old.transfer_leader(NAMES[0])
            assert leader is not old
            assert not leader.every_member_understands(FEATURE)
        finally:
            await cluster.close()

    asyncio.run(check())


@pytest.mark.parametrize(
    ("features", "problem"),
    [
        (["f"] * (MAX_FEATURES + 1), f"at most {MAX_FEATURES}"),
        (["x" * (MAX_FEATURE_CHARS + 1)], f"at most {MAX_FEATURE_CHARS}"),
    ],
)
def test_message_port_refuses_an_introduction_too_large_to_keep(
    tmp_path: Path, features: list[str], problem: str
) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            member = next(iter(cluster.replicators.values()))
            stranger = raft_pb2.MessagePortRequest(sender=7, features=features)
            async with grpc.aio.insecure_channel(member.settings.address) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await raft_pb2_grpc.RaftStub(channel).MessagePort(
                        stranger, metadata=member.cluster.metadata(), timeout=5
                    )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert problem in (refused.value.details() or "")
            assert member.client_address(7) == ""  # nothing kept
        finally:
            await cluster.close()

    asyncio.run(check())
