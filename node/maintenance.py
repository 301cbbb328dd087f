"""The Maintenance service: backups, streamed to the caller.

Each backup is a full copy of every shard in a temporary directory under
<data>/backups, packed there into one backup file (each shard's copy is
removed once packed, so a backup takes about one copy of space), streamed in
CHUNK-sized blocks read on a worker thread, and removed when the stream ends;
at most `max_backups` run at once (RESOURCE_EXHAUSTED beyond), and copies a
crash left behind are removed when the node starts (`remove_leftovers`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shardlite.node.applier import Applier
from shardlite.node.backup import make_backup_file
from shardlite.node.errors import ResourceExhausted
from shardlite.node.shards import ShardStore
from shardlite.replication.raft.snapshots import CHUNK
from shardlite.v1 import kv_pb2

log = logging.getLogger(__name__)

BACKUPS_DIR = "backups"
TEMP_PREFIX = "tmp-"


def remove_leftovers(data_dir: Path) -> int:
    """Remove the temporary copies of backups a crash interrupted; how many."""
    root = data_dir / BACKUPS_DIR
    if not root.is_dir():
        return 0
    removed = 0
    for child in root.iterdir():
        if child.name.startswith(TEMP_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished backup copies from %s", removed, root)
    return removed


class MaintenanceService:
    def __init__(
        self,
        data_dir: Path,
        applier: Applier,
        store: ShardStore,
        max_backups: int,
        node: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.node = node
        self.applier = applier
        self.store = store
        self.max_backups = max_backups
        self._running = 0

    async def Backup(
        self, request: kv_pb2.BackupRequest, context: Any
    ) -> AsyncIterator[kv_pb2.BackupChunk]:
        if self._running >= self.max_backups:
            raise ResourceExhausted(
                f"{self._running} backups are running (the limit is {self.max_backups}); "
                "retry when one has finished"
            )
        self._running += 1
        workdir = self.data_dir / BACKUPS_DIR / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            manifest, archive, size = await make_backup_file(
                self.applier, self.store, workdir, self.node
            )
            yield kv_pb2.BackupChunk(manifest=manifest, file_size=size)
            offset = 0
            with open(archive, "rb") as f:  # noqa: ASYNC230 - open is cheap; reads go to a thread
                while offset < size:
                    block = await asyncio.to_thread(f.read, CHUNK)
                    if not block:
                        raise RuntimeError(f"{archive} ended at {offset} of {size} bytes")
                    yield kv_pb2.BackupChunk(
                        offset=offset, data=block, last_of_file=offset + len(block) >= size
                    )
                    offset += len(block)
        finally:
            self._running -= 1
            # Shielded: a stream cancelled (again) while this waits for a
            # worker thread would otherwise cancel the removal before it ran.
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
