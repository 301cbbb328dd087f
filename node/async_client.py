"""An asyncio client for a shardlite node that coalesces concurrent calls.

    async with AsyncClient("127.0.0.1:7001", namespace="app") as kv:
        written = await kv.put("k", b"v")
        entry = await kv.get("k")

The same surface as the sync Client (node/client.py) where it makes sense:
put, delete, batch, get, status, close; the same errors (ClientError,
ConditionFailedError) and results (WriteResult, Entry); every call has a
deadline; every write carries a request_id `(client_id, seq)` and a write
retried after UNAVAILABLE keeps it, so it is applied at most once.

Coalescing, like group commit: each call is queued in a lane (writes; gets by
consistency). A lane sends whatever is queued as ONE MultiWrite (MultiGet)
whenever fewer than `max_in_flight` of its calls are in flight, so a lone
caller is sent at once (no timer: at the end of the loop turn it was queued
in, so the callers one answer woke go together) and under load each call
carries everything that arrived while the previous ones were out, bounded by
`max_ops_per_call` ops and `max_bytes_per_call` bytes. Every op is still its
own write on the node (its own frame, index, version and status): each
caller gets its own result or its own exception, never another's.

Several endpoints, as the sync Client: each call goes where node/endpoints.py
routes it (writes and LINEARIZABLE gets to the leader, SERIALIZABLE gets
spread); a call that finds its node unavailable or silent is queued again
(same requests, same request ids) and goes to the next node. `list()` and
`subscribe()` are async iterators that resume on another node after the last
key or index seen.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from shardlite.node import bearer
from shardlite.node.client import (
    CONDITION_ACTUAL,
    CONDITION_EXPECTED,
    CONDITION_KEY,
    LEADER_METADATA_KEY,
    LINEARIZABLE,
    SERIALIZABLE,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Entry,
    Put,
    StreamPosition,
    WriteResult,
    incarnation_id,
    make_error,
    trailer_dict,
)
from shardlite.node.endpoints import Endpoints, Route, read_route
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc

__all__ = [
    "LINEARIZABLE",
    "AsyncClient",
    "ClientError",
    "Condition",
    "ConditionFailedError",
    "Delete",
    "Entry",
    "Put",
    "WriteResult",
]

UNAVAILABLE_CODE = grpc.StatusCode.UNAVAILABLE.value[0]
# Status numbers (OpError.code) back to grpc's codes.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Retry backoff after UNAVAILABLE, as the sync client's.
FIRST_DELAY = 0.05
MAX_DELAY = 1.0
# The node refuses more than this many ops in one multi call (node/service.py).
NODE_MAX_MULTI_OPS = 10_000


def _op_error(error: kv_pb2.OpError) -> ClientError:
    trailers = (
        {
            CONDITION_KEY: error.failed_key,
            CONDITION_EXPECTED: str(error.failed_expected),
            CONDITION_ACTUAL: str(error.failed_actual),
        }
        if error.failed_key
        else {}
    )
    return make_error(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message, trailers)


def _rpc_error(exc: grpc.aio.AioRpcError) -> ClientError:
    return make_error(exc.code(), exc.details() or "", trailer_dict(exc.trailing_metadata()))


def _hint(exc: grpc.aio.AioRpcError) -> str:
    trailers: Any = exc.trailing_metadata() or ()
    for key, value in trailers:
        if key == LEADER_METADATA_KEY:
            return str(value)
    return ""


@dataclass(eq=False)
class _Op:
    """One caller's op waiting in a lane: its request (kept as is across
    retries, so a write keeps its request_id), its size, its deadline (loop
    time) and the future its caller waits on."""

    request: Any  # kv_pb2.WriteRequest or kv_pb2.GetRequest
    size: int
    deadline: float
    future: asyncio.Future[Any]
    delay: float = FIRST_DELAY
    # The last UNAVAILABLE answer: reported instead of DEADLINE_EXCEEDED when
    # the deadline passes while retrying (it says why, and whether the
    # outcome is unknown).
    unavailable: ClientError | None = None


class _Endpoint:
    """One node this client talks to: its channel (sending the bearer token,
    if any, on every call) and its stub."""

    def __init__(
        self,
        address: str,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None,
        token: str | None = None,
    ) -> None:
        self.address = address
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        interceptors = bearer.aio_interceptors(token)
        self.channel = (
            grpc.aio.secure_channel(
                address, credentials, options=options, interceptors=interceptors
            )
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
        )
        self.stub = kv_pb2_grpc.KVStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)


@dataclass
class _Lane:
    """Queued ops of one kind, sent in multi calls, at most `max_in_flight` at once."""

    kind: str  # "write", or the consistency's name
    queue: deque[_Op] = field(default_factory=deque)
    in_flight: int = 0
    pump_scheduled: bool = False


class AsyncClient:
    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        org: str = "",
        namespace: str = "default",
        timeout: float = 10.0,
        client_id: str | None = None,
        max_message_bytes: int = 64 << 20,
        max_in_flight: int = 2,
        max_ops_per_call: int = 1_000,
        max_bytes_per_call: int = 4 << 20,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: a bearer token sent on every call (for a node with
        authentication on)."""
        if max_in_flight < 1 or not 1 <= max_ops_per_call <= NODE_MAX_MULTI_OPS:
            raise ValueError(
                f"max_in_flight must be >= 1 and max_ops_per_call 1 to {NODE_MAX_MULTI_OPS}"
            )
        self.org = org
        self.namespace = namespace
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_ops_per_call = max_ops_per_call
        self.max_bytes_per_call = max_bytes_per_call
        # Never the caller's id alone: see node/client.py's module docstring.
        self.client_id = incarnation_id(client_id if client_id is not None else uuid.uuid4().hex)
        self._seq = itertools.count(1)
        self._endpoints = Endpoints(endpoint)
        self._nodes = [
            _Endpoint(address, max_message_bytes, credentials, token)
            for address in self._endpoints.addresses
        ]
        self._finding_leader: asyncio.Lock | None = None
        self._writes = _Lane("write")
        self._gets = {
            consistency: _Lane(kv_pb2.Consistency.Name(consistency))
            for consistency in kv_pb2.Consistency.values()
        }
        self._senders: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.TimerHandle] = set()
        self._closed = False
        # RPCs sent, by method, and ops they carried (how well calls coalesce).
        self.calls: Counter[str] = Counter()
        self.ops_sent: Counter[str] = Counter()

    @property
    def endpoint(self) -> str:
        """The node this client talks to now."""
        return self._endpoints.addresses[self._endpoints.current]

    @property
    def endpoints(self) -> builtins.list[str]:
        return list(self._endpoints.addresses)

    async def close(self) -> None:
        """Stop: queued and in-flight calls fail (CANCELLED), the channel closes."""
        self._closed = True
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        for lane in (self._writes, *self._gets.values()):
            while lane.queue:
                closed = ClientError(grpc.StatusCode.CANCELLED, "the client was closed")
                self._fail(lane.queue.popleft(), closed)
        for task in list(self._senders):
            task.cancel()
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        for node in self._nodes:
            await node.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _request_id(self) -> frame_pb2.RequestId:
        return frame_pb2.RequestId(client_id=self.client_id, seq=next(self._seq))

    def _where(self, org: str | None, namespace: str | None) -> tuple[str, str]:
        return (
            self.org if org is None else org,
            self.namespace if namespace is None else namespace,
        )

    # -- writes ---------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_version: int | None = None,
        org: str | None = None,
        namespace: str | None = None,
    ) -> WriteResult:
        org, namespace = self._where(org, namespace)
        request = kv_pb2.PutRequest(
            org=org,
            namespace=namespace,
            key=key,
            value=value,
            expected_version=expected_version,
            request_id=self._request_id(),
        )
        result = await self._write(kv_pb2.WriteRequest(put=request))
        return WriteResult(index=result.put.index, version=result.put.version)

    async def delete(
        self,
        key: str,
        *,
        expected_version: int | None = None,
        org: str | None = None,
        namespace: str | None = None,
    ) -> WriteResult:
        org, namespace = self._where(org, namespace)
        request = kv_pb2.DeleteRequest(
            org=org,
            namespace=namespace,
            key=key,
            expected_version=expected_version,
            request_id=self._request_id(),
        )
        result = await self._write(kv_pb2.WriteRequest(delete=request))
        return WriteResult(index=result.delete.index, deleted=result.delete.deleted)

    async def batch(
        self,
        ops: Sequence[Put | Delete],
        conditions: Sequence[Condition] = (),
        *,
        org: str | None = None,
        namespace: str | None = None,
    ) -> builtins.list[WriteResult]:
        """Puts and deletes as ONE frame: all applied, or none (a condition)."""
        org, namespace = self._where(org, namespace)
        request = kv_pb2.BatchRequest(org=org, namespace=namespace, request_id=self._request_id())
        for op in ops:
            if isinstance(op, Put):
                request.ops.add(put=frame_pb2.PutOp(key=op.key, value=op.value))
            else:
                request.ops.add(delete=frame_pb2.DeleteOp(key=op.key))
        for condition in conditions:
            request.conditions.add(key=condition.key, version=condition.version)
        result = await self._write(kv_pb2.WriteRequest(batch=request))
        reply = result.batch
        return [
            WriteResult(index=reply.index, version=r.version, deleted=r.deleted)
            for r in reply.results
        ]

    async def _write(self, request: kv_pb2.WriteRequest) -> Any:
        result: kv_pb2.WriteResult = await self._submit(self._writes, request)
        return result

    # -- reads ----------------------------------------------------------------

    async def get(
        self,
        key: str,
        *,
        consistency: kv_pb2.Consistency.ValueType = LINEARIZABLE,
        org: str | None = None,
        namespace: str | None = None,
    ) -> Entry | None:
        org, namespace = self._where(org, namespace)
        lane = self._gets.get(consistency)
        if lane is None:  # the node's answer, without a call
            raise ClientError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown consistency {consistency}: use LINEARIZABLE (0) or SERIALIZABLE (1)",
            )
        request = kv_pb2.GetRequest(org=org, namespace=namespace, key=key, consistency=consistency)
        reply: kv_pb2.GetResponse = await self._submit(lane, request)
        return Entry(key, reply.value, reply.version) if reply.found else None

    async def status(self) -> kv_pb2.StatusResponse:
        """The status of the node this client talks to."""
        reply: kv_pb2.StatusResponse = await self._unary(
            lambda node: node.stub.Status, kv_pb2.StatusRequest(), Route.CURRENT
        )
        return reply

    async def namespaces(self, org: str | None = None) -> builtins.list[str]:
        request = kv_pb2.ListNamespacesRequest(org=self.org if org is None else org)
        reply = await self._unary(lambda node: node.stub.ListNamespaces, request, Route.ANY)
        return list(reply.namespaces)

    async def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        limit: int = 0,
        consistency: kv_pb2.Consistency.ValueType = LINEARIZABLE,
        org: str | None = None,
        namespace: str | None = None,
    ) -> AsyncIterator[Entry]:
        """The keys under `prefix` in order, as the sync Client's list(): each
        message within the timeout, resumed after the last key on another
        node when one fails."""
        where = self._where(org, namespace)
        if limit < 0:
            raise ValueError(f"limit must be 0 (no limit) or more, not {limit}")
        last, seen = start_after, 0

        def open_list(node: _Endpoint) -> Any:
            return node.stub.List(
                kv_pb2.ListRequest(
                    prefix=prefix,
                    start_after=last,
                    limit=limit - seen if limit else 0,
                    consistency=consistency,
                    org=where[0],
                    namespace=where[1],
                )
            )

        async for chunk in self._stream(open_list, read_route(consistency), self.timeout):
            for item in chunk.items:
                last, seen = item.key, seen + 1
                yield Entry(item.key, item.value, item.version)

    async def subscribe(
        self,
        from_index: int = 0,
        *,
        orgs: Sequence[str] = (),
        namespace: str = "",
        prefix: str = "",
    ) -> AsyncIterator[tuple[int, frame_pb2.Frame]]:
        """Committed frames from `from_index` (0 = from now on), resumed from
        the next index on another node when one fails: none missed, none twice.
        Only those of `orgs` (default: every org the token may read), of
        `namespace` ("" = any), narrowed to keys under `prefix`."""
        async for reply in self.events(from_index, orgs=orgs, namespace=namespace, prefix=prefix):
            yield reply.index, reply.frame

    async def events(
        self,
        from_index: int = 0,
        *,
        orgs: Sequence[str] = (),
        namespace: str = "",
        prefix: str = "",
    ) -> AsyncIterator[kv_pb2.SubscribeResponse]:
        if from_index == 0:  # pin "now", so that a resume has no gap
            from_index = int((await self.status()).commit_index) + 1
        position = StreamPosition(from_index)

        def open_subscribe(node: _Endpoint) -> Any:
            return node.stub.Subscribe(position.request(orgs, namespace, prefix))

        async for reply in self._stream(open_subscribe, Route.CURRENT, None):
            if position.take(reply):
                yield reply

    # -- calls to one node, with failover -------------------------------------

    def _attempt_timeout(self, remaining: float) -> float:
        """With several nodes, one that hangs gets a share of the time only."""
        if not self._endpoints.several:
            return max(remaining, 0.001)
        return max(min(remaining, max(self.timeout / 3, 1.0)), 0.001)

    async def _unary(
        self,
        method: Callable[[_Endpoint], Callable[..., Awaitable[Any]]],
        request: Any,
        route: Route,
    ) -> Any:
        """One call, on the next node after UNAVAILABLE (or silence) with
        backoff, until the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        unavailable: ClientError | None = None
        while True:
            if route is Route.LEADER:
                await self._find_leader(deadline)
            index = self._endpoints.pick(route)
            try:
                self.calls[type(request).__name__.removesuffix("Request")] += 1
                reply = await method(self._nodes[index])(
                    request, timeout=self._attempt_timeout(deadline - loop.time())
                )
                self._endpoints.succeeded(index)
                return reply
            except grpc.aio.AioRpcError as exc:
                error = _rpc_error(exc)
                hint = _hint(exc)
            silent = error.code == grpc.StatusCode.DEADLINE_EXCEEDED and loop.time() < deadline
            if error.code != grpc.StatusCode.UNAVAILABLE and not silent:
                if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and unavailable is not None:
                    raise unavailable
                raise error
            if error.code == grpc.StatusCode.UNAVAILABLE or unavailable is None:
                unavailable = error
            delay = self._endpoints.failed(index, hint)
            if loop.time() + delay >= deadline:
                raise unavailable
            await asyncio.sleep(delay)

    async def _find_leader(self, deadline: float) -> None:
        """Ask the nodes, the current one first, who leads (one search at a
        time); nothing when none knows: the call goes to the current node."""
        endpoints = self._endpoints
        if endpoints.leader is not None:
            return
        if self._finding_leader is None:
            self._finding_leader = asyncio.Lock()
        async with self._finding_leader:
            loop = asyncio.get_running_loop()
            count = len(endpoints.addresses)
            for step in range(count):
                if endpoints.leader is not None or loop.time() >= deadline:
                    return
                index = (endpoints.current + step) % count
                try:
                    self.calls["Status"] += 1
                    status = await self._nodes[index].stub.Status(
                        kv_pb2.StatusRequest(), timeout=min(deadline - loop.time(), 1.0)
                    )
                except grpc.aio.AioRpcError:
                    continue
                if endpoints.learn_leader(index, status):
                    return

    async def _stream(
        self,
        open_stream: Callable[[_Endpoint], Any],
        route: Route,
        per_message: float | None,
    ) -> AsyncIterator[Any]:
        """A server stream's messages, opened again (where the caller got to)
        on another node when one fails or sends nothing for `per_message`
        seconds; gives up after every node failed twice without a message."""
        endpoints = self._endpoints
        failures = 0
        while True:
            index = endpoints.pick(route)
            call = open_stream(self._nodes[index])
            hint = ""
            try:
                while True:
                    try:
                        async with asyncio.timeout(per_message):
                            message = await call.read()
                    except TimeoutError:
                        call.cancel()
                        error = ClientError(
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"{endpoints.addresses[index]} sent nothing for {per_message}s "
                            "in a stream",
                        )
                        break
                    if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                        return
                    failures = 0
                    yield message
            except grpc.aio.AioRpcError as exc:
                error, hint = _rpc_error(exc), _hint(exc)
            finally:
                call.cancel()
            failures += 1
            if failures > 2 * len(endpoints.addresses):
                raise error
            if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # A List served for long (it holds a snapshot at most a minute),
                # or an overloaded node: go on there, after a pause.
                await asyncio.sleep(FIRST_DELAY * failures)
                continue
            moving_on = error.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            if not moving_on or not endpoints.several:
                raise error
            await asyncio.sleep(endpoints.failed(index, hint))

    # -- the lanes ------------------------------------------------------------

    async def _submit(self, lane: _Lane, request: Any) -> Any:
        """Queue one op and wait for its own answer, until its deadline."""
        if self._closed:
            raise ClientError(grpc.StatusCode.CANCELLED, "the client is closed")
        loop = asyncio.get_running_loop()
        seconds = self.timeout
        op = _Op(request, request.ByteSize(), loop.time() + seconds, loop.create_future())
        lane.queue.append(op)
        self._pump_soon(lane, loop)
        try:
            async with asyncio.timeout_at(op.deadline):
                return await op.future
        except TimeoutError:
            if op.unavailable is not None:
                raise op.unavailable from None
            raise ClientError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no answer within {seconds:g}s"
                + (" (a write's outcome is unknown)" if lane is self._writes else ""),
            ) from None

    def _pump_soon(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Pump once the callers already woken have run: an answer wakes all of
        its callers in one turn of the loop, and the ops they queue next then
        share one call, instead of the first going alone."""
        if not lane.pump_scheduled:
            lane.pump_scheduled = True
            loop.call_soon(self._scheduled_pump, lane)

    def _scheduled_pump(self, lane: _Lane) -> None:
        lane.pump_scheduled = False
        self._pump(lane)

    def _pump(self, lane: _Lane) -> None:
        """Send what is queued while fewer than max_in_flight calls are out."""
        while lane.queue and lane.in_flight < self.max_in_flight and not self._closed:
            ops = self._take(lane)
            if not ops:
                return
            lane.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(lane, ops))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    def _take(self, lane: _Lane) -> builtins.list[_Op]:
        """The next call's ops: in arrival order, bounded in count and bytes
        (an op larger than the byte bound goes alone); abandoned ones dropped."""
        ops: builtins.list[_Op] = []
        size = 0
        queue = lane.queue
        while queue and len(ops) < self.max_ops_per_call:
            op = queue[0]
            if op.future.done():  # its caller gave up
                queue.popleft()
                continue
            if ops and size + op.size > self.max_bytes_per_call:
                break
            queue.popleft()
            ops.append(op)
            size += op.size
        return ops

    async def _send(self, lane: _Lane, ops: builtins.list[_Op]) -> None:
        try:
            loop = asyncio.get_running_loop()
            # The call lasts as long as its most patient op.
            deadline = max(op.deadline for op in ops)
            route = self._route(lane)
            if route is Route.LEADER:
                await self._find_leader(deadline)
            index = self._endpoints.pick(route)
            node = self._nodes[index]
            timeout = self._attempt_timeout(deadline - loop.time())
            try:
                if lane is self._writes:
                    self.calls["MultiWrite"] += 1
                    self.ops_sent["MultiWrite"] += len(ops)
                    writes = await node.stub.MultiWrite(
                        kv_pb2.MultiWriteRequest(writes=[op.request for op in ops]),
                        timeout=timeout,
                    )
                    results: Sequence[Any] = writes.results
                else:
                    self.calls["MultiGet"] += 1
                    self.ops_sent["MultiGet"] += len(ops)
                    gets = await node.stub.MultiGet(
                        kv_pb2.MultiGetRequest(gets=[op.request for op in ops]),
                        timeout=timeout,
                    )
                    results = gets.results
            except grpc.aio.AioRpcError as exc:
                error = _rpc_error(exc)
                if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and loop.time() < deadline:
                    # Silent within its share of the time: try another node
                    # (a write keeps its request id: applied once whatever
                    # this one did with it).
                    error = ClientError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{node.address} did not answer within {timeout:.1f}s"
                        + (" (the write's outcome is unknown)" if lane is self._writes else ""),
                    )
                if error.code == grpc.StatusCode.UNAVAILABLE:
                    self._endpoints.failed(index, _hint(exc))
                self._call_failed(lane, ops, error)
                return
            self._endpoints.succeeded(index)
            if any(
                r.WhichOneof("result") == "error" and r.error.code == UNAVAILABLE_CODE
                for r in results
            ):
                hint = next((r.error.leader_hint for r in results if r.error.leader_hint), "")
                self._endpoints.failed(index, hint)
            if len(results) != len(ops):
                error = ClientError(
                    grpc.StatusCode.INTERNAL,
                    f"the node answered {len(results)} results for {len(ops)} ops",
                )
                for op in ops:
                    self._fail(op, error)
                return
            self._answer(lane, ops, results)
        except asyncio.CancelledError:  # close()
            for op in ops:
                self._fail(op, ClientError(grpc.StatusCode.CANCELLED, "the client was closed"))
            raise
        finally:
            lane.in_flight -= 1
            self._pump(lane)

    def _route(self, lane: _Lane) -> Route:
        if lane is self._gets.get(SERIALIZABLE):
            return Route.ANY
        return Route.LEADER

    def _answer(self, lane: _Lane, ops: builtins.list[_Op], results: Sequence[Any]) -> None:
        """Each op its own result; the UNAVAILABLE ones are retried together."""
        retry: list[_Op] = []
        for op, result in zip(ops, results, strict=True):
            if op.future.done():
                continue
            if result.WhichOneof("result") != "error":
                # WriteResult as it is (put/delete/batch); a get's GetResponse.
                op.future.set_result(result if lane is self._writes else result.get)
                continue
            error = _op_error(result.error)
            if error.code == grpc.StatusCode.UNAVAILABLE:
                retry.append(op)
                op.unavailable = error
            elif error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and lane is not self._writes:
                # This value does not fit a shared answer: read it alone.
                self._get_alone(op)
            else:
                self._fail(op, error)
        if retry:
            self._retry_later(lane, retry)

    def _call_failed(self, lane: _Lane, ops: builtins.list[_Op], error: ClientError) -> None:
        """The call as a whole failed: UNAVAILABLE (the node down or unreachable)
        and RESOURCE_EXHAUSTED (overloaded: nothing was started) are retried
        with backoff; any other status is every op's answer."""
        if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            for op in ops:
                op.unavailable = error
            self._retry_later(lane, ops)
            return
        for op in ops:
            if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and op.unavailable is not None:
                self._fail(op, op.unavailable)
            else:
                self._fail(op, error)

    def _retry_later(self, lane: _Lane, ops: builtins.list[_Op]) -> None:
        """Queue `ops` again (same requests: a write keeps its request_id) after
        the smallest of their backoffs; an op whose deadline would pass first
        gets its UNAVAILABLE answer now. One timer for the group."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = []
        for op in ops:
            if now + op.delay >= op.deadline:
                assert op.unavailable is not None
                self._fail(op, op.unavailable)
            else:
                waiting.append(op)
        if not waiting or self._closed:
            return
        delay = min(op.delay for op in waiting)
        for op in waiting:
            op.delay = min(op.delay * 2, MAX_DELAY)

        def requeue() -> None:
            self._retries.discard(handle)
            lane.queue.extendleft(reversed(waiting))  # ahead of newer ops
            self._pump(lane)

        handle = loop.call_later(delay, requeue)
        self._retries.add(handle)

    def _get_alone(self, op: _Op) -> None:
        async def alone() -> None:
            loop = asyncio.get_running_loop()
            remaining = max(op.deadline - loop.time(), 0.001)
            try:
                self.calls["Get"] += 1
                node = self._nodes[self._endpoints.pick(Route.LEADER)]
                reply = await node.stub.Get(op.request, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                self._fail(op, _rpc_error(exc))
                return
            if not op.future.done():
                op.future.set_result(reply)

        task = asyncio.get_running_loop().create_task(alone())
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    @staticmethod
    def _fail(op: _Op, error: ClientError) -> None:
        if not op.future.done():
            # A copy per caller: one exception raised in many tasks would
            # carry one traceback for them all.
            op.future.set_exception(error.clone())
