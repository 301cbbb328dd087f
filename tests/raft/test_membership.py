"""Single-server membership changes and learners (dissertation §4), leader
removal (§4.2.2), and leadership transfer (§3.10)."""

from __future__ import annotations

import pytest

from shardlite.replication.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    DropReason,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    Role,
    bootstrap_entries,
)
from tests.raft.network import (
    Network,
    msg,
    new_core,
    new_storage,
    read_messages,
    storage_of,
)

MT = MessageType
ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE_NODE,
)


def bootstrapped(ids: list[int], joiners: tuple[int, ...] | list[int] = (), **kw) -> Network:
    """A cluster whose first configuration is in the log (as the driver does it),
    plus nodes with empty storage that may join later."""
    cores = {i: new_core(i, storage=MemoryStorage.bootstrap(ids), **kw) for i in ids}
    for j in joiners:
        cores[j] = new_core(j, storage=MemoryStorage(), **kw)
    net = Network(ids, cores=cores)
    for j in joiners:
        net.add(j, cores[j])
    return net


def change(net: Network, nid: int, kind: ConfChangeType, node: int) -> None:
    net.core(nid).propose_conf_change(ConfChange(kind, node))
    net.send()


def test_conf_change_encoding_roundtrip() -> None:
    """A membership change travels as entry bytes and decodes to the same change.
    Reference: dissertation §4.1"""
    cc = ConfChange(ADD_LEARNER, 7, b"addr=10.0.0.7:7001")
    assert ConfChange.decode(cc.encode()) == cc


def test_bootstrap_entries_hold_first_configuration() -> None:
    """Founding members start from the same committed log of ADD_VOTER entries, so
    a node joining later rebuilds the configuration from the log alone.
    Reference: dissertation §4.1"""
    ents = bootstrap_entries([3, 1, 2])
    assert [(e.index, e.term, e.type) for e in ents] == [
        (i, 1, EntryType.CONF_CHANGE) for i in (1, 2, 3)
    ]
    r = new_core(1, storage=MemoryStorage.bootstrap([1, 2, 3]))
    assert r.conf == ConfState(frozenset({1, 2, 3}))
    assert r.log.committed == 3


def test_add_learner_receives_log_but_does_not_vote_or_count() -> None:
    """A learner receives the replicated log but is not counted for commits or
    elections, and never campaigns; so a new node catches up before it can affect
    availability.
    Reference: dissertation §4.2.1"""
    net = bootstrapped([1, 2, 3], joiners=[4])
    net.campaign(1)

    change(net, 1, ADD_LEARNER, 4)
    net.tick(1)
    net.propose(1, b"x")

    lead = net.core(1)
    assert lead.conf == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert net.core(4).conf == lead.conf
    assert net.nodes[4].applied[-1].data == b"x"
    assert lead.prs[4].is_learner
    # Not counted: with 2 and 3 cut off, the learner's ack commits nothing.
    net.isolate(2)
    net.isolate(3)
    committed = lead.log.committed
    net.propose(1, b"y")
    assert lead.log.committed == committed
    # And a learner never campaigns.
    for _ in range(50):
        net.core(4).tick()
    assert net.core(4).role is Role.FOLLOWER


def test_promote_learner_to_voter() -> None:
    """Promoting a caught-up learner is a single-server change that adds a voter;
    from then on its acknowledgement counts.
    Reference: dissertation §4.2.1"""
    net = bootstrapped([1, 2, 3], joiners=[4])
    net.campaign(1)
    change(net, 1, ADD_LEARNER, 4)
    net.tick(1)

    change(net, 1, ADD_VOTER, 4)

    for nid in (1, 2, 3, 4):
        assert net.core(nid).conf.voters == {1, 2, 3, 4}, nid
    # 4 voters: 1 + 4 are not a majority (3 needed); 1 + 2 + 4 are.
    net.cut(1, 3)
    net.cut(1, 2)
    c = net.core(1).log.committed
    net.propose(1, b"z")
    assert net.core(1).log.committed == c
    net.recover()
    net.cut(1, 3)
    net.tick(1)
    assert net.core(1).log.committed == c + 1


