"""One conformance suite, two targets: a single node and a 3-node cluster.

Each target is started once per module and shared; each test works in
namespaces of its own. On the cluster the client talks to a follower, so a
test can kill the leader (a node that is not the client's endpoint) and
restart it afterwards for the tests that follow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardlite.node.client import Client, ClientError
from tests.harness import LocalCluster, NodeProcess, free_ports, wait_until

# Fast elections: 50 ms ticks, a 0.5-1 s election timeout.
FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")
# A call's deadline: long enough to ride out an election.
CALL_TIMEOUT = 15.0


class Target:
    """Nodes to run the stores against: `client()` talks to one endpoint,
    `kill_other()` kills a node that is not that endpoint (the leader, on a
    cluster), `restart()` brings every killed node back."""

    kind = "?"

    def endpoint(self) -> str:
        raise NotImplementedError

    def client(self, **kwargs: object) -> Client:
        options: dict[str, object] = {"timeout": CALL_TIMEOUT, **kwargs}
        return Client(self.endpoint(), **options)  # type: ignore[arg-type]

    def kill_other(self) -> str | None:
        return None

    def kill_endpoint(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError


class SingleNode(Target):
    kind = "node"

    def __init__(self, base: Path) -> None:
        port = free_ports(1)[0]
        self.node = NodeProcess(
            data_dir=base / "n1", args=[], log_path=base / "n1.log", listen=f"127.0.0.1:{port}"
        )

    def endpoint(self) -> str:
        return self.node.endpoint

    def kill_endpoint(self) -> None:
        self.node.kill()

    def restart(self) -> None:
        if not self.node.running:
            self.node.start()

    def stop(self) -> None:
        self.node.kill()


class Cluster(Target):
    kind = "cluster"

    def __init__(self, base: Path) -> None:
        self.cluster = LocalCluster(base, 3, args=FAST)
        self._endpoint_name = ""

    def start(self) -> None:
        self.cluster.start()
        self.pick_endpoint()

    def pick_endpoint(self) -> None:
        """A follower, so that killing the leader is killing another node."""
        leader = self.cluster.leader()
        self._endpoint_name = next(n for n in sorted(self.cluster.nodes) if n != leader)

    def endpoint(self) -> str:
        return self.cluster.addresses[self._endpoint_name]

    def kill_other(self) -> str | None:
        leader = self.cluster.leader()
        assert leader != self._endpoint_name
        self.cluster.nodes[leader].kill()
        return leader

    def kill_endpoint(self) -> None:
        self.cluster.nodes[self._endpoint_name].kill()

    def restart(self) -> None:
        for node in self.cluster.nodes.values():
            if not node.running:
                node.start()
        names = list(self.cluster.nodes)
        self.cluster.leader(timeout=30, among=names)

        def caught_up() -> bool:
            statuses = []
            for name in names:
                try:
                    with self.cluster.client(name, timeout=2) as c:
                        statuses.append(c.status())
                except ClientError:
                    return False
            return len({s.applied_index for s in statuses}) == 1

        wait_until(caught_up, 30, "every member to apply the same index")

    def stop(self) -> None:
        self.cluster.stop()


@pytest.fixture(scope="module", params=["node", "cluster"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    base = tmp_path_factory.mktemp(f"stores-{request.param}")
    started: SingleNode | Cluster
    if request.param == "node":
        started = SingleNode(base)
        try:
            started.node.start()
            yield started
        finally:
            started.stop()
    else:
        started = Cluster(base)
        try:
            started.start()
            yield started
        finally:
            started.stop()


@pytest.fixture
def client(target: Target) -> Iterator[Client]:
    if isinstance(target, Cluster):
        target.pick_endpoint()
    with target.client() as c:
        yield c


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own."""
    return f"t{uuid.uuid4().hex[:16]}"
