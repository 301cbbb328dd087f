"""Snapshot files (Raft §7): a directory of files plus a manifest, made by the
state machine, streamed to a lagging follower in checksummed chunks, written
aside there, verified, and only then handed to its Raft core.

The Raft snapshot's `data` is the manifest (JSON: index and every file's path,
size and sha256); the files themselves travel beside the InstallSnapshot
message, not inside it. What the files mean is the state machine's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from shardlite.replication.durable import fsync_path, fsync_tree, replace_durably
from shardlite.v1 import raft_pb2

CHUNK = 1 << 20
MANIFEST = "manifest.json"


class SnapshotError(Exception):
    pass


@dataclass(frozen=True)
class KeptSnapshot:
    """A complete snapshot this node keeps (and sends on). Its files are never
    modified while it is kept, only removed with it: a newer snapshot may
    hard-link the ones that did not change."""

    index: int
    directory: Path


class StateMachine(Protocol):
    """What the Raft replicator needs from the node to snapshot and restore it."""

    async def create_snapshot(self, index: int, into: Path, previous: KeptSnapshot | None) -> None:
        """Write files into `into` holding at least every frame up to `index`.
        `previous`: the newest snapshot kept, if any, whose unchanged files
        may be linked rather than copied."""
        ...

    async def install_snapshot(self, index: int, source: Path) -> None:
        """Replace the state with the files in `source` (a verified snapshot),
        leaving `source` as it is (it stays the copy this node serves). Must
        be safe to repeat: a crash in the middle is finished by installing again."""
        ...


def incoming_name(index: int, manifest: bytes) -> str:
    """The directory a received snapshot is kept in until installed: by index
    and manifest, so two different snapshots at one index never share files."""
    return f"{index}-{hashlib.sha256(manifest).hexdigest()[:16]}"


def index_of(name: str) -> int | None:
    """The index a snapshot directory's name starts with (None: not one)."""
    match = re.match(r"\d+", name)
    return int(match.group()) if match else None


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def seal(directory: Path, index: int, previous: Path | None = None) -> bytes:
    """Write the manifest of `directory`'s files, make everything durable, and
    return the manifest bytes (the Raft snapshot's data). A file that is a
    hard link of the same file in `previous` (a kept snapshot, sealed before)
    keeps its entry from there and needs no fsync: the same inode is the same
    bytes, hashed and made durable once, when it was first sealed."""
    known = _linked_entries(previous) if previous is not None else {}
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel, stat = str(path.relative_to(directory)), path.stat()
        entry = known.get(rel)
        if entry is not None and entry[0] == (stat.st_dev, stat.st_ino):
            entries.append(entry[1])
        else:
            entries.append(FileEntry(rel, stat.st_size, _sha256(path)))
            fsync_path(path)
    manifest = json.dumps(
        {"index": index, "files": [e.__dict__ for e in entries]}, sort_keys=True
    ).encode()
    (directory / MANIFEST).write_bytes(manifest)
    fsync_path(directory / MANIFEST)
    # Every directory entry too: the new files' and the links'.
    for dirpath, _, _ in os.walk(directory):
        fsync_path(dirpath)
    return manifest


def _linked_entries(snapshot: Path) -> dict[str, tuple[tuple[int, int], FileEntry]]:
    """The manifest entries of a kept snapshot, each with its file's identity
    (device, inode); {} if it has no readable manifest."""
    try:
        _, entries = read_manifest((snapshot / MANIFEST).read_bytes())
    except (OSError, SnapshotError):
        return {}
    out = {}
    for entry in entries:
        try:
            stat = (snapshot / _safe_relative(entry.path)).stat()
        except (OSError, SnapshotError):
            continue
        out[entry.path] = ((stat.st_dev, stat.st_ino), entry)
    return out


