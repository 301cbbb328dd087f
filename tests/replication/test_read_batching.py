"""ReadIndex rounds are batched (dissertation §6.4): while one round is in
flight, reads that arrive wait for the next, and one round then confirms them
all, instead of one heartbeat round per read."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from shardlite.replication.raft.core import RaftCore
from shardlite.replication.replicator import Rejected, RejectReason
from tests.harness import until
from tests.replication.local_raft import LocalRaft


def count_rounds(core: RaftCore) -> list[bytes]:
    """The contexts of the ReadIndex rounds the driver starts on `core`."""
    contexts: list[bytes] = []
    real = core.read_index

    def read_index(ctx: bytes) -> Any:
        contexts.append(ctx)
        return real(ctx)

    core.read_index = read_index  # type: ignore[method-assign]
    return contexts


def test_reads_arriving_during_a_round_share_the_next_round(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            leader = await cluster.leader()
            await leader.read_barrier()  # the leader committed in its term
            followers = [n for n, r in cluster.replicators.items() if r is not leader]
            rounds = count_rounds(leader.driver.core)
            # Heartbeat answers are dropped: the first round stays in flight.
            leader.partition([], followers)
            first = asyncio.ensure_future(leader.read_barrier())
            await until(lambda: len(rounds) == 1, 2, "the first round never started")
            later = []
            for _ in range(10):  # each taken on its own turn of the driver's loop
                later.append(asyncio.ensure_future(leader.read_barrier()))
                for _ in range(3):  # yield, no timed wait: the read task, then the driver, run
                    await asyncio.sleep(0)
            assert len(rounds) == 1, "reads arriving during a round started rounds of their own"
            leader.partition([], [])
            indices = await asyncio.wait_for(asyncio.gather(first, *later), 10)
            assert all(i >= 1 for i in indices)
            # The first round (perhaps asked again once, its answers lost),
            # then one round for all ten.
            assert len(rounds) <= 3, f"{len(rounds)} rounds for 11 reads"
        finally:
            await cluster.close()

    asyncio.run(check())


def test_a_read_no_quorum_confirms_is_refused_after_the_read_timeout(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            leader = await cluster.leader()
            await leader.read_barrier()
            followers = [n for n, r in cluster.replicators.items() if r is not leader]
            # Shorter than the election timeout (10 ticks of 20 ms): the
            # leader still leads when the read gives up.
            leader.settings = dataclasses.replace(leader.settings, read_timeout=0.05)
            leader.partition([], followers)
            with pytest.raises(Rejected) as refused:
                await asyncio.wait_for(leader.read_barrier(), 5)
            assert refused.value.reason is RejectReason.NOT_LEADER
            assert "no leader confirmed a read index within 0.05s" in str(refused.value)
            # Healed, the next read is confirmed: the one that gave up left nothing stuck.
            leader.partition([], [])
            leader.settings = dataclasses.replace(leader.settings, read_timeout=5.0)
            reader = await cluster.leader()
            assert await asyncio.wait_for(reader.read_barrier(), 10) >= 1
        finally:
            await cluster.close()

    asyncio.run(check())
