"""Majority arithmetic, pure functions (etcd's quorum package, single configs only)."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = "pending"  # neither won nor lost yet
    LOST = "lost"
    WON = "won"


def majority(n: int) -> int:
    """Votes needed among ``n`` voters (§5.2)."""
    return n // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` have in their logs (§5.3, §5.4.2):
    the ``majority``-th highest match index. Voters without a known match count as 0.
    With no voters, nothing can be committed and the result is 0."""
    n = len(voters)
    if n == 0:
        return 0
    srt = sorted((match.get(v, 0) for v in voters), reverse=True)
    return srt[majority(n) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON when a majority of ``voters`` said yes, LOST when a majority can no longer say
    yes, PENDING otherwise. Votes from non-voters are ignored. No voters: WON (the empty
    configuration is vacuously satisfied), as in etcd."""
    n = len(voters)
    if n == 0:
        return VoteResult.WON
    yes = no = 0
    for v in voters:
        r = votes.get(v)
        if r is True:
            yes += 1
        elif r is False:
            no += 1
    q = majority(n)
    if yes >= q:
        return VoteResult.WON
    if yes + (n - yes - no) >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
