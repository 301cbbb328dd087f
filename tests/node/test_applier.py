"""The applier: deterministic about bad frames, fail-stop on machine faults,
and a marker that never stops a restart (issue 11 items 1 and 6)."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardlite.node import applier as applier_module
from shardlite.node.applier import Applier, read_applied_marker
from shardlite.node.errors import InvalidArgument, Unavailable
from shardlite.node.migrations import SchemaTooNew
from shardlite.node.shard import CHECKPOINT_COMMITS, Shard, is_machine_fault
from shardlite.node.shards import ShardPathError, ShardStore
from shardlite.replication.noop import NoopReplicator
from shardlite.v1 import frame_pb2
from tests.harness import NodeProcess


@pytest.mark.parametrize("garbage", [b"", b"12", b"\x00\x00\x00", b"not an index\n", b"\xff\xfe"])
def test_a_torn_or_garbage_marker_means_replay_from_zero(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "applied_index").write_bytes(garbage)
    expected = 12 if garbage == b"12" else 0
    assert read_applied_marker(tmp_path) == expected


def test_a_node_with_a_torn_marker_starts_and_keeps_its_data(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = start_node()
    with node.client(namespace="m") as c:
        for i in range(5):
            c.put(f"k{i}", b"v%d" % i)
    assert node.terminate() == 0
    # A torn write (an older version wrote it without fsync): zeros, half a number.
    (tmp_path / "n1" / "applied_index").write_bytes(b"\x00\x00\x00\x00")
    node = start_node()
    with node.client(namespace="m") as c:
        values = [entry.value if (entry := c.get(f"k{i}")) else None for i in range(5)]
        assert values == [b"v%d" % i for i in range(5)]
        assert c.put("after", b"x").version > 5


# -- bad frames straight into the log (bypassing the gate, as a forged Forward would)

ESCAPES = [
    ("..", "ns"),
    ("", "../../escaped"),
    ("o", "../../../escaped"),
    ("", "n" * 300),
    ("", "bad\x00name"),
]


def _escapes(tmp_path: Path) -> list[tuple[str, str]]:
    """ESCAPES and an absolute path (under tmp_path, where a failure would land)."""
    return [*ESCAPES, (str(tmp_path / "abs-org"), "ns"), ("", str(tmp_path / "abs"))]


def _put_frame(org: str, namespace: str, key: str = "k", trace: bytes = b"") -> frame_pb2.Frame:
    frame = frame_pb2.Frame(org=org, namespace=namespace, trace_id=trace)
    frame.ops.add(put=frame_pb2.PutOp(key=key, value=b"v"))
    return frame


class _Pipeline:
    """A NoopReplicator, a ShardStore and an Applier on the test's event loop."""

    def __init__(self, data: Path, on_fatal: Callable[[BaseException], None] | None = None):
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.replicator = NoopReplicator("n1", data / "log")
        self.store = ShardStore(data)
        self.applier = Applier(self.store, self.replicator, data, on_fatal=on_fatal)

    async def write(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        waiter = self.applier.register(frame.trace_id)
        await self.replicator.propose(frame)
        return await asyncio.wait_for(waiter, 10)

    async def close(self) -> None:
        await self.replicator.close()
        await self.applier.close()
        self.store.close_all()


def _files_outside(root: Path, data: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and data not in p.parents]


def test_frames_that_name_no_valid_shard_are_recorded_invalid_and_applying_goes_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "deep" / "data"

    async def run() -> list[frame_pb2.FrameResult]:
        pipeline = _Pipeline(data)
        pipeline.applier.start()
        try:
            results = [
                await pipeline.write(_put_frame(org, ns, trace=b"t%d" % n))
                for n, (org, ns) in enumerate(_escapes(tmp_path))
            ]
            results.append(await pipeline.write(_put_frame("", "fine", trace=b"last")))
            return results
        finally:
            await pipeline.close()

    results = asyncio.run(run())
    assert all(r.invalid for r in results[:-1]), results
    assert not results[-1].invalid
    assert results[-1].results[0].version == len(_escapes(tmp_path)) + 1
    assert _files_outside(tmp_path, data) == []


def test_the_shard_path_check_holds_even_past_content_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the names check ever to let one through, the shard path check still
    refuses it, and the applier records it invalid instead of stopping."""
    monkeypatch.setattr(applier_module, "content_problem", lambda frame: None)
    data = tmp_path / "deep" / "data"

    async def run() -> list[frame_pb2.FrameResult]:
        pipeline = _Pipeline(data)
        pipeline.applier.start()
        try:
            results = [
                await pipeline.write(_put_frame(org, ns, trace=b"t%d" % n))
                for n, (org, ns) in enumerate(_escapes(tmp_path))
            ]
            results.append(await pipeline.write(_put_frame("", "fine", trace=b"last")))
            return results
        finally:
            await pipeline.close()

    results = asyncio.run(run())
    assert [bool(r.invalid) for r in results] == [True] * len(_escapes(tmp_path)) + [False]
    assert _files_outside(tmp_path, data) == []


@pytest.mark.parametrize(("org", "namespace"), [*ESCAPES, ("/abs", "ns"), ("", "/abs")])
def test_shard_paths_never_leave_the_shards_directory(
    tmp_path: Path, org: str, namespace: str
) -> None:
    store = ShardStore(tmp_path)
    with pytest.raises(ShardPathError):
        store.path(org, namespace)


def test_a_waiter_needs_a_trace_id_of_its_own(tmp_path: Path) -> None:
    """An empty trace_id is never looked up, a reused one is another write's:
    either would leave a waiter hanging, so both are refused before proposing."""

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data")
        try:
            with pytest.raises(InvalidArgument, match="no trace_id"):
                pipeline.applier.register(b"")
            pipeline.applier.register(b"t")
            with pytest.raises(InvalidArgument, match="already in flight"):
                pipeline.applier.register(b"t")
        finally:
            await pipeline.close()

    asyncio.run(run())


# -- machine faults: fail-stop


def test_a_machine_fault_calls_on_fatal_and_fails_every_waiter_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fatal: list[BaseException] = []

    def disk_fails(self: Shard, frames: object, retention: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data", on_fatal=fatal.append)
        pipeline.applier.start()
        try:
            assert (await pipeline.write(_put_frame("", "ns", trace=b"ok"))).results
            monkeypatch.setattr(Shard, "apply", disk_fails)
            index_waiter = asyncio.ensure_future(pipeline.applier.wait_applied(10))
            with pytest.raises(Unavailable, match="applier stopped"):
                await pipeline.write(_put_frame("", "ns", trace=b"doomed"))
            with pytest.raises(Unavailable, match="disk I/O error"):
                await asyncio.wait_for(index_waiter, 5)
            # New work is refused at once, never left to hang.
            with pytest.raises(Unavailable):
                pipeline.applier.register(b"later")
            with pytest.raises(Unavailable):
                await asyncio.wait_for(pipeline.applier.wait_applied(100), 1)
        finally:
            await pipeline.close()

    asyncio.run(run())
    assert len(fatal) == 1
    assert "disk I/O error" in str(fatal[0])


@pytest.mark.parametrize(
    "fault",
    [
        sqlite3.OperationalError("database or disk is full"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.ENOTDIR, "Not a directory"),
        SchemaTooNew("shard schema version 9 is newer than this build's 3"),
    ],
)
def test_machine_faults_are_told_from_content_errors(fault: BaseException) -> None:
    assert is_machine_fault(fault)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENAMETOOLONG, "File name too long"),
        ValueError("embedded null byte"),
        sqlite3.DataError("string or blob too big"),
    ],
)
def test_content_errors_are_not_machine_faults(error: BaseException) -> None:
    assert not is_machine_fault(error)


def test_an_error_escaping_an_open_shard_is_a_machine_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside an open shard a frame's content errors are caught frame by frame;
    an error escaping the transaction would refuse a batch-dependent group of
    frames (replicas split batches differently), so it stops the applier."""
    fatal: list[BaseException] = []

    def broken(self: Shard, frames: object, retention: int) -> None:
        raise ValueError("something no frame caused")

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data", on_fatal=fatal.append)
        pipeline.applier.start()
        try:
            monkeypatch.setattr(Shard, "apply", broken)
            with pytest.raises(Unavailable, match="applier stopped"):
                await pipeline.write(_put_frame("", "ns", trace=b"x"))
        finally:
            await pipeline.close()

    asyncio.run(run())
    assert [str(e) for e in fatal] == ["something no frame caused"]


# -- durability without an fsync per transaction -------------------------------------


def test_the_marker_moves_only_after_the_shards_written_since_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards commit with synchronous=NORMAL (no fsync per transaction): the
    applied-index marker, below which replay never goes again, may only move
    once every shard written since the last marker is on disk."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data")
        pipeline.applier.start()
        try:
            await pipeline.write(_put_frame("", "a", trace=b"t1"))
            await pipeline.write(_put_frame("", "b", trace=b"t2"))
            shard_a = pipeline.store.path("", "a")
            monkeypatch.setattr(os, "fsync", fsync)
            await pipeline.applier._write_marker_then_compact(pipeline.applier.applied_index)
            marker = str(tmp_path / "data" / "applied_index")
            for shard in (shard_a, pipeline.store.path("", "b")):
                wal = f"{shard}-wal"
                assert wal in synced, f"{wal} was not fsynced before the marker"
                assert synced.index(wal) < len(synced) - 1
            # One fsync of the directory both shards live in, not one per shard.
            assert synced.count(str(shard_a.parent)) == 1, synced
            # The marker's own durable write comes last (its temporary file).
            assert any(p.startswith(marker) for p in synced[-2:]), synced
            synced.clear()
            await pipeline.write(_put_frame("", "a", trace=b"t3"))
            await pipeline.applier._write_marker_then_compact(pipeline.applier.applied_index)
            assert f"{pipeline.store.path('', 'b')}-wal" not in synced, "b was not written again"
            assert f"{shard_a}-wal" in synced
        finally:
            monkeypatch.setattr(os, "fsync", real_fsync)
            await pipeline.close()

    asyncio.run(run())


