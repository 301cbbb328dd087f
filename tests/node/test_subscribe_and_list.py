"""Subscribe tells the truth (each frame's outcome and result, for history too,
the same after a restart and on every replica) and List and Subscribe are
bounded (issue 11 "Subscribe must tell the truth", items 6 and 9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.node import service as service_module
from shardlite.node.applier import Applier
from shardlite.node.client import Client, ClientError, Delete, Put
from shardlite.node.config import NodeConfig
from shardlite.node.shard import scan
from shardlite.node.shards import ShardStore
from shardlite.replication.noop import NoopReplicator
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import InProcessNode, NodeProcess, free_ports, wait_until
from tests.node.test_applier import _Pipeline, _put_frame


def _outcome_of(
    applier: Applier, index: int, frame: frame_pb2.Frame
) -> tuple[kv_pb2.Outcome.ValueType, frame_pb2.FrameResult]:
    """What applying a frame that is no envelope did."""
    [(_, outcome, result)] = applier.outcomes_of(index, frame)
    return outcome, result


def _outcomes(events: list[kv_pb2.SubscribeResponse]) -> list[tuple[int, str]]:
    return [(e.index, kv_pb2.Outcome.Name(e.outcome)) for e in events]


def _history(node: NodeProcess, start: int, count: int) -> list[kv_pb2.SubscribeResponse]:
    with node.client() as c:
        stream = c.events(start, timeout=20)
        return [next(stream) for _ in range(count)]


def test_subscribe_streams_each_frames_outcome_and_result_also_after_restart(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    with node.client(namespace="truth") as c:
        first = c.put("greeting", b"hello")
        with pytest.raises(ClientError) as failed:
            c.put("greeting", b"again", expected_version=99)
        assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
        batch = c.batch([Put("a", b"1"), Delete("greeting"), Delete("missing")])
    events = _history(node, first.index, 3)
    assert _outcomes(events) == [
        (first.index, "APPLIED"),
        (first.index + 1, "CONDITION_FAILED"),
        (first.index + 2, "APPLIED"),
    ]
    assert [r.version for r in events[0].result.results] == [first.version]
    refused = events[1].result
    assert (refused.failed_key, refused.failed_expected, refused.failed_actual) == (
        "greeting",
        99,
        first.version,
    )
    assert not refused.results
    applied = events[2].result
    assert applied.index == batch[0].version
    assert [(r.version, r.deleted) for r in applied.results] == [
        (batch[0].version, False),
        (0, True),
        (0, False),
    ]
    # History is the same after a restart (replayed or not, it is stored).
    assert node.terminate() == 0
    node = start_node()
    assert _history(node, first.index, 3) == events


def test_invalid_frames_are_streamed_as_invalid_the_same_on_every_replica(
    tmp_path: Path,
) -> None:
    """Frames that slipped past every gate (forged) are INVALID with the reason;
    two replicas applying the same log stream the same outcomes."""
    frames = [
        _put_frame("", "ok", trace=b"1"),
        _put_frame("", "../../escaped", trace=b"2"),
        _put_frame("", "ok", key="", trace=b"3"),
        _put_frame("", "ok", key="k2", trace=b"4"),
    ]

    async def replica(name: str) -> list[tuple[kv_pb2.Outcome.ValueType, frame_pb2.FrameResult]]:
        pipeline = _Pipeline(tmp_path / name)
        pipeline.applier.start()
        try:
            for frame in frames:
                await pipeline.write(frame)
            return [
                _outcome_of(pipeline.applier, index, frame)
                for index, frame in enumerate(frames, start=1)
            ]
        finally:
            await pipeline.close()

    one = asyncio.run(replica("one"))
    two = asyncio.run(replica("two"))
    assert one == two
    assert [kv_pb2.Outcome.Name(o) for o, _ in one] == ["APPLIED", "INVALID", "INVALID", "APPLIED"]
    assert "namespace" in one[1][1].invalid
    assert "key is empty" in one[2][1].invalid
    assert not (tmp_path / "escaped.db").exists()


# -- List ----------------------------------------------------------------


def test_list_of_large_values_is_chunked_by_bytes(shared_node: NodeProcess) -> None:
    """20 values of 1 MiB: 256 rows to a message would be 20 MiB, over the
    16 MiB send limit."""
    value = b"x" * (1 << 20)
    with shared_node.client(namespace="bigvalues", timeout=60) as c:
        for i in range(20):
            c.put(f"k{i:02d}", value)
        listed = list(c.list())
    assert [e.key for e in listed] == [f"k{i:02d}" for i in range(20)]
    assert all(e.value == value for e in listed)


def test_scan_chunks_hold_at_least_one_row_and_respect_limits(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    with store.use("", "ns", create=True) as shard:
        assert shard is not None
        frames = []
        for i in range(10):
            frame = frame_pb2.Frame(namespace="ns")
            frame.ops.add(put=frame_pb2.PutOp(key=f"k{i}", value=b"v" * 100))
            frames.append((i + 1, frame))
        shard.apply(frames, 100)
    path = store.path("", "ns")
    chunks = list(scan(path, "k", "", 0, max_chunk_bytes=300))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert [len(c) for c in scan(path, "k", "", 0, max_chunk_bytes=1)] == [1] * 10
    assert [k for c in scan(path, "k", "k3", 4) for k, _, _ in c] == ["k4", "k5", "k6", "k7"]
    store.close_all()


def test_closing_a_shard_never_waits_for_an_open_list(tmp_path: Path) -> None:
    """A List holds a read transaction on shard A; making room closes A (its WAL
    checkpoint would wait busy_timeout for the reader, under the store's lock,
    stalling every read): it must not wait."""
    store = ShardStore(tmp_path, max_open=1, busy_timeout_ms=3000)
    with store.use("", "a", create=True) as shard:
        assert shard is not None
        shard.apply([(1, _put_frame("", "a", key="k"))], 100)
    reading = scan(store.path("", "a"), "", "", 0)
    assert next(reading)  # the read transaction is open
    started = time.monotonic()
    with store.use("", "b", create=True) as other:  # evicts and closes "a"
        assert other is not None
    elapsed = time.monotonic() - started
    reading.close()
    store.close_all()
    assert elapsed < 1.0, f"opening another shard waited {elapsed:.2f}s for a reader"


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[Callable[[], InProcessNode]]:
    started: list[InProcessNode] = []

    def start() -> InProcessNode:
        config = NodeConfig(
            node_id="n1", data_dir=tmp_path / "n1", listen=f"127.0.0.1:{free_ports(1)[0]}"
        )
        node = InProcessNode(config, lambda c: NoopReplicator("n1", c.data_dir / "log"))
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _collect_keys(stream: Iterable[kv_pb2.ListResponse], into: list[str]) -> None:
    for chunk in stream:
        into.extend(item.key for item in chunk.items)


def test_a_list_stream_is_bounded_in_time_and_says_where_to_resume(
    in_process: Callable[[], InProcessNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "LIST_MAX_SECONDS", 0.0)
    node = in_process()
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        ops = [frame_pb2.Op(put=frame_pb2.PutOp(key=f"k{i:04d}", value=b"v")) for i in range(600)]
        stub.Batch(kv_pb2.BatchRequest(namespace="bounded", ops=ops), timeout=10)
        received: list[str] = []
        stream = stub.List(kv_pb2.ListRequest(namespace="bounded"), timeout=10)
        with pytest.raises(grpc.RpcError) as ended:
            _collect_keys(stream, received)
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"start_after={received[-1]!r}" in (ended.value.details() or "")
    assert 0 < len(received) < 600


def test_the_client_lists_on_across_streams_the_node_ends(
    in_process: Callable[[], InProcessNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client.list() reopens a stream the node ended for its time bound after
    the last key it gave: every key once, in order."""
    monkeypatch.setattr(service_module, "LIST_MAX_SECONDS", 0.0)
    node = in_process()
    keys = [f"k{i:04d}" for i in range(600)]
    with Client(node.endpoint, namespace="resumed") as client:
        client.batch([Put(key, b"v" * 200) for key in keys])
        assert [entry.key for entry in client.list()] == keys


