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
caller is sent at once (no timer, no linger) and under load each call
carries everything that arrived while the previous ones were out, bounded by
`max_ops_per_call` ops and `max_bytes_per_call` bytes. Every op is still its
own write on the node (its own frame, index, version and status): each
caller gets its own result or its own exception, never another's.

The one endpoint lives in `_Endpoint`: failover over several (issue 14) is a
matter of choosing another there and re-queueing what UNAVAILABLE sent back.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.client import (
    LINEARIZABLE,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Entry,
    Put,
    WriteResult,
    incarnation_id,
)
from proto import frame_pb2, kv_pb2, kv_pb2_grpc

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

# Status numbers (OpError.code) back to grpc's codes.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Retry backoff after UNAVAILABLE, as the sync client's.
FIRST_DELAY = 0.05
MAX_DELAY = 1.0
# The node refuses more than this many ops in one multi call (node/service.py).
NODE_MAX_MULTI_OPS = 10_000


def _client_error(code: grpc.StatusCode, details: str) -> ClientError:
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ConditionFailedError(code, details)
    return ClientError(code, details)


def _op_error(error: kv_pb2.OpError) -> ClientError:
    return _client_error(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message)


def _rpc_error(exc: grpc.aio.AioRpcError) -> ClientError:
    return _client_error(exc.code(), exc.details() or "")


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
    """The node this client talks to: its channel and stub."""

    def __init__(
        self, address: str, max_message_bytes: int, credentials: grpc.ChannelCredentials | None
    ) -> None:
        self.address = address
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.channel = (
            grpc.aio.secure_channel(address, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=options)
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


class AsyncClient:
    def __init__(
        self,
        endpoint: str,
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
    ) -> None:
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
        self._endpoint = _Endpoint(endpoint, max_message_bytes, credentials)
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
        return self._endpoint.address

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
        await self._endpoint.close()

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
        """The node's status (one unary call, retried after UNAVAILABLE)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = FIRST_DELAY
        unavailable: ClientError | None = None
        while True:
            remaining = max(deadline - loop.time(), 0.001)
            try:
                self.calls["Status"] += 1
                reply: kv_pb2.StatusResponse = await self._endpoint.stub.Status(
                    kv_pb2.StatusRequest(), timeout=remaining
                )
                return reply
            except grpc.aio.AioRpcError as exc:
                error = _rpc_error(exc)
            if unavailable is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise unavailable
            if error.code != grpc.StatusCode.UNAVAILABLE or loop.time() + delay >= deadline:
                raise error
            unavailable = error
            await asyncio.sleep(delay)  # backoff before a retry
            delay = min(delay * 2, MAX_DELAY)

    # -- the lanes ------------------------------------------------------------

    async def _submit(self, lane: _Lane, request: Any) -> Any:
        """Queue one op and wait for its own answer, until its deadline."""
        if self._closed:
            raise ClientError(grpc.StatusCode.CANCELLED, "the client is closed")
        loop = asyncio.get_running_loop()
        seconds = self.timeout
        op = _Op(request, request.ByteSize(), loop.time() + seconds, loop.create_future())
        lane.queue.append(op)
        self._pump(lane)
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

    def _take(self, lane: _Lane) -> list[_Op]:
        """The next call's ops: in arrival order, bounded in count and bytes
        (an op larger than the byte bound goes alone); abandoned ones dropped."""
        ops: list[_Op] = []
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

    async def _send(self, lane: _Lane, ops: list[_Op]) -> None:
        try:
            loop = asyncio.get_running_loop()
            # The call lasts as long as its most patient op.
            remaining = max(max(op.deadline for op in ops) - loop.time(), 0.001)
            try:
                if lane is self._writes:
                    self.calls["MultiWrite"] += 1
                    self.ops_sent["MultiWrite"] += len(ops)
                    writes = await self._endpoint.stub.MultiWrite(
                        kv_pb2.MultiWriteRequest(writes=[op.request for op in ops]),
                        timeout=remaining,
                    )
                    results: Sequence[Any] = writes.results
                else:
                    self.calls["MultiGet"] += 1
                    self.ops_sent["MultiGet"] += len(ops)
                    gets = await self._endpoint.stub.MultiGet(
                        kv_pb2.MultiGetRequest(gets=[op.request for op in ops]),
                        timeout=remaining,
                    )
                    results = gets.results
            except grpc.aio.AioRpcError as exc:
                self._call_failed(lane, ops, _rpc_error(exc))
                return
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

    def _answer(self, lane: _Lane, ops: list[_Op], results: Sequence[Any]) -> None:
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

    def _call_failed(self, lane: _Lane, ops: list[_Op], error: ClientError) -> None:
        """The call as a whole failed: UNAVAILABLE (the node down or unreachable)
        is retried; any other status is every op's answer."""
        if error.code == grpc.StatusCode.UNAVAILABLE:
            for op in ops:
                op.unavailable = error
            self._retry_later(lane, ops)
            return
        for op in ops:
            if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and op.unavailable is not None:
                self._fail(op, op.unavailable)
            else:
                self._fail(op, error)

    def _retry_later(self, lane: _Lane, ops: list[_Op]) -> None:
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
                reply = await self._endpoint.stub.Get(op.request, timeout=remaining)
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
            op.future.set_exception(type(error)(error.code, error.details))
