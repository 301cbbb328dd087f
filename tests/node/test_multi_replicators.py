"""ProposeMany on both replicators: every frame its own index, in order; a
frame refused for itself (too large, past the pending bounds) is refused
alone and the others are proposed; a refusal of the replicator is every
frame's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from shardlite.replication.noop import NoopReplicator
from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.replicator import Accepted, Rejected, RejectReason
from shardlite.v1 import frame_pb2
from tests.harness import until
from tests.replication.local_raft import EmptyStateMachine


def frame(n: int, size: int = 1) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v" * size))
    return f


def _reasons(outcomes: list[Accepted | Rejected]) -> list[object]:
    return [o.index if isinstance(o, Accepted) else o.reason for o in outcomes]


def test_noop_each_frame_its_own_index_and_refusals_alone(tmp_path: Path) -> None:
    async def check() -> None:
        r = NoopReplicator("n1", tmp_path / "log", max_frame_bytes=500, max_pending=3)
        try:
            frames = [frame(0), frame(1, 1000), frame(2), frame(3), frame(4)]
            outcomes = await asyncio.wait_for(r.propose_many(frames), 10)
            # The queue bound counts the call's own frames as they are taken.
            assert _reasons(outcomes) == [
                1,
                RejectReason.TOO_LARGE,
                2,
                3,
                RejectReason.QUEUE_FULL,
            ]
            stored = [(i, f.ops[0].put.key) async for i, f in _take(r, 1, 3)]
            assert stored == [(1, "k0"), (2, "k2"), (3, "k3")]
            assert (await r.propose(frame(5))).index == 4  # room again, next index
            await r.close()
            closed = await r.propose_many([frame(6), frame(7)])
            assert _reasons(closed) == [RejectReason.SHUTTING_DOWN] * 2
        finally:
            await r.close()

    asyncio.run(asyncio.wait_for(check(), 30))


async def _take(
    r: NoopReplicator, start: int, count: int
) -> AsyncIterator[tuple[int, frame_pb2.Frame]]:
    taken = 0
    async for batch in r.subscribe(start):
        for index, f in batch:
            assert f is not None  # the no-op log holds a frame at every index
            yield index, f
            taken += 1
            if taken == count:
                return


def test_raft_consecutive_entries_bounds_per_frame(tmp_path: Path) -> None:
    settings = RaftSettings(
        name="n1",
        address="127.0.0.1:1",
        directory=tmp_path / "raft",
        peers={"n1": "127.0.0.1:1"},
        tick_interval=0.02,
        max_frame_bytes=500,
        max_pending_proposals=3,
    )

    async def check() -> None:
        r = RaftReplicator(settings, EmptyStateMachine())
        try:
            await until(lambda: r.driver.is_leader, 5, "a leader")
            frames = [frame(0), frame(1, 1000), frame(2), frame(3), frame(4)]
            outcomes = await asyncio.wait_for(r.propose_many(frames), 10)
            indices = [o.index for o in outcomes if isinstance(o, Accepted)]
            assert len(indices) == 3
            assert indices == list(range(indices[0], indices[0] + 3))  # consecutive, in order
            assert _reasons(outcomes)[1] is RejectReason.TOO_LARGE
            assert _reasons(outcomes)[4] is RejectReason.QUEUE_FULL
            assert r._pending_count == 0  # released once committed
            assert r.driver.commit_published >= indices[-1]
            entries = r.storage.entries(indices[0], indices[-1] + 1, 1 << 20)
            keys = [frame_pb2.Frame.FromString(e.data).ops[0].put.key for e in entries]
            assert keys == ["k0", "k2", "k3"]
        finally:
            await r.close()
        closed = await r.propose_many([frame(5)])
        assert _reasons(closed) == [RejectReason.SHUTTING_DOWN]

    asyncio.run(asyncio.wait_for(check(), 30))
