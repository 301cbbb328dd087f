"""What an open shard costs (issue 12 target 5: 1,000 open shards under 300
MB; writes spread over many namespaces). The memory cases run in a fresh
interpreter: SQLite's configuration is per process and can change only while
no connection is open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shardlite.node.shard import Shard
from shardlite.node.shards import ShardStore
from shardlite.v1 import frame_pb2

ROOT = Path(__file__).resolve().parent.parent.parent
SHARDS = 200

# Open SHARDS shards, write a key to each and read it back (both connections
# used), and report SQLite's own count of the memory it holds.
SCRIPT = """
import ctypes, json, sqlite3, sys
from pathlib import Path
import _sqlite3
from shardlite.node.shards import ShardStore, limit_sqlite_memory
from shardlite.v1 import frame_pb2

lib = ctypes.CDLL(_sqlite3.__file__)
lib.sqlite3_memory_used.restype = ctypes.c_int64
other = sqlite3.connect(":memory:") if sys.argv[3] == "open-first" else None
if other is not None:
    other.execute("CREATE TABLE t (x)")
store = ShardStore(Path(sys.argv[1]), max_open=1000)
before = lib.sqlite3_memory_used()
count = int(sys.argv[2])
for i in range(count):
    with store.use("", f"ns{i}", create=True) as shard:
        frame = frame_pb2.Frame()
        frame.ops.add(put=frame_pb2.PutOp(key="k", value=b"v" * 100))
        shard.apply([(i + 1, frame)], 1000)
        assert shard.get("k") == (b"v" * 100, i + 1)
per_shard = (lib.sqlite3_memory_used() - before) / count
if other is not None:
    other.execute("INSERT INTO t VALUES (1)")  # the earlier connection still works
print(json.dumps({"limited": limit_sqlite_memory(), "per_shard": per_shard,
                  "open": store.open_count}))
store.close_all()
"""


def _run(tmp_path: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(SHARDS), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_an_open_shard_costs_no_up_front_page_cache(tmp_path: Path) -> None:
    result = _run(tmp_path, "store-first")
    assert result["limited"] is True
    assert result["open"] == SHARDS
    # Two connections, each with a few pages, its statements and schema: about
    # 120 KB. SQLite's default would add 20 pages (~90 KB) to each connection
    # up front: ~250 KB a shard.
    assert result["per_shard"] < 170 * 1024, result


def test_sqlite_is_left_alone_while_a_connection_is_open(tmp_path: Path) -> None:
    result = _run(tmp_path, "open-first")
    assert result["limited"] is False
    assert result["open"] == SHARDS
    assert result["per_shard"] > 200 * 1024, result  # the default: 20 pages up front


class _CountingOrder(OrderedDict[tuple[str, str], Shard]):
    """The store's own LRU order, counting the entries an eviction visits."""

    visited = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name in super().__iter__():
            self.visited += 1
            yield name

    def items(self) -> Iterator[tuple[tuple[str, str], Shard]]:  # type: ignore[override]
        for name in super().__iter__():
            self.visited += 1
            yield name, self[name]


def test_making_room_visits_only_the_least_recently_used(tmp_path: Path) -> None:
    """Opening a shard into a full cache takes the least recently used idle
    one without walking the whole cache (it did on every open: O(cache))."""
    store = ShardStore(tmp_path, max_open=40)
    try:
        for i in range(40):
            with store.use("", f"ns{i}", create=True):
                pass
        with store.use("", "ns0", create=False):  # ns0 used last: ns1 is the oldest now
            order = _CountingOrder(store._open)
            store._open = order
            with store.use("", "new", create=True):
                assert order.visited <= 2  # ns0 is pinned but recently used: not visited
        assert store.open_count == 40
        assert ("", "ns1") not in order
        assert ("", "ns0") in order
    finally:
        store.close_all()


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_shard_only_written_holds_no_reader(tmp_path: Path) -> None:
    """Under writes spread over many namespaces most open shards are only
    ever written (by the applier): they hold the writer's files alone; the
    reader's connection comes with the first read."""
    store = ShardStore(tmp_path, max_open=100)
    try:
        before = _open_files()
        for i in range(20):
            with store.use("", f"ns{i}", create=True) as shard:
                assert shard is not None
                frame = frame_pb2.Frame(namespace=f"ns{i}", trace_id=b"t%d" % i)
                frame.ops.add().put.CopyFrom(frame_pb2.PutOp(key="k", value=b"v"))
                shard.apply([(i + 1, frame)], 1000)
        written = _open_files() - before
        for i in range(20):
            with store.use("", f"ns{i}", create=False) as shard:
                assert shard is not None
                assert shard.get("k") == (b"v", i + 1)
        read = _open_files() - before
        # The reader's own files (its database handle and WAL handle), two a
        # shard, open only with the reads.
        assert read - written == 2 * 20, (written, read)
    finally:
        store.close_all()
