"""Raft §7 in a real cluster: a follower that missed more than the leader
keeps in its log catches up by InstallSnapshot and ends identical."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
import pytest

from shardlite.v1 import kv_pb2, kv_pb2_grpc
from tests.harness import LocalCluster, wait_until
from tests.replication.crashing_node import CRASHED

ENTRIES = 50_000
NAMESPACES = ["a", "b", "c", "d"]


async def _write(endpoint: str, count: int, clients: int = 64) -> None:
    """`count` puts (one log entry each) from `clients` concurrent callers."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        next_key = iter(range(count))

        async def worker() -> None:
            for i in next_key:
                await stub.Put(
                    kv_pb2.PutRequest(
                        namespace=NAMESPACES[i % len(NAMESPACES)],
                        key=f"k{i % 5000:05d}",  # overwrites too: versions must match
                        value=f"v{i}".encode(),
                    ),
                    timeout=30,
                )

        await asyncio.gather(*(worker() for _ in range(clients)))


def _contents(cluster: LocalCluster, name: str) -> dict[str, list[tuple[str, bytes, int]]]:
    with cluster.client(name, timeout=30) as c:
        return {
            ns: [(e.key, e.value, e.version) for e in c.list(namespace=ns)] for ns in NAMESPACES
        }


@pytest.mark.timeout(400)  # 50,000 Raft entries on a shared 2-core machine
def test_lagging_follower_catches_up_by_install_snapshot(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(
        args=("--snapshot-entries", "5000", "--snapshot-catchup-entries", "1000")
    )
    leader = cluster.leader()
    lagging = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[lagging].kill()

    # Written once, before every snapshot: later snapshots link its copy
    # rather than copy it again (node/shards.py snapshot_to); the follower
    # must still get it.
    with cluster.client(leader) as c:
        c.put("k", b"written once", namespace="still")
    asyncio.run(_write(cluster.addresses[leader], ENTRIES))
    # The leader compacts its log far past what the lagging node has (in the
    # background: a snapshot follows the applied-index marker, every second).
    with cluster.client(leader) as c:
        wait_until(lambda: c.status().first_index > 1000, 60, "the leader to compact its log")
        status = c.status()
    assert status.commit_index >= ENTRIES

    cluster.nodes[lagging].start()
    log_path = cluster.nodes[lagging].log_path
    wait_until(
        lambda: "snapshot installed" in log_path.read_text(),
        60,
        "the follower to install a snapshot",
    )
    with cluster.client(lagging) as c:
        wait_until(
            lambda: c.status().applied_index >= status.commit_index,
            60,
            "the follower to apply everything",
        )
    expected = _contents(cluster, leader)
    assert sum(len(v) for v in expected.values()) == 5000
    assert _contents(cluster, lagging) == expected
    with cluster.client(lagging) as c:
        entry = c.get("k", namespace="still")
    assert entry is not None
    assert entry.value == b"written once"


# Every step of a follower's snapshot install (replication/raft/driver.py
# docstring) and of the shard swap inside it.
INSTALL_CRASH_POINTS = [
    "snapshot-install:kept",
    "snapshot-install:logged",
    "shards-swap:old-moved",
    "snapshot-install:swapped",
    "snapshot-install:marked",
]
# After these the log records the snapshot but the shards lag: the restart
# itself must finish the install from the kept files.
FINISHED_AT_RESTART = {
    "snapshot-install:logged",
    "shards-swap:old-moved",
    "snapshot-install:swapped",
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", INSTALL_CRASH_POINTS)
def test_a_crash_at_any_step_of_a_snapshot_install_restarts_cleanly(
    make_cluster: Callable[..., LocalCluster], point: str
) -> None:
    """Issue 11 item 2: the follower dies (os._exit, as SIGKILL) at one step of
    installing the leader's snapshot; started again, it must serve (the old
    order failed with DataDirMismatch) and converge to the leader's contents."""
    cluster = make_cluster(args=("--snapshot-entries", "200", "--snapshot-catchup-entries", "50"))
    leader = cluster.leader()
    lagging = next(n for n in cluster.nodes if n != leader)
    asyncio.run(_write(cluster.addresses[leader], 20, clients=4))  # it has shards to replace
    with cluster.client(lagging) as c:
        wait_until(lambda: c.status().applied_index >= 20, 30, "the follower to apply")
    node = cluster.nodes[lagging]
    node.kill()
    asyncio.run(_write(cluster.addresses[leader], 800, clients=16))
    with cluster.client(leader) as c:
        # Compaction runs in the background, after the applied-index marker.
        wait_until(lambda: c.status().first_index > 100, 30, "the leader to compact past it")
        status = c.status()

    node.module = "tests.replication.crashing_node"
    node.env = {"SHARDLITE_TEST_CRASH_POINT": point}
    with contextlib.suppress(RuntimeError):  # it may die before or after it serves
        node.start()
    wait_until(lambda: not node.running, 60, f"the follower to reach {point}")
    assert node.process is not None
    assert node.process.returncode == CRASHED, node.log_tail()
    node.kill()  # closes its log
    assert f"crash point {point} reached" in node.log_path.read_text()

    node.module, node.env = "shardlite.node.cli", None
    crashed_log = len(node.log_path.read_text())
    node.start()  # the old order: DataDirMismatch here, for a crash after the marker
    restart_log = node.log_path.read_text()[crashed_log:]
    assert ("finishing its install" in restart_log) == (point in FINISHED_AT_RESTART)
    with cluster.client(lagging) as c:
        wait_until(
            lambda: c.status().applied_index >= status.commit_index,
            60,
            "the restarted follower to apply everything",
        )
    expected = _contents(cluster, leader)
    assert sum(len(v) for v in expected.values()) > 0
    assert _contents(cluster, lagging) == expected
