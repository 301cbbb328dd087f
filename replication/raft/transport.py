"""Raft messages between nodes.

One long-lived stream per peer, so a leader's appends are pipelined: the
sender never waits for a reply, replies come back as messages on the peer's
own stream to us. The stream is a plain TCP connection carrying framed
RaftBatch messages (raft.proto MessageStreamHello): a gRPC stream message
costs several times the CPU of a socket write in Python, and every write
passes several of them (docs/benchmarks.md). The sender asks the peer over
gRPC where it listens (`Raft.MessagePort`, which checks the cluster id like
every peer RPC); a peer without the TCP stream gets `Raft.Send` instead.
Snapshots and forwarded writes stay on gRPC. Messages queued while a peer is
unreachable are dropped (Raft retransmits) and the core is told the peer is
unreachable. Reconnects back off exponentially up to a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from shardlite.replication.replicator import MalformedPeerMessage
from shardlite.replication.tls import TlsError, TlsFiles
from shardlite.v1 import raft_pb2, raft_pb2_grpc

from .cluster_id import METADATA_KEY, ClusterId
from .codec import message_from_pb, message_to_pb
from .messages import Message, MessageType
from .snapshots import SnapshotError, receive_files, stream_files

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
MAX_BACKOFF = 1.0
KEEPALIVE_MS = 10_000
# The TCP message stream: a frame is a 4-byte big-endian length, then the bytes.
FRAME_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 256 << 20  # as the gRPC channels' message limit
MAX_HELLO_BYTES = 64 << 10  # before the sender is admitted
HANDSHAKE_TIMEOUT = 5.0  # to connect, to say hello, to be welcomed
MAX_MESSAGE_STREAMS = 64  # incoming TCP message streams served at once
# A peer's announced features (MessagePortRequest.features): a few short names.
MAX_FEATURES = 32
MAX_FEATURE_CHARS = 64


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


def open_channel(address: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    """A channel to a member: mutually authenticated when the cluster has TLS."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=GRPC_OPTIONS)


def tls_generation(tls: TlsFiles | None) -> int:
    """Changes when the TLS files do: a channel made before is remade."""
    if tls is None:
        return 0
    tls.current()
    return tls.generation


Metadata = tuple[tuple[str, str], ...]
# When each refusal was last logged, by who refused whom: logged every 30 s.
_refusals: dict[tuple[str, object], float] = {}


def _no_metadata() -> Metadata:
    return ()


def _log_refusal(key: tuple[str, object], msg: str, *args: object) -> None:
    """Log a refusal (one side of it, one peer) now and then, not per attempt."""
    now = asyncio.get_running_loop().time()
    if now - _refusals.get(key, -30.0) >= 30.0:
        _refusals[key] = now
        log.error(msg, *args)


def _refused(address: str, details: str) -> None:
    """A peer refused us (another cluster's member, other timing)."""
    _log_refusal(("by", address), "the peer at %s refuses this member: %s", address, details)


def timing_problem(ours: raft_pb2.RaftTiming, theirs: raft_pb2.RaftTiming) -> str | None:
    """Why a peer with `theirs` may not join our Raft traffic, or None. With the
    read lease on either side every member must refuse votes for the same
    election timeout as the leader counts on (lease.py); without it, timing
    may differ (a rolling change of --raft-tick-ms is fine)."""
    if not (ours.read_lease or theirs.read_lease) or ours == theirs:
        return None
    return (
        f"the read lease needs every member on the same Raft timing: this member runs "
        f"{_describe(ours)}, the peer {_describe(theirs)} (--raft-tick-ms, "
        "--election-ticks, --read-lease)"
    )


def features_problem(features: Sequence[str]) -> str | None:
    """Why a peer's announced features cannot be kept, or None: at most
    MAX_FEATURES names of at most MAX_FEATURE_CHARS characters each."""
    if len(features) > MAX_FEATURES:
        return f"{len(features)} announced; at most {MAX_FEATURES}"
    for name in features:
        if len(name) > MAX_FEATURE_CHARS:
            return f"a name of {len(name)} characters; at most {MAX_FEATURE_CHARS}"
    return None


