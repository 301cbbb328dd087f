"""Pre-vote (dissertation §9.6), check-quorum and the leader lease (§4.2.3, §6.2),
and scenario tests of elections on the in-process network."""

from __future__ import annotations

from shardlite.replication.raft import NONE, Entry, HardState, Message, MessageType, Role
from tests.raft.network import Network, msg, new_core, new_storage, read_messages

MT = MessageType


def settle(net: Network, nid: int) -> None:
    """Make ``nid`` leader and let everyone learn it."""
    net.campaign(nid)
    assert net.core(nid).role is Role.LEADER


# ----------------------------------------------------------------------
# Pre-vote
# ----------------------------------------------------------------------
def test_pre_candidate_does_not_bump_term() -> None:
    """A pre-candidate asks for pre-votes for term + 1 without changing its own term
    or vote; nothing needs persisting.
    Reference: dissertation §9.6"""
    r = new_core(1)

    r.campaign()

    assert r.role is Role.PRE_CANDIDATE
    assert r.term == 0
    assert r.vote == NONE
    rd = r.ready()
    assert rd.hard_state is None
    assert rd.messages == [
        Message(MT.PRE_VOTE, 2, 1, 1),
        Message(MT.PRE_VOTE, 3, 1, 1),
    ]


def test_pre_vote_granted_then_real_election() -> None:
    """With a majority of pre-votes the node starts the real election, bumping its
    term; a pre-vote grant records no vote at the granter.
    Reference: dissertation §9.6"""
    net = Network()

    net.campaign(1)

    assert net.core(1).role is Role.LEADER
    assert net.core(1).term == 1
    sent = [(m.type, m.to) for m in net.delivered if m.type is not MT.HUP]
    assert sent[:2] == [(MT.PRE_VOTE, 2), (MT.PRE_VOTE, 3)]


def test_pre_vote_rejected_for_stale_log() -> None:
    """A server refuses a pre-vote to a candidate whose log is behind its own, just
    as it would refuse the vote (§5.4.1); the refusal carries its own term.
    Reference: dissertation §9.6"""
    st = new_storage((1, 2, 3))
    st.append([Entry(2, 1)])
    st.set_hard_state(HardState(term=2))
    r = new_core(1, storage=st)

    r.step(msg(MT.PRE_VOTE, 3, 1, term=3, log_term=1, index=5))

    assert read_messages(r) == [Message(MT.PRE_VOTE_RESP, 3, 1, 2, reject=True)]
    assert r.term == 2


def test_pre_vote_granted_keeps_term_and_vote() -> None:
    """A pre-vote grant is sent at the candidate's future term and changes neither
    the granter's term nor its vote.
    Reference: dissertation §9.6"""
    r = new_core(1)

    r.step(msg(MT.PRE_VOTE, 3, 1, term=1, log_term=0, index=0))

    assert read_messages(r) == [Message(MT.PRE_VOTE_RESP, 3, 1, 1)]
    assert (r.term, r.vote) == (0, NONE)


def test_partitioned_node_rejoins_without_disruption() -> None:
    """A node cut off from the cluster keeps timing out, but with pre-vote it never
    raises its term; when it rejoins, the leader keeps its leadership and term.
    Reference: dissertation §9.6"""
    net = Network()
    settle(net, 1)
    net.isolate(3)

    for _ in range(100):
        net.tick(3)
    net.recover()
    net.tick(1)

    assert net.core(3).term == 1
    assert net.core(1).role is Role.LEADER
    assert net.core(1).term == 1
    assert net.core(3).lead == 1


def test_without_pre_vote_a_rejoining_node_disrupts() -> None:
    """Without pre-vote, the same partition makes the isolated node's term climb,
    and its return deposes the leader (the problem §9.6 solves).
    Reference: dissertation §9.6"""
    net = Network(pre_vote=False, check_quorum=False)
    settle(net, 1)
    net.isolate(3)

    for _ in range(100):
        net.tick(3)
    net.recover()
    for _ in range(20):  # 3 times out again and asks for votes at its high term
        net.tick(3)

    assert net.core(3).term > 2
    assert net.core(1).role is Role.FOLLOWER
    assert net.core(1).term >= net.core(3).term - 1


def test_pre_candidate_steps_down_on_higher_term_rejection() -> None:
    """A pre-candidate that learns of a higher term from a rejection becomes follower
    at that term.
    Reference: §5.1, dissertation §9.6"""
    r = new_core(1)
    r.campaign()

    r.step(msg(MT.PRE_VOTE_RESP, 2, 1, term=5, reject=True))

    assert r.role is Role.FOLLOWER
    assert r.term == 5


def test_pre_vote_lost_returns_to_follower_same_term() -> None:
    """A pre-candidate rejected by a majority returns to follower without having
    changed its term.
    Reference: dissertation §9.6"""
    r = new_core(1)
    r.campaign()

    r.step(msg(MT.PRE_VOTE_RESP, 2, 1, term=0, reject=True))
    r.step(msg(MT.PRE_VOTE_RESP, 3, 1, term=0, reject=True))

    assert r.role is Role.FOLLOWER
    assert r.term == 0


