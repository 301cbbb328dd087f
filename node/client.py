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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from shardlite.node.bearer import channel_with_token
from shardlite.node.endpoints import FIRST_BACKOFF, MAX_BACKOFF, Endpoints, Route, read_route
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
LINEARIZABLE = kv_pb2.LINEARIZABLE
SERIALIZABLE = kv_pb2.SERIALIZABLE

T = TypeVar("T")
M = TypeVar("M")

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
    """A call failed; `code` is the gRPC status, `details` the server's message.

    What to do depends on the subclass: UnavailableError (retry, later or on
    another node), InvalidRequestError (fix the request), ConditionFailedError
    (a compare-and-set lost: read the current version), AccessDeniedError
    (the credentials do not allow it)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")

    def clone(self) -> ClientError:
        """The same error, for another caller (one exception raised in many
        tasks would share one traceback)."""
        return _make_error(self.code, self.details, self._trailers())

    def _trailers(self) -> dict[str, str]:
        return {}


class UnavailableError(ClientError):
    """No node could do it now (no leader, overloaded, unreachable, out of
    time). Retry with backoff; a write retried through the same Client keeps
    its request id and is applied at most once. For a write, the details say
    when its outcome is unknown."""


class InvalidRequestError(ClientError):
    """The request cannot succeed as it is: fix it (the details say what)."""


class AccessDeniedError(ClientError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the credentials do not allow it."""


class ConditionFailedError(ClientError):
    """A compare-and-set condition did not hold; nothing was written.
    `key`, `expected` and `actual` (the current version, 0: no such key) say
    which, when the node told (it does since the condition trailers)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        key: str = "",
        expected: int = 0,
        actual: int = 0,
    ) -> None:
        super().__init__(code, details)
        self.key, self.expected, self.actual = key, expected, actual

    def _trailers(self) -> dict[str, str]:
        return {
            CONDITION_KEY: self.key,
            CONDITION_EXPECTED: str(self.expected),
            CONDITION_ACTUAL: str(self.actual),
        }


# Trailing metadata of a failed condition (node/rpc.py sets them).
CONDITION_KEY = "shardlite-condition-key"
CONDITION_EXPECTED = "shardlite-condition-expected"
CONDITION_ACTUAL = "shardlite-condition-actual"

_RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
_FIX = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,  # not a condition: e.g. a cluster RPC on one node
}
_DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def _make_error(code: grpc.StatusCode, details: str, trailers: dict[str, str]) -> ClientError:
    if code == grpc.StatusCode.FAILED_PRECONDITION and CONDITION_KEY in trailers:
        return ConditionFailedError(
            code,
            details,
            key=trailers[CONDITION_KEY],
            expected=_int(trailers.get(CONDITION_EXPECTED)),
            actual=_int(trailers.get(CONDITION_ACTUAL)),
        )
    if code in _RETRY:
        return UnavailableError(code, details)
    if code in _FIX:
        return InvalidRequestError(code, details)
    if code in _DENIED:
        return AccessDeniedError(code, details)
    return ClientError(code, details)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def trailer_dict(metadata: Any) -> dict[str, str]:
    """Trailing metadata as text: a `-bin` trailer (bytes) under its name
    without the suffix, decoded from UTF-8 (the condition's key goes so)."""
    trailers: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, bytes):
            trailers[str(key).removesuffix("-bin")] = value.decode("utf-8", "replace")
        else:
            trailers.setdefault(str(key), str(value))
    return trailers


def _error(exc: grpc.RpcError) -> ClientError:
    if not isinstance(exc, grpc.Call):
        return ClientError(grpc.StatusCode.UNKNOWN, str(exc))
    trailers = trailer_dict(exc.trailing_metadata())
    return _make_error(exc.code(), exc.details() or "", trailers)


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


