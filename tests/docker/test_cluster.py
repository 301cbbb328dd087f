"""The three-node cluster of docker/docker-compose.yml, driven from the host through
its published ports: writes and reads through every node, the leader's container
killed (a new leader, no acknowledged write lost), restarted (it catches up), and
`down -v` leaving nothing behind. The tests run in order on one cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from shardlite.node.client import SERIALIZABLE
from tests.docker.dockerlib import (
    COMPOSE_LABEL,
    SERVICES,
    ComposeCluster,
    docker,
    health,
    leftovers,
    wait_health,
)
from tests.harness import wait_until


@dataclass
class Run:
    cluster: ComposeCluster
    leader: str
    acked: dict[str, bytes] = field(default_factory=dict)  # every acknowledged write
    killed: str = ""
    killed_term: int = 0


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    cluster = ComposeCluster()
    failed_before = request.session.testsfailed
    try:
        cluster.up()
        leader = cluster.wait_ready(timeout=120)
        yield Run(cluster, leader)
    finally:
        if request.session.testsfailed > failed_before:
            cluster.dump_logs()
        cluster.down()


def read_all(cluster: ComposeCluster, service: str, keys: dict[str, bytes]) -> dict[str, bytes]:
    """Linearizable reads of `keys` through one node; the values found."""
    found = {}
    with cluster.client(service) as c:
        for key in keys:
            entry = c.get(key)
            if entry is not None:
                found[key] = entry.value
    return found


def test_writes_and_reads_through_every_node(run: Run) -> None:
    for service in SERVICES:
        with run.cluster.client(service) as c:
            for i in range(10):
                key, value = f"via-{service}/{i:03d}", f"{service}:{i}".encode()
                c.put(key, value)
                run.acked[key] = value
    for service in SERVICES:
        assert read_all(run.cluster, service, run.acked) == run.acked, service
        with run.cluster.client(service) as c:
            listed = {e.key: e.value for e in c.list("via-")}
        assert listed == run.acked, f"list through {service}"


def test_killing_the_leader_elects_another_and_loses_no_acknowledged_write(run: Run) -> None:
    cluster = run.cluster
    old = cluster.status(run.leader)
    assert old["role"] == "leader"
    run.killed, run.killed_term = run.leader, int(old["term"])
    survivors = tuple(s for s in SERVICES if s != run.killed)

    # Clients keep writing through every node (the doomed one too) while it is killed.
    stop = threading.Event()
    lock = threading.Lock()
    outcomes = {"acked": 0, "failed": 0}

    def writer(service: str) -> None:
        n = 0
        with cluster.client(service, timeout=5.0) as c:
            while not stop.is_set() and n < 10_000:
                key, value = f"during/{service}/{n:05d}", f"w{n}".encode()
                n += 1
                try:
                    c.put(key, value)
                except Exception:
                    with lock:
                        outcomes["failed"] += 1  # outcome unknown: not checked
                    time.sleep(0.1)
                    continue
                with lock:
                    run.acked[key] = value
                    outcomes["acked"] += 1

    threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in SERVICES]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: outcomes["acked"] >= 20, 30, "writes before the kill")
        container = cluster.container(run.killed)
        docker("kill", container, timeout=30)  # SIGKILL, no goodbye
        wait_until(lambda: health(container) == "exited", 30, f"{run.killed} dead")
        run.leader = cluster.wait_ready(survivors, timeout=60)
        acked_at_election = outcomes["acked"]
        wait_until(lambda: outcomes["acked"] >= acked_at_election + 20, 30, "writes after")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert run.leader != run.killed
    assert int(cluster.status(run.leader)["term"]) > run.killed_term
    print(f"killed {run.killed}; new leader {run.leader}; writes {outcomes}")
    for service in survivors:
        found = read_all(cluster, service, run.acked)
        missing = sorted(set(run.acked) - set(found))
        assert not missing, f"{service} lost {len(missing)} acknowledged writes: {missing[:5]}"
        assert found == run.acked, f"{service}: wrong values"


def test_the_restarted_node_catches_up(run: Run) -> None:
    cluster = run.cluster
    assert run.killed, "needs the previous test"
    # Written while it was down: it must get these from the others.
    with cluster.client(run.leader) as c:
        for i in range(20):
            key, value = f"while-down/{i:03d}", f"d{i}".encode()
            c.put(key, value)
            run.acked[key] = value
    container = cluster.container(run.killed)
    docker("start", container, timeout=60)
    wait_health(container, "healthy", 60)
    cluster.wait_ready(timeout=60)
    target = int(cluster.status(run.leader)["commit_index"])
    wait_until(
        lambda: int(cluster.status(run.killed)["applied_index"]) >= target,
        60,
        f"{run.killed} applying up to index {target}",
    )
    # Its own copy, read locally (no leader round trip), holds every acknowledged write.
    with cluster.client(run.killed) as c:
        local = {key: c.get(key, consistency=SERIALIZABLE) for key in run.acked}
    missing = sorted(key for key, entry in local.items() if entry is None)
    assert not missing, f"{run.killed} lacks {len(missing)} writes: {missing[:5]}"
    assert {key: e.value for key, e in local.items() if e is not None} == run.acked
    # And it serves writes again.
    with cluster.client(run.killed) as c:
        c.put("after-restart", b"ok")
    assert read_all(cluster, run.leader, {"after-restart": b""}) == {"after-restart": b"ok"}


def test_down_v_leaves_nothing_behind(run: Run) -> None:
    assert leftovers(COMPOSE_LABEL), "the cluster should be up before this test"
    run.cluster.down()
    left = leftovers(COMPOSE_LABEL)
    assert not left, f"left behind after down -v: {left}"
