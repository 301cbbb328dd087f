"""The TCP message stream between members (replication/raft/transport.py):
used when the peer offers it, gRPC Send when it does not, and whatever a
stranger writes to its port ends that connection only."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import grpc
import pytest

from shardlite.replication.raft.cluster_id import METADATA_KEY
from shardlite.v1 import frame_pb2, raft_pb2, raft_pb2_grpc
from tests.harness import until
from tests.replication.local_raft import NAMES, LocalRaft


def frame(n: int) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v"))
    return f


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def read_framed(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(length)


async def message_port(address: str, cluster_id: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await raft_pb2_grpc.RaftStub(channel).MessagePort(
            raft_pb2.MessagePortRequest(), metadata=((METADATA_KEY, cluster_id),), timeout=5
        )
        return int(reply.port)


async def closed_by_peer(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """The other end closed: a read returns nothing (and never data)."""
    return await asyncio.wait_for(reader.read(1), within) == b""


def test_members_talk_over_tcp_streams(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            for n in range(5):
                await cluster.propose(frame(n))
            leader = await cluster.leader()
            # The leader hears from both followers, each follower from the leader.
            for r in cluster.replicators.values():
                assert len(r.peer_servicer()._streams) >= (2 if r is leader else 1)
        finally:
            await cluster.close()

    asyncio.run(check())


def test_a_member_without_the_tcp_stream_is_sent_to_over_grpc(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path, message_hosts={NAMES[0]: ""})
        try:
            for n in range(5):
                await cluster.propose(frame(n))
            old = cluster.replicators[NAMES[0]]
            assert await old.peer_servicer().message_port() == 0
            assert not old.peer_servicer()._streams
            # It still hears from the others (over Send) and keeps up.
            leader = await cluster.leader()
            last = leader.driver.commit_published
            await until(
                lambda: old.driver.commit_published >= last, 10, "the member without TCP to keep up"
            )
        finally:
            await cluster.close()

    asyncio.run(check())


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",  # a length past every limit
        framed(b"\x0a\xff\xff\xff\xff\x0f"),  # not a MessageStreamHello
        b"\x00\x00",  # a short header, then nothing
    ],
)
def test_garbage_on_the_message_port_ends_that_connection_only(
    tmp_path: Path, garbage: bytes
) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            target = cluster.replicators[NAMES[0]]
            port = await target.peer_servicer().message_port()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(garbage)
            await writer.drain()
            if garbage == b"\x00\x00":
                writer.write_eof()
            assert await closed_by_peer(reader, within=10)
            writer.close()
            for n in range(3):  # the cluster goes on
                await cluster.propose(frame(n))
        finally:
            await cluster.close()

    asyncio.run(check())


def test_a_message_stream_from_another_cluster_is_refused(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            target = cluster.replicators[NAMES[0]]
            port = await target.peer_servicer().message_port()
            refused_before = target.cluster.refused
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            hello = raft_pb2.MessageStreamHello(cluster_id="0123456789abcdef")
            writer.write(framed(hello.SerializeToString()))
            await writer.drain()
            welcome = raft_pb2.MessageStreamWelcome.FromString(await read_framed(reader))
            assert "cluster id mismatch" in welcome.refusal
            assert await closed_by_peer(reader)
            writer.close()
            assert target.cluster.refused == refused_before + 1
            # Our own cluster's id is welcomed, and a malformed batch after it
            # closes the stream without stopping the member.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            hello = raft_pb2.MessageStreamHello(cluster_id=target.cluster.value)
            writer.write(framed(hello.SerializeToString()))
            welcome = raft_pb2.MessageStreamWelcome.FromString(await read_framed(reader))
            assert welcome.refusal == ""
            bad = raft_pb2.RaftBatch(messages=[raft_pb2.RaftMessage(type=999, to=1)])
            writer.write(framed(bad.SerializeToString()))
            await writer.drain()
            assert await closed_by_peer(reader)
            writer.close()
            await cluster.propose(frame(1))
            # MessagePort itself refuses another cluster's id.
            with pytest.raises(grpc.aio.AioRpcError) as refusal:
                await message_port(target.settings.address, "0123456789abcdef")
            assert refusal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            await cluster.close()

    asyncio.run(check())
