"""Prometheus metrics of one node, on their own HTTP port (--metrics-listen).

Each node has its own CollectorRegistry (tests run several nodes in one
process). Counters and histograms are updated where their event happens:
every RPC in node/rpc.py, and the replication layer's events through the
Observer interface (replication/observer.py) that NodeMetrics implements.
Gauges -- role, term, indices, apply lag, log size, open shards, peer
links, subscribers -- are read from the node when Prometheus scrapes, on the
node's own event loop, so a scrape never sees state half-changed. The
series and their meaning: docs/operations.md, "Metrics".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardlite.replication.observer import Observer, ReadIndexVia
from shardlite.replication.replicator import RejectReason

log = logging.getLogger(__name__)

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FSYNC_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
)  # fmt: skip
SNAPSHOT_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
SNAPSHOT_BYTES = tuple(float(4096 * 4**i) for i in range(12))  # 4 KiB .. 16 GiB
ROLES = ("follower", "pre-candidate", "candidate", "leader")
# A scrape waits this long for the event loop to read the node's state.
SAMPLE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Sample:
    """The node's state as one scrape reads it."""

    node: str
    version: str
    replicator: str
    role: str
    term: int
    leader: str
    commit_index: int
    applied_index: int
    log_first_index: int
    log_last_index: int
    log_bytes: int
    open_shards: int
    subscribers: int
    peers: dict[str, bool] = field(default_factory=dict)