# -- where a batch is applied: on the loop when small and its shards are open


def test_small_batches_on_open_shards_are_applied_on_the_loop_the_rest_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that only needs SQLite's CPU is applied on the event loop (no
    two thread hops per write); one that opens a shard or is large goes to the
    applier's thread, and both decide the same."""
    where: list[str] = []
    real_apply = Shard.apply

    def apply(shard: Shard, *args: Any) -> list[frame_pb2.FrameResult | None]:
        where.append("loop" if threading.current_thread() is threading.main_thread() else "thread")
        return real_apply(shard, *args)

    monkeypatch.setattr(Shard, "apply", apply)

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data")
        pipeline.applier.start()
        try:
            first = await pipeline.write(_put_frame("", "a", trace=b"t1"))
            second = await pipeline.write(_put_frame("", "a", trace=b"t2"))
            large = frame_pb2.Frame(namespace="a", trace_id=b"t3")
            for n in range(applier_module.INLINE_MAX_OPS + 1):
                large.ops.add(put=frame_pb2.PutOp(key=f"big{n}", value=b"v"))
            third = await pipeline.write(large)
            other = await pipeline.write(_put_frame("", "b", trace=b"t4"))
        finally:
            await pipeline.close()
        assert where == ["thread", "loop", "thread", "thread"], where
        versions = [r.results[0].version for r in (first, second, third, other)]
        assert versions == sorted(versions), versions
        assert len(set(versions)) == 4, versions

    asyncio.run(run())


def test_a_shard_written_only_on_the_loop_is_still_checkpointed(tmp_path: Path) -> None:
    """Shards commit with no automatic checkpoint (it would fsync on the
    loop): once a shard's WAL has grown by CHECKPOINT_COMMITS commits, its next
    batch goes to the thread, which checkpoints it. Without that, a shard
    written in small batches would keep everything in an ever longer WAL."""

    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "data")
        pipeline.applier.start()
        try:
            await pipeline.write(_put_frame("", "a", trace=b"first"))
            path = pipeline.store.path("", "a")
            before = path.stat().st_size
            for n in range(CHECKPOINT_COMMITS + 5):
                # Long keys: more rows than the new file's free pages hold.
                key = f"k{n}-" + "x" * 200
                await pipeline.write(_put_frame("", "a", key=key, trace=b"t%d" % n))
            # The rows reached the database file itself (only a checkpoint
            # writes there), and the WAL started over within its bound.
            assert path.stat().st_size > before, (before, path.stat().st_size)
            shard = pipeline.store.peek("", "a")
            assert shard is not None
            assert not shard.checkpoint_due
        finally:
            await pipeline.close()

    asyncio.run(run())
