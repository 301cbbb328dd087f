"""Chaos runs: scripted faults against a cluster (local processes, or the
containers of docker/docker-compose.yml with --backend docker), while a seeded
workload of concurrent clients contends on a few hot keys; then heal, converge
and check the recorded history.

    python -m scripts.chaos --scenario kill-leader --seed 7 --duration 20
    python -m scripts.chaos --scenario ./my-scenario.json
    python -m scripts.chaos --all --duration 60
    python -m scripts.chaos --backend docker --scenario docker/leader-kill-partition

A scenario is a JSON file (see scripts/chaos_scenarios/ and docs/chaos.md):

    {"name": "kill-leader", "period": 8,
     "schedule": [{"at": 2, "do": "kill", "target": "leader", "as": "old"},
                  {"at": 5, "do": "restart", "target": "@old"}]}

The schedule repeats every `period` seconds until the workload ends (the
default duration is one period). Actions: kill, restart, terminate, pause,
resume, isolate, drop (asymmetric), heal, restart-all, add-node, remove-node,
transfer-leader. Targets: leader, follower, random, majority, minority, all,
down, paused, a node name, or @label (what an earlier step saved with "as").

Checks after the run (every one must hold): the history is linearizable
(scripts/checker.py), every acknowledged write is present at the end unless a
later write replaced it, no read returned a value nobody wrote, versions of a
key increase in real-time order, every node holds identical shards, and
Subscribe on every node streams the same frames in the same order.

Exit status: 0 all checks hold (for a scenario that expects a violation: the
violation was caught), 1 a check failed, 3 the checker ran out of budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from scripts.checker import FAIL, INF, INFO, OK, Op, Verdict, Write, check
from scripts.cluster import LocalCluster, wait_until
from shardlite.node.client import (
    SERIALIZABLE,
    Client,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Put,
)
from shardlite.v1 import frame_pb2, kv_pb2, raft_pb2, raft_pb2_grpc

SCENARIO_DIR = Path(__file__).parent / "chaos_scenarios"
NAMESPACE = "chaos"
SENTINEL_NAMESPACE = "chaos-sentinel"
# Fast elections and quick failures, and the Faults service for partitions.
NODE_ARGS = (
    "--raft-tick-ms", "50",
    "--election-ticks", "10",
    "--leader-wait", "2",
    "--propose-timeout", "2",
    "--fault-injection",
)  # fmt: skip
ACTIONS = (
    "kill",
    "restart",
    "terminate",
    "pause",
    "resume",
    "isolate",
    "drop",
    "heal",
    "restart-all",
    "add-node",
    "remove-node",
    "transfer-leader",
)


# -- scenarios ------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    schedule: list[dict[str, Any]]
    period: float = 10.0
    description: str = ""
    nodes: int = 3
    node_args: list[str] = field(default_factory=list)
    clients: int = 6
    keys: int = 4
    # "linearizable": every check must hold. "violation": a self-test of the
    # harness against a deliberately broken node; the checker must catch it.
    expect: str = "linearizable"
    path: str = ""

    @staticmethod
    def load(name_or_path: str) -> Scenario:
        path = Path(name_or_path)
        if not path.exists():
            path = SCENARIO_DIR / f"{name_or_path}.json"
        if not path.exists():
            known = ", ".join(s.stem for s in sorted(SCENARIO_DIR.glob("*.json")))
            raise ValueError(f"no scenario {name_or_path!r} (shipped: {known})")
        data = json.loads(path.read_text())
        known_fields = set(Scenario.__dataclass_fields__) - {"path"}
        unknown = set(data) - known_fields
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        scenario = Scenario(**data, path=str(path))
        for step in scenario.schedule:
            if step.get("do") not in ACTIONS:
                raise ValueError(f"{path}: unknown action {step.get('do')!r} in {step}")
            if not 0 <= float(step.get("at", -1)) < scenario.period:
                raise ValueError(f"{path}: 'at' must be within [0, period): {step}")
        if scenario.expect not in ("linearizable", "violation"):
            raise ValueError(f"{path}: expect must be 'linearizable' or 'violation'")
        return scenario

    @property
    def ref(self) -> str:
        """How to name this scenario on the command line."""
        if self.path:
            path = Path(self.path).resolve()
            if path.is_relative_to(SCENARIO_DIR.resolve()):
                return path.relative_to(SCENARIO_DIR.resolve()).with_suffix("").as_posix()
        return self.path or self.name


def shipped_scenarios() -> list[Scenario]:
    return [Scenario.load(str(p)) for p in sorted(SCENARIO_DIR.glob("*.json"))]


# -- the client that remembers its request ids ----------------------------------


class RecordingClient(Client):
    """A Client that remembers the request_id of its last write, so the
    history can be matched with the committed log."""

    last_request_id = ""

    def _request_id(self) -> frame_pb2.RequestId:
        rid = super()._request_id()
        self.last_request_id = f"{rid.client_id}/{rid.seq}"
        return rid

    def multi_write(self, puts: Sequence[kv_pb2.PutRequest]) -> kv_pb2.MultiWriteResponse:
        """One MultiWrite of `puts`, each given its own request id (read back
        from the request); retried on UNAVAILABLE like any write."""
        for put in puts:
            put.request_id.CopyFrom(self._request_id())
        request = kv_pb2.MultiWriteRequest(writes=[kv_pb2.WriteRequest(put=p) for p in puts])
        reply: kv_pb2.MultiWriteResponse = self._call(
            lambda n: n.kv.MultiWrite, request, retry=True
        )
        return reply


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _rid(frame: frame_pb2.Frame) -> str:
    return f"{frame.request_id.client_id}/{frame.request_id.seq}"


# -- the cluster under test ------------------------------------------------------


class Backend:
    """What a chaos run needs from a cluster: its members' client endpoints, and
    the faults. `LocalBackend` runs `shardlite node` processes;
    `scripts.chaos_docker.DockerBackend` runs the docker-compose cluster. Every
    method is called with the run's bookkeeping already done (a paused node is
    resumed before it is killed, `reachable` lists the members that run and are
    not paused)."""

    kind = "local"
    # Actions this backend cannot inject (a scenario using one is rejected).
    unsupported: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}  # member name -> host:port of its API

    def names(self) -> list[str]:
        return list(self.addresses)

    def start(self) -> None:
        """Start every member and wait until they agree on a leader."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop and remove everything start() created (also after a failure)."""
        raise NotImplementedError

    def running(self, name: str) -> bool:
        raise NotImplementedError

    def start_node(self, name: str) -> None:
        """Start a stopped member again on its data; return once it serves."""
        raise NotImplementedError

    def kill(self, name: str) -> None:
        raise NotImplementedError

    def terminate(self, name: str) -> None:
        raise NotImplementedError

    def pause(self, name: str) -> None:
        raise NotImplementedError

    def resume(self, name: str) -> None:
        raise NotImplementedError

    def isolate(self, group: set[str], rest: set[str], reachable: Sequence[str]) -> str:
        """Cut `group` off from `rest`; a note for the report ("" if none)."""
        raise NotImplementedError

    def drop(
        self, names: Sequence[str], direction: str, peers: Sequence[str], reachable: Sequence[str]
    ) -> None:
        raise NotImplementedError

    def heal(self, reachable: Sequence[str]) -> None:
        raise NotImplementedError

    def add_node(self, name: str, via: str) -> None:
        """Register a new member `name` that joins through member `via` (not started)."""
        raise NotImplementedError

    def save_logs(self) -> None:
        """Keep the members' logs in the run directory (local nodes log there anyway)."""