def read_manifest(data: bytes) -> tuple[int, list[FileEntry]]:
    try:
        raw = json.loads(data)
        return int(raw["index"]), [FileEntry(**f) for f in raw["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"bad snapshot manifest: {exc}") from exc


def _safe_relative(path: str) -> Path:
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SnapshotError(f"snapshot file path {path!r} escapes the snapshot")
    return rel


async def file_blocks(
    directory: Path, manifest: bytes
) -> AsyncIterator[tuple[FileEntry, int, bytes, bool]]:
    """Every file the manifest lists, as (file, offset, block, is_last) in
    CHUNK-sized blocks, read on a worker thread."""
    _, entries = read_manifest(manifest)
    for entry in entries:
        offset = 0
        path = directory / _safe_relative(entry.path)
        with open(path, "rb") as f:  # noqa: ASYNC230 - open is cheap; reads go to a thread
            while True:
                block = await asyncio.to_thread(f.read, CHUNK)
                last = offset + len(block) >= entry.size
                yield entry, offset, block, last
                offset += len(block)
                if last:
                    break


async def stream_files(
    directory: Path, first: raft_pb2.RaftMessage, data: bytes
) -> AsyncIterator[raft_pb2.SnapshotChunk]:
    """The chunks of a snapshot stream: the message, then every file."""
    yield raft_pb2.SnapshotChunk(message=first)
    async for entry, offset, block, last in file_blocks(directory, data):
        chunk = raft_pb2.SnapshotChunk(path=entry.path, offset=offset, data=block)
        if last:
            chunk.last_of_file = True
            chunk.file_size = entry.size
            chunk.sha256 = bytes.fromhex(entry.sha256)
        yield chunk


def verify_dir(directory: Path) -> int:
    """Check every file of a snapshot or backup directory against its manifest;
    returns its index. Raises SnapshotError on any difference."""
    try:
        index, entries = read_manifest((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"{directory} has no {MANIFEST}") from None
    for entry in entries:
        path = directory / _safe_relative(entry.path)
        if not path.is_file() or path.stat().st_size != entry.size:
            raise SnapshotError(f"{path} is missing or has the wrong size")
        if _sha256(path) != entry.sha256:
            raise SnapshotError(f"{path} does not match its checksum")
    return index


async def receive_files(
    chunks: AsyncIterator[raft_pb2.SnapshotChunk],
    incoming: Path,
    on_message: Callable[[raft_pb2.RaftMessage, Path], Awaitable[None]],
) -> None:
    """Write a snapshot stream aside, verify every file against the manifest,
    move it into place as `incoming/<incoming_name>`, then hand over its message.

    The same snapshot may arrive twice at once (a leader retrying): each
    stream writes its own staging directory, and a complete copy already in
    place is never removed or replaced (an install may be reading it)."""

    first = await anext(aiter(chunks), None)
    if first is None or not first.HasField("message"):
        raise SnapshotError("snapshot stream did not start with its message")
    message = first.message
    index, entries = read_manifest(message.snapshot.data)
    expected = {e.path: e for e in entries}
    name = incoming_name(index, message.snapshot.data)
    final = incoming / name
    await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.partial-", dir=incoming))
    hashes: dict[str, Any] = {}
    done: set[str] = set()
    handles: dict[str, BinaryIO] = {}
    try:
        async for chunk in chunks:
            if chunk.path not in expected:
                raise SnapshotError(f"unexpected file {chunk.path!r} in snapshot {index}")
            target = staging / _safe_relative(chunk.path)
            h = hashes.get(chunk.path)
            if h is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashes[chunk.path] = hashlib.sha256()
                handles[chunk.path] = open(target, "wb")  # noqa: SIM115, ASYNC230 - closed below
            f = handles[chunk.path]
            await asyncio.to_thread(f.write, chunk.data)
            h.update(chunk.data)
            if chunk.last_of_file:
                f.close()
                del handles[chunk.path]
                entry = expected[chunk.path]
                if target.stat().st_size != entry.size or h.hexdigest() != entry.sha256:
                    raise SnapshotError(f"{chunk.path} in snapshot {index} failed its checksum")
                done.add(chunk.path)
        missing = set(expected) - done
        if missing:
            raise SnapshotError(f"snapshot {index} stream ended without {sorted(missing)}")
        (staging / MANIFEST).write_bytes(message.snapshot.data)
        await asyncio.to_thread(fsync_tree, staging)
        if (final / MANIFEST).exists():
            shutil.rmtree(staging, ignore_errors=True)  # identical files already in place
        else:
            try:
                await asyncio.to_thread(replace_durably, staging, final)
            except OSError:
                if not (final / MANIFEST).exists():
                    raise
                # Another stream of the same snapshot finished first.
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for f in handles.values():
            with contextlib.suppress(OSError):
                f.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    await on_message(message, final)
