"""One-file backups (issue 13): taken online during a write load from a
cluster, restored into a fresh 3-node cluster; corrupted and hostile files
refused with a precise message, and never a half-restored data directory."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardlite.node.archive import CHECKSUM, FORMAT, FORMAT_VERSION, ArchiveError, verify_archive
from shardlite.node.backup import MARKER, RESTORE_DIR, STAGING, RestoreError, restore
from shardlite.node.client import Client, ClientError
from tests.harness import LocalCluster, NodeProcess, wait_until

FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")
WRITERS = 4


@dataclass(frozen=True)
class Ack:
    key: str
    value: bytes
    index: int


def _write_until(
    endpoint: str, writer: int, stop: threading.Event, acks: list[Ack], errors: list[str]
) -> None:
    """Unique keys, plus one key this writer alone overwrites: an acknowledged
    write's index is its version, and the latest one below a cut is the value."""
    with Client(endpoint, timeout=10) as c:
        n = 0
        while not stop.is_set() and n < 5000:
            key = f"w{writer}-{n}" if n % 2 else f"hot-{writer}"
            value = f"{writer}:{n}".encode()
            try:
                acks.append(Ack(key, value, c.put(key, value, namespace="load").version))
            except ClientError as exc:
                errors.append(f"{key}: {exc}")
                return
            n += 1


def _restore_cli(backup: Path, data: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "restore", str(backup), "--data", str(data)],
        capture_output=True, timeout=60,
    )  # fmt: skip


def test_backup_during_writes_restores_into_a_new_cluster_exactly_at_its_index(
    tmp_path: Path,
) -> None:
    source = LocalCluster(tmp_path / "source", 3, args=FAST)
    restored = None
    try:
        source.start()
        leader = source.leader()
        follower = next(n for n in source.nodes if n != leader)
        stop = threading.Event()
        acks: list[Ack] = []
        errors: list[str] = []
        writers = [
            threading.Thread(
                target=_write_until,
                args=(source.addresses[leader], w, stop, acks, errors),
            )
            for w in range(WRITERS)
        ]
        for t in writers:
            t.start()
        try:
            # The load is under way before the backup starts, and goes on after.
            wait_until(lambda: len(acks) >= 200 or bool(errors), 60, "200 writes")
            out = tmp_path / "backup.tar"
            with source.client(follower, timeout=60) as c:
                index = c.backup(out)
            taken = len(acks)
            wait_until(lambda: len(acks) >= taken + 100 or bool(errors), 60, "100 more writes")
        finally:
            stop.set()
            for t in writers:
                t.join(30)
        assert errors == []
        before = [a for a in acks if a.index <= index]
        later = [a for a in acks if a.index > index]
        assert len(before) >= 200
        assert later, "no write was acknowledged after the backup's index"

        restored = LocalCluster(tmp_path / "restored", 3, args=(*FAST, "--restore", str(out)))
        restored.start()
        restored.leader()
        expected: dict[str, tuple[bytes, int]] = {}
        for a in sorted(before, key=lambda a: a.index):
            expected[a.key] = (a.value, a.index)
        for name in restored.nodes:
            with restored.client(name) as c:
                assert c.status().applied_index >= index
                got = {e.key: (e.value, e.version) for e in c.list(namespace="load")}
            # Every write acknowledged at or before the index, with its version;
            # nothing after it: a cut at exactly one index.
            assert got == expected, f"{name} differs from the acknowledged writes"
        with restored.client("n1") as c:
            assert c.put("after", b"x", namespace="load").version > index
    finally:
        source.stop()
        if restored is not None:
            restored.stop()


@pytest.fixture
def backup_file(start_node: Callable[..., NodeProcess], tmp_path: Path) -> Path:
    node = start_node(name="source")
    with node.client() as c:
        for ns in ("users", "orders"):
            for i in range(20):
                c.put(f"k{i}", bytes([i]) * 3000, namespace=ns)
        out = tmp_path / "backup.tar"
        c.backup(out)
    node.kill()
    return out


def _refused(backup: Path, data: Path) -> str:
    result = _restore_cli(backup, data)
    assert result.returncode == 2, result
    assert not data.exists() or list(data.iterdir()) == [], "a half-restored data directory"
    return result.stderr.decode()


