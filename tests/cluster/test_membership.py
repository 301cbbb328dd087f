"""Membership changes (dissertation §4) and leadership transfer (§3.10) in a
real cluster, while clients keep writing."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shardlite.node.client import ClientError
from tests.cluster.conftest import FAST
from tests.harness import LocalCluster, wait_until


def _voters(cluster_client_members: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {m.name: ("learner" if m.learner else "voter") for m in cluster_client_members}


def test_add_remove_transfer_while_writing(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    cluster.leader()
    acked: dict[str, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    def writer(n: int, endpoint: str) -> None:
        from shardlite.node.client import Client

        with Client(endpoint, namespace="ns", timeout=15) as c:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    acked[f"w{n}-{i}"] = c.put(f"w{n}-{i}", b"v").version
                except ClientError as exc:  # retried inside the client until its deadline
                    failures.append(f"{exc.code.name}: {exc.details}")

    # Writers talk to n1 and n3; n2 will be removed.
    threads = [
        threading.Thread(target=writer, args=(n, cluster.addresses["n1" if n % 2 else "n3"]))
        for n in range(4)
    ]
    for t in threads:
        t.start()
    try:
        # 1. A fourth node joins through n3, first as a learner, then promoted.
        n4 = cluster.joining_node("n4", via="n3", args=tuple(FAST))
        n4.start()
        with cluster.client("n1") as admin:
            wait_until(
                lambda: _voters(list(admin.members().members)).get("n4") == "voter",
                60,
                "n4 to be promoted to voter",
            )
            # 2. Remove n2 (through another node: the request goes to the leader).
            admin.remove_member("n2")
            assert "n2" not in _voters(list(admin.members().members))
            # 3. Hand leadership to n4.
            assert admin.transfer_leader("n4") == "n4"
        wait_until(lambda: len(acked) >= 200, 60, "writes to keep flowing")
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    assert failures == []
    survivors = ["n1", "n3", "n4"]
    assert cluster.leader(among=survivors) == "n4"
    contents = {}
    for name in survivors:
        with cluster.client(name, namespace="ns", timeout=30) as c:
            contents[name] = {e.key: e.version for e in c.list()}
    assert contents["n1"] == contents["n3"] == contents["n4"]
    for key, version in acked.items():
        assert contents["n4"].get(key) == version, f"acknowledged {key} lost"
