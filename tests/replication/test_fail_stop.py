"""Fail-stop (issue 11 item 4): when the log's disk fails (fsync EIO), a
replicator fails every waiting request at once, refuses new ones at once, and
reports the fault once through on_fatal -- it never hangs, never keeps leading.

The fault is real: os.fsync is made to fail with EIO for the log's own files,
as a dying disk does, and nothing else is touched."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from shardlite.replication.noop import NoopReplicator
from shardlite.replication.raft.messages import Message, MessageType
from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.replicator import Rejected, RejectReason, Replicator
from shardlite.v1 import frame_pb2
from tests.harness import until
from tests.replication.local_raft import EmptyStateMachine

# Everything below must answer well within this; the old code hung forever.
AT_ONCE = 2.0


def frame(n: int) -> frame_pb2.Frame:
    f = frame_pb2.Frame(namespace="ns", trace_id=n.to_bytes(8, "big"))
    f.ops.add(put=frame_pb2.PutOp(key=f"k{n}", value=b"v"))
    return f


class FailingDisk:
    """os.fsync that raises EIO for files under `root` once armed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = str(root)
        self.armed = False
        self.failures = 0
        real = os.fsync

        def fsync(fd: int) -> None:
            if self.armed and os.readlink(f"/proc/self/fd/{fd}").startswith(self.root):
                self.failures += 1
                raise OSError(errno.EIO, "Input/output error (injected)")
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


async def _check_dead(r: Replicator, waiting: list[asyncio.Task[object]]) -> None:
    """Every waiter failed with STORAGE_FAILED; new requests fail at once too."""
    done, pending = await asyncio.wait(waiting, timeout=AT_ONCE)
    assert not pending, f"{len(pending)} waiters still hang after the disk failed"
    for task in done:
        exc = task.exception()
        assert isinstance(exc, Rejected), exc
        assert exc.reason is RejectReason.STORAGE_FAILED, exc
        assert "Input/output error" in str(exc)
    for attempt in (r.propose(frame(999)), r.read_barrier()):
        with pytest.raises(Rejected) as refused:
            await asyncio.wait_for(attempt, AT_ONCE)
        assert refused.value.reason is RejectReason.STORAGE_FAILED
    with pytest.raises(Rejected) as refused:
        await asyncio.wait_for(anext(aiter(r.subscribe(1))), AT_ONCE)
    assert refused.value.reason is RejectReason.STORAGE_FAILED


def test_raft_replicator_fails_stop_when_the_wal_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingDisk(monkeypatch, tmp_path / "raft" / "raft.wal")
    fatal: list[BaseException] = []

    async def check() -> None:
        settings = RaftSettings(
            name="n1",
            address="127.0.0.1:1",  # a cluster of one: it never dials anyone
            directory=tmp_path / "raft",
            peers={"n1": "127.0.0.1:1"},
            tick_interval=0.02,
            propose_timeout=30,  # longer than the test: only fail-stop can end the waits
            read_timeout=30,
        )
        r = RaftReplicator(settings, EmptyStateMachine(), on_fatal=fatal.append)
        await until(lambda: r.driver.is_leader, 5, "the single member to lead")
        await r.propose(frame(0))
        # A subscriber waiting for the next entry, and proposals that the dying
        # fsync carries.
        subscriber = asyncio.ensure_future(_drain(r, r.driver.commit_published + 1))
        await asyncio.sleep(0)
        disk.armed = True
        proposals = [asyncio.ensure_future(r.propose(frame(n))) for n in range(1, 20)]
        await _check_dead(r, [*proposals, subscriber])
        assert disk.failures >= 1
        assert len(fatal) == 1
        assert isinstance(fatal[0], OSError), fatal
        assert not r.driver.is_leader, "a node whose loop died must not claim to lead"
        # A peer's message is dropped, not queued for a loop that is gone.
        r.driver.deliver(Message(MessageType.HEARTBEAT, to=r.id, frm=2, term=5))
        assert r.driver._inbox == []
        await asyncio.wait_for(r.close(), AT_ONCE)
        assert len(fatal) == 1

    asyncio.run(asyncio.wait_for(check(), 30))


def test_noop_replicator_fails_stop_when_the_frame_log_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingDisk(monkeypatch, tmp_path / "log")
    fatal: list[BaseException] = []

    async def check() -> None:
        r = NoopReplicator("n1", tmp_path / "log", on_fatal=fatal.append)
        await r.propose(frame(0))
        subscriber = asyncio.ensure_future(_drain(r, 2))
        await asyncio.sleep(0)
        disk.armed = True
        proposals = [asyncio.ensure_future(r.propose(frame(n))) for n in range(1, 20)]
        await _check_dead(r, [*proposals, subscriber])
        assert len(fatal) == 1
        assert isinstance(fatal[0], OSError), fatal
        await asyncio.wait_for(r.close(), AT_ONCE)
        assert len(fatal) == 1

    asyncio.run(asyncio.wait_for(check(), 30))


async def _drain(r: Replicator, start: int) -> object:
    async for _ in r.subscribe(start):
        pass
    return None
