"""The validation gate: the one place a Frame is checked before it enters the log.

Every path that proposes a frame (the KV API, the leader's side of a
follower's Forward, anything later) calls `gate`. It returns the canonical
frame — built field by field, so unknown fields nested anywhere in a request
never reach the replicated log — or raises InvalidArgument saying what to fix.

`content_problem` is the part of the gate that depends only on the frame
(names, keys, op kinds, counts, versions), never on a node's configuration.
The applier runs it on every committed frame, so a frame that slipped past a
gate (an older node, a forged peer) is refused identically on every replica.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shardlite.node import names
from shardlite.node.errors import InvalidArgument
from shardlite.v1 import frame_pb2

MAX_OPS = 10_000
MAX_CONDITIONS = 1_000
MAX_CLIENT_ID_CHARS = 128
# Shards keep request ids in SQLite INTEGER columns: signed 64-bit.
MAX_REQUEST_SEQ = (1 << 63) - 1
MAX_TRACE_ID_BYTES = 64
TRACE_ID_BYTES = 16
# An invalid frame's reason is streamed back with it; keep it short.
MAX_PROBLEM_CHARS = 512
# What Subscribe adds around a frame, beyond its per-op results: the index, the
# outcome, a failed condition's key (<= 1 KiB) and versions, the reason of an
# invalid frame, and the framing of a Raft append carrying it.
STREAM_OVERHEAD_BYTES = 4096
# Upper bound on one OpResult inside a streamed FrameResult (tag, length,
# a 10-byte version varint, the deleted flag).
OP_RESULT_BYTES = 16
# Frames in one envelope (node/envelope.py): bounds one entry's apply.
MAX_ENVELOPE_FRAMES = 1_000


@dataclass(frozen=True)
class Limits:
    """The node's configured limits (--max-value-bytes, --max-request-bytes)."""

    max_value_bytes: int = 1 << 20
    # The largest gRPC message a node sends or receives.
    max_message_bytes: int = 16 << 20


def gate(frame: frame_pb2.Frame, limits: Limits) -> frame_pb2.Frame:
    """The canonical copy of `frame`, or InvalidArgument saying what to fix."""
    if frame.batch:
        raise InvalidArgument(
            "write carries a batch of frames: send each write on its own (MultiWrite for many)"
        )
    _raise_problem(frame)
    return _within_limits(_canonical(frame), limits)


def admit(frame: frame_pb2.Frame, limits: Limits) -> frame_pb2.Frame:
    """`gate` for a frame this node built field by field from a request's
    scalars, with a trace_id of its own (`new_frame`): already canonical, so
    checked without the copy."""
    _raise_problem(frame)
    return _within_limits(frame, limits)


def new_frame(org: str, namespace: str) -> frame_pb2.Frame:
    """An empty frame of the shard with its own fresh trace_id: it is the
    proposing node's waiter key, so it is never taken from a request (an empty
    or reused one would leave a waiter hanging)."""
    return frame_pb2.Frame(org=org, namespace=namespace, trace_id=os.urandom(TRACE_ID_BYTES))


def _raise_problem(frame: frame_pb2.Frame) -> None:
    problem = content_problem(frame)
    if problem is not None:
        raise InvalidArgument(problem)


def _within_limits(canonical: frame_pb2.Frame, limits: Limits) -> frame_pb2.Frame:
    for n, op in enumerate(canonical.ops):
        if op.HasField("put") and len(op.put.value) > limits.max_value_bytes:
            raise InvalidArgument(
                f"op {n}: value is {len(op.put.value)} bytes; the limit is "
                f"{limits.max_value_bytes} (--max-value-bytes)"
            )
    # The frame must fit every message it will travel in: a Raft append, a
    # Forward, and Subscribe's response carrying it with its result.
    streamed = canonical.ByteSize() + OP_RESULT_BYTES * len(canonical.ops) + STREAM_OVERHEAD_BYTES
    if streamed > limits.max_message_bytes:
        raise InvalidArgument(
            f"write is too large: {canonical.ByteSize()} bytes with {len(canonical.ops)} ops "
            f"does not fit the node's {limits.max_message_bytes}-byte messages "
            "(--max-request-bytes); split it into smaller batches"
        )
    return canonical


def content_problem(frame: frame_pb2.Frame) -> str | None:
    """Why `frame` can never be applied, from its content alone; None if it can.

    Deterministic: the same frame gets the same answer on every replica."""
    try:
        if frame.batch:
            _check_envelope(frame)
        else:
            _check_content(frame)
    except InvalidArgument as exc:
        return str(exc)[:MAX_PROBLEM_CHARS]
    return None


