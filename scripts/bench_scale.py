"""Many shards, catch-up, restart and overload: issue 12 targets 5, 6 and 7.

    python -m scripts.bench_scale shards      # 1 namespace vs 10,000; RSS with 1,000 open shards
    python -m scripts.bench_scale catchup     # a follower 1 GB behind catches up by snapshot
    python -m scripts.bench_scale restart     # 1,000,000 keys; SIGTERM and SIGKILL restarts
    python -m scripts.bench_scale overload    # put and get at 64, 256, 1,024 clients
    python -m scripts.bench_scale all --quick # all, small: 1,000 ns, 100 MB, 100,000 keys

Every scenario starts its own local cluster (scripts/cluster.py, through
scripts/bench_targets.ShardliteTarget) in a temporary directory and stops it
by PID at the end. Loads go through the closed-loop generator of `make bench`
(scripts/bench_load.measure); writes of set-up data through raw grpc.aio
stubs. One JSON record per invocation, written after every scenario, into
docs/bench-results/<time>-scale[-quick].json; a table per scenario and the
targets, measured against the issue's numbers, are printed at the end.

Units: MB is 10^6 bytes (sizes, MB/s); RSS is VmRSS of /proc/<pid>/status in MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from scripts.bench import machine_info, say, write_record
from scripts.bench_load import (
    DRIVERS,
    LoadSpec,
    key_name,
    measure,
    open_channel,
    parse_mix,
    stderr_progress,
)
from scripts.bench_targets import ShardliteTarget
from scripts.cluster import LocalCluster, LocalNode, wait_until
from shardlite.node.client import LINEARIZABLE, Client
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1
SCENARIOS = ("shards", "catchup", "restart", "overload")
MB = 1_000_000
MIB = 1 << 20
# The numbers (targets 5-7).
SPREAD_RATIO_TARGET = 0.8
RSS_TARGET_MIB = 300
CATCHUP_TARGET_MB_S = 100.0
RESTART_TARGET_S = 5.0
# "Throughput does not fall": the largest client count keeps at least this
# share of the smallest's throughput (a margin for the shared machine's noise).
OVERLOAD_KEEP = 0.95
CLEAN_ERRORS = frozenset({"RESOURCE_EXHAUSTED"})
# Bounds on what the scenarios wait for.
APPLY_WAIT = 300.0
CATCHUP_WAIT = 900.0
READ_WAIT = 120.0
RPC_TIMEOUT = 60.0


# -- measuring processes ----------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    """VmRSS of a process in MiB (None if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)  # the kernel reports kB (KiB)
    return None


def tree_bytes(path: Path) -> int:
    """Bytes of every file under `path` (0 if it does not exist)."""
    if not path.exists():
        return 0
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a file removed meanwhile
            if p.is_file():
                total += p.stat().st_size
    return total


def statuses(cluster: LocalCluster) -> dict[str, kv_pb2.StatusResponse]:
    """Status of every running node."""
    out = {}
    for name, node in cluster.nodes.items():
        if node.running:
            with cluster.client(name, timeout=5) as c:
                out[name] = c.status()
    return out


def wait_all_applied(cluster: LocalCluster, leader: str, within: float = APPLY_WAIT) -> None:
    """Until every running node has applied what the leader has."""

    def caught_up() -> bool:
        seen = statuses(cluster)
        goal = seen[leader].applied_index
        return all(s.applied_index >= goal for s in seen.values())

    wait_until(caught_up, within, "every node to apply the leader's log")


# -- writing set-up data -------------------------------------------------------------


def _request_id(client_id: str, seq: int) -> frame_pb2.RequestId:
    return frame_pb2.RequestId(client_id=client_id, seq=seq)


RETRIES = 20
# Refusals a writer backs off from: no leader or an outcome unknown, a full queue.
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
RETRIED_CALLS: Counter[str] = Counter()  # per process: what the scenarios' writers retried


async def _retrying(method: Any, request: Any) -> Any:
    """Call; on UNAVAILABLE (no leader yet, an outcome unknown under load) or
    RESOURCE_EXHAUSTED (a full queue) send the same request again, so the
    same request_id: the node applies it once. At most RETRIES tries, with a growing pause."""
    delay = 0.1
    for attempt in range(1, RETRIES + 1):
        try:
            return await method(request, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRIED or attempt == RETRIES:
                raise
            RETRIED_CALLS[exc.code().name] += 1
            say(f"retrying after {exc.code().name}: {exc.details()}")
        await asyncio.sleep(delay)  # back off: the node said it cannot take it now
        delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def put_each(
    endpoint: str, namespaces: Sequence[str], key: str, value: bytes, concurrency: int
) -> float:
    """One Put of `key` into each namespace; returns the seconds it took."""
    client_id = uuid.uuid4().hex
    seq = itertools.count(1)
    todo = iter(namespaces)
    started = time.monotonic()
    async with open_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)

        async def writer() -> None:
            for namespace in todo:  # shared iterator: each namespace written once
                await _retrying(
                    stub.Put,
                    kv_pb2.PutRequest(
                        namespace=namespace,
                        key=key,
                        value=value,
                        request_id=_request_id(client_id, next(seq)),
                    ),
                )

        await asyncio.gather(*(writer() for _ in range(concurrency)))
    return time.monotonic() - started


