"""Envelopes: many independent frames of one shard committed as one log entry.

A MultiWrite of 64 puts used to cost 64 Raft entries: 64 WAL records, 64
appends and acks, 64 decodes on every member. The leader now packs such frames
into envelopes (`pack`), each one entry; the shard applies an envelope's frames
one by one at the entry's index, each with its own result (node/shard.py).

What keeps that sound (frame.proto, Frame.batch):
- All of an envelope's frames are of the envelope's (org, namespace), so one
  shard transaction applies the whole entry: a crash never leaves half of it.
- No key (an op's or a condition's) and no request_id appears in two frames
  of one envelope: their puts share the entry's index as version, and a key's
  version must name one value; no frame's condition can depend on another's
  ops; a retry is never its own original.
- Envelopes are never nested, and only a leader makes them (the gate refuses
  one from outside; `frames.content_problem` refuses a malformed one on every
  replica alike).
- A leader makes them only while every member announced FEATURE (node/paths.py):
  a member of a version without envelopes would refuse them as frames without
  ops, and its shards would part from the others'.
"""

from __future__ import annotations

from collections.abc import Sequence

from shardlite.node.frames import (
    MAX_ENVELOPE_FRAMES,
    OP_RESULT_BYTES,
    STREAM_OVERHEAD_BYTES,
    Limits,
    touched,
)
from shardlite.v1 import frame_pb2

# What a member announces to its peers when it can apply envelopes
# (raft.proto MessagePortRequest.features).
FEATURE = "envelopes"

# Beyond its frames' own bytes, what each adds to an envelope (its tag and
# length) and to the envelope's stored result (its FrameResult's framing).
FRAME_OVERHEAD_BYTES = 32


def is_envelope(frame: frame_pb2.Frame) -> bool:
    return len(frame.batch) > 0


def inner(frame: frame_pb2.Frame) -> Sequence[frame_pb2.Frame]:
    """The frames an entry carries: an envelope's, or the frame itself."""
    return frame.batch if frame.batch else (frame,)


def op_count(frame: frame_pb2.Frame) -> int:
    return sum(len(f.ops) for f in frame.batch) if frame.batch else len(frame.ops)


def inner_results(
    frame: frame_pb2.Frame, result: frame_pb2.FrameResult
) -> Sequence[frame_pb2.FrameResult]:
    """One result per frame of `inner(frame)`: an envelope's own results, or
    its one result for each of them when it was refused as a whole."""
    if not frame.batch:
        return (result,)
    if len(result.batch) == len(frame.batch):
        return result.batch
    return [result] * len(frame.batch)


def pack(frames: Sequence[frame_pb2.Frame], limits: Limits) -> list[list[int]]:
    """Group the positions of `frames` (each through the gate) into entries:
    runs of consecutive positions, in order. Consecutive frames of one shard
    share an entry while none touches what an earlier one of it touched and
    the entry stays within the frame cap and the node's message size. A group
    of one is proposed as the frame itself. The entries commit in the frames'
    order, so two writes to one key still apply in request order."""
    # Room for the entry in a Raft append and for its stored result.
    room = limits.max_message_bytes - STREAM_OVERHEAD_BYTES
    groups: list[list[int]] = []
    shard: tuple[str, str] | None = None
    seen: set[str | tuple[str, int]] = set()
    size = 0
    for position, frame in enumerate(frames):
        cost = frame.ByteSize() + OP_RESULT_BYTES * len(frame.ops) + FRAME_OVERHEAD_BYTES
        keys = touched(frame)
        fits = (
            groups
            and shard == (frame.org, frame.namespace)
            and len(groups[-1]) < MAX_ENVELOPE_FRAMES
            and size + cost <= room
            and seen.isdisjoint(keys)
        )
        if fits:
            groups[-1].append(position)
            seen |= keys
            size += cost
        else:
            groups.append([position])
            shard, seen, size = (frame.org, frame.namespace), keys, cost
    return groups


def wrap(frames: Sequence[frame_pb2.Frame]) -> frame_pb2.Frame:
    """The entry for a group of `pack`: one frame as itself, several in an
    envelope of their shard."""
    if len(frames) == 1:
        return frames[0]
    return frame_pb2.Frame(org=frames[0].org, namespace=frames[0].namespace, batch=frames)