def test_a_truncated_file_is_refused_wherever_it_ends(backup_file: Path, tmp_path: Path) -> None:
    data = backup_file.read_bytes()
    with tarfile.open(backup_file) as tar:
        members = {m.name: m for m in tar.getmembers()}
    shard = members["shards/_/users.db"]
    cuts = {
        "inside a shard": shard.offset_data + 100,
        "before the checksum": members[CHECKSUM].offset,
        "inside the manifest": members["manifest.json"].offset_data + 10,
    }
    for where, cut in cuts.items():
        short = tmp_path / f"short-{cut}.tar"
        short.write_bytes(data[:cut])
        message = _refused(short, tmp_path / f"data-{cut}")
        assert "truncated" in message, (where, message)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    assert "not a tar archive" in _refused(empty, tmp_path / "data-empty")


def test_a_bit_flip_is_refused_naming_the_damaged_member(backup_file: Path, tmp_path: Path) -> None:
    with tarfile.open(backup_file) as tar:
        shard = tar.getmember("shards/_/orders.db")
    data = bytearray(backup_file.read_bytes())
    data[shard.offset_data + 1234] ^= 0x10
    flipped = tmp_path / "flipped.tar"
    flipped.write_bytes(bytes(data))
    message = _refused(flipped, tmp_path / "data")
    assert (
        "damaged: the checksum over the whole file does not match "
        "(member 'shards/_/orders.db' does not match its sha256 in the manifest)"
    ) in message