async def write_keys(
    endpoint: str,
    namespace: str,
    keys: int,
    *,
    batch: int,
    value: bytes,
    concurrency: int,
    first: int = 0,
) -> float:
    """Keys first..first+keys-1 written with Batch requests of `batch` puts;
    returns the seconds it took."""
    client_id = uuid.uuid4().hex
    seq = itertools.count(1)
    starts = iter(range(first, first + keys, batch))
    started = time.monotonic()
    async with open_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)

        async def writer() -> None:
            for start in starts:  # shared iterator: each chunk written once
                request = kv_pb2.BatchRequest(
                    namespace=namespace, request_id=_request_id(client_id, next(seq))
                )
                for k in range(start, min(start + batch, first + keys)):
                    request.ops.add(put=frame_pb2.PutOp(key=key_name(k), value=value))
                await _retrying(stub.Batch, request)

        await asyncio.gather(*(writer() for _ in range(concurrency)))
    return time.monotonic() - started


async def read_each(endpoint: str, namespaces: Sequence[str], key: str, concurrency: int) -> int:
    """A SERIALIZABLE Get of `key` in each namespace (the node's own shards);
    returns how many were found."""
    found = 0
    todo = iter(namespaces)
    async with open_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)

        async def reader() -> None:
            nonlocal found
            for namespace in todo:
                reply = await stub.Get(
                    kv_pb2.GetRequest(
                        namespace=namespace, key=key, consistency=kv_pb2.SERIALIZABLE
                    ),
                    timeout=RPC_TIMEOUT,
                )
                found += reply.found

        await asyncio.gather(*(reader() for _ in range(concurrency)))
    return found


# -- the generator, writing over many namespaces ---------------------------------------

SPREAD_API = "shardlite-spread"