class LocalBackend(Backend):
    """`shardlite node` processes on loopback (scripts/cluster.py); partitions
    through each node's Faults gRPC service (--fault-injection)."""

    def __init__(
        self, base: Path, size: int, node_args: Sequence[str], note: Callable[[str], None]
    ) -> None:
        super().__init__()
        self.base = base
        self.node_args = tuple(node_args)
        self.note = note
        self.cluster = LocalCluster(base, size, args=self.node_args)
        self.addresses = self.cluster.addresses
        self.drop_to: dict[str, set[str]] = {}
        self.drop_from: dict[str, set[str]] = {}

    def start(self) -> None:
        self.cluster.start()
        self.cluster.leader(timeout=30)

    def stop(self) -> None:
        self.cluster.stop()

    def running(self, name: str) -> bool:
        return self.cluster.nodes[name].running

    def start_node(self, name: str) -> None:
        node = self.cluster.nodes[name]
        if not node.running:
            node.start()
        # A fresh process has no partition rules of its own.
        self.drop_to.pop(name, None)
        self.drop_from.pop(name, None)

    def kill(self, name: str) -> None:
        self.cluster.nodes[name].kill()

    def terminate(self, name: str) -> None:
        node = self.cluster.nodes[name]
        if node.running:
            try:
                node.terminate(timeout=15)
            except Exception:
                node.kill()

    def pause(self, name: str) -> None:
        self.cluster.nodes[name].pause()

    def resume(self, name: str) -> None:
        self.cluster.nodes[name].resume()

    def _faults_call(self, name: str, heal: bool = False) -> None:
        with grpc.insecure_channel(self.addresses[name]) as channel:
            stub = raft_pb2_grpc.FaultsStub(channel)
            if heal:
                stub.Heal(raft_pb2.HealRequest(), timeout=2)
            else:
                request = raft_pb2.PartitionRequest(
                    drop_to=sorted(self.drop_to.get(name, ())),
                    drop_from=sorted(self.drop_from.get(name, ())),
                )
                stub.Partition(request, timeout=2)

    def _push_partitions(self, names: Iterable[str], reachable: Sequence[str]) -> None:
        for name in names:
            if name in reachable:
                try:
                    self._faults_call(name)
                except grpc.RpcError as exc:
                    self.note(f"  (could not reach {name} to partition it: {exc.code().name})")

    def isolate(self, group: set[str], rest: set[str], reachable: Sequence[str]) -> str:
        for a in group:
            self.drop_to.setdefault(a, set()).update(rest)
            self.drop_from.setdefault(a, set()).update(rest)
        for b in rest:
            self.drop_to.setdefault(b, set()).update(group)
            self.drop_from.setdefault(b, set()).update(group)
        self._push_partitions([n for n in self.names() if n in group | rest], reachable)
        return ""

    def drop(
        self, names: Sequence[str], direction: str, peers: Sequence[str], reachable: Sequence[str]
    ) -> None:
        for a in names:
            if direction in ("to", "both"):
                self.drop_to.setdefault(a, set()).update(peers)
            if direction in ("from", "both"):
                self.drop_from.setdefault(a, set()).update(peers)
        self._push_partitions(names, reachable)

    def heal(self, reachable: Sequence[str]) -> None:
        self.drop_to.clear()
        self.drop_from.clear()
        for n in reachable:
            with contextlib.suppress(grpc.RpcError):
                self._faults_call(n, heal=True)

    def add_node(self, name: str, via: str) -> None:
        self.cluster.joining_node(name, via, tuple(self.node_args))


