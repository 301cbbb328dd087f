"""The durable Raft log: a write-ahead log replayed into a MemoryStorage.

The WAL is one append-only file of checksummed records: a batch of entries, a
hard state, or a snapshot mark. Replaying them in order (an entry batch
truncates any stored entry at or after its first index, §5.3) rebuilds the log
exactly as it was last persisted. A torn tail -- a crash mid-write -- fails its
checksum or is short, and is cut off on recovery; it was never acknowledged,
because nothing depends on a record before its fsync returns.

Compaction (§7) is two steps: `record_snapshot` drops the covered entries
from memory (quick, on the driver's loop, so the core never sees half of it),
then `rewrite` writes the retained part of the log into a new file (base
entry and snapshot, entries after it, hard state), fsyncs it and atomically
replaces the old one -- on a worker thread, between two saves. A crash
between them replays the old file: the log as it was before the snapshot.
One fsync per `save` (a Ready's worth of records): group commit.

Memory: the retained log is held in memory. It is bounded by compaction --
the replicator snapshots once the log since the last snapshot exceeds a
number of entries or of bytes, and keeps at most so many entries and bytes
before it for slow followers -- so what stays is about the snapshot
thresholds plus what is not applied yet.

Blocking I/O: the driver runs `save` and `rewrite` on a worker thread; reads
come from memory.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from shardlite.replication.durable import write_all, write_file_durably
from shardlite.replication.observer import NULL_OBSERVER, Observer, timed_fsync

from .messages import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from .storage import MemoryStorage

RECORD = struct.Struct("<IIB")  # payload length, crc32(type + payload), type
ENTRY = struct.Struct("<QQBI")  # term, index, type, data length
HARD_STATE = struct.Struct("<QQQ")  # term, vote, commit
SNAP_HEAD = struct.Struct("<QQII")  # index, term, #voters, #learners

BASE = struct.Struct("<QQ")  # the log's base (compacted-to) index and term

# ENTRIES: a batch to append (truncating a conflicting suffix first).
# HARDSTATE: term, vote, commit. INSTALL: a snapshot received from the leader;
# the log restarts at it. LOG_START: first record of a compacted WAL: the base
# entry and the latest snapshot.
ENTRIES, HARDSTATE, INSTALL, LOG_START = 1, 2, 3, 4
WAL_NAME = "raft.wal"


class CorruptWal(Exception):
    """The WAL is damaged somewhere a crash cannot have damaged it."""


def _record(kind: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([kind])))
    return RECORD.pack(len(payload), crc, kind) + payload


def _encode_entries(entries: list[Entry]) -> bytes:
    parts: list[bytes] = []
    for e in entries:
        parts.append(ENTRY.pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def _decode_entries(payload: bytes) -> list[Entry]:
    out: list[Entry] = []
    pos = 0
    while pos < len(payload):
        term, index, kind, length = ENTRY.unpack_from(payload, pos)
        pos += ENTRY.size
        out.append(Entry(term, index, EntryType(kind), bytes(payload[pos : pos + length])))
        pos += length
    return out


def _encode_snapshot(meta: SnapshotMeta, data: bytes) -> bytes:
    voters = sorted(meta.conf_state.voters)
    learners = sorted(meta.conf_state.learners)
    return (
        SNAP_HEAD.pack(meta.index, meta.term, len(voters), len(learners))
        + struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners)
        + data
    )


def _decode_snapshot(payload: bytes) -> Snapshot:
    index, term, nv, nl = SNAP_HEAD.unpack_from(payload)
    ids = struct.unpack_from(f"<{nv + nl}Q", payload, SNAP_HEAD.size)
    data = bytes(payload[SNAP_HEAD.size + 8 * (nv + nl) :])
    conf = ConfState(frozenset(ids[:nv]), frozenset(ids[nv:]))
    return Snapshot(SnapshotMeta(index, term, conf), data)


class DiskStorage(MemoryStorage):
    """A MemoryStorage whose every change is first written to the WAL."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        # Memory is read on the event loop (the core, subscribers) and changed on
        # the driver's worker thread after a write: the lock covers both.
        self._lock = threading.RLock()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / WAL_NAME
        self.observer: Observer = NULL_OBSERVER
        self._replay()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @property
    def is_empty(self) -> bool:
        """No state at all: a node that has never been part of a cluster."""
        return (
            self.last_index() == 0 and self.hard_state == HardState() and self.snapshot().index == 0
        )

    # -- reads, under the lock ------------------------------------------------

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        with self._lock:
            return super().entries(lo, hi, max_size)

    def term(self, index: int) -> int:
        with self._lock:
            return super().term(index)

    def first_index(self) -> int:
        with self._lock:
            return super().first_index()

    def last_index(self) -> int:
        with self._lock:
            return super().last_index()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return super().snapshot()

    # -- recovery -----------------------------------------------------------

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos < len(data):
            torn = ""
            if pos + RECORD.size > len(data):
                torn = "short header"
            else:
                length, crc, kind = RECORD.unpack_from(data, pos)
                end = pos + RECORD.size + length
                payload = data[pos + RECORD.size : end]
                if end > len(data):
                    torn = "short record"
                elif zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
                    if end < len(data):
                        # Records follow it, so it was written completely before
                        # them: a crash cannot explain this, the disk can (etcd
                        # refuses to start on it too). Cutting here would drop
                        # entries this node may have acknowledged.
                        raise CorruptWal(
                            f"{self.path} is corrupt at offset {pos}: record of {length} bytes "
                            f"fails its checksum and {len(data) - end} bytes of later records "
                            "follow it; refusing to start (restore this member from a backup "
                            "or remove it and let it rejoin)"
                        )
                    torn = "checksum mismatch"
            if torn:
                # Only the last record can be torn: a crash mid-write of it.
                # It was never acknowledged (nothing depends on a record before
                # its fsync returns), so it is cut off.
                with open(self.path, "r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
                return
            try:
                self._replay_record(kind, payload, pos)
            except (struct.error, ValueError) as exc:
                raise CorruptWal(f"{self.path} is corrupt at offset {pos}: {exc}") from exc
            pos = end

    def _replay_record(self, kind: int, payload: bytes, pos: int) -> None:
        if kind == ENTRIES:
            super().append(_decode_entries(payload))
        elif kind == HARDSTATE:
            super().set_hard_state(HardState(*HARD_STATE.unpack(payload)))
        elif kind == INSTALL:
            super().apply_snapshot(_decode_snapshot(payload))
        elif kind == LOG_START:
            base_index, base_term = BASE.unpack_from(payload)
            self._ents = [Entry(base_term, base_index)]
            self._snapshot = _decode_snapshot(payload[BASE.size :])
        else:
            raise CorruptWal(f"{self.path} is corrupt at offset {pos}: unknown record type {kind}")

    # -- writes ---------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        """Persist one Ready: an installed snapshot, entries, hard state, in that
        order, with one write and (if `sync`) one fsync; then update memory."""
        records: list[bytes] = []
        if snapshot is not None:
            records.append(_record(INSTALL, _encode_snapshot(snapshot.meta, snapshot.data)))
        if entries:
            records.append(_record(ENTRIES, _encode_entries(entries)))
        if hard_state is not None:
            records.append(_record(HARDSTATE, HARD_STATE.pack(*_hs_tuple(hard_state))))
        if not records:
            return
        write_all(self._fd, b"".join(records))
        if sync:
            timed_fsync(self._fd, self.observer, "raft_wal")
        with self._lock:
            if snapshot is not None:
                super().apply_snapshot(snapshot)
            if entries:
                super().append(entries)
            if hard_state is not None:
                super().set_hard_state(hard_state)

    def bytes_after(self, index: int) -> int:
        """Bytes (as Entry.size counts them) of the retained entries after `index`."""
        with self._lock:
            offset = self._ents[0].index
            return sum(e.size() for e in self._ents[max(index - offset + 1, 1) :])

    def record_snapshot(
        self,
        index: int,
        conf_state: ConfState,
        data: bytes,
        keep_entries: int,
        keep_bytes: int | None = None,
    ) -> Snapshot:
        """Record the application's snapshot at `index` (§7) and drop from
        memory the entries below it except the last `keep_entries`, at most
        `keep_bytes` of them (kept so slow followers catch up from the log).
        The WAL still holds them until `rewrite`."""
        with self._lock:
            snap = self.create_snapshot(index, conf_state, data)
            compact_to = index - keep_entries
            if keep_bytes is not None:
                kept = 0
                floor = index
                offset = self._ents[0].index
                while floor > offset and kept + self._ents[floor - offset].size() <= keep_bytes:
                    kept += self._ents[floor - offset].size()
                    floor -= 1
                compact_to = max(compact_to, floor)
            if compact_to > self._ents[0].index:
                self.compact(compact_to)
        return snap

    def snapshot_and_compact(
        self, index: int, conf_state: ConfState, data: bytes, keep_entries: int
    ) -> Snapshot:
        """`record_snapshot`, then `rewrite`, in one call."""
        snap = self.record_snapshot(index, conf_state, data, keep_entries)
        self.rewrite()
        return snap

    def rewrite(self) -> None:
        """The retained log as a fresh WAL, swapped in atomically. Blocking:
        run it off the event loop, while no `save` runs (the driver's
        `exclusive`), or a record saved meanwhile could be lost."""
        with self._lock:
            base = self._ents[0]
            snap = self.snapshot()
            records = [
                _record(
                    LOG_START,
                    BASE.pack(base.index, base.term) + _encode_snapshot(snap.meta, snap.data),
                )
            ]
            if len(self._ents) > 1:
                records.append(_record(ENTRIES, _encode_entries(self._ents[1:])))
            records.append(_record(HARDSTATE, HARD_STATE.pack(*_hs_tuple(self.hard_state))))
        write_file_durably(self.path, b"".join(records))
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def size_bytes(self) -> int:
        """Bytes of the WAL on disk (entries the last rewrite kept, and every save since)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _hs_tuple(hs: HardState) -> tuple[int, int, int]:
    return hs.term, hs.vote, hs.commit