def test_single_node_elects_itself() -> None:
    """A cluster of one elects itself at once; the leader commits its empty entry
    as soon as that entry is durable.
    Reference: §5.2"""
    net = Network([1])

    net.campaign(1)

    assert net.core(1).role is Role.LEADER
    assert net.core(1).log.committed == 1


# ----------------------------------------------------------------------
# Check-quorum and the leader lease
# ----------------------------------------------------------------------
def test_leader_steps_down_without_quorum() -> None:
    """With check-quorum, a leader that has not heard from a majority during an
    election timeout steps down, so clients stop waiting on it.
    Reference: dissertation §6.2"""
    net = Network(election_tick=10)
    settle(net, 1)
    net.isolate(1)

    for _ in range(10):
        net.tick(1)
    assert net.core(1).role is Role.LEADER  # the first check still sees the old marks
    for _ in range(10):
        net.tick(1)

    assert net.core(1).role is Role.FOLLOWER
    assert net.core(1).lead == NONE


def test_leader_stays_with_quorum() -> None:
    """A leader that keeps hearing from a majority stays leader.
    Reference: dissertation §6.2"""
    net = Network(election_tick=10)
    settle(net, 1)
    net.isolate(3)

    for _ in range(50):
        net.tick(1)

    assert net.core(1).role is Role.LEADER


def test_vote_ignored_within_lease() -> None:
    """A server that heard from a leader within the minimum election timeout
    neither updates its term nor grants a vote: a removed or partitioned server
    cannot depose a healthy leader.
    Reference: dissertation §4.2.3"""
    r = new_core(2)
    r.step(msg(MT.HEARTBEAT, 1, 2, term=1))
    read_messages(r)

    r.step(msg(MT.VOTE, 3, 2, term=2, log_term=5, index=5))

    assert r.term == 1
    assert read_messages(r) == []


def test_vote_granted_after_lease_expires() -> None:
    """After an election timeout without hearing from the leader, votes are
    considered again.
    Reference: dissertation §4.2.3"""
    r = new_core(2, election_tick=10)
    r.step(msg(MT.HEARTBEAT, 1, 2, term=1))
    read_messages(r)
    r.election_elapsed = 10  # as if 10 ticks passed without a leader's message

    r.step(msg(MT.VOTE, 3, 2, term=2, log_term=5, index=5))

    assert r.term == 2
    assert read_messages(r) == [Message(MT.VOTE_RESP, 3, 2, 2)]


def test_stuck_candidate_freed_by_check_quorum() -> None:
    """A node that raised its term while cut off (no pre-vote) cannot win; the
    leader's appends at a lower term are answered with its higher term, which
    makes the leader step down so a new election can include it.
    Reference: §5.1, dissertation §6.2"""
    net = Network(pre_vote=False)
    settle(net, 1)
    net.isolate(3)
    for _ in range(30):
        net.tick(3)
    assert net.core(3).role is Role.CANDIDATE
    stuck_term = net.core(3).term
    net.recover()

    net.tick(1)  # heartbeat to 3 at the old term -> answered with 3's term

    assert net.core(1).role is Role.FOLLOWER
    assert net.core(1).term == stuck_term


def test_dueling_candidates() -> None:
    """Two candidates in the same term split the vote; the one with the less
    up-to-date log cannot win later, the other does.
    Reference: §5.2, §5.4.1"""
    net = Network(pre_vote=False, check_quorum=False)
    net.cut(1, 3)
    net.campaign(1)
    net.campaign(3)
    assert net.core(1).role is Role.LEADER  # 2 voted for 1
    assert net.core(3).role is Role.CANDIDATE  # 2 already voted in term 1
    net.recover()

    # 3 campaigns again at term 2, but its log is behind 1's (the empty entry).
    net.campaign(3)

    assert net.core(3).role is Role.FOLLOWER
    assert net.core(3).term == 2
    assert net.core(1).role is Role.FOLLOWER  # deposed by the higher term


def test_candidate_concede() -> None:
    """A candidate that hears from the elected leader of its term concedes and
    follows; the cluster converges on one log.
    Reference: §5.2"""
    net = Network(pre_vote=False, check_quorum=False)
    net.isolate(1)
    net.campaign(1)
    net.campaign(3)
    net.recover()
    net.tick(3)  # leader 3 heartbeats
    net.propose(3, b"force")

    assert net.core(1).role is Role.FOLLOWER
    assert net.core(1).term == net.core(3).term
    want = net.core(3).log.slice(1, 3)
    assert [e.data for e in want] == [b"", b"force"]
    for nid in (1, 2):
        assert net.core(nid).log.slice(1, net.core(nid).log.last_index() + 1) == want