def test_remove_follower() -> None:
    """Removing a follower shrinks the quorum as soon as the change is appended.
    Reference: dissertation §4.1"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)

    change(net, 1, REMOVE, 3)

    lead = net.core(1)
    assert lead.conf.voters == {1, 2}
    assert 3 not in lead.prs
    net.isolate(3)
    net.propose(1, b"after")
    assert net.nodes[2].applied[-1].data == b"after"


def test_configuration_effective_on_append_and_rolled_back_on_truncation() -> None:
    """A server uses the latest configuration in its log, committed or not; if that
    entry is truncated by a new leader, the server falls back to the previous one.
    Reference: dissertation §4.1"""
    r = new_core(2, storage=MemoryStorage.bootstrap([1, 2, 3]))
    cc = Entry(2, 4, EntryType.CONF_CHANGE, ConfChange(REMOVE, 3).encode())

    r.step(msg(MT.APP, 1, 2, term=2, index=3, log_term=1, entries=(cc,), commit=3))
    assert r.conf.voters == {1, 2}

    # The new leader is the very node the truncated entry removed.
    r.step(msg(MT.APP, 3, 2, term=3, index=3, log_term=1, entries=(Entry(3, 4),), commit=3))
    assert r.conf.voters == {1, 2, 3}


def test_one_conf_change_at_a_time() -> None:
    """The leader refuses a second membership change while one is uncommitted.
    Reference: dissertation §4.1"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)
    net.isolate(2)
    net.isolate(3)
    lead = net.core(1)
    lead.propose_conf_change(ConfChange(REMOVE, 3))

    with pytest.raises(ProposalDroppedError) as exc:
        lead.propose_conf_change(ConfChange(REMOVE, 2))

    assert exc.value.reason is DropReason.CONF_CHANGE_PENDING


def test_conf_change_waits_for_entry_of_current_term() -> None:
    """A new leader may not append a configuration until it has committed an entry
    of its own term (the fix to the single-server change bug).
    Reference: dissertation §4.1 (and Ongaro's raft-dev note of 2015)"""
    net = bootstrapped([1, 2, 3])
    net.ignore(MT.APP)
    net.campaign(1)
    lead = net.core(1)
    assert lead.role is Role.LEADER

    with pytest.raises(ProposalDroppedError) as exc:
        lead.propose_conf_change(ConfChange(REMOVE, 3))

    assert exc.value.reason is DropReason.NOT_READY


@pytest.mark.parametrize(
    "cc",
    [
        ConfChange(ADD_VOTER, 2),  # already a voter
        ConfChange(REMOVE, 9),  # not a member
        ConfChange(ADD_LEARNER, 0),  # no such id
    ],
)
def test_invalid_conf_change_refused(cc: ConfChange) -> None:
    """A change that would not alter the configuration, or would leave no voter,
    is refused.
    Reference: dissertation §4.1"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)

    with pytest.raises(ProposalDroppedError) as exc:
        net.core(1).propose_conf_change(cc)

    assert exc.value.reason is DropReason.INVALID_CONF_CHANGE


def test_remove_leader_steps_down_after_commit() -> None:
    """A leader removing itself keeps leading (without counting itself) until the
    change commits, then steps down and tells the most up-to-date voter to start
    an election at once.
    Reference: dissertation §4.2.2"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)
    lead = net.core(1)

    lead.propose_conf_change(ConfChange(REMOVE, 1))
    assert lead.role is Role.LEADER
    assert lead.conf.voters == {2, 3}
    with pytest.raises(ProposalDroppedError):
        lead.propose([b"x"])
    net.send()

    assert lead.status().role is Role.FOLLOWER
    assert [m.to for m in net.delivered if m.type is MT.TIMEOUT_NOW] == [2]
    assert net.core(2).role is Role.LEADER
    # The removed node never campaigns again.
    for _ in range(50):
        lead.tick()
    assert lead.status().role is Role.FOLLOWER