def _forge(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """An archive with these members and a CORRECT whole-file checksum, so a
    refusal is for what is in it, not for damage."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
        digest = (hashlib.sha256(buffer.getvalue()).hexdigest() + "\n").encode()
        info = tarfile.TarInfo(CHECKSUM)
        info.size = len(digest)
        tar.addfile(info, io.BytesIO(digest))
    path.write_bytes(buffer.getvalue())
    return path


def _file(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def _manifest(files: dict[str, bytes], version: int = FORMAT_VERSION) -> bytes:
    listed = [
        {"path": p, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
        for p, c in files.items()
    ]
    return json.dumps(
        {"format": FORMAT, "format_version": version, "index": 7, "files": listed}
    ).encode()


def test_a_forged_but_well_formed_archive_restores(tmp_path: Path) -> None:
    """The forging helper itself makes archives the reader accepts."""
    files = {"shards/_/default.db": b"not really sqlite"}
    good = _forge(
        tmp_path / "good.tar",
        [
            _file("manifest.json", _manifest(files)),
            _file("shards/_/default.db", files["shards/_/default.db"]),
        ],
    )
    assert verify_archive(good).index == 7


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../x", "unsafe path"),
        ("/tmp/x", "unsafe path"),
        ("shards/../../x", "unsafe path"),
        ("shards//x", "unsafe path"),
    ],
)
def test_a_member_path_outside_the_target_is_refused(
    tmp_path: Path, member: str, message: str
) -> None:
    files = {member: b"evil"}
    hostile = _forge(
        tmp_path / "hostile.tar", [_file("manifest.json", _manifest(files)), _file(member, b"evil")]
    )
    target = tmp_path / "a" / "data"
    with pytest.raises(RestoreError, match=message):
        restore(hostile, target)
    assert not (tmp_path / "a" / "x").exists()
    assert not (tmp_path / "x").exists()
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (tarfile.SYMTYPE, "is a symbolic link"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.CHRTYPE, "is a device or fifo"),
        (tarfile.FIFOTYPE, "is a device or fifo"),
        (tarfile.DIRTYPE, "is a directory"),
    ],
)
def test_links_devices_and_directories_are_refused(
    tmp_path: Path, kind: bytes, message: str
) -> None:
    link = tarfile.TarInfo("shards/_/default.db")
    link.type = kind
    link.linkname = "/etc/passwd"
    hostile = _forge(tmp_path / "links.tar", [_file("manifest.json", _manifest({})), (link, b"")])
    with pytest.raises(ArchiveError, match=message):
        verify_archive(hostile)


def test_wrong_format_version_and_missing_member_are_refused(tmp_path: Path) -> None:
    content = b"shard bytes"
    files = {"shards/_/default.db": content}
    future = _forge(
        tmp_path / "future.tar",
        [
            _file("manifest.json", _manifest(files, version=2)),
            _file("shards/_/default.db", content),
        ],
    )
    assert "format version 2: this shardlite reads backup format version 1 only" in _refused(
        future, tmp_path / "d1"
    )
    missing = _forge(tmp_path / "missing.tar", [_file("manifest.json", _manifest(files))])
    assert "member 'shards/_/default.db' is listed in the manifest but missing" in _refused(
        missing, tmp_path / "d2"
    )
    extra = _forge(
        tmp_path / "extra.tar",
        [_file("manifest.json", _manifest({})), _file("shards/_/default.db", content)],
    )
    assert "member 'shards/_/default.db' is not listed in the manifest" in _refused(
        extra, tmp_path / "d3"
    )


def test_a_crash_during_restore_is_cleaned_up_or_finished(
    backup_file: Path, tmp_path: Path
) -> None:
    # Before the commit point: an unfinished extraction is thrown away.
    data = tmp_path / "data"
    (data / STAGING / "shards").mkdir(parents=True)
    (data / STAGING / "shards" / "junk.db").write_bytes(b"half")
    done = restore(backup_file, data)
    assert not (data / STAGING).exists()
    assert (data / MARKER).exists()
    # After it: the kept backup is enough to finish, even without the file.
    (data / MARKER).unlink()
    (data / "applied_index").unlink()
    for shard in (data / "shards").rglob("*.db"):
        shard.unlink()
    (data / "shards" / "_").rmdir()
    (data / "shards").rmdir()
    again = restore(tmp_path / "gone.tar", data)
    assert again.index == done.index
    assert (data / "applied_index").read_text() == f"{done.index}\n"
    assert sorted(p.name for p in (data / "shards" / "_").iterdir()) == ["orders.db", "users.db"]
    assert (data / RESTORE_DIR).is_dir()


def test_shardlite_restore_then_node_starts_from_it(
    backup_file: Path, start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    data = tmp_path / "prepared"
    result = _restore_cli(backup_file, data)
    assert result.returncode == 0, result.stderr
    index = verify_archive(backup_file).index
    assert f"restored the backup at index {index} into {data}".encode() in result.stdout
    node = start_node(name="prepared", data_dir=data)
    with node.client() as c:
        entry = c.get("k3", namespace="users")
        assert entry is not None
        assert entry.value == bytes([3]) * 3000
        assert c.status().applied_index == index
    # The node keeps no second copy once it has started.
    assert not (data / RESTORE_DIR).exists()
    assert "already holds data" in _restore_cli(backup_file, tmp_path / "source").stderr.decode()


def test_a_file_where_a_directory_must_go_is_refused_cleanly(tmp_path: Path) -> None:
    files = {"shards/_/a.db": b"one", "shards/_/a.db/b.db": b"two"}
    clash = _forge(
        tmp_path / "clash.tar",
        [_file("manifest.json", _manifest(files))] + [_file(p, c) for p, c in files.items()],
    )
    target = tmp_path / "data"
    with pytest.raises(RestoreError, match=re.escape("cannot extract member 'shards/_/a.db/b.db'")):
        restore(clash, target)
    assert list(target.iterdir()) == []


def test_a_cluster_starts_on_data_dirs_shardlite_restore_prepared(
    backup_file: Path, tmp_path: Path
) -> None:
    cluster = LocalCluster(tmp_path / "prepared", 3, args=FAST)
    index = verify_archive(backup_file).index
    for node in cluster.nodes.values():
        result = _restore_cli(backup_file, node.data_dir)
        assert result.returncode == 0, result.stderr
    try:
        cluster.start()
        leader = cluster.leader()
        for name in cluster.nodes:
            with cluster.client(name) as c:
                entry = c.get("k7", namespace="orders")
                assert entry is not None
                assert entry.value == bytes([7]) * 3000
            assert not (cluster.nodes[name].data_dir / RESTORE_DIR).exists()
        with cluster.client(leader) as c:
            assert c.put("new", b"v", namespace="orders").version > index
    finally:
        cluster.stop()
