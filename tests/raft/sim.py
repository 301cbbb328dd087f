"""A deterministic, seeded simulator for the Raft core.

One seed = one run: N nodes (plus spare ids that membership changes may add)
on a simulated network that loses, delays, reorders and duplicates messages,
partitions nodes (symmetric and one-way cuts), crashes and restarts them (a
restart keeps only what the driver had persisted), while clients propose
entries, membership changes, leadership transfers and ReadIndex reads.

Each node's driver is split in two phases so a crash can fall between them:
phase A takes a ``Ready`` and sends its immediate messages; phase B persists
it, sends the messages that waited for persistence, applies, and advances.

After every event the simulator checks:

- election safety: at most one leader per term;
- log matching: an (index, term) pair always names the same entry, preceded by
  the same term (so equal entries imply equal prefixes, by induction);
- leader completeness: a new leader of term T holds every entry committed by a
  leader of a term below T;
- committed entries never change or disappear (every node's committed prefix,
  also after a restart, matches the cluster's committed log);
- state-machine safety: nodes apply the same entry at each index, in order,
  and reach the same state (a hash chain) at each index, including through
  snapshots; the applied index never goes backwards;
- ReadIndex: a read index is at least the commit index known anywhere when
  the read was requested, also when the leader answers it from its lease.

Half the seeds run with the leader lease for reads (§6.4.1). Those give every
node a clock of its own (running up to ``clock_slack`` fast or slow, with its
own offset), let nodes skip ticks (a stalled loop: its tick count then runs
slow against real time, which is why the lease is not counted in ticks), and
ask for reads between any two events. Real time is the round plus the share
of the round's events done; every node ticks at the round's start.

Then it heals every fault and checks liveness: a leader is elected and a new
proposal commits, and every member applies it, within a bounded number of ticks.

Run ``python -m tests.raft.sim --seeds 1000 --nodes 3,5``; a failure prints a
one-line command that replays it (``--seed S --nodes N -v``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from shardlite.replication.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftCore,
    ReadContexts,
    Ready,
    Role,
)

MT = MessageType

_NULL_LOGGER = logging.getLogger("tests.raft.sim.null")
_NULL_LOGGER.addHandler(logging.NullHandler())
_NULL_LOGGER.propagate = False
_NULL_LOGGER.setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True)
class SimOptions:
    nodes: int = 3
    spares: int = 2  # extra ids membership changes may add
    fault_rounds: int = 120  # rounds (= ticks) with faults and client load
    heal_rounds: int = 80  # liveness bound after healing, in ticks
    election_tick: int = 6
    heartbeat_tick: int = 1
    events_per_round: int = 40  # cap on deliveries / Ready phases per tick
    drop: float = 0.05
    dup: float = 0.03
    delay: float = 0.15  # chance a message waits another round
    crash: float = 0.01  # per node per round
    leader_crash: float = 0.02  # per round: crash whoever leads (drives leader churn)
    mid_crash: float = 0.002  # per event: crash a node between two events of a round
    doomed_leader: float = 0.0  # chance a new leader crashes within a few events
    restart: float = 0.1  # per crashed node per round
    partition: float = 0.02  # per round
    heal: float = 0.08  # per round, while partitioned
    propose: float = 0.3  # per round
    conf_change: float = 0.03  # per round
    transfer: float = 0.01  # per round
    read: float = 0.1  # per round
    compact: float = 0.05  # per node per round
    max_inflight_msgs: int = 4
    max_size_per_msg: int = 200
    pre_vote: bool = True
    check_quorum: bool = True
    # The leader lease for reads (see the module docstring); drawn per seed
    # from a stream of its own, so seeds without it replay as they did before.
    read_lease: bool = False
    clock_slack: float = 0.1  # clocks run at 1 +- this (the driver's LEASE_CLOCK_SLACK)
    tick_skip: float = 0.0  # chance per node per round that its tick is skipped
    read_events: float = 0.0  # chance per event of a read; half of them at a leader, stale or not
    isolate_leader: float = 0.0  # per round: cut the leader off, both ways
    pair_cut: float = 0.0  # per round: cut two nodes apart, both ways (the others see both)
    # Draw the fault rates and flow-control limits above from the seed, so that
    # seeds range from calm to stormy and from one entry per append to many.
    randomize: bool = True

    def randomized(self, rng: random.Random) -> SimOptions:
        # A quarter of the seeds each run without pre-vote or without
        # check-quorum (and so without the leader lease on votes).
        base = dataclasses.replace(
            self, pre_vote=rng.random() >= 0.25, check_quorum=rng.random() >= 0.25
        )
        return base._randomized(rng)

    def with_lease_drawn(self, rng: random.Random) -> SimOptions:
        if not self.check_quorum or rng.random() < 0.5:
            return self
        return dataclasses.replace(
            self,
            read_lease=True,
            tick_skip=rng.choice([0.0, 0.05, 0.2]),
            read_events=rng.choice([0.02, 0.1, 0.3]),
            # The lease's whole risk: a leader that does not know it was
            # deposed, by a node it cannot reach, with the vote of one that
            # heard it lately (restarted since, or moved on by a transfer).
            isolate_leader=rng.choice([0.02, 0.05, 0.1]),
            pair_cut=rng.choice([0.02, 0.05, 0.1]),
            restart=rng.choice([self.restart, 0.5, 0.9]),
            transfer=rng.choice([self.transfer, 0.05, 0.1]),
        )

    @property
    def lease_duration(self) -> float:
        """In rounds: the driver's rule, with one tick per round (driver.lease_duration)."""
        return (self.election_tick - 1) * (1 - self.clock_slack)

    def _randomized(self, rng: random.Random) -> SimOptions:
        if rng.random() < 0.3:
            # Leader churn: leaders die young, one entry per append, one append
            # in flight, crashes between any two events. Old-term entries end up
            # on a majority while newer ones are scattered (Figure 8, §5.4.2).
            return dataclasses.replace(
                self,
                doomed_leader=rng.choice([0.5, 0.9]),
                max_size_per_msg=1,
                max_inflight_msgs=rng.choice([1, 2]),
                mid_crash=0.01,
                crash=0.02,
                restart=0.3,
                conf_change=rng.choice([0.03, 0.1]),
            )
        return dataclasses.replace(
            self,
            drop=rng.choice([0.0, 0.02, 0.05, 0.1, 0.2]),
            dup=rng.choice([0.0, 0.02, 0.05, 0.1]),
            delay=rng.choice([0.0, 0.1, 0.2, 0.4]),
            crash=rng.choice([0.0, 0.01, 0.02, 0.05]),
            leader_crash=rng.choice([0.0, 0.02, 0.05, 0.15]),
            mid_crash=rng.choice([0.0, 0.002, 0.01]),
            doomed_leader=rng.choice([0.0, 0.0, 0.2, 0.5]),
            events_per_round=rng.choice([5, 10, 20, 40]),
            restart=rng.choice([0.05, 0.1, 0.3]),
            partition=rng.choice([0.0, 0.02, 0.05, 0.1]),
            heal=rng.choice([0.05, 0.1, 0.2]),
            propose=rng.choice([0.2, 0.4, 0.8]),
            conf_change=rng.choice([0.02, 0.05, 0.1, 0.2]),
            compact=rng.choice([0.0, 0.05, 0.2]),
            max_inflight_msgs=rng.choice([1, 2, 4, 256]),
            max_size_per_msg=rng.choice([1, 64, 256, 1 << 16]),
        )


