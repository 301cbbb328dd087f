"""What the benchmark runs against, each started and stopped by PID:

- shardlite: a local cluster of `shardlite node` processes (scripts/cluster.py),
- shardlite-client: the same cluster (shared with the shardlite target when
  both run) driven through the AsyncClient, which coalesces concurrent calls,
- etcd: Debian's etcd-server, N members on loopback, default fsync settings,
  data in a temporary directory removed afterwards,
- echo: a bare grpc.aio server answering shardlite's KV API at once, doing
  nothing (the ceiling of Python gRPC on this machine).

    python -m scripts.bench_targets echo --listen 127.0.0.1:0 --ready-file F
runs the echo server alone (the benchmark starts it that way, in its own
process, so its CPU is its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import grpc

from scripts.bench_load import DRIVERS, LoadSpec, key_name, open_channel
from scripts.cluster import LocalCluster, free_ports, wait_until
from scripts.etcd import etcd_kv_pb2 as etcd_pb2
from scripts.etcd import etcd_kv_pb2_grpc as etcd_grpc
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class Target(Protocol):
    name: str
    api: str  # which driver of scripts.bench_load speaks to it

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def endpoints(self) -> list[str]: ...
    def pids(self) -> dict[str, int]: ...
    def describe(self) -> dict[str, Any]: ...


# -- the echo server -------------------------------------------------------------


class EchoKV(kv_pb2_grpc.KVServicer):
    """shardlite's KV API answered at once: no Raft, no disk, no state. The
    same requests and reply shapes, so the same generator measures the cost
    of Python gRPC alone."""

    def __init__(self, value_bytes: int = 100) -> None:
        self.value = b"v" * value_bytes
        self._index = itertools.count(1)

    async def Put(self, request: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        return kv_pb2.PutResponse(index=next(self._index), version=request.expected_version + 1)

    async def Get(self, request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        return kv_pb2.GetResponse(found=True, value=self.value, version=1)

    async def Delete(self, request: kv_pb2.DeleteRequest, context: Any) -> kv_pb2.DeleteResponse:
        return kv_pb2.DeleteResponse(index=next(self._index), deleted=True)

    async def Batch(self, request: kv_pb2.BatchRequest, context: Any) -> kv_pb2.BatchResponse:
        results = [frame_pb2.OpResult(version=1) for _ in request.ops]
        return kv_pb2.BatchResponse(index=next(self._index), results=results)

    async def Status(self, request: kv_pb2.StatusRequest, context: Any) -> kv_pb2.StatusResponse:
        return kv_pb2.StatusResponse(node_id="echo", role="leader", leader="echo")

    async def MultiWrite(
        self, request: kv_pb2.MultiWriteRequest, context: Any
    ) -> kv_pb2.MultiWriteResponse:
        reply = kv_pb2.MultiWriteResponse()
        for write in request.writes:
            kind = write.WhichOneof("write")
            if kind == "delete":
                reply.results.add(delete=kv_pb2.DeleteResponse(index=next(self._index)))
            elif kind == "batch":
                reply.results.add(batch=await self.Batch(write.batch, context))
            else:
                reply.results.add(put=await self.Put(write.put, context))
        return reply

    async def MultiGet(
        self, request: kv_pb2.MultiGetRequest, context: Any
    ) -> kv_pb2.MultiGetResponse:
        found = kv_pb2.GetResponse(found=True, value=self.value, version=1)
        return kv_pb2.MultiGetResponse(results=[kv_pb2.GetResult(get=found)] * len(request.gets))

    # Streams are not benchmarked: the echo server holds nothing, its streams are empty.
    async def List(
        self, request: kv_pb2.ListRequest, context: Any
    ) -> AsyncIterator[kv_pb2.ListResponse]:
        items: tuple[kv_pb2.ListResponse, ...] = ()
        for item in items:
            yield item

    async def ListNamespaces(
        self, request: kv_pb2.ListNamespacesRequest, context: Any
    ) -> kv_pb2.ListNamespacesResponse:
        return kv_pb2.ListNamespacesResponse()

    async def Subscribe(
        self, request: kv_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[kv_pb2.SubscribeResponse]:
        items: tuple[kv_pb2.SubscribeResponse, ...] = ()
        for item in items:
            yield item


class EchoServer:
    """The echo server on its own event loop in a thread (tests), or as the
    main loop of its own process (the benchmark; see main())."""

    def __init__(self, listen: str = "127.0.0.1:0", value_bytes: int = 100) -> None:
        self.listen = listen
        self.value_bytes = value_bytes
        self.endpoint = ""
        self._server: grpc.aio.Server | None = None

    async def start(self) -> str:
        self._server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(EchoKV(self.value_bytes), self._server)
        port = self._server.add_insecure_port(self.listen)
        await self._server.start()
        self.endpoint = f"{self.listen.rsplit(':', 1)[0]}:{port}"
        return self.endpoint

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1)

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[str]:
        """Serve from a background thread until the block ends."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="echo-server", daemon=True)
        thread.start()
        try:
            endpoint = asyncio.run_coroutine_threadsafe(self.start(), loop).result(30)
            yield endpoint
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


