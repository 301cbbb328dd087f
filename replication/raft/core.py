"""The Raft consensus core: a pure, deterministic state machine.

No I/O, no asyncio, no global randomness, and no clock but the one the driver
hands in for the read lease (``Config.clock``, read by no other rule). The driver feeds it
``tick()``, ``step(message)``, ``propose(...)``, ``read_index(...)``,
``transfer_leader(...)`` and ``propose_conf_change(...)``; it collects work with
``ready()`` and reports it done with ``advance(ready)``. See ``Ready`` for the
order in which the driver must persist, send and apply.

The structure (and the verbs) follow etcd-io/raft's raft.go so that reviewers
who know it can compare. Rules cite the Raft paper (§5.x, §6, §7) and Ongaro's
dissertation (§3.10 leadership transfer, §4 membership, §6.4 ReadIndex, §6.4.1
the leader lease, §9.6 pre-vote).

Durability in this core (etcd's "async storage writes" discipline):

- Responses that promise durable state (append and vote responses) wait in
  ``Ready.persisted_messages`` until the driver has persisted that Ready.
- The leader sends appends to followers before its own write is durable, but
  counts itself towards a commit quorum only after ``advance()`` reports its
  entries durable (a self-acknowledgement stepped back in by ``advance``).
- A candidate counts its own vote only once its term and vote are durable.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import (
    CompactedError,
    DropReason,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from .lease import ReadLease
from .log import RaftLog
from .messages import (
    ENTRY_OVERHEAD,
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)
from .progress import Inflights, Progress, ProgressState, ProgressStatus
from .quorum import VoteResult, committed_index, vote_result
from .read_only import ReadOnly
from .storage import Storage

MT = MessageType

CAMPAIGN_TRANSFER = b"CampaignTransfer"
"""Context of vote requests caused by a leadership transfer: they bypass the leader
lease, since the current leader asked for them (dissertation §3.10)."""


_FROM_LEADER = frozenset({MT.APP, MT.HEARTBEAT, MT.SNAP, MT.TIMEOUT_NOW, MT.READ_INDEX_RESP})
"""Message types only a leader sends."""


class Logger(Protocol):
    """What the core needs from a logger; ``logging.Logger`` fits."""

    def debug(self, msg: str, *args: object) -> None: ...
    def info(self, msg: str, *args: object) -> None: ...
    def warning(self, msg: str, *args: object) -> None: ...


@dataclass
class Config:
    id: int
    storage: Storage
    # Logical ticks (§5.2): a follower that hears nothing for a randomized
    # timeout in [election_tick, 2 * election_tick) starts an election.
    election_tick: int = 10
    heartbeat_tick: int = 1
    # Index the state machine has already applied (after a restart). Must be
    # >= the storage snapshot's index and <= the persisted commit index.
    applied: int = 0
    max_size_per_msg: int = 1 << 20  # bytes of entries per append (at least one entry)
    max_inflight_msgs: int = 256  # appends in flight per follower (pipelining)
    max_inflight_bytes: int = 0  # bytes in flight per follower; 0: unlimited
    max_committed_size_per_ready: int | None = 64 << 20
    check_quorum: bool = True  # leader steps down without a live quorum; leader lease
    pre_vote: bool = True  # dissertation §9.6
    # The leader lease for reads (§6.4.1, lease.py): seconds of `clock` after
    # a quorum-acknowledged heartbeat round began during which the leader
    # answers a read index without a round. 0: off. On, a node also refuses
    # votes for an election timeout after it starts. Needs check_quorum.
    read_lease: float = 0.0
    clock: Callable[[], float] | None = None
    logger: Logger | None = None

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("id must be positive")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
        if self.read_lease < 0:
            raise ValueError("read_lease must not be negative")
        if self.read_lease and not (self.check_quorum and self.clock):
            raise ValueError("read_lease needs check_quorum and a clock")


@dataclass(frozen=True, slots=True)
class Proposed:
    """Where a proposal landed. It is committed if the entry applied at ``last_index``
    has term ``term``; a different term there means it was lost (retry it)."""

    term: int
    first_index: int
    last_index: int


@dataclass(frozen=True)
class Status:
    id: int
    role: Role
    term: int
    vote: int
    leader: int
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    progress: dict[int, ProgressStatus] = field(default_factory=dict)
    lead_transferee: int = NONE
    refused: int = 0  # messages step() refused since start

    @property
    def voters(self) -> frozenset[int]:
        return self.conf_state.voters

    @property
    def learners(self) -> frozenset[int]:
        return self.conf_state.learners


class RaftCore:
    def __init__(self, config: Config, rng: random.Random) -> None:
        config.validate()
        self.id = config.id
        self._rng = rng
        self._logger: Logger = config.logger or logging.getLogger("shardlite.raft")
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.max_size_per_msg = config.max_size_per_msg
        self.max_inflight_msgs = config.max_inflight_msgs
        self.max_inflight_bytes = config.max_inflight_bytes

        storage = config.storage
        self.log = RaftLog(storage, max_applying_size=config.max_committed_size_per_ready)
        self.log.on_append = self._on_log_append
        hs, cs = storage.initial_state()

        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.lead = NONE
        self.lead_transferee = NONE
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        # Messages that may only leave once the state they describe is durable.
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        # Index of the last conf change the leader appended (one at a time, §4.1).
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index: list[tuple[bytes, int]] = []
        self.lease = ReadLease(config.read_lease)
        self._clock = config.clock or (lambda: 0.0)
        self._renewals = 0  # lease renewal rounds started this term
        # Ticks since a leader of our term last reached us, or since we started
        # (we may have heard one just before a crash): with the read lease on,
        # no vote is granted before an election timeout of them (§6.4.1).
        self.ticks_since_leader = 0
        self.prs: dict[int, Progress] = {}
        # Messages refused by step(): see _refusal.
        self.refused = 0

        # Configurations in the log, effective as soon as appended (dissertation
        # §4.1): (index, config) pairs, oldest first. The first is the base (the
        # snapshot's config, or the latest one at or below the applied index).
        self._confs: list[tuple[int, ConfState]] = [(storage.first_index() - 1, cs)]
        first, last = storage.first_index(), storage.last_index()
        if last >= first:
            self._track_conf_entries(storage.entries(first, last + 1))
        self.conf = self._confs[-1][1]

        if hs.commit:
            if not (first - 1 <= hs.commit <= last):
                raise ValueError(f"commit {hs.commit} out of range [{first - 1}, {last}]")
            self.log.committed = hs.commit
        if config.applied:
            if config.applied < first - 1:
                raise ValueError(f"applied {config.applied} below the snapshot at {first - 1}")
            self.log.applied_to(config.applied)
        self._become_follower(self.term, NONE)
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._outstanding: Ready | None = None
        self._logger.info(
            "%d starts at term %d commit %d applied %d last %d voters %s learners %s",
            self.id,
            self.term,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            sorted(self.conf.voters),
            sorted(self.conf.learners),
        )

    # ------------------------------------------------------------------
    # Membership bookkeeping
    # ------------------------------------------------------------------
    def _track_conf_entries(self, ents: Sequence[Entry]) -> None:
        for e in ents:
            if e.type is EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                self._confs.append((e.index, cc.apply(self._confs[-1][1])))

    def _on_log_append(self, ents: Sequence[Entry]) -> None:
        # An append may first truncate a conflicting suffix (§5.3): a
        # configuration in the dropped suffix is no longer in effect (§4.1).
        first = ents[0].index
        before = self._confs[-1][1]
        while len(self._confs) > 1 and self._confs[-1][0] >= first:
            self._confs.pop()
        self._track_conf_entries(ents)
        after = self._confs[-1][1]
        if after != before:
            self._apply_conf(after)

    def _apply_conf(self, cs: ConfState) -> None:
        self._logger.info(
            "%d switched to configuration voters=%s learners=%s",
            self.id,
            sorted(cs.voters),
            sorted(cs.learners),
        )
        self.conf = cs
        members = cs.members()
        for nid in list(self.prs):
            if nid not in members:
                del self.prs[nid]
        last = self.log.last_index()
        for nid in sorted(members):
            pr = self.prs.get(nid)
            if pr is None:
                pr = self._new_progress(max(last, 1))
                # A new member counts as active so check-quorum does not
                # immediately depose the leader that added it.
                pr.recent_active = True
                self.prs[nid] = pr
            pr.is_learner = nid in cs.learners
        if self.role is Role.LEADER and self.lead_transferee not in cs.voters:
            self._abort_leader_transfer()

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in effect at ``index``, for ``index`` >= the applied index
        (what the driver records in a snapshot it takes at its applied index)."""
        if index < self._confs[0][0]:
            raise CompactedError(index)
        cs = self._confs[0][1]
        for i, c in self._confs:
            if i > index:
                break
            cs = c
        return cs

    def _conf_index(self) -> int:
        """Index of the entry that set the current configuration."""
        return self._confs[-1][0]

    def _promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration may; so may a
        voter of the latest configuration it knows to be committed, while the change
        that demoted or removed it is not known to be committed (dissertation §4.2.2:
        such a server "should still start new elections, as it might still be needed
        until the C_new entry is committed"; its own vote does not count, see
        ``_poll``). Without this, a leader that demoted itself and crashed before the
        change committed may hold the only log that can win, and never campaign."""
        if self.id in self.conf.voters:
            return True
        committed = self.log.committed
        return self._conf_index() > committed and self.id in self.conf_state_at(committed).voters

    def _new_progress(self, next_index: int) -> Progress:
        return Progress(next_index, Inflights(self.max_inflight_msgs, self.max_inflight_bytes))

    # ------------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if m.type in (MT.APP_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP) or m.to == self.id:
            # These promise the receiver something about our durable state
            # (entries, term, vote): they leave only after the Ready is persisted.
            self.msgs_after_append.append(m)
        else:
            self.msgs.append(m)

    def _send_append(self, to: int) -> None:
        """Send what ``to`` lacks: in REPLICATE as many appends as the in-flight
        window allows (pipelining), otherwise one."""
        if not self._maybe_send_append(to, send_if_empty=True):
            return
        for _ in range(self.max_inflight_msgs):
            if not self._maybe_send_append(to, send_if_empty=False):
                break

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send the entries the follower lacks, if its progress is not paused (§5.3)."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries(pr.next, self.max_size_per_msg)
        except CompactedError:
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APP,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        size = sum(len(e.data) for e in ents) + ENTRY_OVERHEAD * len(ents)
        pr.update_on_entries_send(len(ents), size, pr.next)
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        """The entries the follower needs are compacted: send the snapshot instead (§7)."""
        if not pr.recent_active:
            self._logger.debug("%d not sending snapshot to inactive %d", self.id, to)
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            self._logger.debug("%d snapshot temporarily unavailable for %d", self.id, to)
            return False
        if snap.meta.index == 0:
            raise AssertionError("need a non-empty snapshot")
        self._logger.info(
            "%d sends snapshot at %d term %d to %d (match %d next %d)",
            self.id,
            snap.meta.index,
            snap.meta.term,
            to,
            pr.match,
            pr.next,
        )
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MT.SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit beyond what it is known to hold.
        commit = min(self.prs[to].match, self.log.committed)
        self._send(Message(MT.HEARTBEAT, to, self.id, self.term, commit=commit, context=ctx))

    def _bcast_append(self) -> None:
        for nid in self.prs:
            if nid != self.id:
                self._send_append(nid)

    def _bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_request_ctx()
        for nid in self.prs:
            if nid != self.id:
                self._send_heartbeat(nid, ctx)

    # ------------------------------------------------------------------
    # Committing
    # ------------------------------------------------------------------
    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a majority of voters hold, if it is an
        entry of the current term."""
        match = {nid: pr.match for nid, pr in self.prs.items()}
        mci = committed_index(self.conf.voters, match)
        return self.log.maybe_commit(mci, self.term)

    def _on_leader_commit(self) -> None:
        self._release_pending_read_index()
        if self.id not in self.conf.voters and self.log.committed >= self._conf_index():
            # Dissertation §4.2.2: a leader that is no longer in the configuration
            # manages the cluster until the change commits, then steps down.
            self._bcast_append()
            last = self.log.last_index()
            best = [n for n in sorted(self.conf.voters) if self.prs[n].match == last]
            if best:
                self._send(Message(MT.TIMEOUT_NOW, best[0], self.id, self.term))
            self._logger.info(
                "%d steps down at term %d: removed from the configuration", self.id, self.term
            )
            self._become_follower(self.term, NONE)
            return
        self._bcast_append()

    # ------------------------------------------------------------------
    # Role changes
    # ------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.votes = {}
        last = self.log.last_index()
        self.prs = {}
        for nid in sorted(self.conf.members()):
            pr = self._new_progress(last + 1)
            pr.is_learner = nid in self.conf.learners
            self.prs[nid] = pr
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index = []
        self.lease.reset()
        self._renewals = 0

    def _reset_randomized_election_timeout(self) -> None:
        # §5.2: randomized in [election_timeout, 2 * election_timeout).
        self.randomized_election_timeout = self._rng.randrange(
            self.election_timeout, 2 * self.election_timeout
        )

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._logger.info("%d became follower at term %d", self.id, self.term)

    def _become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("leader cannot become pre-candidate")
        # Pre-vote (§9.6) changes neither term nor vote.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE
        self._logger.info("%d became pre-candidate at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("leader cannot become candidate")
        # §5.2: increment the term and vote for yourself.
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._logger.info("%d became candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise AssertionError("follower cannot become leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        for nid, pr in self.prs.items():
            pr.recent_active = True
            if nid == self.id:
                # Our own match moves only when our entries are durable.
                pr.become_replicate()
        # No conf change until everything up to here is committed (§4.1).
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 / §8: commit an entry of our own term, which commits all earlier ones.
        last = self.log.last_index()
        self.log.append([Entry(self.term, last + 1, EntryType.EMPTY)])
        self._logger.info("%d became leader at term %d", self.id, self.term)

    # ------------------------------------------------------------------
    # Elections
    # ------------------------------------------------------------------
    def _hup(self, transfer: bool = False) -> None:
        if self.role is Role.LEADER:
            self._logger.debug("%d ignores hup: already leader", self.id)
            return
        if not self._promotable():
            self._logger.warning("%d is not a voter and cannot campaign", self.id)
            return
        if self.log.has_pending_snapshot():
            self._logger.warning("%d cannot campaign with a pending snapshot", self.id)
            return
        self._logger.info("%d starts a new election at term %d", self.id, self.term)
        self._campaign(pre=self.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
            # Our own pre-vote needs no durable state.
            if self._poll(self.id, MT.PRE_VOTE_RESP, True) is VoteResult.WON:
                self._campaign(pre=False)
                return
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
            # Our own vote counts once term and vote are durable.
            self._send(Message(MT.VOTE_RESP, self.id, self.id, self.term))
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last, last_term = self.log.last_index(), self.log.last_term()
        for nid in sorted(self.conf.voters):
            if nid == self.id:
                continue
            self._logger.info(
                "%d [logterm %d index %d] sent %s to %d at term %d",
                self.id,
                last_term,
                last,
                vote_type.name,
                nid,
                term,
            )
            self._send(
                Message(vote_type, nid, self.id, term, log_term=last_term, index=last, context=ctx)
            )

    def _poll(self, nid: int, t: MessageType, granted: bool) -> VoteResult:
        if nid not in self.votes:
            self.votes[nid] = granted
        return vote_result(self.conf.voters, self.votes)

    # ------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------
    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.ticks_since_leader += 1
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self._step_leader(Message(MT.CHECK_QUORUM, self.id, self.id))
            if self.role is Role.LEADER and self.lead_transferee != NONE:
                # §3.10: give up a transfer that did not finish within an election timeout.
                self._abort_leader_transfer()
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._renew_lease()
            self._bcast_heartbeat()

    def campaign(self) -> None:
        """Start an election now (with pre-vote if configured), as on election timeout."""
        self._hup()

    def propose(self, data: Sequence[bytes]) -> Proposed:
        """Append one NORMAL entry per item, all in one batch. Leader only: raises
        ``ProposalDroppedError`` with the known leader otherwise (the driver forwards)."""
        return self._propose([(EntryType.NORMAL, d) for d in data])

    def propose_conf_change(self, cc: ConfChange) -> Proposed:
        """Propose a single-server membership change (dissertation §4.1). It takes
        effect as soon as it is appended; only one may be uncommitted at a time, and
        only after the leader has committed an entry of its own term."""
        self._check_can_propose()
        if cc.node_id <= 0:
            raise ProposalDroppedError(DropReason.INVALID_CONF_CHANGE, self.lead)
        new = cc.apply(self.conf)
        if new == self.conf or not new.voters:
            raise ProposalDroppedError(DropReason.INVALID_CONF_CHANGE, self.lead)
        if self.pending_conf_index > self.log.committed:
            raise ProposalDroppedError(DropReason.CONF_CHANGE_PENDING, self.lead)
        if self.log.term_or_zero(self.log.committed) != self.term:
            raise ProposalDroppedError(DropReason.NOT_READY, self.lead)
        p = self._propose([(EntryType.CONF_CHANGE, cc.encode())])
        self.pending_conf_index = p.last_index
        return p

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise ProposalDroppedError(DropReason.NOT_LEADER, self.lead)
        if self.id not in self.conf.voters:
            # Being removed: no new work (§4.2.2).
            raise ProposalDroppedError(DropReason.NOT_LEADER, NONE)
        if self.lead_transferee != NONE:
            # §3.10: stop accepting proposals while transferring leadership.
            raise ProposalDroppedError(DropReason.TRANSFER_IN_PROGRESS, self.lead)

    def _propose(self, items: Sequence[tuple[EntryType, bytes]]) -> Proposed:
        self._check_can_propose()
        if not items:
            raise ValueError("nothing to propose")
        last = self.log.last_index()
        ents = [Entry(self.term, last + 1 + i, t, d) for i, (t, d) in enumerate(items)]
        self.log.append(ents)
        self._bcast_append()
        return Proposed(self.term, last + 1, last + len(ents))

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read index (dissertation §6.4). The answer appears as
        a ``ReadState(index, ctx)`` in a later Ready; ``ctx`` must be unique. A follower
        forwards the request to its leader; with no leader known this raises."""
        if self.role is Role.LEADER:
            self._leader_read_index(ctx, NONE)
        elif self.lead != NONE:
            self._send(Message(MT.READ_INDEX, self.lead, self.id, 0, context=ctx))
        else:
            raise ProposalDroppedError(DropReason.NOT_LEADER, NONE)

    def transfer_leader(self, target: int) -> None:
        """Ask the leader to hand leadership to ``target`` (dissertation §3.10)."""
        if self.role is Role.LEADER:
            self._leader_transfer(target)
        elif self.lead != NONE:
            self._send(Message(MT.TRANSFER_LEADER, self.lead, target, self.term))
        else:
            raise ProposalDroppedError(DropReason.NOT_LEADER, NONE)

    def report_unreachable(self, nid: int) -> None:
        """The transport failed to deliver to ``nid``: stop optimistic pipelining to it."""
        if self.role is Role.LEADER:
            self._step_leader(Message(MT.UNREACHABLE, self.id, nid))

    def report_snapshot(self, nid: int, success: bool) -> None:
        """The transport finished streaming a snapshot to ``nid`` (or gave up)."""
        if self.role is Role.LEADER:
            self._step_leader(Message(MT.SNAP_STATUS, self.id, nid, reject=not success))

    def step(self, m: Message) -> None:
        """Process one message from a peer. A message the sender had no business
        sending (see ``_refusal``) is dropped: counted in ``refused`` and logged as
        ``"<id> refused <TYPE> from <frm> at term <term>: <why>"``."""
        why = self._refusal(m)
        if why is not None:
            self.refused += 1
            self._logger.warning(
                "%d refused %s from %d at term %d: %s", self.id, m.type.name, m.frm, m.term, why
            )
            return
        self._step(m)

    def _known_members(self) -> frozenset[int]:
        """Every member of a configuration we track: the latest, and the older ones a
        truncation of our log could bring back (§4.1). A leader we must follow may be
        outside the latest one: it may lack an uncommitted change that removed it."""
        members: frozenset[int] = frozenset()
        for _, cs in self._confs:
            members |= cs.members()
        return members

    def _refusal(self, m: Message) -> str | None:
        """Why ``m`` cannot have come from a correct peer, or None if it may have.

        Sender ids are not authenticated (that is the transport's business); this
        checks what the core itself knows: who is a member, who leads our term.

        - Local types (HUP, BEAT, PROP, CHECK_QUORUM, UNREACHABLE, SNAP_STATUS) are
          the core's own or the driver's (through methods), never a peer's.
        - A message must be addressed to us and come from another node. (Forwarded
          READ_INDEX and TRANSFER_LEADER carry the requester and the transferee in
          ``frm``, which may be us.)
        - What only a leader sends (APP, HEARTBEAT, SNAP, TIMEOUT_NOW, READ_INDEX_RESP)
          at our term comes from the leader of our term once we know it: at most
          one leader per term (§5.2). A sender in none of the configurations we
          know may not depose the leader we follow while we hear from it (within
          an election timeout, the lease of §4.2.3 applied to leaders we cannot
          place). It may become our leader once that leader is silent, or when we
          know none: a member whose log lacks the committed entry that added the
          new leader (cut off while it was added and elected) must follow it, and
          cannot tell it from a forged id (simulator seeds 7016229, 8014403, 3
          nodes); so must a joining node, which is not a member of its own latest
          configuration until the leader's entries reach the one that added it,
          and follows whoever leads, as in etcd.
          TIMEOUT_NOW and READ_INDEX_RESP come only from the leader we follow, at
          our term: the leader sends TimeoutNow to a follower that acknowledged its
          whole log (§3.10), and a read index is only as good as its leader (§6.4).
          Messages from older terms pass, to be answered with our term or ignored
          (§5.1).
        - Responses the leader counts (APP_RESP, HEARTBEAT_RESP) and forwarded reads
          come from members.
        - Vote requests and responses pass from anyone: a candidate may know a newer
          configuration than ours in which we vote (etcd's TestLearnerCanVote), and
          only the votes of voters of the candidate's configuration count.
        """
        t = m.type
        if t in LOCAL_MESSAGES:
            return "a local message type"
        if m.to != self.id:
            return f"addressed to {m.to}"
        if m.frm == NONE or (m.frm == self.id and t not in (MT.READ_INDEX, MT.TRANSFER_LEADER)):
            return "not from a peer"
        if t in _FROM_LEADER:
            if m.term < self.term:
                return None
            if m.term == self.term and self.lead not in (NONE, m.frm):
                return f"{self.lead} leads term {self.term}"
            if t in (MT.TIMEOUT_NOW, MT.READ_INDEX_RESP):
                if m.term != self.term or m.frm != self.lead:
                    return "not from the leader we follow"
                return None
            if (
                self.lead not in (NONE, m.frm)
                and self.election_elapsed < self.election_timeout
                and self.id in self.conf.members()
                and m.frm not in self._known_members()
            ):
                return f"not a member, and we follow {self.lead}"
        elif (
            t in (MT.APP_RESP, MT.HEARTBEAT_RESP, MT.READ_INDEX)
            and m.frm != self.id
            and m.frm not in self._known_members()
        ):
            return "not a member"
        return None

    def _step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message, or a forwarded READ_INDEX
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and (
                    (self.lead != NONE and self.election_elapsed < self.election_timeout)
                    or self._holds_votes_for_lease()
                )
                if not force and in_lease:
                    # §4.2.3 / §9.6: we heard from a leader within the minimum
                    # election timeout: neither update the term nor grant the vote.
                    self._logger.info(
                        "%d [term %d] ignores %s from %d at term %d: lease not expired",
                        self.id,
                        self.term,
                        m.type.name,
                        m.frm,
                        m.term,
                    )
                    return
            if m.type is MT.PRE_VOTE:
                pass  # never change the term on a pre-vote
            elif m.type is MT.PRE_VOTE_RESP and not m.reject:
                pass  # a granted pre-vote carries the future term; keep ours
            else:
                self._logger.info(
                    "%d [term %d] received %s with higher term %d from %d",
                    self.id,
                    self.term,
                    m.type.name,
                    m.term,
                    m.frm,
                )
                # §5.1: a higher term always turns us into a follower.
                if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                    self._become_follower(m.term, m.frm)
                else:
                    elapsed = self.election_elapsed
                    self._become_follower(m.term, NONE)
                    if m.type is MT.VOTE:
                        # Figure 2: only granting a vote (or hearing from a
                        # leader) restarts the election timer. A candidate with
                        # a stale log must not hold back, by raising the term
                        # again and again, the servers that could win.
                        self.election_elapsed = elapsed
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (maybe cut off, maybe unaware that our term rose
                # through a pre-vote that never reached it): tell it our term so
                # it steps down instead of being ignored forever.
                self._send(Message(MT.APP_RESP, m.frm, self.id, self.term))
            elif m.type in (MT.VOTE, MT.PRE_VOTE):
                # §5.1 / Figure 2: a request with a stale term is rejected, and the
                # reply carries our term "for the candidate to update itself".
                # Ignoring it instead (as etcd does for a vote) can leave the cluster
                # leaderless for good once configurations differ: the servers that
                # raised the term never ask this candidate, which may be the only
                # one whose log can win (seeds 7012038, 7019575).
                resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
                self._send(Message(resp, m.frm, self.id, self.term, reject=True))
            else:
                self._logger.debug(
                    "%d [term %d] ignores %s from %d at lower term %d",
                    self.id,
                    self.term,
                    m.type.name,
                    m.frm,
                    m.term,
                )
            return

        t = m.type
        if t is MT.VOTE or t is MT.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _holds_votes_for_lease(self) -> bool:
        """§6.4.1: a leader's read lease counts on us not voting for an election
        timeout after we may last have heard it: also once a higher-term message
        (not a vote) cleared ``lead`` and the term, and after a restart."""
        return self.lease.duration > 0 and self.ticks_since_leader < self.election_timeout

    def _handle_vote_request(self, m: Message) -> None:
        # §5.2: at most one vote per term, first come first served; §9.6: a
        # pre-vote for a future term is granted without recording anything.
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        ) and (m.context == CAMPAIGN_TRANSFER or not self._holds_votes_for_lease())
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        # §5.4.1: only for a candidate whose log is at least as up-to-date.
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._logger.info(
                "%d [logterm %d index %d vote %d] grants %s to %d at term %d",
                self.id,
                self.log.last_term(),
                self.log.last_index(),
                self.vote,
                m.type.name,
                m.frm,
                m.term,
            )
            # Reply with the message's term: a pre-vote is for a future term.
            self._send(Message(resp, m.frm, self.id, m.term))
            if m.type is MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._logger.info(
                "%d [logterm %d index %d vote %d] rejects %s from %d at term %d",
                self.id,
                self.log.last_term(),
                self.log.last_index(),
                self.vote,
                m.type.name,
                m.frm,
                m.term,
            )
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    # ------------------------------------------------------------------
    # Per-role steps
    # ------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MT.BEAT:
            self._bcast_heartbeat()
            return
        if t is MT.CHECK_QUORUM:
            if not self._quorum_active():
                self._logger.warning(
                    "%d stepped down to follower since quorum is not active", self.id
                )
                self._become_follower(self.term, NONE)
            return
        if t is MT.READ_INDEX:
            self._leader_read_index(m.context, m.frm)
            return
        if t is MT.TRANSFER_LEADER:
            self._leader_transfer(m.frm)
            return

        pr = self.prs.get(m.frm)
        if pr is None:
            self._logger.debug("%d no progress for %d", self.id, m.frm)
            return
        if t is MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._handle_read_ack(m)
        elif t is MT.SNAP_STATUS:
            if pr.state is not ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            # Either way wait for an append response (or a heartbeat) before
            # probing again.
            pr.become_probe()
            pr.msg_app_flow_paused = True
        elif t is MT.UNREACHABLE and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.frm == self.id:
            # Our own entries are durable up to m.index (see advance()).
            if (
                self.log.match_term(m.index, m.log_term)
                and pr.maybe_update(m.index)
                and self._maybe_commit()
            ):
                self._on_leader_commit()
            return
        pr.recent_active = True
        if m.reject:
            # §5.3: back up, but by a whole term at a time: the follower told us
            # where its log may first agree with ours (fast backtracking).
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                self._logger.debug("%d decreased progress of %d to %r", self.id, m.frm, pr)
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state is ProgressState.PROBE):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
                # The follower caught up from the snapshot (or otherwise).
                pr.become_probe()
                pr.become_replicate()
            elif pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            if self._maybe_commit():
                self._on_leader_commit()
                if self.role is not Role.LEADER:
                    return
            elif old_paused:
                self._send_append(m.frm)
            # Pipelining: keep sending while the window allows (bounded by
            # max_inflight_msgs per call).
            for _ in range(self.max_inflight_msgs):
                if not self._maybe_send_append(m.frm, send_if_empty=False):
                    break
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self._logger.info(
                    "%d sends TIMEOUT_NOW to %d: its log is up to date", self.id, m.frm
                )
                self._send(Message(MT.TIMEOUT_NOW, m.frm, self.id, self.term))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        pre = self.role is Role.PRE_CANDIDATE
        my_resp = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        if t is MT.APP:
            self._become_follower(m.term, m.frm)  # §5.2: a leader of our term exists
            self._handle_append_entries(m)
        elif t is MT.HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t is my_resp:
            if pre and not m.reject and m.term != self.term + 1:
                return  # a grant from an older pre-campaign
            res = self._poll(m.frm, t, not m.reject)
            if res is VoteResult.WON:
                if pre:
                    self._campaign(pre=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif res is VoteResult.LOST:
                # A pre-candidate that lost keeps its term (§9.6).
                self._become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append_entries(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t is MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self._send(Message(MT.TRANSFER_LEADER, self.lead, m.frm, self.term))
        elif t is MT.TIMEOUT_NOW:
            # §3.10: the leader asks us to start an election at once, skipping
            # pre-vote and the lease check at the voters.
            self._logger.info("%d received TIMEOUT_NOW from %d", self.id, m.frm)
            self._hup(transfer=True)
        elif t is MT.READ_INDEX:
            if self.lead != NONE:
                self._send(Message(MT.READ_INDEX, self.lead, m.frm, 0, context=m.context))
        elif t is MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # ------------------------------------------------------------------
    # Follower handlers
    # ------------------------------------------------------------------
    def _handle_append_entries(self, m: Message) -> None:
        self.ticks_since_leader = 0
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=self.log.committed))
            return
        # §5.3: consistency check on (index, log_term), then append/truncate.
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=last_new))
            return
        # Reject, with a hint: the last index whose term is <= the leader's term at
        # m.index. The leader jumps there instead of stepping back one by one.
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self._logger.debug(
            "%d [logterm %d index %d] rejects APP [logterm %d index %d] from %d",
            self.id,
            self.log.term_or_zero(m.index),
            m.index,
            m.log_term,
            m.index,
            m.frm,
        )
        self._send(
            Message(
                MT.APP_RESP,
                m.frm,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.ticks_since_leader = 0
        self.log.commit_to(m.commit)
        self._send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        self.ticks_since_leader = 0
        snap = m.snapshot
        if snap is None:
            return
        if self._restore(snap):
            self._logger.info(
                "%d restored snapshot at %d term %d", self.id, snap.meta.index, snap.meta.term
            )
            idx = self.log.last_index()
        else:
            idx = self.log.committed
        self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=idx))

    def _restore(self, snap: Snapshot) -> bool:
        """§7 InstallSnapshot receiver: adopt the snapshot unless we already have it."""
        if snap.meta.index <= self.log.committed:
            return False
        if self.role is not Role.FOLLOWER:
            raise AssertionError("only followers restore snapshots")
        if self.log.match_term(snap.meta.index, snap.meta.term):
            # Our log already holds the snapshot's last entry: keep the log and
            # just learn the commit index.
            self.log.commit_to(snap.meta.index)
            return False
        self.log.restore(snap)
        # Keep the configurations at or below the applied index: until the
        # snapshot is installed the driver may still ask conf_state_at(applied).
        applied = self.log.applied
        self._confs = [c for c in self._confs if c[0] <= applied]
        self._confs.append((snap.meta.index, snap.meta.conf_state))
        if snap.meta.conf_state != self.conf:
            self._apply_conf(snap.meta.conf_state)
        return True

    # ------------------------------------------------------------------
    # Check-quorum, leadership transfer, ReadIndex
    # ------------------------------------------------------------------
    def _quorum_active(self) -> bool:
        """Did a majority of voters talk to us since the last check? Clears the marks."""
        active = {}
        for nid, pr in self.prs.items():
            active[nid] = nid == self.id or pr.recent_active
            if nid != self.id:
                pr.recent_active = False
        return vote_result(self.conf.voters, active) is VoteResult.WON

    def _leader_transfer(self, target: int) -> None:
        if target not in self.conf.voters:
            self._logger.warning("%d ignores transfer to non-voter %d", self.id, target)
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == target:
                return
            self._abort_leader_transfer()
        if target == self.id:
            return
        self._logger.info("%d starts transferring leadership to %d", self.id, target)
        # §3.10 / §6.4.1: the transferee's forced campaign bypasses the voters'
        # refusal, so no lease for the rest of this term, aborted or not.
        self.lease.bar()
        # §3.10: the transfer must finish within an election timeout.
        self.election_elapsed = 0
        self.lead_transferee = target
        if self.prs[target].match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target)

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def has_read_lease(self) -> bool:
        """Would a read index asked now be answered at once, from the lease (§6.4.1)?"""
        return self.role is Role.LEADER and self._lease_holds()

    def _lease_holds(self) -> bool:
        return self.lease.duration > 0 and self.lease.holds(self._clock(), self._conf_index())

    def _lease_basis(self) -> int | None:
        """The configuration a heartbeat round started now may ground a lease in:
        its quorum must be one of the latest configuration, and that committed
        (a candidate elected later holds it, so counts votes in it, §4.1)."""
        if self.lease.duration <= 0 or self.lease.barred:
            return None
        conf = self._conf_index()
        if conf > self.log.committed or self.log.term_or_zero(self.log.committed) != self.term:
            return None
        return conf

    def _renew_lease(self) -> None:
        """Each heartbeat round carries a context of its own while the lease is
        on, so that its acknowledgements extend the lease (§6.4.1) and reads
        need no round of their own."""
        conf = self._lease_basis()
        if conf is None or self.conf.voters == {self.id}:
            return
        self._renewals += 1
        ctx = b"lease" + self.term.to_bytes(8, "big") + self._renewals.to_bytes(8, "big")
        self.read_only.add_request(
            self.log.committed, ctx, started=self._clock(), lease_conf=conf, answer=False
        )
        self.read_only.recv_ack(self.id, ctx)

    def _leader_read_index(self, ctx: bytes, frm: int) -> None:
        if self._lease_holds():
            # §6.4.1: no other leader can have been elected since a quorum last
            # acknowledged us, so our commit index is the latest.
            self._answer_read(self.log.committed, ctx, frm)
            return
        if self.log.term_or_zero(self.log.committed) != self.term:
            # §6.4: a new leader does not know the commit index until its own
            # empty entry commits; hold the request until then.
            self.pending_read_index.append((ctx, frm))
            return
        self._send_read_index(ctx, frm)

    def _send_read_index(self, ctx: bytes, frm: int) -> None:
        if self.conf.voters == {self.id}:
            # We are the whole quorum.
            self._answer_read(self.log.committed, ctx, frm)
            return
        self.read_only.add_request(
            self.log.committed, ctx, frm, started=self._clock(), lease_conf=self._lease_basis()
        )
        self.read_only.recv_ack(self.id, ctx)
        self._bcast_heartbeat(ctx)

    def _release_pending_read_index(self) -> None:
        if self.pending_read_index and self.log.term_or_zero(self.log.committed) == self.term:
            pending, self.pending_read_index = self.pending_read_index, []
            for ctx, frm in pending:
                self._send_read_index(ctx, frm)

    def _handle_read_ack(self, m: Message) -> None:
        acks = self.read_only.recv_ack(m.frm, m.context)
        if acks is None or vote_result(self.conf.voters, acks) is not VoteResult.WON:
            return
        released = self.read_only.advance(m.context)
        if not released:
            return
        # Acknowledged after the last round began: a quorum heard us since then.
        last = released[-1]
        if last.lease_conf is not None and last.lease_conf == self._conf_index():
            self.lease.extend(last.started, last.lease_conf)
        for rs in released:
            if rs.answer:
                self._answer_read(rs.index, rs.context, rs.frm)

    def _answer_read(self, index: int, ctx: bytes, frm: int) -> None:
        if frm in (NONE, self.id):
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(
                Message(MT.READ_INDEX_RESP, frm, self.id, self.term, index=index, context=ctx)
            )

    # ------------------------------------------------------------------
    # Ready / advance
    # ------------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        """Is there work for the driver? Always False while a Ready is outstanding."""
        if self._outstanding is not None:
            return False
        log = self.log
        if (
            self.msgs
            or self.msgs_after_append
            or self.read_states
            or log.unstable.entries
            or log.unstable.snapshot is not None
        ):
            return True
        ps, ph = self._prev_soft, self._prev_hard
        if ps.leader != self.lead or ps.role is not self.role:
            return True
        if ph.term != self.term or ph.vote != self.vote or ph.commit != log.committed:
            return True
        return log.committed > log.applying and log.has_next_committed_ents()

    def take_messages(self) -> list[Message]:
        """Messages that may be sent right away, without waiting for ``ready()``.

        Allowed at any time, also while a Ready is outstanding: lets a driver
        pipeline the leader's appends with its own disk write."""
        msgs, self.msgs = self.msgs, []
        return msgs

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("ready() called before advance() of the previous Ready")
        log = self.log
        rd = Ready()
        ss = self.soft_state()
        if ss != self._prev_soft:
            rd.soft_state = ss
            self._prev_soft = ss
        hs = self.hard_state()
        if hs != self._prev_hard:
            rd.hard_state = hs
            rd.must_sync = hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote
            self._prev_hard = hs
        rd.entries = log.unstable_entries()
        rd.snapshot = log.unstable.snapshot
        if rd.entries or rd.snapshot is not None:
            rd.must_sync = True
        rd.committed_entries = log.next_committed_ents()
        if rd.committed_entries:
            log.applying = rd.committed_entries[-1].index
        rd.messages, self.msgs = self.msgs, []
        for m in self.msgs_after_append:
            (rd.local if m.to == self.id else rd.persisted_messages).append(m)
        self.msgs_after_append = []
        if rd.entries:
            # Once these are durable, count them for ourselves (see advance()).
            last = rd.entries[-1]
            rd.local.append(
                Message(
                    MT.APP_RESP, self.id, self.id, self.term, log_term=last.term, index=last.index
                )
            )
        rd.read_states, self.read_states = self.read_states, []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Everything in ``rd`` is persisted (and its persisted messages sent, its
        committed entries applied or at least handed to the applier in order)."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        log = self.log
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.meta.index)
            if rd.snapshot.meta.index > log.applied:
                log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        # Keep only the configurations that may still matter: the latest at or
        # below the applied index, and everything after it.
        confs = self._confs
        k = 0
        while k + 1 < len(confs) and confs[k + 1][0] <= log.applied:
            k += 1
        if k:
            del confs[:k]
        for m in rd.local:
            self._step(m)  # our own acknowledgements, now durable

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    def status(self) -> Status:
        progress = {}
        if self.role is Role.LEADER:
            progress = {nid: ProgressStatus.of(pr) for nid, pr in self.prs.items()}
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.lead,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            conf_state=self.conf,
            progress=progress,
            lead_transferee=self.lead_transferee,
            refused=self.refused,
        )

    def __repr__(self) -> str:
        return (
            f"RaftCore(id={self.id}, {self.role.value}, term={self.term}, "
            f"lead={self.lead}, {self.log!r})"
        )


__all__ = [
    "CAMPAIGN_TRANSFER",
    "Config",
    "Logger",
    "Proposed",
    "RaftCore",
    "Status",
    "UnavailableError",
]
