"""Raft messages to and from their protobuf form (proto/shardlite/v1/raft.proto)."""

from __future__ import annotations

from shardlite.v1 import raft_pb2

from .messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)


def entry_to_pb(e: Entry) -> raft_pb2.RaftEntry:
    return raft_pb2.RaftEntry(term=e.term, index=e.index, type=e.type, data=e.data)


def entry_from_pb(e: raft_pb2.RaftEntry) -> Entry:
    return Entry(e.term, e.index, EntryType(e.type), e.data)


def snapshot_to_pb(s: Snapshot) -> raft_pb2.RaftSnapshot:
    return raft_pb2.RaftSnapshot(
        index=s.meta.index,
        term=s.meta.term,
        voters=sorted(s.meta.conf_state.voters),
        learners=sorted(s.meta.conf_state.learners),
        data=s.data,
    )


def snapshot_from_pb(s: raft_pb2.RaftSnapshot) -> Snapshot:
    conf = ConfState(frozenset(s.voters), frozenset(s.learners))
    return Snapshot(SnapshotMeta(s.index, s.term, conf), s.data)


def message_to_pb(m: Message) -> raft_pb2.RaftMessage:
    pb = raft_pb2.RaftMessage(
        type=m.type,
        to=m.to,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=[entry_to_pb(e) for e in m.entries],
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )
    setattr(pb, "from", m.frm)
    if m.snapshot is not None:
        pb.has_snapshot = True
        pb.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
    return pb


def message_from_pb(pb: raft_pb2.RaftMessage) -> Message:
    return Message(
        type=MessageType(pb.type),
        to=pb.to,
        frm=getattr(pb, "from"),
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=tuple(entry_from_pb(e) for e in pb.entries),
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        snapshot=snapshot_from_pb(pb.snapshot) if pb.has_snapshot else None,
        context=pb.context,
    )