class StreamPosition:
    """Where a Subscribe stream resumes after a break, so that no frame comes
    twice and none is missed: the next index, or -- when the last response
    said more frames of its index follow (an envelope: several frames of one
    log entry) -- that index again, skipping the responses of it already
    taken (they come again in the same order)."""

    def __init__(self, from_index: int) -> None:
        self.index = from_index
        self._taken = 0  # responses at `index` already passed on
        self._skip = 0  # of those, how many the current stream still repeats

    def request(self, orgs: Sequence[str], namespace: str, prefix: str) -> kv_pb2.SubscribeRequest:
        """The request that opens (or reopens) the stream here."""
        self._skip = self._taken
        return kv_pb2.SubscribeRequest(
            from_index=self.index, orgs=orgs, namespace=namespace, prefix=prefix
        )

    def take(self, reply: kv_pb2.SubscribeResponse) -> bool:
        """Whether `reply` is new (then the position moves past it)."""
        if self._skip and reply.index == self.index:
            self._skip -= 1
            return False
        self._skip = 0
        if not reply.more_at_index:
            self.index, self._taken = reply.index + 1, 0
        elif reply.index == self.index:
            self._taken += 1
        else:
            self.index, self._taken = reply.index, 1
        return True


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


@dataclass(frozen=True)
class _Stubs:
    """One endpoint's channel and the stubs on it."""

    channel: grpc.Channel
    kv: kv_pb2_grpc.KVStub
    cluster: raft_pb2_grpc.ClusterStub
    maintenance: kv_pb2_grpc.MaintenanceStub

    @classmethod
    def open(
        cls,
        address: str,
        credentials: grpc.ChannelCredentials | None,
        max_message_bytes: int,
        token: str | None = None,
    ) -> _Stubs:
        channel = open_channel(address, credentials, max_message_bytes)
        calls = channel_with_token(channel, token)  # the token on every call, any stub
        return cls(
            channel,
            kv_pb2_grpc.KVStub(calls),
            raft_pb2_grpc.ClusterStub(calls),
            kv_pb2_grpc.MaintenanceStub(calls),
        )


LEADER_METADATA_KEY = "shardlite-leader"


class _Silent(Exception):
    """A stream sent nothing within its per-message deadline."""

    def __init__(self, error: ClientError) -> None:
        self.error = error


def _within(call: Iterator[M], seconds: float | None, address: str) -> Iterator[M]:
    """The messages of `call`, each within `seconds` of asking for it (the
    time the consumer takes between messages does not count)."""
    if seconds is None:
        yield from call
        return
    cancel = getattr(call, "cancel", None)
    while True:
        fired = threading.Event()

        def expire(fired: threading.Event = fired) -> None:
            fired.set()
            if cancel is not None:
                cancel()

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            message = next(call)
        except StopIteration:
            return
        except grpc.RpcError:
            if fired.is_set():
                raise _Silent(
                    ClientError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"{address} sent nothing for {seconds}s in a stream",
                    )
                ) from None
            raise
        finally:
            timer.cancel()
        yield message


def make_error(
    code: grpc.StatusCode, details: str, trailers: dict[str, str] | None = None
) -> ClientError:
    """The ClientError subclass for a status (and its trailers)."""
    return _make_error(code, details, trailers or {})


def _leader_hint(exc: grpc.RpcError) -> str:
    if not isinstance(exc, grpc.Call):
        return ""
    for key, value in exc.trailing_metadata() or ():
        if key == LEADER_METADATA_KEY:
            return str(value)
    return ""


