"""The Client with several endpoints: writes go to the leader, and when a node
dies mid-load every call returns (ok, or a clear error within its deadline),
nothing acknowledged is lost, nothing applies twice, and a subscribe() stream
goes on on another node with no frame missed or repeated."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from shardlite.node.async_client import AsyncClient
from shardlite.node.client import Client, ClientError
from tests.harness import LocalCluster, running_cluster, until, wait_until

FAST = ("--raft-tick-ms", "20", "--election-ticks", "10")
WRITERS = 8
DEADLINE = 10.0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("failover"), 3, args=FAST) as cluster:
        yield cluster


def _all(cluster: LocalCluster, first: str | None = None) -> list[str]:
    names = sorted(cluster.addresses, key=lambda n: n != first)
    return [cluster.addresses[n] for n in names]


def test_writes_go_to_the_leader(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    with Client(_all(cluster, first=follower)) as client:
        client.put("k", b"v")
        assert client.endpoint == cluster.addresses[leader]


def test_the_leader_killed_under_load_loses_nothing_and_applies_nothing_twice(
    cluster: LocalCluster,
) -> None:
    leader = cluster.leader()
    acked: dict[str, int] = {}
    failed: list[str] = []
    slow: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()
    client = Client(_all(cluster), timeout=DEADLINE)

    def writer(n: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            key = f"w{n}-{i}"
            started = time.monotonic()
            try:
                # Create-only: were a retry applied a second time, its
                # condition would fail (FAILED_PRECONDITION) instead of the
                # node answering the first result again.
                client.put(key, b"x", expected_version=0)
            except ClientError as exc:
                with lock:
                    failed.append(f"{key}: {exc}")
            else:
                with lock:
                    acked[key] = 1
            with lock:
                slow.append(time.monotonic() - started)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 200, 30, "writes to flow")
        cluster.nodes[leader].kill()
        before = len(acked)
        wait_until(lambda: len(acked) >= before + 200, 60, "writes to flow after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE * 3)
    assert not any(t.is_alive() for t in threads)
    # Every call returned within its deadline (plus the time to return).
    assert max(slow) < DEADLINE + 2, max(slow)
    survivor = next(n for n in cluster.nodes if n != leader)
    with cluster.client(survivor, timeout=30) as check:
        for key in acked:
            entry = check.get(key)
            assert entry is not None, f"acknowledged {key} lost"
    # Clear errors only (unavailable while no leader was elected); none of
    # FAILED_PRECONDITION, which a write applied twice would have caused.
    assert all("UNAVAILABLE" in f or "DEADLINE_EXCEEDED" in f for f in failed), failed[:5]
    client.close()


def test_a_subscription_goes_on_across_a_node_kill(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    victim = next(n for n in cluster.nodes if n != leader)
    survivor = next(n for n in cluster.nodes if n not in (leader, victim))
    seen: list[int] = []
    errors: list[BaseException] = []
    subscriber = Client(_all(cluster, first=victim), timeout=5)
    start = subscriber.status().commit_index + 1
    done = threading.Event()

    def follow() -> None:
        try:
            for index, _ in subscriber.subscribe(start, timeout=120):
                seen.append(index)
                if done.is_set() and index >= last_index[0]:
                    return
        except BaseException as exc:  # reported below
            errors.append(exc)

    last_index = [0]
    thread = threading.Thread(target=follow)
    thread.start()
    written: list[int] = []
    try:
        with cluster.client(survivor) as writer:
            for i in range(300):
                if i == 100:
                    wait_until(lambda: len(seen) >= 50, 30, "the stream to flow")
                    cluster.nodes[victim].kill()
                written.append(writer.put(f"s{i}", b"v").index)
            last_index[0] = written[-1]
            done.set()
            writer.put("wake", b"v")  # a frame after `done`, whatever was seen before
        thread.join(60)
    finally:
        done.set()
        subscriber.close()
    assert not thread.is_alive()
    assert not errors, errors
    assert seen == sorted(set(seen)), "a frame came twice or out of order"
    assert set(written) <= set(seen), f"missed {sorted(set(written) - set(seen))[:5]}"
    assert subscriber.endpoint != cluster.addresses[victim]


def test_32_async_callers_through_one_async_client_survive_the_leaders_kill(
    cluster: LocalCluster,
) -> None:
    leader = cluster.leader()
    acked: list[str] = []
    failed: list[str] = []
    slowest = [0.0]

    async def run() -> None:
        async with AsyncClient(_all(cluster), timeout=DEADLINE) as client:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def caller(n: int) -> None:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    key = f"a{n}-{i}"
                    started = loop.time()
                    try:
                        await client.put(key, b"x", expected_version=0)  # create-only
                    except ClientError as exc:
                        failed.append(f"{key}: {exc}")
                    else:
                        acked.append(key)
                    slowest[0] = max(slowest[0], loop.time() - started)

            callers = [asyncio.create_task(caller(n)) for n in range(32)]
            try:
                await until(lambda: len(acked) >= 500, 30, "writes to flow")
                await asyncio.to_thread(cluster.nodes[leader].kill)
                before = len(acked)
                await until(lambda: len(acked) >= before + 500, 60, "writes after the kill")
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*callers), DEADLINE * 3)

    asyncio.run(run())
    assert slowest[0] < DEADLINE + 2, slowest[0]
    assert all("UNAVAILABLE" in f or "DEADLINE_EXCEEDED" in f for f in failed), failed[:5]
    survivor = next(n for n in cluster.nodes if n != leader)
    with cluster.client(survivor, timeout=30) as check:
        for key in acked:
            assert check.get(key) is not None, f"acknowledged {key} lost"


def test_an_async_subscription_goes_on_across_a_node_kill(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    victim = next(n for n in cluster.nodes if n != leader)
    survivor = next(n for n in cluster.nodes if n not in (leader, victim))
    seen: list[int] = []
    written: list[int] = []

    async def run() -> None:
        async with AsyncClient(_all(cluster, first=victim), timeout=5) as subscriber:
            start = (await subscriber.status()).commit_index + 1
            done = asyncio.Event()

            async def follow() -> None:
                async for index, _ in subscriber.subscribe(start):
                    seen.append(index)
                    if done.is_set() and index >= written[-1]:
                        return

            following = asyncio.create_task(follow())
            with cluster.client(survivor) as writer:
                for i in range(300):
                    if i == 100:
                        await until(lambda: len(seen) >= 50, 30, "the stream to flow")
                        await asyncio.to_thread(cluster.nodes[victim].kill)
                    written.append((await asyncio.to_thread(writer.put, f"s{i}", b"v")).index)
                done.set()
                await asyncio.to_thread(writer.put, "wake", b"v")
            await asyncio.wait_for(following, 60)
            assert subscriber.endpoint != cluster.addresses[victim]

    asyncio.run(run())
    assert seen == sorted(set(seen)), "a frame came twice or out of order"
    assert set(written) <= set(seen), f"missed {sorted(set(written) - set(seen))[:5]}"
