"""The Raft replicator's bounds (issue 11 item 6): proposals in flight are
limited by count and by bytes; past either, QUEUE_FULL at once (the node
answers RESOURCE_EXHAUSTED), and nothing refused is ever proposed."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from proto import frame_pb2
from replication.raft.replicator import RaftReplicator, RaftSettings
from replication.replicator import Accepted, Rejected, RejectReason
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not r.driver.is_leader:
            assert loop.time() < deadline, "no leader"
            await asyncio.sleep(0.01)
        disk.armed = True
        first = asyncio.ensure_future(r.propose(frame(0, size)))
        await asyncio.to_thread(disk.stuck.wait, 5)  # the loop is inside a stuck fsync
        waiting = [first] + [asyncio.ensure_future(r.propose(frame(n, size))) for n in (1, 2, 3)]
        await asyncio.sleep(0.05)
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
