"""Crashes between taking a Ready and persisting it: nothing that was
acknowledged or reported committed may be lost (STYLE.md item 2, for the core)."""

from __future__ import annotations

from shardlite.replication.raft import MessageType, Role
from tests.raft.network import Network, drain, new_core, storage_of

MT = MessageType


def test_follower_crash_before_persisting_acknowledges_nothing() -> None:
    """A follower that crashes after receiving entries but before persisting them
    never acknowledged them: the leader does not count it, and the restarted
    follower simply lacks them until they are sent again.
    Reference: §5.3 (Figure 2: persist before responding)"""
    net = Network()
    net.campaign(1)
    net.isolate(3)
    lead, f = net.core(1), net.core(2)
    lead.propose([b"x"])
    app = [m for m in lead.take_messages() if m.to == 2]
    committed = lead.log.committed

    for m in app:
        f.step(m)
    rd = f.ready()  # the driver takes the Ready ...
    assert [m.type for m in rd.persisted_messages] == [MT.APP_RESP]
    # ... and crashes before persisting: the response is never sent.
    restarted = new_core(2, storage=storage_of(f))
    net.add(2, restarted)

    assert lead.log.committed == committed
    assert restarted.log.last_index() == lead.log.last_index() - 1

    net.recover()
    net.tick(1)
    assert restarted.log.committed == lead.log.committed == lead.log.last_index()


def test_leader_crash_before_persisting_commits_nothing() -> None:
    """A leader sends its entries before persisting them, but a follower's
    acknowledgement alone is not a majority: if the leader crashes before its own
    write, the entry was never reported committed.
    Reference: §5.3, §5.4"""
    net = Network()
    net.campaign(1)
    net.isolate(3)
    lead, f = net.core(1), net.core(2)
    lead.propose([b"x"])
    rd = lead.ready()  # taken, not yet persisted
    for m in rd.messages:
        if m.to == 2:
            f.step(m)
    for m in drain(f):  # the follower persists and acknowledges
        if m.to == 1:
            lead.step(m)

    assert lead.log.committed < lead.log.last_index()
    # Crash: the Ready is lost; the leader restarts from what it persisted.
    restarted = new_core(1, storage=storage_of(lead))
    assert restarted.log.last_index() == lead.log.last_index() - 1
    assert restarted.role is Role.FOLLOWER
