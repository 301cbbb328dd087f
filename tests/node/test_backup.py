"""Backups (a consistent cut of every shard, streamed as one verified file) and
restores into a new node or a new cluster."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from shardlite.node.client import Client, Put
from tests.harness import LocalCluster, NodeProcess

NAMESPACES = ["users", "orders", "carts"]


def _fill(node: NodeProcess) -> dict[str, dict[str, tuple[bytes, int]]]:
    with node.client() as c:
        for ns in NAMESPACES:
            for i in range(50):
                c.put(f"k{i}", f"{ns}-{i}".encode(), namespace=ns)
            c.batch([Put("b1", b"x"), Put("b2", b"y")], namespace=ns)
            c.delete("k0", namespace=ns)
        return _contents(c)


def _contents(c: Client) -> dict[str, dict[str, tuple[bytes, int]]]:
    return {ns: {e.key: (e.value, e.version) for e in c.list(namespace=ns)} for ns in NAMESPACES}


def test_backup_and_restore_a_single_node(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    source = start_node(name="source")
    expected = _fill(source)
    out = tmp_path / "backup.tar"
    with source.client() as c:
        index = c.backup(out)
        assert index == c.status().applied_index
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert names[-1] == "checksum.sha256"
    assert sorted(names[1:-1]) == sorted(f"shards/_/{ns}.db" for ns in NAMESPACES)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []

    restored = start_node("--restore", str(out), name="restored")
    with restored.client() as c:
        assert _contents(c) == expected
        assert c.status().applied_index == index
        # New writes continue after the backup's index: versions keep increasing.
        assert c.put("k1", b"new", namespace="users").version > index
    # A restart does not restore again: the new write is still there.
    restored.terminate()
    again = start_node("--restore", str(out), name="restored")
    with again.client() as c:
        entry = c.get("k1", namespace="users")
        assert entry is not None
        assert entry.value == b"new"


def test_restore_a_backup_into_a_new_three_node_cluster(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    source = start_node(name="source")
    expected = _fill(source)
    out = tmp_path / "backup.tar"
    with source.client() as c:
        index = c.backup(out)
    cluster = LocalCluster(
        tmp_path / "cluster", 3, args=("--restore", str(out), "--raft-tick-ms", "50")
    )
    try:
        cluster.start()
        cluster.leader()
        for name in cluster.nodes:
            with cluster.client(name) as c:
                assert _contents(c) == expected, f"{name} differs"
        with cluster.client("n2") as c:
            assert c.put("after", b"v", namespace="users").version > index
    finally:
        cluster.stop()


def test_restore_refuses_a_used_data_dir_and_a_damaged_backup(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    source = start_node(name="source")
    _fill(source)
    out = tmp_path / "backup.tar"
    with source.client() as c:
        c.backup(out)

    def run_node(data: Path, backup: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "shardlite.node.cli", "node", "--data", str(data),
             "--listen", "127.0.0.1:0", "--restore", str(backup)],
            capture_output=True, timeout=60,
        )  # fmt: skip

    used = run_node(source.data_dir, out)
    assert used.returncode == 2
    assert b"already holds data" in used.stderr

    damaged_file = tmp_path / "damaged.tar"
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged_file.write_bytes(bytes(data))
    damaged = run_node(tmp_path / "fresh", damaged_file)
    assert damaged.returncode == 2
    assert b"checksum over the whole file does not match" in damaged.stderr
    assert not (tmp_path / "fresh" / "shards").exists()
    assert not (tmp_path / "fresh" / "restore").exists()


def test_a_backup_directory_from_tar_xf_still_restores(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """The file is a plain tar: `tar -xf` gives the directory form older
    versions wrote, and --restore DIR still accepts it."""
    source = start_node(name="source")
    expected = _fill(source)
    out = tmp_path / "backup.tar"
    with source.client() as c:
        index = c.backup(out)
    directory = tmp_path / "unpacked"
    directory.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(directory)], check=True, timeout=60)
    (directory / "checksum.sha256").unlink()
    restored = start_node("--restore", str(directory), name="restored")
    with restored.client() as c:
        assert _contents(c) == expected
        assert c.status().applied_index == index
