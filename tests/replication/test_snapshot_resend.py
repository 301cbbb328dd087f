"""A snapshot re-sent at the same index while one is received or installed
(issue 11 item 2): each stream stages on its own, a complete copy in place is
never removed or replaced, and a missing snapshot is never swapped in as an
empty state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shardlite.node.applier import read_applied_marker
from shardlite.node.shards import ShardStore
from shardlite.node.snapshots import ShardSnapshots
from shardlite.replication.raft.snapshots import (
    MANIFEST,
    incoming_name,
    receive_files,
    seal,
    stream_files,
    verify_dir,
)
from shardlite.v1 import raft_pb2

INDEX = 42


def make_snapshot(root: Path) -> bytes:
    source = root / "leader" / str(INDEX)
    (source / "shards" / "_").mkdir(parents=True)
    for n in range(3):
        (source / "shards" / "_" / f"ns{n}.db").write_bytes(bytes([n]) * (300_000 + n))
    return seal(source, INDEX)


def first_message(manifest: bytes) -> raft_pb2.RaftMessage:
    return raft_pb2.RaftMessage(
        has_snapshot=True, snapshot=raft_pb2.RaftSnapshot(index=INDEX, data=manifest)
    )


async def slow(
    chunks: AsyncIterator[raft_pb2.SnapshotChunk],
) -> AsyncIterator[raft_pb2.SnapshotChunk]:
    async for chunk in chunks:
        await asyncio.sleep(0.001)  # interleave two streams
        yield chunk


def test_the_same_snapshot_received_twice_at_once_lands_whole(tmp_path: Path) -> None:
    manifest = make_snapshot(tmp_path)
    incoming = tmp_path / "incoming"
    delivered: list[Path] = []

    async def on_message(message: raft_pb2.RaftMessage, directory: Path) -> None:
        delivered.append(directory)

    async def receive() -> None:
        await receive_files(
            slow(stream_files(tmp_path / "leader" / str(INDEX), first_message(manifest), manifest)),
            incoming,
            on_message,
        )

    async def check() -> None:
        await asyncio.gather(receive(), receive())
        final = incoming / incoming_name(INDEX, manifest)
        assert delivered == [final, final]
        assert verify_dir(final) == INDEX
        assert [p.name for p in incoming.iterdir()] == [final.name], "no partial left behind"
        # A third copy while the first is in use (an install reading it):
        # the one in place is neither removed nor replaced.
        marker = final / "in-use"
        marker.write_text("an install reads these files")
        inode = final.stat().st_ino
        await receive()
        assert final.stat().st_ino == inode
        assert marker.exists()
        assert (final / MANIFEST).read_bytes() == manifest

    asyncio.run(asyncio.wait_for(check(), 30))


def test_swap_in_refuses_a_missing_snapshot_instead_of_installing_nothing(
    tmp_path: Path,
) -> None:
    store = ShardStore(tmp_path)
    with store.use("", "ns", create=True) as shard:
        assert shard is not None
    store.close_all()
    before = sorted(p.name for p in store.root.rglob("*.db"))
    assert before == ["ns.db"]

    with pytest.raises(FileNotFoundError):
        store.swap_in(tmp_path / "shards.incoming")  # removed under the install

    assert sorted(p.name for p in store.root.rglob("*.db")) == before


def test_an_install_before_the_applier_exists_swaps_and_records_the_index(
    tmp_path: Path,
) -> None:
    """At start the replicator may finish an interrupted install before the
    node attached its applier: the kept files (left in place) replace the
    shards and the applied marker says S, as restart_at would have."""
    make_snapshot(tmp_path)
    kept = tmp_path / "leader" / str(INDEX)
    store = ShardStore(tmp_path / "data")
    snapshots = ShardSnapshots(store)

    asyncio.run(snapshots.install_snapshot(INDEX, kept))

    assert sorted(p.name for p in store.root.rglob("*.db")) == ["ns0.db", "ns1.db", "ns2.db"]
    assert read_applied_marker(tmp_path / "data") == INDEX
    assert verify_dir(kept) == INDEX  # the kept copy is still whole
