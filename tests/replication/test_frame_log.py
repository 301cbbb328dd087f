"""The durable frame log: group-committed appends, torn-tail recovery,
segments and compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardlite.replication.frame_log import HEADER, CorruptLog, FrameLog, IndexOutOfRange


def _payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"frame-{i}".encode() * (1 + i % 7) for i in range(start, start + n)]


def _read_all(log: FrameLog, start: int = 1) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for _ in range(10_000):
        records = log.read(start)
        if not records:
            return out
        out.extend(records)
        start = records[-1][0] + 1
    raise AssertionError("read did not terminate")


def test_append_assigns_consecutive_indices_and_survives_reopen(tmp_path: Path) -> None:
    log = FrameLog(tmp_path)
    assert (log.first_index, log.last_index) == (1, 0)
    assert log.append(_payloads(3)) == 3
    assert log.append(_payloads(2, 3)) == 5
    log.close()
    reopened = FrameLog(tmp_path)
    assert _read_all(reopened) == list(enumerate(_payloads(5), start=1))
    assert reopened.append([b"next"]) == 6


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size + 2])
def test_torn_tail_is_cut_on_recovery(tmp_path: Path, cut: int) -> None:
    log = FrameLog(tmp_path)
    log.append(_payloads(4))
    log.close()
    segment = next(tmp_path.glob("*.seg"))
    size = segment.stat().st_size
    last_len = len(_payloads(4)[3])
    # Crash mid-write of record 4: only `cut` bytes of it reached the disk.
    os.truncate(segment, size - (HEADER.size + last_len) + cut)
    recovered = FrameLog(tmp_path)
    assert recovered.last_index == 3
    assert _read_all(recovered) == list(enumerate(_payloads(3), start=1))
    assert recovered.append([b"after"]) == 4
    assert recovered.read(4) == [(4, b"after")]


def test_corrupt_last_record_is_treated_as_torn(tmp_path: Path) -> None:
    log = FrameLog(tmp_path)
    log.append(_payloads(3))
    log.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert FrameLog(tmp_path).last_index == 2


def test_damage_in_a_sealed_segment_is_refused(tmp_path: Path) -> None:
    log = FrameLog(tmp_path, segment_bytes=200)
    for i in range(20):
        log.append([f"record-{i}".encode() * 5])
    log.close()
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 2
    data = bytearray(segments[0].read_bytes())
    data[HEADER.size + 1] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="sealed segment"):
        FrameLog(tmp_path)


def test_segments_rotate_and_compaction_drops_whole_old_segments(tmp_path: Path) -> None:
    log = FrameLog(tmp_path, segment_bytes=300)
    for i in range(50):
        log.append([f"r{i}".encode() * 10])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    first = log.compact(30)
    assert 1 < first <= 30
    assert log.first_index == first
    with pytest.raises(IndexOutOfRange) as out:
        log.read(first - 1)
    assert out.value.first_index == first
    assert [i for i, _ in _read_all(log, first)] == list(range(first, 51))
    log.close()
    reopened = FrameLog(tmp_path)
    assert (reopened.first_index, reopened.last_index) == (first, 50)


def test_compaction_never_deletes_the_active_segment(tmp_path: Path) -> None:
    log = FrameLog(tmp_path)
    log.append(_payloads(5))
    assert log.compact(1000) == 1
    assert log.last_index == 5


def test_read_is_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    log = FrameLog(tmp_path)
    log.append([b"x" * 1000] * 50)
    assert len(log.read(1, max_count=10)) == 10
    bounded = log.read(1, max_bytes=5000)
    assert 1 <= len(bounded) <= 6
    assert len(log.read(1, max_bytes=1)) == 1  # always at least one
    assert log.read(51) == []
