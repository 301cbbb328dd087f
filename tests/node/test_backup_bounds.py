"""Backups are bounded (issue 11, item 6): each is a full copy of the shards
on disk, so at most --max-concurrent-backups run at once (RESOURCE_EXHAUSTED
beyond), and the temporary copies a crash left behind are removed when the
node starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from shardlite.node.client import Put
from shardlite.v1 import kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess, wait_until


def _temp_copies(data: Path) -> list[Path]:
    root = data / "backups"
    return sorted(root.glob("tmp-*")) if root.exists() else []


def test_backups_beyond_the_bound_are_resource_exhausted(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = start_node("--max-concurrent-backups", "1")
    with node.client(timeout=30) as c:
        for n in range(8):  # ~8 MiB: more than the stream's flow-control window
            c.put(f"k{n}", bytes([n]) * (1 << 20))
    channel = grpc.insecure_channel(node.endpoint)
    stub = kv_pb2_grpc.MaintenanceStub(channel)
    running = stub.Backup(kv_pb2.BackupRequest(), timeout=60)
    assert next(iter(running)).manifest  # started, and held open: nobody reads the rest
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(stub.Backup(kv_pb2.BackupRequest(), timeout=10)))
    error = refused.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the limit is 1" in (error.details() or "")
    running.cancel()
    # The slot and the temporary copy are released when the stream ends.
    wait_until(lambda: not _temp_copies(tmp_path / "n1"), 30, "the backup's copy to go")
    chunks = list(stub.Backup(kv_pb2.BackupRequest(), timeout=60))
    assert chunks[0].manifest
    assert sum(len(chunk.data) for chunk in chunks) >= 8 << 20


def test_copies_left_by_a_crash_are_removed_at_start(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    data = tmp_path / "n1"
    node = start_node()
    with node.client() as c:
        c.batch([Put("a", b"1"), Put("b", b"2")])
    node.kill()
    # What a node killed in the middle of two backups leaves behind.
    for name in ("tmp-0123abcd", "tmp-4567ef01"):
        (data / "backups" / name / "shards" / "_").mkdir(parents=True)
        (data / "backups" / name / "shards" / "_" / "default.db").write_bytes(b"x" * 4096)
    keep = data / "backups" / "not-ours.txt"
    keep.write_text("an operator's file")
    node = start_node()
    assert _temp_copies(data) == []
    assert keep.exists()
    with node.client() as c:
        entry = c.get("a")
        assert entry is not None
        assert entry.value == b"1"
