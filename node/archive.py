"""The one-file backup: a plain tar archive, checked end to end.

    manifest.json     first: format, format_version, index, created_at, node,
                      and every data file's path, size and sha256
    shards/<org>/<namespace>.db ...
    checksum.sha256   last: the sha256 (hex) of every byte of the archive
                      before this member's header

`tar -xf` gives the directory form (manifest.json + shards/, which is also the
Raft snapshot's layout). Reading one never trusts it: `verify_archive` checks
the structure, the format version and the checksum over the whole file before
anything is extracted, and `extract_archive` writes only regular files at
checked relative paths inside its target, each compared with the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from shardlite.replication.durable import fsync_path, fsync_tree
from shardlite.replication.raft.snapshots import MANIFEST, FileEntry, SnapshotError, read_manifest

FORMAT = "shardlite-backup"
FORMAT_VERSION = 1
CHECKSUM = "checksum.sha256"
BLOCK = 1 << 20
# A manifest lists one line per shard: far below this even for 100,000 shards.
MAX_MANIFEST_BYTES = 64 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class ArchiveError(Exception):
    """A backup file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class ArchiveInfo:
    index: int
    manifest: bytes
    entries: list[FileEntry]
    size: int


def archive_manifest(sealed: bytes, node: str) -> bytes:
    """The archive's manifest: a sealed backup directory's (index, files) plus
    the format, its version, when and where it was made."""
    raw = json.loads(sealed)
    raw.update(format=FORMAT, format_version=FORMAT_VERSION, created_at=int(time.time()), node=node)
    return json.dumps(raw, sort_keys=True).encode()


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.count += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.count


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info


def write_archive(directory: Path, manifest: bytes, out: Path, *, consume: bool = False) -> int:
    """Write the files `manifest` lists (under `directory`) as a backup file at
    `out`, fsynced; its size. `consume`: delete each file once archived, so
    the copy and the archive never both take the whole space."""
    _, entries = read_manifest(manifest)
    now = int(time.time())
    with open(out, "wb") as raw:
        sink = _HashingWriter(raw)
        # Not stream mode: TarFile writes straight through, so `sink` has seen
        # exactly the bytes before the checksum member when it is added.
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.addfile(_member(MANIFEST, len(manifest), now), io.BytesIO(manifest))
            for entry in entries:
                path = directory / entry.path
                with open(path, "rb") as f:
                    tar.addfile(_member(entry.path, entry.size, now), f)
                if consume:
                    path.unlink()
            digest = (sink.sha.hexdigest() + "\n").encode()
            tar.addfile(_member(CHECKSUM, len(digest), now), io.BytesIO(digest))
        raw.flush()
        os.fsync(raw.fileno())
        return sink.count


def _irregular(member: tarfile.TarInfo) -> str | None:
    """What a member is when it is not a regular file (None: it is one)."""
    if member.isreg():
        return None
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.isdir():
        return "a directory"
    if member.isdev():
        return "a device or fifo"
    return "not a regular file"


def _check_member(member: tarfile.TarInfo, seen: set[str]) -> None:
    """Only regular files at plain relative paths, each once: nothing in a
    backup may land outside the directory it is extracted into."""
    name = member.name
    kind = _irregular(member)
    if kind is not None:
        raise ArchiveError(f"member {name!r} is {kind}: a backup holds only regular files")
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise ArchiveError(
            f"member {name!r} has an unsafe path (absolute, '..' or not normalized): refused"
        )
    if name in seen:
        raise ArchiveError(f"member {name!r} appears twice")
    seen.add(name)


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a shardlite backup file (not a tar archive: {exc})") from None


def _read_members(tar: tarfile.TarFile, size: int) -> list[tarfile.TarInfo]:
    """Every member's header (their data is skipped over, not read)."""
    members: list[tarfile.TarInfo] = []
    try:
        for member in tar:
            members.append(member)
    except tarfile.TarError as exc:
        after = f" after member {members[-1].name!r}" if members else ""
        if tar.offset >= size or "unexpected end of data" in str(exc):
            raise ArchiveError(
                f"truncated: the file ends at byte {size}{after}, before the archive's end"
            ) from None
        raise ArchiveError(f"damaged: unreadable tar header at byte {tar.offset}{after}") from None
    for member in members:
        if member.offset_data + member.size > size:
            raise ArchiveError(
                f"truncated: member {member.name!r} needs {member.offset_data + member.size} "
                f"bytes but the file has {size}"
            )
    return members


