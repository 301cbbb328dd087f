"""Backups: a consistent copy of every shard at one applied index, and the
restore that starts a new node (or a new cluster) from one.

A backup is the applier held still between two batches while SQLite's online
backup copies each shard, so every shard is exactly at the same index: a
consistent cut. Writes wait meanwhile (reads do not). The directory holds
`shards/` and `manifest.json` (index, every file's size and sha256).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from replication.durable import fsync_path, fsync_tree
from replication.raft.snapshots import SnapshotError, seal, verify_dir

if TYPE_CHECKING:
    from node.applier import Applier
    from node.shards import ShardStore

SHARDS = "shards"


class RestoreError(Exception):
    pass


async def make_backup(applier: Applier, store: ShardStore, into: Path) -> bytes:
    """Copy every shard at the applied index into `into`; the manifest."""
    async with applier.paused():
        index = applier.applied_index
        await asyncio.to_thread(store.copy_to, into / SHARDS)
    return await asyncio.to_thread(seal, into, index)


def verify(backup: Path) -> int:
    """Check every file against the manifest; the backup's index."""
    try:
        return verify_dir(backup)
    except SnapshotError as exc:
        raise RestoreError(f"{backup} is not a usable backup: {exc}") from None


def restore(backup: Path, data_dir: Path) -> int:
    """Put a verified backup in place as the shards of an EMPTY data directory
    and record its index as applied. Returns the index."""
    index = verify(backup)
    if any((data_dir / name).exists() for name in (SHARDS, "log", "raft", "applied_index")):
        raise RestoreError(f"{data_dir} already holds data: restore into an empty directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(backup / SHARDS, data_dir / SHARDS) if (backup / SHARDS).exists() else (
        data_dir / SHARDS
    ).mkdir()
    (data_dir / "restored_from.json").write_text(
        json.dumps({"backup": str(backup), "index": index})
    )
    (data_dir / "applied_index").write_text(f"{index}\n")
    # Durable before the node starts: its log will begin after `index`, so
    # these files are the only copy of everything up to it.
    fsync_tree(data_dir)
    fsync_path(data_dir.parent)
    return index
