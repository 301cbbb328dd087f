"""ReadIndex (dissertation §6.4): linearizable reads without writing to the log."""

from __future__ import annotations

import pytest

from shardlite.replication.raft import (
    Message,
    MessageType,
    ProposalDroppedError,
    ReadContexts,
    ReadState,
)
from tests.raft.network import Network, msg, new_core, read_messages

MT = MessageType


def test_read_index_after_heartbeat_quorum() -> None:
    """The leader records its commit index, confirms its leadership with a
    heartbeat round carrying the read's context, and releases the read once a
    majority answered.
    Reference: dissertation §6.4"""
    net = Network()
    net.campaign(1)
    net.propose(1, b"x")

    net.core(1).read_index(b"ctx-1")
    net.send()

    assert net.nodes[1].read_states == [ReadState(2, b"ctx-1")]
    beats = [m for m in net.delivered if m.type is MT.HEARTBEAT and m.context == b"ctx-1"]
    assert sorted(m.to for m in beats) == [2, 3]


def test_read_index_exact_messages() -> None:
    """The heartbeat of a read carries its context and the follower echoes it; one
    echo plus the leader itself is a majority of three.
    Reference: dissertation §6.4"""
    r = new_core(1, pre_vote=False)
    r.campaign()
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.VOTE_RESP, v, 1, 1))
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)

    r.read_index(b"q")
    assert read_messages(r) == [
        Message(MT.HEARTBEAT, 2, 1, 1, commit=1, context=b"q"),
        Message(MT.HEARTBEAT, 3, 1, 1, commit=1, context=b"q"),
    ]
    assert not r.has_ready()  # not yet confirmed: no read state

    r.step(msg(MT.HEARTBEAT_RESP, 3, 1, 1, context=b"q"))

    assert r.ready().read_states == [ReadState(1, b"q")]


def test_read_index_not_released_without_quorum() -> None:
    """A leader that cannot reach a majority (maybe deposed without knowing it)
    never releases the read.
    Reference: dissertation §6.4"""
    net = Network()
    net.campaign(1)
    net.isolate(1)

    net.core(1).read_index(b"stale")
    net.send()

    assert net.nodes[1].read_states == []


def test_read_index_waits_for_commit_in_current_term() -> None:
    """A new leader does not know the latest commit index until its own empty entry
    commits; reads wait until then.
    Reference: dissertation §6.4 (step 1)"""
    net = Network()
    net.ignore(MT.APP)
    net.campaign(1)

    net.core(1).read_index(b"early")
    net.send()
    assert net.nodes[1].read_states == []

    net.recover()
    net.tick(1)
    assert net.nodes[1].read_states == [ReadState(1, b"early")]


def test_follower_read_index_forwarded_to_leader() -> None:
    """A follower asks the leader for a read index; the answer comes back to it,
    and it serves the read once it applied that index.
    Reference: dissertation §6.4"""
    net = Network()
    net.campaign(1)
    net.propose(1, b"x")

    net.core(2).read_index(b"f")
    net.send()

    assert net.nodes[2].read_states == [ReadState(2, b"f")]
    assert net.nodes[1].read_states == []


def test_read_index_without_leader_raises() -> None:
    """With no known leader the request is refused at once, so the driver can retry
    or fail fast.
    Reference: dissertation §6.4"""
    r = new_core(1)

    with pytest.raises(ProposalDroppedError):
        r.read_index(b"x")


def test_single_voter_reads_immediately() -> None:
    """A leader that is the only voter is its own quorum: no heartbeat round.
    Reference: dissertation §6.4"""
    net = Network([1])
    net.campaign(1)

    net.core(1).read_index(b"solo")
    net.send()

    assert net.nodes[1].read_states == [ReadState(1, b"solo")]
    assert not [m for m in net.delivered if m.type is MT.HEARTBEAT]


def test_reads_released_in_order() -> None:
    """A quorum confirming a later read confirms the earlier ones too; they are
    released in the order they arrived.
    Reference: dissertation §6.4"""
    net = Network()
    net.campaign(1)
    net.ignore(MT.HEARTBEAT_RESP)
    lead = net.core(1)
    lead.read_index(b"a")
    net.send()
    lead.read_index(b"b")
    net.send()
    assert net.nodes[1].read_states == []

    net.recover()
    lead.read_index(b"c")
    net.send()

    assert [rs.context for rs in net.nodes[1].read_states] == [b"a", b"b", b"c"]


def test_reads_dropped_on_leadership_loss() -> None:
    """Pending reads do not survive a change of leadership; the driver fails them
    (it sees the soft state change).
    Reference: dissertation §6.4"""
    net = Network()
    net.campaign(1)
    net.isolate(1)
    lead = net.core(1)
    lead.read_index(b"lost")
    net.send()

    lead.step(msg(MT.APP, 2, 1, term=5))

    assert lead.read_only.pending == {}


def test_read_contexts_never_repeat_across_members_or_restarts() -> None:
    """The leader matches acknowledgements and answers to reads by context alone:
    two followers asking at once, or one follower before and after a restart, must
    not share a context, or an answer computed for an older request (a lower
    index) completes a newer read. The simulator found the restart case with
    contexts counted from 1 per process (regression seed 502, 3 nodes).
    Reference: dissertation §6.4"""
    first_run = ReadContexts(2, b"\x00" * 7 + b"\x01")
    restarted = ReadContexts(2, b"\x00" * 7 + b"\x02")
    other_member = ReadContexts(3, b"\x00" * 7 + b"\x01")
    seen = [src.next() for src in (first_run, restarted, other_member) for _ in range(100)]
    assert len(set(seen)) == len(seen)
