"""`shardlite`: run a node, or talk to one.

    shardlite node --id n1 --data ./data/n1 --listen 127.0.0.1:7001
    shardlite put greeting hello
    shardlite get greeting

Every flag can also come from an environment variable: --max-value-bytes is
SHARDLITE_MAX_VALUE_BYTES, --endpoint is SHARDLITE_ENDPOINT, and so on --
except the test-only modes (--unsafe-stale-reads, --fault-injection): they
are turned on by their flag only, never by the environment, and the node
warns about them on every start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from shardlite.node import cli_data, stack_dump, token_cli
from shardlite.node.bearer import channel_with_token
from shardlite.node.cli_output import b64, emit, error, wants_json
from shardlite.node.client import (
    LINEARIZABLE,
    SERIALIZABLE,
    Client,
    ClientError,
    open_channel,
    tls_credentials,
)
from shardlite.node.cluster_status import cluster_status, render_table
from shardlite.node.config import NodeConfig
from shardlite.node.logs import setup_logging
from shardlite.node.transfer import encode_line
from shardlite.replication.raft.members import parse_peers
from shardlite.v1 import kv_pb2

DEFAULT_ENDPOINT = "127.0.0.1:7001"
# Modes that break the node's guarantees on purpose, for tests: a variable left
# in an environment (a container, a shell profile) must never turn them on.
TEST_ONLY_FLAGS = frozenset({"--unsafe-stale-reads", "--fault-injection"})
# What one request does is said on its command line only: a variable left in a
# shell would silently turn every put into a compare-and-set.
PER_REQUEST_FLAGS = frozenset(
    {
        "--expected-version", "--start-after", "--limit", "--keys-only", "--serializable",
        "--show-version", "--from", "--count", "--cluster",
        "--orgs", "--only-namespace", "--prefix",
    }
)  # fmt: skip


class EnvError(Exception):
    """A SHARDLITE_* variable holds a value its option cannot take."""


def env_var(flag: str) -> str:
    return "SHARDLITE_" + flag.lstrip("-").upper().replace("-", "_")


class _EnvDefaults(argparse.ArgumentParser):
    """An ArgumentParser whose options default to SHARDLITE_<OPTION> variables
    (test-only flags excepted)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.dest != "help":
            flag = action.option_strings[-1]
            var = env_var(flag)
            if flag in TEST_ONLY_FLAGS:
                action.help = (action.help or "") + " [flag only: never from the environment]"
                return action
            if flag in PER_REQUEST_FLAGS:
                return action
            if var in os.environ:
                raw = os.environ[var]
                if isinstance(action, argparse._StoreTrueAction):
                    action.default = raw.lower() in ("1", "true", "yes", "on")
                else:
                    try:
                        action.default = action.type(raw) if callable(action.type) else raw
                    except (ValueError, argparse.ArgumentTypeError) as exc:
                        raise EnvError(f"{var}={raw!r}: not a value for {flag} ({exc})") from None
                action.required = False
            action.help = (action.help or "") + f" [env {var}]"
        return action


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _node_parser(sub: Any) -> None:
    defaults = NodeConfig()
    p = sub.add_parser("node", help="run a storage node", description="Run a storage node.")
    p.add_argument("--id", default=defaults.node_id, help="node id")
    p.add_argument("--data", type=Path, default=defaults.data_dir, help="data directory")
    p.add_argument("--listen", default=defaults.listen, help="host:port for the gRPC API")
    p.add_argument("--max-value-bytes", type=int, default=defaults.max_value_bytes)
    p.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    p.add_argument(
        "--shard-cache-size",
        type=int,
        default=defaults.shard_cache_size,
        help="at most this many shards open at once",
    )
    p.add_argument(
        "--shard-idle-seconds",
        type=float,
        default=defaults.shard_idle_seconds,
        help="close a shard idle this long",
    )
    p.add_argument(
        "--log-retain",
        type=int,
        default=defaults.log_retain,
        help="applied frames kept for Subscribe",
    )
    p.add_argument("--log-segment-bytes", type=int, default=defaults.log_segment_bytes)
    p.add_argument("--shutdown-grace", type=float, default=defaults.shutdown_grace)
    p.add_argument(
        "--max-concurrent-backups",
        type=int,
        default=defaults.max_concurrent_backups,
        help="backups running at once (each is a full copy of the shards on disk)",
    )
    p.add_argument(
        "--ready-file", type=Path, default=None, help="write the bound address here once serving"
    )
    p.add_argument("--log-format", choices=("text", "json"), default=defaults.log_format)
    p.add_argument(
        "--metrics-listen",
        default=defaults.metrics_listen,
        help="host:port for Prometheus metrics at /metrics (default: none)",
    )
    p.add_argument("--log-level", default=defaults.log_level)
    p.add_argument(
        "--peers",
        default="",
        help="bootstrap a Raft cluster: every founding member as name=host:port,... "
        "(their peer addresses: --advertise-peer, or --peer-listen)",
    )
    p.add_argument(
        "--restore",
        type=Path,
        default=None,
        help="start from a backup file (shardlite backup --out; or an older backup "
        "directory): the data directory must be empty",
    )
    p.add_argument(
        "--unsafe-stale-reads",
        action="store_true",
        help="DELIBERATELY BROKEN linearizable reads, to test the chaos checker; never use",
    )
    p.add_argument(
        "--fault-injection",
        action="store_true",
        help="serve the Faults service (network partitions on demand): tests and chaos only",
    )
    p.add_argument(
        "--join",
        default="",
        help="join an existing cluster through any member's address host:port "
        "(its peer address, or its client address when auth is off)",
    )
    p.add_argument(
        "--advertise",
        default="",
        help="address clients reach this node at (default: --listen)",
    )
    p.add_argument(
        "--peer-listen",
        default=defaults.peer_listen,
        help="host:port for the Raft peer service, apart from clients so that a firewall "
        "can keep strangers off it (default: none, peers share --listen, with a warning)",
    )
    p.add_argument(
        "--advertise-peer",
        default="",
        help="address peers reach this node at (default: --peer-listen, else --advertise)",
    )
    p.add_argument(
        "--peer-stream-port",
        type=int,
        default=defaults.peer_stream_port,
        help="TCP port of the Raft message stream on the peer host (default 0: any free port, "
        "told to peers over the peer service; set it to open a firewall for it)",
    )
    p.add_argument(
        "--max-concurrent-requests",
        type=_at_least_one,
        default=defaults.max_concurrent_requests,
        help="client requests served at once (streams until they end); more are RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--max-streams-per-connection",
        type=_at_least_one,
        default=defaults.max_streams_per_connection,
        help="concurrent calls on one client connection; the client waits beyond it",
    )
    p.add_argument("--tls-cert", type=Path, default=None, help="TLS certificate for clients (PEM)")
    p.add_argument("--tls-key", type=Path, default=None, help="its private key (PEM)")
    p.add_argument(
        "--tls-ca", type=Path, default=None, help="CA that signs client certificates (PEM)"
    )
    p.add_argument(
        "--client-cert-auth",
        action="store_true",
        help="require a client certificate signed by --tls-ca",
    )
    p.add_argument(
        "--peer-tls-cert",
        type=Path,
        default=None,
        help="TLS certificate for members (PEM); peers then always authenticate each other",
    )
    p.add_argument("--peer-tls-key", type=Path, default=None, help="its private key (PEM)")
    p.add_argument(
        "--peer-tls-ca", type=Path, default=None, help="the cluster's CA: it signs every member"
    )
    p.add_argument("--raft-tick-ms", type=int, default=defaults.raft_tick_ms)
    p.add_argument(
        "--election-ticks",
        type=int,
        default=defaults.election_ticks,
        help="election timeout in ticks (randomized up to twice this)",
    )
    p.add_argument(
        "--read-lease",
        action="store_true",
        help="answer LINEARIZABLE reads on the leader lease, without a heartbeat round "
        "each (every member needs the same --raft-tick-ms and --election-ticks)",
    )
    p.add_argument(
        "--no-envelopes",
        action="store_true",
        help="as leader, commit each write of a MultiWrite as its own Raft entry, as "
        "versions before envelopes do (a leader does so on its own while a member does "
        "not announce envelopes: docs/operations.md, Upgrade)",
    )
    p.add_argument(
        "--leader-wait",
        type=float,
        default=defaults.leader_wait,
        help="seconds a request waits for a leader before UNAVAILABLE",
    )
    p.add_argument("--propose-timeout", type=float, default=defaults.propose_timeout)
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=defaults.snapshot_entries,
        help="take a snapshot after this many applied entries",
    )
    p.add_argument(
        "--snapshot-catchup-entries",
        type=int,
        default=defaults.snapshot_catchup_entries,
        help="entries kept before a snapshot for slow followers",
    )
    p.add_argument(
        "--max-pending-proposals",
        type=int,
        default=None,
        help="writes waiting to commit past which new ones get RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--auth-tokens",
        type=Path,
        default=None,
        help="require bearer tokens from this file (JSON; see docs/security.md)",
    )
    p.add_argument(
        "--join-token", default="", help="admin token to send when joining (--join) with auth on"
    )
    p.add_argument(
        "--stream-stall-seconds",
        type=float,
        default=defaults.stream_stall_seconds,
        help="end a Subscribe or List stream whose reader takes nothing this long",
    )
    p.set_defaults(run=_run_node)