def spread_namespace(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


@dataclass(frozen=True)
class SpreadSpec(LoadSpec):
    """A LoadSpec whose ops each go to one of `namespaces` namespaces
    (`<namespace>-00000` ...), chosen uniformly per op. Its api is SPREAD_API.

    The generator's workers look their driver up in scripts.bench_load.DRIVERS;
    unpickling this spec in a worker imports this module, which registers
    SpreadOps there (below), so bench_load itself needs no change."""

    namespaces: int = 1


class SpreadOps:
    """shardlite's unary KV API like bench_load.ShardliteOps, but every op
    goes to a namespace drawn anew (put, delete, batch, get; no CAS: a
    client's CAS keys would need their namespace remembered)."""

    def __init__(self, channel: grpc.aio.Channel, spec: LoadSpec) -> None:
        if not isinstance(spec, SpreadSpec):
            raise TypeError(f"{SPREAD_API} needs a SpreadSpec, got {type(spec).__name__}")
        self._stub = kv_pb2_grpc.KVStub(channel)
        self._prefix = spec.namespace
        self._namespaces = spec.namespaces
        self._timeout = spec.op_timeout
        self._rng = random.Random(uuid.uuid4().int)
        self._client_id = uuid.uuid4().hex
        self._seq = itertools.count(1)

    def _namespace(self) -> str:
        return spread_namespace(self._prefix, self._rng.randrange(self._namespaces))

    def _request_id(self) -> frame_pb2.RequestId:
        return _request_id(self._client_id, next(self._seq))

    async def put(self, key: str, value: bytes) -> None:
        await self._stub.Put(
            kv_pb2.PutRequest(
                namespace=self._namespace(), key=key, value=value, request_id=self._request_id()
            ),
            timeout=self._timeout,
        )

    async def cas(self, key: str, value: bytes, expected: int) -> int:
        raise NotImplementedError("CAS over many namespaces is not part of this benchmark")

    async def delete(self, key: str) -> None:
        await self._stub.Delete(
            kv_pb2.DeleteRequest(
                namespace=self._namespace(), key=key, request_id=self._request_id()
            ),
            timeout=self._timeout,
        )

    async def batch(self, keys: Sequence[str], value: bytes) -> None:
        request = kv_pb2.BatchRequest(namespace=self._namespace(), request_id=self._request_id())
        for key in keys:
            request.ops.add(put=frame_pb2.PutOp(key=key, value=value))
        await self._stub.Batch(request, timeout=self._timeout)

    async def get(self, key: str, *, linearizable: bool) -> None:
        consistency = kv_pb2.LINEARIZABLE if linearizable else kv_pb2.SERIALIZABLE
        await self._stub.Get(
            kv_pb2.GetRequest(namespace=self._namespace(), key=key, consistency=consistency),
            timeout=self._timeout,
        )


DRIVERS.setdefault(SPREAD_API, SpreadOps)


# -- the scenarios' parameters -----------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """How the generator runs (shared by the scenarios that use it)."""

    processes: int = 2
    warmup: float = 2.0
    window: float = 6.0
    op_timeout: float = 10.0
    progress: Callable[[str], None] | None = None


@dataclass(frozen=True)
class ShardsParams:
    nodes: int = 3
    namespaces: int = 10_000
    clients: int = 64
    reps: int = 2
    keys: int = 10_000  # in the one namespace (the spread run updates one key per namespace)
    value_bytes: int = 100
    open_shards: int = 1_000
    concurrency: int = 32  # set-up writers


@dataclass(frozen=True)
class CatchupParams:
    bytes: int = 1_000 * MB
    value_bytes: int = 256 << 10
    batch: int = 16  # values per Batch request
    concurrency: int = 2


@dataclass(frozen=True)
class RestartParams:
    nodes: int = 3
    keys: int = 1_000_000
    batch: int = 1_000
    value_bytes: int = 100
    concurrency: int = 4
    kill_batches: int = 20  # written just before the SIGKILL, so there is a tail to replay


@dataclass(frozen=True)
class OverloadParams:
    nodes: int = 3
    clients: tuple[int, ...] = (64, 256, 1_024)
    mixes: tuple[str, ...] = ("put", "get")
    keys: int = 10_000
    value_bytes: int = 100


QUICK: dict[str, Any] = {
    "shards": ShardsParams(namespaces=1_000, reps=1),
    "catchup": CatchupParams(bytes=100 * MB),
    "restart": RestartParams(keys=100_000),
    "overload": OverloadParams(),
    "load": Load(warmup=1.0, window=3.0),
}


def _spec(endpoint: str, clients: int, load: Load, **kwargs: Any) -> LoadSpec:
    return LoadSpec(
        api="shardlite",
        endpoints=(endpoint,),
        clients=clients,
        op_timeout=load.op_timeout,
        **kwargs,
    )


def _measure(spec: LoadSpec, load: Load, watch: dict[str, int], label: str) -> dict[str, Any]:
    result = measure(
        spec,
        processes=load.processes,
        warmup=load.warmup,
        window=load.window,
        watch=watch,
        label=label,
        progress=load.progress,
    )
    lat = result["latency_ms"]
    say(
        f"{label}: {result['ops_per_sec']:,.0f} ops/s, p50 {lat['p50']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms, errors {result['error_codes'] or 0}"
    )
    return result


def _run_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of a generator result a scale record keeps."""
    keep = ("ops", "ops_per_sec", "errors", "error_codes", "latency_ms", "processes")
    cpu = result["cpu_cores"]
    return {k: result[k] for k in keep} | {
        "cpu_cores": {k: v for k, v in cpu["processes"].items() if not k.startswith("generator")}
        | {"generator": cpu["generator_total"]}
    }


# -- shards -----------------------------------------------------------------------------


def run_shards(p: ShardsParams, load: Load, base: Path) -> dict[str, Any]:
    """put@clients into one namespace vs spread over p.namespaces (A B A B),
    then, on a fresh cluster, one key into each of p.open_shards namespaces
    and every node's RSS."""
    value = b"s" * p.value_bytes
    out: dict[str, Any] = {"params": asdict(p)}
    target = ShardliteTarget(base / "spread", nodes=p.nodes)
    target.start()
    try:
        (endpoint,) = target.endpoints()
        say(f"shards: writing {p.keys:,} keys into one namespace ...")
        asyncio.run(
            write_keys(
                endpoint, "one", p.keys, batch=500, value=value, concurrency=4
            )  # the one-namespace run updates existing keys, as the spread run does
        )
        names = [spread_namespace("spread", i) for i in range(p.namespaces)]
        say(f"shards: creating {p.namespaces:,} namespaces (one Put each) ...")
        seconds = asyncio.run(put_each(endpoint, names, key_name(0), value, p.concurrency))
        out["create"] = {
            "namespaces": p.namespaces,
            "seconds": round(seconds, 2),
            "per_sec": round(p.namespaces / seconds, 1),
        }
        say(f"shards: {p.namespaces:,} namespaces created at {p.namespaces / seconds:,.0f}/s")
        one = _spec(
            endpoint, p.clients, load, namespace="one", keys=p.keys, value_bytes=p.value_bytes
        )
        spread = SpreadSpec(
            **(asdict(one) | {"api": SPREAD_API, "namespace": "spread", "keys": 1}),
            namespaces=p.namespaces,
        )
        runs: list[dict[str, Any]] = []
        for rep in range(1, p.reps + 1):
            for case, spec in (("one", one), ("spread", spread)):
                result = _measure(
                    replace(spec, endpoints=tuple(target.endpoints())),
                    load,
                    target.pids(),
                    f"shards {case} put@{p.clients} rep {rep}",
                )
                runs.append({"case": case, "rep": rep, **_run_summary(result)})
        out["runs"] = runs
        ratios = [
            spread_run["ops_per_sec"] / one_run["ops_per_sec"]
            for one_run, spread_run in zip(runs[::2], runs[1::2], strict=True)
            if one_run["ops_per_sec"] > 0
        ]
        out["spread_ratio"] = round(statistics.median(ratios), 3) if ratios else None
        out["spread_ratios"] = [round(r, 3) for r in ratios]
        out["after_runs"] = _node_memory(target.cluster)
    finally:
        target.stop()
    out["rss"] = _rss_with_open_shards(p, base / "rss")
    return out


def _node_memory(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    seen = statuses(cluster)
    return {
        name: {"open_shards": seen[name].open_shards, "rss_mib": rss_mib(node.pid)}
        for name, node in cluster.nodes.items()
        if name in seen
    }


def _rss_with_open_shards(p: ShardsParams, base: Path) -> dict[str, Any]:
    value = b"r" * p.value_bytes
    target = ShardliteTarget(base, nodes=p.nodes)
    target.start()
    try:
        cluster = target.cluster
        (endpoint,) = target.endpoints()
        out: dict[str, Any] = {"open_shards_asked": p.open_shards, "start": _node_memory(cluster)}
        names = [spread_namespace("open", i) for i in range(p.open_shards)]
        asyncio.run(put_each(endpoint, names, key_name(0), value, p.concurrency))
        wait_all_applied(cluster, target.leader)
        out["after_writes"] = _node_memory(cluster)
        # Every node serves a read of each: its readers are open too.
        found = {
            name: asyncio.run(read_each(address, names, key_name(0), p.concurrency))
            for name, address in cluster.addresses.items()
        }
        out["found"] = found
        out["after_reads"] = _node_memory(cluster)
        say(
            "shards: RSS MiB with "
            + ", ".join(
                f"{n} {m['open_shards']} shards open: {m['rss_mib']}"
                for n, m in out["after_reads"].items()
            )
        )
        return out
    finally:
        target.stop()


# -- catch-up ------------------------------------------------------------------------------


def _snapshots(data_dir: Path) -> dict[int, int]:
    """The sealed snapshots a node keeps (raft/snapshots/<index>/manifest.json):
    index -> bytes of the files its manifest lists."""
    found: dict[int, int] = {}
    root = data_dir / "raft" / "snapshots"
    if not root.is_dir():
        return found
    for child in root.iterdir():
        manifest = child / "manifest.json"
        if child.name.isdigit() and manifest.is_file():
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                files = json.loads(manifest.read_text())["files"]
                found[int(child.name)] = sum(int(f["size"]) for f in files)
    return found


def run_catchup(p: CatchupParams, base: Path) -> dict[str, Any]:
    """Three nodes; one follower stopped (SIGTERM); p.bytes of values written;
    the follower restarted; the time until it has applied what the leader has,
    and the snapshot it got."""
    per_batch = p.value_bytes * p.batch
    batches = max(1, math.ceil(p.bytes / per_batch))
    # Snapshot often enough that a follower this far behind needs one (about
    # what the default byte thresholds, 256 MB / 64 MB kept, do for 1 GB).
    snapshot_entries = max(4, batches // 4)
    catchup_entries = max(2, batches // 16)
    args = (
        "--snapshot-entries", str(snapshot_entries),
        "--snapshot-catchup-entries", str(catchup_entries),
    )  # fmt: skip
    out: dict[str, Any] = {
        "params": asdict(p),
        "batches": batches,
        "written_bytes": batches * per_batch,
        "node_args": list(args),
    }
    cluster = LocalCluster(base, 3, args=args)
    try:
        cluster.start()
        leader = cluster.leader(timeout=60)
        follower = next(n for n in cluster.nodes if n != leader)
        leader_address = cluster.addresses[leader]
        asyncio.run(write_keys(leader_address, "catchup", 10, batch=10, value=b"w", concurrency=1))
        wait_all_applied(cluster, leader)
        with cluster.client(follower, timeout=5) as c:
            stopped_at = c.status().applied_index
        cluster.nodes[follower].terminate()
        out |= {"leader": leader, "follower": follower, "follower_stopped_at": stopped_at}
        say(
            f"catchup: {follower} stopped at index {stopped_at}; "
            f"writing {batches * per_batch / MB:,.0f} MB ..."
        )
        value = random.Random(7).randbytes(p.value_bytes)  # incompressible, like real data
        RETRIED_CALLS.clear()
        keys = batches * p.batch
        seconds = asyncio.run(
            write_keys(
                leader_address, "catchup", keys, batch=p.batch, value=value,
                concurrency=p.concurrency, first=100,
            )
        )  # fmt: skip
        out["write"] = {
            "seconds": round(seconds, 2),
            "mb_per_s": round(batches * per_batch / MB / seconds, 1),
            "retried": dict(RETRIED_CALLS),
        }
        say(f"catchup: written in {seconds:.1f} s ({batches * per_batch / MB / seconds:,.0f} MB/s)")

        def compacted() -> bool:  # the follower's next entry is gone from the leader's log
            with cluster.client(leader, timeout=5) as c:
                return c.status().first_index > stopped_at + 1

        wait_until(compacted, APPLY_WAIT, "the leader to compact its log past the follower")
        leader = cluster.leader(timeout=60, among=[n for n in cluster.nodes if n != follower])

        def settled() -> bool:
            # No snapshot due or being taken: the follower gets the last one,
            # not one that a newer snapshot replaces while it is on its way.
            with cluster.client(leader, timeout=5) as c:
                applied = c.status().applied_index
            latest = max(_snapshots(cluster.nodes[leader].data_dir), default=0)
            return applied - latest < snapshot_entries

        wait_until(settled, APPLY_WAIT, "the leader's last snapshot")
        with cluster.client(leader, timeout=5) as c:
            goal = c.status().applied_index
        out["leader"] = leader  # the one the follower comes back to
        out["leader_applied"] = goal
        out["leader_snapshots"] = _snapshots(cluster.nodes[leader].data_dir)
        node = cluster.nodes[follower]
        started = time.monotonic()
        node.start()
        serving = time.monotonic() - started
        caught: list[float] = []

        def caught_up() -> bool:
            node_applied = statuses(cluster)
            if node_applied[follower].applied_index >= node_applied[leader].applied_index:
                caught.append(time.monotonic() - started)
                return True
            return False

        wait_until(caught_up, CATCHUP_WAIT, f"{follower} to catch up with {leader}")
        snapshots = {i: b for i, b in _snapshots(node.data_dir).items() if i > stopped_at}
        snapshot_index = max(snapshots, default=0)
        received = snapshots.get(snapshot_index, 0)
        out["catchup"] = {
            "serving_s": round(serving, 3),
            "caught_up_s": round(caught[0], 3),
            "by_snapshot": snapshot_index > 0,
            "snapshot_index": snapshot_index,
            "snapshot_bytes": received,
            "log_entries_after_snapshot": max(goal - snapshot_index, 0),
            "mb_per_s": round(received / MB / caught[0], 1) if received else None,
            "follower_shards_bytes": tree_bytes(node.data_dir / "shards"),
        }
        say(
            f"catchup: {follower} caught up in {caught[0]:.2f} s (serving after {serving:.2f} s), "
            f"snapshot {received / MB:,.0f} MB at index {snapshot_index}"
        )
        return out
    finally:
        cluster.stop()


# -- restart --------------------------------------------------------------------------------


class FirstRead:
    """A thread that sends LINEARIZABLE Gets of `key` to `endpoint` until one
    is answered (or the deadline passes), so the answer is timed as soon as
    it can come, whatever the ready file says."""

    def __init__(self, endpoint: str, namespace: str, key: str, deadline: float) -> None:
        self.endpoint, self.namespace, self.key, self.deadline = endpoint, namespace, key, deadline
        self.answered_at: float | None = None
        self.value: bytes | None = None
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="first-read", daemon=True)

    def start(self) -> FirstRead:
        self._thread.start()
        return self

    def _run(self) -> None:
        with Client(self.endpoint, namespace=self.namespace, timeout=0.5) as client:
            while time.monotonic() < self.deadline:  # bounded by the deadline
                try:
                    entry = client.get(self.key, consistency=LINEARIZABLE)
                except Exception as exc:  # not serving yet: refused, UNAVAILABLE, deadline
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    time.sleep(0.01)  # a node that is not up refuses at once
                    continue
                self.answered_at = time.monotonic()
                self.value = entry.value if entry is not None else None
                return

    def join(self) -> None:
        self._thread.join(max(self.deadline - time.monotonic(), 0) + 5)


def _restart(node: LocalNode, namespace: str, key: str) -> dict[str, Any]:
    started = time.monotonic()
    reader = FirstRead(node.listen, namespace, key, started + READ_WAIT).start()
    node.start()
    serving = time.monotonic() - started
    reader.join()
    if reader.answered_at is None:
        raise RuntimeError(f"{node.node_id} answered no read in {READ_WAIT}s: {reader.last_error}")
    return {
        "serving_s": round(serving, 3),
        "read_s": round(reader.answered_at - started, 3),
        "value": reader.value,
    }


def run_restart(p: RestartParams, base: Path) -> dict[str, Any]:
    """p.keys keys written; a node (a follower of 3, or the only one) stopped
    with SIGTERM and started, then killed with SIGKILL right after more writes
    and started: from process start to a LINEARIZABLE Get answered."""
    out: dict[str, Any] = {"params": asdict(p)}
    target = ShardliteTarget(base, nodes=p.nodes)
    target.start()
    cluster = target.cluster
    try:
        leader = target.leader
        address = cluster.addresses[leader]
        value = b"v" * p.value_bytes
        seconds = asyncio.run(
            write_keys(
                address, "restart", p.keys, batch=p.batch, value=value, concurrency=p.concurrency
            )
        )
        out["write"] = {"seconds": round(seconds, 2), "keys_per_sec": round(p.keys / seconds)}
        say(f"restart: {p.keys:,} keys written in {seconds:.1f} s ({p.keys / seconds:,.0f}/s)")
        wait_all_applied(cluster, leader)
        name = next((n for n in cluster.nodes if n != leader), leader)
        node = cluster.nodes[name]
        out |= {"node": name, "role": "leader" if name == leader else "follower"}
        out["data_bytes"] = {
            "raft": tree_bytes(node.data_dir / "raft"),
            "shards": tree_bytes(node.data_dir / "shards"),
        }
        node.terminate()
        sigterm = _restart(node, "restart", key_name(p.keys - 1))
        if sigterm.pop("value") != value:
            raise RuntimeError("after the SIGTERM restart the read did not find the written value")
        out["sigterm"] = sigterm
        say(
            f"restart: SIGTERM, serving after {sigterm['serving_s']:.2f} s, "
            f"read answered after {sigterm['read_s']:.2f} s"
        )
        # More writes, then SIGKILL at once: the node restarts with a tail to replay.
        tail = b"t" * p.value_bytes
        if name == leader:
            address = cluster.addresses[cluster.leader(timeout=60)]
        asyncio.run(
            write_keys(
                address, "restart", p.kill_batches * p.batch, batch=p.batch,
                value=tail, concurrency=p.concurrency,
            )
        )  # fmt: skip
        node.kill()
        sigkill = _restart(node, "restart", key_name(0))
        if sigkill.pop("value") != tail:
            raise RuntimeError("after the SIGKILL restart the read did not find the last write")
        out["sigkill"] = sigkill
        say(
            f"restart: SIGKILL, serving after {sigkill['serving_s']:.2f} s, "
            f"read answered after {sigkill['read_s']:.2f} s"
        )
        return out
    finally:
        target.stop()


# -- overload --------------------------------------------------------------------------------


def run_overload(p: OverloadParams, load: Load, base: Path) -> dict[str, Any]:
    """Each mix at each client count, on one cluster: ops/s, latency, errors by code."""
    out: dict[str, Any] = {"params": asdict(p), "runs": []}
    target = ShardliteTarget(base, nodes=p.nodes)
    target.start()
    try:
        (endpoint,) = target.endpoints()
        asyncio.run(
            write_keys(
                endpoint, "overload", p.keys, batch=500, value=b"o" * p.value_bytes, concurrency=4
            )
        )
        for mix in p.mixes:
            for clients in p.clients:
                spec = _spec(
                    target.endpoints()[0],
                    clients,
                    load,
                    namespace="overload",
                    keys=p.keys,
                    value_bytes=p.value_bytes,
                    mix=parse_mix(mix),
                )
                result = _measure(spec, load, target.pids(), f"overload {mix}@{clients}")
                out["runs"].append({"mix": mix, "clients": clients, **_run_summary(result)})
    finally:
        target.stop()
    return out


# -- the targets --------------------------------------------------------------------------------


def evaluate(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target the scenarios measured: the number, the issue's goal, met or not."""
    rows: list[dict[str, Any]] = []

    def row(name: str, measured: Any, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": measured, "goal": goal, "met": met})

    shards = scenarios.get("shards")
    if shards:
        ratio = shards.get("spread_ratio")
        row(
            f"5 spread over {shards['params']['namespaces']:,} ns / 1 ns "
            f"(put@{shards['params']['clients']})",
            ratio,
            f">= {SPREAD_RATIO_TARGET}",
            None if ratio is None else ratio >= SPREAD_RATIO_TARGET,
        )
        rss = shards["rss"]
        for phase in ("after_writes", "after_reads"):
            values = [m["rss_mib"] for m in rss[phase].values() if m["rss_mib"] is not None]
            worst = max(values) if values else None
            row(
                f"5 RSS, {rss['open_shards_asked']:,} shards open ({phase.replace('_', ' ')}), MiB",
                worst,
                f"< {RSS_TARGET_MIB}",
                None if worst is None else worst < RSS_TARGET_MIB,
            )
    catchup = scenarios.get("catchup")
    if catchup:
        c = catchup["catchup"]
        rate = c["mb_per_s"]
        row(
            f"6 catch-up by snapshot, {catchup['written_bytes'] / MB:,.0f} MB behind, MB/s",
            rate,
            f">= {CATCHUP_TARGET_MB_S:.0f}",
            None if rate is None else (c["by_snapshot"] and rate >= CATCHUP_TARGET_MB_S),
        )
    restart = scenarios.get("restart")
    if restart:
        for mode in ("sigterm", "sigkill"):
            if mode in restart:
                seconds = restart[mode]["read_s"]
                row(
                    f"6 restart after {mode.upper()}, {restart['params']['keys']:,} keys, "
                    "s to a LINEARIZABLE read",
                    seconds,
                    f"<= {RESTART_TARGET_S:.0f}",
                    seconds <= RESTART_TARGET_S,
                )
    overload = scenarios.get("overload")
    if overload:
        for mix in overload["params"]["mixes"]:
            runs = sorted(
                (r for r in overload["runs"] if r["mix"] == mix), key=lambda r: r["clients"]
            )
            if len(runs) < 2:
                continue
            low, high = runs[0], runs[-1]
            keep = high["ops_per_sec"] / low["ops_per_sec"] if low["ops_per_sec"] else 0.0
            unclean = sum(
                n for r in runs for code, n in r["error_codes"].items() if code not in CLEAN_ERRORS
            )
            row(
                f"7 {mix}: ops/s at {high['clients']:,} / at {low['clients']:,} clients "
                f"(unclean errors {unclean})",
                round(keep, 3),
                f">= {OVERLOAD_KEEP}, no errors but RESOURCE_EXHAUSTED",
                keep >= OVERLOAD_KEEP and unclean == 0,
            )
    return rows


# -- tables ---------------------------------------------------------------------------------------


def _lat(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    return f"{lat['p50']:.1f} / {lat['p99']:.1f}"


def tables(record: dict[str, Any]) -> str:
    scenarios = record["scenarios"]
    parts: list[str] = []
    shards = scenarios.get("shards")
    if shards:
        lines = ["| shards run | rep | ops/s | p50 / p99 ms | errors |", "|---|---|---|---|---|"]
        for run in shards["runs"]:
            lines.append(
                f"| {run['case']} | {run['rep']} | {run['ops_per_sec']:,.0f} | {_lat(run)} | "
                f"{run['error_codes'] or 0} |"
            )
        create = shards["create"]
        lines.append(
            f"\nnamespaces created (one Put each): {create['namespaces']:,} in "
            f"{create['seconds']} s ({create['per_sec']:,.0f}/s)"
        )
        rss = shards["rss"]
        lines.append("\n| node | RSS at start MiB | after writes (open shards) | after reads |")
        lines.append("|---|---|---|---|")
        for name, start in rss["start"].items():
            w, r = rss["after_writes"][name], rss["after_reads"][name]
            lines.append(
                f"| {name} | {start['rss_mib']} | {w['rss_mib']} ({w['open_shards']}) | "
                f"{r['rss_mib']} ({r['open_shards']}) |"
            )
        parts.append("\n".join(lines))
    catchup = scenarios.get("catchup")
    if catchup:
        c = catchup["catchup"]
        parts.append(
            "| catch-up | |\n|---|---|\n"
            f"| written (follower down) | {catchup['written_bytes'] / MB:,.0f} MB in "
            f"{catchup['write']['seconds']} s ({catchup['write']['mb_per_s']} MB/s) |\n"
            f"| follower serving after | {c['serving_s']} s |\n"
            f"| follower caught up after | {c['caught_up_s']} s |\n"
            f"| by snapshot | {c['by_snapshot']} (index {c['snapshot_index']}, "
            f"{c['snapshot_bytes'] / MB:,.1f} MB, "
            f"then {c['log_entries_after_snapshot']} entries) |\n"
            f"| catch-up rate | {c['mb_per_s']} MB/s |"
        )
    restart = scenarios.get("restart")
    if restart:
        lines = [
            f"| restart ({restart['role']} {restart['node']} of {restart['params']['nodes']}, "
            f"{restart['params']['keys']:,} keys) | serving after s | LINEARIZABLE read after s |",
            "|---|---|---|",
        ]
        for mode in ("sigterm", "sigkill"):
            if mode in restart:
                lines.append(
                    f"| {mode.upper()} | {restart[mode]['serving_s']} | {restart[mode]['read_s']} |"
                )
        lines.append(
            f"\nwritten at {restart['write']['keys_per_sec']:,} keys/s; data on the node: raft "
            f"{restart['data_bytes']['raft'] / MB:,.0f} MB, shards "
            f"{restart['data_bytes']['shards'] / MB:,.0f} MB"
        )
        parts.append("\n".join(lines))
    overload = scenarios.get("overload")
    if overload:
        lines = [
            "| overload | clients | ops/s | p50 / p99 ms | errors by code |",
            "|---|---|---|---|---|",
        ]
        for run in overload["runs"]:
            lines.append(
                f"| {run['mix']} | {run['clients']:,} | {run['ops_per_sec']:,.0f} | {_lat(run)} | "
                f"{run['error_codes'] or 0} |"
            )
        parts.append("\n".join(lines))
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for t in record.get("targets", []):
        met = {True: "yes", False: "**no**", None: "?"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


# -- the command line -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenarios", nargs="+", choices=(*SCENARIOS, "all"))
    p.add_argument("--quick", action="store_true", help="small sizes, short windows")
    p.add_argument(
        "--nodes", type=int, default=None, help="nodes for shards, restart, overload (3)"
    )
    p.add_argument("--processes", type=int, default=None, help="load generator processes (2)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds before a window (2; quick 1)"
    )
    p.add_argument("--window", type=float, default=None, help="measured seconds (6; quick 3)")
    p.add_argument("--namespaces", type=int, default=None, help="shards: spread over (10,000)")
    p.add_argument("--open-shards", type=int, default=None, help="shards: for the RSS (1,000)")
    p.add_argument("--reps", type=int, default=None, help="shards: A B repetitions (2; quick 1)")
    p.add_argument("--clients", type=int, default=None, help="shards: clients (64)")
    p.add_argument(
        "--bytes", type=_size, default=None, help="catchup: written while down (1G; quick 100M)"
    )
    p.add_argument("--value-bytes", type=_size, default=None, help="catchup: value size (256K)")
    p.add_argument(
        "--keys", type=int, default=None, help="restart: keys (1,000,000; quick 100,000)"
    )
    p.add_argument("--clients-list", default=None, help="overload: client counts (64,256,1024)")
    p.add_argument("--mixes", default=None, help="overload: op mixes, ';'-separated (put;get)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "bench-results")
    p.add_argument("--out", type=Path, default=None, help="the JSON record")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--report", type=Path, default=None, help="print the tables of a saved record")
    return p


def _size(text: str) -> int:
    """'1G', '100M', '256K' or a number of bytes (K, M, G: powers of 1000; KiB ... of 1024)."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30}
    raw = text.strip().upper().removesuffix("B")
    for suffix in sorted(units, key=len, reverse=True):
        if raw.endswith(suffix):
            number = raw[: -len(suffix)]
            try:
                return int(float(number) * units[suffix])
            except ValueError:
                break
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 100M, 256Ki)") from None


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    """Each scenario's parameters: the defaults (or the quick ones), then the flags."""
    quick = args.quick
    shards = QUICK["shards"] if quick else ShardsParams()
    catchup = QUICK["catchup"] if quick else CatchupParams()
    restart = QUICK["restart"] if quick else RestartParams()
    overload = QUICK["overload"] if quick else OverloadParams()
    load = QUICK["load"] if quick else Load()

    def given(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    nodes = given(nodes=args.nodes)
    shards = replace(
        shards,
        **nodes,
        **given(
            namespaces=args.namespaces,
            open_shards=args.open_shards,
            reps=args.reps,
            clients=args.clients,
        ),
    )
    catchup = replace(catchup, **given(bytes=args.bytes, value_bytes=args.value_bytes))
    restart = replace(restart, **nodes, **given(keys=args.keys))
    overload = replace(
        overload,
        **nodes,
        **given(
            clients=tuple(int(c) for c in args.clients_list.split(","))
            if args.clients_list
            else None,
            mixes=tuple(m for m in args.mixes.split(";") if m) if args.mixes else None,
        ),
    )
    load = replace(
        load,
        **given(processes=args.processes, warmup=args.warmup, window=args.window),
        progress=None if args.no_progress else stderr_progress,
    )
    for mix in overload.mixes:
        parse_mix(mix)  # fails early on a bad mix
    return {
        "shards": shards,
        "catchup": catchup,
        "restart": restart,
        "overload": overload,
        "load": load,
    }


def run(
    scenarios: Sequence[str],
    params: dict[str, Any],
    out_path: Path,
    *,
    command: str,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the scenarios one after the other; the record is written after each."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "scale",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(None),
        "load": {k: v for k, v in asdict(params["load"]).items() if k != "progress"},
        "scenarios": {},
        "targets": [],
    }
    base = Path(tempfile.mkdtemp(prefix="shardlite-scale-"))
    load: Load = params["load"]
    try:
        for name in scenarios:
            started = time.monotonic()
            where = base / name
            if name == "shards":
                result = run_shards(params["shards"], load, where)
            elif name == "catchup":
                result = run_catchup(params["catchup"], where)
            elif name == "restart":
                result = run_restart(params["restart"], where)
            else:
                result = run_overload(params["overload"], load, where)
            result["seconds"] = round(time.monotonic() - started, 1)
            record["scenarios"][name] = result
            record["targets"] = evaluate(record["scenarios"])
            write_record(record, out_path)
    finally:
        if keep:
            say(f"data and logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    record["machine"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_record(record, out_path)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.report is not None:
        print(tables(json.loads(args.report.read_text())))
        return 0
    chosen = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    params = params_from(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.out or args.out_dir / f"{stamp}-scale{'-quick' if args.quick else ''}.json"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwind through the finally blocks that stop everything

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    command = " ".join(
        ["python -m scripts.bench_scale", *(argv if argv is not None else sys.argv[1:])]
    )
    try:
        record = run(chosen, params, out_path, command=command, keep=args.keep_data)
    except KeyboardInterrupt:
        say(f"interrupted; every process started was stopped; partial record in {out_path}")
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; record: {out_path}")
    print(tables(record))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
