"""A shard on its own: migrations and idempotent apply."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shardlite.node.migrations import LATEST, SchemaTooNew, migrate, schema_version
from shardlite.node.shard import Shard, scan
from shardlite.v1 import frame_pb2


def _put(key: str, value: bytes, client: str = "", seq: int = 0) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(namespace="ns")
    frame.ops.add(put=frame_pb2.PutOp(key=key, value=value))
    if client:
        frame.request_id.client_id = client
        frame.request_id.seq = seq
    return frame


def test_migrations_are_idempotent_and_forward_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == 0
    assert schema_version(conn) == LATEST
    assert migrate(conn) == LATEST  # a second run changes nothing
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(SchemaTooNew):
        migrate(conn)
    conn.close()


def test_a_shard_at_an_older_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    from shardlite.node.migrations import MIGRATIONS

    for statement in MIGRATIONS[0][1]:
        conn.execute(statement)
    conn.execute("INSERT INTO kv VALUES ('old', x'01', 3)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    shard = Shard(path)
    assert shard.get("old") == (b"\x01", 3)
    shard.apply([(4, _put("k", b"v", "c", 1))], 100)
    shard.close()


def test_apply_skips_frames_the_shard_already_has(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.db")
    first = shard.apply([(1, _put("a", b"1")), (2, _put("b", b"2"))], 100)
    assert [r.index for r in first if r] == [1, 2]
    shard.close()
    reopened = Shard(tmp_path / "s.db")
    assert reopened.applied_index == 2
    replay = reopened.apply([(1, _put("a", b"X")), (2, _put("b", b"Y")), (3, _put("c", b"3"))], 100)
    assert replay[:2] == [None, None]
    assert replay[2] is not None
    assert reopened.get("a") == (b"1", 1)
    assert reopened.get("c") == (b"3", 3)
    assert reopened.applied_index == 3


def test_request_results_are_kept_for_a_bounded_window(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.db")
    shard.apply([(1, _put("a", b"1", "cl", 1))], 10)
    again = shard.apply([(2, _put("a", b"1", "cl", 1))], 10)[0]
    assert again is not None
    assert again.index == 1  # the original result
    assert shard.get("a") == (b"1", 1)
    # Far beyond the window the old result is forgotten and the request is new.
    shard.apply([(100, _put("z", b"z"))], 10)
    late = shard.apply([(101, _put("a", b"1", "cl", 1))], 10)[0]
    assert late is not None
    assert late.index == 101


def test_scan_holds_one_snapshot_across_chunks(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.db")
    shard.apply([(i + 1, _put(f"k{i:04d}", b"v")) for i in range(600)], 100)
    chunks = scan(tmp_path / "s.db", "k", "", 0)
    first = next(chunks)
    shard.apply([(601, _put("k9999", b"late"))], 100)  # written mid-scan
    rest = [kv for chunk in chunks for kv in chunk]
    keys = [k for k, _, _ in first + rest]
    assert keys == [f"k{i:04d}" for i in range(600)]
    shard.close()


def test_get_many_answers_as_get_does_across_its_chunks(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.db")
    shard.apply([(i, _put(f"k{i}", f"v{i}".encode())) for i in range(1, 1201)], 100_000)
    shard.apply([(1201, _put("k7", b"again"))], 100_000)
    # More keys than one statement takes, repeats and missing keys among them.
    keys = [f"k{i}" for i in range(1, 1300)] + ["k7", "k1", "nope"]
    found = shard.get_many(keys)
    assert found == {key: value for key in keys if (value := shard.get(key)) is not None}
    assert len(found) == 1200
    assert found["k7"] == (b"again", 1201)
    assert shard.get_many([]) == {}
    shard.close()