def _first(stream: Iterable[kv_pb2.SubscribeResponse]) -> kv_pb2.SubscribeResponse:
    for response in stream:
        return response
    raise AssertionError("the stream ended")


def _subscribe_served(stub: kv_pb2_grpc.KVStub) -> bool:
    try:
        return _first(stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=10)).index == 1
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_concurrent_subscribe_streams_are_bounded(
    in_process: Callable[[], InProcessNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_SUBSCRIBE_STREAMS", 2)
    node = in_process()
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        stub.Put(kv_pb2.PutRequest(namespace="s", key="k", value=b"v"), timeout=10)
        open_streams = [stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1)) for _ in range(2)]
        for stream in open_streams:
            assert _first(stream).index == 1
        with pytest.raises(grpc.RpcError) as refused:
            _first(stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        open_streams[0].cancel()
        # Once one ends, another is served (bounded wait, not a sleep).
        wait_until(lambda: _subscribe_served(stub), 10, "a Subscribe served again")
        for stream in open_streams:
            stream.cancel()


def test_outcomes_travel_with_a_snapshot_of_the_shards(tmp_path: Path) -> None:
    """A replica that installed a snapshot (a copy of the shards) streams the
    same outcomes for the frames it covers as the replica that applied them."""
    frames = [
        _put_frame("", "snap", key="a", trace=b"1"),
        _put_frame("", "snap", key="b", trace=b"2"),
    ]
    frames[1].conditions.add(key="a", version=99)

    async def source() -> list[tuple[kv_pb2.Outcome.ValueType, frame_pb2.FrameResult]]:
        pipeline = _Pipeline(tmp_path / "source")
        pipeline.applier.start()
        try:
            for frame in frames:
                await pipeline.write(frame)
            pipeline.store.copy_to(tmp_path / "installed" / "shards")
            return [_outcome_of(pipeline.applier, i, f) for i, f in enumerate(frames, start=1)]
        finally:
            await pipeline.close()

    async def installed() -> list[tuple[kv_pb2.Outcome.ValueType, frame_pb2.FrameResult]]:
        pipeline = _Pipeline(tmp_path / "installed")
        try:
            return [_outcome_of(pipeline.applier, i, f) for i, f in enumerate(frames, start=1)]
        finally:
            await pipeline.close()

    here = asyncio.run(source())
    assert [o for o, _ in here] == [kv_pb2.APPLIED, kv_pb2.CONDITION_FAILED]
    assert asyncio.run(installed()) == here
