"""A second replica for tests: replays given committed entries, at their own
indices, into a fresh ShardStore through a real Applier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from shardlite.node.applier import Applier
from shardlite.node.shard import dump
from shardlite.node.shards import SHARD_SUFFIX, ShardStore
from shardlite.replication.replicator import Accepted, ReplicatorStatus
from shardlite.v1 import frame_pb2


class ReplayReplicator:
    """The Replicator protocol over a fixed list of committed entries."""

    def __init__(self, entries: Iterable[tuple[int, frame_pb2.Frame]]) -> None:
        self.entries = sorted(entries, key=lambda entry: entry[0])
        self.last = self.entries[-1][0] if self.entries else 0
        self._closed = asyncio.Event()

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        raise NotImplementedError("a replay replicator only replays")

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        batch: list[tuple[int, frame_pb2.Frame | None]] = [
            (index, frame) for index, frame in self.entries if index >= from_index
        ]
        if batch:
            yield batch
        await self._closed.wait()

    async def read_barrier(self) -> int:
        return self.last

    def status(self) -> ReplicatorStatus:
        return ReplicatorStatus("replay", "leader", 0, "", self.last, 1, self.last)

    def compact(self, applied_index: int) -> None:
        pass

    async def close(self) -> None:
        self._closed.set()


def replay(entries: list[tuple[int, frame_pb2.Frame]], data_dir: Path) -> ShardStore:
    """Apply `entries` on a fresh replica in `data_dir`; returns its store (closed)."""

    data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> ShardStore:
        replicator = ReplayReplicator(entries)
        store = ShardStore(data_dir)
        applier = Applier(store, replicator, data_dir)
        applier.start()
        await asyncio.wait_for(applier.wait_applied(replicator.last), 60)
        await replicator.close()
        await applier.close()
        store.close_all()
        return store

    return asyncio.run(run())


def dump_shards(data_dir: Path) -> dict[str, object]:
    """Every shard's logical content, by its path under <data>/shards."""
    root = data_dir / "shards"
    return {
        str(path.relative_to(root)): dump(path) for path in sorted(root.rglob("*" + SHARD_SUFFIX))
    }
