"""The Raft replicator's bounds (issue 11 item 6): proposals in flight are
limited by count and by bytes; past either, QUEUE_FULL at once (the node
answers RESOURCE_EXHAUSTED), and nothing refused is ever proposed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from pathlib import Path

import pytest

from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.raft.wal import DiskStorage
from shardlite.replication.replicator import Accepted, Rejected, RejectReason
from shardlite.v1 import frame_pb2
from tests.harness import until
from tests.replication.local_raft import EmptyStateMachine


def frame(n: int, size: int = 1) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v" * size))
    return f


def single(tmp_path: Path, **limits: int) -> RaftSettings:
    return RaftSettings(
        name="n1",
        address="127.0.0.1:1",
        directory=tmp_path / "raft",
        peers={"n1": "127.0.0.1:1"},
        tick_interval=0.02,
        **limits,  # type: ignore[arg-type]
    )


class StuckDisk:
    """The WAL's fsync blocks until released: proposals pile up in flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, wal: Path) -> None:
        self.release = threading.Event()
        self.stuck = threading.Event()
        self.armed = False
        real = os.fsync

        def fsync(fd: int) -> None:
            if self.armed and os.readlink(f"/proc/self/fd/{fd}") == str(wal):
                self.stuck.set()
                self.release.wait(30)
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize(
    ("limits", "size"),
    [({"max_pending_proposals": 4}, 1), ({"max_pending_bytes": 4 * 1100}, 1000)],
)
def test_proposals_beyond_the_bound_are_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: dict[str, int], size: int
) -> None:
    disk = StuckDisk(monkeypatch, tmp_path / "raft" / "raft.wal")

    async def check() -> None:
        r = RaftReplicator(single(tmp_path, **limits), EmptyStateMachine())
        await until(lambda: r.driver.is_leader, 5, "a leader")
        disk.armed = True
        first = asyncio.ensure_future(r.propose(frame(0, size)))
        await asyncio.to_thread(disk.stuck.wait, 5)  # the loop is inside a stuck fsync
        waiting = [first] + [asyncio.ensure_future(r.propose(frame(n, size))) for n in (1, 2, 3)]
        # Every one of them counted as pending.
        await until(lambda: r._pending_count >= len(waiting), 5, "the proposals to be pending")
        with pytest.raises(Rejected) as full:
            await asyncio.wait_for(r.propose(frame(4, size)), 1)
        assert full.value.reason is RejectReason.QUEUE_FULL
        disk.release.set()
        accepted = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert all(isinstance(a, Accepted) for a in accepted)
        # Room again once they committed.
        await asyncio.wait_for(r.propose(frame(5, size)), 5)
        await r.close()

    asyncio.run(asyncio.wait_for(check(), 30))


async def _lead(r: RaftReplicator) -> None:
    await until(lambda: r.driver.is_leader, 5, "a leader")


async def _snapshot_now(r: RaftReplicator) -> None:
    """What the applier's housekeeping does each second, once."""
    r.compact(r.driver.commit_published)
    if r._snapshotting is not None:
        await asyncio.wait_for(r._snapshotting, 10)


def test_a_snapshot_triggers_by_bytes_and_bounds_the_log_in_memory(tmp_path: Path) -> None:
    """Issue 11 item 6: big entries, few of them -- far below the entry count
    that triggers a snapshot -- still compact the log once it holds more than
    snapshot_bytes, and what is kept for slow followers is bounded by bytes."""
    settings = single(tmp_path)
    settings = dataclasses.replace(
        settings,
        snapshot_entries=1_000_000,
        catchup_entries=1_000_000,
        snapshot_bytes=256 << 10,
        catchup_bytes=64 << 10,
    )

    async def check() -> None:
        r = RaftReplicator(settings, EmptyStateMachine())
        await _lead(r)
        for n in range(40):  # 40 x 8 KiB = 320 KiB > 256 KiB
            await r.propose(frame(n, 8 << 10))
        await _snapshot_now(r)
        assert r.storage.snapshot().meta.index >= 40
        retained = r.storage.bytes_after(r.storage.first_index() - 1)
        assert retained <= 64 << 10, retained
        await r.close()
        # And the rewritten WAL says the same after a restart.
        again = RaftReplicator(settings, EmptyStateMachine())
        assert again.storage.snapshot().meta.index >= 40
        assert again.storage.bytes_after(again.storage.first_index() - 1) == retained
        await again.close()

    asyncio.run(asyncio.wait_for(check(), 30))


def test_the_wal_rewrite_after_a_compaction_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = DiskStorage.rewrite

    def rewrite(self: DiskStorage) -> None:
        threads.append(threading.current_thread())
        real(self)

    monkeypatch.setattr(DiskStorage, "rewrite", rewrite)
    settings = dataclasses.replace(single(tmp_path), snapshot_entries=10, catchup_entries=2)

    async def check() -> None:
        r = RaftReplicator(settings, EmptyStateMachine())
        await _lead(r)
        for n in range(15):
            await r.propose(frame(n))
        await _snapshot_now(r)
        assert r.storage.snapshot().meta.index >= 10
        await r.close()

    asyncio.run(asyncio.wait_for(check(), 30))
    assert threads, "no rewrite happened"
    assert all(t is not threading.main_thread() for t in threads), threads
