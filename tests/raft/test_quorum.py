"""Property tests for the pure pieces: quorum arithmetic and membership changes,
each compared with a second, brute-force route to the same answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shardlite.replication.raft import ConfChange, ConfChangeType, ConfState
from shardlite.replication.raft.progress import Inflights
from shardlite.replication.raft.quorum import VoteResult, committed_index, majority, vote_result

ids = st.integers(min_value=1, max_value=9)
voter_sets = st.frozensets(ids, min_size=1, max_size=7)


@st.composite
def voters_and_matches(draw: st.DrawFn) -> tuple[frozenset[int], dict[int, int]]:
    voters = draw(voter_sets)
    # Matches for some voters and some non-voters.
    match = draw(st.dictionaries(ids, st.integers(min_value=0, max_value=20)))
    return voters, match


@given(voters_and_matches())
def test_committed_index_is_largest_index_on_a_majority(
    vm: tuple[frozenset[int], dict[int, int]],
) -> None:
    """committed_index is the largest i that at least a majority of voters hold
    (brute force over every candidate index). Reference: §5.3"""
    voters, match = vm
    got = committed_index(voters, match)
    want = max(
        (
            i
            for i in range(0, 21)
            if sum(1 for v in voters if match.get(v, 0) >= i) >= majority(len(voters))
        ),
        default=0,
    )
    assert got == want


@given(voters_and_matches())
def test_committed_index_ignores_non_voters(vm: tuple[frozenset[int], dict[int, int]]) -> None:
    """Learners and strangers never move the commit index. Reference: dissertation §4.2.1"""
    voters, match = vm
    only_voters = {k: v for k, v in match.items() if k in voters}
    assert committed_index(voters, match) == committed_index(voters, only_voters)


@given(voter_sets, st.dictionaries(ids, st.booleans()))
def test_vote_result_matches_counting(voters: frozenset[int], votes: dict[int, bool]) -> None:
    """WON iff yes >= majority; LOST iff yes plus the missing can no longer reach a
    majority; PENDING otherwise. Reference: §5.2"""
    yes = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    q = majority(len(voters))
    want = (
        VoteResult.WON
        if yes >= q
        else VoteResult.PENDING
        if yes + missing >= q
        else VoteResult.LOST
    )
    assert vote_result(voters, votes) is want


@given(voter_sets, st.dictionaries(ids, st.booleans()))
def test_two_majorities_always_intersect(voters: frozenset[int], votes: dict[int, bool]) -> None:
    """If a set of voters wins, its complement cannot also win: any two majorities
    share a member (the reason for election safety). Reference: §5.2"""
    yes = {v: True for v, b in votes.items() if b}
    complement = {v: True for v in voters if v not in yes}
    assert not (
        vote_result(voters, yes) is VoteResult.WON
        and vote_result(voters, complement) is VoteResult.WON
    )


changes = st.builds(ConfChange, st.sampled_from(list(ConfChangeType)), ids)


@given(voter_sets, st.frozensets(ids, max_size=4), changes)
def test_single_server_change_keeps_majorities_overlapping(
    voters: frozenset[int], learners: frozenset[int], cc: ConfChange
) -> None:
    """After one single-server change, any majority of the old voters and any
    majority of the new voters intersect: no two leaders can be elected in one term
    across the change. Checked by brute force over all subsets.
    Reference: dissertation §4.1"""
    learners = learners - voters
    old = ConfState(voters, learners)
    new = cc.apply(old)
    assert not (new.voters & new.learners)
    assert len(new.voters ^ old.voters) <= 1
    if not new.voters:
        return
    import itertools

    def majorities(vs: frozenset[int]) -> list[frozenset[int]]:
        q = majority(len(vs))
        return [frozenset(c) for c in itertools.combinations(sorted(vs), q)]

    for a in majorities(old.voters):
        for b in majorities(new.voters):
            assert a & b


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 100)), max_size=30))
def test_inflights_bytes_and_count(sends: list[tuple[int, int]]) -> None:
    """The in-flight window's byte and count totals always equal the sum over the
    appends still tracked. Reference: §5.3 (flow control)"""
    infl = Inflights(max_count=1000)
    index, tracked = 0, []
    for step, size in sends:
        index += step
        infl.add(index, size)
        tracked.append((index, size))
        if size % 3 == 0:
            cut = index - step
            infl.free_le(cut)
            tracked = [(i, s) for i, s in tracked if i > cut]
        assert len(infl) == len(tracked)
        assert infl.bytes == sum(s for _, s in tracked)
