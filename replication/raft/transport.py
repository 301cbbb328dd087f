"""Raft messages between nodes over gRPC.

One long-lived client stream per peer (`Raft.Send`), so a leader's appends are
pipelined: the sender never waits for a reply, replies come back as messages
on the peer's own stream to us. Messages queued while a peer is unreachable
are dropped (Raft retransmits) and the core is told the peer is unreachable.
Reconnects back off exponentially up to a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from proto import raft_pb2, raft_pb2_grpc
from replication.replicator import MalformedPeerMessage

from .cluster_id import METADATA_KEY, ClusterId
from .codec import message_from_pb, message_to_pb
from .messages import Message, MessageType
from .snapshots import SnapshotError, receive_files, stream_files

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
MAX_BACKOFF = 1.0
KEEPALIVE_MS = 10_000


def channel_options(keepalive_ms: int = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """A peer channel's options. It pings every `keepalive_ms` without
    traffic, with or without calls in flight (an idle Forward channel still
    notices a dead peer), and the server side must allow exactly that:
    server_options(keepalive_ms). A server that allows fewer pings answers
    GOAWAY too_many_pings and the channel drops (issue 11 item 9)."""
    return [
        ("grpc.max_send_message_length", 256 << 20),
        ("grpc.max_receive_message_length", 256 << 20),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # no cap: keepalive is the point
        # gRPC's own reconnect backoff grows to 2 minutes by default: a peer that
        # was down for a while would then wait that long to hear from its leader.
        # Capped at 250 ms, a restarted follower hears from its leader about 0.1 s
        # after it serves, against about 0.6 s at 1 s (docs/performance.md).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 250),
    ]


def server_options(keepalive_ms: int = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """What a node's gRPC server needs to accept its peers' keepalive pings
    (channel_options with the same `keepalive_ms`): pings without calls, as
    often as every half period (gRPC's default allows one per 5 minutes and
    strikes the rest); it pings idle clients on the same period too."""
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
    ]


GRPC_OPTIONS = channel_options()
SERVER_GRPC_OPTIONS = server_options()


Metadata = tuple[tuple[str, str], ...]
_refusals: dict[str, float] = {}


def _no_metadata() -> Metadata:
    return ()


def _refused(address: str, details: str) -> None:
    """A peer refused us (another cluster's member): say so, now and then."""
    now = asyncio.get_running_loop().time()
    if now - _refusals.get(address, -30.0) >= 30.0:
        _refusals[address] = now
        log.error("the peer at %s refuses this member: %s", address, details)


def _decode(pb: raft_pb2.RaftMessage) -> Message:
    try:
        return message_from_pb(pb)
    except ValueError as exc:  # an enum value this version does not know
        raise MalformedPeerMessage(f"not a Raft message this member understands: {exc}") from None


class _Peer:
    def __init__(
        self,
        nid: int,
        resolve: Callable[[int], str | None],
        on_unreachable: Callable[[int], None],
        metadata: Callable[[], Metadata],
    ) -> None:
        self.nid = nid
        self.resolve = resolve
        self.on_unreachable = on_unreachable
        self.metadata = metadata
        self.pending: list[Message] = []
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-peer-{nid}")
        self.channel: grpc.aio.Channel | None = None
        self.address: str | None = None

    def enqueue(self, messages: list[Message]) -> None:
        if len(self.pending) + len(messages) > MAX_QUEUED:
            self.pending.clear()  # hopelessly behind: drop, Raft will retransmit
            self.on_unreachable(self.nid)
            return
        self.pending.extend(messages)
        self.wake.set()

    async def _batches(self) -> AsyncIterator[raft_pb2.RaftBatch]:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.pending:
                batch, self.pending = self.pending, []
                yield raft_pb2.RaftBatch(messages=[message_to_pb(m) for m in batch])

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            address = self.resolve(self.nid)
            if address is None:
                self.pending.clear()
                await asyncio.sleep(backoff)
                continue
            if address != self.address or self.channel is None:
                if self.channel is not None:
                    await self.channel.close(None)
                self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
                self.address = address
            stub = raft_pb2_grpc.RaftStub(self.channel)
            try:
                await stub.Send(self._batches(), metadata=self.metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    _refused(address, exc.details() or "")
                elif exc.code() != grpc.StatusCode.CANCELLED:
                    log.debug("stream to %s (%s) broke: %s", self.nid, address, exc.code().name)
            self.pending.clear()
            self.on_unreachable(self.nid)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            # A healthy stream resets the backoff on the next successful write.
            if self.pending:
                backoff = 0.05

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.channel is not None:
            await self.channel.close(None)


class PeerTransport:
    """Sends a node's outgoing Raft messages to its peers."""

    def __init__(
        self,
        resolve: Callable[[int], str | None],
        on_unreachable: Callable[[int], None],
        snapshot_source: Callable[[int], Path | None] | None = None,
        on_snapshot_status: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.resolve = resolve
        self.on_unreachable = on_unreachable
        self.snapshot_source = snapshot_source
        self.on_snapshot_status = on_snapshot_status
        self._peers: dict[int, _Peer] = {}
        # What every peer RPC carries (the cluster id, set by the replicator).
        self.metadata: Callable[[], Metadata] = _no_metadata
        self._snapshot_sends: dict[int, asyncio.Task[None]] = {}
        # Fault injection for tests and chaos: peers we pretend not to reach.
        self.blocked: set[int] = set()

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for m in messages:
            if m.to in self.blocked:
                continue
            if m.type is MessageType.SNAP:
                self._send_snapshot(m)
                continue
            by_peer.setdefault(m.to, []).append(m)
        for nid, batch in by_peer.items():
            peer = self._peers.get(nid)
            if peer is None:
                peer = self._peers[nid] = _Peer(
                    nid, self.resolve, self.on_unreachable, lambda: self.metadata()
                )
            peer.enqueue(batch)

    def _send_snapshot(self, m: Message) -> None:
        """Stream the snapshot's files, then its message (§7 InstallSnapshot),
        one stream per peer at a time; report the outcome to the core."""
        running = self._snapshot_sends.get(m.to)
        if running is not None and not running.done():
            return
        self._snapshot_sends[m.to] = asyncio.get_running_loop().create_task(
            self._stream_snapshot(m), name=f"raft-snapshot-{m.to}"
        )

    async def _stream_snapshot(self, m: Message) -> None:
        ok = False
        try:
            address = self.resolve(m.to)
            assert m.snapshot is not None
            directory = self.snapshot_source(m.snapshot.index) if self.snapshot_source else None
            if address is None or directory is None:
                log.warning(
                    "cannot send snapshot %d to %d: no files or no address", m.snapshot.index, m.to
                )
                return
            async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
                stub = raft_pb2_grpc.RaftStub(channel)
                ack = await stub.SendSnapshot(
                    stream_files(directory, message_to_pb(m), m.snapshot.data),
                    metadata=self.metadata(),
                )
            ok = ack.installed
            if not ok:
                log.warning("peer %d refused snapshot %d: %s", m.to, m.snapshot.index, ack.error)
        except (grpc.aio.AioRpcError, OSError, SnapshotError) as exc:
            log.warning("sending snapshot to %d failed: %s", m.to, exc)
        finally:
            if self.on_snapshot_status is not None:
                self.on_snapshot_status(m.to, ok)

    async def forget(self, nid: int) -> None:
        peer = self._peers.pop(nid, None)
        if peer is not None:
            await peer.close()

    async def close(self) -> None:
        for peer in list(self._peers.values()):
            await peer.close()
        self._peers.clear()
        for task in self._snapshot_sends.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RaftServicer(raft_pb2_grpc.RaftServicer):
    """Receives peers' message streams and hands every message to `deliver`."""

    def __init__(
        self,
        deliver: Callable[[Message], None],
        incoming: Path | None = None,
        on_snapshot: Callable[[Message, Path], Awaitable[None]] | None = None,
        cluster: ClusterId | None = None,
    ) -> None:
        self.deliver = deliver
        self.cluster = cluster
        # Where received snapshots are written aside, and who takes them.
        self.incoming = incoming
        self.on_snapshot = on_snapshot
        self.blocked_from: set[int] = set()
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every incoming stream now (peers reconnect to someone alive)."""
        self._closing.set()

    def refusal(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """Why the caller may not talk to this member (another cluster's
        cluster id in its metadata), or None."""
        if self.cluster is None:
            return None
        sent = dict(context.invocation_metadata() or ()).get(METADATA_KEY, "")
        return self.cluster.admit(str(sent), context.peer())

    async def _receive(self, request_iterator: AsyncIterator[raft_pb2.RaftBatch]) -> None:
        async for batch in request_iterator:
            for pb in batch.messages:
                m = _decode(pb)
                if m.frm not in self.blocked_from:
                    self.deliver(m)

    async def Send(
        self,
        request_iterator: AsyncIterator[raft_pb2.RaftBatch],
        context: grpc.aio.ServicerContext[raft_pb2.RaftBatch, raft_pb2.SendAck],
    ) -> raft_pb2.SendAck:
        refused = self.refusal(context)
        if refused is not None:
            # A status, not an exception: the same through any error boundary.
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(refused)
            return raft_pb2.SendAck()
        receiving = asyncio.ensure_future(self._receive(request_iterator))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({receiving, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiving, closing):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
        return raft_pb2.SendAck()

    async def Forward(
        self,
        request: raft_pb2.ForwardRequest,
        context: grpc.aio.ServicerContext[raft_pb2.ForwardRequest, raft_pb2.ForwardResponse],
    ) -> raft_pb2.ForwardResponse:
        """Writes are the node's business (node/peer_service.py overrides this)."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this peer does not take writes")
        raise AssertionError("unreachable")

    async def SendSnapshot(
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext[raft_pb2.SnapshotChunk, raft_pb2.SnapshotAck],
    ) -> raft_pb2.SnapshotAck:
        if self.incoming is None or self.on_snapshot is None:
            return raft_pb2.SnapshotAck(installed=False, error="this node takes no snapshots")
        refused = self.refusal(context)
        if refused is not None:
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(refused)
            return raft_pb2.SnapshotAck(installed=False, error=refused)
        on_snapshot = self.on_snapshot

        async def hand_over(pb: raft_pb2.RaftMessage, directory: Path) -> None:
            await on_snapshot(_decode(pb), directory)

        try:
            await receive_files(request_iterator, self.incoming, hand_over)
        except SnapshotError as exc:
            log.warning("rejected a snapshot: %s", exc)
            return raft_pb2.SnapshotAck(installed=False, error=str(exc))
        return raft_pb2.SnapshotAck(installed=True)
