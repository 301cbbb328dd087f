"""The log with its unstable tail, and the Ready / advance contract."""

from __future__ import annotations

import random

import pytest

from shardlite.replication.raft import (
    Config,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RaftCore,
    Role,
    SoftState,
)
from shardlite.replication.raft.log import RaftLog
from tests.raft.network import msg, new_core, read_messages, storage_of

MT = MessageType


def log_with(stable: list[int], unstable: list[int]) -> RaftLog:
    st = MemoryStorage()
    st.append([Entry(t, i) for i, t in enumerate(stable, start=1)])
    log = RaftLog(st)
    if unstable:
        log.append([Entry(t, i) for i, t in enumerate(unstable, start=len(stable) + 1)])
    return log


def test_unstable_tail_overwrites_storage_suffix() -> None:
    """A conflicting append truncates entries that are already stable; the log shows
    the new ones and the driver rewrites storage from there.
    Reference: §5.3"""
    log = log_with([1, 1, 1], [])

    log.append([Entry(2, 2)])

    assert [e.term for e in log.slice(1, log.last_index() + 1)] == [1, 2]
    assert log.unstable_entries() == [Entry(2, 2)]


def test_stable_to_ignores_overwritten_entries() -> None:
    """Persistence reported for an entry that was overwritten since (different term)
    does not drop the new entry from the unstable tail.
    Reference: §5.3"""
    log = log_with([], [1, 1])
    log.append([Entry(2, 2)])

    log.stable_to(2, 1)

    assert log.unstable_entries() == [Entry(1, 1), Entry(2, 2)]


def test_maybe_append_refuses_to_truncate_committed() -> None:
    """Committed entries are never overwritten; a conflicting append below the commit
    index is a safety violation and raises.
    Reference: §5.4"""
    log = log_with([1, 1, 1], [])
    log.commit_to(3)

    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, [Entry(2, 2)])


def test_find_conflict_by_term() -> None:
    """The backtracking helper returns the last index whose term is <= the given term.
    Reference: §5.3"""
    log = log_with([1, 1, 3, 3, 5], [])

    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 0) == (0, 0)
    assert log.find_conflict_by_term(9, 5) == (5, 5)


def test_slice_respects_size_but_returns_one() -> None:
    log = log_with([1, 1], [1])

    assert len(log.slice(1, 4, max_size=1)) == 1
    assert len(log.slice(1, 4, max_size=10_000)) == 3


# ----------------------------------------------------------------------
# Ready / advance
# ----------------------------------------------------------------------
def test_ready_once_until_advance() -> None:
    """Only one Ready may be outstanding: has_ready() is False until advance(), and a
    second ready() raises.
    Reference: the driver contract (STYLE.md item 2)"""
    r = new_core(1)
    r.campaign()
    rd = r.ready()

    assert not r.has_ready()
    with pytest.raises(RuntimeError):
        r.ready()
    r.advance(rd)
    with pytest.raises(RuntimeError):
        r.advance(rd)


def test_soft_and_hard_state_reported_on_change_only() -> None:
    r = new_core(1, pre_vote=False)
    r.campaign()

    rd = r.ready()
    assert rd.soft_state == SoftState(0, Role.CANDIDATE)
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.must_sync
    r.advance(rd)
    r.step(msg(MT.VOTE_RESP, 2, 1, 1))
    rd = r.ready()
    assert rd.soft_state == SoftState(1, Role.LEADER)
    assert rd.hard_state is None  # term and vote unchanged
    assert rd.entries  # the empty entry
    r.advance(rd)


def test_commit_only_change_needs_no_sync() -> None:
    """A hard state that only moves the commit index need not be fsynced
    (etcd's MustSync): losing it only delays learning the commit index."""
    r = new_core(2)
    r.step(msg(MT.APP, 1, 2, term=1, entries=(Entry(1, 1),)))
    read_messages(r)

    r.step(msg(MT.HEARTBEAT, 1, 2, term=1, commit=1))
    rd = r.ready()

    assert rd.hard_state == HardState(term=1, vote=0, commit=1)
    assert not rd.must_sync
    assert rd.messages == [Message(MT.HEARTBEAT_RESP, 1, 2, 1)]


def test_take_messages_while_ready_outstanding() -> None:
    """Immediate messages (the leader's appends) can be taken while a Ready is being
    persisted, so replication overlaps the leader's own disk write."""
    r = new_core(1, (1, 2, 3), pre_vote=False)
    r.campaign()
    read_messages(r)
    r.step(msg(MT.VOTE_RESP, 2, 1, 1))
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    r.propose([b"a"])
    rd = r.ready()
    r.propose([b"b"])

    sent = r.take_messages()

    assert [(m.type, m.to, [e.data for e in m.entries]) for m in sent] == [
        (MT.APP, 2, [b"b"]),
        (MT.APP, 3, [b"b"]),
    ]
    storage_of(r).append(rd.entries)
    r.advance(rd)
    assert r.ready().entries == [Entry(1, 3, data=b"b")]


def test_restart_from_storage_keeps_term_vote_commit() -> None:
    """A restarted node resumes from its persisted hard state and log; applied comes
    from the state machine (Config.applied)."""
    st = MemoryStorage.bootstrap([1, 2, 3])
    st.set_hard_state(HardState(term=4, vote=2, commit=3))

    r = new_core(1, storage=st, applied=2)

    assert (r.term, r.vote, r.log.committed, r.log.applied) == (4, 2, 3, 2)
    assert r.ready().committed_entries == st.entries(3, 4)
    assert r.conf == ConfState(frozenset({1, 2, 3}))


def test_status_reports_progress_on_leader() -> None:
    r = new_core(1, (1,))
    r.campaign()
    read_messages(r)

    s = r.status()

    assert (s.role, s.term, s.leader, s.commit, s.applied) == (Role.LEADER, 1, 1, 1, 1)
    assert s.voters == {1}
    assert s.progress[1].match == 1


def test_logger_lines_have_a_fixed_format() -> None:
    """The core logs through the injected logger, in fixed lines a test can assert."""
    lines: list[str] = []

    class Capture:
        def debug(self, m: str, *a: object) -> None:
            pass

        def info(self, m: str, *a: object) -> None:
            lines.append(m % a)

        def warning(self, m: str, *a: object) -> None:
            lines.append(m % a)

    r = RaftCore(
        Config(id=1, storage=MemoryStorage(ConfState(frozenset({1}))), logger=Capture()),
        random.Random(0),
    )
    r.campaign()
    read_messages(r)

    assert "1 became pre-candidate at term 0" in lines
    assert "1 became candidate at term 1" in lines
    assert "1 became leader at term 1" in lines
