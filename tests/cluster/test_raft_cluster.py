"""A real 3-node Raft cluster of node processes on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest

from shardlite.node.client import SERIALIZABLE, Client, ClientError
from shardlite.v1 import raft_pb2, raft_pb2_grpc
from tests.harness import LocalCluster, wait_until

NAMES = ["n1", "n2", "n3"]


def test_elects_one_leader_and_every_node_reads_every_write(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.leader()
    assert leader in NAMES
    roles = {}
    for name in NAMES:
        with cluster.client(name) as c:
            status = c.status()
        roles[name] = status.role
        assert status.replicator == "raft"
        assert status.leader_address == cluster.addresses[leader]
        assert sorted(status.members) == NAMES
    assert sorted(roles.values()) == ["follower", "follower", "leader"]

    # Write through each node (followers forward); read through every node at once.
    for writer in NAMES:
        with cluster.client(writer, namespace="ns") as w:
            written = w.put(f"from-{writer}", writer.encode())
        for reader in NAMES:
            with cluster.client(reader, namespace="ns") as r:
                entry = r.get(f"from-{writer}")
            assert entry is not None, f"{reader} missed the write through {writer}"
            assert (entry.value, entry.version) == (writer.encode(), written.version)


def test_kill_the_leader_new_leader_and_nothing_acknowledged_is_lost(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    old = cluster.leader()
    acked: dict[str, int] = {}
    for i in range(50):
        with cluster.client(NAMES[i % 3], namespace="ns") as c:
            acked[f"k{i}"] = c.put(f"k{i}", str(i).encode()).version
    cluster.nodes[old].kill()
    survivors = [n for n in NAMES if n != old]
    started = time.monotonic()
    new = cluster.leader(among=survivors, timeout=10)
    elapsed = time.monotonic() - started
    assert new != old
    assert elapsed < 10
    with cluster.client(survivors[0], namespace="ns") as c:
        for i in range(50, 80):
            acked[f"k{i}"] = c.put(f"k{i}", str(i).encode()).version
        stored = {e.key: e.version for e in c.list()}
    assert stored == acked

    cluster.nodes[old].start()
    with cluster.client(old, namespace="ns") as c:
        # A linearizable read on the restarted node sees everything.
        wait_until(lambda: c.get("k79") is not None, 15, "the old leader to catch up")
        assert {e.key: e.version for e in c.list()} == acked


def test_a_minority_cannot_acknowledge_writes(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(args=("--leader-wait", "2", "--propose-timeout", "2"))
    leader = cluster.leader()
    with cluster.client(leader, namespace="ns") as c:
        before = c.put("before", b"v").version
    alone = leader
    for name in NAMES:
        if name != alone:
            cluster.nodes[name].kill()
    failed = 0
    started = time.monotonic()
    with cluster.client(alone, namespace="ns", timeout=3) as c:
        for i in range(3):
            with pytest.raises(ClientError) as failure:
                c.put(f"minority-{i}", b"x")
            assert failure.value.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            failed += 1
        # Serializable reads still answer from local state.
        entry = c.get("before", consistency=SERIALIZABLE)
        assert entry is not None
        assert entry.version == before
    assert failed == 3
    assert time.monotonic() - started < 3 * 3 + 5

    for name in NAMES:
        if name != alone:
            cluster.nodes[name].start()
    cluster.leader()
    with cluster.client(NAMES[0], namespace="ns") as c:
        entry = c.get("before")
        assert entry is not None
        assert entry.version == before


@pytest.mark.parametrize("args", [(), ("--read-lease",)], ids=["read-index", "read-lease"])
def test_deposed_leader_never_serves_a_stale_linearizable_read(
    make_cluster: Callable[..., LocalCluster], args: tuple[str, ...]
) -> None:
    """With --read-lease the old leader wakes up holding a lease whose time
    ran out while it was stopped: its clock kept counting."""
    cluster = make_cluster(args=args)
    old = cluster.leader()
    with cluster.client(old, namespace="ns") as c:
        c.put("k", b"old")
    cluster.nodes[old].pause()  # like a long GC pause: it still thinks it leads
    try:
        others = [n for n in NAMES if n != old]
        new = cluster.leader(among=others, timeout=10)
        with cluster.client(new, namespace="ns") as c:
            c.put("k", b"new")
    finally:
        cluster.nodes[old].resume()
    # Right after it wakes, the old leader must not answer with the old value.
    outcome: object
    with Client(cluster.addresses[old], namespace="ns", timeout=10) as c:
        try:
            entry = c.get("k")
            outcome = entry.value if entry else None
        except ClientError as exc:
            outcome = exc.code
    assert outcome in (b"new", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_restarting_every_node_at_once_loses_nothing(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    cluster.leader()
    acked: dict[str, int] = {}
    stop = threading.Event()
    errors: list[str] = []

    def writer(n: int) -> None:
        with cluster.client(NAMES[n % 3], namespace="ns", timeout=3) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    acked[f"w{n}-{i}"] = c.put(f"w{n}-{i}", b"v").version
                except ClientError as exc:
                    errors.append(exc.code.name)
                    return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 300, 60, "300 acknowledged writes")
    cluster.kill_all()
    stop.set()
    for t in threads:
        t.join(30)
    snapshot = dict(acked)
    cluster.start()
    cluster.leader()
    for name in NAMES:
        with cluster.client(name, namespace="ns") as c:
            stored = {e.key: e.version for e in c.list()}
        missing = {k: v for k, v in snapshot.items() if stored.get(k) != v}
        assert missing == {}, f"{name} lost acknowledged writes"


def test_subscribe_on_every_node_sees_the_same_frames_across_a_restart(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.leader()
    follower = next(n for n in NAMES if n != leader)
    with cluster.client(leader, namespace="subs") as c:
        first = c.put("k0", b"v0").index
        for i in range(1, 20):
            c.put(f"k{i}", f"v{i}".encode())

    def frames(name: str, start: int, count: int) -> list[tuple[int, str]]:
        with cluster.client(name) as c:
            out = []
            for index, frame in c.subscribe(start, timeout=20):
                out.append((index, frame.ops[0].put.key))
                if len(out) == count:
                    return out
        raise AssertionError("stream ended early")

    streams = {name: frames(name, first, 20) for name in NAMES}
    assert streams[NAMES[0]] == streams[NAMES[1]] == streams[NAMES[2]]
    assert [k for _, k in streams[leader]] == [f"k{i}" for i in range(20)]

    # The follower restarts; its stream resumes where a subscriber left off.
    cluster.nodes[follower].kill()
    cluster.nodes[follower].start()
    with cluster.client(leader, namespace="subs") as c:
        later = c.put("after-restart", b"v").index
    resumed = frames(follower, streams[leader][10][0], 11)
    assert resumed[:10] == streams[leader][10:]
    assert resumed[10] == (later, "after-restart")


def _partition(cluster: LocalCluster, name: str, drop: list[str]) -> None:
    with grpc.insecure_channel(cluster.addresses[name]) as channel:
        raft_pb2_grpc.FaultsStub(channel).Partition(
            raft_pb2.PartitionRequest(drop_to=drop, drop_from=drop), timeout=10
        )


def test_an_isolated_leader_is_replaced_and_catches_up_after_healing(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(
        args=("--fault-injection", "--leader-wait", "2", "--propose-timeout", "2")
    )
    old = cluster.leader()
    others = [n for n in NAMES if n != old]
    with cluster.client(old, namespace="ns") as c:
        c.put("k", b"before")
    # Cut the leader off in both directions, on every side.
    _partition(cluster, old, others)
    for name in others:
        _partition(cluster, name, [old])
    new = cluster.leader(among=others, timeout=15)
    with cluster.client(new, namespace="ns") as c:
        written = c.put("k", b"after")
    with cluster.client(old, namespace="ns", timeout=3) as c:
        with pytest.raises(ClientError) as failure:
            c.put("minority", b"x")
        assert failure.value.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        try:
            entry = c.get("k")
            outcome: object = entry.value if entry else None
        except ClientError as exc:
            outcome = exc.code
        assert outcome in (b"after", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    for name in NAMES:
        _partition(cluster, name, [])
    with cluster.client(old, namespace="ns") as c:

        def caught_up() -> bool:
            entry = c.get("k")
            return entry is not None and entry.version == written.version

        wait_until(caught_up, 15, "the old leader to catch up")
        assert c.get("minority") is None