# -- one run --------------------------------------------------------------------


@dataclass
class Result:
    scenario: Scenario
    seed: int
    duration: float
    ok: bool = False
    verdict: Verdict | None = None
    failures: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    run_dir: str = ""
    backend: str = "local"

    @property
    def replay(self) -> str:
        backend = f"--backend {self.backend} " if self.backend != "local" else ""
        return (
            f"python -m scripts.chaos {backend}--scenario {self.scenario.ref} "
            f"--seed {self.seed} --duration {self.duration:g}"
        )

    @property
    def status(self) -> str:
        if self.verdict is not None and self.verdict.linearizable is None and not self.failures:
            return "UNKNOWN"
        return "PASS" if self.ok else "FAIL"

    def report(self) -> str:
        c = self.counts
        lines = [
            f"== chaos {self.scenario.name} ({self.backend}) seed={self.seed} "
            f"duration={self.duration:g}s: "
            f"{self.status} ({self.seconds:.1f}s)",
            f"ops: {c.get('total', 0)} total, {c.get('ok', 0)} ok, {c.get('fail', 0)} failed "
            f"CAS, {c.get('info', 0)} indeterminate; writes {c.get('writes', 0)} "
            f"(acknowledged {c.get('writes_ok', 0)}, {c.get('shared_index', 0)} of them sharing "
            f"an entry), reads {c.get('reads', 0)} "
            f"(ok {c.get('reads_ok', 0)})",
        ]
        if self.resolved:
            lines.append(
                "indeterminate writes resolved from the committed log: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.resolved.items()))
            )
        lines.append(f"faults ({len(self.faults)}):")
        lines += [f"  {f}" for f in self.faults]
        if self.verdict is not None:
            lines.append("linearizability: " + self.verdict.report().replace("\n", "\n  "))
        if self.scenario.expect == "violation":
            lines.append("(this scenario runs a deliberately broken node: PASS = violation caught)")
        for failure in self.failures:
            lines.append(f"FAILED: {failure}")
        lines.append(f"replay: {self.replay}")
        if self.run_dir:
            lines.append(f"run directory (history.json, node logs): {self.run_dir}")
        return "\n".join(lines)


