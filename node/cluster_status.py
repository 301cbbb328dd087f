"""`shardlite status --cluster`: every member's own Status, side by side.

The node asked names the members (Cluster.Members, with each one's client
address; a follower may not know every member's, the leader does, so it is
asked too when needed); each member is then asked itself (KV.Status and
grpc.health), so a row shows what that member says, or why it could not be
reached. Lag is the
highest commit index any member reports minus the member's applied index.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shardlite.node.client import Client, ClientError, open_channel


@dataclass
class MemberRow:
    id: str
    address: str
    role: str = ""
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    lag: int | None = None
    health: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _health(address: str, timeout: float, credentials: grpc.ChannelCredentials | None) -> str:
    with open_channel(address, credentials, 4 << 20) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code().name if isinstance(exc, grpc.Call) else "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _ask(
    row: MemberRow,
    timeout: float,
    credentials: grpc.ChannelCredentials | None,
    token: str | None = None,
) -> MemberRow:
    if not row.address:
        row.health = "UNKNOWN (client address not known)"
        return row
    row.health = _health(row.address, timeout, credentials)
    try:
        with Client(row.address, timeout=timeout, credentials=credentials, token=token) as c:
            s = c.status()
    except ClientError:
        row.role = "unreachable"
        return row
    row.id = s.node_id or row.id
    row.role, row.term = s.role, s.term
    row.commit_index, row.applied_index = s.commit_index, s.applied_index
    return row


def cluster_status(
    endpoint: str,
    timeout: float,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> list[MemberRow]:
    """One row per member of the cluster `endpoint` belongs to (just that node
    when it runs alone). With tokens on, `token` must be an admin's (Members)."""
    with Client(endpoint, timeout=timeout, credentials=credentials, token=token) as c:
        own = c.status()
        if own.replicator == "noop":
            return [_ask(MemberRow(own.node_id, endpoint), timeout, credentials, token)]
        members = list(c.members().members)
    addresses = {m.name: m.client_address for m in members}
    if not all(addresses.values()) and own.leader_address not in ("", endpoint):
        with Client(own.leader_address, timeout=timeout, credentials=credentials, token=token) as c:
            known = {m.name: m.client_address for m in c.members().members}
        addresses = {name: a or known.get(name, "") for name, a in addresses.items()}
    rows = [MemberRow(m.name, addresses[m.name]) for m in members]
    with ThreadPoolExecutor(max_workers=min(8, len(rows))) as pool:
        rows = list(pool.map(lambda r: _ask(r, timeout, credentials, token), rows))
    commit = max((r.commit_index for r in rows), default=0)
    for r in rows:
        if r.term or r.applied_index:
            r.lag = max(commit - r.applied_index, 0)
    return rows


COLUMNS = ("id", "address", "role", "term", "commit_index", "applied_index", "lag", "health")


def render_table(rows: list[MemberRow]) -> str:
    """The rows as a rich table, as plain text (no colour codes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*(c.replace("_index", "") for c in COLUMNS), box=None, pad_edge=False)
    for r in rows:
        table.add_row(*("-" if getattr(r, c) is None else str(getattr(r, c)) for c in COLUMNS))
    console = Console(width=200, no_color=True, highlight=False)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())
