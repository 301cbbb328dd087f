"""The node's shards as a Raft state machine: what a snapshot is made of and
how one is installed.

A snapshot at index S is a copy of every shard file, each taken with SQLite's
online backup while writes go on. Each copy holds every frame up to S for its
shard (it was applied before the snapshot began) and perhaps a few later ones;
that is safe because every shard records its own applied index and replay
skips what a shard already has. After installing, the node applies the log
from S + 1 and every shard converges to the same state. A shard nobody wrote
since the previous snapshot is not copied again but hard-linked from it
(ShardStore.snapshot_to): that copy already holds everything it has.

Installing copies the kept snapshot (raft/snapshots/<S>, which stays: it is
what this node sends on) into `<data>/shards.incoming`, durably, then swaps it
in for the shards while the applier is stopped. Repeating an install is
harmless; a restart repeats one a crash interrupted (replication/raft/driver.py).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shardlite.replication.durable import fsync_tree, write_file_durably

if TYPE_CHECKING:
    from shardlite.node.applier import Applier
    from shardlite.node.shards import ShardStore
    from shardlite.replication.raft.snapshots import KeptSnapshot

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
STAGING_SUFFIX = ".incoming"
MARKER = "applied_index"  # node/applier.py read_applied_marker


def _stage(source: Path, staging: Path) -> None:
    """A durable copy of a snapshot's shards at `staging`. A snapshot of a
    node without shards has no shards directory: that is an empty state, said
    so by its verified manifest, not by a directory that went missing."""
    shutil.rmtree(staging, ignore_errors=True)
    if source.exists():
        shutil.copytree(source, staging)
    else:
        staging.mkdir(parents=True)
    fsync_tree(staging)


class ShardSnapshots:
    """Built before the replicator, which needs it (and may finish an
    interrupted install while it starts); the node attaches the applier once
    it exists."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        self.applier: Applier | None = None
        # The index of the snapshot whose copy began the store's current
        # record of written shards: only that one is a base to link from.
        self._tracked_from: int | None = None

    async def create_snapshot(self, index: int, into: Path, previous: KeptSnapshot | None) -> None:
        applied = self.applier.applied_index if self.applier is not None else 0
        if applied < index:
            raise ValueError(f"cannot snapshot at {index}: applied only up to {applied}")
        base = None
        if previous is not None and previous.index == self._tracked_from:
            base = previous.directory / SHARDS_DIR
        # From here the store records writes anew, relative to this copy.
        self._tracked_from = index
        copied, linked = await asyncio.to_thread(self.store.snapshot_to, into / SHARDS_DIR, base)
        log.debug(
            "snapshot at %d: %d shards copied, %d unchanged ones linked", index, copied, linked
        )

    async def install_snapshot(self, index: int, source: Path) -> None:
        store = self.store
        staging = store.root.with_name(store.root.name + STAGING_SUFFIX)
        # Copied before the applier stops: that can take long.
        await asyncio.to_thread(_stage, source / SHARDS_DIR, staging)

        async def replace() -> None:
            await asyncio.to_thread(store.swap_in, staging)

        applier = self.applier
        if applier is None:
            # At start, before the applier exists: nothing applies yet. The
            # marker it will start from says S, as restart_at would.
            await replace()
            marker = store.root.parent / MARKER
            await asyncio.to_thread(write_file_durably, marker, f"{index}\n".encode())
            return
        await applier.restart_at(index, replace)
