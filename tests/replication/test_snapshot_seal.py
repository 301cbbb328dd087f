"""seal() over a snapshot that hard-links files of the previous one: the
linked files keep their manifest entries (hashed once, when first copied),
every other file is hashed, and the result verifies."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shardlite.replication.raft.snapshots import MANIFEST, read_manifest, seal, verify_dir


def test_linked_files_keep_their_entries_and_new_ones_are_hashed(tmp_path: Path) -> None:
    previous, current = tmp_path / "10", tmp_path / "20"
    (previous / "shards").mkdir(parents=True)
    (previous / "shards" / "still.db").write_bytes(b"s" * 5000)
    (previous / "shards" / "busy.db").write_bytes(b"b" * 5000)
    seal(previous, 10)

    (current / "shards").mkdir(parents=True)
    os.link(previous / "shards" / "still.db", current / "shards" / "still.db")
    (current / "shards" / "busy.db").write_bytes(b"B" * 6000)  # a new copy, same name
    # Mark the previous entry of the linked file: if seal hashed the file
    # again, the mark would be gone.
    raw = json.loads((previous / MANIFEST).read_bytes())
    for entry in raw["files"]:
        entry["sha256"] = "from-the-previous-manifest:" + entry["sha256"]
    (previous / MANIFEST).write_text(json.dumps(raw))

    index, entries = read_manifest(seal(current, 20, previous))
    by_path = {e.path: e for e in entries}
    assert index == 20
    assert by_path["shards/still.db"].sha256.startswith("from-the-previous-manifest:")
    assert not by_path["shards/busy.db"].sha256.startswith("from-the-previous-manifest:")
    assert by_path["shards/busy.db"].size == 6000

    # Without the mark, the new snapshot verifies as any other.
    fresh = tmp_path / "30"
    (fresh / "shards").mkdir(parents=True)
    os.link(current / "shards" / "still.db", fresh / "shards" / "still.db")
    os.link(current / "shards" / "busy.db", fresh / "shards" / "busy.db")
    seal(fresh, 30, previous=None)
    assert verify_dir(fresh) == 30


def test_a_previous_snapshot_without_a_manifest_is_no_help(tmp_path: Path) -> None:
    previous, current = tmp_path / "10", tmp_path / "20"
    previous.mkdir()
    (previous / "f").write_bytes(b"x")
    current.mkdir()
    os.link(previous / "f", current / "f")
    seal(current, 20, previous)
    assert verify_dir(current) == 20
