"""The benchmark's closed-loop load generator.

N clients (coroutines), spread over P worker processes so that the generator
is not the bottleneck, each sending one request and waiting for its answer
before the next (closed loop). An op mix (put, CAS, delete, batch,
LINEARIZABLE and SERIALIZABLE get), value size, key count and distribution
(uniform or zipf). All workers start together; ops that complete during the
warm-up are not counted, then every op completing inside a fixed window is
counted with its latency. The parent reads the CPU of the workers and of each
watched server process (/proc/<pid>/stat) at the window's start and end.

The same generator drives shardlite's KV API (and the bare echo server, which
serves the same API doing nothing) and etcd's v3 KV API (scripts/etcd), one
op per RPC; and, as api "shardlite-client", shardlite through its AsyncClient
(node/async_client.py): the clients of one worker process are concurrent
callers of one AsyncClient, which coalesces their calls into MultiWrite and
MultiGet RPCs while each op is still acknowledged on its own.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import multiprocessing
import os
import random
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import grpc

from scripts.bench_stats import CpuMeter, latency_summary
from scripts.etcd import etcd_kv_pb2 as etcd_pb2
from scripts.etcd import etcd_kv_pb2_grpc as etcd_grpc
from shardlite.node.async_client import AsyncClient, ClientError, ConditionFailedError, Put
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc

OPS = ("put", "cas", "delete", "batch", "get", "sget")
OP_HELP = (
    "put: unconditional put; cas: put conditional on the version the client last wrote "
    "(each client CASes keys of its own, so conditions hold); delete; batch: --batch-size "
    "puts in one atomic request; get: LINEARIZABLE read; sget: SERIALIZABLE read"
)
# Bounds on everything the generator waits for.
READY_TIMEOUT = 60.0  # worker processes spawned, imported grpc, connected
MAX_SAMPLES_PER_WORKER = 5_000_000
PROGRESS_EVERY = 0.5


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """'put' or 'put=70,get=30' -> ((op, weight), ...)."""
    mix = []
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in OPS:
            raise ValueError(f"unknown op {name!r} in mix {text!r}; ops: {', '.join(OPS)}")
        value = float(weight) if weight else 1.0
        if value <= 0:
            raise ValueError(f"op {name!r} has weight {value}; weights must be > 0")
        mix.append((name, value))
    if not mix:
        raise ValueError("empty op mix")
    return tuple(mix)


@dataclass(frozen=True)
class LoadSpec:
    """What to send (picklable: it travels to the worker processes)."""

    api: str  # "shardlite" (also the echo server), "shardlite-client" or "etcd"
    endpoints: tuple[str, ...]
    clients: int
    mix: tuple[tuple[str, float], ...] = (("put", 1.0),)
    value_bytes: int = 100
    keys: int = 10_000
    distribution: str = "uniform"  # or "zipf"
    zipf_s: float = 0.99
    batch_size: int = 10
    namespace: str = "bench"
    op_timeout: float = 10.0
    max_ops: int = 10_000_000  # per worker process
    seed: int = 1
    channels: int = 1  # gRPC channels per endpoint per worker process
    client_in_flight: int = 2  # shardlite-client: multi calls in flight per lane
    # Distinguishes this run's CAS keys from earlier runs' (their versions differ).
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def key_name(index: int) -> str:
    return f"k{index:08d}"


class KeyChooser:
    """Keys 0..keys-1, uniform or zipf (rank r drawn with weight 1/r^s)."""

    def __init__(self, keys: int, distribution: str, zipf_s: float) -> None:
        if keys < 1:
            raise ValueError("--keys must be >= 1")
        self.keys = keys
        self._cumulative: list[float] | None = None
        if distribution == "zipf":
            self._cumulative = list(
                itertools.accumulate(1.0 / (rank**zipf_s) for rank in range(1, keys + 1))
            )
        elif distribution != "uniform":
            raise ValueError(f"unknown distribution {distribution!r} (uniform, zipf)")

    def pick(self, rng: random.Random) -> int:
        if self._cumulative is None:
            return rng.randrange(self.keys)
        point = rng.random() * self._cumulative[-1]
        return min(bisect.bisect_left(self._cumulative, point), self.keys - 1)

    def distinct(self, rng: random.Random, count: int) -> list[int]:
        """`count` distinct keys (fewer if there are fewer keys), bounded draws."""
        count = min(count, self.keys)
        chosen: dict[int, None] = {}
        for _ in range(count * 10):
            if len(chosen) == count:
                break
            chosen[self.pick(rng)] = None
        start = next(iter(chosen), 0)
        for step in range(self.keys):  # top up with neighbours: bounded by the key count
            if len(chosen) == count:
                break
            chosen[(start + step) % self.keys] = None
        return list(chosen)


class CasConflict(Exception):
    """A conditional write found another version (not an error of the target)."""


class Ops(Protocol):
    """One client's view of a target's API (one request per call)."""

    async def put(self, key: str, value: bytes) -> None: ...
    async def cas(self, key: str, value: bytes, expected: int) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def batch(self, keys: Sequence[str], value: bytes) -> None: ...
    async def get(self, key: str, *, linearizable: bool) -> None: ...


class ShardliteOps:
    """shardlite's KV API through raw grpc.aio stubs, the way a unary client
    (grpcurl, a Go client) sends it: one op per RPC. Writes carry a request_id
    as the shipped Python client's do."""

    def __init__(self, channel: grpc.aio.Channel, spec: LoadSpec) -> None:
        self._stub = kv_pb2_grpc.KVStub(channel)
        self._namespace = spec.namespace
        self._timeout = spec.op_timeout
        self._client_id = uuid.uuid4().hex
        self._seq = itertools.count(1)

    def _request_id(self) -> frame_pb2.RequestId:
        return frame_pb2.RequestId(client_id=self._client_id, seq=next(self._seq))

    async def put(self, key: str, value: bytes) -> None:
        await self._stub.Put(
            kv_pb2.PutRequest(
                namespace=self._namespace, key=key, value=value, request_id=self._request_id()
            ),
            timeout=self._timeout,
        )

    async def cas(self, key: str, value: bytes, expected: int) -> int:
        try:
            reply = await self._stub.Put(
                kv_pb2.PutRequest(
                    namespace=self._namespace,
                    key=key,
                    value=value,
                    expected_version=expected,
                    request_id=self._request_id(),
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise CasConflict(exc.details()) from None
            raise
        return int(reply.version)

    async def delete(self, key: str) -> None:
        await self._stub.Delete(
            kv_pb2.DeleteRequest(namespace=self._namespace, key=key, request_id=self._request_id()),
            timeout=self._timeout,
        )

    async def batch(self, keys: Sequence[str], value: bytes) -> None:
        request = kv_pb2.BatchRequest(namespace=self._namespace, request_id=self._request_id())
        for key in keys:
            request.ops.add(put=frame_pb2.PutOp(key=key, value=value))
        await self._stub.Batch(request, timeout=self._timeout)

    async def get(self, key: str, *, linearizable: bool) -> None:
        consistency = kv_pb2.LINEARIZABLE if linearizable else kv_pb2.SERIALIZABLE
        await self._stub.Get(
            kv_pb2.GetRequest(namespace=self._namespace, key=key, consistency=consistency),
            timeout=self._timeout,
        )


class ClientOps:
    """shardlite through the AsyncClient shared by every client of the process."""

    def __init__(self, client: AsyncClient, spec: LoadSpec) -> None:
        self._client = client

    async def put(self, key: str, value: bytes) -> None:
        await self._client.put(key, value)

    async def cas(self, key: str, value: bytes, expected: int) -> int:
        try:
            written = await self._client.put(key, value, expected_version=expected)
        except ConditionFailedError as exc:
            raise CasConflict(exc.details) from None
        return written.version

    async def delete(self, key: str) -> None:
        await self._client.delete(key)

    async def batch(self, keys: Sequence[str], value: bytes) -> None:
        await self._client.batch([Put(key, value) for key in keys])

    async def get(self, key: str, *, linearizable: bool) -> None:
        consistency = kv_pb2.LINEARIZABLE if linearizable else kv_pb2.SERIALIZABLE
        await self._client.get(key, consistency=consistency)


class EtcdOps:
    """etcd's v3 KV API: Put, Range (serializable or not), DeleteRange, and Txn
    for CAS (compare the key's version) and batches (puts in one Txn)."""

    def __init__(self, channel: grpc.aio.Channel, spec: LoadSpec) -> None:
        self._stub = etcd_grpc.KVStub(channel)
        self._timeout = spec.op_timeout

    async def put(self, key: str, value: bytes) -> None:
        await self._stub.Put(
            etcd_pb2.PutRequest(key=key.encode(), value=value), timeout=self._timeout
        )

    async def cas(self, key: str, value: bytes, expected: int) -> int:
        # etcd's version counts a key's puts since its creation (0 = absent).
        reply = await self._stub.Txn(
            etcd_pb2.TxnRequest(
                compare=[
                    etcd_pb2.Compare(
                        result=etcd_pb2.Compare.EQUAL,
                        target=etcd_pb2.Compare.VERSION,
                        key=key.encode(),
                        version=expected,
                    )
                ],
                success=[
                    etcd_pb2.RequestOp(
                        request_put=etcd_pb2.PutRequest(key=key.encode(), value=value)
                    )
                ],
            ),
            timeout=self._timeout,
        )
        if not reply.succeeded:
            raise CasConflict(key)
        return expected + 1

    async def delete(self, key: str) -> None:
        await self._stub.DeleteRange(
            etcd_pb2.DeleteRangeRequest(key=key.encode()), timeout=self._timeout
        )

    async def batch(self, keys: Sequence[str], value: bytes) -> None:
        await self._stub.Txn(
            etcd_pb2.TxnRequest(
                success=[
                    etcd_pb2.RequestOp(request_put=etcd_pb2.PutRequest(key=k.encode(), value=value))
                    for k in keys
                ]
            ),
            timeout=self._timeout,
        )

    async def get(self, key: str, *, linearizable: bool) -> None:
        await self._stub.Range(
            etcd_pb2.RangeRequest(key=key.encode(), serializable=not linearizable),
            timeout=self._timeout,
        )


DRIVERS: dict[str, Callable[[grpc.aio.Channel, LoadSpec], Ops]] = {
    "shardlite": ShardliteOps,
    "etcd": EtcdOps,
}
# Drivers over one client object per worker process (not a raw channel).
CLIENT_APIS = ("shardlite-client",)
APIS = (*DRIVERS, *CLIENT_APIS)


def open_channel(endpoint: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        endpoint,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            # Each channel its own connection (gRPC would share one subchannel).
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


# -- one worker process -------------------------------------------------------


@dataclass
class Window:
    """The measured window, and what the clients of one process counted in it."""

    warm_start: float
    start: float
    end: float
    latencies: array[float] = field(default_factory=lambda: array("d"))
    completed: int = 0  # every op answered, warm-up included
    errors: Counter[str] = field(default_factory=Counter)
    cas_conflicts: int = 0
    budget: int = 0
    truncated: bool = False


async def run_client(client: int, ops: Ops, spec: LoadSpec, window: Window) -> None:
    """One closed-loop client: an op, its answer, the next op; until the
    window ends or the process's op budget is spent."""
    rng = random.Random(spec.seed * 1_000_003 + client)
    chooser = _chooser(spec)
    names = [name for name, _ in spec.mix]
    weights = list(itertools.accumulate(w for _, w in spec.mix))
    value = rng.randbytes(spec.value_bytes)
    cas_keys = max(1, spec.keys // max(spec.clients, 1))
    cas_versions: dict[str, int] = {}
    delay = max(window.warm_start - time.monotonic(), 0.0)
    if delay:
        await asyncio.sleep(delay)  # the common start time (a clock, not a condition)
    while window.budget > 0:
        started = time.monotonic()
        if started >= window.end:
            break
        window.budget -= 1
        op = rng.choices(names, cum_weights=weights)[0]
        failed = ""
        try:
            if op == "put":
                await ops.put(key_name(chooser.pick(rng)), value)
            elif op == "get" or op == "sget":
                await ops.get(key_name(chooser.pick(rng)), linearizable=op == "get")
            elif op == "delete":
                await ops.delete(key_name(chooser.pick(rng)))
            elif op == "batch":
                keys = [key_name(k) for k in chooser.distinct(rng, spec.batch_size)]
                await ops.batch(keys, value)
            else:  # cas, on this client's own keys, so the client knows their versions
                key = f"cas-{spec.run_tag}-{client}-{rng.randrange(cas_keys)}"
                try:
                    cas_versions[key] = await ops.cas(key, value, cas_versions.get(key, 0))
                except CasConflict:
                    window.cas_conflicts += 1
                    cas_versions.pop(key, None)
        except grpc.aio.AioRpcError as exc:
            failed = exc.code().name
        except ClientError as exc:  # the AsyncClient's
            failed = exc.code.name
        done = time.monotonic()
        window.completed += 1
        if window.start <= done <= window.end:
            if failed:
                window.errors[failed] += 1
            elif len(window.latencies) < MAX_SAMPLES_PER_WORKER:
                window.latencies.append(done - started)
            else:
                window.truncated = True
        if failed:
            await asyncio.sleep(0.01)  # back off: a failing target answers at once


_CHOOSERS: dict[tuple[int, str, float], KeyChooser] = {}


def _chooser(spec: LoadSpec) -> KeyChooser:
    """One chooser per process (the zipf table is shared by its clients)."""
    key = (spec.keys, spec.distribution, spec.zipf_s)
    if key not in _CHOOSERS:
        _CHOOSERS[key] = KeyChooser(*key)
    return _CHOOSERS[key]


async def _receive(conn: Connection, within: float) -> Any:
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, within)
    if not ready:
        raise TimeoutError(f"no word from the parent in {within}s")
    return conn.recv()


async def _worker(conn: Connection, spec: LoadSpec, first: int, count: int) -> None:
    if spec.api in CLIENT_APIS:
        await _client_worker(conn, spec, first, count)
        return
    channels = [open_channel(ep) for ep in spec.endpoints for _ in range(spec.channels)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in channels)), READY_TIMEOUT / 2
        )
        conn.send(("ready", os.getpid()))
        message = await _receive(conn, READY_TIMEOUT)
        if message[0] != "go":
            return
        driver = DRIVERS[spec.api]
        ops = [driver(channels[(first + i) % len(channels)], spec) for i in range(count)]
        await _run_window(conn, spec, first, ops, message[1:])
    finally:
        for channel in channels:
            await channel.close(None)


async def _client_worker(conn: Connection, spec: LoadSpec, first: int, count: int) -> None:
    """The process's clients as concurrent callers of one AsyncClient (on the
    first endpoint: the client has one)."""
    async with AsyncClient(
        spec.endpoints[0],
        namespace=spec.namespace,
        timeout=spec.op_timeout,
        max_in_flight=spec.client_in_flight,
    ) as client:
        await client.status()  # connected and serving
        conn.send(("ready", os.getpid()))
        message = await _receive(conn, READY_TIMEOUT)
        if message[0] != "go":
            return
        ops = [ClientOps(client, spec) for _ in range(count)]
        await _run_window(
            conn,
            spec,
            first,
            ops,
            message[1:],
            # How well calls coalesced (warm-up included): RPCs and the ops they carried.
            extra=lambda: {"client_calls": dict(client.calls), "client_ops": dict(client.ops_sent)},
        )


async def _run_window(
    conn: Connection,
    spec: LoadSpec,
    first: int,
    ops: Sequence[Ops],
    times: tuple[float, float, float],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> None:
    warm_start, start, end = times
    window = Window(warm_start, start, end, budget=spec.max_ops)
    clients = [
        asyncio.create_task(run_client(first + i, client_ops, spec, window))
        for i, client_ops in enumerate(ops)
    ]
    reporter = asyncio.create_task(_report_progress(conn, window))
    try:
        await asyncio.gather(*clients)
    finally:
        reporter.cancel()
    conn.send(
        (
            "done",
            {
                "pid": os.getpid(),
                "latencies": window.latencies.tobytes(),
                "completed": window.completed,
                "errors": dict(window.errors),
                "cas_conflicts": window.cas_conflicts,
                "budget_spent": window.budget <= 0,
                "truncated": window.truncated,
                **(extra() if extra is not None else {}),
            },
        )
    )


async def _report_progress(conn: Connection, window: Window) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        conn.send(
            ("progress", window.completed, len(window.latencies), sum(window.errors.values()))
        )


def worker_main(conn: Connection, spec: LoadSpec, first: int, count: int) -> None:
    """Entry point of a worker process."""
    try:
        asyncio.run(_worker(conn, spec, first, count))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports
        pass
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


# -- the parent: one measurement ------------------------------------------------


def split_clients(clients: int, processes: int) -> list[tuple[int, int]]:
    """(first client, count) per worker process; never an empty worker."""
    processes = max(1, min(processes, clients))
    base, extra = divmod(clients, processes)
    out, first = [], 0
    for i in range(processes):
        count = base + (1 if i < extra else 0)
        out.append((first, count))
        first += count
    return out


def measure(
    spec: LoadSpec,
    *,
    processes: int,
    warmup: float,
    window: float,
    watch: dict[str, int],
    label: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the load once: start the workers, warm up, measure one window.
    Returns throughput, latency percentiles, errors and CPU per process.
    Every worker process is stopped by its PID before this returns."""
    if spec.clients < 1:
        raise ValueError("clients must be >= 1")
    ctx = multiprocessing.get_context("spawn")  # no fork after grpc has started threads
    workers: list[Any] = []  # spawn-context Process objects
    conns: list[Connection] = []
    try:
        for first, count in split_clients(spec.clients, processes):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child_end, spec, first, count), daemon=True
            )
            proc.start()
            child_end.close()
            workers.append(proc)
            conns.append(parent_end)
        inbox = _Inbox(conns, workers)
        inbox.collect("ready", time.monotonic() + READY_TIMEOUT)
        warm_start = time.monotonic() + 0.05
        start = warm_start + warmup
        end = start + window
        for conn in conns:
            conn.send(("go", warm_start, start, end))
        pids = dict(watch)
        pids.update({f"generator{i}": p.pid for i, p in enumerate(workers) if p.pid})
        pids["generator-parent"] = os.getpid()
        meter = CpuMeter(pids)
        inbox.status = _Progress(label, warm_start, start, end, len(conns), progress)
        inbox.pump(start)
        meter.start()
        metered_from = time.monotonic()
        inbox.pump(end)
        cpu = meter.stop(time.monotonic() - metered_from)
        results = inbox.collect("done", end + spec.op_timeout + 15)
    finally:
        for proc in workers:
            _stop_process(proc)
        for conn in conns:
            conn.close()
    return _combine(spec, results, cpu, window, processes=len(workers))


def _stop_process(proc: multiprocessing.process.BaseProcess) -> None:
    if proc.is_alive():
        proc.terminate()  # SIGTERM to its PID
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


class _Progress:
    """Live progress on stderr: phase, elapsed, ops/s in the window, errors."""

    def __init__(
        self,
        label: str,
        warm_start: float,
        start: float,
        end: float,
        workers: int,
        out: Callable[[str], None] | None,
    ) -> None:
        self.label, self.warm_start, self.start, self.end = label, warm_start, start, end
        self.out = out
        self.counted = [0] * workers
        self.errors = [0] * workers
        self._last = 0.0

    def update(self, worker: int, counted: int, errors: int) -> None:
        self.counted[worker], self.errors[worker] = counted, errors
        now = time.monotonic()
        if self.out is None or now - self._last < 1.0:
            return
        self._last = now
        if now < self.start:
            self.out(f"{self.label}  warm-up {now - self.warm_start:4.1f}s")
            return
        elapsed = min(now, self.end) - self.start
        rate = sum(self.counted) / elapsed if elapsed > 0 else 0.0
        self.out(
            f"{self.label}  {elapsed:4.1f}/{self.end - self.start:.0f}s  "
            f"{rate:9,.0f} ops/s  errors {sum(self.errors)}"
        )


class _Inbox:
    """What the workers sent: progress goes to the status line, 'ready' and
    'done' are kept per worker, 'failed' or a closed pipe raises."""

    def __init__(self, conns: list[Connection], workers: Sequence[Any]) -> None:
        self.conns, self.workers = conns, workers
        self.status: _Progress | None = None
        self.got: dict[str, dict[int, Any]] = {"ready": {}, "done": {}}

    def pump(self, until: float) -> None:
        """Read messages until the clock reaches `until`."""
        while (remaining := until - time.monotonic()) > 0:
            self._read(wait(self.conns, timeout=remaining))

    def collect(self, kind: str, deadline: float) -> list[Any]:
        """One `kind` message from every worker, by the deadline."""
        got = self.got[kind]
        while len(got) < len(self.conns):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = len(self.conns) - len(got)
                raise TimeoutError(f"{missing} load workers sent no {kind!r} in time")
            pending = [c for i, c in enumerate(self.conns) if i not in got]
            self._read(wait(pending, timeout=remaining))
        return [got[i] for i in range(len(self.conns))]

    def _read(self, ready: list[Any]) -> None:
        for conn in ready:
            assert isinstance(conn, Connection)
            i = self.conns.index(conn)
            try:
                message = conn.recv()
            except EOFError:
                self.workers[i].join(2)  # reap it, to say how it ended
                code = self.workers[i].exitcode
                raise RuntimeError(f"load worker {i} exited ({code}) unexpectedly") from None
            kind = message[0]
            if kind == "progress":
                if self.status is not None:
                    self.status.update(i, message[2], message[3])
            elif kind == "failed":
                raise RuntimeError(f"load worker {i} failed: {message[1]}")
            else:
                self.got[kind][i] = message[1]


def _combine(
    spec: LoadSpec,
    results: list[dict[str, Any]],
    cpu: dict[str, Any],
    window: float,
    *,
    processes: int,
) -> dict[str, Any]:
    latencies: array[float] = array("d")
    errors: Counter[str] = Counter()
    for result in results:
        latencies.frombytes(result["latencies"])
        errors.update(result["errors"])
    ops = len(latencies)
    generator = [v for k, v in cpu["processes"].items() if k.startswith("generator") and v]
    return {
        "ops": ops,
        "ops_per_sec": round(ops / window, 1),
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "cas_conflicts": sum(r["cas_conflicts"] for r in results),
        "latency_ms": latency_summary(latencies),
        "processes": processes,
        "budget_spent": any(r["budget_spent"] for r in results),
        "samples_truncated": any(r["truncated"] for r in results),
        "cpu_cores": {**cpu, "generator_total": round(sum(generator), 3)},
        **_client_calls(results),
    }


def _client_calls(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Through the AsyncClient: the RPCs its lanes sent and the ops they carried
    (warm-up included), so a record shows how well calls coalesced."""
    calls: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    for result in results:
        calls.update(result.get("client_calls", {}))
        ops.update(result.get("client_ops", {}))
    if not calls:
        return {}
    per_call = {m: round(ops[m] / calls[m], 1) for m in ops if calls[m]}
    return {"client_calls": dict(calls), "client_ops_per_call": per_call}


def stderr_progress(line: str) -> None:
    """Progress lines: overwritten in place on a terminal, one per line otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{line}")
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def with_endpoints(spec: LoadSpec, endpoints: Sequence[str]) -> LoadSpec:
    return replace(spec, endpoints=tuple(endpoints))
