"""The leader lease for reads through the driver (dissertation §6.4.1): once a
heartbeat round was acknowledged, LINEARIZABLE reads on the leader take no
round through the loop; a leader cut off stops answering on its lease before
the others may elect a new one; and ticks never come closer than the tick
interval, which the lease's bound counts on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from shardlite.replication.observer import Observer
from shardlite.replication.raft.driver import lease_duration
from shardlite.replication.raft.replicator import RaftReplicator
from shardlite.replication.raft.transport import timing_problem
from shardlite.v1 import raft_pb2, raft_pb2_grpc
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


@contextlib.asynccontextmanager
async def leased(path: Path) -> AsyncIterator[tuple[LocalRaft, RaftReplicator]]:
    """A 3-member cluster with the lease on, and its leader once it holds one."""
    cluster = await LocalRaft.open(path, read_lease=True)
    try:
        leader = await cluster.leader()
        await until(leader.driver.core.has_read_lease, 2, "no heartbeat round grounded a lease")
        yield cluster, leader
    finally:
        await cluster.close()


def test_leader_reads_on_its_lease_without_a_round(tmp_path: Path) -> None:
    async def check() -> None:
        async with leased(tmp_path) as (cluster, leader):
            core = leader.driver.core
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

    asyncio.run(check())


def test_a_cut_off_leader_stops_reading_on_its_lease(tmp_path: Path) -> None:
    async def check() -> None:
        async with leased(tmp_path) as (cluster, leader):
            core = leader.driver.core
            followers = [n for n, r in cluster.replicators.items() if r is not leader]
            leader.partition(followers, followers)
            # On the driver's clock: 0.9 x 9 ticks after the last round acknowledged.
            await until(lambda: not core.has_read_lease(), 2, "the lease never ran out")
            assert leader.driver.lease_read_index() is None

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


def test_timing_must_match_when_the_lease_is_on() -> None:
    def timing(tick_us: int, election_ticks: int, lease: bool) -> raft_pb2.RaftTiming:
        return raft_pb2.RaftTiming(tick_us=tick_us, election_ticks=election_ticks, read_lease=lease)

    leased = timing(100_000, 10, True)
    assert timing_problem(leased, timing(100_000, 10, True)) is None
    # Without the lease, timing may differ (a rolling change of the tick).
    assert timing_problem(timing(100_000, 10, False), timing(50_000, 20, False)) is None
    slower = timing_problem(leased, timing(100_000, 20, True))
    assert slower == (
        "the read lease needs every member on the same Raft timing: this member runs "
        "a 100 ms tick, 10 election ticks, read lease on, the peer a 100 ms tick, "
        "20 election ticks, read lease on (--raft-tick-ms, --election-ticks, --read-lease)"
    )
    assert timing_problem(leased, timing(100_000, 10, False)) is not None
    assert timing_problem(timing(100_000, 10, False), leased) is not None
    # A peer that says nothing (a member from before the lease) is refused too.
    assert timing_problem(leased, raft_pb2.RaftTiming()) is not None


def test_a_member_refuses_a_peer_on_other_timing(tmp_path: Path) -> None:
    async def check() -> None:
        cluster = await LocalRaft.open(tmp_path, read_lease=True)
        try:
            member = next(iter(cluster.replicators.values()))
            other = raft_pb2.RaftTiming(tick_us=20_000, election_ticks=20, read_lease=True)
            async with grpc.aio.insecure_channel(member.settings.address) as channel:
                stub = raft_pb2_grpc.RaftStub(channel)
                metadata = member.cluster.metadata()
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.MessagePort(
                        raft_pb2.MessagePortRequest(sender=7, timing=other),
                        metadata=metadata,
                        timeout=5,
                    )
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "20 election ticks" in (refused.value.details() or "")
                same = raft_pb2.MessagePortRequest(sender=7, timing=member.timing)
                reply = await stub.MessagePort(same, metadata=metadata, timeout=5)
                assert reply.port > 0
        finally:
            await cluster.close()

    asyncio.run(check())
