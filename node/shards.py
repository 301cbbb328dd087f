"""The set of shards on one node: where their files live, and a bounded cache
of open ones.

`<data>/shards/<org>/<namespace>.db`, the default org "" under `_`. Names are
validated before they get here (node/frames.py, node/names.py); `path`, the
one place a shard's path is computed, checks again that it lies directly
inside `<data>/shards/<org>/` whatever the names are (ShardPathError).

At most `max_open` shards are open; the least recently used idle one is
closed to make room, and shards idle for `idle_seconds` are closed by
`evict_idle`. A pinned shard (in use right now) is never closed. Opening and
closing a shard (file I/O, a WAL checkpoint) run outside the store's lock, so
a slow one never stalls reads of other shards.

Memory: an open shard holds one SQLite connection, two once it was read
(node/shard.py opens the reader at the first read). Out of the box SQLite
gives each connection's page cache 20 pages up front (~90 KB) at its first
read, whatever its cache_size (the PRAGMA itself reads the schema first), so
1,000 open shards cost ~300 MB. The first store in a process turns that
up-front allocation off (`limit_sqlite_memory`): pages are then allocated as
they are used, and an open shard with a few keys costs ~170 KB.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from shardlite.node.names import org_dir
from shardlite.node.shard import Shard
from shardlite.replication.durable import crash_point, fsync_path

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".db"
# What a crash while a new shard was set up leaves behind (ShardStore._create):
# the temporary file and its WAL or journal. A shard's own files end in .db.
_SETUP_LEFTOVER = re.compile(r"\.db\.new-\d+-\d+(-wal|-shm|-journal)?\Z")
# The longest file name most file systems take (NAME_MAX).
MAX_FILE_NAME_BYTES = 255


class ShardPathError(ValueError):
    """An (org, namespace) whose shard file would not lie inside <data>/shards."""


# sqlite3.h: sqlite3_config(SQLITE_CONFIG_PAGECACHE, pMem, sz, N) with pMem NULL
# and N 0 turns off the page cache's initial bulk allocation.
SQLITE_CONFIG_PAGECACHE = 7
SQLITE_OK = 0
_sqlite_limited: bool | None = None
_sqlite_lock = threading.Lock()


def limit_sqlite_memory() -> bool:
    """Turn off SQLite's up-front page-cache allocation (20 pages a
    connection, SQLITE_DEFAULT_PCACHE_INITSZ) for this process, once. True if
    it is off. Done only while SQLite holds no memory at all, i.e. no
    connection is open anywhere in the process: configuring SQLite means
    shutting it down and initializing it again, which no open connection
    survives. Left as it is (False) otherwise, or where the sqlite3 module's
    library cannot be reached (not Linux, sqlite3 built into the interpreter)."""
    global _sqlite_limited
    with _sqlite_lock:
        if _sqlite_limited is None:
            _sqlite_limited = _no_initial_page_cache()
            if not _sqlite_limited:
                log.info("SQLite's initial page-cache allocation stays on (~90 KB a connection)")
        return _sqlite_limited


def _no_initial_page_cache() -> bool:
    # sqlite3_config is variadic; its int and pointer arguments travel in
    # registers as fixed ones do on Linux (x86-64 and arm64): called only there.
    if not sys.platform.startswith("linux"):
        return False
    import _sqlite3  # the extension module: its library is the one sqlite3 uses

    module = getattr(_sqlite3, "__file__", None)
    if module is None:
        return False
    try:
        lib = ctypes.CDLL(module)
        memory_used, shutdown = lib.sqlite3_memory_used, lib.sqlite3_shutdown
        config, initialize = lib.sqlite3_config, lib.sqlite3_initialize
    except (OSError, AttributeError):
        return False
    memory_used.restype = ctypes.c_int64
    if memory_used() != 0:  # a connection (or a statement) is open somewhere
        return False
    if shutdown() != SQLITE_OK:
        return False
    rc = config(
        ctypes.c_int(SQLITE_CONFIG_PAGECACHE),
        ctypes.c_void_p(None),
        ctypes.c_int(0),
        ctypes.c_int(0),
    )
    if initialize() != SQLITE_OK:
        raise RuntimeError("SQLite failed to initialize again after its configuration")
    return bool(rc == SQLITE_OK)


class Pinned:
    """`with store.use(...) as shard:` holds the shard's pin until the block
    ends (a class, not a generator: every read passes here)."""

    __slots__ = ("shard", "store")

    def __init__(self, store: ShardStore, shard: Shard | None) -> None:
        self.store = store
        self.shard = shard

    def __enter__(self) -> Shard | None:
        return self.shard

    def __exit__(self, *exc: object) -> None:
        if self.shard is not None:
            self.store.unpin(self.shard)


class ShardStore:
    def __init__(
        self,
        data_dir: Path,
        max_open: int = 1024,
        idle_seconds: float = 300.0,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        limit_sqlite_memory()  # before this store opens its first connection
        self.root = data_dir / "shards"
        self._resolved_root = self.root.resolve()
        self.max_open = max_open
        self.idle_seconds = idle_seconds
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        # Least recently used first.
        self._open: OrderedDict[tuple[str, str], Shard] = OrderedDict()
        # Shards evicted to make room are closed here, not by whoever needed
        # the room (often a read on the event loop): a close checkpoints.
        self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-close")
        self._closing: set[Future[None]] = set()
        # Shards (relative paths) written since the last snapshot copy began;
        # None: not known (since this process started, or a swap), so the
        # next snapshot copies every shard.
        self._written: set[Path] | None = None
        self._finish_interrupted_swap()
        self._sweep_setup_leftovers()

    def path(self, org: str, namespace: str) -> Path:
        """Where the shard of (org, namespace) lives; ShardPathError unless that
        is a file directly inside <data>/shards/<org dir>/."""
        directory, name = org_dir(org), namespace + SHARD_SUFFIX
        path = self.root / directory / name
        problem = ""
        if any(
            len(part.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES
            for part in (directory, name)
        ):
            problem = "a name is too long for a file name"
        else:
            try:
                resolved = path.resolve()
            except (OSError, ValueError) as exc:  # a NUL, a symlink loop
                problem = str(exc)
            else:
                inside = resolved.parent.parent == self._resolved_root
                if not inside or resolved.parent.name != directory or resolved.name != name:
                    problem = "it would lie outside the data directory"
        if problem:
            raise ShardPathError(
                f"no shard for org {org[:80]!r}, namespace {namespace[:80]!r}: {problem}"
            )
        return path

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def peek(self, org: str, namespace: str) -> Shard | None:
        """The shard if it is open now (using it opens no file), not pinned:
        for a look at its state, not for reading or writing it."""
        with self._lock:
            return self._open.get((org, namespace))

    def use(self, org: str, namespace: str, *, create: bool) -> Pinned:
        """Pin the shard now, until the `with` block this call opens ends
        (always use it as `with store.use(...) as shard:`); None if it does
        not exist and `create` is false (a read of a namespace nobody wrote
        creates nothing)."""
        return Pinned(self, self._acquire(org, namespace, create))

    def unpin(self, shard: Shard) -> None:
        """Let go of a pin `use` took."""
        with self._lock:
            shard.pins -= 1
            shard.last_used = time.monotonic()

    def _acquire(self, org: str, namespace: str, create: bool) -> Shard | None:
        name = (org, namespace)
        shard = self._pin_open(name)
        if shard is not None:
            return shard
        path = self.path(org, namespace)
        exists = path.exists()
        if not exists and not create:
            return None
        # Opened outside the lock (file I/O, migrations): reads of other shards
        # go on meanwhile. Only the applier creates shards, so a race is two
        # openers of an existing, finished file; the loser closes its copy.
        if not exists:
            self._create(path)
        opened = Shard(path, self.busy_timeout_ms)
        with self._lock:
            shard = self._open.get(name)
            if shard is None:
                shard = opened
                shard.pins += 1
                self._open[name] = shard
                victims = self._make_room()
            else:
                shard.pins += 1
                self._open.move_to_end(name)
                victims = [opened]
        self._retire(victims)
        return shard

    def _create(self, path: Path) -> None:
        """A new shard file, set up whole (WAL mode, the latest schema) under a
        temporary name, then renamed into place. A reader opening the name
        meanwhile (`use(create=False)`) finds no file or a finished one: two
        connections setting up one new file can each wait for the other's
        lock until the busy timeout ("database is locked": the applier
        fail-stopped, and a read held the event loop that long)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.new-{os.getpid()}-{threading.get_ident()}")
        # Closing checkpoints the WAL into the file (and syncs it) and removes it.
        Shard(temporary, self.busy_timeout_ms).close()
        os.replace(temporary, path)
        # Make the new file's directory entry durable too.
        fsync_path(path.parent)
        fsync_path(self.root)

    def _retire(self, shards: list[Shard]) -> None:
        """Close `shards` (already out of the cache) on the closer thread."""
        for shard in shards:
            future = self._closer.submit(_close_quietly, shard)
            with self._lock:
                self._closing.add(future)
            future.add_done_callback(self._closed)

    def _closed(self, future: Future[None]) -> None:
        with self._lock:
            self._closing.discard(future)

    def _pin_open(self, name: tuple[str, str]) -> Shard | None:
        with self._lock:
            shard = self._open.get(name)
            if shard is not None:
                self._open.move_to_end(name)
                shard.pins += 1
            return shard

    def _make_room(self) -> list[Shard]:
        """Under the lock: take least recently used idle shards out until the
        cap holds (the caller closes them). If every open shard is pinned, the
        cap is exceeded until one is released."""
        excess = len(self._open) - self.max_open
        if excess <= 0:
            return []
        # From the least recently used end, only as far as needed: usually the
        # first entry (a full copy of the order cost O(cache) on every open).
        chosen: list[tuple[str, str]] = []
        for name, shard in self._open.items():
            if shard.pins == 0:
                chosen.append(name)
                if len(chosen) == excess:
                    break
        return [self._open.pop(name) for name in chosen]

    def evict_idle(self) -> int:
        """Close shards idle for longer than idle_seconds; returns how many."""
        cutoff = time.monotonic() - self.idle_seconds
        with self._lock:
            victims = [
                (name, shard)
                for name, shard in self._open.items()
                if shard.pins == 0 and shard.last_used < cutoff
            ]
            for name, _ in victims:
                del self._open[name]
        for _, shard in victims:
            shard.close()
        return len(victims)

    def list_namespaces(self, org: str) -> list[str]:
        directory = self.root / org_dir(org)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(SHARD_SUFFIX)] for n in names if n.endswith(SHARD_SUFFIX))

    # -- snapshots --------------------------------------------------------

    def note_written(self, path: Path) -> None:
        """The applier committed to the shard at `path` (for snapshot_to)."""
        with self._lock:
            if self._written is not None:
                self._written.add(path.relative_to(self.root))

    def copy_to(self, target: Path) -> int:
        """A copy of every shard (SQLite's online backup: each file consistent,
        writers not blocked) under `target`. Returns how many were copied."""
        shards = sorted(self.root.rglob("*" + SHARD_SUFFIX))
        for path in shards:
            _backup(path, target / path.relative_to(self.root))
        return len(shards)

    def snapshot_to(self, target: Path, base: Path | None) -> tuple[int, int]:
        """`copy_to` for a snapshot, where `base` is the copy the previous call
        made (None: there is none to build on). A shard nobody wrote since
        that copy began is the same as its copy there, which holds everything
        it had then: it is hard-linked from `base`, not copied again, so a
        snapshot costs what changed, not every shard. Returns (copied, linked)."""
        with self._lock:
            written, self._written = self._written, set()
        copied = linked = 0
        for path in sorted(self.root.rglob("*" + SHARD_SUFFIX)):
            rel = path.relative_to(self.root)
            dest = target / rel
            unchanged = written is not None and rel not in written
            if base is not None and unchanged and _link(base / rel, dest):
                linked += 1
                continue
            _backup(path, dest)
            copied += 1
        return copied, linked

    def swap_in(self, new_root: Path) -> None:
        """Replace every shard with those under `new_root` (an installed snapshot).
        No shard is open meanwhile; a crash in between is finished on restart."""
        old = self.root.with_name(self.root.name + ".old")
        with self._lock:
            shards = list(self._open.values())
            self._open.clear()
            self._written = None  # every shard replaced: the next snapshot copies all
            for shard in shards:
                shard.close()
            if not new_root.is_dir():
                # Never an empty state for a missing one (issue 11 item 2).
                raise FileNotFoundError(f"no shards to swap in at {new_root}")
            shutil.rmtree(old, ignore_errors=True)
            if self.root.exists():
                os.replace(self.root, old)
                crash_point("shards-swap:old-moved")
            os.replace(new_root, self.root)
            fsync_path(self.root.parent)
        # Outside the lock: reads (on the event loop) need not wait for this.
        shutil.rmtree(old, ignore_errors=True)

    def _finish_interrupted_swap(self) -> None:
        """After a crash in swap_in: the old shards back if the new ones never
        arrived (the install is repeated from the kept snapshot), else the old
        ones removed; a half-copied snapshot staged beside them is dropped."""
        old = self.root.with_name(self.root.name + ".old")
        if old.exists():
            if not self.root.exists():
                os.replace(old, self.root)  # the new shards never arrived: keep the old
                fsync_path(self.root.parent)
            else:
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.root.with_name(self.root.name + ".incoming"), ignore_errors=True)

    def _sweep_setup_leftovers(self) -> None:
        """Remove the temporary files of shards whose setup a crash cut short:
        nothing names them, and the next write of the namespace starts over."""
        if not self.root.is_dir():
            return
        for path in self.root.glob("*/*"):
            if _SETUP_LEFTOVER.search(path.name):
                log.info("removing %s, left by a shard setup a crash cut short", path)
                path.unlink(missing_ok=True)

    def close_all(self) -> None:
        with self._lock:
            shards = list(self._open.values())
            self._open.clear()
            closing = list(self._closing)
        futures.wait(closing)
        for shard in shards:
            shard.close()


def _backup(path: Path, dest: Path) -> None:
    """A consistent copy of the shard at `path` (SQLite's online backup:
    writers are not blocked) at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(
        f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, isolation_level=None
    )
    try:
        copy = sqlite3.connect(dest, isolation_level=None)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def _link(source: Path, dest: Path) -> bool:
    """Hard-link `source` at `dest`; False if it cannot be (gone, another
    file system): the caller copies instead."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, dest)
    except OSError:
        return False
    return True


def _close_quietly(shard: Shard) -> None:
    try:
        shard.close()
    except Exception:
        log.exception("closing the shard %s failed", shard.path)