class ChildProcess:
    """A server process of ours: started with its output in a log file,
    stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


class EchoTarget:
    name = "echo"
    api = "shardlite"

    def __init__(self, base: Path, value_bytes: int = 100) -> None:
        self.base = base
        self.ready = base / "echo.ready"
        cmd = [
            sys.executable, "-m", "scripts.bench_targets", "echo",
            "--listen", "127.0.0.1:0", "--ready-file", str(self.ready),
            "--value-bytes", str(value_bytes),
        ]  # fmt: skip
        self.child = ChildProcess("echo", cmd, base / "echo.log")
        self.endpoint = ""

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        self.child.start()

        def ready() -> bool:
            self.child.check_running()
            return self.ready.exists() and bool(self.ready.read_text().strip())

        wait_until(ready, START_TIMEOUT, "the echo server to serve")
        self.endpoint = self.ready.read_text().strip()

    def stop(self) -> None:
        self.child.stop()

    def endpoints(self) -> list[str]:
        return [self.endpoint]

    def pids(self) -> dict[str, int]:
        return {"echo": self.child.pid}

    def describe(self) -> dict[str, Any]:
        return {"target": "echo", "processes": 1, "grpcio": grpc.__version__}


# -- shardlite ------------------------------------------------------------------------


class ShardliteTarget:
    api = "shardlite"

    def __init__(
        self, base: Path, nodes: int = 3, args: tuple[str, ...] = (), *, read_lease: bool = False
    ) -> None:
        self.name = "shardlite-lease" if read_lease else "shardlite"
        self.base = base
        if read_lease and "--read-lease" not in args:
            args = (*args, "--read-lease")
        self.read_lease = "--read-lease" in args
        self.cluster = LocalCluster(base / self.name, nodes, args=args)
        self.size = nodes
        self.leader = ""

    def start(self) -> None:
        try:
            self.cluster.start()
            self.leader = self.cluster.leader(timeout=START_TIMEOUT)
        except BaseException:
            self.cluster.stop()
            raise

    def stop(self) -> None:
        self.cluster.stop()

    def endpoints(self) -> list[str]:
        """The leader (asked again each run: clients write where writes go)."""
        self.leader = self.cluster.leader(timeout=START_TIMEOUT)
        return [self.cluster.addresses[self.leader]]

    def pids(self) -> dict[str, int]:
        return {name: node.pid for name, node in self.cluster.nodes.items() if node.running}

    def describe(self) -> dict[str, Any]:
        return {
            "target": "shardlite",
            "nodes": self.size,
            "leader": self.leader,
            "replicator": "raft" if self.size > 1 else "raft (single member)",
            "linearizable_reads": "leader lease (§6.4.1)"
            if self.read_lease
            else "ReadIndex (§6.4)",
        }


class ShardliteClientTarget:
    """The shardlite cluster through the AsyncClient (api "shardlite-client").
    Runs on the shardlite target's cluster when given one (then that target
    starts and stops it), else on a cluster of its own."""

    name = "shardlite-client"
    api = "shardlite-client"

    def __init__(self, cluster: ShardliteTarget, *, shared: bool) -> None:
        self.cluster = cluster
        self.shared = shared

    def start(self) -> None:
        if not self.shared:
            self.cluster.start()

    def stop(self) -> None:
        if not self.shared:
            self.cluster.stop()

    def endpoints(self) -> list[str]:
        return self.cluster.endpoints()

    def pids(self) -> dict[str, int]:
        return self.cluster.pids()

    def describe(self) -> dict[str, Any]:
        return {
            **self.cluster.describe(),
            "target": "shardlite-client",
            "client": "shardlite.AsyncClient, one per generator process",
            "cluster": "shared with the shardlite target" if self.shared else "its own",
        }


# -- etcd -----------------------------------------------------------------------------


def etcd_version(binary: str = "etcd") -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return out.strip()


def ensure_etcd(install: bool, say: Any = print) -> str:
    """The path of the etcd binary; with `install`, apt-get installs Debian's
    etcd-server when it is missing (and says so)."""
    found = shutil.which("etcd")
    if found:
        return found
    if not install:
        raise SystemExit("etcd not found: install Debian's etcd-server, or run without etcd")
    if os.geteuid() != 0:
        raise SystemExit(
            "etcd not found, and installing it needs root: apt-get install etcd-server"
        )
    say("etcd not found: installing Debian's etcd-server (apt-get update; apt-get install -y)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "etcd-server"]):
        subprocess.run(cmd, check=True, timeout=600, env=env)
    found = shutil.which("etcd")
    if not found:
        raise SystemExit("apt-get installed etcd-server but no etcd binary is on PATH")
    say(f"installed {found} (etcd {etcd_version(found)})")
    return found


class EtcdTarget:
    """N etcd members on loopback, bootstrapped together. Flags are etcd's
    defaults but for names, URLs and the data directory: fsync of the WAL on
    every commit, heartbeat 100 ms, election 1 s."""

    name = "etcd"
    api = "etcd"

    def __init__(self, base: Path, members: int = 3, binary: str = "etcd") -> None:
        self.base = base / "etcd"
        self.binary = binary
        ports = free_ports(2 * members)
        self.client_urls = {f"m{i + 1}": f"127.0.0.1:{ports[2 * i]}" for i in range(members)}
        peer_urls = {f"m{i + 1}": f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(members)}
        cluster = ",".join(f"{n}={u}" for n, u in peer_urls.items())
        token = f"bench-{os.getpid()}-{time.time_ns()}"
        self.members = {
            name: ChildProcess(
                name,
                self._command(name, peer_urls[name], cluster, token),
                self.base / f"{name}.log",
            )
            for name in self.client_urls
        }
        self.leader = ""
        self.version = ""

    def _command(self, name: str, peer_url: str, cluster: str, token: str) -> list[str]:
        client_url = f"http://{self.client_urls[name]}"
        cmd = [
            self.binary,
            "--name", name,
            "--data-dir", str(self.base / name),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
        ]  # fmt: skip
        return cmd

    def start(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            for member in self.members.values():
                member.start()
            self.leader = self._wait_leader()
        except BaseException:
            self.stop()
            raise

    def _status(self, name: str) -> etcd_pb2.StatusResponse:
        with grpc.insecure_channel(self.client_urls[name]) as channel:
            reply: etcd_pb2.StatusResponse = etcd_grpc.MaintenanceStub(channel).Status(
                etcd_pb2.StatusRequest(), timeout=2
            )
            return reply

    def _wait_leader(self) -> str:
        found: list[str] = []

        def agreed() -> bool:
            leaders, ids = set(), {}
            for name, member in self.members.items():
                member.check_running()
                try:
                    status = self._status(name)
                except grpc.RpcError:
                    return False
                leaders.add(status.leader)
                ids[status.header.member_id] = name
                self.version = status.version
            if len(leaders) == 1 and 0 not in leaders and leaders <= ids.keys():
                found[:] = [ids[leaders.pop()]]
                return True
            return False

        wait_until(agreed, START_TIMEOUT, "one etcd leader")
        return found[0]

    def stop(self) -> None:
        for member in self.members.values():
            with contextlib.suppress(Exception):
                member.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def endpoints(self) -> list[str]:
        self.leader = self._wait_leader()
        return [self.client_urls[self.leader]]

    def pids(self) -> dict[str, int]:
        return {name: m.pid for name, m in self.members.items() if m.process is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "target": "etcd",
            "members": len(self.members),
            "leader": self.leader,
            "version": self.version or etcd_version(self.binary),
        }


# -- seeding ----------------------------------------------------------------------------


async def prefill(api: str, endpoint: str, spec: LoadSpec, *, concurrency: int = 4) -> None:
    """Write every key once (in batches), so reads find values of the right size."""
    api = "shardlite" if api == "shardlite-client" else api  # the same cluster
    chunk = 500 if api == "shardlite" else 100  # etcd allows 128 ops per Txn
    value = b"p" * spec.value_bytes
    starts = iter(range(0, spec.keys, chunk))
    async with open_channel(endpoint) as channel:
        ops = DRIVERS[api](channel, spec)

        async def writer() -> None:
            for first in starts:  # shared iterator: each chunk written once
                keys = [key_name(k) for k in range(first, min(first + chunk, spec.keys))]
                await ops.batch(keys, value)

        await asyncio.gather(*(writer() for _ in range(concurrency)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo", help="serve the echo server until SIGTERM")
    echo.add_argument("--listen", default="127.0.0.1:0")
    echo.add_argument("--ready-file", type=Path, default=None)
    echo.add_argument("--value-bytes", type=int, default=100)
    args = p.parse_args()

    async def serve() -> None:
        server = EchoServer(args.listen, args.value_bytes)
        endpoint = await server.start()
        if args.ready_file is not None:
            partial = args.ready_file.with_suffix(".partial")
            partial.write_text(endpoint)
            partial.replace(args.ready_file)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        await server.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
