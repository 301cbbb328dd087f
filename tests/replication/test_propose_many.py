"""RaftDriver.propose_many: consecutive entries in order, one future for the
lot, interleaved correctly with single proposals taken in the same round."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shardlite.replication.raft.replicator import RaftReplicator
from shardlite.v1 import frame_pb2
from tests.harness import until
from tests.replication.local_raft import EmptyStateMachine
from tests.replication.test_raft_bounds import single


def data(n: int) -> bytes:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v"))
    return f.SerializeToString()


def test_propose_many_lands_consecutively_beside_single_proposals(tmp_path: Path) -> None:
    async def check() -> None:
        r = RaftReplicator(single(tmp_path), EmptyStateMachine())
        try:
            await until(lambda: r.driver.is_leader, 5, "a leader")
            # All three queued before the loop runs: taken in one round.
            one = asyncio.ensure_future(r.driver.propose(data(0)))
            many = asyncio.ensure_future(r.driver.propose_many([data(1), data(2), data(3)]))
            last = asyncio.ensure_future(r.driver.propose(data(4)))
            (t0, i0), (t1, i1), (t2, i2) = await asyncio.gather(one, many, last)
            assert t0 == t1 == t2
            assert (i1, i2) == (i0 + 1, i0 + 4)
            await asyncio.wait_for(r.driver.wait_committed(t2, i2), 5)
            stored = [e.data for e in r.storage.entries(i0, i2 + 1, 1 << 20)]
            assert stored == [data(n) for n in range(5)]
        finally:
            await r.close()

    asyncio.run(check())
