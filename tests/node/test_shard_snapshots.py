"""Snapshots cost what changed (node/shards.py `snapshot_to`): a shard nobody
wrote since the previous snapshot is hard-linked from it, not copied again,
and the snapshot still holds every frame up to its index."""

from __future__ import annotations

import os
from pathlib import Path

from shardlite.node.shard import dump
from shardlite.node.shards import ShardStore
from shardlite.v1 import frame_pb2
from tests.harness import running_cluster, wait_until


def _put(store: ShardStore, namespace: str, index: int, value: bytes) -> None:
    """What the applier does for one frame: apply it, then say so."""
    frame = frame_pb2.Frame(namespace=namespace, trace_id=os.urandom(8))
    frame.ops.add().put.CopyFrom(frame_pb2.PutOp(key="k", value=value))
    with store.use("", namespace, create=True) as shard:
        assert shard is not None
        shard.apply([(index, frame)], 1000)
        store.note_written(shard.path)


def _inode(path: Path) -> int:
    return path.stat().st_ino


def test_only_written_shards_are_copied_again(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "data")
    try:
        _put(store, "still", 1, b"s1")
        _put(store, "busy", 2, b"b1")
        first, second, third = (tmp_path / f"snap{i}" for i in (1, 2, 3))
        # No record of writes yet (a fresh process): everything is copied,
        # whatever copy it is offered as a base.
        assert store.snapshot_to(first, base=tmp_path / "an-older-copy") == (2, 0)

        _put(store, "busy", 3, b"b2")
        assert store.snapshot_to(second, base=first) == (1, 1)
        assert _inode(second / "_" / "still.db") == _inode(first / "_" / "still.db")
        assert _inode(second / "_" / "busy.db") != _inode(first / "_" / "busy.db")
        # Each copy holds what its shard held: the linked one is the same.
        for name in ("still", "busy"):
            assert dump(second / "_" / f"{name}.db") == dump(store.root / "_" / f"{name}.db")

        # A shard created since the last copy has nothing to link from.
        _put(store, "new", 4, b"n1")
        assert store.snapshot_to(third, base=second) == (1, 2)
        assert dump(third / "_" / "new.db") == dump(store.root / "_" / "new.db")
    finally:
        store.close_all()


def test_after_a_swap_or_without_a_base_every_shard_is_copied(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "data")
    try:
        _put(store, "a", 1, b"v")
        base = tmp_path / "base"
        assert store.snapshot_to(base, base=None) == (1, 0)
        assert store.snapshot_to(tmp_path / "no-base", base=None) == (1, 0)

        incoming = tmp_path / "incoming"
        store.copy_to(incoming)
        store.swap_in(incoming)  # an installed snapshot replaced every shard
        assert store.snapshot_to(tmp_path / "after-swap", base=base) == (1, 0)
    finally:
        store.close_all()


def test_a_node_links_the_namespace_it_no_longer_writes(tmp_path: Path) -> None:
    """A real node's snapshots, one after another: the namespace written once
    keeps its inode from snapshot to snapshot (it is never copied again),
    the busy one gets a new copy each time, and both hold the latest values."""
    args = ("--snapshot-entries", "200")
    with running_cluster(tmp_path, size=1, args=args) as cluster:
        snapshots = cluster.nodes["n1"].data_dir / "raft" / "snapshots"

        def newest() -> Path | None:
            done = (
                [p for p in snapshots.iterdir() if p.name.isdigit()] if snapshots.exists() else []
            )
            return max(done, key=lambda p: int(p.name)) if done else None

        with cluster.client("n1", timeout=10) as c:
            c.put("k", b"once", namespace="still")
            for i in range(250):
                c.put("k", f"v{i}".encode(), namespace="busy")
            wait_until(lambda: newest() is not None, 30, "a first snapshot")
            first = newest()
            assert first is not None
            still = _inode(first / "shards" / "_" / "still.db")
            busy = _inode(first / "shards" / "_" / "busy.db")
            for i in range(250, 500):
                c.put("k", f"v{i}".encode(), namespace="busy")

            def later() -> bool:
                latest = newest()
                return latest is not None and int(latest.name) > int(first.name)

            wait_until(later, 30, "a second snapshot")
            second = newest()
            assert second is not None
            assert _inode(second / "shards" / "_" / "still.db") == still
            assert _inode(second / "shards" / "_" / "busy.db") != busy
            rows = {
                name: dict(dump(second / "shards" / "_" / f"{name}.db"))["kv"]
                for name in ("still", "busy")
            }
        assert [row[:2] for row in rows["still"]] == [("k", b"once")]
        assert len(rows["busy"]) == 1
