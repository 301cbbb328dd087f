"""Log replication mechanics beyond the paper's rules: pipelining and flow
control, batching, fast backtracking, probing, and snapshots (§7)."""

from __future__ import annotations

from shardlite.replication.raft import (
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.raft.network import Network, msg, new_core, new_storage, read_messages, storage_of

MT = MessageType


def leader(**kw) -> RaftCore:
    r = new_core(1, pre_vote=False, **kw)
    r.campaign()
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MT.VOTE_RESP, v, 1, 1))
    read_messages(r)
    return r


def make_leader(**kw) -> RaftCore:
    r = leader(**kw)
    # Both followers acknowledge the empty entry: replicate state.
    for v in (2, 3):
        r.step(msg(MT.APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    assert r.prs[2].state is ProgressState.REPLICATE
    return r


# ----------------------------------------------------------------------
# Pipelining and flow control
# ----------------------------------------------------------------------
def test_pipelining_sends_without_waiting_for_acks() -> None:
    """In REPLICATE state the leader sends each new batch at once, moving ``next``
    optimistically, several appends in flight per follower.
    Reference: §5.3 (pipelining: dissertation §10.2.2)"""
    r = make_leader()

    for i in range(3):
        r.propose([b"x%d" % i])
    msgs = [m for m in read_messages(r) if m.to == 2]

    assert [(m.index, len(m.entries)) for m in msgs] == [(1, 1), (2, 1), (3, 1)]
    assert r.prs[2].next == 5
    assert len(r.prs[2].inflights) == 3


def test_inflight_count_limit_pauses_and_ack_resumes() -> None:
    """Flow control: at most ``max_inflight_msgs`` appends in flight; further
    entries wait, and an acknowledgement frees the window and sends them.
    Reference: §5.3 (flow control)"""
    r = make_leader(max_inflight_msgs=2)

    for i in range(4):
        r.propose([b"x%d" % i])
    sent = [m for m in read_messages(r) if m.to == 2 and m.type is MT.APP]
    assert [m.index for m in sent] == [1, 2]
    assert r.prs[2].is_paused()

    r.step(msg(MT.APP_RESP, 2, 1, 1, index=2))
    sent = [m for m in read_messages(r) if m.to == 2 and m.type is MT.APP]

    # The freed slot carries both waiting entries in one batched append.
    assert [(m.index, [e.index for e in m.entries]) for m in sent] == [(3, [4, 5])]


def test_inflight_bytes_limit() -> None:
    """Flow control by bytes: once ``max_inflight_bytes`` are in flight, the leader
    stops sending to that follower until acknowledgements arrive.
    Reference: §5.3 (flow control)"""
    r = make_leader(max_inflight_bytes=300, max_size_per_msg=1000)

    for _ in range(5):
        r.propose([b"y" * 200])
    sent = [m for m in read_messages(r) if m.to == 2 and m.type is MT.APP]

    assert len(sent) == 2  # 216 bytes, then 432 >= 300: paused
    assert r.prs[2].is_paused()


def test_proposals_batched_into_one_append() -> None:
    """Many proposals appended together travel in one append message, up to
    ``max_size_per_msg`` bytes.
    Reference: §5.3"""
    r = make_leader(max_size_per_msg=1 << 20)

    r.propose([b"a", b"b", b"c", b"d"])
    sent = [m for m in read_messages(r) if m.to == 2]

    assert len(sent) == 1
    assert [e.data for e in sent[0].entries] == [b"a", b"b", b"c", b"d"]


def test_max_size_per_msg_splits_appends() -> None:
    """An append carries at most ``max_size_per_msg`` bytes (but at least one entry).
    Reference: §5.3"""
    r = make_leader(max_size_per_msg=40)

    r.propose([b"a" * 10, b"b" * 10, b"c" * 10])
    sent = [m for m in read_messages(r) if m.to == 2]

    assert [len(m.entries) for m in sent] == [1, 1, 1]


def test_probe_sends_one_append_per_heartbeat() -> None:
    """A follower in PROBE state gets one append, then nothing until it answers or
    a heartbeat response arrives.
    Reference: §5.3"""
    r = leader()
    assert r.prs[2].state is ProgressState.PROBE
    assert r.prs[2].is_paused()  # the empty entry went out as the probe

    r.propose([b"x"])
    assert [m for m in read_messages(r) if m.to == 2] == []

    r.step(msg(MT.HEARTBEAT_RESP, 2, 1, 1))
    sent = [m for m in read_messages(r) if m.to == 2]
    assert [(m.type, m.index, len(m.entries)) for m in sent] == [(MT.APP, 0, 2)]


def test_unreachable_follower_falls_back_to_probe() -> None:
    """When the transport reports a follower unreachable, the leader stops
    pipelining to it and probes.
    Reference: §5.3"""
    r = make_leader()

    r.report_unreachable(2)

    assert r.prs[2].state is ProgressState.PROBE


def test_stale_rejection_is_ignored() -> None:
    """A rejection for an index already known to match is an old, reordered
    message: the leader ignores it.
    Reference: §5.3"""
    r = make_leader()
    r.propose([b"x"])
    read_messages(r)
    r.step(msg(MT.APP_RESP, 2, 1, 1, index=2))

    r.step(msg(MT.APP_RESP, 2, 1, 1, index=1, reject=True, reject_hint=0))

    assert r.prs[2].state is ProgressState.REPLICATE
    assert r.prs[2].match == 2


# ----------------------------------------------------------------------
# Fast backtracking
# ----------------------------------------------------------------------
def test_fast_backtracking_skips_whole_terms() -> None:
    """On a rejection the leader does not step ``next`` back one entry per round
    trip: the follower's hint (its last index whose term is <= the leader's term at
    the probed index) lets the leader skip a whole conflicting term at once.
    Reference: §5.3 (the optimization at the end of the section)"""
    lead_terms = [1] * 3 + [4] * 30 + [5] * 30
    follow_terms = [1] * 3 + [2] * 40 + [3] * 40
    st1 = new_storage((1, 2, 3))
    st1.append([Entry(t, i) for i, t in enumerate(lead_terms, start=1)])
    st1.set_hard_state(HardState(term=5))
    st2 = new_storage((1, 2, 3))
    st2.append([Entry(t, i) for i, t in enumerate(follow_terms, start=1)])
    st2.set_hard_state(HardState(term=5))
    net = Network(
        cores={
            1: new_core(1, storage=st1, pre_vote=False),
            2: new_core(2, storage=st2, pre_vote=False),
        },
        ids=(1, 2, 3),
    )
    net.isolate(2)
    net.campaign(1)
    net.recover()

    net.tick(1)  # heartbeat: the probe to 2 starts

    rejections = [m for m in net.delivered if m.type is MT.APP_RESP and m.reject and m.frm == 2]
    assert 1 <= len(rejections) <= 3
    assert net.core(2).log.slice(1, 65) == net.core(1).log.slice(1, 65)


def test_rejection_hint_points_at_last_possible_match() -> None:
    """The follower's rejection names the largest index whose term is at most the
    leader's term at the probed index.
    Reference: §5.3"""
    st = new_storage((1, 2, 3))
    st.append([Entry(t, i) for i, t in enumerate([1, 1, 3, 3, 3], start=1)])
    st.set_hard_state(HardState(term=4))
    r = new_core(2, storage=st)

    r.step(msg(MT.APP, 1, 2, term=4, index=5, log_term=2))

    assert read_messages(r) == [
        Message(MT.APP_RESP, 1, 2, 4, index=5, reject=True, reject_hint=2, log_term=1)
    ]


# ----------------------------------------------------------------------
# Snapshots (§7)
# ----------------------------------------------------------------------
def compacted_leader() -> tuple[Network, int]:
    """3 nodes; 3 is cut off while 1 commits entries, then 1 compacts its log."""
    net = Network()
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"v%d" % i)
    lead = net.core(1)
    st = storage_of(lead)
    idx = lead.log.applied
    st.create_snapshot(idx, lead.conf_state_at(idx), b"state@%d" % idx)
    st.compact(idx)
    return net, idx


def test_lagging_follower_gets_snapshot() -> None:
    """A follower that needs entries the leader has compacted is sent the snapshot
    instead; it installs it and then receives the entries after it.
    Reference: §7"""
    net, idx = compacted_leader()
    net.recover()

    net.tick(1)  # heartbeat -> response -> leader finds entries compacted
    net.send()
    net.nodes[1].core.report_snapshot(3, True)
    net.tick(1)
    net.propose(1, b"after")

    snaps = [m for m in net.delivered if m.type is MT.SNAP]
    assert [(m.to, m.snapshot.meta.index) for m in snaps] == [(3, idx)]  # type: ignore[union-attr]
    f = net.core(3)
    assert storage_of(f).snapshot().data == b"state@%d" % idx
    assert f.log.committed == net.core(1).log.committed
    assert net.nodes[3].applied[-1].data == b"after"


def test_snapshot_is_persisted_before_ack() -> None:
    """A follower installing a snapshot hands it to the driver in a Ready, with its
    acknowledgement held until it is persisted; the applied index jumps to it.
    Reference: §7"""
    snap = Snapshot(SnapshotMeta(11, 11, ConfState(frozenset({1, 2}))), b"data")
    r = new_core(2, (1, 2))

    r.step(msg(MT.SNAP, 1, 2, term=2, snapshot=snap))
    rd = r.ready()

    assert rd.snapshot == snap
    assert rd.hard_state == HardState(term=2, vote=0, commit=11)
    assert rd.committed_entries == []
    assert rd.persisted_messages == [Message(MT.APP_RESP, 1, 2, 2, index=11)]
    storage_of(r).apply_snapshot(rd.snapshot)
    r.advance(rd)
    assert r.log.applied == 11
    assert r.conf.voters == {1, 2}


def test_snapshot_older_than_commit_is_ignored() -> None:
    """A snapshot at or below the follower's commit index adds nothing: it is
    ignored and the follower answers with its commit index.
    Reference: §7"""
    r = new_core(2, (1, 2))
    r.step(msg(MT.APP, 1, 2, term=2, entries=tuple(Entry(2, i) for i in range(1, 6)), commit=5))
    read_messages(r)

    r.step(msg(MT.SNAP, 1, 2, term=2, snapshot=Snapshot(SnapshotMeta(3, 2, ConfState()))))

    assert read_messages(r) == [Message(MT.APP_RESP, 1, 2, 2, index=5)]
    assert r.log.first_index() == 1


def test_snapshot_matching_log_fast_forwards_commit() -> None:
    """If the follower's log already holds the snapshot's last entry, it keeps its
    log and just advances its commit index.
    Reference: §7 ("If existing log entry has same index and term as snapshot's
    last included entry, retain log entries following it")"""
    r = new_core(2, (1, 2))
    r.step(msg(MT.APP, 1, 2, term=2, entries=tuple(Entry(2, i) for i in range(1, 6))))
    read_messages(r)

    r.step(msg(MT.SNAP, 1, 2, term=2, snapshot=Snapshot(SnapshotMeta(3, 2, ConfState()))))

    assert r.log.committed == 3
    assert r.log.last_index() == 5
    assert not r.log.has_pending_snapshot()


def test_failed_snapshot_returns_to_probe() -> None:
    """When the transport reports a failed snapshot, the leader probes again (and
    will resend the snapshot if still needed).
    Reference: §7"""
    net, _ = compacted_leader()
    net.recover()
    net.ignore(MT.SNAP)
    net.tick(1)
    lead = net.core(1)
    assert lead.prs[3].state is ProgressState.SNAPSHOT

    lead.report_snapshot(3, False)

    assert lead.status().progress[3].state is ProgressState.PROBE
    assert lead.prs[3].pending_snapshot == 0


def test_memory_storage_compaction_raises_compacted() -> None:
    """Storage refuses reads below its snapshot with CompactedError; [lo, hi) ranges.
    Reference: §7"""
    import pytest

    from shardlite.replication.raft import CompactedError, UnavailableError

    st = MemoryStorage()
    st.append([Entry(1, i) for i in range(1, 6)])
    st.create_snapshot(3, ConfState(), b"s")
    st.compact(3)

    assert st.first_index() == 4
    assert st.term(3) == 1
    assert st.entries(4, 6) == [Entry(1, 4), Entry(1, 5)]
    with pytest.raises(CompactedError):
        st.entries(3, 5)
    with pytest.raises(UnavailableError):
        st.entries(4, 7)
    with pytest.raises(CompactedError):
        st.term(2)


def test_leader_role_unchanged_by_snapshot_send() -> None:
    """Sending a snapshot does not disturb the leader's other followers.
    Reference: §7"""
    net, _ = compacted_leader()
    net.recover()
    net.tick(1)

    assert net.core(1).role is Role.LEADER
    assert net.core(1).prs[2].state is ProgressState.REPLICATE