class SimFailure(AssertionError):
    pass


@dataclass
class SimNode:
    nid: int
    storage: MemoryStorage
    core: RaftCore | None = None
    pending: Ready | None = None
    # The state machine: durable, like a shard with its applied_index.
    sm_index: int = 0
    sm_hash: bytes = b""
    checked_commit: int = 0
    leader_term: int = 0  # last term in which we saw this node as leader
    disk_speed: float = 0.7  # chance a pending Ready is persisted when the node is picked
    doom: int = -1  # events left before this (new) leader crashes; -1: none planned
    read_contexts: ReadContexts | None = None  # the driver's, new with every start
    starts: int = 0
    clock_rate: float = 1.0  # this node's clock: clock_offset + clock_rate * real time
    clock_offset: float = 0.0

    @property
    def alive(self) -> bool:
        return self.core is not None


@dataclass
class SimStats:
    seed: int
    nodes: int
    events: int = 0
    ticks: int = 0
    committed: int = 0
    leaders: int = 0
    crashes: int = 0
    snapshots_sent: int = 0
    conf_changes: int = 0
    reads: int = 0
    lease_reads: int = 0  # asked of a leader holding its lease (answered at once)
    heal_ticks: int = 0


@dataclass
class _InFlight:
    m: Message
    not_before: int