class ChaosRun:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        duration: float,
        base: Path,
        *,
        resolve_from_log: bool = True,
        op_timeout: float = 3.0,
        echo: Callable[[str], None] | None = None,
        backend: Callable[[ChaosRun], Backend] | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.duration = duration
        self.base = base
        self.resolve_from_log = resolve_from_log
        self.op_timeout = op_timeout
        self.echo = echo or (lambda line: None)
        self.rng = random.Random(seed)
        self.node_args = (*NODE_ARGS, *scenario.node_args)
        self.lock = threading.Lock()
        self.removed: set[str] = set()
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.labels: dict[str, list[str]] = {}
        self.history: list[Op] = []
        self.ids = iter(range(1, 1 << 62))
        self.stop = threading.Event()
        self.t0 = 0.0
        self.cluster: Backend = (
            backend(self)
            if backend is not None
            else LocalBackend(base, scenario.nodes, self.node_args, self.note)
        )
        unsupported = {s["do"] for s in scenario.schedule} & self.cluster.unsupported
        if unsupported:
            raise ValueError(
                f"scenario {scenario.name}: the {self.cluster.kind} backend cannot "
                f"inject {', '.join(sorted(unsupported))}"
            )
        self.result = Result(scenario, seed, duration, run_dir=str(base), backend=self.cluster.kind)

    # -- helpers --------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        line = f"t={self.now():6.2f}s {text}"
        self.result.faults.append(line)
        self.echo(line)

    def members(self) -> list[str]:
        with self.lock:
            return [n for n in self.cluster.names() if n not in self.removed]

    def up(self) -> list[str]:
        """Members whose process runs (paused ones included: clients cannot
        tell a paused node from a slow one)."""
        with self.lock:
            return [n for n in self.cluster.names() if n not in self.removed and n not in self.down]

    def responsive(self) -> list[str]:
        with self.lock:
            return [
                n
                for n in self.cluster.names()
                if n not in self.removed and n not in self.down and n not in self.paused
            ]

    def find_leader(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (self.stop.is_set() and timeout < 1):
            best: tuple[int, str] | None = None
            for name in self.responsive():
                try:
                    with Client(self.cluster.addresses[name], timeout=0.5) as c:
                        s = c.status()
                except ClientError:
                    continue
                if s.leader and s.leader in self.members() and (best is None or s.term > best[0]):
                    best = (s.term, s.leader)
            if best is not None:
                return best[1]
            time.sleep(0.1)
        return None

    def resolve(self, target: str, exclude: Sequence[str] = ()) -> list[str]:
        members = [n for n in self.members() if n not in exclude]
        live = [n for n in self.responsive() if n not in exclude]
        if target.startswith("@"):
            return list(self.labels.get(target[1:], []))
        if target in self.cluster.addresses:
            return [target]
        if target == "all":
            return members
        if target == "down":
            return [n for n in members if n in self.down]
        if target == "paused":
            return [n for n in members if n in self.paused]
        if target == "random":
            return [self.rng.choice(live)] if live else []
        leader = self.find_leader()
        followers = [n for n in live if n != leader]
        if target == "leader":
            return [leader] if leader else ([self.rng.choice(live)] if live else [])
        if target == "follower":
            return [self.rng.choice(followers)] if followers else []
        if target in ("majority", "minority"):
            size = len(self.members()) // 2 + (1 if target == "majority" else 0)
            chosen = ([leader] if leader and target == "majority" else []) + self.rng.sample(
                followers, min(len(followers), size)
            )
            return chosen[:size]
        raise ValueError(f"unknown target {target!r}")

    def _start(self, name: str) -> None:
        self.cluster.start_node(name)
        with self.lock:
            self.down.discard(name)
            self.paused.discard(name)

    def _kill(self, name: str) -> None:
        with self.lock:
            self.down.add(name)
        if name in self.paused:
            with contextlib.suppress(Exception):  # it may be dead already
                self.cluster.resume(name)
        self.cluster.kill(name)
        with self.lock:
            self.paused.discard(name)

    # -- the fault schedule -----------------------------------------------------

    def perform(self, step: dict[str, Any]) -> None:
        action = step["do"]
        target = str(step.get("target", "random"))
        names: list[str] = []
        if action not in ("heal", "restart-all", "add-node"):
            names = self.resolve(target)
        if "as" in step and action != "add-node":
            self.labels[step["as"]] = names
        desc = (
            action if action in ("heal", "restart-all", "add-node") else f"{action} {target}"
        ) + (f" -> {','.join(names) or '(none)'}" if names else "")
        if action == "kill":
            for n in names:
                self._kill(n)
        elif action in ("restart", "resume") and not names:
            pass
        elif action == "restart":
            for n in names:
                if n not in self.removed:
                    self._start(n)
        elif action == "terminate":
            for n in names:
                with self.lock:
                    self.down.add(n)
                self.cluster.terminate(n)
        elif action == "pause":
            for n in names:
                if n in self.up() and n not in self.paused:
                    self.cluster.pause(n)
                    with self.lock:
                        self.paused.add(n)
        elif action == "resume":
            for n in names:
                if n in self.paused:
                    self.cluster.resume(n)
                    with self.lock:
                        self.paused.discard(n)
        elif action == "isolate":
            group = set(names)
            rest = set(self.members()) - group
            how = self.cluster.isolate(group, rest, self.responsive())
            desc += f" | {','.join(sorted(rest))}" + (f" ({how})" if how else "")
        elif action == "drop":
            direction = step.get("direction", "to")
            peers = self.resolve(str(step.get("peers", "all")), exclude=names)
            self.cluster.drop(names, direction, peers, self.responsive())
            desc += f" drops {direction} {','.join(peers)}"
        elif action == "heal":
            self.cluster.heal(self.responsive())
        elif action == "restart-all":
            names = self.members()
            for n in names:
                self._kill(n)
            for n in names:
                self._start(n)
            desc += f" -> {','.join(names)}"
        elif action == "add-node":
            name = self.add_node()
            if "as" in step:
                self.labels[step["as"]] = [name]
            desc += f" -> {name}"
        elif action == "remove-node":
            for n in names:
                self.remove_node(n)
        elif action == "transfer-leader":
            for n in names:
                via = self.responsive()
                if via:
                    with Client(self.cluster.addresses[via[0]], timeout=5) as c:
                        c.transfer_leader(n)
        self.note(desc)

    def add_node(self) -> str:
        via = self.responsive()
        if not via:
            raise RuntimeError("no live member to join through")
        with self.lock:
            taken = set(self.cluster.names())
            name = next(f"n{i}" for i in range(1, 1000) if f"n{i}" not in taken)
            self.down.add(name)  # no client traffic until it serves
            self.cluster.add_node(name, via[0])
        self.cluster.start_node(name)
        with self.lock:
            self.down.discard(name)
        return name

    def remove_node(self, name: str) -> None:
        via = [n for n in self.responsive() if n != name]
        if not via:
            raise RuntimeError(f"no live member to remove {name} through")
        with Client(self.cluster.addresses[via[0]], timeout=10) as c:
            c.remove_member(name)
        with self.lock:
            self.removed.add(name)
        if name in self.paused:
            self.cluster.resume(name)
        self.cluster.terminate(name)

    def run_schedule(self, end: float) -> None:
        steps = sorted(self.scenario.schedule, key=lambda s: float(s["at"]))
        period = self.scenario.period
        cycle = 0
        while not self.stop.is_set():
            for step in steps:
                at = cycle * period + float(step["at"])
                if at >= end:
                    return
                if self.stop.wait(max(0.0, at - self.now())):
                    return
                try:
                    self.perform(step)
                except Exception as exc:
                    self.note(f"{step['do']} {step.get('target', '')} failed: {exc!r}")
            cycle += 1

    # -- the workload -------------------------------------------------------------

    def record(self, op: Op) -> Op:
        with self.lock:
            op.id = next(self.ids)
            self.history.append(op)
        return op

    def worker(self, process: int, end: float) -> None:
        rng = random.Random(self.seed * 1000 + process)
        keys = [f"k{i}" for i in range(self.scenario.keys)]
        clients: dict[str, RecordingClient] = {}
        seen: dict[str, int] = {}
        counter = 0
        try:
            while not self.stop.is_set() and self.now() < end:
                candidates = self.up()
                if not candidates:
                    time.sleep(0.05)
                    continue
                node = rng.choice(candidates)
                client = clients.get(node)
                if client is None:
                    client = clients[node] = RecordingClient(
                        self.cluster.addresses[node],
                        namespace=NAMESPACE,
                        timeout=self.op_timeout,
                        client_id=f"s{self.seed}-p{process}-{node}",
                    )
                counter += 1
                self.one_op(rng, client, node, process, counter, keys, seen)
        finally:
            for c in clients.values():
                c.close()

    def one_op(
        self,
        rng: random.Random,
        client: RecordingClient,
        node: str,
        process: int,
        counter: int,
        keys: list[str],
        seen: dict[str, int],
    ) -> None:
        key = rng.choice(keys)
        value = f"p{process}-{counter}"
        roll = rng.random()
        op = Op(0, process, "write", self.now(), node=node)
        call: Callable[[], Any]
        if roll < 0.45:
            op.f, op.key = "read", key

            def call() -> Any:
                return client.get(key)
        elif roll < 0.57:
            self.multi_op(rng, client, node, process, value, keys, seen)
            return
        elif roll < 0.65:
            op.writes = (Write(key, value),)

            def call() -> Any:
                return [client.put(key, value.encode())]
        elif roll < 0.77:
            expected = seen.get(key, 0) if rng.random() < 0.8 else rng.randrange(0, 50)
            op.writes, op.conditions = (Write(key, value),), ((key, expected),)

            def call() -> Any:
                return [client.put(key, value.encode(), expected_version=expected)]
        elif roll < 0.87:
            expected_or_none = seen.get(key, 0) if rng.random() < 0.4 else None
            op.writes = (Write(key, None),)
            if expected_or_none is not None:
                op.conditions = ((key, expected_or_none),)

            def call() -> Any:
                return [client.delete(key, expected_version=expected_or_none)]
        else:
            k1, k2 = rng.sample(keys, 2)
            ops: list[Put | Delete] = []
            writes = []
            for i, k in enumerate((k1, k2)):
                if rng.random() < 0.8:
                    v = f"{value}.{i}"
                    ops.append(Put(k, v.encode()))
                    writes.append(Write(k, v))
                else:
                    ops.append(Delete(k))
                    writes.append(Write(k, None))
            conds = [Condition(k1, seen.get(k1, 0))] if rng.random() < 0.5 else []
            op.writes = tuple(writes)
            op.conditions = tuple((c.key, c.version) for c in conds)

            def call() -> Any:
                return client.batch(ops, conds)

        op.invoke = self.now()
        try:
            reply = call()
        except ConditionFailedError as exc:
            op.complete, op.status, op.error = self.now(), FAIL, exc.details[:120]
        except ClientError as exc:
            op.status, op.error = INFO, exc.code.name
        except Exception as exc:  # a transport error the client did not map
            op.status, op.error = INFO, type(exc).__name__
        else:
            op.complete, op.status = self.now(), OK
            if op.f == "read":
                if reply is not None:
                    op.found, op.value, op.version = True, reply.value.decode(), reply.version
                    seen[key] = reply.version
                else:
                    seen[key] = 0
            else:
                op.index = reply[0].index
                op.deleted = tuple(
                    r.deleted if w.value is None else None
                    for r, w in zip(reply, op.writes, strict=True)
                )
                for w in op.writes:
                    seen[w.key] = op.index if w.value is not None else 0
        if op.f == "write":
            op.request_id = client.last_request_id
        if op.f == "read" and op.status == INFO:
            op.complete = self.now()  # a failed read has no effect; keep its time
        self.record(op)

    def multi_op(
        self,
        rng: random.Random,
        client: RecordingClient,
        node: str,
        process: int,
        value: str,
        keys: list[str],
        seen: dict[str, int],
    ) -> None:
        """A MultiWrite of 2-3 puts on distinct keys, some conditional: on the
        leader one envelope (one Raft entry, node/envelope.py), each put its
        own operation in the history, with its own request id and outcome."""
        chosen = rng.sample(keys, min(len(keys), rng.randint(2, 3)))
        ops: list[Op] = []
        puts = []
        for i, key in enumerate(chosen):
            op = Op(0, process, "write", self.now(), node=node)
            op.writes = (Write(key, f"{value}.m{i}"),)
            put = kv_pb2.PutRequest(namespace=NAMESPACE, key=key, value=f"{value}.m{i}".encode())
            if rng.random() < 0.3:
                expected = seen.get(key, 0)
                op.conditions = ((key, expected),)
                put.expected_version = expected
            ops.append(op)
            puts.append(put)
        invoke = self.now()
        try:
            reply = client.multi_write(puts)
        except ClientError as exc:
            failed: str | None = exc.code.name
        except Exception as exc:  # a transport error the client did not map
            failed = type(exc).__name__
        else:
            failed = None
        complete = self.now()
        for n, (op, put) in enumerate(zip(ops, puts, strict=True)):
            op.invoke = invoke
            op.request_id = f"{put.request_id.client_id}/{put.request_id.seq}"
            if failed is not None:
                op.status, op.error = INFO, failed
                self.record(op)
                continue
            result = reply.results[n]
            if result.WhichOneof("result") == "put":
                op.complete, op.status, op.index = complete, OK, result.put.index
                op.deleted = (None,)
                seen[op.writes[0].key] = op.index
            elif result.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]:
                op.complete, op.status, op.error = complete, FAIL, result.error.message[:120]
            else:
                op.status, op.error = INFO, _CODE_NAMES.get(result.error.code, "?")
            self.record(op)

    # -- after the faults -----------------------------------------------------------

    def heal_everything(self) -> None:
        for name in self.members():
            if name in self.paused:
                self.cluster.resume(name)
                with self.lock:
                    self.paused.discard(name)
        self.perform({"do": "heal"})
        for name in self.members():
            if not self.cluster.running(name):
                self._start(name)
                self.note(f"restart {name} (final heal)")

    def converge(self) -> int:
        """Write a sentinel through the leader and wait until every member has
        applied it; returns its index."""
        members = self.members()
        deadline = time.monotonic() + 60
        index = 0
        while not index:
            if time.monotonic() > deadline:
                raise TimeoutError("no leader accepted the sentinel write within 60s")
            leader = self.find_leader(timeout=10)
            if leader is None:
                continue
            try:
                with Client(self.cluster.addresses[leader], timeout=10) as c:
                    index = c.put(
                        "sentinel", str(self.seed).encode(), namespace=SENTINEL_NAMESPACE
                    ).index
            except ClientError:
                time.sleep(0.2)

        def applied() -> bool:
            for name in members:
                try:
                    with Client(self.cluster.addresses[name], timeout=2) as c:
                        if c.status().applied_index < index:
                            return False
                except ClientError:
                    return False
            return True

        wait_until(applied, 60, f"every member to apply index {index}")
        return index

    def shards(self, name: str) -> dict[str, dict[str, tuple[str, int]]]:
        out = {}
        with Client(self.cluster.addresses[name], timeout=30) as c:
            for ns in sorted(c.namespaces()):
                out[ns] = {
                    e.key: (e.value.decode(errors="replace"), e.version)
                    for e in c.list(namespace=ns, consistency=SERIALIZABLE)
                }
        return out

    def streams_from_common_start(
        self, members: list[str], last: int, attempts: int = 5
    ) -> tuple[int, dict[str, list[tuple[int, bytes]]]]:
        """Every member's frames up to `last`, from the first index they all
        still hold. A member may snapshot and compact its log between the
        status that says where it starts and the Subscribe (OUT_OF_RANGE):
        then ask again, a few times."""
        for attempt in range(attempts):
            statuses = {}
            for name in members:
                with Client(self.cluster.addresses[name], timeout=5) as cl:
                    statuses[name] = cl.status()
            start = max(max(s.first_index for s in statuses.values()), 1)
            try:
                return start, {name: self.frames(name, start, last) for name in members}
            except ClientError as exc:
                if exc.code != grpc.StatusCode.OUT_OF_RANGE or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def frames(self, name: str, first: int, last: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        with Client(self.cluster.addresses[name], timeout=30) as c:
            for index, frame in c.subscribe(first, timeout=60):
                out.append((index, frame.SerializeToString(deterministic=True)))
                if index >= last:
                    break
        return out

    # -- the run ----------------------------------------------------------------------

    def run(self) -> Result:
        started = time.monotonic()
        result = self.result
        try:
            self.cluster.start()
            self.t0 = time.monotonic()
            end = self.duration
            workers = [
                threading.Thread(target=self.worker, args=(p, end), name=f"chaos-client-{p}")
                for p in range(self.scenario.clients)
            ]
            faults = threading.Thread(target=self.run_schedule, args=(end,), name="chaos-faults")
            for t in [*workers, faults]:
                t.start()
            for t in workers:
                t.join(end + 4 * self.op_timeout + 30)
            self.stop.set()
            faults.join(120)
            if any(t.is_alive() for t in [*workers, faults]):
                result.failures.append("a client or the fault thread did not stop in time")
            self.heal_everything()
            self.check(self.converge())
        except Exception as exc:
            result.failures.append(f"the run itself failed: {exc!r}")
        finally:
            self.stop.set()
            for name in self.cluster.names():
                if name in self.paused:
                    with contextlib.suppress(Exception):
                        self.cluster.resume(name)
            with contextlib.suppress(Exception):
                self.cluster.save_logs()
            self.cluster.stop()
            result.seconds = time.monotonic() - started
            self.save()
        if self.scenario.expect == "violation":
            result.ok = result.verdict is not None and result.verdict.linearizable is False
            if not result.ok:
                result.failures.append("the broken node's stale reads were NOT caught")
        else:
            result.ok = (
                not result.failures
                and result.verdict is not None
                and bool(result.verdict.linearizable)
            )
        return result

    def save(self) -> None:
        data = {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "duration": self.duration,
            "replay": self.result.replay,
            "faults": self.result.faults,
            "failures": self.result.failures,
            "history": [op.to_json() for op in self.history],
        }
        with contextlib.suppress(OSError):
            (self.base / "history.json").write_text(json.dumps(data, indent=1))

    def check(self, sentinel: int) -> None:
        result = self.result
        members = self.members()
        history = sorted(self.history, key=lambda o: o.invoke)
        c = result.counts
        c["total"] = len(history)
        for status in (OK, FAIL, INFO):
            c[status] = sum(op.status == status for op in history)
        c["writes"] = sum(op.f == "write" for op in history)
        c["writes_ok"] = sum(op.f == "write" and op.status == OK for op in history)
        # Acknowledged writes that share their index with another: the puts of
        # a MultiWrite committed as one envelope (one Raft entry).
        at = Counter(op.index for op in history if op.f == "write" and op.status == OK)
        c["shared_index"] = sum(n for n in at.values() if n > 1)
        c["reads"] = sum(op.f == "read" for op in history)
        c["reads_ok"] = sum(op.f == "read" and op.status == OK for op in history)

        # Every node holds the same shards.
        shards = {name: self.shards(name) for name in members}
        first = members[0]
        for name in members[1:]:
            if shards[name] != shards[first]:
                diff = _dict_diff(shards[first], shards[name])
                result.failures.append(f"shards differ between {first} and {name}: {diff}")
        final = shards[first].get(NAMESPACE, {})

        # Subscribe shows the same frames in the same order everywhere.
        start, streams = self.streams_from_common_start(members, sentinel)
        for name in members[1:]:
            if streams[name] != streams[first]:
                result.failures.append(
                    f"Subscribe streams differ between {first} and {name} "
                    f"(from index {start}: {len(streams[first])} vs {len(streams[name])} frames)"
                )
        log = [(i, frame_pb2.Frame.FromString(b)) for i, b in streams[first]]
        result.failures += check_against_log(history, log, start)
        checked = (
            resolve_from_log(history, log, start, result.resolved)
            if (self.resolve_from_log)
            else history
        )

        result.failures += direct_checks(checked, final)
        result.verdict = check(checked)
        if result.verdict.linearizable is False:
            result.failures.append(f"not linearizable: {result.verdict.explanation}")


def _dict_diff(a: dict[str, Any], b: dict[str, Any], limit: int = 3) -> str:
    out = []
    for ns in sorted(set(a) | set(b)):
        x, y = a.get(ns, {}), b.get(ns, {})
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                out.append(f"{ns}/{k}: {x.get(k)} vs {y.get(k)}")
                if len(out) >= limit:
                    return "; ".join(out)
    return "; ".join(out)


# -- checks on the history against the log and the final state ---------------------


def _replay_log(
    log: list[tuple[int, frame_pb2.Frame]], start: int = 1
) -> dict[str, tuple[int, bool | None]]:
    """Request id -> (index, applied) for the first frame carrying it, by
    applying the chaos namespace's frames in order (conditions included). A
    later frame with the same request id is the client's retry: the node
    answers it from its session table, so it has no effect.

    A log that starts after index 1 (compacted into a snapshot) does not say
    what a key held before `start`: a condition on such a key is not judged
    (applied is None), and the keys that frame writes are unknown after it."""
    state: dict[str, int] = {}  # key -> version, 0 = known absent
    unknown: set[str] = set()
    out: dict[str, tuple[int, bool | None]] = {}

    def known(key: str) -> bool:
        return key not in unknown and (key in state or start <= 1)

    for index, frame in log:
        if frame.namespace != NAMESPACE:
            continue
        rid = _rid(frame)
        if rid in out:
            continue
        holds: bool | None = None
        if all(known(cond.key) for cond in frame.conditions):
            holds = all(
                state.get(cond.key, 0) == cond.version if cond.version else not state.get(cond.key)
                for cond in frame.conditions
            )
        for o in frame.ops if holds is not False else ():
            key = o.put.key if o.HasField("put") else o.delete.key
            if holds:
                state[key] = index if o.HasField("put") else 0
                unknown.discard(key)
            else:
                state.pop(key, None)
                unknown.add(key)
        out[rid] = (index, holds)
    return out


def check_against_log(
    history: Sequence[Op], log: list[tuple[int, frame_pb2.Frame]], start: int
) -> list[str]:
    """Every acknowledged write is the first frame with its request id, at the
    index it was acknowledged with (for the part of the log still retained)."""
    outcome = _replay_log(log, start)
    failures = []
    for op in history:
        if op.f != "write" or op.status != OK or op.index < start or not op.request_id:
            continue
        got = outcome.get(op.request_id)
        if got is not None and got[0] == op.index and got[1] is None:
            continue  # its condition is on a state older than the retained log
        if got is None or got[0] != op.index or not got[1]:
            failures.append(
                f"acknowledged write not in the committed log as acknowledged "
                f"(log says {got}): {op.describe()}"
            )
    return failures[:10]


def resolve_from_log(
    history: Sequence[Op],
    log: list[tuple[int, frame_pb2.Frame]],
    start: int,
    counts: dict[str, int],
) -> list[Op]:
    """Sharpen indeterminate writes with the committed log: found and applied
    -> it happened at that index; found but its condition failed, or (with the
    whole log retained) not found -> it had no effect, so drop it. The
    checker still judges the rest: this only removes uncertainty that the
    cluster itself settled."""
    outcome = _replay_log(log, start)
    out = []
    for op in history:
        if op.f == "write" and op.status == INFO and op.request_id:
            got = outcome.get(op.request_id)
            if got is not None and got[1] is None:
                pass  # not settled by the retained log: the checker judges it
            elif got is not None and got[1]:
                op.happened, op.index = True, got[0]
                counts["happened"] = counts.get("happened", 0) + 1
            elif got is not None:
                counts["condition failed"] = counts.get("condition failed", 0) + 1
                continue
            elif start <= 1:
                counts["never committed"] = counts.get("never committed", 0) + 1
                continue
        out.append(op)
    return out


def direct_checks(history: Sequence[Op], final: dict[str, tuple[str, int]]) -> list[str]:
    failures: list[str] = []
    written: dict[str, set[str]] = {}
    deletes_after: dict[str, list[float]] = {}  # key -> indices of deletes (inf = unknown)
    for op in history:
        if op.f != "write" or op.status == FAIL:
            continue
        for w in op.writes:
            if w.value is not None:
                written.setdefault(w.key, set()).add(w.value)
            else:
                known = op.status == OK or op.happened
                deletes_after.setdefault(w.key, []).append(op.index if known else INF)

    # No read returns a value that was never written (to that key).
    for op in history:
        if (
            op.f == "read"
            and op.status == OK
            and op.found
            and op.value not in written.get(op.key, set())
        ):
            failures.append(f"read returned a value never written: {op.describe()}")
    for key, (value, version) in final.items():
        if value not in written.get(key, set()):
            failures.append(f"final state holds a value never written: {key}={value!r} v{version}")

    # Every acknowledged write survives unless a later write replaced it.
    for op in history:
        if op.f != "write" or op.status != OK:
            continue
        for w in op.writes:
            cur = final.get(w.key)
            if w.value is None:
                if cur is not None and cur[1] <= op.index:
                    failures.append(
                        f"acknowledged delete undone: {w.key} is {cur} at the end: " + op.describe()
                    )
                continue
            if cur is None:
                if not any(d > op.index for d in deletes_after.get(w.key, [])):
                    failures.append(f"LOST acknowledged write (key absent): {op.describe()}")
            elif cur[1] < op.index:
                failures.append(f"LOST acknowledged write (key at v{cur[1]}): {op.describe()}")
            elif cur[1] == op.index and cur[0] != w.value:
                failures.append(f"acknowledged write changed ({cur}): {op.describe()}")

    # Versions of a key strictly increase in real-time order.
    by_key: dict[str, list[Op]] = {}
    for op in history:
        if op.f == "write" and op.status == OK:
            for w in op.writes:
                by_key.setdefault(w.key, []).append(op)
    for key, ops in by_key.items():
        done = sorted(ops, key=lambda o: o.complete)
        pos, highest, witness = 0, 0, None
        for op in sorted(ops, key=lambda o: o.invoke):
            while pos < len(done) and done[pos].complete < op.invoke:
                if done[pos].index > highest:
                    highest, witness = done[pos].index, done[pos]
                pos += 1
            if op.index <= highest and witness is not None:
                failures.append(
                    f"version of {key} went backwards: {witness.describe()} then {op.describe()}"
                )
                break
    return failures[:20]


# -- CLI ------------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario,
    seed: int,
    duration: float | None = None,
    *,
    base: Path | None = None,
    keep: bool = False,
    resolve: bool = True,
    echo: Callable[[str], None] | None = None,
    backend: str = "local",
) -> Result:
    """One scenario against a new cluster: `backend` "local" (node processes) or
    "docker" (a private project of docker/docker-compose.yml, removed afterwards)."""
    duration = duration if duration is not None else scenario.period
    factory: Callable[[ChaosRun], Backend] | None = None
    if backend == "docker":
        from scripts.chaos_docker import DockerBackend

        factory = DockerBackend.for_run
    elif backend != "local":
        raise ValueError(f"unknown backend {backend!r} (local, docker)")
    own = base is None
    safe = scenario.name.replace("/", "-")
    base = base or Path(tempfile.mkdtemp(prefix=f"shardlite-chaos-{safe}-"))
    run = ChaosRun(
        scenario, seed, duration, base, resolve_from_log=resolve, echo=echo, backend=factory
    )
    result = run.run()
    if own and result.ok and not keep:
        shutil.rmtree(base, ignore_errors=True)
        result.run_dir = ""
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--scenario", action="append", help="a shipped scenario name or a path")
    which.add_argument("--all", action="store_true", help="every shipped scenario")
    which.add_argument("--list", action="store_true", help="list the shipped scenarios")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--duration", type=float, default=None, help="seconds of workload per scenario")
    p.add_argument(
        "--total-duration",
        type=float,
        default=None,
        help="seconds of workload in all, split evenly over the scenarios run",
    )
    p.add_argument("--keep", action="store_true", help="keep the run directory even on success")
    p.add_argument(
        "--no-log-resolution",
        action="store_true",
        help="do not settle indeterminate writes with the committed log",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo faults as they happen")
    p.add_argument(
        "--backend",
        choices=("local", "docker"),
        default="local",
        help="local: shardlite node processes (default); docker: the docker-compose "
        "cluster (image from make docker-build), a private compose project per scenario",
    )
    args = p.parse_args(argv)
    if args.list:
        for s in shipped_scenarios():
            print(f"{s.name:24} {s.description}")
        return 0
    try:
        scenarios = shipped_scenarios() if args.all else [Scenario.load(s) for s in args.scenario]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    duration = args.duration
    if args.total_duration is not None:
        duration = args.total_duration / len(scenarios)
    results = []
    for scenario in scenarios:
        print(f"-- {scenario.name} (seed {seed}): {scenario.description}", flush=True)
        try:
            result = run_scenario(
                scenario,
                seed,
                duration,
                keep=args.keep,
                resolve=not args.no_log_resolution,
                echo=None if args.quiet else (lambda line: print("   " + line, flush=True)),
                backend=args.backend,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(result.report(), flush=True)
        results.append(result)
    if len(results) > 1:
        print("\nsummary:")
        for r in results:
            v = r.verdict.label if r.verdict else "-"
            print(
                f"  {r.status:7} {r.scenario.name:24} ops {r.counts.get('total', 0):6} "
                f"(ok {r.counts.get('ok', 0)}, indeterminate {r.counts.get('info', 0)}) "
                f"faults {len(r.faults):3}  {v}"
            )
    if any(r.status == "FAIL" for r in results):
        return 1
    if any(r.status == "UNKNOWN" for r in results):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
