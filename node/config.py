"""Node configuration: one dataclass, filled from flags or SHARDLITE_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NodeConfig:
    node_id: str = "n1"
    data_dir: Path = Path("./data/n1")
    listen: str = "127.0.0.1:7001"
    # Largest value a put may carry.
    max_value_bytes: int = 1 << 20
    # Largest request the gRPC server accepts (a Batch carries many values).
    max_request_bytes: int = 16 << 20
    # Open-shard cache: at most this many SQLite shards open at once ...
    shard_cache_size: int = 1024
    # ... and one idle this long is closed.
    shard_idle_seconds: float = 300.0
    # Frames kept in the log after they are applied, for Subscribe.
    log_retain: int = 100_000
    log_segment_bytes: int = 64 << 20
    # Client requests served at once (a stream counts until it ends); more are
    # refused with RESOURCE_EXHAUSTED. Health checks and peers do not count.
    max_concurrent_requests: int = 4096
    # Concurrent calls on one client connection (HTTP/2 streams): the client
    # waits for room beyond it, though at the edge gRPC refuses a few calls
    # (REFUSED_STREAM: UNAVAILABLE, never processed). Twice the requests
    # admitted at once, so that admission's clean RESOURCE_EXHAUSTED comes first.
    max_streams_per_connection: int = 8192
    # Backups running at once (each is a full copy of the shards on disk).
    max_concurrent_backups: int = 2
    # SIGTERM: how long in-flight requests get to finish.
    shutdown_grace: float = 10.0
    # Written with the bound address once the node serves (for scripts, tests).
    ready_file: Path | None = None
    # host:port of the Prometheus /metrics endpoint ("" = none).
    metrics_listen: str = ""
    log_format: str = "text"
    log_level: str = "INFO"
    # Raft. With no peers the node runs alone on the no-op replicator.
    # Static bootstrap: every founding member, this node included (name=host:port).
    peers: dict[str, str] = field(default_factory=dict)
    # Join an existing cluster through any member's address (host:port).
    join: str = ""
    # Serve the Faults service (partitions on demand) for tests and chaos runs.
    fault_injection: bool = False
    # DELIBERATELY BROKEN: answer LINEARIZABLE reads from local state. Exists so
    # the chaos checker can prove it catches stale reads. Never in production.
    unsafe_stale_reads: bool = False
    # Start a new node (or, with --peers, a new cluster) from a backup directory.
    restore: Path | None = None
    # The address clients use to reach this node (default: --listen).
    advertise: str = ""
    # The Raft peer service's own listener (host:port), so that peers can be
    # firewalled off from clients. "": peers are served on --listen too.
    peer_listen: str = ""
    # The address peers use to reach this node (default: --peer-listen).
    advertise_peer: str = ""
    # The TCP port of the Raft message stream, on the peer listener's host
    # (0: any free port; peers ask for it over the peer service).
    peer_stream_port: int = 0
    # TLS for clients (certificate, key, and the CA that signs client
    # certificates); client certificates are checked when required.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    client_cert_auth: bool = False
    # TLS between members: always mutual, the CA is the cluster's.
    peer_tls_cert: Path | None = None
    peer_tls_key: Path | None = None
    peer_tls_ca: Path | None = None
    raft_tick_ms: int = 100
    election_ticks: int = 10
    # LINEARIZABLE reads on the leader lease (dissertation §6.4.1): no heartbeat
    # round per read, but safe only while every member runs the same tick and
    # election timeout and no clock runs 10% slower than another's.
    read_lease: bool = False
    # As leader, pack a MultiWrite's frames into envelopes (node/envelope.py).
    # Also only while every member announces them (node/paths.py): off forces none.
    envelopes: bool = True
    # A write waits this long for a leader (during an election) before UNAVAILABLE.
    leader_wait: float = 5.0
    # A proposal or a read index not done in this time fails (outcome unknown).
    propose_timeout: float = 5.0
    # Raft §7: snapshot after this many applied entries; keep this many before it.
    snapshot_entries: int = 10_000
    snapshot_catchup_entries: int = 5_000
    # Proposals waiting to be durable (noop) or committed (Raft) on this node;
    # past it a write is refused RESOURCE_EXHAUSTED at once. None: the
    # replicator's default (noop 65,536, Raft 10,000).
    max_pending_proposals: int | None = None
    # Bearer tokens scoped to orgs (node/auth.py); None: no authentication.
    auth_tokens: Path | None = None
    # The admin token this node sends when it joins a cluster that has auth on.
    join_token: str = ""
    # A Subscribe (or List) stream whose reader takes no message this long is
    # ended RESOURCE_EXHAUSTED.
    stream_stall_seconds: float = 30.0

    @property
    def clustered(self) -> bool:
        return bool(self.peers or self.join)

    @property
    def client_address(self) -> str:
        return self.advertise or self.listen

    @property
    def peer_address(self) -> str:
        """This node's address in the Raft membership."""
        return self.advertise_peer or self.peer_listen or self.client_address