@dataclass
class CommittedEntry:
    term: int
    type: EntryType
    data: bytes
    commit_term: int  # term of the node that first reported it committed


def _chain(h: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(h + data, digest_size=8).digest()


@dataclass
class Sim:
    seed: int
    opts: SimOptions = field(default_factory=SimOptions)
    verbose: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.lease_rng = random.Random(f"lease-{self.seed}")
        if self.opts.randomize:
            self.opts = self.opts.randomized(self.rng).with_lease_drawn(self.lease_rng)
        o = self.opts
        self.voters0 = list(range(1, o.nodes + 1))
        self.nodes: dict[int, SimNode] = {}
        self.spares = list(range(o.nodes + 1, o.nodes + o.spares + 1))
        self.net: list[_InFlight] = []
        self.cut: set[tuple[int, int]] = set()
        self.round = 0
        self.round_share = 0.0  # of the current round's events done: real time is the sum
        self.healed = False
        self.stats = SimStats(self.seed, o.nodes)
        # Checker state.
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[EntryType, bytes, int | None]] = {}
        self.committed: dict[int, CommittedEntry] = {}
        self.commit_index = 0
        self.state_at: dict[int, bytes] = {0: b""}
        self.reads: dict[tuple[int, bytes], int] = {}
        self.proposal_seq = 0
        self.trace: deque[str] = deque(maxlen=60)
        for nid in self.voters0:
            self.nodes[nid] = self._new_node(nid, MemoryStorage.bootstrap(self.voters0))
            self._start(self.nodes[nid])
        if self.opts.randomize:
            for nd in self.nodes.values():
                nd.disk_speed = self.rng.choice([0.1, 0.3, 0.7, 1.0])

    # ------------------------------------------------------------------
    # Node lifecycle
    # ------------------------------------------------------------------
    def _new_node(self, nid: int, storage: MemoryStorage) -> SimNode:
        nd = SimNode(nid, storage)
        if self.opts.read_lease:
            slack = self.opts.clock_slack
            nd.clock_rate = self.lease_rng.uniform(1 - slack, 1 + slack)
            nd.clock_offset = self.lease_rng.uniform(0, 1000)
        return nd

    def _clock(self, nd: SimNode) -> float:
        return nd.clock_offset + nd.clock_rate * (self.round + self.round_share)

    def _start(self, nd: SimNode) -> None:
        o = self.opts
        cfg = Config(
            id=nd.nid,
            storage=nd.storage,
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            applied=nd.sm_index,
            max_inflight_msgs=o.max_inflight_msgs,
            max_size_per_msg=o.max_size_per_msg,
            pre_vote=o.pre_vote,
            check_quorum=o.check_quorum,
            read_lease=o.lease_duration if o.read_lease else 0.0,
            clock=lambda: self._clock(nd),
            logger=_NULL_LOGGER,
        )
        nd.core = RaftCore(cfg, random.Random(self.rng.getrandbits(32)))
        # A new incarnation per start (the driver draws it from os.urandom), not
        # drawn from self.rng so that seeds keep replaying the same runs.
        nd.starts += 1
        nd.read_contexts = ReadContexts(nd.nid, nd.starts.to_bytes(8, "big"))
        nd.pending = None
        # Re-verify the whole durable log against what the cluster committed.
        nd.checked_commit = nd.storage.first_index() - 1
        nd.leader_term = 0
        self._check_node(nd)

    def _crash(self, nd: SimNode) -> None:
        self._note(f"crash {nd.nid}")
        nd.doom = -1
        nd.core = None
        nd.pending = None
        self.stats.crashes += 1

    # ------------------------------------------------------------------
    # Failure reporting
    # ------------------------------------------------------------------
    def _note(self, s: str) -> None:
        line = f"r{self.round} {s}"
        self.trace.append(line)
        if self.verbose:
            print(line)

    def fail(self, why: str) -> SimFailure:
        lines = "\n  ".join(self.trace)
        state = "\n  ".join(
            f"{nid}: {nd.core!r} sm={nd.sm_index}" if nd.core else f"{nid}: down sm={nd.sm_index}"
            for nid, nd in sorted(self.nodes.items())
        )
        return SimFailure(
            f"seed {self.seed} nodes {self.opts.nodes} round {self.round}: {why}\n"
            f"nodes:\n  {state}\nlast events:\n  {lines}\n"
            f"replay: {replay_command(self.seed, self.opts.nodes, self.opts.randomize)}"
        )

    # ------------------------------------------------------------------
    # Invariants
    # ------------------------------------------------------------------
    def _check_node(self, nd: SimNode) -> None:
        core = nd.core
        assert core is not None
        log = core.log
        if not (log.applied <= log.committed <= log.last_index()):
            raise self.fail(f"{nd.nid}: applied {log.applied} / commit {log.committed} disorder")
        if core.role is Role.LEADER:
            prev = self.leader_of_term.setdefault(core.term, nd.nid)
            if prev != nd.nid:
                raise self.fail(f"two leaders in term {core.term}: {prev} and {nd.nid}")
            if nd.leader_term != core.term:
                nd.leader_term = core.term
                self.stats.leaders += 1
                if not self.healed and self.rng.random() < self.opts.doomed_leader:
                    # Leaders that die young leave partly replicated entries of
                    # their term behind: the stuff of Figure 8 (§5.4.2).
                    nd.doom = self.rng.randint(0, 30)
                self._note(f"{nd.nid} leads term {core.term}")
                self._check_leader_completeness(nd)
        c = log.committed
        if c > nd.checked_commit:
            first = log.first_index()
            lo = max(nd.checked_commit + 1, first)
            if lo <= c:
                for e in log.slice(lo, c + 1):
                    self._record_committed(nd, e.index, e.term, e.type, e.data)
            nd.checked_commit = c

    def _record_committed(
        self, nd: SimNode, index: int, term: int, etype: EntryType, data: bytes
    ) -> None:
        assert nd.core is not None
        ce = self.committed.get(index)
        if ce is None:
            ce = CommittedEntry(term, etype, data, nd.core.term)
            self.committed[index] = ce
            if index > self.commit_index:
                self.commit_index = index
            # Leader completeness for leaders already elected in later terms.
            for other in self.nodes.values():
                if (
                    other.core is not None
                    and other.core.role is Role.LEADER
                    and other.core.term > ce.commit_term
                ):
                    self._check_has(other, index, ce, "leader completeness")
        elif (ce.term, ce.type, ce.data) != (term, etype, data):
            raise self.fail(
                f"{nd.nid}: committed entry {index} differs: has term {term} {data!r}, "
                f"cluster committed term {ce.term} {ce.data!r}"
            )

    def _check_has(self, nd: SimNode, index: int, ce: CommittedEntry, what: str) -> None:
        assert nd.core is not None
        log = nd.core.log
        if index < log.first_index():
            return  # compacted: covered by the snapshot check
        t = log.term_or_zero(index)
        if t != ce.term:
            raise self.fail(
                f"{what}: leader {nd.nid} (term {nd.core.term}) has term {t} at {index}, "
                f"committed term {ce.term} (committed in term {ce.commit_term})"
            )

    def _check_leader_completeness(self, nd: SimNode) -> None:
        assert nd.core is not None
        term = nd.core.term
        for index, ce in self.committed.items():
            if ce.commit_term < term:
                self._check_has(nd, index, ce, "leader completeness")

    def _check_log_matching(self, nd: SimNode, rd: Ready) -> None:
        assert nd.core is not None
        log = nd.core.log
        prev: int | None = None
        for i, e in enumerate(rd.entries):
            if i == 0:
                try:
                    prev = log.term(e.index - 1)
                except Exception:
                    prev = None
            key = (e.index, e.term)
            val = (e.type, e.data, prev)
            old = self.entry_at.get(key)
            if old is None:
                self.entry_at[key] = val
            elif old[:2] != val[:2] or (
                old[2] is not None and val[2] is not None and old[2] != val[2]
            ):
                raise self.fail(f"log matching: ({e.index}, {e.term}) is {val} on {nd.nid}, {old}")
            prev = e.term

    # ------------------------------------------------------------------
    # Driver phases
    # ------------------------------------------------------------------
    def _phase_a(self, nd: SimNode) -> None:
        core = nd.core
        assert core is not None
        rd = core.ready()
        self._check_log_matching(nd, rd)
        for m in rd.messages:
            self._send(m)
        nd.pending = rd

    def _phase_b(self, nd: SimNode) -> None:
        core, rd = nd.core, nd.pending
        assert core is not None
        assert rd is not None
        st = nd.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for m in rd.persisted_messages:
            self._send(m)
        if rd.snapshot is not None:
            s = rd.snapshot
            if s.meta.index <= nd.sm_index:
                raise self.fail(f"{nd.nid}: snapshot {s.meta.index} <= applied {nd.sm_index}")
            known = self.state_at.setdefault(s.meta.index, s.data)
            if known != s.data:
                raise self.fail(f"{nd.nid}: snapshot state at {s.meta.index} differs")
            nd.sm_index, nd.sm_hash = s.meta.index, s.data
            self._note(f"{nd.nid} installs snapshot {s.meta.index}")
        for e in rd.committed_entries:
            if e.index != nd.sm_index + 1:
                raise self.fail(f"{nd.nid}: applies {e.index} after {nd.sm_index}")
            ce = self.committed.get(e.index)
            if ce is None or (ce.term, ce.data) != (e.term, e.data):
                raise self.fail(f"{nd.nid}: applies {e.index}/{e.term} not the committed entry")
            nd.sm_hash = _chain(nd.sm_hash, e.data)
            nd.sm_index = e.index
            known = self.state_at.setdefault(e.index, nd.sm_hash)
            if known != nd.sm_hash:
                raise self.fail(f"{nd.nid}: state at {e.index} differs from another node's")
        for rs in rd.read_states:
            floor = self.reads.pop((nd.nid, rs.context), None)
            if floor is not None and rs.index < floor:
                raise self.fail(
                    f"{nd.nid}: read index {rs.index} below commit {floor} at request time"
                )
        nd.pending = None
        core.advance(rd)

    def _send(self, m: Message) -> None:
        if m.type is MT.SNAP:
            self.stats.snapshots_sent += 1
        delay = 0
        while self.rng.random() < self.opts.delay and not self.healed and delay < 5:
            delay += 1
        self.net.append(_InFlight(m, self.round + delay))

    def _deliver(self, f: _InFlight) -> None:
        m = f.m
        nd = self.nodes.get(m.to)
        lost = (
            nd is None
            or nd.core is None
            or (m.frm, m.to) in self.cut
            or (not self.healed and self.rng.random() < self.opts.drop)
        )
        if m.type is MT.SNAP:
            # The transport knows whether a snapshot stream completed.
            sender = self.nodes[m.frm].core
            if sender is not None:
                sender.report_snapshot(m.to, not lost)
                self._check_node(self.nodes[m.frm])
        if lost:
            if m.type is MT.APP and (nd is None or nd.core is None or (m.frm, m.to) in self.cut):
                # A broken stream is something the transport notices.
                sender = self.nodes[m.frm].core
                if sender is not None and self.rng.random() < 0.5:
                    sender.report_unreachable(m.to)
                    self._check_node(self.nodes[m.frm])
            return
        assert nd is not None
        assert nd.core is not None
        if not self.healed and self.rng.random() < self.opts.dup:
            self.net.append(_InFlight(m, self.round + 1))
        nd.core.step(m)
        self._check_node(nd)

    # ------------------------------------------------------------------
    # Workload and faults
    # ------------------------------------------------------------------
    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        best_term = -1
        for nd in self.nodes.values():
            core = nd.core
            if core is not None and core.role is Role.LEADER and core.term > best_term:
                best, best_term = nd, core.term
        return best

    def _alive(self) -> list[SimNode]:
        return [nd for nd in self.nodes.values() if nd.core is not None]

    def _propose(self, nd: SimNode, tag: str = "p") -> tuple[int, int, bytes] | None:
        assert nd.core is not None
        n = self.rng.randint(1, 3)
        datas = []
        for _ in range(n):
            self.proposal_seq += 1
            datas.append(f"{tag}{self.seed}-{self.proposal_seq}".encode())
        try:
            p = nd.core.propose(datas)
        except ProposalDroppedError:
            return None
        finally:
            self._check_node(nd)
        self._note(f"{nd.nid} proposes {p.first_index}..{p.last_index}")
        return p.term, p.last_index, datas[-1]

    def _conf_change(self, nd: SimNode) -> None:
        core = nd.core
        assert core is not None
        cs = core.conf
        choices: list[ConfChange] = []
        for s in self.spares:
            if s not in self.nodes:
                choices.append(ConfChange(ConfChangeType.ADD_LEARNER, s))
        for lrn in cs.learners:
            choices.append(ConfChange(ConfChangeType.ADD_VOTER, lrn))
            choices.append(ConfChange(ConfChangeType.REMOVE_NODE, lrn))
        if len(cs.voters) > 2:
            for v in cs.voters:
                choices.append(ConfChange(ConfChangeType.REMOVE_NODE, v))
                choices.append(ConfChange(ConfChangeType.ADD_LEARNER, v))
        if not choices:
            return
        cc = self.rng.choice(choices)
        try:
            p = core.propose_conf_change(cc)
        except ProposalDroppedError as e:
            self._note(f"{nd.nid} conf change {cc.type.name} {cc.node_id} refused: {e}")
            self._check_node(nd)
            return
        self.stats.conf_changes += 1
        self._note(f"{nd.nid} proposes {cc.type.name} {cc.node_id} at {p.last_index}")
        if cc.node_id not in self.nodes:
            new = self._new_node(cc.node_id, MemoryStorage(ConfState()))
            self.nodes[cc.node_id] = new
            self._start(new)
        self._check_node(nd)

    def _faults(self) -> None:
        o, rng = self.opts, self.rng
        lead = self._leader()
        if lead is not None and rng.random() < o.leader_crash:
            self._crash(lead)
        for nd in list(self.nodes.values()):
            if nd.core is not None and rng.random() < o.crash:
                self._crash(nd)
            elif nd.core is None and rng.random() < o.restart:
                self._note(f"restart {nd.nid}")
                self._start(nd)
        if self.cut and rng.random() < o.heal:
            self._note("heal partition")
            self.cut.clear()
        elif o.isolate_leader and lead is not None and rng.random() < o.isolate_leader:
            ids = sorted(self.nodes)
            self.cut.update((a, lead.nid) for a in ids if a != lead.nid)
            self.cut.update((lead.nid, b) for b in ids if b != lead.nid)
            self._note(f"isolate leader {lead.nid}")
        elif o.pair_cut and rng.random() < o.pair_cut:
            a, b = rng.sample(sorted(self.nodes), 2)
            self.cut.update({(a, b), (b, a)})
            self._note(f"cut {a} <-> {b}")
        elif rng.random() < o.partition:
            ids = sorted(self.nodes)
            if rng.random() < 0.5:
                side = {i for i in ids if rng.random() < 0.5}
                for a in ids:
                    for b in ids:
                        if (a in side) != (b in side):
                            self.cut.add((a, b))
                self._note(f"partition {sorted(side)} | {sorted(set(ids) - side)}")
            else:
                a, b = rng.sample(ids, 2)
                self.cut.add((a, b))
                self._note(f"one-way cut {a}->{b}")

    def _workload(self) -> None:
        o, rng = self.opts, self.rng
        lead = self._leader()
        if rng.random() < o.propose:
            target = lead if lead is not None and rng.random() < 0.9 else None
            if target is None:
                alive = self._alive()
                target = rng.choice(alive) if alive else None
            if target is not None:
                self._propose(target)
        if lead is not None and rng.random() < o.conf_change:
            self._conf_change(lead)
        if lead is not None and lead.core is not None and rng.random() < o.transfer:
            to = rng.choice(sorted(lead.core.conf.voters))
            self._note(f"{lead.nid} transfers leadership to {to}")
            lead.core.transfer_leader(to)
            self._check_node(lead)
        if rng.random() < o.read:
            self._read()
        for nd in self._alive():
            if nd.pending is None and rng.random() < o.compact:
                self._compact(nd)

    def _read(self, at_leaders: bool = False) -> None:
        alive = self._alive()
        leaders = [nd for nd in alive if nd.core is not None and nd.core.role is Role.LEADER]
        if at_leaders and leaders:
            alive = leaders  # the stale ones too: they answer from a lease, if any
        if not alive:
            return
        nd = self.rng.choice(alive)
        assert nd.core is not None
        assert nd.read_contexts is not None
        ctx = nd.read_contexts.next()
        leased = nd.core.has_read_lease()
        try:
            nd.core.read_index(ctx)
        except ProposalDroppedError:
            pass
        else:
            self._note(f"{nd.nid} asks for a read index ({ctx.hex()}){' on its lease' * leased}")
            self.stats.lease_reads += leased
            self.reads[(nd.nid, ctx)] = self.commit_index
            self.stats.reads += 1
        self._check_node(nd)

    def _compact(self, nd: SimNode) -> None:
        core = nd.core
        assert core is not None
        st = nd.storage
        i = nd.sm_index
        if i <= st.snapshot().meta.index or i != core.log.applied:
            return
        st.create_snapshot(i, core.conf_state_at(i), nd.sm_hash)
        keep = self.rng.randint(0, 5)
        if i - keep >= st.first_index():
            st.compact(i - keep)
            self._note(f"{nd.nid} compacts to {i - keep} (snapshot {i})")

    # ------------------------------------------------------------------
    # Main loop
    # ------------------------------------------------------------------
    def _events(self, budget: int) -> None:
        rng = self.rng
        for k in range(budget):
            self.round_share = k / (budget + 1)
            if not self.healed:
                self._crash_faults()
                if self.opts.read_events and rng.random() < self.opts.read_events:
                    self._read(at_leaders=rng.random() < 0.5)
            ready_nodes = [
                nd
                for nd in self.nodes.values()
                if nd.core is not None and (nd.pending is not None or nd.core.has_ready())
            ]
            deliverable = [i for i, f in enumerate(self.net) if f.not_before <= self.round]
            if not ready_nodes and not deliverable:
                return
            self.stats.events += 1
            if deliverable and (not ready_nodes or rng.random() < 0.6):
                # Faults reorder messages; a healed network is FIFO (one ordered
                # stream per peer, as the gRPC transport provides).
                f = self.net.pop(deliverable[0] if self.healed else rng.choice(deliverable))
                self._deliver(f)
            else:
                nd = rng.choice(ready_nodes)
                if nd.pending is None:
                    self._phase_a(nd)
                # Sometimes let other events slip in between taking a Ready and
                # persisting it (a slow disk); once healed, persist at once.
                elif self.healed or rng.random() < nd.disk_speed:
                    self._phase_b(nd)
                if nd.core is not None:
                    self._check_node(nd)

    def _crash_faults(self) -> None:
        """Crashes at any point between two events: between taking a Ready and
        persisting it, between a step and the next Ready..."""
        rng = self.rng
        for nd in self.nodes.values():
            if nd.doom == 0 and nd.core is not None:
                self._crash(nd)
            if nd.doom >= 0:
                nd.doom -= 1
        if rng.random() < self.opts.mid_crash:
            lead = self._leader()
            if lead is not None and rng.random() < 0.5:
                self._crash(lead)
            else:
                alive = self._alive()
                if alive:
                    self._crash(rng.choice(alive))

    def _tick(self) -> None:
        self.round += 1
        self.round_share = 0.0
        self.stats.ticks += 1
        for nd in self._alive():
            assert nd.core is not None
            if not self.healed and self.lease_rng.random() < self.opts.tick_skip:
                continue  # a stalled loop skips the tick (driver: never a burst)
            nd.core.tick()
            self._check_node(nd)

    def run(self) -> SimStats:
        o = self.opts
        for _ in range(o.fault_rounds):
            self._faults()
            self._workload()
            self._tick()
            self._events(o.events_per_round)
        self._heal_and_check_liveness()
        self._final_checks()
        self.stats.committed = self.commit_index
        return self.stats

    def _heal_and_check_liveness(self) -> None:
        o = self.opts
        self.healed = True
        self.cut.clear()
        for f in self.net:
            f.not_before = self.round
        for nd in self.nodes.values():
            if nd.core is None:
                self._note(f"restart {nd.nid}")
                self._start(nd)
        self._note("healed")
        start = self.round
        pending: tuple[int, int, bytes] | None = None
        done = False
        while self.round - start < o.heal_rounds:
            lead = self._leader()
            if pending is not None:
                term, index, data = pending
                ce = self.committed.get(index)
                if ce is not None:
                    if ce.data == data:
                        done = True
                    else:
                        pending = None  # lost to a leader change: propose again
                elif lead is not None and lead.core is not None and lead.core.term != term:
                    pending = None  # proposed to a deposed leader: a client retries
            if done and self._converged():
                self.stats.heal_ticks = self.round - start
                return
            if pending is None and lead is not None:
                pending = self._propose(lead, "live")
            self._tick()
            self._events(20_000)  # a healed network is fast compared to a tick
        raise self.fail(
            f"liveness: {'not all members applied' if done else 'no proposal committed'} "
            f"within {o.heal_rounds} ticks of healing"
        )

    def _converged(self) -> bool:
        lead = self._leader()
        if lead is None or lead.core is None:
            return False
        for nid in lead.core.conf.members():
            nd = self.nodes[nid]
            if nd.core is None or nd.sm_index < self.commit_index:
                return False
        return True

    def _final_checks(self) -> None:
        for nd in self.nodes.values():
            core = nd.core
            assert core is not None
            log = core.log
            for e in log.slice(log.first_index(), log.committed + 1):
                ce = self.committed.get(e.index)
                if ce is None or (ce.term, ce.data) != (e.term, e.data):
                    raise self.fail(f"{nd.nid}: final log differs at {e.index}")


