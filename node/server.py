"""One storage node: wires the replicator, the applier, the shards and the gRPC
server together, and takes them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import signal
from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node import rpc
from node.applier import Applier
from node.config import NodeConfig
from node.errors import Unavailable
from node.service import KVService
from node.shards import ShardStore
from proto import frame_pb2, kv_pb2
from replication.noop import NoopReplicator
from replication.replicator import Replicator

log = logging.getLogger(__name__)

KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"]
HOUSEKEEPING_INTERVAL = 1.0

ReplicatorFactory = Callable[[NodeConfig], Replicator]


def _noop_replicator(config: NodeConfig) -> Replicator:
    return NoopReplicator(
        config.node_id,
        config.data_dir / "log",
        segment_bytes=config.log_segment_bytes,
        retain=config.log_retain,
        max_frame_bytes=config.max_request_bytes,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("shardlite")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Node:
    def __init__(
        self, config: NodeConfig, replicator_factory: ReplicatorFactory = _noop_replicator
    ) -> None:
        self.config = config
        self.version = _version()
        self.closing = False
        self._replicator_factory = replicator_factory
        self.store = ShardStore(config.data_dir, config.shard_cache_size, config.shard_idle_seconds)
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._inflight_writes = 0
        self._writes_drained = asyncio.Event()
        self._writes_drained.set()

    async def start(self) -> int:
        """Recover, replay, then serve. Returns the bound port."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.replicator = self._replicator_factory(config)
        self.applier = Applier(
            self.store, self.replicator, config.data_dir, config.request_retention
        )
        self.applier.start()
        # Replay what the log has beyond the shards before serving anything.
        await self.applier.wait_applied(self.replicator.status().commit_index)

        options = [
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", config.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(
            (rpc.generic_handler(KV_SERVICE, KVService(self), _message_types()),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (KV_SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")
        await server.start()
        self.server = server
        for service in ("", KV_SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        host = config.listen.rsplit(":", 1)[0]
        address = f"{host}:{self.port}"
        log.info(
            "node %s serving on %s (replicator %s, applied index %d, data %s)",
            config.node_id,
            address,
            self.replicator.status().kind,
            self.applier.applied_index,
            config.data_dir,
        )
        if config.ready_file is not None:
            tmp = config.ready_file.with_suffix(".tmp")
            tmp.write_text(address + "\n")
            tmp.replace(config.ready_file)
        return self.port

    # -- the write and read paths ------------------------------------------

    async def write(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        """Propose, wait until applied here, return what applying said."""
        if self.closing:
            raise Unavailable("node is shutting down")
        waiter = self.applier.register(frame.trace_id)
        self._inflight_writes += 1
        self._writes_drained.clear()
        try:
            await self.replicator.propose(frame)
            return await waiter
        finally:
            self.applier.unregister(frame.trace_id)
            self._inflight_writes -= 1
            if self._inflight_writes == 0:
                self._writes_drained.set()

    async def wait_readable(self, consistency: int) -> None:
        if consistency == kv_pb2.LINEARIZABLE:
            if self.closing:
                raise Unavailable("node is shutting down")
            await self.applier.wait_applied(await self.replicator.read_barrier())

    # -- background ---------------------------------------------------------

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self.applier.maybe_write_marker()
                await asyncio.to_thread(self.store.evict_idle)
            except Exception:
                log.exception("housekeeping failed")
            if self.applier.failed is not None:
                await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    # -- shutdown -----------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Health to NOT_SERVING, let in-flight requests finish, then close the
        replicator (it writes what it accepted), drain the applier, close shards."""
        if self.closing:
            await self._stopped.wait()
            return
        self.closing = True
        grace = self.config.shutdown_grace if grace is None else grace
        log.info("node %s shutting down (grace %.1fs)", self.config.node_id, grace)
        await self.health.enter_graceful_shutdown()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        server_stopped = (
            asyncio.get_running_loop().create_task(self.server.stop(grace))
            if self.server is not None
            else None
        )
        # Writes already proposed finish; new ones are refused (closing is set).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._writes_drained.wait(), timeout=grace)
        # Closing the replicator ends every Subscribe stream and the applier's
        # own subscription once it has delivered everything durable.
        await self.replicator.close()
        if server_stopped is not None:
            await server_stopped
        await self.applier.close()
        await asyncio.to_thread(self.store.close_all)
        log.info(
            "node %s stopped at applied index %d", self.config.node_id, self.applier.applied_index
        )
        self._stopped.set()


def _message_types() -> dict[str, type[Message]]:
    types: dict[str, type[Message]] = {}
    for module in (kv_pb2, frame_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            types[name] = getattr(module, name)
    return types


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down gracefully."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        await stop.wait()
    finally:
        await node.stop()
