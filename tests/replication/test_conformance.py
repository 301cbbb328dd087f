"""The Replicator contract (DESIGN.md), checked the same way for every replicator.

Each replicator under test is opened by a factory on a directory; reopening on
the same directory is a restart. Indices must strictly increase but need not be
consecutive (Raft spends indices on its own entries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from shardlite.replication.noop import NoopReplicator
from shardlite.replication.replicator import Compacted, Rejected, RejectReason, Replicator
from shardlite.v1 import frame_pb2
from tests.harness import until
from tests.replication.local_raft import LocalRaft

Factory = Callable[[Path], Awaitable[Replicator]]


async def _noop(path: Path) -> Replicator:
    return NoopReplicator(
        "n1", path / "log", segment_bytes=4096, retain=10, max_frame_bytes=64 << 10
    )


async def _raft(path: Path) -> Replicator:
    return await LocalRaft.open(path)


async def _raft_leased(path: Path) -> Replicator:
    return await LocalRaft.open(path, read_lease=True)


FACTORIES: dict[str, Factory] = {
    "noop": _noop,
    "raft-3-nodes": _raft,
    "raft-3-nodes-read-lease": _raft_leased,
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=60))


def frame(n: int, size: int = 10) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v" * size))
    return f


async def collect(r: Replicator, start: int, count: int) -> list[tuple[int, frame_pb2.Frame]]:
    out: list[tuple[int, frame_pb2.Frame]] = []
    stream = r.subscribe(start)
    async for batch in stream:
        assert batch, "a batch is never empty"
        for index, item in batch:
            assert item is not None, "subscribe without marks yields only frames"
            out.append((index, item))
        if len(out) >= count:
            break
    del out[count:]
    await stream.aclose()  # type: ignore[attr-defined]
    return out


def test_indices_strictly_increase(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        indices = [(await r.propose(frame(n))).index for n in range(20)]
        assert indices == sorted(set(indices))
        assert indices[0] >= 1
        await r.close()

    run(check())


def test_subscribe_replays_and_resumes_in_order(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        accepted = [(await r.propose(frame(n))).index for n in range(8)]
        got = await collect(r, accepted[0], 8)
        assert [i for i, _ in got] == accepted
        assert [f.trace_id for _, f in got] == [frame(n).trace_id for n in range(8)]
        tail = await collect(r, accepted[5], 3)
        assert [i for i, _ in tail] == accepted[5:]
        await r.close()

    run(check())


def test_live_subscriber_sees_new_frames(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        first = (await r.propose(frame(0))).index
        reader = asyncio.create_task(collect(r, first + 1, 5))
        await asyncio.sleep(0)
        accepted = [(await r.propose(frame(n))).index for n in range(1, 6)]
        got = await asyncio.wait_for(reader, 10)
        assert [i for i, _ in got] == accepted
        await r.close()

    run(check())


def test_read_barrier_covers_every_accepted_proposal(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        last = 0
        for n in range(5):
            last = (await r.propose(frame(n))).index
            assert await r.read_barrier() >= last
        await r.close()

    run(check())


def test_128_concurrent_proposals(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        results = await asyncio.gather(*(r.propose(frame(n)) for n in range(128)))
        indices = [a.index for a in results]
        assert len(set(indices)) == 128
        got = await collect(r, min(indices), 128)
        by_index = {i: f.trace_id for i, f in got}
        assert [i for i, _ in got] == sorted(indices)
        for n, index in enumerate(indices):
            assert by_index[index] == frame(n).trace_id
        await r.close()

    run(check())


def test_frames_survive_a_restart(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        accepted = [(await r.propose(frame(n))).index for n in range(6)]
        await r.close()
        again = await factory(tmp_path)
        got = await collect(again, accepted[0], 6)
        assert [i for i, _ in got] == accepted
        after = (await again.propose(frame(99))).index
        assert after > accepted[-1]
        await again.close()

    run(check())


def test_closed_replicator_rejects_and_ends_streams(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        first = (await r.propose(frame(0))).index
        stream_done = asyncio.create_task(collect(r, first, 1000))
        await asyncio.sleep(0)
        await r.close()
        got = await asyncio.wait_for(stream_done, 10)
        assert [i for i, _ in got] == [first]
        with pytest.raises(Rejected) as rejected:
            await r.propose(frame(1))
        assert rejected.value.reason == RejectReason.SHUTTING_DOWN

    run(check())


def test_oversized_frame_is_rejected(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        with pytest.raises(Rejected) as rejected:
            await r.propose(frame(0, size=1 << 20))
        assert rejected.value.reason == RejectReason.TOO_LARGE
        await r.close()

    run(check())


def test_compacted_history_is_reported(factory: Factory, tmp_path: Path) -> None:
    async def check() -> None:
        r = await factory(tmp_path)
        last = 0
        for n in range(200):
            last = (await r.propose(frame(n, size=100))).index
        r.compact(last)
        # Compaction may run in the background (Raft snapshots first).
        await until(lambda: r.status().first_index > 1, 5, "the log to be compacted")
        first = r.status().first_index
        with pytest.raises(Compacted) as compacted:
            await collect(r, 1, 1)
        assert compacted.value.first_index == first
        got = await collect(r, first, 1)
        assert got[0][0] == first
        await r.close()

    run(check())
