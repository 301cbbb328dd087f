"""Backups: a consistent copy of every shard at one applied index, and the
restore that starts a new node (or a new cluster) from one.

A backup is the applier held still between two batches while SQLite's online
backup copies each shard, so every shard is exactly at the same index: a
consistent cut. Writes wait meanwhile (reads do not). The copy is then packed
into one checksummed file (node/archive.py) and streamed to the caller.

A restore fills an empty data directory from a backup file (or, from older
versions, a backup directory), so that a crash at any step leaves either no
restore at all or one the next start finishes:

1. verify the whole backup before touching the data directory;
2. extract it into `<data>/restore.partial` (a leftover from a crash is removed);
3. rename that to `<data>/restore`: the commit point;
4. copy its shards into `<data>/shards` (through `shards.partial`), write
   `applied_index`, then `restored_from.json`, the mark of a finished restore.

A start that finds `restore/` without `restored_from.json` redoes step 4.
`restore/` stays until the replicator has its own copy (a new cluster's
founding snapshot), then the node removes it (`discard_restore_copy`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shardlite.node.archive import (
    ArchiveError,
    Progress,
    archive_manifest,
    extract_archive,
    write_archive,
)
from shardlite.replication.durable import fsync_tree, replace_durably, write_file_durably
from shardlite.replication.raft.snapshots import SnapshotError, seal, verify_dir

if TYPE_CHECKING:
    from shardlite.node.applier import Applier
    from shardlite.node.shards import ShardStore

SHARDS = "shards"
RESTORE_DIR = "restore"
STAGING = "restore.partial"
MARKER = "restored_from.json"
ARCHIVE_NAME = "backup.tar"


class RestoreError(Exception):
    pass


@dataclass(frozen=True)
class Restored:
    """A data directory restored from a backup at `index`; `directory` is the
    verified backup (manifest + shards) kept for the replicator's bootstrap,
    None once the node has discarded it."""

    index: int
    directory: Path | None


async def make_backup(applier: Applier, store: ShardStore, into: Path) -> bytes:
    """Copy every shard at the applied index into `into`; the manifest."""
    async with applier.paused():
        index = applier.applied_index
        await asyncio.to_thread(store.copy_to, into / SHARDS)
    return await asyncio.to_thread(seal, into, index)


async def make_backup_file(
    applier: Applier, store: ShardStore, workdir: Path, node: str
) -> tuple[bytes, Path, int]:
    """A backup file in `workdir`: (its manifest, its path, its size). The
    applier is held still only while the shards are copied, not while packing."""
    sealed = await make_backup(applier, store, workdir)
    manifest = archive_manifest(sealed, node)
    out = workdir / ARCHIVE_NAME
    size = await asyncio.to_thread(write_archive, workdir, manifest, out, consume=True)
    return manifest, out, size


def verify(backup: Path) -> int:
    """Check every file of a backup directory against its manifest; its index."""
    try:
        return verify_dir(backup)
    except SnapshotError as exc:
        raise RestoreError(f"{backup} is not a usable backup: {exc}") from None


def restored(data_dir: Path) -> Restored | None:
    """The finished restore this data directory records, if any."""
    try:
        index = int(json.loads((data_dir / MARKER).read_text())["index"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"{data_dir / MARKER} is unreadable ({exc})") from None
    kept = data_dir / RESTORE_DIR
    return Restored(index, kept if kept.is_dir() else None)


def unfinished_restore(data_dir: Path) -> Path | None:
    """The kept backup of a restore a crash interrupted after its commit point
    (step 3), which any start must finish, with or without --restore."""
    kept = data_dir / RESTORE_DIR
    return kept if kept.is_dir() and not (data_dir / MARKER).exists() else None


def restore(source: Path, data_dir: Path, progress: Progress | None = None) -> Restored:
    """Fill the EMPTY `data_dir` from the backup file (or directory) `source`
    and record its index as applied (steps in the module docstring). Safe to
    call again after a crash or once done (it then only reports the restore)."""
    done = restored(data_dir)
    if done is not None:
        return done
    kept = data_dir / RESTORE_DIR
    if kept.is_dir():  # committed before a crash: finish it
        return _finish(data_dir, verify(kept), source)
    used = [n for n in (SHARDS, "log", "raft", "applied_index") if (data_dir / n).exists()]
    if used:
        raise RestoreError(
            f"{data_dir} already holds data ({', '.join(used)}): restore into an empty directory"
        )
    if not source.exists():
        raise RestoreError(f"{source} does not exist")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if source.is_dir():
            verify(source)
            shutil.copytree(source, staging)
            index = verify(staging)  # what is in place, not only what was read
            fsync_tree(staging)
        else:
            index = extract_archive(source, staging, progress).index
    except ArchiveError as exc:
        raise RestoreError(f"{source} is not a usable backup: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_durably(staging, kept)
    return _finish(data_dir, index, source)


def _finish(data_dir: Path, index: int, source: Path) -> Restored:
    """Step 4: the live shards, the applied index, then the mark. Idempotent."""
    kept = data_dir / RESTORE_DIR
    shards = data_dir / SHARDS
    if not shards.exists():
        partial = data_dir / (SHARDS + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        if (kept / SHARDS).is_dir():
            shutil.copytree(kept / SHARDS, partial)
        else:
            partial.mkdir()
        # Durable before the node starts: its log will begin after `index`,
        # so these files are the only copy of everything up to it.
        fsync_tree(partial)
        replace_durably(partial, shards)
    write_file_durably(data_dir / "applied_index", f"{index}\n".encode())
    write_file_durably(
        data_dir / MARKER, json.dumps({"backup": str(source), "index": index}).encode()
    )
    return Restored(index, kept)


def discard_restore_copy(data_dir: Path) -> None:
    """Remove the kept backup once the replicator no longer needs it."""
    shutil.rmtree(data_dir / RESTORE_DIR, ignore_errors=True)
