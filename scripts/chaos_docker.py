"""The chaos harness's docker backend: the three containers of
docker/docker-compose.yml as a private compose project on free loopback ports
(tests/docker/dockerlib.py), with container-level faults:

- kill: `docker kill` (SIGKILL); restart: `docker start`, then wait until it serves;
- terminate: `docker stop`; pause/resume: `docker pause`/`docker unpause`;
- isolate: `docker network disconnect` of each target container from the project's
  network (it reaches no peer, and clients reach it no more: their requests time out);
  heal: `docker network connect --alias <service>` (peers find it by name again).

    python -m scripts.chaos --backend docker --scenario docker/leader-kill-partition

The image must exist (make docker-build). The nodes get the harness's Raft timing
through a generated compose override (environment variables). The project is
`down -v`'d when the run ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.chaos import Backend
from scripts.cluster import wait_until
from shardlite.node.cli import TEST_ONLY_FLAGS
from shardlite.node.client import Client, ClientError
from tests.docker.dockerlib import SERVICES, ComposeCluster, container_logs, docker, inspect

if TYPE_CHECKING:
    from scripts.chaos import ChaosRun

# The harness's node flags, as the nodes' environment. --fault-injection is left
# out: partitions here are docker's, not the node's Faults service.
NODE_ENV = {
    "SHARDLITE_RAFT_TICK_MS": "50",
    "SHARDLITE_ELECTION_TICKS": "10",
    "SHARDLITE_LEADER_WAIT": "2",
    "SHARDLITE_PROPOSE_TIMEOUT": "2",
}


def flags_to_env(args: Sequence[str]) -> dict[str, str]:
    """`--raft-tick-ms 50 --leader-wait 2` -> SHARDLITE_RAFT_TICK_MS=50,
    SHARDLITE_LEADER_WAIT=2 (every node flag but the test-only ones is also a
    variable)."""
    env: dict[str, str] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("--"):
            raise ValueError(f"node_args: expected a --flag, got {flag!r}")
        if flag.split("=", 1)[0] in TEST_ONLY_FLAGS:
            raise ValueError(f"node_args: {flag} is a test-only mode: a flag, never a variable")
        var = "SHARDLITE_" + flag[2:].upper().replace("-", "_")
        if "=" in var:
            var, value = var.split("=", 1)
            env[var] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            env[var] = args[i + 1]
            i += 1
        else:
            env[var] = "1"
        i += 1
    return env


def default_project() -> str:
    """make docker-test's project (so its cleanup covers us), else a fresh one."""
    return os.environ.get("SHARDLITE_TEST_PROJECT") or f"shardlite-chaos-{uuid.uuid4().hex[:10]}"


class DockerBackend(Backend):
    kind = "docker"
    # Asymmetric drops need the node's Faults service; membership changes need
    # containers the compose file does not have.
    unsupported = frozenset({"drop", "add-node", "remove-node"})

    @classmethod
    def for_run(cls, run: ChaosRun) -> DockerBackend:
        return cls(run.base, run.scenario.nodes, run.scenario.node_args, run.note)

    def __init__(
        self,
        base: Path,
        size: int,
        node_args: Sequence[str],
        note: Callable[[str], None],
        project: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__()
        if size != len(SERVICES):
            raise ValueError(f"the compose cluster has {len(SERVICES)} nodes, not {size}")
        self.base = base
        self.note = note
        self.start_timeout = start_timeout
        env = {**NODE_ENV, **flags_to_env([a for a in node_args if a != "--fault-injection"])}
        base.mkdir(parents=True, exist_ok=True)
        override = base / "chaos-compose.override.yml"
        # JSON is YAML: no yaml module needed.
        override.write_text(
            json.dumps({"services": {s: {"environment": env} for s in SERVICES}}, indent=1)
        )
        self.compose = ComposeCluster(project=project or default_project(), overrides=[override])
        self.addresses = {s: self.compose.endpoint(s) for s in SERVICES}
        self.containers: dict[str, str] = {}
        self.network = ""
        self.disconnected: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.compose.up()
        self.compose.wait_ready(timeout=self.start_timeout)
        self.containers = {s: self.compose.container(s) for s in SERVICES}
        networks = list(inspect(self.containers[SERVICES[0]])["NetworkSettings"]["Networks"])
        if len(networks) != 1:
            raise RuntimeError(f"expected one network, the containers are on {networks}")
        self.network = networks[0]

    def stop(self) -> None:
        for container in self.containers.values():
            with contextlib.suppress(Exception):
                if inspect(container)["State"].get("Paused"):
                    docker("unpause", container, timeout=30)
        self.compose.down()

    def save_logs(self) -> None:
        for name, container in self.containers.items():
            (self.base / f"{name}.log").write_text(container_logs(container))

    # -- faults ---------------------------------------------------------------------

    def running(self, name: str) -> bool:
        return bool(inspect(self.containers[name])["State"]["Running"])

    def _serves(self, name: str) -> bool:
        try:
            with Client(self.addresses[name], timeout=1.0) as c:
                c.status()
        except ClientError:
            return False
        return True

    def start_node(self, name: str) -> None:
        container = self.containers[name]
        if not self.running(name):
            docker("start", container, timeout=60)
        if name in self.disconnected:
            return  # cut off: nothing reaches it until heal
        wait_until(lambda: self._serves(name), 60, f"{name} serving after docker start")

    def kill(self, name: str) -> None:
        container = self.containers[name]
        docker("kill", container, timeout=30, check=False)
        wait_until(lambda: not self.running(name), 30, f"{name} dead after docker kill")

    def terminate(self, name: str) -> None:
        docker("stop", "--time", "15", self.containers[name], timeout=60)

    def pause(self, name: str) -> None:
        docker("pause", self.containers[name], timeout=30)

    def resume(self, name: str) -> None:
        docker("unpause", self.containers[name], timeout=30)

    def isolate(self, group: set[str], rest: set[str], reachable: Sequence[str]) -> str:
        for name in sorted(group - self.disconnected):
            t = time.monotonic()
            docker("network", "disconnect", self.network, self.containers[name], timeout=30)
            self.disconnected.add(name)
            self.note(f"  docker network disconnect {name} ({time.monotonic() - t:.2f}s)")
        return "each target alone" if len(group) > 1 else ""

    def drop(
        self, names: Sequence[str], direction: str, peers: Sequence[str], reachable: Sequence[str]
    ) -> None:
        raise NotImplementedError("the docker backend has no asymmetric partitions")

    def heal(self, reachable: Sequence[str]) -> None:
        for name in sorted(self.disconnected):
            docker(
                "network", "connect", "--alias", name, self.network, self.containers[name],
                timeout=30,
            )  # fmt: skip
            self.disconnected.discard(name)

    def add_node(self, name: str, via: str) -> None:
        raise NotImplementedError("the docker backend has a fixed set of containers")