def _run_node(args: argparse.Namespace) -> int:
    config = NodeConfig(
        node_id=args.id,
        data_dir=args.data,
        listen=args.listen,
        max_value_bytes=args.max_value_bytes,
        max_request_bytes=args.max_request_bytes,
        shard_cache_size=args.shard_cache_size,
        shard_idle_seconds=args.shard_idle_seconds,
        log_retain=args.log_retain,
        log_segment_bytes=args.log_segment_bytes,
        shutdown_grace=args.shutdown_grace,
        max_concurrent_backups=args.max_concurrent_backups,
        ready_file=args.ready_file,
        log_format=args.log_format,
        metrics_listen=args.metrics_listen,
        log_level=args.log_level,
        peers=parse_peers(args.peers),
        join=args.join,
        restore=args.restore,
        fault_injection=args.fault_injection,
        unsafe_stale_reads=args.unsafe_stale_reads,
        advertise=args.advertise,
        peer_listen=args.peer_listen,
        advertise_peer=args.advertise_peer,
        peer_stream_port=args.peer_stream_port,
        max_concurrent_requests=args.max_concurrent_requests,
        max_streams_per_connection=args.max_streams_per_connection,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        client_cert_auth=args.client_cert_auth,
        peer_tls_cert=args.peer_tls_cert,
        peer_tls_key=args.peer_tls_key,
        peer_tls_ca=args.peer_tls_ca,
        raft_tick_ms=args.raft_tick_ms,
        election_ticks=args.election_ticks,
        read_lease=args.read_lease,
        envelopes=not args.no_envelopes,
        leader_wait=args.leader_wait,
        propose_timeout=args.propose_timeout,
        snapshot_entries=args.snapshot_entries,
        snapshot_catchup_entries=args.snapshot_catchup_entries,
        max_pending_proposals=args.max_pending_proposals,
        auth_tokens=args.auth_tokens,
        join_token=args.join_token,
        stream_stall_seconds=args.stream_stall_seconds,
    )
    setup_logging(config.log_format, config.log_level, node_id=config.node_id)
    stack_dump.install_threads()
    for flag in sorted(TEST_ONLY_FLAGS):
        if env_var(flag) in os.environ:
            logging.getLogger(__name__).warning(
                "%s is set but ignored: %s is a test-only mode, turned on by its flag only",
                env_var(flag),
                flag,
            )
    from shardlite.node.backup import RestoreError
    from shardlite.node.server import DataDirMismatch, FatalError, serve
    from shardlite.replication.tls import TlsError

    try:
        asyncio.run(serve(config))
    except FatalError as exc:
        print(f"error: the node stopped after a fatal fault: {exc}", file=sys.stderr)
        return 1
    except RestoreError as exc:
        print(f"error: cannot restore: {exc}", file=sys.stderr)
        return 2
    except TlsError as exc:
        print(f"error: TLS: {exc}", file=sys.stderr)
        return 2
    except DataDirMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _client_parser(sub: Any, name: str, help_text: str, run: Callable[..., int]) -> Any:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="node address host:port; several, comma separated, to fail over",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds per call; for ls, per message (a slow reader does not count)",
    )
    p.add_argument("--org", default="", help="organisation (empty = default)")
    p.add_argument("-n", "--namespace", default="default", help="namespace")
    p.add_argument(
        "--cacert",
        dest="tls_cacert",
        type=Path,
        default=None,
        help="talk TLS; this CA checks the node (PEM)",
    )
    p.add_argument(
        "--cert", dest="tls_cert", type=Path, default=None, help="client certificate (PEM)"
    )
    p.add_argument(
        "--key", dest="tls_key", type=Path, default=None, help="the client certificate's key"
    )
    p.add_argument("--output", choices=("text", "json"), default="text", help="json: for scripts")
    p.add_argument("--token", default=None, help="bearer token (nodes with auth on)")
    p.set_defaults(run=run)
    return p


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS when any of --cacert/--cert/--key is given."""
    if args.tls_cacert is None and args.tls_cert is None and args.tls_key is None:
        return None
    return tls_credentials(args.tls_cacert, args.tls_cert, args.tls_key)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return open_channel(args.endpoint, _credentials(args), 4 << 20)


def _client(args: argparse.Namespace) -> Client:
    told: list[str] = []

    def retrying(why: str) -> None:
        if not told:  # once: then the client keeps trying quietly until its deadline
            told.append(why)
            print(f"retrying for up to {args.timeout:g}s: {why}", file=sys.stderr)

    return Client(
        args.endpoint,
        org=args.org,
        namespace=args.namespace,
        timeout=args.timeout,
        credentials=_credentials(args),
        on_retry=retrying,
        token=args.token,
    )


def _value_arg(value: str) -> bytes:
    return sys.stdin.buffer.read() if value == "-" else value.encode()


def _put(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.put(args.key, _value_arg(args.value), expected_version=args.expected_version)
    emit(args, f"OK index={r.index} version={r.version}", {"index": r.index, "version": r.version})
    return 0


def _get(args: argparse.Namespace) -> int:
    consistency = SERIALIZABLE if args.serializable else LINEARIZABLE
    with _client(args) as c:
        entry = c.get(args.key, consistency=consistency)
    if entry is None:
        if wants_json(args):
            emit(args, "", {"key": args.key, "found": False})
        print(f"key {args.key!r} not found", file=sys.stderr)
        return 1
    if wants_json(args):
        data = {"key": entry.key, "found": True, "value": b64(entry.value)}
        emit(args, "", {**data, "version": entry.version})
        return 0
    if args.show_version:
        print(f"version={entry.version}", flush=True)
    # The value exactly as stored (`get k > file` round-trips binary values);
    # a newline only for a terminal, so the prompt does not run on.
    end = b"\n" if sys.stdout.isatty() and not entry.value.endswith(b"\n") else b""
    sys.stdout.buffer.write(entry.value + end)
    sys.stdout.buffer.flush()
    return 0


def _del(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.delete(args.key, expected_version=args.expected_version)
    emit(
        args,
        f"OK index={r.index} deleted={'yes' if r.deleted else 'no (key did not exist)'}",
        {"index": r.index, "deleted": r.deleted},
    )
    return 0


def _ls(args: argparse.Namespace) -> int:
    consistency = SERIALIZABLE if args.serializable else LINEARIZABLE
    with _client(args) as c:
        for e in c.list(
            args.prefix, start_after=args.start_after, limit=args.limit, consistency=consistency
        ):
            if wants_json(args):
                print(encode_line(e.key, e.value, e.version))
            elif args.keys_only:
                print(e.key)
            else:
                print(f"{_escaped(e.key)}\t{e.version}\t{_escaped(e.value)}")
    return 0


def _escaped(text: str | bytes) -> str:
    """One field of one line: tabs, newlines, NULs, backslashes and bytes that
    are not UTF-8 escaped as Python would (`--output json` for exact values)."""
    raw = text.encode() if isinstance(text, str) else text
    out = raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in out
    )


def _namespaces(args: argparse.Namespace) -> int:
    with _client(args) as c:
        names = c.namespaces()
    if wants_json(args):
        emit(args, "", {"org": args.org, "namespaces": names})
    else:
        for name in names:
            print(name)
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.cluster:
        rows = cluster_status(args.endpoint, args.timeout, _credentials(args), args.token)
        emit(args, render_table(rows), [r.as_dict() for r in rows])
        return 0 if all(r.health == "SERVING" for r in rows) else 1
    with _client(args) as c:
        s = c.status()
    if wants_json(args):
        values = {f.name: getattr(s, f.name) for f in s.DESCRIPTOR.fields}
        emit(args, "", {**values, "members": list(s.members)})
        return 0
    fields = (
        "node_id",
        "replicator",
        "role",
        "leader",
        "leader_address",
        "term",
        "commit_index",
        "applied_index",
        "first_index",
        "open_shards",
        "data_dir",
        "version",
    )
    for name in fields:
        print(f"{name:14} {getattr(s, name)}")
    print(f"{'members':14} {','.join(s.members)}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    seen = 0
    with _client(args) as c:
        if args.from_index:
            commit = c.status().commit_index
            if args.from_index > commit + 1:
                print(
                    f"waiting for index {args.from_index}: the log is at {commit}",
                    file=sys.stderr,
                    flush=True,
                )
        orgs = [] if args.orgs is None else ["" if o == "_" else o for o in args.orgs.split(",")]
        for event in c.events(
            args.from_index, orgs=orgs, namespace=args.only_namespace, prefix=args.prefix
        ):
            index, frame = event.index, event.frame
            ops = []
            for op in frame.ops:
                if op.HasField("put"):
                    ops.append(
                        {"put": op.put.key, "value": op.put.value.decode(errors="backslashreplace")}
                    )
                else:
                    ops.append({"delete": op.delete.key})
            line = {"index": index, "org": frame.org, "namespace": frame.namespace, "ops": ops}
            line["outcome"] = kv_pb2.Outcome.Name(event.outcome)
            line["result"] = json_format.MessageToDict(event.result)
            if frame.conditions:
                line["conditions"] = [
                    {"key": x.key, "version": x.version} for x in frame.conditions
                ]
            print(json.dumps(line), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def _print_members(args: argparse.Namespace, members: Sequence[Any]) -> None:
    rows = []
    for m in members:
        role = "leader" if m.leader else ("learner" if m.learner else "voter")
        rows.append({"name": m.name, "address": m.address, "role": role, "match": m.match_index})
    text = "\n".join(f"{r['name']}\t{r['address']}\t{r['role']}\tmatch={r['match']}" for r in rows)
    emit(args, text, rows)


def _members(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "list":
            reply = c.members()
            _print_members(args, reply.members)
        elif args.action == "add":
            if not args.name or not args.address:
                print("error: members add NAME ADDRESS", file=sys.stderr)
                return 2
            _print_members(args, c.add_member(args.name, args.address, learner_only=args.learner))
        else:
            if not args.name:
                print("error: members remove NAME", file=sys.stderr)
                return 2
            _print_members(args, c.remove_member(args.name))
    return 0


def _health(args: argparse.Namespace) -> int:
    """grpc.health.v1 Check: exit 0 when the node serves (for container health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(args) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            if wants_json(args):
                emit(args, "", {"status": "UNREACHABLE", "code": code})
            print(f"unhealthy: {code}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    emit(args, status, {"status": status})
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _faults(args: argparse.Namespace) -> int:
    import grpc

    from shardlite.v1 import raft_pb2, raft_pb2_grpc

    def names(value: str) -> list[str]:
        return [n for n in value.split(",") if n]

    with _channel(args) as channel:
        stub = raft_pb2_grpc.FaultsStub(channel_with_token(channel, args.token))
        try:
            if args.action == "heal":
                reply = stub.Heal(raft_pb2.HealRequest(), timeout=args.timeout)
            else:
                request = raft_pb2.PartitionRequest(
                    drop_to=names(args.drop_to), drop_from=names(args.drop_from)
                )
                reply = stub.Partition(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            error(args, code, details or "")
            return 2
    emit(
        args,
        f"dropping to: {','.join(reply.dropping_to) or '-'}  "
        f"from: {','.join(reply.dropping_from) or '-'}",
        {"dropping_to": list(reply.dropping_to), "dropping_from": list(reply.dropping_from)},
    )
    return 0


def _leader(args: argparse.Namespace) -> int:
    with _client(args) as c:
        leader = c.transfer_leader(args.name)
    emit(args, f"leader is now {leader}", {"leader": leader})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _EnvDefaults(
        prog="shardlite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_EnvDefaults)
    _node_parser(sub)
    p = _client_parser(sub, "put", "write a key", _put)
    p.add_argument("key")
    p.add_argument("value", help="the value; '-' reads it from stdin")
    p.add_argument(
        "--expected-version",
        type=int,
        default=None,
        help="compare-and-set: only if the key has this version (0 = absent)",
    )
    p = _client_parser(sub, "get", "read a key", _get)
    p.add_argument("key")
    p.add_argument("--serializable", action="store_true", help="read local state, no barrier")
    p.add_argument("--show-version", action="store_true")
    p = _client_parser(sub, "del", "delete a key", _del)
    p.add_argument("key")
    p.add_argument("--expected-version", type=int, default=None)
    p = _client_parser(sub, "ls", "list keys by prefix", _ls)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--start-after", default="")
    p.add_argument("--limit", type=_not_negative, default=0, help="at most this many (0: all)")
    p.add_argument("--keys-only", action="store_true")
    p.add_argument("--serializable", action="store_true")
    _client_parser(sub, "namespaces", "list an org's namespaces", _namespaces)
    p = _client_parser(sub, "status", "show a node's status", _status)
    p.add_argument(
        "--cluster", action="store_true", help="every member as a table (each one asked itself)"
    )
    p = _client_parser(sub, "members", "list, add or remove cluster members", _members)
    p.add_argument("action", choices=("list", "add", "remove"))
    p.add_argument("name", nargs="?", default="")
    p.add_argument("address", nargs="?", default="", help="host:port (add)")
    p.add_argument("--learner", action="store_true", help="add as a non-voting learner only")
    _client_parser(sub, "health", "exit 0 if the node serves (grpc.health.v1)", _health)
    cli_data.add_parsers(sub, _client_parser, _client)
    p = _client_parser(
        sub, "faults", "partition a node (needs --fault-injection on the node)", _faults
    )
    p.add_argument("action", choices=("partition", "heal"))
    p.add_argument("--drop-to", default="", help="members (comma-separated) not to send to")
    p.add_argument("--drop-from", default="", help="members (comma-separated) not to hear")
    p = _client_parser(sub, "leader", "transfer leadership", _leader)
    p.add_argument("action", choices=("transfer",))
    p.add_argument("name", nargs="?", default="", help="target (default: most up to date)")
    p = _client_parser(sub, "watch", "stream committed frames as JSON lines", _watch)
    p.add_argument(
        "--from",
        dest="from_index",
        type=_not_negative,
        default=0,
        help="first index (0 = only new frames)",
    )
    p.add_argument(
        "--count", type=_not_negative, default=0, help="stop after this many (0 = never)"
    )
    _certs_parser(sub)
    p.add_argument(
        "--orgs", default=None, help="only these orgs, comma-separated ('_' = the default org)"
    )
    p.add_argument("--only-namespace", default="", help="only this namespace")
    p.add_argument("--prefix", default="", help="only ops on keys with this prefix")
    token_cli.add_parser(sub)
    return parser


def _certs_parser(sub: Any) -> None:
    text = (
        "make a CA (or reuse the one in DIR) and certificates signed by it, for local use: "
        "one per node (server and client: members authenticate each other) and per client"
    )
    p = sub.add_parser("certs", help=text, description=text)
    p.add_argument("directory", type=Path, help="where ca.pem, ca.key, NAME.pem, NAME.key go")
    p.add_argument("--nodes", default="", help="node names, comma separated (n1,n2,n3)")
    p.add_argument(
        "--hosts",
        default="127.0.0.1,localhost",
        help="host names and IPs every node certificate is valid for, besides its name "
        "(default: 127.0.0.1,localhost)",
    )
    p.add_argument("--clients", default="", help="client certificate names, comma separated")
    p.add_argument("--days", type=int, default=825, help="validity of the certificates")
    p.set_defaults(run=_certs)


def _certs(args: argparse.Namespace) -> int:
    from shardlite.node import certs

    def names(value: str) -> list[str]:
        items = [n.strip() for n in value.split(",") if n.strip()]
        for item in items:
            if not item.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"{item!r}: names are letters, digits, '-', '_' and '.'")
            if item.startswith(".") or item == "ca":
                raise ValueError(f"{item!r} cannot name a certificate")
        return items

    nodes, clients, hosts = names(args.nodes), names(args.clients), names(args.hosts)
    if not nodes and not clients:
        raise ValueError("give --nodes and/or --clients: nothing to make")
    if args.days < 1:
        raise ValueError("--days must be at least 1")
    certs.load_or_make_ca(args.directory)
    print(f"CA: {args.directory / certs.CA_CERT} (keep {certs.CA_KEY} private)")
    for name in nodes:
        cert, _ = certs.issue(args.directory, name, hosts, server=True, days=args.days)
        print(f"node {name}: {cert} (valid for {', '.join([name, *hosts])})")
    for name in clients:
        cert, _ = certs.issue(args.directory, name, server=False, days=args.days)
        print(f"client {name}: {cert}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ClientError as exc:
        error(args, exc.code.name, exc.details)
        return 2
    except (ValueError, OSError) as exc:
        error(args, "", str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
