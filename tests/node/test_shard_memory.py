"""What an open shard costs in memory (issue 12 target 5: 1,000 open shards
under 300 MB). Each case runs in a fresh interpreter: SQLite's configuration
is per process and can change only while no connection is open."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
SHARDS = 200

# Open SHARDS shards, write a key to each and read it back (both connections
# used), and report SQLite's own count of the memory it holds.
SCRIPT = """
import ctypes, json, sqlite3, sys
from pathlib import Path
import _sqlite3
from node.shards import ShardStore, limit_sqlite_memory
from proto import frame_pb2

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
