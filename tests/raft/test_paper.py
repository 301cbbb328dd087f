"""One test per rule of the Raft paper, in the manner of etcd-io/raft's
raft_paper_test.go. Each docstring paraphrases the rule and cites its section;
each body arranges a node, acts, and checks the exact messages it sends.

Unless a test says otherwise, nodes run with pre-vote and check-quorum off, so
that the rules of the paper itself are visible.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from shardlite.replication.raft import (
    NONE,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftCore,
    Role,
)
from tests.raft.network import Network, msg, new_core, new_storage, read_messages, storage_of

MT = MessageType
PLAIN: dict[str, Any] = {"pre_vote": False, "check_quorum": False}


def plain(nid: int, voters=(1, 2, 3), **kw) -> RaftCore:
    return new_core(nid, voters, **{**PLAIN, **kw})


def with_log(nid: int, terms: list[int], voters=(1, 2, 3), term: int | None = None, **kw):
    """A node whose log holds one entry per item of ``terms`` (their terms)."""
    st = new_storage(voters)
    st.append([Entry(t, i) for i, t in enumerate(terms, start=1)])
    if term is not None:
        st.set_hard_state(HardState(term=term))
    return plain(nid, voters, storage=st, **kw)


def elect(core: RaftCore) -> list[Message]:
    """Make ``core`` leader of its 3-node cluster at term + 1; returns what it sent."""
    core.campaign()
    read_messages(core)
    for v in sorted(core.conf.voters - {core.id}):
        core.step(msg(MT.VOTE_RESP, v, core.id, core.term))
    assert core.role is Role.LEADER
    return read_messages(core)


def types_to(msgs: list[Message]) -> list[tuple[MessageType, int]]:
    return [(m.type, m.to) for m in msgs]


# ----------------------------------------------------------------------
# §5.1 Terms
# ----------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_update_term_from_message(role: Role) -> None:
    """A server that sees a larger term in any message updates its current term; a
    candidate or leader that does so reverts to follower.
    Reference: §5.1"""
    r = plain(1)
    if role is Role.CANDIDATE:
        r.campaign()
    elif role is Role.LEADER:
        elect(r)

    r.step(msg(MT.APP, 2, 1, term=5))

    assert r.term == 5
    assert r.role is Role.FOLLOWER
    assert r.lead == 2


def test_reject_stale_term_message() -> None:
    """A server that receives a request with a stale term number ignores it.
    Reference: §5.1"""
    r = plain(1)
    r.step(msg(MT.APP, 2, 1, term=3))
    read_messages(r)

    r.step(msg(MT.APP, 3, 1, term=2, index=0, log_term=0))

    assert read_messages(r) == []
    assert r.term == 3
    assert r.lead == 2


def test_stale_leader_is_told_the_new_term() -> None:
    """With check-quorum or pre-vote, a follower answers an append from a stale
    leader with its own term, so the stale leader steps down instead of being
    ignored forever (etcd's rule, needed because pre-vote may leave terms apart).
    Reference: §5.1, §9.6"""
    r = new_core(1)
    r.step(msg(MT.APP, 2, 1, term=3))
    read_messages(r)

    r.step(msg(MT.HEARTBEAT, 3, 1, term=2))

    assert read_messages(r) == [Message(MT.APP_RESP, 3, 1, 3)]


# ----------------------------------------------------------------------
# §5.2 Leader election
# ----------------------------------------------------------------------
def test_start_as_follower() -> None:
    """When servers start up, they begin as followers.
    Reference: §5.2"""
    r = plain(1)
    assert r.role is Role.FOLLOWER
    assert r.term == 0
    assert r.lead == NONE


def test_leader_bcast_beat() -> None:
    """A leader sends periodic heartbeats (empty AppendEntries) to all followers
    to maintain its authority.
    Reference: §5.2"""
    r = plain(1, heartbeat_tick=1)
    elect(r)
    r.propose([b"a"])
    read_messages(r)

    r.tick()

    assert read_messages(r) == [
        Message(MT.HEARTBEAT, 2, 1, 1, commit=0),
        Message(MT.HEARTBEAT, 3, 1, 1, commit=0),
    ]


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE])
def test_nonleader_start_election(role: Role) -> None:
    """A follower (or candidate) that hears nothing for an election timeout starts
    an election: it increments its term, becomes candidate, votes for itself and
    sends RequestVote to every other server.
    Reference: §5.2"""
    r = plain(1, election_tick=10)
    if role is Role.CANDIDATE:
        r.campaign()
        read_messages(r)
    term = r.term

    for _ in range(2 * 10):
        r.tick()

    assert r.term == term + 1
    assert r.role is Role.CANDIDATE
    assert r.vote == 1
    assert read_messages(r) == [
        Message(MT.VOTE, 2, 1, term + 1, log_term=0, index=0),
        Message(MT.VOTE, 3, 1, term + 1, log_term=0, index=0),
    ]


@pytest.mark.parametrize(
    ("size", "votes", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True}, Role.LEADER),
        (5, {2: True, 3: True}, Role.LEADER),
        (3, {2: False, 3: False}, Role.FOLLOWER),
        (5, {2: False, 3: False, 4: False}, Role.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        (3, {}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: False, 3: False}, Role.CANDIDATE),
    ],
)
def test_leader_election_in_one_round_rpc(size: int, votes: dict[int, bool], role: Role) -> None:
    """A candidate wins if it receives votes from a majority of the servers in the
    same term; it loses (and reverts to follower) once a majority rejected it; it
    stays candidate otherwise.
    Reference: §5.2"""
    r = plain(1, range(1, size + 1))
    r.campaign()
    read_messages(r)  # our own vote counts once durable

    for frm, granted in votes.items():
        r.step(msg(MT.VOTE_RESP, frm, 1, r.term, reject=not granted))

    assert r.role is role
    assert r.term == 1


@pytest.mark.parametrize(
    ("vote", "nvote", "reject"),
    [(NONE, 2, False), (NONE, 3, False), (2, 2, False), (3, 3, False), (2, 3, True), (3, 2, True)],
)
def test_follower_vote(vote: int, nvote: int, reject: bool) -> None:
    """Each server votes for at most one candidate in a given term, first come
    first served.
    Reference: §5.2"""
    st = new_storage((1, 2, 3))
    st.set_hard_state(HardState(term=1, vote=vote))
    r = plain(1, storage=st)

    r.step(msg(MT.VOTE, nvote, 1, term=1))

    assert read_messages(r) == [Message(MT.VOTE_RESP, nvote, 1, 1, reject=reject)]


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_fallback(term: int) -> None:
    """A candidate that receives AppendEntries from a leader whose term is at least
    its own recognizes the leader and returns to follower.
    Reference: §5.2"""
    r = plain(1)
    r.campaign()
    assert r.role is Role.CANDIDATE

    r.step(msg(MT.APP, 2, 1, term=term))

    assert r.status().role is Role.FOLLOWER
    assert r.term == term
    assert r.lead == 2


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE])
def test_election_timeout_randomized(role: Role) -> None:
    """Election timeouts are chosen randomly from a fixed interval
    [election_timeout, 2 * election_timeout).
    Reference: §5.2"""
    et = 10
    seen = set()
    for seed in range(200):
        r = plain(1, election_tick=et, seed=seed)
        if role is Role.CANDIDATE:
            r.campaign()
        term = r.term
        ticks = 0
        while r.term == term:
            r.tick()
            ticks += 1
            assert ticks < 2 * et
        seen.add(ticks)
    assert seen == set(range(et, 2 * et))


def test_election_timeouts_rarely_conflict() -> None:
    """Randomized timeouts make split votes rare: in most cases only one server
    times out first.
    Reference: §5.2"""
    et, conflicts, runs = 10, 0, 500
    rng = random.Random(1)
    for _ in range(runs):
        a = new_core(1, election_tick=et, pre_vote=False, seed=rng.randrange(1 << 30))
        b = new_core(2, election_tick=et, pre_vote=False, seed=rng.randrange(1 << 30))
        for _ in range(2 * et):
            a.tick()
            b.tick()
            if a.role is Role.CANDIDATE or b.role is Role.CANDIDATE:
                break
        if a.role is Role.CANDIDATE and b.role is Role.CANDIDATE:
            conflicts += 1
    assert conflicts / runs <= 0.15


# ----------------------------------------------------------------------
# §5.3 Log replication
# ----------------------------------------------------------------------
def test_leader_start_replication() -> None:
    """The leader appends a client command to its log as a new entry, then sends
    AppendEntries with it to every follower.
    Reference: §5.3"""
    r = plain(1)
    elect(r)
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)

    p = r.propose([b"some data"])

    want = (Entry(1, 2, EntryType.NORMAL, b"some data"),)
    assert (p.term, p.first_index, p.last_index) == (1, 2, 2)
    assert r.log.last_index() == 2
    assert read_messages(r) == [
        Message(MT.APP, 2, 1, 1, log_term=1, index=1, entries=want, commit=1),
        Message(MT.APP, 3, 1, 1, log_term=1, index=1, entries=want, commit=1),
    ]


def test_leader_commit_entry() -> None:
    """When an entry is safely replicated on a majority (the leader counting itself
    once its copy is durable) the leader commits it, applies it, and tells the
    followers in later AppendEntries.
    Reference: §5.3"""
    r = plain(1)
    elect(r)
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    r.propose([b"some data"])
    read_messages(r)  # persists our copy: we count ourselves

    r.step(msg(MT.APP_RESP, 2, 1, 1, index=2))

    assert r.log.committed == 2
    assert read_messages(r) == [
        Message(MT.APP, 2, 1, 1, log_term=1, index=2, commit=2),
        Message(MT.APP, 3, 1, 1, log_term=1, index=2, commit=2),
    ]


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, set(), False),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_leader_acknowledge_commit(size: int, acks: set[int], committed: bool) -> None:
    """A log entry is committed once the leader that created it has replicated it
    on a majority of the servers.
    Reference: §5.3"""
    voters = range(1, size + 1)
    r = plain(1, voters)
    r.campaign()
    read_messages(r)
    for v in voters:
        if v != 1:
            r.step(msg(MT.VOTE_RESP, v, 1, 1))
    read_messages(r)
    for v in voters:
        if v != 1:
            r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    p = r.propose([b"x"])
    read_messages(r)

    for v in acks:
        r.step(msg(MT.APP_RESP, v, 1, 1, index=p.last_index))

    assert (r.log.committed >= p.last_index) is committed


@pytest.mark.parametrize("prev", [[], [2], [1, 1], [1, 2]], ids=["empty", "t2", "t1t1", "t1t2"])
def test_leader_commit_preceding_entries(prev: list[int]) -> None:
    """Committing an entry of the current term also commits every preceding entry,
    including those created by earlier leaders.
    Reference: §5.3"""
    r = with_log(1, prev, term=2)
    r.campaign()
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.VOTE_RESP, v, 1, 3))
    read_messages(r)
    p = r.propose([b"some data"])
    read_messages(r)

    r.step(msg(MT.APP_RESP, 2, 1, 3, index=p.last_index))

    assert r.log.committed == p.last_index
    got = r.log.slice(1, p.last_index + 1)
    assert [e.term for e in got] == [*prev, 3, 3]
    assert [e.type for e in got][-2:] == [EntryType.EMPTY, EntryType.NORMAL]


@pytest.mark.parametrize(
    ("ents", "commit"),
    [
        ([Entry(1, 1, data=b"a")], 1),
        ([Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")], 2),
        ([Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")], 1),
    ],
)
def test_follower_commit_entry(ents: list[Entry], commit: int) -> None:
    """Once a follower learns that a log entry is committed, it applies the entry
    to its state machine (in log order).
    Reference: §5.3"""
    r = plain(1)
    r.step(msg(MT.APP, 2, 1, term=1, index=0, log_term=0, entries=tuple(ents), commit=commit))

    assert r.log.committed == commit
    rd = r.ready()
    assert rd.committed_entries == ents[:commit]
    assert rd.persisted_messages == [Message(MT.APP_RESP, 2, 1, 1, index=len(ents))]


@pytest.mark.parametrize(
    ("log_term", "index", "want"),
    [
        # Below our commit index: we answer with the commit index.
        (0, 0, Message(MT.APP_RESP, 2, 1, 2, index=1)),
        # Matches: accepted.
        (1, 1, Message(MT.APP_RESP, 2, 1, 2, index=1)),
        (2, 2, Message(MT.APP_RESP, 2, 1, 2, index=2)),
        # Term mismatch at 2: our first index with term <= 1 is 1.
        (1, 2, Message(MT.APP_RESP, 2, 1, 2, index=2, reject=True, reject_hint=1, log_term=1)),
        # Beyond our log: hint our last entry.
        (3, 3, Message(MT.APP_RESP, 2, 1, 2, index=3, reject=True, reject_hint=2, log_term=2)),
    ],
)
def test_follower_check_msg_app(log_term: int, index: int, want: Message) -> None:
    """If the follower does not find an entry with the same index and term as the
    one preceding the new entries, it refuses them; the refusal carries a hint
    where the logs may agree (fast backtracking).
    Reference: §5.3"""
    r = with_log(1, [1, 2], term=2)
    r.log.commit_to(1)

    r.step(msg(MT.APP, 2, 1, term=2, log_term=log_term, index=index, commit=1))

    assert read_messages(r) == [want]


@pytest.mark.parametrize(
    ("index", "term", "ents", "want_terms", "want_unstable"),
    [
        (2, 2, [Entry(3, 3)], [1, 2, 3], [3]),
        (1, 1, [Entry(3, 2), Entry(4, 3)], [1, 3, 4], [3, 4]),
        (0, 0, [Entry(1, 1)], [1, 2], []),
        (0, 0, [Entry(3, 1)], [3], [3]),
    ],
)
def test_follower_append_entries(
    index: int, term: int, ents: list[Entry], want_terms: list[int], want_unstable: list[int]
) -> None:
    """If an existing entry conflicts with a new one (same index, different term),
    the follower deletes it and all that follow; it then appends any new entries
    not already in its log.
    Reference: §5.3"""
    r = with_log(1, [1, 2], term=1)

    r.step(msg(MT.APP, 2, 1, term=2, log_term=term, index=index, entries=tuple(ents)))

    assert [e.term for e in r.log.slice(1, r.log.last_index() + 1)] == want_terms
    assert [e.term for e in r.log.unstable_entries()] == want_unstable


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_leader_sync_follower_log(case: str) -> None:
    """The leader handles inconsistencies by forcing the followers' logs to
    duplicate its own: every follower of Figure 7 ends up with the leader's log.
    Reference: §5.3"""
    lead = with_log(1, FIG7_LEADER, term=8)
    follower = with_log(2, FIG7_FOLLOWERS[case], term=7)
    # A third voter with the leader's log lets the leader win term 9.
    third = with_log(3, FIG7_LEADER, term=7)
    net = Network(cores={1: lead, 2: follower, 3: third}, **PLAIN)
    net.isolate(2)
    net.campaign(1)
    net.recover()
    assert lead.role is Role.LEADER

    net.propose(1, b"after")
    net.tick(1)  # a heartbeat round un-pauses the probe of the follower

    want = lead.log.slice(1, lead.log.last_index() + 1)
    assert follower.log.slice(1, follower.log.last_index() + 1) == want
    assert follower.log.committed == lead.log.committed == len(want)


# ----------------------------------------------------------------------
# §5.4.1 Election restriction
# ----------------------------------------------------------------------
def test_vote_request() -> None:
    """A RequestVote carries the candidate's last log index and last log term.
    Reference: §5.4.1"""
    r = with_log(1, [1, 2], term=2)

    r.campaign()

    assert read_messages(r) == [
        Message(MT.VOTE, 2, 1, 3, log_term=2, index=2),
        Message(MT.VOTE, 3, 1, 3, log_term=2, index=2),
    ]


@pytest.mark.parametrize(
    ("log", "log_term", "index", "reject"),
    [
        # same last term
        ([1], 1, 1, False),
        ([1], 1, 2, False),
        ([1, 1], 1, 1, True),
        # candidate has the higher last term
        ([1], 2, 1, False),
        ([1], 2, 2, False),
        ([1, 1], 2, 1, False),
        # voter has the higher last term
        ([2], 1, 1, True),
        ([2], 1, 2, True),
        ([2, 1], 1, 1, True),
    ],
)
def test_voter(log: list[int], log_term: int, index: int, reject: bool) -> None:
    """A voter denies its vote if its own log is more up-to-date than the
    candidate's: a higher last term, or the same last term and a longer log.
    Reference: §5.4.1"""
    r = with_log(1, log)

    r.step(msg(MT.VOTE, 2, 1, term=3, log_term=log_term, index=index))

    assert read_messages(r) == [Message(MT.VOTE_RESP, 2, 1, 3, reject=reject)]


# ----------------------------------------------------------------------
# §5.4.2 Committing entries from previous terms
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("index", "committed"), [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_log_from_current_term(index: int, committed: int) -> None:
    """Only entries of the leader's current term are committed by counting
    replicas; earlier entries commit only indirectly, with a current-term one
    (Figure 8: index 2 of term 2 on a majority is still not committed by the
    leader of term 3).
    Reference: §5.4.2"""
    r = with_log(1, [1, 2], term=2)
    r.campaign()
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.VOTE_RESP, v, 1, 3))
    read_messages(r)  # appends and persists the empty entry of term 3 at index 3

    r.step(msg(MT.APP_RESP, 2, 1, 3, index=index))

    assert r.log.committed == committed


def test_cannot_commit_without_new_term_entry() -> None:
    """A new leader does not commit entries of earlier terms by counting replicas;
    they commit once an entry of its own term (its empty entry, then a client's)
    reaches a majority.
    Reference: §5.4.2"""
    net = Network((1, 2, 3, 4, 5), **PLAIN)
    net.campaign(1)
    # Leader 1 (term 1) writes two entries that only node 2 receives.
    for other in (3, 4, 5):
        net.cut(1, other)
    net.propose(1, b"some data")
    net.propose(1, b"some data")
    assert net.core(1).log.committed == 1
    net.recover()
    # Node 2 wins term 2 but cannot replicate: nothing beyond 1 may commit.
    net.ignore(MT.APP)
    net.campaign(2)
    assert net.core(2).role is Role.LEADER
    assert net.core(2).log.committed == 1

    net.recover()
    net.tick(2)  # a heartbeat round restarts replication
    net.propose(2, b"some data")

    for nid in (1, 2, 3, 4, 5):
        assert net.core(nid).log.committed == 5, nid
    assert [e.term for e in net.core(3).log.slice(1, 6)] == [1, 1, 1, 2, 2]


def test_new_leader_appends_empty_entry() -> None:
    """A new leader appends an empty entry of its own term at once, so that it can
    commit (and learn the commit index) without waiting for a client.
    Reference: §5.4.2, §8"""
    r = with_log(1, [1, 1], term=1)

    elect_msgs = elect(r)

    assert r.log.last_index() == 3
    assert r.log.slice(3, 4) == [Entry(2, 3, EntryType.EMPTY)]
    assert elect_msgs == [
        Message(MT.APP, 2, 1, 2, log_term=1, index=2, entries=(Entry(2, 3, EntryType.EMPTY),)),
        Message(MT.APP, 3, 1, 2, log_term=1, index=2, entries=(Entry(2, 3, EntryType.EMPTY),)),
    ]


# ----------------------------------------------------------------------
# Durability: what must be on disk before a message leaves
# ----------------------------------------------------------------------
def test_follower_acknowledges_only_after_persisting() -> None:
    """A follower's AppendEntries response promises the entries are on stable
    storage: it is released only with the Ready that persists them.
    Reference: §5.3 (Figure 2: "persistent state ... updated on stable storage
    before responding to RPCs")"""
    r = plain(1)
    r.step(msg(MT.APP, 2, 1, term=1, entries=(Entry(1, 1, data=b"x"),)))

    rd = r.ready()

    assert rd.messages == []
    assert rd.entries == [Entry(1, 1, data=b"x")]
    assert rd.must_sync
    assert rd.persisted_messages == [Message(MT.APP_RESP, 2, 1, 1, index=1)]


def test_vote_is_durable_before_it_is_sent() -> None:
    """A vote must be on stable storage before the candidate hears of it.
    Reference: §5.2 (Figure 2)"""
    r = plain(1)
    r.step(msg(MT.VOTE, 2, 1, term=1))

    rd = r.ready()

    assert rd.hard_state == HardState(term=1, vote=2, commit=0)
    assert rd.must_sync
    assert rd.messages == []
    assert rd.persisted_messages == [Message(MT.VOTE_RESP, 2, 1, 1)]


def test_leader_sends_before_persisting_but_counts_itself_after() -> None:
    """The leader may send its new entries to followers before its own disk write
    completes, but it counts itself towards the commit quorum only once its copy is
    durable (dissertation §10.2.1).
    Reference: §5.3"""
    r = plain(1)
    elect(r)
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    r.propose([b"x"])
    rd = r.ready()
    assert [m.type for m in rd.messages] == [MT.APP, MT.APP]

    r.step(msg(MT.APP_RESP, 2, 1, 1, index=2))
    assert r.log.committed == 1  # follower 2 alone is not a majority

    storage_of(r).append(rd.entries)
    r.advance(rd)  # our copy is durable now
    assert r.log.committed == 2


def test_candidate_counts_own_vote_only_when_durable() -> None:
    """A candidate's vote for itself counts once its new term and vote are on disk.
    Reference: §5.2"""
    r = plain(1)
    r.campaign()
    r.step(msg(MT.VOTE_RESP, 2, 1, 1))
    assert r.role is Role.CANDIDATE

    rd = r.ready()
    r.advance(rd)

    assert r.status().role is Role.LEADER


def test_follower_rejects_proposals_with_leader_hint() -> None:
    """Only the leader handles client requests; a follower redirects them to the
    leader it knows.
    Reference: §5.1, §8"""
    r = plain(1)
    r.step(msg(MT.APP, 2, 1, term=1))

    with pytest.raises(ProposalDroppedError) as exc:
        r.propose([b"x"])

    assert exc.value.leader_hint == 2
    assert r.log.last_index() == 0


def test_rejecting_a_vote_does_not_reset_election_timer() -> None:
    """A follower restarts its election timer only when it hears from the leader or
    grants a vote. A candidate with a stale log raises the follower's term but does
    not hold back its election (regression: simulator seed 213, 5 nodes, where two
    stale nodes kept out-campaigning the only node that could win).
    Reference: §5.2 (Figure 2, Rules for Servers: Followers)"""
    r = with_log(1, [1, 1], term=1, election_tick=10)
    for _ in range(7):
        r.tick()

    r.step(msg(MT.VOTE, 2, 1, term=2, log_term=1, index=1))

    assert read_messages(r) == [Message(MT.VOTE_RESP, 2, 1, 2, reject=True)]
    assert r.term == 2
    assert r.election_elapsed == 7


def test_granting_a_vote_resets_election_timer() -> None:
    """Granting a vote restarts the election timer.
    Reference: §5.2 (Figure 2, Rules for Servers: Followers)"""
    r = plain(1, election_tick=10)
    for _ in range(7):
        r.tick()

    r.step(msg(MT.VOTE, 2, 1, term=2, log_term=0, index=0))

    assert read_messages(r) == [Message(MT.VOTE_RESP, 2, 1, 2)]
    assert r.election_elapsed == 0


def test_vote_request_with_stale_term_rejected_with_current_term() -> None:
    """A server rejects a vote request from an older term, and its reply carries its
    current term so that the candidate updates itself. (Ignored instead, a
    candidate that was the only one able to win stayed a term behind the servers
    that kept raising it but never asked it: simulator seed 7019575, 3 nodes.)
    Reference: §5.1, §5.2 (Figure 2, RequestVote RPC)"""
    r = with_log(1, [1], term=5)

    r.step(msg(MT.VOTE, 2, 1, term=3, log_term=1, index=1))

    assert read_messages(r) == [Message(MT.VOTE_RESP, 2, 1, 5, reject=True)]
    assert (r.term, r.vote) == (5, NONE)


def test_candidate_adopts_term_from_stale_vote_rejection() -> None:
    """A candidate that learns a higher term from a vote rejection becomes a
    follower of that term, and campaigns next at a term above it.
    Reference: §5.1"""
    r = plain(1)
    r.campaign()
    read_messages(r)

    r.step(msg(MT.VOTE_RESP, 2, 1, term=7, reject=True))
    assert (r.role, r.term) == (Role.FOLLOWER, 7)
    r.campaign()

    assert {(m.type, m.term) for m in read_messages(r)} == {(MT.VOTE, 8)}
