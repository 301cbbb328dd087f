"""One storage node: wires the replicator, the applier, the shards and the gRPC
server together, and takes them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import signal
from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node import rpc
from node.applier import Applier, read_applied_marker
from node.backup import restore
from node.cluster_service import ClusterService
from node.config import NodeConfig
from node.errors import ConditionFailedRemote, InvalidArgument, Unavailable
from node.faults import FaultService
from node.maintenance import MaintenanceService
from node.peer_service import PeerService
from node.service import KVService
from node.shards import ShardStore
from node.snapshots import ShardSnapshots
from proto import frame_pb2, kv_pb2, raft_pb2, raft_pb2_grpc
from replication.noop import NoopReplicator
from replication.raft.members import MemberInfo
from replication.raft.replicator import RaftReplicator, RaftSettings
from replication.raft.snapshots import StateMachine
from replication.raft.transport import GRPC_OPTIONS as PEER_GRPC_OPTIONS
from replication.replicator import Rejected, RejectReason, Replicator

log = logging.getLogger(__name__)

KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"]
MAINTENANCE_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["Maintenance"]
FORWARDED_BY = "shardlite-forwarded-by"
HOUSEKEEPING_INTERVAL = 1.0

ReplicatorFactory = Callable[[NodeConfig], Replicator]


def _default_replicator(
    config: NodeConfig, state_machine: StateMachine, restored_index: int
) -> Replicator:
    """Raft when the node has peers; the no-op replicator when it is alone."""
    if config.clustered:
        return RaftReplicator(
            RaftSettings(
                name=config.node_id,
                address=config.advertise or config.listen,
                directory=config.data_dir / "raft",
                peers=config.peers,
                tick_interval=config.raft_tick_ms / 1000,
                election_tick=config.election_ticks,
                propose_timeout=config.propose_timeout,
                read_timeout=config.propose_timeout,
                max_frame_bytes=config.max_request_bytes,
                applied=read_applied_marker(config.data_dir),
                snapshot_entries=config.snapshot_entries,
                catchup_entries=config.snapshot_catchup_entries,
                restore_index=restored_index,
                restore_dir=config.restore,
            ),
            state_machine,
        )
    return NoopReplicator(
        config.node_id,
        config.data_dir / "log",
        segment_bytes=config.log_segment_bytes,
        retain=config.log_retain,
        max_frame_bytes=config.max_request_bytes,
        first_index=restored_index + 1,
    )


class DataDirMismatch(Exception):
    """The data directory was written by a different kind of node."""


def check_data_dir_kind(config: NodeConfig) -> None:
    """A single node's data cannot silently become a cluster member's, nor the
    reverse: their logs number frames differently."""
    raft_dir = config.data_dir / "raft"
    frame_log = config.data_dir / "log"
    if not config.clustered and raft_dir.exists():
        raise DataDirMismatch(
            f"{config.data_dir} belongs to a cluster member: start it with --peers or --join"
        )
    if config.clustered and not raft_dir.exists() and any(frame_log.glob("*.seg")):
        raise DataDirMismatch(
            f"{config.data_dir} holds a single node's data: to make it a cluster, back it up "
            "(shardlite backup) and start the new cluster with --restore"
        )


def _version() -> str:
    try:
        return importlib.metadata.version("shardlite")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Node:
    def __init__(
        self, config: NodeConfig, replicator_factory: ReplicatorFactory | None = None
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
        self._peer_channels: dict[str, grpc.aio.Channel] = {}
        self.peer_service: PeerService | None = None
        self.advertise = config.advertise or config.listen

    async def start(self) -> int:
        """Recover, replay, then serve. Returns the bound port."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        restored = self._restore_once()
        if self._replicator_factory is None:
            check_data_dir_kind(config)
            self.replicator = _default_replicator(config, ShardSnapshots(self), restored)
        else:
            self.replicator = self._replicator_factory(config)
        marker = read_applied_marker(config.data_dir)
        if marker > self.replicator.status().last_index:
            # New frames would get indices the shards already count as applied
            # and be skipped: refuse rather than lose writes.
            await self.replicator.close()
            raise DataDirMismatch(
                f"{config.data_dir}: its shards were applied up to index {marker} but the "
                f"{self.replicator.status().kind} log ends at "
                f"{self.replicator.status().last_index}; this data directory belongs to "
                "another setup (single node vs cluster?)"
            )
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
            (
                rpc.generic_handler(KV_SERVICE, KVService(self), _message_types()),
                rpc.generic_handler(
                    MAINTENANCE_SERVICE, MaintenanceService(self), _message_types()
                ),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.raft is not None:
            self.peer_service = PeerService(self)
            raft_pb2_grpc.add_RaftServicer_to_server(self.peer_service, server)
            raft_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self), server)
            if config.fault_injection:
                raft_pb2_grpc.add_FaultsServicer_to_server(FaultService(self), server)
                log.warning("fault injection is enabled: never do this in production")
        reflection.enable_server_reflection(
            (
                KV_SERVICE.full_name,
                MAINTENANCE_SERVICE.full_name,
                raft_pb2.DESCRIPTOR.services_by_name["Raft"].full_name,
                raft_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.port = server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")
        await server.start()
        self.server = server
        for service in ("", KV_SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        if config.join and self.raft is not None and not self.raft.member_list():
            await self._join(config.join)
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

    def _restore_once(self) -> int:
        """--restore: fill the empty data directory from the backup, the first
        time only (a restart finds it restored and goes on normally)."""
        config = self.config
        marker = config.data_dir / "restored_from.json"
        if config.restore is None:
            return 0
        if marker.exists():
            return int(json.loads(marker.read_text())["index"])
        index = restore(config.restore, config.data_dir)
        log.info("restored %s at index %d into %s", config.restore, index, config.data_dir)
        return index

    # -- the write and read paths ------------------------------------------

    @property
    def raft(self) -> RaftReplicator | None:
        replicator = getattr(self, "replicator", None)
        return replicator if isinstance(replicator, RaftReplicator) else None

    async def write(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        """Commit `frame` (here if this node leads, else through the leader), wait
        until it is applied on this node, and return what applying said.

        During an election the write waits up to leader_wait for a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leader_wait
        while True:
            try:
                return await self.write_here(frame)
            except Rejected as rejected:
                if rejected.reason is not RejectReason.NOT_LEADER or self.raft is None:
                    raise
                hint = rejected.leader_hint
            if hint and hint != self.advertise:
                result = await self._forward(hint, frame, deadline - loop.time())
                if result is not None:
                    # Answer only once this node has applied it too (read-your-writes).
                    await asyncio.wait_for(
                        self.applier.wait_applied(result.index),
                        max(deadline - loop.time(), self.config.propose_timeout),
                    )
                    return result
            if loop.time() >= deadline:
                raise Unavailable(
                    f"no leader within {self.config.leader_wait}s (election in progress?); "
                    "retry shortly",
                    leader_hint=hint,
                )
            await self._leader_settles(deadline)

    async def write_here(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        """Propose on this node's replicator (raises Rejected if it is not the leader)."""
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

    async def _forward(
        self, address: str, frame: frame_pb2.Frame, budget: float
    ) -> frame_pb2.FrameResult | None:
        """Run the write on the leader at `address`. None: it certainly did not
        happen there (look for the leader again); raises when the outcome is known
        to be a failure or is unknown."""
        raft = self.raft
        if raft is not None and raft.driver.leader in raft.driver.transport.blocked:
            return None  # partitioned from the leader (fault injection)
        stub = raft_pb2_grpc.RaftStub(self.peer_channel(address))
        try:
            reply = await stub.Forward(
                raft_pb2.ForwardRequest(frame=frame),
                timeout=max(budget, 1.0),
                metadata=((FORWARDED_BY, self.config.node_id),),
            )
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE and (
                "not leader" in details or "connect" in details.lower()
            ):
                return None  # refused before proposing, or never reached
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise ConditionFailedRemote(details) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(details) from None
            raise Unavailable(
                f"forwarding to the leader at {address} failed ({code.name}: {details}); "
                "the write's outcome is unknown"
            ) from None
        result: frame_pb2.FrameResult = reply.result
        return result

    def peer_channel(self, address: str) -> grpc.aio.Channel:
        channel = self._peer_channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=PEER_GRPC_OPTIONS)
            self._peer_channels[address] = channel
        return channel

    async def _join(self, address: str, within: float = 60.0) -> None:
        """Ask the cluster at `address` to add this node (as a learner, promoted
        once caught up); learn every member's address from the answer."""
        raft = self.raft
        assert raft is not None
        stub = raft_pb2_grpc.ClusterStub(self.peer_channel(address))
        request = raft_pb2.AddMemberRequest(name=self.config.node_id, address=self.advertise)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                reply = await stub.AddMember(request, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                if loop.time() >= deadline or exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    raise RuntimeError(
                        f"joining the cluster at {address} failed: {exc.code().name}: "
                        f"{exc.details()}"
                    ) from None
                log.info("join via %s not yet possible (%s); retrying", address, exc.details())
                await asyncio.sleep(0.5)
        for member in reply.members:
            raft.members.add(MemberInfo(member.name, member.address))
        log.info("joined the cluster via %s: %s", address, ", ".join(m.name for m in reply.members))

    async def _leader_settles(self, deadline: float) -> None:
        """Wait for the leader to change, at most until `deadline` and at most a
        quarter second (then the caller looks again)."""
        raft = self.raft
        remaining = deadline - asyncio.get_running_loop().time()
        if raft is None or remaining <= 0:
            await asyncio.sleep(min(max(remaining, 0), 0.05))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(raft.driver.leader_changed.wait(), min(remaining, 0.25))

    async def wait_readable(self, consistency: int) -> None:
        """LINEARIZABLE: wait until this node applied everything committed before
        the read began (ReadIndex, dissertation §6.4). SERIALIZABLE: no wait."""
        if consistency != kv_pb2.LINEARIZABLE or self.config.unsafe_stale_reads:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leader_wait
        while True:
            if self.closing:
                raise Unavailable("node is shutting down")
            try:
                index = await self.replicator.read_barrier()
                break
            except Rejected as rejected:
                if rejected.reason is not RejectReason.NOT_LEADER or loop.time() >= deadline:
                    raise Unavailable(
                        f"cannot confirm a linearizable read: {rejected}; retry, or read "
                        "with SERIALIZABLE consistency",
                        leader_hint=rejected.leader_hint,
                    ) from None
            await self._leader_settles(deadline)
        await self.applier.wait_applied(index)

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
        if self.peer_service is not None:
            self.peer_service.close()
        # Closing the replicator ends every Subscribe stream and the applier's
        # own subscription once it has delivered everything durable.
        # A node that failed while starting has only some of its parts.
        if hasattr(self, "replicator"):
            await self.replicator.close()
        if server_stopped is not None:
            await server_stopped
        if hasattr(self, "applier"):
            await self.applier.close()
        await asyncio.to_thread(self.store.close_all)
        for channel in self._peer_channels.values():
            await channel.close(None)
        applied = self.applier.applied_index if hasattr(self, "applier") else 0
        log.info("node %s stopped at applied index %d", self.config.node_id, applied)
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