def _describe(timing: raft_pb2.RaftTiming) -> str:
    lease = "on" if timing.read_lease else "off"
    return (
        f"a {timing.tick_us / 1000:g} ms tick, {timing.election_ticks} election ticks, "
        f"read lease {lease}"
    )


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
        introduction: Callable[[], raft_pb2.MessagePortRequest],
        tls: TlsFiles | None = None,
    ) -> None:
        self.tls = tls
        self.channel_generation = -1
        self.nid = nid
        self.resolve = resolve
        self.on_unreachable = on_unreachable
        self.metadata = metadata
        self.introduction = introduction
        self.pending: list[Message] = []
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-peer-{nid}")
        self.channel: grpc.aio.Channel | None = None
        self.address: str | None = None
        # A message stream to the peer is open (for the node's metrics).
        self.connected = False

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
            generation = tls_generation(self.tls)
            if (
                address != self.address
                or self.channel is None
                or generation != self.channel_generation
            ):
                if self.channel is not None:
                    await self.channel.close(None)
                self.channel = open_channel(address, self.tls)
                self.address, self.channel_generation = address, generation
            stub = raft_pb2_grpc.RaftStub(self.channel)
            try:
                port = await self._message_port(stub)
                if port:
                    await self._stream_tcp(address, port)
                else:
                    self.connected = True
                    await stub.Send(self._batches(), metadata=self.metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    _refused(address, exc.details() or "")
                elif exc.code() != grpc.StatusCode.CANCELLED:
                    log.debug("stream to %s (%s) broke: %s", self.nid, address, exc.code().name)
            except ssl.SSLError as exc:
                _refused(address, f"TLS: {exc}")
            except (OSError, EOFError, TimeoutError, DecodeError, TlsError) as exc:
                log.debug("stream to %s (%s) broke: %r", self.nid, address, exc)
            self.connected = False
            self.pending.clear()
            self.on_unreachable(self.nid)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            # A healthy stream resets the backoff on the next successful write.
            if self.pending:
                backoff = 0.05

    async def _message_port(self, stub: raft_pb2_grpc.RaftAsyncStub) -> int:
        """The peer's TCP message port; 0 if it has none (an older member)."""
        try:
            reply = await stub.MessagePort(
                self.introduction(), metadata=self.metadata(), timeout=HANDSHAKE_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return 0
            raise
        return int(reply.port)

    async def _stream_tcp(self, address: str, port: int) -> None:
        """Send the queued batches over a TCP stream until it breaks."""
        host = host_of(address)
        tls = self.tls.client_context() if self.tls is not None else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
            HANDSHAKE_TIMEOUT,
        )
        try:
            _keep_alive(writer)
            metadata = dict(self.metadata())
            hello = raft_pb2.MessageStreamHello(cluster_id=metadata.get(METADATA_KEY, ""))
            _write_frame(writer, hello.SerializeToString())
            welcome = raft_pb2.MessageStreamWelcome.FromString(
                await asyncio.wait_for(_read_frame(reader, MAX_HELLO_BYTES), HANDSHAKE_TIMEOUT)
            )
            if welcome.refusal:
                _refused(address, welcome.refusal)
                return
            self.connected = True
            # The listener never writes after its welcome: a read that returns
            # means it closed (or died), which a write alone may not notice.
            watcher = asyncio.ensure_future(self._until_closed(reader, writer))
            try:
                while True:
                    await self.wake.wait()
                    self.wake.clear()
                    if writer.is_closing():
                        raise ConnectionResetError("the peer closed the message stream")
                    if self.pending:
                        batch, self.pending = self.pending, []
                        pb = raft_pb2.RaftBatch(messages=[message_to_pb(m) for m in batch])
                        _write_frame(writer, pb.SerializeToString())
                        await writer.drain()
            finally:
                watcher.cancel()
        finally:
            writer.close()

    async def _until_closed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)
        writer.close()
        self.wake.set()

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
        # Who we are, told to every peer we stream to (set by the replicator).
        self.introduction = raft_pb2.MessagePortRequest()
        # Mutual TLS between members when set (by the replicator).
        self.tls: TlsFiles | None = None
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
                    nid,
                    self.resolve,
                    self.on_unreachable,
                    lambda: self.metadata(),
                    lambda: self.introduction,
                    self.tls,
                )
            peer.enqueue(batch)

    def connections(self) -> dict[int, bool]:
        """Every peer this node has sent to: is its message stream open."""
        return {nid: peer.connected for nid, peer in self._peers.items()}

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
            async with open_channel(address, self.tls) as channel:
                stub = raft_pb2_grpc.RaftStub(channel)
                ack = await stub.SendSnapshot(
                    stream_files(directory, message_to_pb(m), m.snapshot.data),
                    metadata=self.metadata(),
                )
            ok = ack.installed
            if not ok:
                log.warning("peer %d refused snapshot %d: %s", m.to, m.snapshot.index, ack.error)
        except (grpc.aio.AioRpcError, OSError, SnapshotError, TlsError) as exc:
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
        message_host: str = "",
        message_port: int = 0,
        on_introduced: Callable[[raft_pb2.MessagePortRequest], None] | None = None,
        tls: TlsFiles | None = None,
        timing: raft_pb2.RaftTiming | None = None,
    ) -> None:
        self.tls = tls
        self.timing = timing  # ours, checked against each peer's (timing_problem)
        self.deliver = deliver
        self.message_port_number = message_port
        self.on_introduced = on_introduced
        self.cluster = cluster
        # Where received snapshots are written aside, and who takes them.
        self.incoming = incoming
        self.on_snapshot = on_snapshot
        self.blocked_from: set[int] = set()
        self._closing = asyncio.Event()
        # The TCP message stream's listener, started by the first MessagePort
        # call, on `message_host` (the host the node serves gRPC on); "" = none.
        self.message_host = message_host
        self._listener: asyncio.Server | None = None
        self._listening = asyncio.Lock()
        self._streams: set[asyncio.StreamWriter] = set()

    def close(self) -> None:
        """End every incoming stream now (peers reconnect to someone alive)."""
        self._closing.set()
        if self._listener is not None:
            self._listener.close()
        for writer in list(self._streams):
            writer.close()

    # -- the TCP message stream -----------------------------------------------

    async def MessagePort(
        self,
        request: raft_pb2.MessagePortRequest,
        context: grpc.aio.ServicerContext[
            raft_pb2.MessagePortRequest, raft_pb2.MessagePortResponse
        ],
    ) -> raft_pb2.MessagePortResponse:
        refused = self.refusal(context)
        if refused is not None:
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(refused)
            return raft_pb2.MessagePortResponse()
        problem = address_problem(request.client_address) if request.client_address else None
        if problem is not None:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(f"client_address: {problem}")
            return raft_pb2.MessagePortResponse()
        problem = features_problem(request.features)
        if problem is not None:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(f"features: {problem}")
            return raft_pb2.MessagePortResponse()
        mismatch = timing_problem(self.timing, request.timing) if self.timing else None
        if mismatch is not None:
            _log_refusal(
                ("of", request.sender),
                "refusing Raft messages from member %x: %s",
                request.sender,
                mismatch,
            )
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(mismatch)
            return raft_pb2.MessagePortResponse()
        if self.on_introduced is not None and request.sender:
            self.on_introduced(request)
        return raft_pb2.MessagePortResponse(port=await self.message_port())

    async def message_port(self) -> int:
        """The listener's port, started on first use; 0 if there is none."""
        if not self.message_host or self._closing.is_set():
            return 0
        async with self._listening:
            if self._listener is None:
                try:
                    # In a context of its own: the streams it serves outlive
                    # the call that started it (and its log context).
                    self._listener = await asyncio.get_running_loop().create_task(
                        asyncio.start_server(
                            self._serve_stream, self.message_host, self.message_port_number
                        ),
                        context=contextvars.Context(),
                    )
                except OSError as exc:
                    log.warning(
                        "cannot listen for peer message streams on %s (%s); peers send "
                        "over gRPC instead",
                        self.message_host,
                        exc,
                    )
                    self.message_host = ""
                    return 0
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._closing.is_set() or len(self._streams) >= MAX_MESSAGE_STREAMS:
            writer.close()
            return
        self._streams.add(writer)
        peer = _peer_name(writer)
        try:
            _keep_alive(writer)
            if self.tls is not None:
                # A context made now: a certificate replaced on disk counts from
                # the next connection. Only members the cluster's CA signed pass.
                await writer.start_tls(
                    self.tls.server_context(), ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
            hello = raft_pb2.MessageStreamHello.FromString(
                await asyncio.wait_for(_read_frame(reader, MAX_HELLO_BYTES), HANDSHAKE_TIMEOUT)
            )
            refused = self.cluster.admit(hello.cluster_id, peer) if self.cluster else None
            _write_frame(
                writer, raft_pb2.MessageStreamWelcome(refusal=refused or "").SerializeToString()
            )
            await writer.drain()
            if refused is not None:
                return
            while not self._closing.is_set():
                batch = raft_pb2.RaftBatch.FromString(await _read_frame(reader, MAX_FRAME_BYTES))
                for pb in batch.messages:
                    m = _decode(pb)
                    if m.frm not in self.blocked_from:
                        self.deliver(m)
        except ssl.SSLError as exc:
            log.warning("refused a message stream from %s: TLS: %s", peer, exc)
        except (OSError, EOFError, TimeoutError, TlsError):
            pass  # the sender went away (or never said hello): it reconnects
        except (MalformedPeerMessage, DecodeError) as exc:
            log.warning("closed the message stream from %s: %s", peer, exc)
        finally:
            self._streams.discard(writer)
            writer.close()

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


# -- framing, for the TCP message stream ------------------------------------------


def host_of(address: str) -> str:
    """The host of a `host:port` address (`[v6]:port` too)."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


MAX_ADDRESS_CHARS = 255


def address_problem(address: str) -> str | None:
    """What is wrong with `address` as a `host:port` a member tells others, or None."""
    host, sep, port = address.rpartition(":")
    if len(address) > MAX_ADDRESS_CHARS:
        return f"longer than {MAX_ADDRESS_CHARS} characters"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} is not host:port"
    if not address.isascii() or not address.isprintable() or " " in address:
        return f"{address!r} holds characters no address has"
    return None


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(FRAME_LENGTH.pack(len(payload)) + payload)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One frame; MalformedPeerMessage past `limit` bytes, EOFError at the end."""
    try:
        (length,) = FRAME_LENGTH.unpack(await reader.readexactly(FRAME_LENGTH.size))
        if length > limit:
            raise MalformedPeerMessage(f"a frame of {length} bytes; the limit is {limit}")
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise EOFError("the stream ended") from None


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive on the lines of the gRPC channels': a dead peer (or a
    dead link) breaks the stream within about KEEPALIVE_MS plus a few probes."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_MS // 1000),
        ("TCP_KEEPINTVL", 2),
        ("TCP_KEEPCNT", 3),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"tcp:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "tcp:?"