def replay_command(seed: int, nodes: int, randomize: bool = True) -> str:
    fixed = "" if randomize else " --fixed"
    return f"python -m tests.raft.sim --seed {seed} --nodes {nodes}{fixed} -v"


def run_seed(seed: int, nodes: int, verbose: bool = False, randomize: bool = True) -> SimStats:
    return Sim(seed, SimOptions(nodes=nodes, randomize=randomize), verbose=verbose).run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.raft.sim", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run only this seed (replay)")
    ap.add_argument("--nodes", default="3,5", help="cluster sizes, comma-separated")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every event")
    ap.add_argument(
        "--fixed", action="store_true", help="default fault rates instead of per-seed ones"
    )
    ap.add_argument("--keep-going", action="store_true", help="do not stop at the first failure")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in str(args.nodes).split(",")]
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    failures = 0
    t0 = time.monotonic()
    runs = 0
    totals: dict[str, int] = {}
    max_heal = 0
    for n in sizes:
        for seed in seeds:
            runs += 1
            try:
                st = run_seed(seed, n, args.verbose, not args.fixed)
            except SimFailure as e:
                failures += 1
                print(str(e), file=sys.stderr)
                print(f"FAILED: {replay_command(seed, n, not args.fixed)}")
                if not args.keep_going:
                    return 1
            except Exception as e:
                failures += 1
                print(f"seed {seed} nodes {n} crashed: {e!r}", file=sys.stderr)
                print(f"FAILED: {replay_command(seed, n, not args.fixed)}")
                if not args.keep_going:
                    raise
            else:
                if args.seed is not None:
                    print(st)
                for k, v in dataclasses.asdict(st).items():
                    if k not in ("seed", "nodes"):
                        totals[k] = totals.get(k, 0) + v
                max_heal = max(max_heal, st.heal_ticks)
    dt = time.monotonic() - t0
    print(f"{runs - failures}/{runs} runs clean (sizes {sizes}) in {dt:.1f}s")
    if totals:
        print(
            "totals: "
            + " ".join(f"{k}={v}" for k, v in totals.items())
            + f"; slowest recovery after healing: {max_heal} ticks"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
