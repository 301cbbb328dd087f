"""One SQLite shard: the key/value state of one (org, namespace).

One writer connection, used only by the applier; one reader connection for
point reads; List opens its own read-only connection so a long scan holds a
consistent snapshot without blocking anyone. `applied_index` is stored in the
same transaction as the rows it covers, so replaying frames after a crash
skips exactly what this shard already has.

Determinism: every decision here depends only on the frames and their indices,
never on how the applier split them into batches (each replica splits its own
way). A retry at index i is recognised iff its original's index is
>= i - retention; rows older than that are pruned lazily, and a pruned row and
a stale one decide the same. Each frame's FrameResult is stored by index in
`outcomes` (same transaction), for Subscribe.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import time
import urllib.parse
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path

from shardlite.node.frames import MAX_PROBLEM_CHARS
from shardlite.node.migrations import SchemaTooNew, migrate
from shardlite.replication.durable import fsync_path
from shardlite.v1 import frame_pb2

LIST_CHUNK = 256
# Values in one statement's IN (...) list: keys of Shard.get_many (MultiGet),
# request ids looked up for an entry's frames. Far below SQLite's bound.
IN_LIST_CHUNK = 500
# How many indices a request id (and a frame's outcome) is remembered for. A
# decision of the state machine, so the same on every replica: a constant of
# the code, never a node's configuration (replicas configured differently
# would deduplicate a late retry differently).
REQUEST_RETENTION = 100_000
# A List chunk holds about this many bytes at most (a node's messages are
# bounded: --max-request-bytes), so large values are listed a few at a time.
LIST_CHUNK_BYTES = 4 << 20
# A KeyValue's framing beyond its key and value (tags, lengths, the version).
ROW_OVERHEAD_BYTES = 32
# A shard's WAL is checkpointed after this many commits or bytes of frames
# since the last checkpoint: about SQLite's automatic 1,000 pages (each commit
# writes a few pages: the row's, the request id's, the outcome's, meta's).
CHECKPOINT_COMMITS = 250
CHECKPOINT_BYTES = 4 << 20

# OS errors a frame's content causes, identically on every replica (a name too
# long for a file, a NUL): the frame is refused. Every other OS error is one of
# the machine (disk, permissions, a missing directory): the applier must stop
# (fail-stop) rather than record it as the frame's outcome, since a replica on
# a healthy machine applies the frame.
CONTENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})
MACHINE_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_ABORT,
    }
)
MACHINE_SQLITE_MESSAGES = ("disk i/o error", "database or disk is full", "disk image is malformed")


def is_machine_fault(exc: BaseException) -> bool:
    """True for faults of this machine (disk, memory, permissions); False for
    errors a frame's content causes identically on every replica."""
    if isinstance(exc, (MemoryError, SchemaTooNew)):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in MACHINE_SQLITE_CODES:
            return True
        return any(text in str(exc).lower() for text in MACHINE_SQLITE_MESSAGES)
    if isinstance(exc, OSError):
        return exc.errno not in CONTENT_ERRNOS
    return False