def touched(frame: frame_pb2.Frame) -> set[str | tuple[str, int]]:
    """What two frames of one envelope may not share: keys (ops' and
    conditions', as strings) and the request id (a (client_id, seq) pair)."""
    found: set[str | tuple[str, int]] = {
        op.put.key if op.HasField("put") else op.delete.key for op in frame.ops
    }
    found.update(condition.key for condition in frame.conditions)
    request = frame.request_id
    if request.client_id:
        found.add((request.client_id, request.seq))
    return found


def _check_envelope(envelope: frame_pb2.Frame) -> None:
    """An envelope holds only its frames, 2 to MAX_ENVELOPE_FRAMES of them, all
    valid, of its own shard, none an envelope, none sharing a key or a request
    id with another (node/envelope.py says why)."""
    org, namespace = envelope.org, envelope.namespace
    names.check_org(org)
    names.check_namespace(namespace)
    if envelope.ops or envelope.conditions or envelope.request_id.client_id:
        raise InvalidArgument("envelope carries ops, conditions or a request_id of its own")
    if not 2 <= len(envelope.batch) <= MAX_ENVELOPE_FRAMES:
        raise InvalidArgument(
            f"envelope has {len(envelope.batch)} frames; it holds 2 to {MAX_ENVELOPE_FRAMES}"
        )
    seen: set[str | tuple[str, int]] = set()
    for n, frame in enumerate(envelope.batch):
        if frame.batch:
            raise InvalidArgument(f"frame {n} of the envelope is an envelope itself")
        if frame.org != org or frame.namespace != namespace:
            raise InvalidArgument(f"frame {n} of the envelope is of another shard")
        try:
            _check_body(frame)  # its names are the envelope's, checked above
        except InvalidArgument as exc:
            raise InvalidArgument(f"frame {n} of the envelope: {exc}") from None
        keys = touched(frame)
        if not seen.isdisjoint(keys):
            raise InvalidArgument(
                f"frame {n} of the envelope shares a key or request_id with an earlier one"
            )
        seen |= keys


def _check_content(frame: frame_pb2.Frame) -> None:
    names.check_org(frame.org)
    names.check_namespace(frame.namespace)
    _check_body(frame)


def _check_body(frame: frame_pb2.Frame) -> None:
    """Everything of a frame but the shard it names."""
    ops = frame.ops
    if not ops:
        raise InvalidArgument("write has no ops: send at least one put or delete")
    if len(ops) > MAX_OPS:
        raise InvalidArgument(f"write has {len(ops)} ops; the limit is {MAX_OPS}")
    conditions = frame.conditions
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidArgument(
            f"write has {len(conditions)} conditions; the limit is {MAX_CONDITIONS}"
        )
    for n, op in enumerate(ops):
        kind = op.WhichOneof("kind")
        if kind == "put":
            _check_key("op", n, op.put.key)
        elif kind == "delete":
            _check_key("op", n, op.delete.key)
        else:
            raise InvalidArgument(f"op {n} is neither a put nor a delete")
    for n, condition in enumerate(conditions):
        _check_key("condition", n, condition.key)
        names.check_version(condition.version)
    request = frame.request_id
    client_id = request.client_id
    if client_id:
        if len(client_id) > MAX_CLIENT_ID_CHARS:
            raise InvalidArgument(
                f"request_id.client_id is {len(client_id)} characters; the limit is "
                f"{MAX_CLIENT_ID_CHARS}"
            )
        if "\x00" in client_id:
            raise InvalidArgument("request_id.client_id contains a NUL character")
        if request.seq > MAX_REQUEST_SEQ:
            raise InvalidArgument(
                f"request_id.seq is {request.seq}; the limit is {MAX_REQUEST_SEQ} "
                "(a signed 64-bit integer)"
            )
    if len(frame.trace_id) > MAX_TRACE_ID_BYTES:
        raise InvalidArgument(
            f"trace_id is {len(frame.trace_id)} bytes; the limit is {MAX_TRACE_ID_BYTES}"
        )


def _check_key(what: str, n: int, key: str) -> None:
    try:
        names.check_key(key)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what} {n}: {exc}") from None


def _canonical(frame: frame_pb2.Frame) -> frame_pb2.Frame:
    """A fresh Frame holding only the fields this node knows, and its own trace_id."""
    canonical = new_frame(frame.org, frame.namespace)
    for op in frame.ops:
        if op.HasField("put"):
            canonical.ops.add(put=frame_pb2.PutOp(key=op.put.key, value=op.put.value))
        else:
            canonical.ops.add(delete=frame_pb2.DeleteOp(key=op.delete.key))
    for condition in frame.conditions:
        canonical.conditions.add(key=condition.key, version=condition.version)
    if frame.request_id.client_id:
        canonical.request_id.client_id = frame.request_id.client_id
        canonical.request_id.seq = frame.request_id.seq
    return canonical
