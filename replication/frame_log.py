"""A durable, segmented, append-only log of (index, payload) records.

Record layout: header `<IIQ` (payload length, crc32 of index+payload, index),
then the payload. Segments are files named by their first index. On open, a
torn tail of the LAST segment (a crash mid-write: short header, short payload
or a checksum mismatch) is cut off; damage anywhere else is refused loudly,
because it is not something a crash can produce.

Blocking I/O; the caller decides which thread runs it. Appends come from one
writer at a time; reads may run concurrently with an append.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from shardlite.replication.durable import fsync_path, write_all
from shardlite.replication.observer import NULL_OBSERVER, Observer, timed_fsync

HEADER = struct.Struct("<IIQ")
SEGMENT_SUFFIX = ".seg"
MAX_RECORD_BYTES = 1 << 30


class CorruptLog(Exception):
    """The log is damaged in a way a crash cannot explain."""


class IndexOutOfRange(Exception):
    def __init__(self, index: int, first_index: int) -> None:
        self.index = index
        self.first_index = first_index
        super().__init__(f"index {index} is below the first retained index {first_index}")


def _checksum(index: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(index.to_bytes(8, "little")))


@dataclass
class _Segment:
    path: Path
    first_index: int
    # offsets[i] is the file offset of record first_index + i.
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    size: int = 0

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


class FrameLog:
    def __init__(
        self, directory: Path, segment_bytes: int = 64 << 20, first_index: int = 1
    ) -> None:
        """`first_index`: where an empty log starts (after a restored backup)."""
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._writer: int | None = None  # fd of the last segment, opened for append
        self.observer: Observer = NULL_OBSERVER
        directory.mkdir(parents=True, exist_ok=True)
        self._recover(first_index)

    # -- recovery ---------------------------------------------------------

    def _recover(self, first_index: int) -> None:
        paths = sorted(self.directory.glob("*" + SEGMENT_SUFFIX))
        for n, path in enumerate(paths):
            is_last = n == len(paths) - 1
            segment = self._scan(path, int(path.stem), truncate_torn_tail=is_last)
            if self._segments and segment.first_index != self._segments[-1].last_index + 1:
                raise CorruptLog(
                    f"{path}: starts at index {segment.first_index}, expected "
                    f"{self._segments[-1].last_index + 1}"
                )
            self._segments.append(segment)
        if not self._segments:
            self._segments.append(self._create_segment(first_index))
        self._writer = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)

    @staticmethod
    def _scan(path: Path, first_index: int, truncate_torn_tail: bool) -> _Segment:
        segment = _Segment(path, first_index)
        data = path.read_bytes()
        pos = 0
        expected = first_index
        while pos < len(data):
            torn = ""
            if pos + HEADER.size > len(data):
                torn = "short header"
            else:
                length, crc, index = HEADER.unpack_from(data, pos)
                end = pos + HEADER.size + length
                if end > len(data):
                    torn = "short payload"
                elif _checksum(index, data[pos + HEADER.size : end]) != crc:
                    torn = "checksum mismatch"
                elif index != expected:
                    raise CorruptLog(f"{path}@{pos}: index {index}, expected {expected}")
            if torn:
                if not truncate_torn_tail:
                    raise CorruptLog(f"{path}@{pos}: {torn} in a sealed segment")
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                break
            segment.offsets.append(pos)
            pos = end
            expected += 1
        segment.size = pos
        return segment

    def _create_segment(self, first_index: int) -> _Segment:
        path = self.directory / f"{first_index:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.fsync(fd)
        os.close(fd)
        fsync_path(self.directory)
        return _Segment(path, first_index)

    # -- properties -------------------------------------------------------

    @property
    def first_index(self) -> int:
        with self._lock:
            return self._segments[0].first_index

    @property
    def last_index(self) -> int:
        with self._lock:
            return self._segments[-1].last_index

    def size_bytes(self) -> int:
        """Bytes of every retained segment."""
        with self._lock:
            return sum(segment.size for segment in self._segments)

    # -- writing ----------------------------------------------------------

    def append(self, payloads: list[bytes]) -> int:
        """Append records with the next indices, then fsync once (group commit).

        Returns the index of the last record. Durable when this returns."""
        if self._writer is None:
            raise CorruptLog("log is closed")
        with self._lock:
            segment = self._segments[-1]
            next_index = segment.last_index + 1
        if segment.size >= self.segment_bytes and segment.offsets:
            os.fsync(self._writer)
            os.close(self._writer)
            segment = self._create_segment(next_index)
            self._writer = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
            with self._lock:
                self._segments.append(segment)
        chunks: list[bytes] = []
        offsets: list[int] = []
        pos = segment.size
        for i, payload in enumerate(payloads):
            if len(payload) > MAX_RECORD_BYTES:
                raise ValueError(f"record of {len(payload)} bytes is too large")
            index = next_index + i
            chunks.append(HEADER.pack(len(payload), _checksum(index, payload), index))
            chunks.append(payload)
            offsets.append(pos)
            pos += HEADER.size + len(payload)
        write_all(self._writer, b"".join(chunks))
        timed_fsync(self._writer, self.observer, "frame_log")
        with self._lock:
            segment.offsets.extend(offsets)
            segment.size = pos
            return segment.last_index

    # -- reading ----------------------------------------------------------

    def read(
        self, from_index: int, max_count: int = 256, max_bytes: int = 4 << 20
    ) -> list[tuple[int, bytes]]:
        """Records from `from_index` on: at least one if any exist, at most
        `max_count`, and no more than `max_bytes` unless the first alone is larger."""
        with self._lock:
            if from_index < self._segments[0].first_index:
                raise IndexOutOfRange(from_index, self._segments[0].first_index)
            firsts = [s.first_index for s in self._segments]
            segment = self._segments[bisect.bisect_right(firsts, from_index) - 1]
            if from_index > segment.last_index:
                return []
            offsets = segment.offsets
            base = from_index - segment.first_index
            start = offsets[base]
            stop = base + 1  # exclusive, in positions within the segment
            limit = min(len(offsets), base + max_count)
            while stop < limit and offsets[stop] - start < max_bytes:
                stop += 1
            end = offsets[stop] if stop < len(offsets) else segment.size
            path = segment.path
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        out: list[tuple[int, bytes]] = []
        pos = 0
        while pos < len(data):
            length, crc, index = HEADER.unpack_from(data, pos)
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            if len(payload) != length or _checksum(index, payload) != crc:
                raise CorruptLog(f"{path}: damaged record at index {index}")
            out.append((index, payload))
            pos += HEADER.size + length
        return out

    # -- compaction -------------------------------------------------------

    def compact(self, keep_from: int) -> int:
        """Delete whole segments that hold only indices below `keep_from`.

        The segment being written is never deleted. Returns the new first index."""
        doomed: list[_Segment] = []
        with self._lock:
            while len(self._segments) > 1 and self._segments[0].last_index < keep_from:
                doomed.append(self._segments.pop(0))
            first = self._segments[0].first_index
        for segment in doomed:
            segment.path.unlink(missing_ok=True)
        if doomed:
            fsync_path(self.directory)
        return first

    def close(self) -> None:
        if self._writer is not None:
            os.fsync(self._writer)
            os.close(self._writer)
            self._writer = None
