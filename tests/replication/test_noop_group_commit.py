"""The no-op replicator shares one fsync among the proposals that arrive while
another fsync runs (group commit), and accepts nothing before it is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shardlite.replication.frame_log import FrameLog
from shardlite.replication.noop import NoopReplicator
from shardlite.v1 import frame_pb2


def test_concurrent_proposals_share_fsyncs(tmp_path: Path, monkeypatch) -> None:
    appends: list[int] = []
    real_append = FrameLog.append

    def counting_append(self: FrameLog, payloads: list[bytes]) -> int:
        appends.append(len(payloads))
        return real_append(self, payloads)

    monkeypatch.setattr(FrameLog, "append", counting_append)

    async def check() -> None:
        r = NoopReplicator("n1", tmp_path / "log")
        frames = [frame_pb2.Frame(namespace="ns", trace_id=bytes([n])) for n in range(128)]
        accepted = await asyncio.gather(*(r.propose(f) for f in frames))
        assert sorted(a.index for a in accepted) == list(range(1, 129))
        await r.close()

    asyncio.run(check())
    assert sum(appends) == 128
    # The first proposal starts an fsync; the other 127 arrive meanwhile and share one.
    assert len(appends) <= 3, appends


def test_nothing_is_accepted_before_it_is_durable(tmp_path: Path) -> None:
    async def check() -> None:
        r = NoopReplicator("n1", tmp_path / "log")
        accepted = await r.propose(frame_pb2.Frame(namespace="ns"))
        # Whatever the replicator said it accepted is in the log on disk now.
        assert FrameLog(tmp_path / "log").last_index >= accepted.index
        await r.close()

    asyncio.run(check())
