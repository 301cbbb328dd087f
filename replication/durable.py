"""Small durable-write helpers shared by every file the node owns."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# Tests stop the process at a named step of a multi-step change (a snapshot
# install, a shard swap) to check that a crash there restarts cleanly. None in
# production: crash_point is then one comparison.
_crash_hook: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    """Mark a step of a multi-step durable change: a crash right here must
    leave a state the next start recovers from (tests/replication/test_install_crash.py)."""
    if _crash_hook is not None:
        _crash_hook(name)


def set_crash_hook(hook: Callable[[str], None] | None) -> None:
    """For tests only: call `hook(name)` at every crash_point."""
    global _crash_hook
    _crash_hook = hook


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
