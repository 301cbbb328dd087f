"""The Maintenance service: backups, streamed to the caller."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from node.backup import make_backup
from proto import kv_pb2
from replication.raft.snapshots import file_blocks

if TYPE_CHECKING:
    from node.server import Node


class MaintenanceService:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Backup(
        self, request: kv_pb2.BackupRequest, context: Any
    ) -> AsyncIterator[kv_pb2.BackupChunk]:
        workdir = self.node.config.data_dir / "backups" / f"tmp-{uuid.uuid4().hex}"
        try:
            manifest = await make_backup(self.node, workdir)
            yield kv_pb2.BackupChunk(manifest=manifest)
            async for entry, offset, block, last in file_blocks(workdir, manifest):
                yield kv_pb2.BackupChunk(
                    path=entry.path, offset=offset, data=block, last_of_file=last
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
