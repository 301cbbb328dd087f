"""The durable Raft log (replication/raft/wal.py): what was saved is what a
restart sees; a torn tail is cut; compaction and snapshot install survive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardlite.replication.raft import CompactedError, ConfState, Entry, EntryType, HardState
from shardlite.replication.raft.messages import Snapshot, SnapshotMeta
from shardlite.replication.raft.wal import RECORD, WAL_NAME, CorruptWal, DiskStorage

CONF = ConfState(frozenset({1, 2, 3}))


def ents(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, f"e{i}t{term}".encode()) for i in range(lo, hi)]


def test_saved_state_survives_reopen(tmp_path: Path) -> None:
    st = DiskStorage(tmp_path)
    assert st.is_empty
    st.save(HardState(1, 2, 0), ents(1, 6, 1), None, sync=True)
    st.save(HardState(1, 2, 4), [], None, sync=False)
    st.close()
    again = DiskStorage(tmp_path)
    assert again.hard_state == HardState(1, 2, 4)
    assert again.entries(1, 6) == ents(1, 6, 1)
    assert not again.is_empty


def test_conflicting_suffix_is_truncated_and_stays_truncated(tmp_path: Path) -> None:
    """§5.3: an append that conflicts replaces the follower's suffix."""
    st = DiskStorage(tmp_path)
    st.save(HardState(1, 0, 0), ents(1, 8, 1), None, sync=True)
    st.save(HardState(2, 0, 0), ents(4, 6, 2), None, sync=True)
    assert st.last_index() == 5
    st.close()
    again = DiskStorage(tmp_path)
    assert again.entries(1, 6) == ents(1, 4, 1) + ents(4, 6, 2)
    assert again.last_index() == 5


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_torn_tail_is_cut(tmp_path: Path, cut: int) -> None:
    st = DiskStorage(tmp_path)
    st.save(HardState(1, 1, 0), ents(1, 4, 1), None, sync=True)
    size_before = (tmp_path / WAL_NAME).stat().st_size
    st.save(None, ents(4, 6, 1), None, sync=True)
    st.close()
    os.truncate(tmp_path / WAL_NAME, size_before + cut)  # the second write was torn
    again = DiskStorage(tmp_path)
    assert again.last_index() == 3
    assert (tmp_path / WAL_NAME).stat().st_size == size_before
    again.save(None, ents(4, 5, 2), None, sync=True)
    again.close()
    assert DiskStorage(tmp_path).entries(1, 5) == ents(1, 4, 1) + ents(4, 5, 2)


def test_flipped_bit_in_the_last_record_is_cut(tmp_path: Path) -> None:
    st = DiskStorage(tmp_path)
    st.save(HardState(1, 1, 0), ents(1, 4, 1), None, sync=True)
    st.save(None, ents(4, 6, 1), None, sync=True)
    st.close()
    data = bytearray((tmp_path / WAL_NAME).read_bytes())
    data[-3] ^= 0x40
    (tmp_path / WAL_NAME).write_bytes(bytes(data))
    assert DiskStorage(tmp_path).last_index() == 3


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_bad_record_before_the_tail_is_corruption_not_a_torn_write(
    tmp_path: Path, where: str
) -> None:
    """Like etcd: only the last record can be torn by a crash. A bad checksum
    with later records after it is damage; the node refuses to start and says
    which file and offset, and the file is left as it was (nothing is cut)."""
    st = DiskStorage(tmp_path)
    st.save(HardState(1, 1, 0), ents(1, 4, 1), None, sync=True)
    second = (tmp_path / WAL_NAME).stat().st_size
    st.save(None, ents(4, 6, 1), None, sync=True)
    st.save(HardState(1, 1, 5), [], None, sync=True)
    st.close()
    data = bytearray((tmp_path / WAL_NAME).read_bytes())
    # The second record's payload, or its stored checksum.
    data[second + (RECORD.size + 3 if where == "payload" else 4)] ^= 0x01
    (tmp_path / WAL_NAME).write_bytes(bytes(data))

    with pytest.raises(CorruptWal) as corrupt:
        DiskStorage(tmp_path)

    assert str(tmp_path / WAL_NAME) in str(corrupt.value)
    assert f"offset {second}" in str(corrupt.value)
    assert (tmp_path / WAL_NAME).read_bytes() == bytes(data)


def test_snapshot_and_compact_keeps_catch_up_entries(tmp_path: Path) -> None:
    """§7: entries covered by a snapshot may be discarded."""
    st = DiskStorage(tmp_path)
    st.save(HardState(3, 1, 90), ents(1, 101, 3), None, sync=True)
    snap = st.snapshot_and_compact(90, CONF, b"manifest", keep_entries=20)
    assert snap.meta.index == 90
    assert snap.meta.term == 3
    assert st.first_index() == 71
    with pytest.raises(CompactedError):
        st.entries(70, 72)
    st.save(None, ents(101, 103, 3), None, sync=True)
    st.close()
    again = DiskStorage(tmp_path)
    assert again.first_index() == 71
    assert again.last_index() == 102
    assert again.snapshot().meta == snap.meta
    assert again.snapshot().data == b"manifest"
    assert again.entries(71, 103) == ents(71, 103, 3)
    assert again.hard_state == HardState(3, 1, 90)


def test_installed_snapshot_replaces_the_log(tmp_path: Path) -> None:
    st = DiskStorage(tmp_path)
    st.save(HardState(1, 0, 3), ents(1, 5, 1), None, sync=True)
    snap = Snapshot(SnapshotMeta(50, 4, CONF), b"files")
    st.save(HardState(4, 0, 50), [], snap, sync=True)
    assert st.first_index() == 51
    assert st.last_index() == 50
    st.save(None, ents(51, 53, 4), None, sync=True)
    st.close()
    again = DiskStorage(tmp_path)
    assert again.snapshot().meta == snap.meta
    assert again.entries(51, 53) == ents(51, 53, 4)
    assert again.initial_state() == (HardState(4, 0, 50), CONF)
