"""Small durable-write helpers shared by every file the node owns."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` (a file or a directory whose contents are already fsynced)
    to `target`, then fsync the parent so that the rename survives a power loss."""
    os.replace(source, target)
    fsync_path(target.parent)


def write_file_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically: a crash leaves the old or the new
    contents, never a torn or empty file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    replace_durably(tmp, path)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
