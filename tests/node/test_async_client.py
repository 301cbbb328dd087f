"""AsyncClient against real nodes: concurrent calls coalesce into few
MultiWrite/MultiGet RPCs and every caller still gets its own answer; a
deadline is a deadline; a write retried after UNAVAILABLE keeps its
request_id (applied once)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from shardlite.node.async_client import (
    LINEARIZABLE,
    AsyncClient,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Put,
    WriteResult,
)
from shardlite.node.shard import dump
from shardlite.v1 import kv_pb2
from tests.harness import LocalCluster, NodeProcess, wait_until

FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")
_names = itertools.count()


class CountingStub:
    """The client's real stub, with the multi calls it makes counted (and,
    when asked, the answer to the first MultiWrite lost after the node ran
    it: the client sees UNAVAILABLE, as when a connection drops)."""

    def __init__(self, stub: Any, lose_first_answer: bool = False) -> None:
        self._stub = stub
        self.calls: list[tuple[str, int]] = []
        self.lose_first_answer = lose_first_answer
        self.Get = stub.Get
        self.Status = stub.Status

    async def MultiWrite(self, request: kv_pb2.MultiWriteRequest, **kw: Any) -> Any:
        self.calls.append(("MultiWrite", len(request.writes)))
        reply = await self._stub.MultiWrite(request, **kw)
        if self.lose_first_answer:
            self.lose_first_answer = False
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "connection lost (test)",
                "",
            )
        return reply

    async def MultiGet(self, request: kv_pb2.MultiGetRequest, **kw: Any) -> Any:
        self.calls.append(("MultiGet", len(request.gets)))
        return await self._stub.MultiGet(request, **kw)


def _counting(client: AsyncClient, **kw: Any) -> CountingStub:
    (node,) = client._nodes
    stub = CountingStub(node.stub, **kw)
    node.stub = stub  # type: ignore[assignment]
    return stub


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("async") / "c", 3, args=FAST)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_200_concurrent_puts_coalesce_and_each_caller_gets_its_own_version(
    shared_node: NodeProcess,
) -> None:
    ns = f"a{next(_names)}"

    async def run() -> None:
        async with AsyncClient(shared_node.endpoint, namespace=ns) as client:
            stub = _counting(client)
            written = await asyncio.gather(
                *(client.put(f"k{i % 50}", f"v{i}".encode()) for i in range(200))
            )
            assert sum(n for _, n in stub.calls) == 200
            assert len(stub.calls) <= 20, stub.calls  # coalesced: far fewer than 200
            # One version per write of a key: writes to different keys may
            # share one log entry (an envelope) and so an index.
            versions = {(i % 50, w.version) for i, w in enumerate(written)}
            assert len(versions) == 200
            assert all(w.version == w.index for w in written)
            assert len({w.index for w in written}) < 200  # and some did share one
            # The last write of each key holds its value, at its version.
            latest: dict[int, tuple[int, bytes]] = {}
            for i, w in enumerate(written):
                if w.version > latest.get(i % 50, (0, 0))[0]:
                    latest[i % 50] = (w.version, f"v{i}".encode())
            entries = await asyncio.gather(*(client.get(f"k{k}") for k in range(50)))
            for k, entry in enumerate(entries):
                assert entry is not None
                assert (entry.version, entry.value) == latest[k]
            assert any(kind == "MultiGet" and n > 1 for kind, n in stub.calls)

    asyncio.run(run())


def test_a_lone_caller_is_sent_at_once(shared_node: NodeProcess) -> None:
    async def run() -> None:
        async with AsyncClient(shared_node.endpoint, namespace=f"a{next(_names)}") as client:
            stub = _counting(client)
            for i in range(5):
                await client.put("k", str(i).encode())
            assert stub.calls == [("MultiWrite", 1)] * 5

    asyncio.run(run())


def test_the_callers_one_answer_woke_share_the_next_call(shared_node: NodeProcess) -> None:
    """Callers in a closed loop: each round's answer wakes all of them at once,
    and their next writes go together in one call (none goes ahead alone)."""

    async def run() -> None:
        async with AsyncClient(shared_node.endpoint, namespace=f"a{next(_names)}") as client:
            stub = _counting(client)

            async def caller(n: int) -> None:
                for round_ in range(5):
                    await client.put(f"k{n}", str(round_).encode())

            await asyncio.gather(*(caller(n) for n in range(20)))
            assert stub.calls == [("MultiWrite", 20)] * 5

    asyncio.run(run())


def test_one_callers_failed_cas_fails_alone(shared_node: NodeProcess) -> None:
    ns = f"a{next(_names)}"

    async def run() -> None:
        async with AsyncClient(shared_node.endpoint, namespace=ns) as client:
            first = await client.put("cas", b"1")
            stub = _counting(client)
            outcomes = await asyncio.gather(
                *(client.put(f"k{i}", b"v") for i in range(20)),
                client.put("cas", b"2", expected_version=first.version + 1000),
                client.batch(
                    [Put("b", b"1"), Delete("cas")], [Condition("cas", first.version + 1)]
                ),
                client.delete("cas", expected_version=first.version),
                return_exceptions=True,
            )
            assert len(stub.calls) < 23
            *puts, cas, batch, delete = outcomes
            assert all(not isinstance(p, BaseException) for p in puts)
            assert isinstance(cas, ConditionFailedError)
            assert cas.code == grpc.StatusCode.FAILED_PRECONDITION
            assert f"expected version {first.version + 1000}" in cas.details
            assert isinstance(batch, ConditionFailedError)
            assert isinstance(delete, WriteResult)
            assert delete.deleted
            assert await client.get("b") is None  # the failed batch applied nothing

    asyncio.run(run())


def test_the_deadline_is_honoured_when_the_node_never_answers() -> None:
    # Accepts connections (the kernel's backlog) and never speaks HTTP/2.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"

        async def run() -> None:
            async with AsyncClient(endpoint, timeout=0.5) as client:
                started = time.monotonic()
                outcomes = await asyncio.gather(
                    client.put("k", b"v"), client.get("k"), return_exceptions=True
                )
                elapsed = time.monotonic() - started
                assert 0.45 <= elapsed < 2.0
                for outcome in outcomes:
                    assert isinstance(outcome, ClientError)
                    assert outcome.code in (
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.UNAVAILABLE,
                    )

        asyncio.run(run())


def test_a_write_retried_after_unavailable_keeps_its_request_id(
    shared_node: NodeProcess,
) -> None:
    ns = f"a{next(_names)}"

    async def run() -> None:
        async with AsyncClient(shared_node.endpoint, namespace=ns) as client:
            stub = _counting(client, lose_first_answer=True)
            written = await client.put("k", b"once")
            # Sent twice, applied once: the retry got the first one's result.
            assert stub.calls == [("MultiWrite", 1), ("MultiWrite", 1)]
            after = await client.put("k", b"next")
            entry = await client.get("k")
            assert entry is not None
            assert entry.version == after.version
            with shared_node.client() as sync:
                events = sync.events(written.index)
                first, retry, later = next(events), next(events), next(events)
            assert first.index == written.index
            assert first.frame.ops[0].put.value == b"once"
            # The retry is in the log with the same request_id, and carries the
            # first one's result: it changed nothing.
            assert retry.frame.request_id == first.frame.request_id
            assert retry.result.index == written.index
            assert later.index == after.index

    asyncio.run(run())


def test_linearizable_multiget_on_a_follower_sees_acknowledged_writes(
    cluster: LocalCluster,
) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.addresses if n != leader)
    ns = f"a{next(_names)}"

    async def run() -> None:
        async with (
            AsyncClient(cluster.addresses[leader], namespace=ns) as writer,
            AsyncClient(cluster.addresses[follower], namespace=ns) as reader,
        ):
            written = await asyncio.gather(*(writer.put(f"k{i}", b"%d" % i) for i in range(100)))
            stub = _counting(reader)
            entries = await asyncio.gather(
                *(reader.get(f"k{i}", consistency=LINEARIZABLE) for i in range(100))
            )
            assert len(stub.calls) < 100
            for i, (w, e) in enumerate(zip(written, entries, strict=True)):
                assert e is not None
                assert (e.value, e.version) == (b"%d" % i, w.version)
            # Writes through a follower: forwarded one by one, each its own answer.
            via_follower = await asyncio.gather(*(reader.put(f"f{i}", b"x") for i in range(20)))
            assert len({w.version for w in via_follower}) == 20
            status = await reader.status()
            assert status.leader == leader

    asyncio.run(run())


def test_coalesced_writes_apply_identically_on_every_replica(cluster: LocalCluster) -> None:
    """Puts, compare-and-sets and deletes of many callers, coalesced and packed
    into envelopes on the leader: every replica ends with the same shard
    (values, versions, request ids, stored outcomes), and each caller's
    answer is what its shard holds."""
    leader = cluster.leader()
    ns = f"a{next(_names)}"

    async def run() -> int:
        async with AsyncClient(cluster.addresses[leader], namespace=ns) as client:
            first = await asyncio.gather(*(client.put(f"k{i}", b"0") for i in range(40)))

            async def one(i: int) -> WriteResult | Exception:
                key = f"k{i % 40}"
                try:
                    if i % 5 == 0:
                        return await client.delete(key)
                    if i % 3 == 0:  # CAS on the first version: one per key may win
                        return await client.put(key, b"cas", expected_version=first[i % 40].version)
                    return await client.put(key, b"%d" % i)
                except ConditionFailedError as lost:
                    return lost

            outcomes = await asyncio.gather(*(one(i) for i in range(200)))
            assert any(isinstance(o, ConditionFailedError) for o in outcomes)
            written = [o for o in outcomes if isinstance(o, WriteResult)]
            assert len({w.index for w in written}) < len(written)  # envelopes were made
            return int((await client.status()).commit_index)

    commit = asyncio.run(run())
    dumps = []
    for name, node in cluster.nodes.items():
        with cluster.client(name, namespace=ns) as c:
            wait_until(lambda: c.status().applied_index >= commit, 30, f"{name} to apply")
        [path] = list(node.data_dir.rglob(f"{ns}.db"))
        dumps.append(dump(path))
    assert dumps[0] == dumps[1] == dumps[2]
