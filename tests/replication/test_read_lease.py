"""The leader lease for reads through the driver (dissertation §6.4.1): once a
heartbeat round was acknowledged, LINEARIZABLE reads on the leader take no
round through the loop; a leader cut off stops answering on its lease before
the others may elect a new one; and ticks never come closer than the tick
interval, which the lease's bound counts on."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from shardlite.replication.observer import Observer
from shardlite.replication.raft.driver import lease_duration
from tests.harness import until
from tests.replication.local_raft import LocalRaft
from tests.replication.test_read_batching import count_rounds

TICK = 0.02  # LocalRaft's tick interval; the election timeout is 10 ticks


def stall_loop(seconds: float) -> None:
    """Block the running event loop, as a slow fsync on it would."""
    time.sleep(seconds)


class ReadIndexes(Observer):
    def __init__(self) -> None:
        self.via: list[str] = []

    def read_index(self, via: str) -> None:
        self.via.append(via)


def test_lease_duration_stays_under_the_election_timeout() -> None:
    # The 10th tick after a heartbeat may come 9 intervals later; 10% slack.
    assert lease_duration(0.1, 10) == 0.9 * 9 * 0.1


def test_leader_reads_on_its_lease_without_a_round(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path, read_lease=True)
        try:
            leader = await cluster.leader()
            core = leader.driver.core
            await until(core.has_read_lease, 2, "no heartbeat round grounded a lease")
            rounds = count_rounds(core)
            seen = ReadIndexes()
            leader.observer = seen
            index = await leader.read_barrier()
            assert index == core.log.committed
            indices = await asyncio.gather(*(leader.read_barrier() for _ in range(50)))
            assert min(indices) >= index
            if core.has_read_lease():  # not lost to a stall of this loop meanwhile
                assert rounds == []
                assert seen.via == ["lease"] * 51
            # A follower's read is forwarded, and answered on the lease too.
            follower = next(r for r in cluster.replicators.values() if r is not leader)
            assert await asyncio.wait_for(follower.read_barrier(), 5) >= index
        finally:
            await cluster.close()

    asyncio.run(check())


def test_a_cut_off_leader_stops_reading_on_its_lease(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path, read_lease=True)
        try:
            leader = await cluster.leader()
            core = leader.driver.core
            await until(core.has_read_lease, 2, "no heartbeat round grounded a lease")
            followers = [n for n, r in cluster.replicators.items() if r is not leader]
            leader.partition(followers, followers)
            # On the driver's clock: 0.9 x 9 ticks after the last round acknowledged.
            await until(lambda: not core.has_read_lease(), 2, "the lease never ran out")
            assert leader.driver.lease_read_index() is None
        finally:
            await cluster.close()

    asyncio.run(check())


def test_ticks_never_come_closer_than_the_interval(tmp_path: Path) -> None:
    """After a stall, the driver ticks once, not a burst: an election timeout
    of ticks then always spans at least election_tick - 1 intervals."""

    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path, read_lease=True)
        try:
            core = (await cluster.leader()).driver.core
            times: list[float] = []
            real = core.tick

            def tick() -> None:
                times.append(time.monotonic())
                real()

            core.tick = tick  # type: ignore[method-assign]

            def ticked_thrice_since(seen: int) -> Callable[[], bool]:
                return lambda: len(times) >= seen + 3

            for _ in range(5):
                stall_loop(3 * TICK)  # a slow fsync, a long GC
                await until(ticked_thrice_since(len(times)), 2, "no ticks")
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert min(gaps) >= TICK, f"two ticks {min(gaps):.4f}s apart"
        finally:
            await cluster.close()

    asyncio.run(check())
