"""Membership changes through the RaftReplicator: one at a time (dissertation
§4.1), and a change asked for while another is uncommitted waits for it
instead of failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.replication.local_raft import LocalRaft


def test_concurrent_membership_changes_are_made_one_after_another(tmp_path: Path) -> None:
    """Two learners added at once: the second change waits until the first one
    commits, then is made; neither caller sees 'a change is in progress'."""

    async def scenario() -> None:
        cluster = await LocalRaft.open(tmp_path)
        try:
            leader = await cluster.leader()
            # Learners that never answer: a learner does not count for commit.
            await asyncio.gather(
                leader.add_member("l1", "127.0.0.1:9", learner_only=True),
                leader.add_member("l2", "127.0.0.1:9", learner_only=True),
            )
            learners = {m.name for m in leader.member_list() if m.learner}
            assert learners == {"l1", "l2"}
        finally:
            await cluster.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
