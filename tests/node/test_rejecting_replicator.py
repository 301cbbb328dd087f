"""A frame is applied only after the replicator accepts it: with a replicator
that rejects, no shard is touched and the client gets the rejection's status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.node.client import Client, ClientError, Put
from shardlite.node.config import NodeConfig
from shardlite.node.rpc import LEADER_METADATA_KEY
from shardlite.replication.replicator import Accepted, Rejected, RejectReason, ReplicatorStatus
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import InProcessNode


class RejectingReplicator:
    """Rejects every proposal with a configurable reason; commits nothing."""

    kind = "rejecting"

    def __init__(self) -> None:
        self.reason = RejectReason.NOT_LEADER
        self.proposed = 0
        self._closed = asyncio.Event()

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        self.proposed += 1
        raise Rejected(self.reason, "test replicator", leader_hint="127.0.0.1:1")

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        await self._closed.wait()
        return
        yield  # an async generator that never yields

    async def read_barrier(self) -> int:
        return 0

    def status(self) -> ReplicatorStatus:
        return ReplicatorStatus(self.kind, "follower", 1, "", 0, 1, 0, ())

    def compact(self, applied_index: int) -> None:
        pass

    async def close(self) -> None:
        self._closed.set()


@pytest.fixture
def rejecting(tmp_path: Path) -> Iterator[tuple[InProcessNode, RejectingReplicator]]:
    replicator: list[RejectingReplicator] = []

    def factory(config: NodeConfig) -> RejectingReplicator:
        replicator.append(RejectingReplicator())
        return replicator[0]

    node = InProcessNode(NodeConfig(data_dir=tmp_path / "n1", listen="127.0.0.1:0"), factory)
    try:
        yield node, replicator[0]
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (RejectReason.NOT_LEADER, grpc.StatusCode.UNAVAILABLE),
        (RejectReason.SHUTTING_DOWN, grpc.StatusCode.UNAVAILABLE),
        (RejectReason.QUEUE_FULL, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (RejectReason.TOO_LARGE, grpc.StatusCode.INVALID_ARGUMENT),
        # Proposed, perhaps: the caller must retry with the same request_id.
        (RejectReason.STORAGE_FAILED, grpc.StatusCode.UNAVAILABLE),
        (RejectReason.LEADERSHIP_LOST, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_rejected_write_touches_no_shard(
    rejecting: tuple[InProcessNode, RejectingReplicator],
    reason: RejectReason,
    code: grpc.StatusCode,
    tmp_path: Path,
) -> None:
    node, replicator = rejecting
    replicator.reason = reason
    c = Client(node.endpoint, namespace="untouched", timeout=1)
    for write in (
        lambda: c.put("k", b"v"),
        lambda: c.delete("k"),
        lambda: c.batch([Put("a", b"1"), Put("b", b"2")]),
    ):
        with pytest.raises(ClientError) as failure:
            write()
        assert failure.value.code == code
        assert reason.value in failure.value.details
        if reason in (RejectReason.STORAGE_FAILED, RejectReason.LEADERSHIP_LOST):
            assert "outcome unknown: retry with the same request_id" in failure.value.details
    assert replicator.proposed >= 3
    assert not (tmp_path / "n1" / "shards").exists()
    assert c.status().applied_index == 0


def test_not_leader_carries_the_leader_hint(
    rejecting: tuple[InProcessNode, RejectingReplicator],
) -> None:
    node, _ = rejecting
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))
    with pytest.raises(grpc.RpcError) as failure:
        stub.Put(kv_pb2.PutRequest(namespace="n", key="k", value=b"v"), timeout=5)
    error = failure.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1:1" in (error.details() or "")
    trailers = dict(error.trailing_metadata() or ())
    assert trailers[LEADER_METADATA_KEY] == "127.0.0.1:1"


def test_the_client_backs_off_and_retries_an_overloaded_node(
    rejecting: tuple[InProcessNode, RejectingReplicator],
) -> None:
    """RESOURCE_EXHAUSTED (nothing was started) is retried on the same node
    with backoff until the deadline, then reported as such."""
    node, replicator = rejecting
    replicator.reason = RejectReason.QUEUE_FULL
    with (
        Client(node.endpoint, namespace="overloaded", timeout=1.5) as c,
        pytest.raises(ClientError) as failure,
    ):
        c.put("k", b"v")
    assert failure.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Backoff 50, 100, 200, 400 ms ... within 1.5 s: a few attempts, not hundreds.
    assert 3 <= replicator.proposed <= 10, replicator.proposed