def _connect(path: Path, busy_timeout_ms: int, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def sync_shards(paths: Iterable[Path]) -> None:
    """Make every transaction committed to the shards at `paths` durable: one
    fsync of each shard's WAL, where synchronous=NORMAL commits land, and one
    of each directory holding them (a shard or WAL created since the last
    sync). The database file needs none: in WAL mode with NORMAL, SQLite syncs
    it after each checkpoint, before the WAL frames it copied are reused."""
    directories = set()
    for path in paths:
        directories.add(path.parent)
        # No WAL (checkpointed and truncated at close), or a shard a snapshot
        # install replaced: nothing to sync.
        with contextlib.suppress(FileNotFoundError):
            fsync_path(path.with_name(f"{path.name}-wal"))
    for directory in sorted(directories):
        with contextlib.suppress(FileNotFoundError):
            fsync_path(directory)


class Shard:
    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer = _connect(path, busy_timeout_ms)
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            # NORMAL: no fsync per transaction. The Raft log already made every
            # applied frame durable; the applier fsyncs the shards written (sync_shards)
            # before the applied-index marker moves past its frames, and replay
            # from the marker is idempotent (applied_index). In WAL mode NORMAL
            # keeps the file consistent across a power loss (checkpoints sync).
            self._writer.execute("PRAGMA synchronous = NORMAL")
            # No automatic checkpoint inside a commit: a checkpoint fsyncs, and
            # small batches commit on the event loop (node/applier.py). The
            # applier's thread checkpoints when `checkpoint_due` says so.
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            migrate(self._writer)
        except BaseException:
            self._writer.close()
            raise
        # Opened at the first read: a shard only the applier touches (most of
        # them when writes spread over many namespaces) never pays for it.
        self._reader: sqlite3.Connection | None = None
        row = self._writer.execute("SELECT value FROM meta WHERE name = 'applied_index'").fetchone()
        # Invariant: applied_index is the index of the last frame whose effects are committed here.
        self.applied_index: int = int(row[0])
        self.pins = 0
        self.last_used = time.monotonic()
        # What was committed since the last checkpoint (an estimate of the WAL).
        self._commits_unchecked = 0
        self._bytes_unchecked = 0

    @property
    def checkpoint_due(self) -> bool:
        """Whether the WAL has grown to about where SQLite's own automatic
        checkpoint would run (1,000 pages): many commits, or many bytes."""
        return (
            self._commits_unchecked >= CHECKPOINT_COMMITS
            or self._bytes_unchecked >= CHECKPOINT_BYTES
        )

    # -- writing (the applier's thread only) -------------------------------

    def apply(
        self, frames: list[tuple[int, frame_pb2.Frame]], request_retention: int
    ) -> list[frame_pb2.FrameResult | None]:
        """Apply frames (ascending indices) in one transaction.

        An envelope (node/envelope.py) is applied frame by frame at its index,
        each with its own result in the envelope's FrameResult.batch.
        Returns one result per frame; None for a frame this shard already had.
        A frame that fails for its content (a deterministic SQLite error) is
        rolled back alone and its result says why (FrameResult.invalid); a
        machine fault (is_machine_fault) rolls back everything and is raised."""
        results: list[frame_pb2.FrameResult | None] = []
        last = self.applied_index
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, frame in frames:
                if index <= last:
                    results.append(None)
                    continue
                # An envelope's frames each alone, all at this index; a plain
                # frame is an envelope of one.
                inner = frame.batch if frame.batch else [frame]
                applied = self._apply_independent(conn, index, inner, request_retention)
                if frame.batch:
                    result = frame_pb2.FrameResult(index=index)
                    result.batch.extend(applied)
                else:
                    [result] = applied
                conn.execute(
                    "INSERT OR REPLACE INTO outcomes (idx, result) VALUES (?, ?)",
                    (index, result.SerializeToString(deterministic=True)),
                )
                results.append(result)
                last = index
            if last != self.applied_index:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'applied_index'", (last,))
                # Lazy pruning: the lookup checks the stored index itself, so
                # when rows go does not change any decision; after the same
                # frames every replica holds the same rows.
                horizon = last - request_retention
                conn.execute("DELETE FROM requests WHERE idx < ?", (horizon,))
                conn.execute("DELETE FROM outcomes WHERE idx < ?", (horizon,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.applied_index = last
        self._commits_unchecked += 1
        self._bytes_unchecked += sum(frame.ByteSize() for _, frame in frames)
        return results

    @classmethod
    def _apply_independent(
        cls,
        conn: sqlite3.Connection,
        index: int,
        frames: Sequence[frame_pb2.Frame],
        retention: int,
    ) -> list[frame_pb2.FrameResult]:
        """Apply `frames` at `index`, each alone: frames of one entry, so no two
        share a key or a request id (an envelope's rule), and none can see
        another's writes or request row. That is what lets their request ids be
        looked up together first and recorded together last."""
        known = cls._recent_requests(conn, frames, index - retention)
        results = []
        recorded = []
        for frame in frames:
            request = frame.request_id
            if request.client_id:
                original = known.get((request.client_id, request.seq))
                if original is not None:  # a retry: its original's result
                    results.append(frame_pb2.FrameResult.FromString(original))
                    continue
            result = cls._apply_guarded(conn, index, frame)
            if request.client_id and not result.invalid:
                recorded.append(
                    (
                        request.client_id,
                        request.seq,
                        index,
                        result.SerializeToString(deterministic=True),
                    )
                )
            results.append(result)
        if recorded:
            conn.executemany(
                "INSERT OR REPLACE INTO requests (client_id, seq, idx, result) VALUES (?, ?, ?, ?)",
                recorded,
            )
        return results

    @staticmethod
    def _recent_requests(
        conn: sqlite3.Connection, frames: Sequence[frame_pb2.Frame], horizon: int
    ) -> dict[tuple[str, int], bytes]:
        """The stored result of each of `frames`' request ids first applied at
        or after `horizon`: a retry is recognised iff its original is within
        the window counted from the retry's index, so a stale row not yet
        pruned decides the same as a pruned one."""
        seqs: dict[str, list[int]] = {}
        for frame in frames:
            if frame.request_id.client_id:
                seqs.setdefault(frame.request_id.client_id, []).append(frame.request_id.seq)
        known: dict[tuple[str, int], bytes] = {}
        for client_id, wanted in seqs.items():
            for start in range(0, len(wanted), IN_LIST_CHUNK):
                chunk = wanted[start : start + IN_LIST_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT seq, idx, result FROM requests"
                    f" WHERE client_id = ? AND seq IN ({marks})",
                    (client_id, *chunk),
                )
                for seq, idx, result in rows:
                    if int(idx) >= horizon:
                        known[(client_id, int(seq))] = bytes(result)
        return known

    @classmethod
    def _apply_guarded(
        cls, conn: sqlite3.Connection, index: int, frame: frame_pb2.Frame
    ) -> frame_pb2.FrameResult:
        """The frame's ops, all or none: a frame that fails for its content
        leaves nothing and its result says why. One op is one statement,
        which SQLite already undoes alone when it fails; several need a
        savepoint."""
        several = len(frame.ops) > 1
        if several:
            conn.execute("SAVEPOINT frame")
        try:
            result = cls._apply_ops(conn, index, frame)
        except Exception as exc:
            if is_machine_fault(exc):
                raise
            if several:
                conn.execute("ROLLBACK TO frame")
                conn.execute("RELEASE frame")
            problem = f"cannot apply: {exc}"[:MAX_PROBLEM_CHARS]
            return frame_pb2.FrameResult(index=index, invalid=problem)
        if several:
            conn.execute("RELEASE frame")
        return result

    @staticmethod
    def _apply_ops(
        conn: sqlite3.Connection, index: int, frame: frame_pb2.Frame
    ) -> frame_pb2.FrameResult:
        """The frame's conditions, then (if they hold) its ops, at `index`."""
        result = frame_pb2.FrameResult(index=index)
        for condition in frame.conditions:
            row = conn.execute("SELECT version FROM kv WHERE key = ?", (condition.key,)).fetchone()
            actual = int(row[0]) if row else 0
            if actual != condition.version:
                result.condition_failed = True
                result.failed_key = condition.key
                result.failed_expected = condition.version
                result.failed_actual = actual
                return result
        for op in frame.ops:
            if op.HasField("put"):
                conn.execute(
                    "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "version = excluded.version",
                    (op.put.key, op.put.value, index),
                )
                result.results.add(version=index)
            else:
                cursor = conn.execute("DELETE FROM kv WHERE key = ?", (op.delete.key,))
                result.results.add(deleted=cursor.rowcount > 0)
        return result

    # -- reading (the event loop's thread) ---------------------------------

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            reader = _connect(self.path, self.busy_timeout_ms)
            reader.execute("PRAGMA query_only = 1")
            self._reader = reader
        return self._reader

    def get(self, key: str) -> tuple[bytes, int] | None:
        row = self._read().execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
        return (bytes(row[0]), int(row[1])) if row else None

    def get_many(self, keys: list[str]) -> dict[str, tuple[bytes, int]]:
        """`get` of each of `keys` (distinct or not), one statement per
        IN_LIST_CHUNK distinct keys: the found ones, by key. Each get sees at
        least what `get` would have at the time of the call."""
        found: dict[str, tuple[bytes, int]] = {}
        distinct = list(dict.fromkeys(keys))
        # Well below SQLite's limit of bound variables (32,766 since 3.32).
        for start in range(0, len(distinct), IN_LIST_CHUNK):
            chunk = distinct[start : start + IN_LIST_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._read().execute(
                f"SELECT key, value, version FROM kv WHERE key IN ({marks})", chunk
            )
            for key, value, version in rows:
                found[key] = (bytes(value), int(version))
        return found

    def outcome(self, index: int) -> frame_pb2.FrameResult | None:
        """What applying the frame at `index` produced here (None: not applied
        here, or pruned)."""
        row = self._read().execute("SELECT result FROM outcomes WHERE idx = ?", (index,)).fetchone()
        return frame_pb2.FrameResult.FromString(row[0]) if row else None

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Copy the WAL into the database file (the applier's thread, or a
        close). PASSIVE leaves the WAL file to be reused; TRUNCATE empties it."""
        self._commits_unchecked = self._bytes_unchecked = 0
        # Never wait for readers (an open List): what cannot be copied now is
        # copied by the next checkpoint.
        self._writer.execute("PRAGMA busy_timeout = 0")
        try:
            self._writer.execute(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.OperationalError:
            pass
        finally:
            self._writer.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")

    def close(self) -> None:
        try:
            self.checkpoint("TRUNCATE")
        finally:
            if self._reader is not None:
                self._reader.close()
            self._writer.close()


def dump(path: Path) -> list[tuple[str, list[tuple[object, ...]]]]:
    """The logical content of a shard file, table by table, in key order: what
    two replicas applying the same frames must hold identically."""
    conn = _connect(path, 5000, read_only=True)
    try:
        conn.execute("BEGIN")
        return [
            ("meta", conn.execute("SELECT name, value FROM meta ORDER BY name").fetchall()),
            ("kv", conn.execute("SELECT key, value, version FROM kv ORDER BY key").fetchall()),
            (
                "requests",
                conn.execute(
                    "SELECT client_id, seq, idx, result FROM requests ORDER BY client_id, seq"
                ).fetchall(),
            ),
            ("outcomes", conn.execute("SELECT idx, result FROM outcomes ORDER BY idx").fetchall()),
        ]
    finally:
        conn.close()


def scan(
    path: Path,
    prefix: str,
    start_after: str,
    limit: int,
    busy_timeout_ms: int = 5000,
    max_chunk_bytes: int = LIST_CHUNK_BYTES,
) -> Generator[list[tuple[str, bytes, int]], None, None]:
    """Keys with `prefix`, greater than `start_after`, in lexicographic (UTF-8
    byte) order, all from one snapshot; at most `limit` (0 = all). In chunks of
    at most LIST_CHUNK rows and about `max_chunk_bytes` (a chunk holds at least
    one row, so one row larger than that is a chunk of its own)."""
    conn = _connect(path, busy_timeout_ms, read_only=True)
    try:
        conn.execute("BEGIN")
        # Keys sharing a prefix are contiguous in sorted order: start at the
        # prefix (or after the resume point) and stop at the first key without it.
        if start_after and start_after >= prefix:
            cursor_key, op = start_after, ">"
        else:
            cursor_key, op = prefix, ">="
        rows = conn.execute(
            f"SELECT key, value, version FROM kv WHERE key {op} ? ORDER BY key", (cursor_key,)
        )
        chunk: list[tuple[str, bytes, int]] = []
        size = 0
        for sent, (key, value, version) in enumerate(rows, start=1):
            if not key.startswith(prefix):
                break
            row_bytes = len(key.encode("utf-8")) + len(value) + ROW_OVERHEAD_BYTES
            if chunk and (len(chunk) >= LIST_CHUNK or size + row_bytes > max_chunk_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((key, bytes(value), int(version)))
            size += row_bytes
            if sent == limit:
                break
        if chunk:
            yield chunk
        conn.execute("COMMIT")
    finally:
        conn.close()