class NodeMetrics(Observer):
    """Every series of one node, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "shardlite_rpc_requests",
            "RPCs served, by service, method and status code",
            ["service", "method", "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "shardlite_rpc_duration_seconds",
            "Time from a request's arrival to its status (a stream: its whole life)",
            ["service", "method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.proposals = Counter(
            "shardlite_proposals", "Frames offered to the log on this node", registry=r
        )
        self.proposals_committed = Counter(
            "shardlite_proposals_committed",
            "Frames proposed on this node that committed",
            registry=r,
        )
        self.proposals_rejected = Counter(
            "shardlite_proposals_rejected",
            "Frames proposed on this node that were refused (or whose outcome is unknown)",
            ["reason"],
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "shardlite_fsync_duration_seconds",
            "fsync latency: raft_wal (Raft log), frame_log (single node's log), "
            "shards (the shards written since the last applied marker)",
            ["file"],
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self.read_indexes = Counter(
            "shardlite_read_index",
            "LINEARIZABLE reads' read indexes obtained here, by how: lease or round",
            ["via"],
            registry=r,
        )
        self._read_index_via = {via: self.read_indexes.labels(via) for via in ("lease", "round")}
        self.elections_started = Counter(
            "shardlite_raft_elections_started", "Elections this node started", registry=r
        )
        self.elections = Counter(
            "shardlite_raft_elections",
            "Elections this node ran that ended, by result (won, lost)",
            ["result"],
            registry=r,
        )
        self.leader_changes = Counter(
            "shardlite_raft_leader_changes", "Times this node saw a new leader", registry=r
        )
        self.membership_changes = Counter(
            "shardlite_raft_membership_changes",
            "Committed membership changes, by kind (add-voter, add-learner, remove)",
            ["change"],
            registry=r,
        )
        self.snapshots = Counter(
            "shardlite_snapshots",
            "Snapshots taken here or installed from a leader",
            ["kind"],
            registry=r,
        )
        self.snapshot_seconds = Histogram(
            "shardlite_snapshot_duration_seconds",
            "Time to take (copy, seal, compact the log) or install a snapshot",
            ["kind"],
            buckets=SNAPSHOT_SECONDS,
            registry=r,
        )
        self.snapshot_bytes = Histogram(
            "shardlite_snapshot_size_bytes",
            "Bytes of the snapshot's files",
            ["kind"],
            buckets=SNAPSHOT_BYTES,
            registry=r,
        )
        ProcessCollector(registry=r)
        self._rpc_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    # -- RPCs (node/rpc.py) -------------------------------------------------

    def rpc(self, service: str, method: str, code: str, seconds: float) -> None:
        key = (service, method, code)
        children = self._rpc_children.get(key)
        if children is None:
            children = self._rpc_children[key] = (
                self.rpc_requests.labels(*key),
                self.rpc_seconds.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)

    # -- replication events (replication/observer.py) -----------------------

    def fsync(self, file: str, seconds: float) -> None:
        self.fsync_seconds.labels(file).observe(seconds)

    def proposed(self, count: int) -> None:
        self.proposals.inc(count)

    def committed(self, count: int) -> None:
        self.proposals_committed.inc(count)

    def rejected(self, reason: RejectReason, count: int = 1) -> None:
        self.proposals_rejected.labels(reason.name.lower()).inc(count)

    def read_index(self, via: ReadIndexVia) -> None:
        self._read_index_via[via].inc()

    def election_started(self, term: int) -> None:
        self.elections_started.inc()

    def election_ended(self, term: int, won: bool) -> None:
        self.elections.labels("won" if won else "lost").inc()

    def leader_changed(self, leader: str, term: int) -> None:
        self.leader_changes.inc()

    def membership_changed(self, change: str, member: str, index: int) -> None:
        self.membership_changes.labels(change).inc()

    def snapshot(self, kind: str, index: int, size: int, seconds: float) -> None:
        self.snapshots.labels(kind).inc()
        self.snapshot_seconds.labels(kind).observe(seconds)
        self.snapshot_bytes.labels(kind).observe(size)

    # -- gauges, read at scrape time ----------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, read: Callable[[], Sample]) -> None:
        """Serve the gauges from `read()`, run on `loop` at every scrape."""
        self.registry.register(_StateCollector(loop, read))


class _StateCollector(Collector):
    def __init__(self, loop: asyncio.AbstractEventLoop, read: Callable[[], Sample]) -> None:
        self.loop = loop
        self.read = read

    def _sample(self) -> Sample | None:
        if self.loop.is_closed():
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return self.read()
        future: concurrent.futures.Future[Sample] = concurrent.futures.Future()

        def read_on_loop() -> None:
            try:
                future.set_result(self.read())
            except Exception as exc:
                future.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(read_on_loop)
            return future.result(SAMPLE_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None  # the loop is gone or stuck: no gauges this time
        except Exception:
            log.exception("reading the node's state for a scrape failed")
            return None

    def collect(self) -> Iterator[Metric]:
        s = self._sample()
        if s is None:
            return
        info = GaugeMetricFamily(
            "shardlite_node_info",
            "Always 1: the node's id, version and replicator",
            labels=["node", "version", "replicator"],
        )
        info.add_metric([s.node, s.version, s.replicator], 1)
        yield info
        role = GaugeMetricFamily(
            "shardlite_raft_role",
            "1 for the node's current role, 0 for the others",
            labels=["role"],
        )
        for name in ROLES:
            role.add_metric([name], 1 if s.role == name else 0)
        yield role
        yield _gauge("shardlite_raft_term", "The node's current Raft term", s.term)
        yield _gauge(
            "shardlite_raft_has_leader", "1 while the node knows a leader", 1 if s.leader else 0
        )
        yield _gauge(
            "shardlite_commit_index",
            "Highest log index known committed (and published here)",
            s.commit_index,
        )
        yield _gauge(
            "shardlite_applied_index", "Highest log index applied to the shards", s.applied_index
        )
        yield _gauge(
            "shardlite_apply_lag_entries",
            "Committed entries not yet applied here (commit index - applied index)",
            max(s.commit_index - s.applied_index, 0),
        )
        yield _gauge(
            "shardlite_log_entries",
            "Entries the log retains (first to last index)",
            max(s.log_last_index - s.log_first_index + 1, 0),
        )
        yield _gauge("shardlite_log_last_index", "Last index in the log", s.log_last_index)
        yield _gauge("shardlite_log_bytes", "Bytes of the log on disk", s.log_bytes)
        yield _gauge("shardlite_open_shards", "SQLite shards open now", s.open_shards)
        yield _gauge("shardlite_subscribers", "Subscribe streams open now", s.subscribers)
        peers = GaugeMetricFamily(
            "shardlite_peer_connected",
            "1 while this node's message stream to the peer is open",
            labels=["peer"],
        )
        for name, connected in sorted(s.peers.items()):
            peers.add_metric([name], 1 if connected else 0)
        yield peers


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class MetricsServer:
    """prometheus-client's HTTP server for one registry, on a thread; stopped
    with the node."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            self._server, self._thread = start_http_server(int(port), host, registry)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot serve metrics on {address}: {exc}") from exc
        self.port: int = self._server.server_port
        self.host = host

    def stop(self) -> None:
        server: WSGIServer = self._server
        server.shutdown()
        server.server_close()
        thread: threading.Thread = self._thread
        thread.join(5)
