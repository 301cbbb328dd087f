"""The KV service: validates requests, turns writes into Frames, serves reads.

Handlers raise node.errors / replication Rejected; node/rpc.py turns those
into gRPC statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from shardlite.node import auth, frames, names, rpc
from shardlite.node.applier import Applier
from shardlite.node.config import NodeConfig
from shardlite.node.errors import (
    ConditionFailed,
    InvalidArgument,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from shardlite.node.paths import Paths, check_consistency
from shardlite.node.shard import LIST_CHUNK_BYTES, scan
from shardlite.node.shards import ShardStore
from shardlite.node.subscribe_filter import FrameFilter
from shardlite.replication.replicator import Compacted, Replicator
from shardlite.v1 import frame_pb2, kv_pb2

# One List stream holds a read snapshot at most this long (then it ends
# RESOURCE_EXHAUSTED with the key to resume after).
LIST_MAX_SECONDS = 60.0
# Concurrent Subscribe streams one node serves.
MAX_SUBSCRIBE_STREAMS = 256
# Writes in one MultiWrite, gets in one MultiGet (like a Batch's ops).
MAX_MULTI_OPS = 10_000
# What one found get adds to a MultiGet answer besides its value and key (tags,
# lengths, the version and the found flag), an upper bound.
GET_RESULT_BYTES = 32


class KVService:
    def __init__(
        self,
        config: NodeConfig,
        paths: Paths,
        store: ShardStore,
        replicator: Replicator,
        applier: Applier,
        version: str,
    ) -> None:
        self.config = config
        self.paths = paths
        self.store = store
        self.replicator = replicator
        self.applier = applier
        self.version = version
        self.limits = frames.Limits(self.config.max_value_bytes, self.config.max_request_bytes)
        self.list_max_seconds = LIST_MAX_SECONDS  # read at start: tests may change them
        self.max_subscribe_streams = MAX_SUBSCRIBE_STREAMS
        self._subscribers = 0

    @property
    def subscribers(self) -> int:
        """Subscribe streams open now."""
        return self._subscribers

    # -- writes -------------------------------------------------------------

    async def Put(self, request: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        return _put_response(await self._write(_put_frame(request, self.limits)))

    async def Delete(self, request: kv_pb2.DeleteRequest, context: Any) -> kv_pb2.DeleteResponse:
        return _delete_response(await self._write(_delete_frame(request, self.limits)))

    async def Batch(self, request: kv_pb2.BatchRequest, context: Any) -> kv_pb2.BatchResponse:
        return _batch_response(await self._write(_batch_frame(request, self.limits)))

    async def _write(self, gated: frame_pb2.Frame) -> frame_pb2.FrameResult:
        return _checked(await self.paths.write(gated))

    async def MultiWrite(
        self, request: kv_pb2.MultiWriteRequest, context: Any
    ) -> kv_pb2.MultiWriteResponse:
        """Each write as the unary RPC of its kind would run it (its own frame,
        index and status), the valid ones proposed together. The call itself
        fails only for what is the call's: more than MAX_MULTI_OPS writes."""
        writes = request.writes
        if len(writes) > MAX_MULTI_OPS:
            raise InvalidArgument(
                f"MultiWrite has {len(writes)} writes; the limit is {MAX_MULTI_OPS}: "
                "split it into several calls"
            )
        response = kv_pb2.MultiWriteResponse()
        slots = [response.results.add() for _ in writes]  # filled in place, in order
        gated: list[frame_pb2.Frame] = []
        kinds: list[tuple[int, str]] = []
        grant = auth.current()
        for position, write in enumerate(writes):
            kind = write.WhichOneof("write")
            try:
                if kind is None:
                    raise InvalidArgument(
                        f"write {position} is neither a put, a delete nor a batch"
                    )
                grant.check_write(getattr(write, kind).org)  # before anything else
                gated.append(_FRAME_OF[kind](getattr(write, kind), self.limits))
            except (InvalidArgument, PermissionDenied) as exc:
                slots[position].error.CopyFrom(rpc.op_error(exc))
                continue
            kinds.append((position, kind))
        outcomes = await self.paths.write_many(gated)
        for (position, of_kind), outcome in zip(kinds, outcomes, strict=True):
            _fill(slots[position], of_kind, outcome)
        return response

    # -- reads --------------------------------------------------------------

    async def MultiGet(
        self, request: kv_pb2.MultiGetRequest, context: Any
    ) -> kv_pb2.MultiGetResponse:
        """Every get as Get would answer it, with one ReadIndex barrier for all
        the LINEARIZABLE ones (taken after the call arrived, so each sees every
        write acknowledged before it). A get whose value would push the answer
        past the node's message size fails alone (RESOURCE_EXHAUSTED: read it
        with Get)."""
        gets = request.gets
        if len(gets) > MAX_MULTI_OPS:
            raise InvalidArgument(
                f"MultiGet has {len(gets)} gets; the limit is {MAX_MULTI_OPS}: "
                "split it into several calls"
            )
        results: list[kv_pb2.GetResult | None] = [None] * len(gets)
        valid: list[tuple[int, str, str, str, bool]] = []
        grant = auth.current()
        for position, get in enumerate(gets):
            try:
                grant.check_read(get.org)  # before anything else
                org = names.check_org(get.org)
                namespace = names.check_namespace(get.namespace)
                key = names.check_key(get.key)
                check_consistency(get.consistency)
            except (InvalidArgument, PermissionDenied) as exc:
                results[position] = kv_pb2.GetResult(error=rpc.op_error(exc))
                continue
            valid.append((position, org, namespace, key, get.consistency == kv_pb2.LINEARIZABLE))
        barrier: dict[bool, Exception | None] = {}
        for linearizable in sorted({v[4] for v in valid}, reverse=True):
            try:
                await self.paths.wait_readable(
                    kv_pb2.LINEARIZABLE if linearizable else kv_pb2.SERIALIZABLE
                )
                barrier[linearizable] = None
            except (Unavailable, InvalidArgument) as exc:
                barrier[linearizable] = exc
        # One statement per shard (not one per get), then the answers in order.
        readable = [v for v in valid if barrier[v[4]] is None]
        keys_of: dict[tuple[str, str], list[str]] = defaultdict(list)
        for _, org, namespace, key, _ in readable:
            keys_of[(org, namespace)].append(key)
        values: dict[tuple[str, str], dict[str, tuple[bytes, int]]] = {}
        for (org, namespace), keys in keys_of.items():
            with self.store.use(org, namespace, create=False) as shard:
                values[(org, namespace)] = shard.get_many(keys) if shard is not None else {}
        room = self.config.max_request_bytes - frames.STREAM_OVERHEAD_BYTES
        for position, org, namespace, key, linearizable in valid:
            refused = barrier[linearizable]
            if refused is not None:
                results[position] = kv_pb2.GetResult(error=rpc.op_error(refused))
                continue
            found = values[(org, namespace)].get(key)
            if found is None:
                results[position] = kv_pb2.GetResult(get=kv_pb2.GetResponse(found=False))
                continue
            room -= len(found[0]) + len(key) + GET_RESULT_BYTES
            if room < 0:
                exhausted = ResourceExhausted(
                    f"get {position}: the answer would pass the node's "
                    f"{self.config.max_request_bytes}-byte messages; read this key with Get "
                    "or in a smaller MultiGet"
                )
                results[position] = kv_pb2.GetResult(error=rpc.op_error(exhausted))
                continue
            results[position] = kv_pb2.GetResult(
                get=kv_pb2.GetResponse(found=True, value=found[0], version=found[1])
            )
        return kv_pb2.MultiGetResponse(results=_every(results))

    async def Get(self, request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        org = names.check_org(request.org)
        namespace = names.check_namespace(request.namespace)
        key = names.check_key(request.key)
        await self.paths.wait_readable(request.consistency)
        with self.store.use(org, namespace, create=False) as shard:
            found = shard.get(key) if shard is not None else None
        if found is None:
            return kv_pb2.GetResponse(found=False)
        return kv_pb2.GetResponse(found=True, value=found[0], version=found[1])

    async def List(
        self, request: kv_pb2.ListRequest, context: Any
    ) -> AsyncIterator[kv_pb2.ListResponse]:
        """Chunks bounded in bytes (under the node's send limit); the SQLite
        reads run off the event loop; a stream holds its snapshot (and so keeps
        the shard's WAL from being checkpointed) for at most
        LIST_MAX_SECONDS, then ends RESOURCE_EXHAUSTED naming where to resume."""
        org = names.check_org(request.org)
        namespace = names.check_namespace(request.namespace)
        await self.paths.wait_readable(request.consistency)
        path = self.store.path(org, namespace)
        if not await asyncio.to_thread(path.exists):
            return
        chunk_bytes = min(LIST_CHUNK_BYTES, self.config.max_request_bytes // 2)
        chunks = scan(path, request.prefix, request.start_after, request.limit, 5000, chunk_bytes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.list_max_seconds
        last_key = ""
        reading: asyncio.Future[list[tuple[str, bytes, int]] | None] | None = None
        try:
            while True:
                reading = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                chunk = await asyncio.shield(reading)
                if chunk is None:
                    return
                yield kv_pb2.ListResponse(
                    items=[kv_pb2.KeyValue(key=k, value=v, version=ver) for k, v, ver in chunk]
                )
                last_key = chunk[-1][0]
                if loop.time() >= deadline:
                    raise ResourceExhausted(
                        f"List ran for over {self.list_max_seconds:g}s (the server's bound on "
                        f"one stream); resume with start_after={last_key!r}"
                    )
        finally:
            # A cancelled stream: let the read in flight finish before closing
            # the scan (its connection and read snapshot) from another thread;
            # shielded, so that a second cancellation cannot skip the close.
            async def close_scan() -> None:
                if reading is not None and not reading.done():
                    with contextlib.suppress(Exception):
                        await reading
                await asyncio.to_thread(chunks.close)

            await asyncio.shield(close_scan())

    async def ListNamespaces(
        self, request: kv_pb2.ListNamespacesRequest, context: Any
    ) -> kv_pb2.ListNamespacesResponse:
        org = names.check_org(request.org)
        return kv_pb2.ListNamespacesResponse(namespaces=self.store.list_namespaces(org))

    async def Subscribe(
        self, request: kv_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[kv_pb2.SubscribeResponse]:
        """Committed frames with what applying them did (outcome, result), each
        streamed once it is applied on this node; at most MAX_SUBSCRIBE_STREAMS
        at once (RESOURCE_EXHAUSTED beyond). Only the frames of the request's
        orgs and namespace that the caller's token may read, narrowed to the
        request's key prefix (node/subscribe_filter.py)."""
        selected = FrameFilter.of(request, auth.current().may_read)
        if self._subscribers >= self.max_subscribe_streams:
            raise ResourceExhausted(
                f"this node already serves {self._subscribers} Subscribe streams (the limit); "
                "retry later or subscribe on another node"
            )
        self._subscribers += 1
        try:
            async for response in self._subscribe(request, selected):
                yield response
        finally:
            self._subscribers -= 1

    async def _subscribe(
        self, request: kv_pb2.SubscribeRequest, selected: FrameFilter
    ) -> AsyncIterator[kv_pb2.SubscribeResponse]:
        # 0: from the next frame to commit (entries in the log but not yet committed
        # included: they have not been streamed to anyone yet).
        start = request.from_index or self.replicator.status().commit_index + 1
        applier = self.applier
        try:
            async for batch in self.replicator.subscribe(start):
                for index, entry in batch:
                    if entry is None or not selected.keeps(entry):
                        continue
                    await applier.wait_applied(index)
                    responses = self._responses(index, entry, selected)
                    for n, response in enumerate(responses, start=1):
                        # An envelope's frames share the index: say where one
                        # cut mid-entry must resume.
                        response.more_at_index = n < len(responses)
                        yield response
        except Compacted as exc:
            raise OutOfRange(str(exc)) from exc
        if self.paths.closing:
            raise Unavailable("node is shutting down; resume from the next index elsewhere")

    def _responses(
        self, index: int, entry: frame_pb2.Frame, selected: FrameFilter
    ) -> list[kv_pb2.SubscribeResponse]:
        """What Subscribe sends for the entry at `index`: one response per
        frame it carries (an envelope's, in order) that the filter keeps."""
        responses = []
        for frame, outcome, result in self.applier.outcomes_of(index, entry):
            if not selected.keeps(frame):
                continue
            response = selected.narrow(
                kv_pb2.SubscribeResponse(index=index, frame=frame, outcome=outcome, result=result)
            )
            if response is None:
                continue
            if response.ByteSize() > self.config.max_request_bytes:
                # Only a retry can get here (the gate sized every frame with
                # its own results): it carries its original's result, which
                # belongs to a larger frame. result.index names that frame.
                del response.result.results[:]
            responses.append(response)
        return responses

    async def Status(self, request: kv_pb2.StatusRequest, context: Any) -> kv_pb2.StatusResponse:
        status = self.replicator.status()
        return kv_pb2.StatusResponse(
            node_id=self.config.node_id,
            replicator=status.kind,
            role=status.role,
            leader=status.leader,
            applied_index=self.applier.applied_index,
            open_shards=self.store.open_count,
            data_dir=str(self.config.data_dir),
            version=self.version,
            term=status.term,
            commit_index=status.commit_index,
            first_index=status.first_index,
            members=list(status.members),
            leader_address=(
                self.paths.leadership.leader_client_address
                if self.paths.leadership is not None
                else self.config.client_address
            ),
        )


# -- requests to frames, results to responses ------------------------------------


R = TypeVar("R")


def _every(results: list[R | None]) -> list[R]:
    """The results of a multi call, once every position holds one."""
    missing = [position for position, result in enumerate(results) if result is None]
    assert not missing, f"no result for ops {missing[:10]}"
    return [result for result in results if result is not None]


def _built(org: str, namespace: str, request_id: frame_pb2.RequestId) -> frame_pb2.Frame:
    """A request's frame, built field by field from its scalars (so nothing
    unknown rides along) with a trace_id of this node's: `frames.admit` checks
    it as the gate would."""
    frame = frames.new_frame(org, namespace)
    if request_id.client_id:
        frame.request_id.client_id = request_id.client_id
        frame.request_id.seq = request_id.seq
    return frame


def _put_frame(request: kv_pb2.PutRequest, limits: frames.Limits) -> frame_pb2.Frame:
    frame = _built(request.org, request.namespace, request.request_id)
    put = frame.ops.add().put
    put.key = request.key
    put.value = request.value
    if request.HasField("expected_version"):
        condition = frame.conditions.add()
        condition.key = request.key
        condition.version = request.expected_version
    return frames.admit(frame, limits)


def _delete_frame(request: kv_pb2.DeleteRequest, limits: frames.Limits) -> frame_pb2.Frame:
    frame = _built(request.org, request.namespace, request.request_id)
    frame.ops.add().delete.key = request.key
    if request.HasField("expected_version"):
        condition = frame.conditions.add()
        condition.key = request.key
        condition.version = request.expected_version
    return frames.admit(frame, limits)


def _batch_frame(request: kv_pb2.BatchRequest, limits: frames.Limits) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(org=request.org, namespace=request.namespace)
    frame.request_id.CopyFrom(request.request_id)
    frame.ops.extend(request.ops)
    frame.conditions.extend(request.conditions)
    return frames.gate(frame, limits)


# Each builds the checked frame of a request, or raises InvalidArgument.
_FRAME_OF: dict[str, Callable[[Any, frames.Limits], frame_pb2.Frame]] = {
    "put": _put_frame,
    "delete": _delete_frame,
    "batch": _batch_frame,
}


def _checked(result: frame_pb2.FrameResult) -> frame_pb2.FrameResult:
    """The result of an applied write, or what its applying refused."""
    if result.invalid:
        # Refused when applied (the gate let it through, the shard did not).
        raise InvalidArgument(f"the write was refused when applied: {result.invalid}")
    if result.condition_failed:
        raise ConditionFailed(result.failed_key, result.failed_expected, result.failed_actual)
    return result


def _put_response(result: frame_pb2.FrameResult) -> kv_pb2.PutResponse:
    return kv_pb2.PutResponse(index=result.index, version=result.results[0].version)


def _delete_response(result: frame_pb2.FrameResult) -> kv_pb2.DeleteResponse:
    return kv_pb2.DeleteResponse(index=result.index, deleted=result.results[0].deleted)


def _batch_response(result: frame_pb2.FrameResult) -> kv_pb2.BatchResponse:
    return kv_pb2.BatchResponse(index=result.index, results=result.results)


def _fill(slot: kv_pb2.WriteResult, kind: str, outcome: frame_pb2.FrameResult | Exception) -> None:
    """One write's result, set in its place in the response (no message built
    and copied per write)."""
    try:
        if isinstance(outcome, Exception):
            raise outcome
        result = _checked(outcome)
    except Exception as exc:
        slot.error.CopyFrom(rpc.op_error(exc))
        return
    if kind == "put":
        slot.put.index = result.index
        slot.put.version = result.results[0].version
    elif kind == "delete":
        slot.delete.index = result.index
        slot.delete.deleted = result.results[0].deleted
    else:
        slot.batch.index = result.index
        slot.batch.results.extend(result.results)
