"""A small typed Python client for a shardlite node (used by the CLI and tests).

Every call has a deadline. Writes carry a request_id (client_id, seq), so a
write retried after UNAVAILABLE is applied at most once.

A client's identity is unique per incarnation: `client_id` is the name the
caller gives (a service, a host; random by default) followed by a random
suffix drawn when the Client is made (`<name>.<16 hex digits>`). The node
remembers each (client_id, seq) it applied and answers a repeat with the
first result (dissertation §6.3), and `seq` starts at 1 in every Client:
without the suffix, a process restarted with the same name would send
(name, 1), (name, 2), ... again and silently get its previous life's results
back instead of having its new writes applied. Exactly-once therefore holds
for the retries of one Client object (the ones it makes itself after
UNAVAILABLE, and any made through it); a write whose outcome a crashed
process never learned is not recognised by its next incarnation.
"""

from __future__ import annotations

import builtins
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from proto import frame_pb2, kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc

LINEARIZABLE = kv_pb2.LINEARIZABLE
SERIALIZABLE = kv_pb2.SERIALIZABLE

T = TypeVar("T")

# The node accepts client ids of up to 128 characters (node/frames.py).
MAX_CLIENT_ID_CHARS = 128
INCARNATION_HEX = 16


def incarnation_id(name: str) -> str:
    """`name` made unique to this incarnation: `<name>.<16 random hex digits>`."""
    suffix = os.urandom(INCARNATION_HEX // 2).hex()
    longest = MAX_CLIENT_ID_CHARS - len(suffix) - 1
    if not name or len(name) > longest:
        raise ValueError(f"client_id must be 1 to {longest} characters, not {len(name)}")
    return f"{name}.{suffix}"


class ClientError(Exception):
    """A call failed; `code` is the gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class ConditionFailedError(ClientError):
    """A compare-and-set condition did not hold; nothing was written."""


def _error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ConditionFailedError(code, details)
    return ClientError(code, details)


@dataclass(frozen=True)
class WriteResult:
    index: int
    version: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    version: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Condition:
    key: str
    version: int  # 0 = must not exist


def tls_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS to the nodes: `ca` checks the node's certificate (None: the system's
    roots); `cert` and `key` are this client's, for nodes that require one."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate and its key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca is not None else None,
        private_key=key.read_bytes() if key is not None else None,
        certificate_chain=cert.read_bytes() if cert is not None else None,
    )


def open_channel(
    endpoint: str, credentials: grpc.ChannelCredentials | None, max_message_bytes: int
) -> grpc.Channel:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if credentials is None:
        return grpc.insecure_channel(endpoint, options=options)
    return grpc.secure_channel(endpoint, credentials, options=options)


class Client:
    def __init__(
        self,
        endpoint: str,
        *,
        org: str = "",
        namespace: str = "default",
        timeout: float = 10.0,
        client_id: str | None = None,
        max_message_bytes: int = 64 << 20,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.org = org
        self.namespace = namespace
        self.timeout = timeout
        # Never the caller's id alone: see the module docstring.
        self.client_id = incarnation_id(client_id if client_id is not None else uuid.uuid4().hex)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._channel = open_channel(endpoint, credentials, max_message_bytes)
        self._stub = kv_pb2_grpc.KVStub(self._channel)
        self._cluster = raft_pb2_grpc.ClusterStub(self._channel)
        self._maintenance = kv_pb2_grpc.MaintenanceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request_id(self) -> frame_pb2.RequestId:
        with self._seq_lock:
            seq = next(self._seq)
        return frame_pb2.RequestId(client_id=self.client_id, seq=seq)

    def _where(self, org: str | None, namespace: str | None) -> tuple[str, str]:
        return (
            self.org if org is None else org,
            self.namespace if namespace is None else namespace,
        )

    def _call(self, method: Any, request: Any, *, retry: bool) -> Any:
        """Call with the client's deadline; retry UNAVAILABLE (same request, so
        the same request_id) with backoff until the deadline."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        unavailable: ClientError | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001))
            except grpc.RpcError as exc:
                error = _error(exc)
                if unavailable is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # A retry ran out of time: the node's own answer says more
                    # (why it is unavailable, whether the outcome is unknown).
                    raise unavailable from None
                if not retry or error.code != grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                unavailable = error
                if time.monotonic() + delay >= deadline:
                    raise error from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- writes ---------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_version: int | None = None,
        org: str | None = None,
        namespace: str | None = None,
    ) -> WriteResult:
        where = self._where(org, namespace)
        request = kv_pb2.PutRequest(
            key=key,
            value=value,
            expected_version=expected_version,
            request_id=self._request_id(),
            org=where[0],
            namespace=where[1],
        )
        reply = self._call(self._stub.Put, request, retry=True)
        return WriteResult(index=reply.index, version=reply.version)

    def delete(
        self,
        key: str,
        *,
        expected_version: int | None = None,
        org: str | None = None,
        namespace: str | None = None,
    ) -> WriteResult:
        where = self._where(org, namespace)
        request = kv_pb2.DeleteRequest(
            key=key,
            expected_version=expected_version,
            request_id=self._request_id(),
            org=where[0],
            namespace=where[1],
        )
        reply = self._call(self._stub.Delete, request, retry=True)
        return WriteResult(index=reply.index, deleted=reply.deleted)

    def batch(
        self,
        ops: Sequence[Put | Delete],
        conditions: Sequence[Condition] = (),
        *,
        org: str | None = None,
        namespace: str | None = None,
    ) -> builtins.list[WriteResult]:
        where = self._where(org, namespace)
        request = kv_pb2.BatchRequest(
            request_id=self._request_id(), org=where[0], namespace=where[1]
        )
        for op in ops:
            if isinstance(op, Put):
                request.ops.add(put=frame_pb2.PutOp(key=op.key, value=op.value))
            else:
                request.ops.add(delete=frame_pb2.DeleteOp(key=op.key))
        for condition in conditions:
            request.conditions.add(key=condition.key, version=condition.version)
        reply = self._call(self._stub.Batch, request, retry=True)
        return [
            WriteResult(index=reply.index, version=r.version, deleted=r.deleted)
            for r in reply.results
        ]

    # -- reads ----------------------------------------------------------------

    def get(
        self,
        key: str,
        *,
        consistency: kv_pb2.Consistency.ValueType = LINEARIZABLE,
        org: str | None = None,
        namespace: str | None = None,
    ) -> Entry | None:
        where = self._where(org, namespace)
        request = kv_pb2.GetRequest(
            key=key, consistency=consistency, org=where[0], namespace=where[1]
        )
        reply = self._call(self._stub.Get, request, retry=True)
        return Entry(key, reply.value, reply.version) if reply.found else None

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        limit: int = 0,
        consistency: kv_pb2.Consistency.ValueType = LINEARIZABLE,
        org: str | None = None,
        namespace: str | None = None,
    ) -> Iterator[Entry]:
        where = self._where(org, namespace)
        request = kv_pb2.ListRequest(
            prefix=prefix,
            start_after=start_after,
            limit=limit,
            consistency=consistency,
            org=where[0],
            namespace=where[1],
        )
        try:
            for chunk in self._stub.List(request, timeout=self.timeout):
                for item in chunk.items:
                    yield Entry(item.key, item.value, item.version)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def namespaces(self, org: str | None = None) -> builtins.list[str]:
        request = kv_pb2.ListNamespacesRequest(org=self.org if org is None else org)
        return list(self._call(self._stub.ListNamespaces, request, retry=True).namespaces)

    def subscribe(
        self, from_index: int = 0, *, timeout: float | None = None
    ) -> Iterator[tuple[int, frame_pb2.Frame]]:
        """Committed frames from `from_index` (0 = from now on), as they commit.
        Whether each applied: `events`."""
        for reply in self.events(from_index, timeout=timeout):
            yield reply.index, reply.frame

    def events(
        self, from_index: int = 0, *, timeout: float | None = None
    ) -> Iterator[kv_pb2.SubscribeResponse]:
        """Like `subscribe`, with each frame's outcome (APPLIED, CONDITION_FAILED,
        INVALID) and result (versions, the failed condition, why invalid)."""
        try:
            yield from self._stub.Subscribe(
                kv_pb2.SubscribeRequest(from_index=from_index), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def status(self) -> kv_pb2.StatusResponse:
        reply: kv_pb2.StatusResponse = self._call(
            self._stub.Status, kv_pb2.StatusRequest(), retry=True
        )
        return reply

    # -- cluster administration -----------------------------------------------

    def members(self) -> raft_pb2.MembersResponse:
        reply: raft_pb2.MembersResponse = self._call(
            self._cluster.Members, raft_pb2.MembersRequest(), retry=True
        )
        return reply

    def add_member(
        self, name: str, address: str, *, learner_only: bool = False
    ) -> builtins.list[raft_pb2.Member]:
        request = raft_pb2.AddMemberRequest(name=name, address=address, learner_only=learner_only)
        return list(self._call(self._cluster.AddMember, request, retry=True).members)

    def remove_member(self, name: str) -> builtins.list[raft_pb2.Member]:
        request = raft_pb2.RemoveMemberRequest(name=name)
        return list(self._call(self._cluster.RemoveMember, request, retry=True).members)

    def transfer_leader(self, name: str = "") -> str:
        request = raft_pb2.TransferLeaderRequest(name=name)
        reply = self._call(self._cluster.TransferLeader, request, retry=True)
        return str(reply.leader)

    # -- maintenance ----------------------------------------------------------

    def backup(self, out_dir: Path, *, timeout: float = 3600.0) -> int:
        """Download a consistent backup of the node into the empty `out_dir`,
        verify it, and return its index."""
        from node.backup import verify
        from replication.raft.snapshots import MANIFEST, read_manifest

        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"{out_dir} is not empty")
        out_dir.mkdir(parents=True, exist_ok=True)
        root = out_dir.resolve()
        handle = None
        try:
            for chunk in self._maintenance.Backup(kv_pb2.BackupRequest(), timeout=timeout):
                if chunk.manifest:
                    read_manifest(chunk.manifest)  # fails early on garbage
                    (out_dir / MANIFEST).write_bytes(chunk.manifest)
                    continue
                target = (out_dir / chunk.path).resolve()
                if root not in target.parents:
                    raise ValueError(f"backup file {chunk.path!r} escapes {out_dir}")
                if handle is None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handle = open(target, "wb")  # noqa: SIM115 - closed below
                handle.write(chunk.data)
                if chunk.last_of_file:
                    handle.close()
                    handle = None
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            if handle is not None:
                handle.close()
        return verify(out_dir)
