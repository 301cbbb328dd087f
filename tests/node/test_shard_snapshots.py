"""Snapshots cost what changed (node/shards.py `snapshot_plan`): a shard nobody
wrote since the previous snapshot is hard-linked from it, not copied again,
and the snapshot still holds every frame up to its index."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from shardlite.node.shard import dump
from shardlite.node.shards import ShardStore, copy_shards
from shardlite.replication import offload
from shardlite.replication.raft.snapshots import verify_dir
from shardlite.v1 import frame_pb2
from tests.harness import running_cluster, wait_until

COPY = "shardlite.node.shards:copy_shards"
SEAL = "shardlite.replication.raft.snapshots:seal_files"


def _put(store: ShardStore, namespace: str, index: int, value: bytes) -> None:
    """What the applier does for one frame: apply it, then say so."""
    frame = frame_pb2.Frame(namespace=namespace, trace_id=os.urandom(8))
    frame.ops.add().put.CopyFrom(frame_pb2.PutOp(key="k", value=value))
    with store.use("", namespace, create=True) as shard:
        assert shard is not None
        shard.apply([(index, frame)], 1000)
        store.note_written(shard.path)


def _snapshot(store: ShardStore, target: Path, base: Path | None) -> tuple[int, int]:
    return copy_shards(store.snapshot_plan(target, base))


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
        assert _snapshot(store, first, base=tmp_path / "an-older-copy") == (2, 0)

        _put(store, "busy", 3, b"b2")
        assert _snapshot(store, second, base=first) == (1, 1)
        assert _inode(second / "_" / "still.db") == _inode(first / "_" / "still.db")
        assert _inode(second / "_" / "busy.db") != _inode(first / "_" / "busy.db")
        # Each copy holds what its shard held: the linked one is the same.
        for name in ("still", "busy"):
            assert dump(second / "_" / f"{name}.db") == dump(store.root / "_" / f"{name}.db")

        # A shard created since the last copy has nothing to link from.
        _put(store, "new", 4, b"n1")
        assert _snapshot(store, third, base=second) == (1, 2)
        assert dump(third / "_" / "new.db") == dump(store.root / "_" / "new.db")
    finally:
        store.close_all()


def test_after_a_swap_or_without_a_base_every_shard_is_copied(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "data")
    try:
        _put(store, "a", 1, b"v")
        base = tmp_path / "base"
        assert _snapshot(store, base, base=None) == (1, 0)
        assert _snapshot(store, tmp_path / "no-base", base=None) == (1, 0)

        incoming = tmp_path / "incoming"
        store.copy_to(incoming)
        store.swap_in(incoming)  # an installed snapshot replaced every shard
        assert _snapshot(store, tmp_path / "after-swap", base=base) == (1, 0)
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


def test_the_copy_and_the_seal_run_in_a_child_process_as_on_a_thread(tmp_path: Path) -> None:
    """What a node with many shards does (replication/offload.py): the same
    functions, through JSON, in another process."""
    store = ShardStore(tmp_path / "data")
    try:
        _put(store, "a", 1, b"v1")
        _put(store, "b", 2, b"v2")
        first = tmp_path / "1"
        plan = store.snapshot_plan(first / "shards", base=None)
        many = offload.CHILD_FROM_FILES
        assert asyncio.run(offload.call(COPY, plan, files=many)) == [2, 0]
        manifest = asyncio.run(offload.call(SEAL, str(first), 1, None, files=many))
        assert verify_dir(first) == 1

        _put(store, "b", 3, b"v3")
        second = tmp_path / "2"
        plan = store.snapshot_plan(second / "shards", base=first / "shards")
        assert asyncio.run(offload.call(COPY, plan, files=many)) == [1, 1]
        asyncio.run(offload.call(SEAL, str(second), 2, str(first), files=many))
        assert verify_dir(second) == 2
        assert json.loads(manifest)["index"] == 1
        assert dump(second / "shards" / "_" / "b.db") == dump(store.root / "_" / "b.db")
    finally:
        store.close_all()