def _sha256_range(f: BinaryIO, start: int, length: int) -> str:
    h = hashlib.sha256()
    f.seek(start)
    left = length
    while left > 0:
        block = f.read(min(BLOCK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def verify_archive(path: Path) -> ArchiveInfo:
    """Check a backup file without extracting it: tar structure, only safe
    regular members, the format version, every listed file present with its
    size, and the checksum over the whole file. Raises ArchiveError."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArchiveError(f"cannot read it: {exc.strerror}") from None
    with _open(path) as tar:
        members = _read_members(tar, size)
        seen: set[str] = set()
        for member in members:
            _check_member(member, seen)
        if not members or members[0].name != MANIFEST:
            raise ArchiveError(f"not a shardlite backup file: it does not start with {MANIFEST}")
        if members[0].size > MAX_MANIFEST_BYTES:
            raise ArchiveError(f"{MANIFEST} is {members[0].size} bytes: not a shardlite manifest")
        manifest_file = tar.extractfile(members[0])
        assert manifest_file is not None  # a regular file, checked above
        manifest = manifest_file.read()
        index, entries = _parse_manifest(manifest)
        last = members[-1]
        if last.name != CHECKSUM:
            raise ArchiveError(
                f"truncated: no {CHECKSUM} at the end (the last member is {last.name!r})"
            )
        by_name = {m.name: m for m in members[1:-1]}
        for entry in entries:
            if entry.path not in by_name:
                raise ArchiveError(f"member {entry.path!r} is listed in the manifest but missing")
            found = by_name.pop(entry.path).size
            if found != entry.size:
                raise ArchiveError(
                    f"member {entry.path!r} is {found} bytes; the manifest says {entry.size}"
                )
        if by_name:
            raise ArchiveError(f"member {sorted(by_name)[0]!r} is not listed in the manifest")
        checksum_file = tar.extractfile(last)
        assert checksum_file is not None
        recorded = checksum_file.read(last.size).decode(errors="replace").strip()
        with open(path, "rb") as f:
            actual = _sha256_range(f, 0, last.offset)
            damaged = _first_damaged(f, members[1:-1], entries) if recorded != actual else None
        if recorded != actual:
            where = (
                f"member {damaged!r} does not match its sha256 in the manifest"
                if damaged
                else "the damage is in the manifest or a tar header"
            )
            raise ArchiveError(
                f"damaged: the checksum over the whole file does not match ({where})"
            )
    return ArchiveInfo(index, manifest, entries, size)


def _parse_manifest(manifest: bytes) -> tuple[int, list[FileEntry]]:
    try:
        raw = json.loads(manifest)
    except ValueError:
        raise ArchiveError(f"damaged: {MANIFEST} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArchiveError(f"not a shardlite backup file: {MANIFEST} has no format {FORMAT!r}")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"format version {version!r}: this shardlite reads backup format version "
            f"{FORMAT_VERSION} only"
        )
    try:
        return read_manifest(manifest)
    except SnapshotError as exc:
        raise ArchiveError(f"damaged: {exc}") from None


def _first_damaged(
    f: BinaryIO, members: list[tarfile.TarInfo], entries: list[FileEntry]
) -> str | None:
    """The first data member whose bytes differ from the manifest (for the message)."""
    expected = {e.path: e.sha256 for e in entries}
    for member in members:
        if _sha256_range(f, member.offset_data, member.size) != expected[member.name]:
            return member.name
    return None


def extract_archive(path: Path, target: Path, progress: Progress | None = None) -> ArchiveInfo:
    """Verify `path`, then write its manifest and files into the new directory
    `target` (fsynced), each compared with the manifest as it is written. On
    any failure `target` is removed: it is either complete or absent."""
    info = verify_archive(path)
    if target.exists():
        raise ArchiveError(f"{target} already exists")
    total = sum(e.size for e in info.entries)
    done = 0
    try:
        target.mkdir(parents=True)
        with tarfile.open(path, mode="r:") as tar:
            expected = {e.path: e for e in info.entries}
            for member in tar:
                entry = expected.get(member.name)
                if entry is None:
                    continue  # the manifest and the checksum: not data
                source = tar.extractfile(member)
                assert source is not None
                h = hashlib.sha256()
                try:
                    dest = target / PurePosixPath(member.name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    # "x": never through anything already there.
                    with open(dest, "xb") as out:
                        while block := source.read(BLOCK):
                            h.update(block)
                            out.write(block)
                            done += len(block)
                            if progress is not None:
                                progress(done, total)
                except OSError as exc:
                    raise ArchiveError(
                        f"cannot extract member {member.name!r} into {target}: {exc.strerror}"
                    ) from None
                if h.hexdigest() != entry.sha256:
                    raise ArchiveError(
                        f"damaged: member {member.name!r} does not match its sha256 in the manifest"
                    )
        (target / MANIFEST).write_bytes(info.manifest)
        fsync_tree(target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return info