class Client:
    """A client of a shardlite cluster: give it one endpoint or several.

    With several, it sends writes and LINEARIZABLE reads to the leader (found
    with Status, and again whenever it fails), spreads SERIALIZABLE reads over
    all of them, and when a node is unavailable or unreachable moves to the
    next with backoff, retrying a write with the same request id: applied
    once, wherever it lands (node/endpoints.py)."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        org: str = "",
        namespace: str = "default",
        timeout: float = 10.0,
        client_id: str | None = None,
        max_message_bytes: int = 64 << 20,
        credentials: grpc.ChannelCredentials | None = None,
        on_retry: Callable[[str], None] | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: a bearer token sent on every call (for nodes with
        authentication on)."""
        self._endpoints = Endpoints(endpoint)
        # Told why, each time a call is retried (the CLI says so once).
        self.on_retry = on_retry
        self.org = org
        self.namespace = namespace
        self.timeout = timeout
        # Never the caller's id alone: see the module docstring.
        self.client_id = incarnation_id(client_id if client_id is not None else uuid.uuid4().hex)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._lock = threading.Lock()  # the routing state, shared by threads
        self._nodes = [
            _Stubs.open(address, credentials, max_message_bytes, token)
            for address in self._endpoints.addresses
        ]

    @property
    def endpoint(self) -> str:
        """The node this client talks to now."""
        return self._endpoints.addresses[self._endpoints.current]

    @property
    def endpoints(self) -> builtins.list[str]:
        return list(self._endpoints.addresses)

    def close(self) -> None:
        for node in self._nodes:
            node.channel.close()

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

    def _call(
        self,
        method: Callable[[_Stubs], Any],
        request: Any,
        *,
        retry: bool,
        route: Route = Route.LEADER,
    ) -> Any:
        """Call with the client's deadline; on UNAVAILABLE (or an endpoint
        that does not answer in its share of the time) retry the same request,
        so the same request_id, on the next endpoint with backoff until the
        deadline."""
        deadline = time.monotonic() + self.timeout
        unavailable: ClientError | None = None
        endpoints = self._endpoints
        backoff = FIRST_BACKOFF
        while True:
            if route is Route.LEADER and endpoints.leader is None:
                self._find_leader(deadline)
            with self._lock:
                index = endpoints.pick(route)
            remaining = deadline - time.monotonic()
            # With several endpoints one that hangs gets a share of the time only.
            attempt = min(remaining, max(self.timeout / 3, 1.0)) if endpoints.several else remaining
            try:
                reply = method(self._nodes[index])(request, timeout=max(attempt, 0.001))
            except grpc.RpcError as exc:
                error = _error(exc)
                timed_out = error.code == grpc.StatusCode.DEADLINE_EXCEEDED
                if unavailable is not None and timed_out and time.monotonic() >= deadline:
                    # A retry ran out of time: the node's own answer says more
                    # (why it is unavailable, whether the outcome is unknown).
                    raise unavailable from None
                shed = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                moving_on = error.code == grpc.StatusCode.UNAVAILABLE or (
                    timed_out and endpoints.several
                )
                if not retry or not (moving_on or shed):
                    raise error from None
                if error.code != grpc.StatusCode.DEADLINE_EXCEEDED or unavailable is None:
                    unavailable = error
                if shed:  # overloaded, not down: back off, then the same node again
                    delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                else:
                    with self._lock:
                        delay = endpoints.failed(index, _leader_hint(exc))
                if time.monotonic() + delay >= deadline:
                    raise unavailable from None
                if self.on_retry is not None:
                    self.on_retry(f"{endpoints.addresses[index]}: {error}")
                time.sleep(delay)
                continue
            with self._lock:
                endpoints.succeeded(index)
            return reply

    def _find_leader(self, deadline: float) -> None:
        """Ask the endpoints, current first, who leads; remember it if it is
        one of them. Quietly does nothing when none knows (an election): the
        call goes to the current endpoint, which waits for a leader itself."""
        endpoints = self._endpoints
        count = len(endpoints.addresses)
        for step in range(count):
            index = (endpoints.current + step) % count
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                status = self._nodes[index].kv.Status(
                    kv_pb2.StatusRequest(), timeout=min(remaining, 1.0)
                )
            except grpc.RpcError:
                continue
            with self._lock:
                if endpoints.learn_leader(index, status):
                    return

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
        reply = self._call(lambda n: n.kv.Put, request, retry=True)
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
        reply = self._call(lambda n: n.kv.Delete, request, retry=True)
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
        reply = self._call(lambda n: n.kv.Batch, request, retry=True)
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
        reply = self._call(lambda n: n.kv.Get, request, retry=True, route=read_route(consistency))
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
        """The keys under `prefix` in order, streamed. Each message must come
        within the client's timeout (a slow consumer does not count against
        it). When the node fails mid-way, the listing goes on after the last
        key seen on another endpoint: the rest is read there, at a later point."""
        where = self._where(org, namespace)
        last, seen = start_after, 0
        if limit < 0:
            raise ValueError(f"limit must be 0 (no limit) or more, not {limit}")

        def open_list(node: _Stubs) -> Iterator[kv_pb2.ListResponse]:
            request = kv_pb2.ListRequest(
                prefix=prefix,
                start_after=last,
                limit=limit - seen if limit else 0,
                consistency=consistency,
                org=where[0],
                namespace=where[1],
            )
            stream: Iterator[kv_pb2.ListResponse] = iter(node.kv.List(request))
            return stream

        for chunk in self._stream(open_list, read_route(consistency), self.timeout):
            for item in chunk.items:
                last, seen = item.key, seen + 1
                yield Entry(item.key, item.value, item.version)

    def namespaces(self, org: str | None = None) -> builtins.list[str]:
        request = kv_pb2.ListNamespacesRequest(org=self.org if org is None else org)
        return list(
            self._call(
                lambda n: n.kv.ListNamespaces, request, retry=True, route=Route.ANY
            ).namespaces
        )

    def subscribe(
        self,
        from_index: int = 0,
        *,
        timeout: float | None = None,
        orgs: Sequence[str] = (),
        namespace: str = "",
        prefix: str = "",
    ) -> Iterator[tuple[int, frame_pb2.Frame]]:
        """Committed frames from `from_index` (0 = from now on), as they commit;
        only those of `orgs` (default: every org the token may read), of
        `namespace` ("" = any), narrowed to keys under `prefix`. Resume with
        the last index received + 1. Whether each applied: `events`."""
        for reply in self.events(
            from_index, timeout=timeout, orgs=orgs, namespace=namespace, prefix=prefix
        ):
            yield reply.index, reply.frame

    def events(
        self,
        from_index: int = 0,
        *,
        timeout: float | None = None,
        orgs: Sequence[str] = (),
        namespace: str = "",
        prefix: str = "",
    ) -> Iterator[kv_pb2.SubscribeResponse]:
        """Like `subscribe`, with each frame's outcome (APPLIED, CONDITION_FAILED,
        INVALID) and result (versions, the failed condition, why invalid).

        When the node fails, the stream goes on from the next index on another
        endpoint: no frame twice, none missed. `timeout` bounds the whole
        stream (None: no bound)."""
        if from_index == 0:  # "from now on": pin where now is, so a resume has no gap
            from_index = int(self.status().commit_index) + 1
        position = StreamPosition(from_index)

        def open_subscribe(node: _Stubs) -> Iterator[kv_pb2.SubscribeResponse]:
            request = position.request(orgs, namespace, prefix)
            stream: Iterator[kv_pb2.SubscribeResponse] = iter(
                node.kv.Subscribe(request, timeout=remaining())
            )
            return stream

        ends = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if ends is None else max(ends - time.monotonic(), 0.001)

        for reply in self._stream(open_subscribe, Route.CURRENT, None):
            if position.take(reply):
                yield reply

    def _stream(
        self,
        open_stream: Callable[[_Stubs], Iterator[M]],
        route: Route,
        per_message: float | None,
    ) -> Iterator[M]:
        """Messages of a server stream, opened again on another endpoint when
        one fails (UNAVAILABLE, or no message within `per_message` seconds);
        `open_stream` starts it where the caller got to. Gives up after every
        endpoint failed twice without a message in between."""
        endpoints = self._endpoints
        failures = 0
        while True:
            with self._lock:
                index = endpoints.pick(route)
            call = open_stream(self._nodes[index])
            try:
                address = endpoints.addresses[index]
                for message in _within(call, per_message, address):
                    failures = 0
                    yield message
                return
            except grpc.RpcError as exc:
                error = _error(exc)
                hint = _leader_hint(exc)
            except _Silent as silent:
                error, hint = silent.error, ""
            failures += 1
            if failures > 2 * len(endpoints.addresses):
                raise error from None
            if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # The node ends a stream it has served for long (a List holds a
                # snapshot at most a minute), or is overloaded: go on there.
                time.sleep(FIRST_BACKOFF * failures)
                continue
            moving_on = error.code in (UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not moving_on or not endpoints.several:
                raise error from None
            with self._lock:
                delay = endpoints.failed(index, hint)
            time.sleep(delay)

    def status(self) -> kv_pb2.StatusResponse:
        reply: kv_pb2.StatusResponse = self._call(
            lambda n: n.kv.Status, kv_pb2.StatusRequest(), retry=True, route=Route.CURRENT
        )
        return reply

    # -- cluster administration -----------------------------------------------

    def members(self) -> raft_pb2.MembersResponse:
        reply: raft_pb2.MembersResponse = self._call(
            lambda n: n.cluster.Members, raft_pb2.MembersRequest(), retry=True, route=Route.CURRENT
        )
        return reply

    def add_member(
        self, name: str, address: str, *, learner_only: bool = False
    ) -> builtins.list[raft_pb2.Member]:
        request = raft_pb2.AddMemberRequest(name=name, address=address, learner_only=learner_only)
        return list(self._call(lambda n: n.cluster.AddMember, request, retry=True).members)

    def remove_member(self, name: str) -> builtins.list[raft_pb2.Member]:
        request = raft_pb2.RemoveMemberRequest(name=name)
        return list(self._call(lambda n: n.cluster.RemoveMember, request, retry=True).members)

    def transfer_leader(self, name: str = "") -> str:
        request = raft_pb2.TransferLeaderRequest(name=name)
        reply = self._call(lambda n: n.cluster.TransferLeader, request, retry=True)
        return str(reply.leader)

    # -- maintenance ----------------------------------------------------------

    def backup(
        self,
        out: Path,
        *,
        timeout: float = 3600.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Download a consistent backup of the node as the new file `out`,
        verify it, and return its index. Written atomically: a temporary file
        beside `out`, fsynced, verified, then renamed (a failure leaves no `out`)."""
        from shardlite.node.archive import ArchiveError, verify_archive
        from shardlite.replication.durable import replace_durably

        if out.exists():
            raise ValueError(f"{out} already exists: give a new file name")
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent} is not a directory")
        partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            size = -1
            written = 0
            with open(partial, "xb") as f:
                maintenance = self._nodes[self._endpoints.current].maintenance
                for chunk in maintenance.Backup(kv_pb2.BackupRequest(), timeout=timeout):
                    if chunk.manifest:
                        size = chunk.file_size
                        continue
                    if size < 0 or chunk.offset != written:
                        raise ValueError(
                            f"the backup stream is out of order at byte {written} "
                            f"(chunk at {chunk.offset})"
                        )
                    f.write(chunk.data)
                    written += len(chunk.data)
                    if progress is not None:
                        progress(written, size)
                if written != size:
                    raise ValueError(f"the backup stream ended at byte {written} of {size}")
                f.flush()
                os.fsync(f.fileno())
            try:
                index = verify_archive(partial).index
            except ArchiveError as exc:
                raise ValueError(f"the downloaded backup is not usable: {exc}") from None
            replace_durably(partial, out)
            return index
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            partial.unlink(missing_ok=True)
