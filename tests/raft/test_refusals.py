"""Messages a member must refuse (issue 11, item 7): the core checks every
message's sender against the configuration and the leader it follows, drops
what no correct peer could have sent, counts it (``RaftCore.refused``) and logs
one line of fixed format. One test per message type, in the style of
test_paper.py: arrange, act, check.

Sender ids are not authenticated here (mutual TLS is the transport's business);
these are the checks the core can make with what it knows.
"""

from __future__ import annotations

import random

import pytest

from shardlite.replication.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RaftCore,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from shardlite.replication.raft.messages import LOCAL_MESSAGES
from tests.raft.network import drain, msg, new_core, read_messages

MT = MessageType


def follower_of(lead: int, nid: int = 2, term: int = 2, pre_vote: bool = False) -> RaftCore:
    """Node ``nid`` of {1, 2, 3}, following ``lead`` at ``term``; log: the 3 founding
    entries."""
    st = MemoryStorage.bootstrap([1, 2, 3])
    st.set_hard_state(HardState(term=term, commit=3))
    r = new_core(nid, storage=st, pre_vote=pre_vote)
    r.step(msg(MT.HEARTBEAT, lead, nid, term=term, commit=3))
    read_messages(r)
    assert (r.role, r.lead, r.term) == (Role.FOLLOWER, lead, term)
    return r


def leader(nid: int = 1) -> RaftCore:
    """Node ``nid`` of {1, 2, 3}, leader at term 2."""
    st = MemoryStorage.bootstrap([1, 2, 3])
    r = new_core(nid, storage=st, pre_vote=False)
    r.campaign()
    read_messages(r)
    for v in sorted({1, 2, 3} - {nid}):
        r.step(msg(MT.VOTE_RESP, v, nid, term=r.term))
    read_messages(r)
    assert r.role is Role.LEADER
    return r


def forged_append(frm: int, to: int, term: int, r: RaftCore) -> Message:
    """An append that, if accepted, would make ``r`` commit an entry nobody proposed."""
    last = r.log.last_index()
    return msg(
        MT.APP,
        frm,
        to,
        term=term,
        index=last,
        log_term=r.log.last_term(),
        entries=(Entry(term, last + 1, EntryType.NORMAL, b"forged"),),
        commit=last + 1,
    )


def snapshot_message(frm: int, to: int, term: int, index: int) -> Message:
    snap = Snapshot(SnapshotMeta(index, term, ConfState(frozenset({1, 2, 3}))), b"state")
    return msg(MT.SNAP, frm, to, term=term, snapshot=snap)