def test_removed_leader_does_not_count_itself() -> None:
    """While being removed, the leader's own acknowledgement does not count: the
    change needs a majority of the new configuration.
    Reference: dissertation §4.2.2"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)
    net.cut(1, 2)
    lead = net.core(1)
    lead.propose_conf_change(ConfChange(REMOVE, 1))

    net.send()

    # New configuration {2, 3}: 3 alone is not a majority of it.
    assert lead.role is Role.LEADER
    assert lead.log.committed < lead.log.last_index()


def demoted_storage(voters: list[int], demoted: int, term: int = 2) -> MemoryStorage:
    """Storage of a node whose log ends with an uncommitted ADD_LEARNER of
    ``demoted`` (appended by the leader of ``term``)."""
    st = MemoryStorage.bootstrap(voters)
    last = st.last_index()
    cc = ConfChange(ADD_LEARNER, demoted).encode()
    st.append(
        [
            Entry(term, last + 1, EntryType.EMPTY),
            Entry(term, last + 2, EntryType.CONF_CHANGE, cc),
        ]
    )
    st.set_hard_state(HardState(term=term, vote=0, commit=last))
    return st


def test_demoted_voter_campaigns_until_demotion_known_committed() -> None:
    """A server that is not part of its latest configuration still starts elections
    while the change that demoted it is not known to be committed (it may hold the
    only log that can win), but its own vote does not count: it needs a majority
    of the new configuration.
    Reference: dissertation §4.2.2"""
    r = new_core(1, storage=demoted_storage([1, 2, 3], demoted=1), pre_vote=False)
    assert r.conf == ConfState(frozenset({2, 3}), frozenset({1}))

    for _ in range(2 * r.election_timeout):
        r.tick()
    sent = read_messages(r)

    assert r.role is Role.CANDIDATE
    assert sorted(m.to for m in sent if m.type is MT.VOTE) == [2, 3]
    r.step(msg(MT.VOTE_RESP, 2, 1, term=r.term))
    assert r.role is Role.CANDIDATE  # its own vote and 2's are not a majority of {2, 3}
    r.step(msg(MT.VOTE_RESP, 3, 1, term=r.term))
    assert r.status().role is Role.LEADER


def test_demoted_voter_stops_campaigning_once_demotion_committed() -> None:
    """Once a demoted server knows its demotion committed it is a learner for good:
    it never campaigns again.
    Reference: dissertation §4.2.1, §4.2.2"""
    st = demoted_storage([1, 2, 3], demoted=1)
    st.set_hard_state(HardState(term=2, vote=0, commit=st.last_index()))
    r = new_core(1, storage=st, applied=st.last_index())

    for _ in range(5 * r.election_timeout):
        r.tick()

    assert r.role is Role.FOLLOWER
    assert read_messages(r) == []


def test_self_demoted_leader_that_crashed_is_elected_to_finish_the_change() -> None:
    """The shape of simulator seeds 7012038 and 7019575 (3 nodes), reduced: a leader
    of two voters demotes itself and crashes before the change reaches the other
    voter. The
    other voter cannot win (the demoted node's log is newer and refuses it); the
    demoted node must campaign, lead until the change commits, then step down
    and hand over (§4.2.2). Before, it saw itself as a learner and never
    campaigned: no leader, ever.
    Reference: dissertation §4.2.2"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)
    change(net, 1, ADD_LEARNER, 3)  # two voters left: {1, 2}
    net.cut(1, 2)
    net.core(1).propose_conf_change(ConfChange(ADD_LEARNER, 1))
    net.send()
    # 1 crashes and restarts from what it persisted; 2 never got the change.
    net.add(1, new_core(1, storage=storage_of(net.core(1))))
    net.recover()
    assert net.core(1).conf == ConfState(frozenset({2}), frozenset({1, 3}))
    assert net.core(2).conf == ConfState(frozenset({1, 2}), frozenset({3}))

    for _ in range(100):
        for nid in (1, 2, 3):
            net.tick(nid)
        if net.leader() == 2 and net.core(2).log.committed == net.core(1).log.last_index():
            break

    assert net.leader() == 2
    assert [m.frm for m in net.delivered if m.type is MT.TIMEOUT_NOW] == [1]
    for nid in (1, 2, 3):
        assert net.core(nid).conf == ConfState(frozenset({2}), frozenset({1, 3}))
    for _ in range(5 * net.core(1).election_timeout):
        net.tick(1)
    assert net.leader() == 2


def test_demote_voter_to_learner() -> None:
    """A voter can be demoted to learner by a single change.
    Reference: dissertation §4.1"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)

    change(net, 1, ADD_LEARNER, 3)

    assert net.core(2).conf == ConfState(frozenset({1, 2}), frozenset({3}))


def test_conf_state_at_index() -> None:
    """The core reports the configuration at an index at or above the applied index,
    which the driver records in a snapshot taken there.
    Reference: §7, dissertation §4"""
    net = bootstrapped([1, 2, 3])
    net.campaign(1)
    change(net, 1, REMOVE, 3)
    lead = net.core(1)
    idx = lead.log.applied

    assert lead.conf_state_at(idx) == ConfState(frozenset({1, 2}))
    # Below the applied index the history is pruned.
    with pytest.raises(CompactedError):
        lead.conf_state_at(idx - 2)
    # Above it, uncommitted configurations are answered too.
    net.isolate(2)
    lead.propose_conf_change(ConfChange(ADD_LEARNER, 2))
    assert lead.conf_state_at(idx) == ConfState(frozenset({1, 2}))
    assert lead.conf_state_at(lead.log.last_index()) == ConfState(frozenset({1}), frozenset({2}))


def test_conf_state_at_applied_survives_snapshot_restore() -> None:
    """Regression (simulator seeds 94, 568, 854 with 5 nodes): after restoring a
    snapshot but before the driver advanced, conf_state_at(applied) must still
    answer for the old applied index.
    Reference: §7"""
    from shardlite.replication.raft import Snapshot, SnapshotMeta

    r = new_core(2, storage=MemoryStorage.bootstrap([1, 2, 3]))
    read_messages(r)
    applied = r.log.applied
    snap = Snapshot(SnapshotMeta(20, 2, ConfState(frozenset({1, 2}))), b"s")

    r.step(msg(MT.SNAP, 1, 2, term=2, snapshot=snap))

    assert r.conf_state_at(applied) == ConfState(frozenset({1, 2, 3}))
    assert r.conf_state_at(20) == ConfState(frozenset({1, 2}))


def test_joining_node_rebuilds_configuration_from_log() -> None:
    """Regression (simulator seed 10): a node added with an empty log must learn the
    founding configuration from the log, not start from an empty one (it once
    elected itself alone).
    Reference: dissertation §4.1"""
    net = bootstrapped([1, 2, 3], joiners=[4])
    net.campaign(1)
    change(net, 1, ADD_LEARNER, 4)
    change(net, 1, ADD_VOTER, 4)
    net.tick(1)

    assert net.core(4).conf.voters == {1, 2, 3, 4}
    # Alone, it cannot win: it needs 3 of 4 votes.
    net.isolate(4)
    for _ in range(50):
        net.tick(4)
    assert net.core(4).role is not Role.LEADER


# ----------------------------------------------------------------------
# Leadership transfer (§3.10)
# ----------------------------------------------------------------------
def test_transfer_to_up_to_date_follower() -> None:
    """The leader sends TimeoutNow to an up-to-date target, which campaigns at once
    (skipping pre-vote and the lease) and wins.
    Reference: dissertation §3.10"""
    net = Network()
    net.campaign(1)

    net.core(1).transfer_leader(2)
    net.send()

    assert net.core(2).role is Role.LEADER
    assert net.core(1).role is Role.FOLLOWER
    assert net.core(2).term == 2


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """A target that lags is first brought up to date; TimeoutNow follows its
    acknowledgement of the last entry.
    Reference: dissertation §3.10"""
    net = Network()
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.propose(1, b"b")
    net.recover()

    net.core(1).transfer_leader(3)
    net.send()

    assert net.core(3).role is Role.LEADER
    kinds = [m.type for m in net.delivered if m.to == 3 or m.frm == 3]
    assert kinds.index(MT.TIMEOUT_NOW) > kinds.index(MT.APP)


def test_proposals_refused_during_transfer() -> None:
    """While a transfer is in progress the leader stops accepting proposals.
    Reference: dissertation §3.10"""
    net = Network()
    net.campaign(1)
    net.isolate(3)
    lead = net.core(1)

    lead.transfer_leader(3)
    with pytest.raises(ProposalDroppedError) as exc:
        lead.propose([b"x"])

    assert exc.value.reason is DropReason.TRANSFER_IN_PROGRESS


def test_transfer_aborts_after_election_timeout() -> None:
    """A transfer that does not complete within an election timeout is abandoned
    and the leader accepts proposals again.
    Reference: dissertation §3.10"""
    net = Network(election_tick=10)
    net.campaign(1)
    net.isolate(3)
    lead = net.core(1)
    lead.transfer_leader(3)

    for _ in range(10):
        net.tick(1)

    assert lead.role is Role.LEADER
    assert lead.lead_transferee == 0
    lead.propose([b"x"])


def test_transfer_to_self_or_learner_is_ignored() -> None:
    """Transferring to the leader itself, or to a non-voter, does nothing.
    Reference: dissertation §3.10"""
    net = Network(learners=[4])
    net.campaign(1)
    lead = net.core(1)

    lead.transfer_leader(1)
    lead.transfer_leader(4)

    assert lead.lead_transferee == 0
    assert lead.role is Role.LEADER


def test_follower_forwards_transfer_request() -> None:
    """A transfer request made at a follower is forwarded to the leader.
    Reference: dissertation §3.10"""
    net = Network()
    net.campaign(1)

    net.core(3).transfer_leader(3)
    net.send()

    assert net.core(3).role is Role.LEADER


def test_timeout_now_bypasses_lease() -> None:
    """Vote requests caused by a transfer carry a marker that lets voters grant them
    even though they heard from the leader recently.
    Reference: dissertation §3.10, §4.2.3"""
    r = new_core(2)
    r.step(msg(MT.HEARTBEAT, 1, 2, term=1))
    read_messages(r)
    from shardlite.replication.raft import CAMPAIGN_TRANSFER

    r.step(msg(MT.VOTE, 3, 2, term=2, log_term=0, index=0, context=CAMPAIGN_TRANSFER))

    assert read_messages(r) == [Message(MT.VOTE_RESP, 3, 2, 2)]


def test_learner_ignores_timeout_now() -> None:
    """A learner cannot be made leader.
    Reference: dissertation §3.10, §4.2.1"""
    st = new_storage((1, 2), (3,))
    st.set_hard_state(HardState(term=1))
    r = new_core(3, (1, 2), learners=(3,), storage=st)

    r.step(msg(MT.TIMEOUT_NOW, 1, 3, term=1))

    assert r.role is Role.FOLLOWER
    assert r.term == 1
