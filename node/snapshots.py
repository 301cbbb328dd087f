"""The node's shards as a Raft state machine: what a snapshot is made of and
how one is installed.

A snapshot at index S is a copy of every shard file, each taken with SQLite's
online backup while writes go on. Each copy holds every frame up to S for its
shard (it was applied before the snapshot began) and perhaps a few later ones;
that is safe because every shard records its own applied index and replay
skips what a shard already has. After installing, the node applies the log
from S + 1 and every shard converges to the same state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.server import Node

SHARDS_DIR = "shards"


class ShardSnapshots:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def create_snapshot(self, index: int, into: Path) -> None:
        if self.node.applier.applied_index < index:
            raise ValueError(
                f"cannot snapshot at {index}: applied only up to {self.node.applier.applied_index}"
            )
        await asyncio.to_thread(self.node.store.copy_to, into / SHARDS_DIR)

    async def install_snapshot(self, index: int, source: Path) -> None:
        store = self.node.store

        async def replace() -> None:
            await asyncio.to_thread(store.swap_in, source / SHARDS_DIR)

        await self.node.applier.restart_at(index, replace)
