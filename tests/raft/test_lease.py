"""The leader lease for reads (dissertation §6.4.1): a leader whose heartbeat
round a quorum acknowledged answers read indexes without a round of its own
until ``read_lease`` of its clock after that round began; the followers that
acknowledged refuse votes for an election timeout, also after a restart."""

from __future__ import annotations

import pytest

from shardlite.replication.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    MemoryStorage,
    Message,
    MessageType,
    ReadState,
)
from tests.raft.network import Network, msg, new_core, read_messages

MT = MessageType
LEASE = 4.5  # seconds of the clock below; the election timeout is 10 ticks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def leased_cluster() -> tuple[Network, Clock]:
    """Three nodes with the lease on, 1 elected and its first entry committed:
    no lease yet (no heartbeat round has been acknowledged)."""
    clock = Clock()
    net = Network(read_lease=LEASE, clock=clock)
    for nid in (2, 3):
        net.core(nid).randomized_election_timeout = 1000  # only 1 campaigns
    for nid in (1, 2, 3):
        for _ in range(10):  # a node that just started grants no vote (§6.4.1)
            net.core(nid).tick()
    net.campaign(1)
    assert net.leader() == 1
    return net, clock


def leader_with_lease() -> tuple[Network, Clock]:
    net, clock = leased_cluster()
    assert not net.core(1).has_read_lease()
    net.tick(1)  # a heartbeat round, begun at clock 0: its acknowledgements ground the lease
    assert net.core(1).has_read_lease()
    return net, clock


def heartbeats(net: Network) -> list[Message]:
    return [m for m in net.delivered if m.type is MT.HEARTBEAT]


def test_read_on_the_lease_needs_no_heartbeat_round() -> None:
    net, _ = leader_with_lease()
    leader = net.core(1)
    net.delivered.clear()

    leader.read_index(b"r1")
    net.send()

    assert net.nodes[1].read_states == [ReadState(leader.log.committed, b"r1")]
    assert heartbeats(net) == []


def test_a_follower_read_is_answered_from_the_leader_lease() -> None:
    net, _ = leader_with_lease()
    net.delivered.clear()

    net.core(2).read_index(b"f1")
    net.send()

    assert net.nodes[2].read_states == [ReadState(net.core(1).log.committed, b"f1")]
    assert heartbeats(net) == []


def test_lease_runs_out_on_the_clock_and_each_heartbeat_round_renews_it() -> None:
    net, clock = leader_with_lease()
    leader = net.core(1)
    clock.now = LEASE - 0.01
    assert leader.has_read_lease()
    clock.now = LEASE
    assert not leader.has_read_lease()

    net.tick(1)  # a round begun at LEASE
    clock.now = 2 * LEASE - 0.01
    assert leader.has_read_lease()


def test_ticks_without_acknowledgements_do_not_keep_the_lease() -> None:
    """The lease is measured on the clock from the last acknowledged round, not
    in ticks: a leader cut off keeps ticking, and its lease still runs out."""
    net, clock = leader_with_lease()
    leader = net.core(1)
    net.isolate(1)
    clock.now = 3.0
    net.tick(1)  # its heartbeats are lost
    clock.now = LEASE
    assert not leader.has_read_lease()

    net.delivered.clear()
    leader.read_index(b"stale?")
    net.send()
    assert net.nodes[1].read_states == []  # a round, which nobody answers
    assert net.core(1).read_only.pending


def test_a_node_that_just_started_refuses_votes_for_an_election_timeout() -> None:
    """It may have acknowledged a leader's round just before it crashed; with
    the lease off it votes at once (etcd-io/raft's behaviour)."""
    leased = new_core(2, read_lease=LEASE, clock=Clock())
    leased.randomized_election_timeout = 1000
    plain = new_core(2)

    vote = msg(MT.VOTE, 3, 2, 5, log_term=0, index=0)
    plain.step(vote)
    assert read_messages(plain) == [Message(MT.VOTE_RESP, 3, 2, 5)]

    leased.step(vote)
    assert read_messages(leased) == []
    for _ in range(9):
        leased.tick()
    leased.step(msg(MT.VOTE, 3, 2, 6, log_term=0, index=0))
    assert read_messages(leased) == []
    leased.tick()
    leased.step(msg(MT.VOTE, 3, 2, 7, log_term=0, index=0))
    assert read_messages(leased) == [Message(MT.VOTE_RESP, 3, 2, 7)]


def test_a_higher_term_that_is_not_a_vote_does_not_end_the_refusal() -> None:
    """A stale answer at a higher term clears the follower's leader and raises
    its term; a vote request at that term must still wait out the election
    timeout since the follower last heard its leader (with the lease off, it is
    granted: the hole a lease would fall through)."""
    for lease, granted in ((LEASE, False), (0.0, True)):
        r = new_core(2, read_lease=lease, clock=Clock() if lease else None)
        r.randomized_election_timeout = 1000
        for _ in range(10):
            r.tick()
        r.step(msg(MT.HEARTBEAT, 1, 2, 2, commit=0))
        read_messages(r)
        r.step(msg(MT.APP_RESP, 3, 2, 5, index=0))
        assert (r.term, r.lead) == (5, 0)

        r.step(msg(MT.VOTE, 3, 2, 5, log_term=0, index=0))

        answers = read_messages(r)
        assert [m.type for m in answers] == [MT.VOTE_RESP]
        assert answers[0].reject is not granted


def test_a_transfer_voids_the_lease_for_the_rest_of_the_term() -> None:
    """The transferee's forced campaign bypasses the voters' refusal (§3.10)."""
    net, _ = leader_with_lease()
    leader = net.core(1)
    net.isolate(2)  # the transfer cannot finish
    leader.transfer_leader(2)
    assert not leader.has_read_lease()

    net.tick(1, 12)  # the transfer is given up; 3 acknowledges every round
    assert leader.lead_transferee == 0
    assert leader.role.name == "LEADER"
    assert not leader.has_read_lease()


def test_a_configuration_change_voids_the_lease_until_a_round_counted_in_it() -> None:
    """A quorum of the old configuration need not overlap one of a configuration
    two changes away; a new lease waits until the change committed and a
    round of the new configuration was acknowledged."""
    net, _ = leader_with_lease()
    leader = net.core(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert not leader.has_read_lease()

    net.send()
    assert leader.log.committed >= leader._conf_index()
    assert not leader.has_read_lease()
    net.tick(1)
    assert leader.has_read_lease()


def test_the_lease_needs_check_quorum_and_a_clock() -> None:
    storage = MemoryStorage.bootstrap([1, 2, 3])
    with pytest.raises(ValueError, match="check_quorum and a clock"):
        Config(id=1, storage=storage, read_lease=1.0).validate()
    with pytest.raises(ValueError, match="check_quorum and a clock"):
        Config(id=1, storage=storage, read_lease=1.0, clock=Clock(), check_quorum=False).validate()
    with pytest.raises(ValueError, match="must not be negative"):
        Config(id=1, storage=storage, read_lease=-1.0, clock=Clock()).validate()
