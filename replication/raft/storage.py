"""The log storage the core reads from, and its in-memory twin.

The core never writes storage: it hands entries, hard state and snapshots to
the driver in a ``Ready``; the driver persists them and then calls
``advance``. The core only reads what is already durable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .errors import CompactedError, SnapshotTemporarilyUnavailableError, UnavailableError
from .messages import (
    ENTRY_OVERHEAD,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)


class Storage(Protocol):
    """Read access to the durable log (hashicorp-style narrow protocol)."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if the range is not empty, then at most
        ``max_size`` bytes. Raises ``CompactedError`` if ``lo <= snapshot index`` and
        ``UnavailableError`` if ``hi > last_index() + 1``."""
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``, for ``first_index() - 1 <= index <=
        last_index()`` (the snapshot's index gives the snapshot's term). Raises
        ``CompactedError`` below and ``UnavailableError`` above."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still available (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot; may raise ``SnapshotTemporarilyUnavailableError``."""
        ...


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_size`` bytes (as counted by
    ``Entry.size()``), but at least one entry."""
    if max_size is None or len(ents) <= 1:
        return ents
    size = 0
    for i, e in enumerate(ents):
        size += len(e.data) + ENTRY_OVERHEAD
        if size > max_size and i > 0:
            return ents[:i]
    return ents


def bootstrap_entries(voters: Iterable[int]) -> list[Entry]:
    """The log every founding member of a new cluster starts with: one committed
    ADD_VOTER entry per voter at term 1, indexes 1..n (as etcd's Bootstrap does).

    Keeping the first configuration in the log (rather than only in a snapshot)
    lets a node that joins later with an empty log rebuild every configuration
    from the entries the leader sends it."""
    return [
        Entry(1, i, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_VOTER, v).encode())
        for i, v in enumerate(sorted(set(voters)), start=1)
    ]


class MemoryStorage:
    """An in-memory ``Storage`` that also offers the writes a driver performs.

    ``MemoryStorage(conf_state)`` puts the configuration in an empty snapshot at
    index 0: fine for a fixed membership (most unit tests). A cluster that will
    add nodes must start from ``MemoryStorage.bootstrap(voters)`` instead: a
    joining node starts with an empty configuration and rebuilds it from the
    configuration entries the leader sends, so the first one must be in the log.

    ``_ents[0]`` is a dummy entry holding the snapshot's index and term.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]

    @classmethod
    def bootstrap(cls, voters: Iterable[int]) -> MemoryStorage:
        """A founding member's storage: ``bootstrap_entries(voters)``, committed."""
        st = cls()
        ents = bootstrap_entries(voters)
        st.append(ents)
        st.set_hard_state(HardState(term=1, vote=0, commit=len(ents)))
        return st

    # -- Storage ---------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(self._ents):
            raise UnavailableError(index)
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (what a driver does with a Ready) ------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing InstallSnapshot)."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise CompactedError(snap.meta.index)
        self._snapshot = snap
        self._ents = [Entry(snap.meta.term, snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot at ``index`` (<= last index)."""
        if index <= self._snapshot.meta.index:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` (which must be <= the snapshot
        index, so that everything dropped is covered by the snapshot)."""
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        i = index - offset
        self._ents = [Entry(self._ents[i].term, index), *self._ents[i + 1 :]]

    def append(self, ents: list[Entry]) -> None:
        """Append ``ents``, first truncating any stored entry at or after ``ents[0].index``."""
        if not ents:
            return
        first = self.first_index()
        if ents[-1].index < first:
            return  # entirely covered by the snapshot
        if ents[0].index < first:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(f"gap: last {self.last_index()}, appending {ents[0].index}")
        del self._ents[offset:]
        self._ents.extend(ents)


__all__ = [
    "CompactedError",
    "MemoryStorage",
    "SnapshotTemporarilyUnavailableError",
    "Storage",
    "UnavailableError",
    "bootstrap_entries",
    "limit_size",
]
