"""The cluster id (issue 11 item 8): members started from different data
never form one cluster; a peer stream from another cluster is refused with
FAILED_PRECONDITION; a joining member learns the id from its cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from scripts.cluster import free_ports
from shardlite.replication.raft.cluster_id import METADATA_KEY, ClusterId, derive
from shardlite.replication.raft.messages import NONE
from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.raft.snapshots import seal
from shardlite.replication.raft.transport import SERVER_GRPC_OPTIONS
from shardlite.v1 import frame_pb2, raft_pb2, raft_pb2_grpc
from tests.harness import until
from tests.replication.local_raft import EmptyStateMachine

NAMES = ["r1", "r2", "r3"]


def frame() -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=b"t1")
    f.ops.add(put=frame_pb2.PutOp(key="k", value=b"v"))
    return f


def backup(path: Path, content: bytes, index: int = 5) -> Path:
    path.mkdir(parents=True)
    (path / "shards").mkdir()
    (path / "shards" / "ns.db").write_bytes(content)
    seal(path, index)
    return path


async def start(
    name: str, peers: dict[str, str], directory: Path, restore: Path
) -> tuple[RaftReplicator, grpc.aio.Server]:
    r = RaftReplicator(
        RaftSettings(
            name=name,
            address=peers[name],
            directory=directory,
            peers=peers,
            tick_interval=0.02,
            applied=5,  # as a node's --restore records it
            restore_index=5,
            restore_dir=restore,
        ),
        EmptyStateMachine(),
    )
    server = grpc.aio.server(options=SERVER_GRPC_OPTIONS)
    raft_pb2_grpc.add_RaftServicer_to_server(r.peer_servicer(), server)
    server.add_insecure_port(peers[name])
    await server.start()
    return r, server


@pytest.mark.timeout(60)
def test_members_restored_from_different_backups_do_not_form_one_cluster(
    tmp_path: Path,
) -> None:
    """The same --peers, the same backup index; r1 restored from another
    backup than r2 and r3. Before, r1 silently followed their leader and
    served different contents."""
    x = backup(tmp_path / "backup-x", b"x" * 100)
    y = backup(tmp_path / "backup-y", b"y" * 100)
    peers = {n: f"127.0.0.1:{p}" for n, p in zip(NAMES, free_ports(3), strict=True)}

    async def check() -> None:
        started = [await start(n, peers, tmp_path / n, x if n == "r1" else y) for n in NAMES]
        (r1, _), (r2, _), (r3, _) = started
        try:
            assert r1.cluster.value != r2.cluster.value == r3.cluster.value
            await until(lambda: r2.driver.is_leader or r3.driver.is_leader, 10, "r2 or r3 to lead")
            leader = r2 if r2.driver.is_leader else r3
            await leader.propose(frame())  # the pair commits without r1
            # The pair's streams to r1 were refused again and again (each sender
            # reconnects); r1 has heard none of them.
            await until(
                lambda: r1.cluster.refused >= 4, 10, "r1 to refuse the other cluster's streams"
            )
            assert r1.driver.leader == NONE
            assert not r1.driver.is_leader
            assert leader.driver.core.status().progress[r1.id].match == 0
            assert r1.status().commit_index < leader.status().commit_index
        finally:
            for r, server in started:
                await r.close()
                await server.stop(None)

    asyncio.run(asyncio.wait_for(check(), 50))


async def _send(address: str, metadata: tuple[tuple[str, str], ...]) -> raft_pb2.SendAck:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = raft_pb2_grpc.RaftStub(channel)

        async def nothing() -> AsyncIterator[raft_pb2.RaftBatch]:
            yield raft_pb2.RaftBatch()

        reply: raft_pb2.SendAck = await stub.Send(nothing(), metadata=metadata, timeout=5)
        return reply


@pytest.mark.timeout(60)
def test_a_peer_stream_from_another_cluster_is_refused(tmp_path: Path) -> None:
    (address,) = (f"127.0.0.1:{p}" for p in free_ports(1))
    peers = {"r1": address}

    async def check() -> None:
        r, server = await start("r1", peers, tmp_path / "r1", backup(tmp_path / "b", b"b"))
        try:
            own = r.cluster.value
            assert own == derive(peers, (tmp_path / "b" / "manifest.json").read_bytes())
            await _send(address, ((METADATA_KEY, own),))
            await _send(address, ())  # a joining member, an older version
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _send(address, ((METADATA_KEY, "0123456789abcdef"),))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "cluster id mismatch" in (refused.value.details() or "")
            assert own in (refused.value.details() or "")
        finally:
            await r.close()
            await server.stop(None)

    asyncio.run(asyncio.wait_for(check(), 30))


def test_a_joining_member_learns_the_id_from_its_cluster_and_keeps_it(tmp_path: Path) -> None:
    joining = ClusterId(tmp_path)
    assert joining.metadata() == ()  # sends none until it knows
    assert joining.admit("0123456789abcdef", "ipv4:127.0.0.1:1") is None
    assert ClusterId(tmp_path).value == "0123456789abcdef"  # durable
    assert joining.admit("fedcba9876543210", "ipv4:127.0.0.1:2") is not None
