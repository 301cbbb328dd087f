"""The durable-write helpers: what reaches the disk, in which order.

A SIGKILL cannot show a missing fsync (the page cache survives the process),
so these tests record the system calls instead: a file's data is fsynced before
it is renamed into place, and the directory is fsynced after the rename.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardlite.replication.durable import fsync_tree, replace_durably, write_file_durably
from shardlite.replication.raft.members import MemberBook, MemberInfo


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (by path) and rename, in order."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_write_file_durably_fsyncs_data_then_renames_then_fsyncs_the_directory(
    tmp_path: Path, syscalls: list[tuple[str, str]]
) -> None:
    target = tmp_path / "members.json"
    target.write_text("old")
    write_file_durably(target, b"new")

    tmp = tmp_path / "members.json.tmp"
    assert syscalls == [
        ("fsync", str(tmp)),
        ("replace", f"{tmp} -> {target}"),
        ("fsync", str(tmp_path)),
    ]
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_replace_durably_fsyncs_the_parent_after_the_rename(
    tmp_path: Path, syscalls: list[tuple[str, str]]
) -> None:
    partial = tmp_path / "7.partial"
    partial.mkdir()
    (partial / "MANIFEST").write_bytes(b"m")
    fsync_tree(partial)
    syscalls.clear()

    replace_durably(partial, tmp_path / "7")

    assert syscalls == [("replace", f"{partial} -> {tmp_path / '7'}"), ("fsync", str(tmp_path))]
    assert (tmp_path / "7" / "MANIFEST").read_bytes() == b"m"


def test_the_member_book_is_written_durably(
    tmp_path: Path, syscalls: list[tuple[str, str]]
) -> None:
    book = MemberBook(tmp_path / "members.json")
    book.add(MemberInfo("n1", "127.0.0.1:7001"))

    assert ("fsync", str(tmp_path / "members.json.tmp")) in syscalls
    assert syscalls[-1] == ("fsync", str(tmp_path))
    again = MemberBook(tmp_path / "members.json")
    assert again.snapshot() == {"n1": "127.0.0.1:7001"}
