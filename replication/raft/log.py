"""The Raft log: durable entries in ``Storage`` plus an in-memory unstable tail.

Layout (indexes grow to the right)::

    snapshot | storage entries ...      |
                      | unstable.entries ...........|
                                ^committed   ^last
             ^applied

Entries enter the unstable tail when appended, leave it when the driver
reports them persisted (``stable_to``). The tail may overlap and overwrite the
end of storage after a conflict (§5.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import CompactedError, UnavailableError
from .messages import Entry, Snapshot
from .storage import Storage, limit_size


class Unstable:
    """Entries and at most one snapshot not yet reported persisted."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        # Invariant: entries[i].index == offset + i
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            snap = self.snapshot
            if snap is not None and snap.meta.index == index:
                return snap.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable: drop them from the tail.
        Ignored if the entry at ``index`` was overwritten since (different term)."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # The new entries replace the whole tail (and maybe part of storage).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """The log as the core sees it (etcd's raftLog)."""

    def __init__(self, storage: Storage, *, max_applying_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Invariant: applied <= committed <= last_index()
        self.committed = first - 1
        self.applied = first - 1
        # Highest index handed to the driver for applying (>= applied).
        self.applying = first - 1
        self.max_applying_size = max_applying_size
        # Called with the entries actually written by append(), so the core can
        # track configuration entries (effective as soon as they are in the log).
        self.on_append: Callable[[Sequence[Entry]], None] | None = None

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len={len(self.unstable.entries)})"
        )

    # -- indexes and terms -----------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; raises CompactedError / UnavailableError."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index < self.first_index() - 1:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours if its last
        term is higher, or equal with an index at least as large."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- appending -------------------------------------------------------
    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry of ``ents`` that conflicts with the log (same index,
        different term), or of the first new entry; 0 if all are already present."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used for fast backtracking: a rejection names where the logs may first
        agree, skipping a whole term per round trip instead of one entry."""
        while index > 0:
            try:
                t = self.term(index)
            except CompactedError:
                return index, 0
            except UnavailableError:
                index = self.last_index()
                continue
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: Sequence[Entry]
    ) -> int | None:
        """AppendEntries receiver rules (§5.3). Returns the index of the last new entry,
        or None when the consistency check at (``index``, ``log_term``) fails."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            # Invariant: committed entries are never overwritten (§5.4).
            if ci <= self.committed:
                raise AssertionError(f"conflict at {ci} <= committed {self.committed}")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        if self.on_append is not None:
            self.on_append(ents)
        return self.last_index()

    # -- reading ---------------------------------------------------------
    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``, at least one if any, then within ``max_size`` bytes."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        ents: list[Entry] = []
        uoff = self.unstable.offset
        if lo < uoff:
            ents = self.storage.entries(lo, min(hi, uoff), max_size)
            if len(ents) < min(hi, uoff) - lo:
                return ents  # storage hit the size limit
        if hi > uoff:
            ents = ents + self.unstable.slice(max(lo, uoff), hi)
        return limit_size(ents, max_size)

    def entries(self, lo: int, max_size: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_size)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_next_committed_ents(self) -> bool:
        if self.has_pending_snapshot():
            return False
        return self.committed > max(self.applying, self.first_index() - 1)

    def next_committed_ents(self) -> list[Entry]:
        """Committed entries not yet handed out for applying (§5.3: apply in log order)."""
        if not self.has_next_committed_ents():
            return []
        lo = max(self.applying, self.first_index() - 1) + 1
        return self.slice(lo, self.committed + 1, self.max_applying_size)

    # -- moving the marks ------------------------------------------------
    def commit_to(self, index: int) -> None:
        """Never decreases the commit index."""
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: only an entry of the leader's current term is committed by counting
        replicas; earlier entries are then committed indirectly."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        # Invariant: applied <= committed, and applied never goes backwards.
        if index > self.committed or index < self.applied:
            raise AssertionError(f"applied {index} out of range [{self.applied}, {self.committed}]")
        self.applied = index
        self.applying = max(self.applying, index)

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by ``snap`` (§7): everything up to its index is committed."""
        self.committed = snap.meta.index
        self.unstable.restore(snap)
