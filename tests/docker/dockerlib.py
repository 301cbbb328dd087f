"""Drive docker and the compose project of one test run. Every call is bounded by a
timeout; everything a run creates carries its project name and is removed at the end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardlite.node.client import Client
from tests.harness import free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
SECURE_COMPOSE_FILE = ROOT / "docker" / "docker-compose.secure.yml"
SERVICES = ("n1", "n2", "n3")
IMAGE = os.environ.get("SHARDLITE_TEST_IMAGE", "shardlite:latest")
# Only used if compose decides to build (the tests run with --no-build).
BASE_IMAGE = os.environ.get("SHARDLITE_TEST_BASE_IMAGE", "shardlite-base:bookworm")
# Unique to this run (make docker-test sets it, so it can clean up after pytest too).
PROJECT = os.environ.get("SHARDLITE_TEST_PROJECT") or f"shardlite-test-{uuid.uuid4().hex[:10]}"
TEST_LABEL = f"shardlite.test={PROJECT}"
COMPOSE_LABEL = f"com.docker.compose.project={PROJECT}"


def run(args: list[str], *, timeout: float = 120, check: bool = True) -> str:
    """Run a command; its stdout, or AssertionError with its output when it fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{shlex.join(args)}: no answer within {timeout}s") from exc
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check)


def container_logs(container: str) -> str:
    """What the container wrote to stdout and stderr (the node logs to stderr)."""
    done = subprocess.run(
        ["docker", "logs", container],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def compose_command() -> list[str]:
    """`docker compose` when it works, else docker-compose (as make picks it)."""
    configured = os.environ.get("SHARDLITE_TEST_COMPOSE")
    if configured:
        return shlex.split(configured)
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return ["docker", "compose"] if probe.returncode == 0 else ["docker-compose"]


def inspect(container: str) -> dict[str, Any]:
    info: list[dict[str, Any]] = json.loads(docker("inspect", container, timeout=30))
    return info[0]


def health(container: str) -> str:
    """starting/healthy/unhealthy while running; else the container's status."""
    state = inspect(container)["State"]
    if state["Status"] != "running":
        return str(state["Status"])
    return str(state.get("Health", {}).get("Status", "none"))


def wait_health(container: str, want: str, timeout: float) -> None:
    wait_until(lambda: health(container) == want, timeout, f"{container} {want}")


def leftovers(*labels: str) -> list[str]:
    """Containers, networks and volumes carrying any of these labels."""
    found = []
    for label in labels:
        for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
            out = docker(*kind, "--quiet", "--filter", f"label={label}", timeout=30)
            found += [f"{kind[0]} {name}" for name in out.split()]
    return found


@dataclass
class ComposeCluster:
    """The repository's docker-compose.yml as a private project on free host ports."""

    project: str = PROJECT
    ports: dict[str, int] = field(default_factory=dict)
    # More compose files merged over docker-compose.yml (e.g. extra environment).
    overrides: list[Path] = field(default_factory=list)
    # Options for every Client made here (TLS credentials, once known).
    client_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        self.env = {
            **os.environ,
            "SHARDLITE_IMAGE": IMAGE,
            "SHARDLITE_BASE_IMAGE": BASE_IMAGE,
            "SHARDLITE_BIND": "127.0.0.1",
            "SHARDLITE_RESTART": "no",  # the test restarts what it kills, when it wants
            **{f"SHARDLITE_PORT_{name.upper()}": str(port) for name, port in self.ports.items()},
        }

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        files = [arg for path in (COMPOSE_FILE, *self.overrides) for arg in ("-f", str(path))]
        command = [*compose_command(), *files, "-p", self.project, *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{shlex.join(command)}: no answer within {timeout}s") from exc
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def up(self) -> None:
        self.compose("up", "--detach", "--no-build")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "--all", "--quiet", service, timeout=30).split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def endpoint(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def client(self, service: str, timeout: float = 10.0) -> Client:
        return Client(self.endpoint(service), timeout=timeout, **self.client_options)

    def status(self, service: str) -> dict[str, Any]:
        """role, leader, term, commit_index, applied_index of a node (through its port)."""
        with self.client(service, timeout=3.0) as c:
            s = c.status()
        return {
            "node_id": s.node_id,
            "role": s.role,
            "leader": s.leader,
            "term": s.term,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "members": list(s.members),
        }

    def agreed_leader(self, services: tuple[str, ...] = SERVICES) -> str | None:
        """The leader every one of `services` names, if they agree and it leads."""
        try:
            statuses = {name: self.status(name) for name in services}
        except Exception:
            return None
        leaders = {s["leader"] for s in statuses.values()}
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        leading = [n for n, s in statuses.items() if s["role"] == "leader"]
        if leader in services and leading == [leader]:
            return str(leader)
        return None

    def wait_ready(self, services: tuple[str, ...] = SERVICES, timeout: float = 90) -> str:
        """Every container healthy and one leader everyone agrees on; that leader."""
        for name in services:
            wait_health(self.container(name), "healthy", timeout)
        found: list[str] = []

        def leader_agreed() -> bool:
            leader = self.agreed_leader(services)
            if leader is not None:
                found.append(leader)
            return leader is not None

        wait_until(leader_agreed, timeout, f"a leader agreed by {', '.join(services)}")
        return found[-1]

    def dump_logs(self) -> None:
        """The containers' last log lines, past pytest's capture (for failed runs)."""
        logs = self.compose("logs", "--no-color", "--tail", "40", timeout=30, check=False)
        print(f"\n---- {self.project}: last log lines ----\n{logs}", file=sys.__stderr__)
