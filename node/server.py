"""One storage node: wires the replicator, the applier, the shards, the
request paths (node/paths.py) and the gRPC server together; housekeeping;
takes them down in order, and fail-stops on a fatal fault."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shardlite.node import auth, envelope, logs, reflection, rpc, stack_dump
from shardlite.node.admission import Admission
from shardlite.node.applier import Applier, read_applied_marker
from shardlite.node.backup import (
    Restored,
    discard_restore_copy,
    restore,
    restored,
    unfinished_restore,
)
from shardlite.node.cluster_service import ClusterService
from shardlite.node.config import NodeConfig
from shardlite.node.faults import FaultService
from shardlite.node.lifecycle import Lifecycle
from shardlite.node.maintenance import MaintenanceService, remove_leftovers
from shardlite.node.metrics import MetricsServer, NodeMetrics, Sample
from shardlite.node.paths import Paths
from shardlite.node.peer_service import PeerService
from shardlite.node.peers import PeerChannels
from shardlite.node.service import KVService
from shardlite.node.shards import ShardStore
from shardlite.node.snapshots import ShardSnapshots
from shardlite.node.tls_config import client_tls, peer_tls
from shardlite.replication.noop import NoopReplicator
from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.raft.snapshots import StateMachine
from shardlite.replication.raft.transport import SERVER_GRPC_OPTIONS as PEER_SERVER_GRPC_OPTIONS
from shardlite.replication.raft.transport import host_of
from shardlite.replication.replicator import (
    Membership,
    Observable,
    Partitioning,
    PeerEndpoint,
    Replicator,
)
from shardlite.replication.tls import TlsFiles
from shardlite.v1 import kv_pb2, raft_pb2, raft_pb2_grpc

log = logging.getLogger(__name__)

KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"]
MAINTENANCE_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["Maintenance"]
RAFT_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["Raft"]
# gRPC core's queue of calls not yet taken by the server (pending_calls_bound).
PENDING_CALLS_PER_ADMITTED = 4
PENDING_CALLS_FLOOR = 16_384
CLUSTER_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["Cluster"]
FAULTS_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["Faults"]
HOUSEKEEPING_INTERVAL = 1.0
# After a fatal fault the node answers UNAVAILABLE with the reason this long
# (health NOT_SERVING), so clients and probes learn why, then it exits.
FATAL_LINGER = 1.0

ReplicatorFactory = Callable[[NodeConfig], Replicator]
Service = tuple[ServiceDescriptor, object]


def build_replicator(
    config: NodeConfig,
    state_machine: StateMachine,
    restored_index: int,
    on_fatal: Callable[[BaseException], None] | None = None,
    peer_tls: TlsFiles | None = None,
    restore_dir: Path | None = None,
) -> Replicator:
    """Raft when the node has peers; the no-op replicator when it is alone."""
    if config.clustered:
        return RaftReplicator(
            RaftSettings(
                name=config.node_id,
                address=config.peer_address,
                client_address=config.client_address,
                # The TCP message stream listens where the peer service does
                # (":port": everywhere).
                message_host=host_of(config.peer_listen or config.listen) or "0.0.0.0",
                message_port=config.peer_stream_port,
                tls=peer_tls,
                directory=config.data_dir / "raft",
                peers=config.peers,
                tick_interval=config.raft_tick_ms / 1000,
                election_tick=config.election_ticks,
                read_lease=config.read_lease,
                propose_timeout=config.propose_timeout,
                read_timeout=config.propose_timeout,
                max_frame_bytes=config.max_request_bytes,
                applied=read_applied_marker(config.data_dir),
                snapshot_entries=config.snapshot_entries,
                catchup_entries=config.snapshot_catchup_entries,
                restore_index=restored_index,
                restore_dir=restore_dir,
                features=frozenset({envelope.FEATURE}),
                **_pending_bound("max_pending_proposals", config),
            ),
            state_machine,
            on_fatal=on_fatal,
        )
    return NoopReplicator(
        config.node_id,
        config.data_dir / "log",
        segment_bytes=config.log_segment_bytes,
        retain=config.log_retain,
        max_frame_bytes=config.max_request_bytes,
        first_index=restored_index + 1,
        on_fatal=on_fatal,
        **_pending_bound("max_pending", config),
    )


def _pending_bound(name: str, config: NodeConfig) -> dict[str, int]:
    """--max-pending-proposals under the replicator's own name, if it was given."""
    bound = config.max_pending_proposals
    return {} if bound is None else {name: bound}