class Lines:
    """A logger that keeps the lines the core writes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, m: str, *a: object) -> None:
        pass

    def info(self, m: str, *a: object) -> None:
        self.lines.append(m % a)

    def warning(self, m: str, *a: object) -> None:
        self.lines.append(m % a)


# ----------------------------------------------------------------------
# Local message types
# ----------------------------------------------------------------------
@pytest.mark.parametrize("t", sorted(LOCAL_MESSAGES))
def test_local_message_types_from_a_peer_are_refused(t: MessageType) -> None:
    """HUP, BEAT, PROP, CHECK_QUORUM, UNREACHABLE and SNAP_STATUS are the core's own
    or reported by the driver through methods (campaign(), report_unreachable(),
    ...); from the network they are refused, not obeyed: a HUP from a peer once
    started an election, the others raised an exception in the driver's loop.
    Reference: etcd-io/raft's ErrStepLocalMsg; dissertation §3.10 (who may start
    an election out of turn)"""
    r = follower_of(lead=1)

    r.step(msg(t, 3, 2, term=2))

    assert (r.role, r.term, r.lead) == (Role.FOLLOWER, 2, 1)
    assert read_messages(r) == []
    assert r.refused == 1


def test_hup_from_a_peer_does_not_depose_the_leader() -> None:
    """A HUP from the network does not make a leader's follower campaign (a forged
    one would raise every voter's term, deposing the leader, at will).
    Reference: §5.2 (only an election timeout starts an election)"""
    r = follower_of(lead=1)

    r.step(msg(MT.HUP, 2, 2))

    assert (r.role, r.term) == (Role.FOLLOWER, 2)
    assert read_messages(r) == []


# ----------------------------------------------------------------------
# TIMEOUT_NOW
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("frm", "term"), [(3, 2), (3, 9), (9, 2), (1, 1)])
def test_timeout_now_refused_unless_from_the_leader_we_follow(frm: int, term: int) -> None:
    """Only the leader we follow, at our term, may tell us to campaign at once: it
    does so for a follower that acknowledged its whole log (leadership transfer,
    or handing over when removed). A forged one (another member, a stranger, a
    higher term) deposed the leader every time.
    Reference: dissertation §3.10, §4.2.2"""
    r = follower_of(lead=1)

    r.step(msg(MT.TIMEOUT_NOW, frm, 2, term=term))

    assert (r.role, r.term, r.lead) == (Role.FOLLOWER, 2, 1)
    assert [m for m in read_messages(r) if m.type is MT.VOTE] == []


def test_timeout_now_from_the_leader_starts_an_election() -> None:
    """The leader's own TimeoutNow still starts an election at once, without pre-vote.
    Reference: dissertation §3.10"""
    r = follower_of(lead=1, pre_vote=True)

    r.step(msg(MT.TIMEOUT_NOW, 1, 2, term=2))

    assert (r.role, r.term) == (Role.CANDIDATE, 3)
    assert r.refused == 0


def test_timeout_now_refused_without_a_known_leader() -> None:
    """After a restart a follower knows no leader until it hears from one: a
    TimeoutNow before that is refused (a real transfer then times out, §3.10).
    Reference: dissertation §3.10"""
    st = MemoryStorage.bootstrap([1, 2, 3])
    st.set_hard_state(HardState(term=2, commit=3))
    r = new_core(2, storage=st, pre_vote=False)

    r.step(msg(MT.TIMEOUT_NOW, 1, 2, term=2))

    assert (r.role, r.term) == (Role.FOLLOWER, 2)
    assert r.refused == 1


# ----------------------------------------------------------------------
# APP, HEARTBEAT, SNAP: only the leader of our term; only members
# ----------------------------------------------------------------------
def test_append_at_our_term_only_from_its_leader() -> None:
    """There is at most one leader per term: once we follow the leader of our term,
    an append at that term from anyone else is refused, not applied.
    Reference: §5.2 (Election Safety), §5.3"""
    r = follower_of(lead=1)
    before = (r.log.last_index(), r.log.committed)

    r.step(forged_append(3, 2, 2, r))

    assert (r.log.last_index(), r.log.committed) == before
    assert (r.lead, r.refused) == (1, 1)
    assert read_messages(r) == []


def test_heartbeat_at_our_term_only_from_its_leader() -> None:
    """A heartbeat at our term from anyone but its leader is refused: it neither
    moves the commit index nor changes the leader we follow.
    Reference: §5.2, §5.3"""
    r = follower_of(lead=1)

    r.step(msg(MT.HEARTBEAT, 3, 2, term=2, commit=3))

    assert (r.lead, r.refused) == (1, 1)
    assert read_messages(r) == []


def test_snapshot_at_our_term_only_from_its_leader() -> None:
    """InstallSnapshot at our term from anyone but its leader is refused.
    Reference: §5.2, §7"""
    r = follower_of(lead=1)

    r.step(snapshot_message(3, 2, term=2, index=50))

    assert r.log.last_index() == 3
    assert (r.lead, r.refused) == (1, 1)


def test_append_from_a_non_member_refused() -> None:
    """While we follow a live leader, an append from a sender in none of our
    configurations is refused, even at a higher term: a forged one made a
    follower commit an entry nobody proposed.
    Reference: dissertation §4.1 (the configuration says who the servers are)"""
    r = follower_of(lead=1)
    before = (r.log.last_index(), r.log.committed)

    r.step(forged_append(9, 2, 5, r))

    assert (r.log.last_index(), r.log.committed) == before
    assert (r.term, r.lead, r.refused) == (2, 1, 1)
    assert read_messages(r) == []


@pytest.mark.parametrize("t", [MT.HEARTBEAT, MT.SNAP])
def test_heartbeat_or_snapshot_from_a_non_member_refused(t: MessageType) -> None:
    """Heartbeats and snapshots from a sender in none of our configurations are
    refused: they would change our term and our leader (and a snapshot, our state).
    Reference: dissertation §4.1, §7"""
    r = follower_of(lead=1)
    m = (
        msg(MT.HEARTBEAT, 9, 2, term=5, commit=3)
        if t is MT.HEARTBEAT
        else snapshot_message(9, 2, term=5, index=50)
    )

    r.step(m)

    assert (r.term, r.lead, r.log.last_index(), r.refused) == (2, 1, 3, 1)


@pytest.mark.parametrize("learner", [False, True])
def test_lagging_member_follows_a_new_leader_it_does_not_know(learner: bool) -> None:
    """A member cut off while a new node was added, promoted and elected lacks the
    entries that made it a member, and cannot tell it from a forged id. It refuses
    it while the leader it follows is alive (within an election timeout), then
    follows it, whether it campaigns meanwhile (a voter) or not (a learner).
    Regression: it refused the new leader for good (simulator seeds 7016229 and
    8014403, 3 nodes: never caught up).
    Reference: dissertation §4.1, §4.2.3"""
    st = MemoryStorage.bootstrap([1, 2, 3])
    if learner:
        cc = ConfChange(ConfChangeType.ADD_LEARNER, 2).encode()
        st.append([Entry(1, 4, EntryType.CONF_CHANGE, cc)])
    st.set_hard_state(HardState(term=2, commit=st.last_index()))
    r = new_core(2, storage=st, applied=st.last_index())
    r.step(msg(MT.HEARTBEAT, 1, 2, term=2, commit=st.last_index()))
    read_messages(r)
    beat = msg(MT.HEARTBEAT, 9, 2, term=5, commit=st.last_index())

    r.step(beat)
    assert (r.term, r.lead, r.refused) == (2, 1, 1)
    for _ in range(r.election_timeout):
        r.tick()
    read_messages(r)
    r.step(beat)

    assert (r.term, r.lead, r.refused) == (5, 9, 1)


def test_append_from_a_new_leader_of_a_higher_term_accepted() -> None:
    """A member of our configuration that leads a newer term is followed.
    Reference: §5.1"""
    r = follower_of(lead=1)

    r.step(msg(MT.APP, 3, 2, term=3, index=3, log_term=1, commit=3))

    assert (r.term, r.lead, r.refused) == (3, 3, 0)


def test_leader_removed_by_an_uncommitted_entry_is_followed() -> None:
    """A leader may lack an uncommitted change of ours that removed it; we follow it
    (and drop that entry): it is a member of a configuration we still know.
    Reference: dissertation §4.1"""
    r = follower_of(lead=1)
    cc = ConfChange(ConfChangeType.REMOVE_NODE, 3).encode()
    r.step(
        msg(
            MT.APP,
            1,
            2,
            term=2,
            index=3,
            log_term=1,
            entries=(Entry(2, 4, EntryType.CONF_CHANGE, cc),),
        )
    )
    assert r.conf.voters == {1, 2}

    r.step(msg(MT.APP, 3, 2, term=3, index=3, log_term=1, entries=(Entry(3, 4),), commit=3))

    assert (r.term, r.lead, r.refused) == (3, 3, 0)
    assert r.conf.voters == {1, 2, 3}


@pytest.mark.parametrize("founding_entries", [0, 1])
def test_joining_node_follows_a_leader_it_does_not_know_yet(founding_entries: int) -> None:
    """A node that joins starts empty and is not a member of its own configuration
    until the leader's entries (or snapshot) reach the one that added it; until
    then it follows whoever leads, as etcd-io/raft's node does (it cannot lead or
    count for anyone meanwhile). Regression: with one founding entry (voters {1})
    it refused leader 3, and never caught up (simulator seed 110, 3 nodes).
    Reference: dissertation §4.1, §4.2.1"""
    st = MemoryStorage()
    boot = MemoryStorage.bootstrap([1, 2, 3])
    ents = boot.entries(1, 4)
    st.append(ents[:founding_entries])
    r = new_core(4, storage=st)

    r.step(
        msg(
            MT.APP,
            3,
            4,
            term=2,
            index=founding_entries,
            log_term=1 if founding_entries else 0,
            entries=tuple(ents[founding_entries:]),
            commit=3,
        )
    )
    read_messages(r)

    assert (r.term, r.lead, r.refused) == (2, 3, 0)
    assert r.log.committed == 3
    assert r.conf.voters == {1, 2, 3}


# ----------------------------------------------------------------------
# READ_INDEX_RESP, READ_INDEX
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("frm", "term"), [(3, 2), (9, 2), (3, 5)])
def test_read_index_response_only_from_the_leader_we_follow(frm: int, term: int) -> None:
    """A read index is only as good as the leader that confirmed it: a response from
    anyone but the leader we follow, at our term, is refused (a forged low index
    would make a linearizable read return stale data).
    Reference: dissertation §6.4"""
    r = follower_of(lead=1)
    r.read_index(b"ctx")
    read_messages(r)

    r.step(msg(MT.READ_INDEX_RESP, frm, 2, term=term, index=1, context=b"ctx"))

    assert drain_read_states(r) == []
    assert r.refused == 1
    r.step(msg(MT.READ_INDEX_RESP, 1, 2, term=2, index=3, context=b"ctx"))
    assert drain_read_states(r) == [ReadState(3, b"ctx")]


def drain_read_states(r: RaftCore) -> list[ReadState]:
    out: list[ReadState] = []
    while r.has_ready():
        rd = r.ready()
        out.extend(rd.read_states)
        r.advance(rd)
    return out


def test_forwarded_read_from_a_non_member_refused() -> None:
    """The leader answers read-index requests from members only.
    Reference: dissertation §6.4"""
    r = leader()

    r.step(msg(MT.READ_INDEX, 9, 1, context=b"ctx"))

    assert [m for m in read_messages(r) if m.type is MT.HEARTBEAT and m.context] == []
    assert r.refused == 1


# ----------------------------------------------------------------------
# APP_RESP, HEARTBEAT_RESP
# ----------------------------------------------------------------------
@pytest.mark.parametrize("t", [MT.APP_RESP, MT.HEARTBEAT_RESP])
def test_response_from_a_non_member_does_not_depose_the_leader(t: MessageType) -> None:
    """The leader counts responses from members only; a response from a stranger,
    even at a higher term, is refused instead of deposing the leader.
    Reference: §5.1, dissertation §4.2.3"""
    r = leader()

    r.step(msg(t, 9, 1, term=7, index=1))

    assert (r.role, r.term, r.refused) == (Role.LEADER, 2, 1)


def test_acknowledgement_in_our_own_name_refused() -> None:
    """A peer cannot acknowledge entries in the leader's own name: the leader counts
    itself only once its own write is durable (the acknowledgement advance()
    steps back in), so a forged one could commit what a majority lacks.
    Reference: §5.3, §5.4.2 (durability before counting)"""
    r = leader()
    r.propose([b"x"])
    rd = r.ready()  # the proposal is not persisted yet
    last = r.log.last_index()

    r.step(msg(MT.APP_RESP, 1, 1, term=2, index=last, log_term=2))
    r.step(msg(MT.APP_RESP, 2, 1, term=2, index=last))

    assert r.log.committed < last
    assert r.refused == 1
    r.advance(rd)


# ----------------------------------------------------------------------
# Addressing
# ----------------------------------------------------------------------
def test_message_addressed_to_another_node_refused() -> None:
    """A message meant for another node is refused (it would otherwise be taken as
    ours: a heartbeat for node 3 delivered to node 2).
    Reference: §5 (each RPC has one sender and one receiver)"""
    r = follower_of(lead=1)

    r.step(msg(MT.HEARTBEAT, 1, 3, term=3, commit=3))

    assert (r.term, r.refused) == (2, 1)


# ----------------------------------------------------------------------
# VOTE, PRE_VOTE: from anyone
# ----------------------------------------------------------------------
@pytest.mark.parametrize("t", [MT.VOTE, MT.PRE_VOTE])
def test_vote_request_from_outside_our_configuration_is_answered(t: MessageType) -> None:
    """A candidate may know a newer configuration than ours in which we vote (a
    learner promoted by an entry we lack): vote requests are answered whoever
    sends them, as in etcd-io/raft (TestLearnerCanVote); a candidate counts only
    the votes of voters in its own configuration.
    Reference: dissertation §4.1, §4.2.1"""
    st = MemoryStorage.bootstrap([1, 2])
    r = new_core(3, storage=st, pre_vote=False)  # not even a member of {1, 2}

    r.step(msg(t, 9, 3, term=2, index=2, log_term=1))

    resp = MT.VOTE_RESP if t is MT.VOTE else MT.PRE_VOTE_RESP
    assert read_messages(r) == [Message(resp, 9, 3, 2)]
    assert r.refused == 0


# ----------------------------------------------------------------------
# Observability
# ----------------------------------------------------------------------
def test_refusal_is_counted_and_logged_in_a_fixed_line() -> None:
    """Every refusal adds one to ``refused`` (also in ``status()``) and logs one line
    ``<id> refused <TYPE> from <sender> at term <term>: <why>``."""
    log = Lines()
    st = MemoryStorage.bootstrap([1, 2, 3])
    r = RaftCore(Config(id=2, storage=st, logger=log), random.Random(0))

    r.step(msg(MT.HUP, 3, 2))
    r.step(msg(MT.TIMEOUT_NOW, 3, 2, term=1))
    r.step(msg(MT.HEARTBEAT, 1, 2, term=1, commit=3))
    r.step(msg(MT.APP, 9, 2, term=4))

    assert r.status().refused == 3
    assert [line for line in log.lines if " refused " in line] == [
        "2 refused HUP from 3 at term 0: a local message type",
        "2 refused TIMEOUT_NOW from 3 at term 1: not from the leader we follow",
        "2 refused APP from 9 at term 4: not a member, and we follow 1",
    ]
    assert r.lead == 1
    drain(r)