def pending_calls_bound(config: NodeConfig) -> int:
    """Calls gRPC core may queue before the server takes them: far above the
    calls admitted at once, so that a flood is refused by admission with a
    clean RESOURCE_EXHAUSTED, not cancelled by the queue; still finite."""
    return PENDING_CALLS_PER_ADMITTED * config.max_concurrent_requests + PENDING_CALLS_FLOOR


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


class FatalError(Exception):
    """The node stopped after a fault of the machine (fail-stop)."""


class Node:
    def __init__(
        self, config: NodeConfig, replicator_factory: ReplicatorFactory | None = None
    ) -> None:
        self.config = config
        self.version = _version()
        self._replicator_factory = replicator_factory
        self.lifecycle = Lifecycle()
        self.admission = Admission(self.lifecycle, config.max_concurrent_requests)
        self.store = ShardStore(config.data_dir, config.shard_cache_size, config.shard_idle_seconds)
        self.health = health_aio.HealthServicer()
        self.client_tls = client_tls(config)
        self.peer_tls = peer_tls(config)
        self.channels = PeerChannels(self.peer_tls)
        self.server: grpc.aio.Server | None = None
        self.peer_server: grpc.aio.Server | None = None
        self.port = 0
        self.peer_port = 0
        self.replicator: Replicator | None = None
        self.applier: Applier | None = None
        self.peer_service: PeerService | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._health_down: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.metrics = NodeMetrics()
        self.metrics_server: MetricsServer | None = None
        self.kv: KVService | None = None
        # Read now: a tokens file that does not parse stops the node before it serves.
        self.authorizer = (
            auth.Authorizer(auth.TokenFile(config.auth_tokens))
            if config.auth_tokens is not None
            else None
        )

    @property
    def closing(self) -> bool:
        return self.lifecycle.closing

    async def start(self) -> int:
        """Recover, replay, then serve. Returns the bound port."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        restored = self._restore_once()
        remove_leftovers(config.data_dir)
        snapshots = ShardSnapshots(self.store)
        if self._replicator_factory is None:
            check_data_dir_kind(config)
            replicator = build_replicator(
                config,
                snapshots,
                restored.index,
                self.fail_stop,
                self.peer_tls,
                restored.directory,
            )
        else:
            replicator = self._replicator_factory(config)
        if restored.directory is not None:
            # The replicator has its own copy now (a cluster's founding snapshot).
            discard_restore_copy(config.data_dir)
        self.replicator = replicator
        if isinstance(replicator, Observable):
            replicator.observe(self.metrics)
        self._warn_test_only_modes()
        marker = read_applied_marker(config.data_dir)
        if marker > replicator.status().last_index:
            # New frames would get indices the shards already count as applied
            # and be skipped: refuse rather than lose writes.
            await replicator.close()
            raise DataDirMismatch(
                f"{config.data_dir}: its shards were applied up to index {marker} but the "
                f"{replicator.status().kind} log ends at "
                f"{replicator.status().last_index}; this data directory belongs to "
                "another setup (single node vs cluster?)"
            )
        applier = Applier(
            self.store,
            replicator,
            config.data_dir,
            on_fatal=self.fail_stop,
        )
        self.applier = snapshots.applier = applier
        applier.on_sync = lambda seconds: self.metrics.fsync("shards", seconds)
        applier.start()
        # Replay what the log has beyond the shards before serving anything.
        await applier.wait_applied(replicator.status().commit_index)

        paths = Paths(config, replicator, applier, self.lifecycle, self.channels)
        client_services, peer_services = self._services(paths, replicator, applier)
        if config.peer_listen and peer_services:
            self.peer_server, self.peer_port = await self._serve(
                config.peer_listen, peer_services, reflect=False, tls=self.peer_tls, mutual=True
            )
        else:
            if peer_services:
                log.warning(
                    "the Raft peer service shares the client port %s: anyone who can reach it "
                    "can talk to the cluster as a member; give peers their own port with "
                    "--peer-listen and firewall it",
                    config.listen,
                )
            client_services += [s for s in peer_services if s[0] is RAFT_SERVICE]
        self.server, self.port = await self._serve(
            config.listen,
            client_services,
            reflect=True,
            tls=self.client_tls,
            mutual=config.client_cert_auth,
            # Tokens guard the client listener; the peer listener is kept apart
            # by its own address and mutual TLS, not by tokens.
            authorize=self.authorizer.authorize if self.authorizer is not None else None,
        )
        self._serve_metrics()
        for service in ("", KV_SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        if config.join and isinstance(replicator, Membership) and not replicator.member_list():
            await self._join(replicator, config.join)
        host = config.listen.rsplit(":", 1)[0]
        address = f"{host}:{self.port}"
        log.info(
            "node %s serving clients on %s%s (replicator %s, applied index %d, data %s)",
            config.node_id,
            address,
            f", peers on {config.peer_listen.rsplit(':', 1)[0]}:{self.peer_port}"
            if self.peer_server is not None
            else "",
            replicator.status().kind,
            applier.applied_index,
            config.data_dir,
        )
        if config.ready_file is not None:
            tmp = config.ready_file.with_suffix(".tmp")
            tmp.write_text(address + "\n")
            tmp.replace(config.ready_file)
        return self.port

    def _warn_test_only_modes(self) -> None:
        if self.config.unsafe_stale_reads:
            log.warning(
                "UNSAFE: --unsafe-stale-reads: LINEARIZABLE reads are served from local "
                "state and may be stale (a chaos-checker self-test); never do this in production"
            )
        if self.config.fault_injection:
            log.warning("fault injection is enabled: never do this in production")

    def _services(
        self, paths: Paths, replicator: Replicator, applier: Applier
    ) -> tuple[list[Service], list[Service]]:
        """What the client listener serves, and what the peer listener does:
        the Raft service, and the Cluster service for admin calls that members
        relay to the leader (and for nodes joining)."""
        config = self.config
        kv = self.kv = KVService(config, paths, self.store, replicator, applier, self.version)
        maintenance = MaintenanceService(
            config.data_dir, applier, self.store, config.max_concurrent_backups, config.node_id
        )
        cluster = ClusterService(replicator, self.channels)
        client: list[Service] = [
            (KV_SERVICE, kv),
            (MAINTENANCE_SERVICE, maintenance),
            (CLUSTER_SERVICE, cluster),
        ]
        peer: list[Service] = []
        partitioning = replicator if isinstance(replicator, Partitioning) else None
        if isinstance(replicator, PeerEndpoint):
            self.peer_service = PeerService(replicator.peer_servicer(), paths, partitioning)
            peer = [(RAFT_SERVICE, self.peer_service), (CLUSTER_SERVICE, cluster)]
        if config.fault_injection and partitioning is not None:
            client.append((FAULTS_SERVICE, FaultService(partitioning)))
        return client, peer

    async def _serve(
        self,
        address: str,
        services: list[Service],
        reflect: bool,
        tls: TlsFiles | None,
        mutual: bool,
        authorize: rpc.Authorize | None = None,
    ) -> tuple[grpc.aio.Server, int]:
        """A started gRPC server on `address` with `services`, each through
        node/rpc.py's error boundary; and its bound port."""
        config = self.config
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes),
                ("grpc.max_send_message_length", config.max_request_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", config.max_streams_per_connection),
                # gRPC core holds calls the server has not picked up yet in a
                # queue that, past 1,000 (its default), cancels them at random:
                # the client sees CANCELLED for a call nobody cancelled. Under
                # load that queue is most of the calls in flight, so it must not
                # shed before admission does (RESOURCE_EXHAUSTED, node/admission.py).
                ("grpc.server.max_pending_requests", pending_calls_bound(config)),
                ("grpc.server.max_pending_requests_hard_limit", pending_calls_bound(config)),
                *PEER_SERVER_GRPC_OPTIONS,  # accept the peers' keepalive pings
            ]
        )
        # Once fail-stopped, every client request answers UNAVAILABLE with the
        # reason; past the limit, RESOURCE_EXHAUSTED. The Raft service stays
        # open: its Forward answers a structured rejection, and the replicator
        # drops peer messages itself.
        admit = self.admission
        observe = self.metrics.rpc
        stall = {KV_SERVICE: config.stream_stall_seconds}
        server.add_generic_rpc_handlers(
            tuple(
                rpc.generic_handler(service, servicer, observe=observe)
                if service is RAFT_SERVICE
                else rpc.generic_handler(
                    service,
                    servicer,
                    admit,
                    observe=observe,
                    authorize=authorize,
                    stall_seconds=stall.get(service),
                )
                for service, servicer in services
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if reflect:
            reflection.enable(
                [service.full_name for service, _ in services] + [health.SERVICE_NAME], server
            )
        port = (
            server.add_secure_port(address, tls.server_credentials(require_client_cert=mutual))
            if tls is not None
            else server.add_insecure_port(address)
        )
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        return server, port

    # -- metrics ----------------------------------------------------------------

    def _serve_metrics(self) -> None:
        """Gauges read at each scrape; the HTTP endpoint if --metrics-listen."""
        self.metrics.watch(asyncio.get_running_loop(), self._sample)
        if self.config.metrics_listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics_listen)
            log.info(
                "metrics on http://%s:%d/metrics",
                self.metrics_server.host,
                self.metrics_server.port,
            )

    def _sample(self) -> Sample:
        """The node's state for a scrape (on the event loop)."""
        assert self.replicator is not None
        assert self.applier is not None
        status = self.replicator.status()
        observable = self.replicator if isinstance(self.replicator, Observable) else None
        return Sample(
            node=self.config.node_id,
            version=self.version,
            replicator=status.kind,
            role=status.role,
            term=status.term,
            leader=status.leader,
            commit_index=status.commit_index,
            applied_index=self.applier.applied_index,
            log_first_index=status.first_index,
            log_last_index=status.last_index,
            log_bytes=observable.log_bytes() if observable else 0,
            open_shards=self.store.open_count,
            subscribers=self.kv.subscribers if self.kv is not None else 0,
            peers=observable.peer_connections() if observable else {},
        )

    @property
    def term(self) -> int:
        """The current Raft term (0 before the replicator exists, and alone)."""
        return self.replicator.status().term if self.replicator is not None else 0

    def _restore_once(self) -> Restored:
        """--restore: fill the empty data directory from the backup, the first
        time only (a restart, or a directory `shardlite restore` prepared,
        finds it restored and goes on normally; one a crash left half done
        is finished first)."""
        config = self.config
        done = restored(config.data_dir)
        source = config.restore or unfinished_restore(config.data_dir)
        if done is not None or source is None:
            return done or Restored(0, None)
        result = restore(source, config.data_dir)
        log.info("restored %s at index %d into %s", source, result.index, config.data_dir)
        return result

    async def _join(self, membership: Membership, address: str, within: float = 60.0) -> None:
        """Ask the cluster at `address` to add this node (as a learner, promoted
        once caught up); learn every member's address from the answer."""
        stub = raft_pb2_grpc.ClusterStub(self.channels.get(address))
        request = raft_pb2.AddMemberRequest(
            name=self.config.node_id, address=self.config.peer_address
        )
        # Needed when the member's Cluster service is on its client port (no
        # --peer-listen there): that port takes tokens.
        metadata = (
            ((auth.METADATA_KEY, f"{auth.SCHEME} {self.config.join_token}"),)
            if self.config.join_token
            else ()
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                reply = await stub.AddMember(request, timeout=10, metadata=metadata)
                break
            except grpc.aio.AioRpcError as exc:
                if loop.time() >= deadline or exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    raise RuntimeError(
                        f"joining the cluster at {address} failed: {exc.code().name}: "
                        f"{exc.details()}"
                    ) from None
                log.info("join via %s not yet possible (%s); retrying", address, exc.details())
                await asyncio.sleep(0.5)
        for member in reply.members:
            membership.remember_member(member.name, member.address)
        log.info("joined the cluster via %s: %s", address, ", ".join(m.name for m in reply.members))

    # -- fail-stop ------------------------------------------------------------

    def fail_stop(self, reason: BaseException | str) -> None:
        """A fault of the machine (fsync failed, the Raft driver or the applier
        died): stop serving at once. Health turns NOT_SERVING, every waiting and
        every new request answers UNAVAILABLE with the reason; `serve` then shuts
        the node down and the process exits non-zero for its supervisor."""
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        if not self.lifecycle.fail(text):
            return
        log.critical("node %s fail-stops: %s", self.config.node_id, text)
        # on_fatal is a plain callback: the health change runs as a task, held
        # here so it is not collected before it ran (the loop keeps weak refs).
        self._health_down = asyncio.get_running_loop().create_task(self._not_serving())

    async def _not_serving(self) -> None:
        for service in ("", KV_SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def wait_fatal(self) -> str:
        return await self.lifecycle.wait_failed()

    # -- background -----------------------------------------------------------

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            assert self.applier is not None
            try:
                self.applier.maybe_write_marker()
                await asyncio.to_thread(self.store.evict_idle)
            except Exception:
                log.exception("housekeeping failed")

    # -- shutdown -------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Health to NOT_SERVING, let in-flight requests finish, then close the
        replicator (it writes what it accepted), drain the applier, close shards."""
        if self.lifecycle.closing:
            await self._stopped.wait()
            return
        self.lifecycle.closing = True
        grace = self.config.shutdown_grace if grace is None else grace
        log.info("node %s shutting down (grace %.1fs)", self.config.node_id, grace)
        await self.health.enter_graceful_shutdown()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        servers = [s for s in (self.server, self.peer_server) if s is not None]
        server_stopped = (
            asyncio.get_running_loop().create_task(_stop_all(servers, grace)) if servers else None
        )
        # Writes already proposed finish; new ones are refused (closing is set).
        await self.lifecycle.writes_drained(grace)
        if self.peer_service is not None:
            self.peer_service.close()
        # Closing the replicator ends every Subscribe stream and the applier's
        # own subscription once it has delivered everything durable.
        # A node that failed while starting has only some of its parts.
        if self.replicator is not None:
            await self.replicator.close()
        if server_stopped is not None:
            await server_stopped
        if self.applier is not None:
            await self.applier.close()
        await asyncio.to_thread(self.store.close_all)
        await self.channels.close()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        applied = self.applier.applied_index if self.applier is not None else 0
        log.info("node %s stopped at applied index %d", self.config.node_id, applied)
        self._stopped.set()


async def _stop_all(servers: list[grpc.aio.Server], grace: float) -> None:
    await asyncio.gather(*(server.stop(grace) for server in servers))


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down gracefully. After
    a fatal fault, shut it down and raise FatalError (the process exits non-zero)."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stack_dump.install(loop)
    fatal: str | None = None
    logs.set_term_source(lambda: node.term)  # every line this process writes
    try:
        await node.start()
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(node.wait_fatal())
        try:
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            failing.cancel()
        fatal = node.lifecycle.fatal
        if fatal is not None:
            await asyncio.sleep(FATAL_LINGER)  # answer with the reason a moment
    finally:
        fatal = fatal or node.lifecycle.fatal
        await node.stop(grace=1.0 if fatal is not None else None)
        stack_dump.uninstall(loop)
    if fatal is not None:
        raise FatalError(fatal)
