"""The Raft driver: the asyncio task that ticks the core, feeds it messages
and proposals, persists each Ready, sends, and publishes what is committed.

It is the only code that knows about time and I/O (etcd's raft.Node loop).
The ordering rules of a Ready (messages.Ready) are followed to the letter:
  1. rd.messages go out at once (a leader's appends, while its own fsync runs);
  2. snapshot, entries and hard state are written, fsynced if must_sync;
  3. only then rd.persisted_messages (vote grants, append acks) go out;
  4. committed entries are published, read states answered, then advance().
Committed entries already on disk are published before step 2 (_process).
Proposals, reads and admin requests that arrive while an fsync runs are
handled together in the next round: group commit for free.

Installing a leader's snapshot (§7) is three steps, in this order, so that a
crash between any two restarts cleanly (tests/replication/test_install_crash.py):
  a. keep: the verified files move to raft/snapshots/<S>, durably
     (on_snapshot_accepted); the log does not know them yet, so a crash here
     leaves the old log and the old shards, and the leader sends it again;
  b. log: the snapshot record goes into the WAL with the Ready (step 2): from
     now on the log starts at S + 1 and the files it names are kept;
  c. install: the shards are replaced by the kept files and the applied index
     set to S (on_install_snapshot). A crash after b and before c finishes
     leaves shards behind S under a log that starts after S: the next start
     installs the kept files again before anything is applied or served
     (`before_start`). The shards never get ahead of the log they came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardlite.replication.durable import crash_point
from shardlite.replication.observer import NULL_OBSERVER, Observer

from .core import Config, RaftCore
from .errors import DropReason, ProposalDroppedError
from .members import MemberBook
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    Ready,
    Role,
    Snapshot,
)
from .read_context import ReadContexts
from .transport import PeerTransport
from .wal import DiskStorage

log = logging.getLogger(__name__)

MAX_READY_ROUNDS = 64
# Bytes of appends in flight to one follower (flow control, etcd-io/raft MaxInflightBytes).
MAX_INFLIGHT_BYTES = 16 << 20
# How much slower than a follower's ticks the leader's clock may run: the read
# lease (lease.py) lasts this fraction less than the election timeout it rests on.
LEASE_CLOCK_SLACK = 0.1
# Ask again for a read index not answered within this many ticks.
READ_RETRY_TICKS = 5


class NamedLogger:
    """The core's log lines with member names instead of their 63-bit ids."""

    def __init__(self, logger: logging.Logger, members: MemberBook) -> None:
        self.logger = logger
        self.members = members

    def _name(self, arg: object) -> object:
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > 1 << 32:
            return self.members.name(arg)
        if isinstance(arg, list | tuple | set | frozenset):
            return [self._name(a) for a in sorted(arg)]
        return arg

    def _log(self, level: int, msg: str, args: tuple[object, ...]) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg.replace("%d", "%s"), *(self._name(a) for a in args))

    def debug(self, msg: str, *args: object) -> None:
        self._log(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._log(logging.INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._log(logging.WARNING, msg, args)


class DriverFailed(Exception):
    """The driver's loop died of a fault of the machine (an fsync error, a
    snapshot that cannot be installed): nothing more will be persisted here."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the raft loop stopped: {type(cause).__name__}: {cause}")
        self.cause = cause


class DriverStopped(Exception):
    """The driver was closed: it takes no more work."""


@dataclass
class _Pending:
    term: int
    future: asyncio.Future[int]


class RaftDriver:
    def __init__(
        self,
        node_id: int,
        storage: DiskStorage,
        members: MemberBook,
        *,
        tick_interval: float = 0.1,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        read_lease: bool = False,
        applied: int = 0,
        rng: random.Random | None = None,
        on_snapshot_accepted: Callable[[Snapshot], Awaitable[None]] | None = None,
        on_install_snapshot: Callable[[Snapshot], Awaitable[None]] | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        snapshot_source: Callable[[int], Path | None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.id = node_id
        self.storage = storage
        self.members = members
        self.tick_interval = tick_interval
        hs, _ = storage.initial_state()
        applied = min(applied, hs.commit)
        applied = max(applied, storage.snapshot().meta.index)
        self.core = RaftCore(
            Config(
                id=node_id,
                storage=storage,
                election_tick=election_tick,
                heartbeat_tick=heartbeat_tick,
                applied=applied,
                # Heartbeats share a follower's TCP stream with the appends: with
                # 256 appends of up to a large entry each in flight, a lagging
                # follower's stream held up to 1 GB ahead of them (elections
                # during catch-up). etcd-io/raft's MaxInflightBytes does the same.
                max_inflight_bytes=MAX_INFLIGHT_BYTES,
                read_lease=lease_duration(tick_interval, election_tick) if read_lease else 0.0,
                clock=lease_clock,
                logger=NamedLogger(logging.getLogger("shardlite.raft.core"), members),
            ),
            rng or random.Random(),
        )
        self.transport = PeerTransport(
            self.members.address,
            self._report_unreachable,
            snapshot_source=snapshot_source,
            on_snapshot_status=self._report_snapshot,
        )
        self.on_snapshot_accepted = on_snapshot_accepted
        self.on_install_snapshot = on_install_snapshot
        self.before_start = before_start
        # True from keeping a leader's snapshot until it is installed: the log
        # already starts after it, the state machine is not there yet.
        self.installing = False
        # Invariant: every entry up to commit_published is durable here and has
        # been handed to subscribers, in order.
        self.commit_published = applied
        self.committed = asyncio.Condition()
        self.leader_changed = asyncio.Event()
        self.role = Role.FOLLOWER
        self.leader = NONE
        self._inbox: list[Message] = []
        self._proposals: list[tuple[list[bytes], asyncio.Future[tuple[int, int]]]] = []
        self._reads: list[asyncio.Future[int]] = []
        self._calls: list[tuple[Callable[[RaftCore], Any], asyncio.Future[Any]]] = []
        self._jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._unreachable: set[int] = set()
        self._snapshot_reports: list[tuple[int, bool]] = []
        self._pending: dict[int, _Pending] = {}
        self._read_waiters: dict[bytes, list[asyncio.Future[int]]] = {}
        # When each outstanding read index was asked for (in ticks).
        self._read_asked: dict[bytes, int] = {}
        self._ticks = 0
        self._read_contexts = ReadContexts(node_id, os.urandom(8))
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Fail-stop: set once when the loop dies; then every waiter and every
        # new request fails at once with it, and on_fatal hears of it once.
        self.failed: DriverFailed | None = None
        self.on_fatal = on_fatal
        self.observer: Observer = NULL_OBSERVER
        # (role, term, leader) as last reported: elections and leader changes.
        self._seen = (Role.FOLLOWER, self.core.term, NONE)
        self._last_leader = NONE  # the last leader known, never NONE once one was

    # -- inputs (any coroutine on the loop) -----------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="raft-driver")

    def deliver(self, m: Message) -> None:
        """A message from a peer (called by the transport's receiver); dropped
        once the loop is gone, so the inbox cannot grow without it."""
        if not self._closing and self.failed is None:
            self._inbox.append(m)
            self._wake.set()

    def check_alive(self) -> None:
        """Raise DriverFailed or DriverStopped if the loop takes no more work:
        anything queued now would never be answered."""
        if self.failed is not None:
            raise self.failed
        if self._closing or (self._task is not None and self._task.done()):
            raise DriverStopped("the raft loop is stopped")

    @property
    def queued_proposals(self) -> int:
        """Entries waiting for the loop to hand them to the core."""
        return sum(len(datas) for datas, _ in self._proposals)

    async def propose(self, data: bytes) -> tuple[int, int]:
        """Append `data` as a log entry on the leader; (term, index) where it landed.
        Raises ProposalDroppedError when this node cannot take it, DriverFailed
        or DriverStopped when the loop is gone. A caller that gives up (cancels)
        before the loop took it leaves nothing proposed."""
        return await self.propose_many([data])

    async def propose_many(self, datas: list[bytes]) -> tuple[int, int]:
        """Append every one of `datas` as consecutive log entries, in order, all
        or none; (term, index of the first). One future for the lot: a caller
        with many entries pays for one wake-up, not one per entry."""
        self.check_alive()
        if not datas:
            raise ValueError("propose_many needs at least one entry")
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._proposals.append((datas, future))
        self._wake.set()
        return await future

    def wait_committed(self, term: int, index: int) -> asyncio.Future[int]:
        """Resolves with `index` when the entry (term, index) commits; raises
        ProposalDroppedError(NOT_LEADER) if another entry commits there instead."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # The caller may give up (a timeout) before the outcome is known.
        future.add_done_callback(_retrieve)
        if self.failed is not None:
            future.set_exception(self.failed)
            return future
        if index <= self.commit_published:
            try:
                same = self.storage.term(index) == term
            except Exception:
                same = False
            if same:
                future.set_result(index)
            else:
                future.set_exception(ProposalDroppedError(DropReason.NOT_LEADER, self.leader))
            return future
        self._pending[index] = _Pending(term, future)
        return future

    def lease_read_index(self) -> int | None:
        """The commit index, if the leader lease vouches that it is the latest
        (dissertation §6.4.1): a linearizable read may wait for it without a
        round through the loop. None: ask ``read_index``."""
        if self.failed is None and self.core.has_read_lease():
            return self.core.log.committed
        return None

    async def read_index(self) -> int:
        """A commit index that a linearizable read must wait for (dissertation §6.4)."""
        self.check_alive()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append(future)
        self._wake.set()
        return await future

    async def call(self, fn: Callable[[RaftCore], Any]) -> Any:
        """Run `fn(core)` inside the loop (admin requests: conf change, transfer)."""
        self.check_alive()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.append((fn, future))
        self._wake.set()
        return await future

    async def exclusive(self, job: Callable[[], Any]) -> Any:
        """Run blocking `job` on a worker thread between two rounds of the
        loop, while no save runs (the WAL rewrite after a compaction). An
        error in it is a fault of the disk: the loop stops (fail-stop)."""
        self.check_alive()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        self._wake.set()
        return await future

    def _report_unreachable(self, nid: int) -> None:
        self._unreachable.add(nid)
        self._wake.set()

    def _report_snapshot(self, nid: int, ok: bool) -> None:
        self._snapshot_reports.append((nid, ok))
        self._wake.set()

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_interval
        timer: asyncio.TimerHandle | None = None
        try:
            if self.before_start is not None:
                self.installing = True
                await self.before_start()
                self.installing = False
            while not self._closing:
                if not self._wake.is_set():
                    timer = loop.call_at(next_tick, self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
                self._wake.clear()
                if loop.time() >= next_tick:
                    # One tick per interval, never two closer than that: after a
                    # stall (a slow fsync) no burst of ticks starts elections, and
                    # an election timeout of ticks takes at least election_tick - 1
                    # intervals, which the read lease (lease.py) counts on.
                    self.core.tick()
                    self._ticks += 1
                    self._reask_lost_reads()
                    next_tick = loop.time() + self.tick_interval
                self._feed()
                self.transport.send(self.core.take_messages())
                await self._handle_ready()
                await self._run_jobs()
        except asyncio.CancelledError:
            self._fail_waiters(DriverStopped("the raft loop was cancelled"))
            raise
        except BaseException as exc:
            # Fail-stop (issue 11 item 4): log, fail every waiter with the
            # cause, refuse new work, and tell the owner once. Not re-raised:
            # nobody awaits this task, on_fatal is how the fault is reported.
            log.critical("raft driver stopped: %s", exc, exc_info=True)
            self.failed = DriverFailed(exc)
            self._inbox.clear()
            # No longer leading: nothing will be sent or persisted by this loop.
            self.role, self.leader = Role.FOLLOWER, NONE
            self.leader_changed.set()
            self._fail_waiters(self.failed)
            async with self.committed:
                self.committed.notify_all()
            if self.on_fatal is not None:
                try:
                    self.on_fatal(exc)
                except Exception:
                    log.exception("on_fatal failed")
        else:
            self._fail_waiters(DriverStopped("the raft loop stopped"))

    def _feed(self) -> None:
        core = self.core
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            try:
                core.step(m)
            except Exception:
                log.exception("step failed for %s", m.type.name)
        for nid in self._unreachable:
            core.report_unreachable(nid)
        self._unreachable.clear()
        reports, self._snapshot_reports = self._snapshot_reports, []
        for nid, ok in reports:
            core.report_snapshot(nid, ok)
        proposals, self._proposals = self._proposals, []
        live = [(datas, f) for datas, f in proposals if not f.done()]
        if live:
            try:
                proposed = core.propose([d for datas, _ in live for d in datas])
            except ProposalDroppedError as exc:
                for _, f in live:
                    f.set_exception(exc)
            else:
                first = proposed.first_index
                for datas, f in live:
                    f.set_result((proposed.term, first))
                    first += len(datas)
        # Reads whose answer was lost (and whose callers gave up) are forgotten.
        for ctx in [c for c, fs in self._read_waiters.items() if all(f.done() for f in fs)]:
            del self._read_waiters[ctx]
            self._read_asked.pop(ctx, None)
        waiting, self._reads = self._reads, []
        reads = [r for r in waiting if not r.done()]
        if reads and self._read_asked and not core.has_read_lease():
            # A round is in flight: these reads arrived after it began, so its
            # index may be too old for them; they wait together for the next
            # round, started once this one is answered (dissertation §6.4:
            # one heartbeat round per batch of reads, not one per read).
            self._reads = reads
        elif reads:
            # One ReadIndex round answers every read that arrived meanwhile.
            ctx = self._read_contexts.next()
            try:
                core.read_index(ctx)
            except ProposalDroppedError as exc:
                for r in reads:
                    r.set_exception(exc)
            else:
                self._read_waiters[ctx] = reads
                self._read_asked[ctx] = self._ticks
        calls, self._calls = self._calls, []
        for fn, f in calls:
            if f.done():
                continue
            try:
                f.set_result(fn(core))
            except Exception as exc:
                f.set_exception(exc)

    async def _run_jobs(self) -> None:
        jobs, self._jobs = self._jobs, []
        for job, future in jobs:
            try:
                result = await asyncio.shield(asyncio.to_thread(job))
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                raise
            if not future.done():
                future.set_result(result)

    async def _handle_ready(self) -> None:
        core = self.core
        for _ in range(MAX_READY_ROUNDS):
            if not core.has_ready():
                return
            rd = core.ready()
            await self._process(rd)
            core.advance(rd)
            if rd.soft_state is not None or rd.hard_state is not None:
                self._report_roles()
            self.transport.send(core.take_messages())
        self._wake.set()  # more work; come back after others had a turn

    async def _process(self, rd: Ready) -> None:
        self.transport.send(rd.messages)
        if rd.entries:
            self.members.learn_from(rd.entries)
        if rd.snapshot is not None and self.on_snapshot_accepted is not None:
            # Step a (module docstring): the files are kept before the log names them.
            self.installing = True
            await self.on_snapshot_accepted(rd.snapshot)
        # Committed entries already durable here go out before this Ready's
        # save, so applying them overlaps the fsync of the new ones; a Ready that
        # only moves the commit index (nothing must_sync) is saved after the
        # publish altogether. A commit index lost in a crash is learnt again
        # from the leader, and replay is idempotent.
        committed = rd.committed_entries
        durable = self._durable_prefix(rd)
        if durable:
            await self._publish_committed(durable)
            committed = committed[len(durable) :]
        save_first = bool(rd.entries) or rd.snapshot is not None or rd.must_sync
        if save_first:
            await self._save(rd)
        # Durable in the log: a restart finishes the install, so the ack may go.
        self.transport.send(rd.persisted_messages)
        if rd.snapshot is not None:
            if self.on_install_snapshot is not None:
                # Steps b (done: the save above) and c.
                crash_point("snapshot-install:logged")
                await self.on_install_snapshot(rd.snapshot)
            self.installing = False
            self.commit_published = max(self.commit_published, rd.snapshot.meta.index)
            async with self.committed:
                self.committed.notify_all()
        if committed:
            await self._publish_committed(committed)
        for rs in rd.read_states:
            self._read_asked.pop(rs.context, None)
            for f in self._read_waiters.pop(rs.context, []):
                if not f.done():
                    f.set_result(rs.index)
            if self._reads:
                self._wake.set()  # the reads that waited for this round: the next one
        if rd.soft_state is not None:
            was_leader, old_leader = self.role is Role.LEADER, self.leader
            self.role, self.leader = rd.soft_state.role, rd.soft_state.leader
            self.leader_changed.set()
            self.leader_changed = asyncio.Event()
            if was_leader and self.role is not Role.LEADER:
                # Reads waiting on our leadership can no longer be confirmed.
                self._fail_reads(ProposalDroppedError(DropReason.NOT_LEADER, self.leader))
            elif self.leader != old_leader:
                # The old leader will not answer: ask the new one now, not
                # after READ_RETRY_TICKS (and unblock the reads queued behind).
                self._reask_reads(list(self._read_asked))
        if not save_first and rd.hard_state is not None:
            await self._save(rd)

    def _report_roles(self) -> None:
        """One log line and one observer call per election started or ended
        and per leader change, from the core's role, term and leader."""
        core = self.core
        now = (core.role, core.term, core.lead)
        (role, term, leader), self._seen = self._seen, now
        if now == (role, term, leader):
            return
        name = self.members.name
        if role is Role.CANDIDATE and (now[0] is not Role.CANDIDATE or now[1] != term):
            won = now[0] is Role.LEADER and now[1] == term
            log.info(
                "election won" if won else "election lost",
                extra={"term": term, "leader": name(now[2])},
            )
            self.observer.election_ended(term, won)
        if now[0] is Role.CANDIDATE and (role is not Role.CANDIDATE or now[1] != term):
            log.info("election started", extra={"term": now[1]})
            self.observer.election_started(now[1])
        if now[2] not in (NONE, self._last_leader):
            log.info(
                "leader changed",
                extra={"term": now[1], "leader": name(now[2]), "previous": name(self._last_leader)},
            )
            self._last_leader = now[2]
            self.observer.leader_changed(name(now[2]), now[1])

    def _report_membership(self, e: Entry) -> None:
        cc = ConfChange.decode(e.data)
        change = _CHANGE_NAMES[cc.type]
        member = self.members.name(cc.node_id)
        log.info(
            "membership changed",
            extra={"change": change, "member": member, "index": e.index, "term": e.term},
        )
        self.observer.membership_changed(change, member, e.index)

    def _durable_prefix(self, rd: Ready) -> list[Entry]:
        """The committed entries of `rd` that are already in the log on disk
        (before this Ready's own entries, which may replace an uncommitted tail)."""
        if rd.snapshot is not None or not rd.committed_entries:
            return []
        stable = self.storage.last_index()
        if rd.entries:
            stable = min(stable, rd.entries[0].index - 1)
        committed = rd.committed_entries
        if committed[-1].index <= stable:
            return committed
        return [e for e in committed if e.index <= stable]

    async def _save(self, rd: Ready) -> None:
        if not rd.must_sync and not rd.entries and rd.snapshot is None:
            # Only the commit index moved (volatile state, Figure 2 of the Raft
            # paper: a restart learns it again): a small write, no fsync. Here,
            # not on a thread: a thread hop costs ~100 us of CPU and a wake-up on this
            # machine, more than the write, and every commit makes one.
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot, False)
            return
        await asyncio.shield(
            asyncio.to_thread(
                self.storage.save, rd.hard_state, rd.entries, rd.snapshot, rd.must_sync
            )
        )

    async def _publish_committed(self, entries: list[Entry]) -> None:
        self._publish(entries)
        async with self.committed:
            self.committed.notify_all()

    def _publish(self, entries: list[Entry]) -> None:
        self.members.learn_from(entries)
        for e in entries:
            if e.type is EntryType.CONF_CHANGE:
                self._report_membership(e)
            pending = self._pending.pop(e.index, None)
            if pending is not None and not pending.future.done():
                if pending.term == e.term:
                    pending.future.set_result(e.index)
                else:
                    pending.future.set_exception(
                        ProposalDroppedError(DropReason.NOT_LEADER, self.leader)
                    )
        self.commit_published = entries[-1].index

    def _reask_lost_reads(self) -> None:
        """A read index request or its answer travels as one message that may be
        lost (Raft does not retransmit it): unanswered after a few heartbeats,
        the waiting reads are asked for again, under a new context."""
        self._reask_reads(
            [c for c, t in self._read_asked.items() if self._ticks - t >= READ_RETRY_TICKS]
        )

    def _reask_reads(self, contexts: list[bytes]) -> None:
        """The reads waiting under `contexts` go back in the queue, for a new round."""
        for ctx in contexts:
            del self._read_asked[ctx]
            self._reads.extend(f for f in self._read_waiters.pop(ctx, []) if not f.done())
        if contexts:
            self._wake.set()

    def _fail_reads(self, exc: Exception) -> None:
        for futures in self._read_waiters.values():
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
        self._read_waiters.clear()
        self._read_asked.clear()

    def _fail_waiters(self, exc: Exception) -> None:
        self._fail_reads(exc)
        for _, proposal in self._proposals:
            if not proposal.done():
                proposal.set_exception(exc)
        self._proposals.clear()
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self._pending.clear()
        for r in self._reads:
            if not r.done():
                r.set_exception(exc)
        self._reads.clear()
        for _, cf in self._calls:
            if not cf.done():
                cf.set_exception(exc)
        self._calls.clear()
        for _, jf in self._jobs:
            if not jf.done():
                jf.set_exception(exc)
        self._jobs.clear()

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    async def close(self) -> None:
        """Stop after the current round (never in the middle of a write)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.transport.close()
        async with self.committed:
            self.committed.notify_all()
        if self.failed is None:
            await asyncio.to_thread(self.storage.close)
        else:
            with contextlib.suppress(OSError):  # the disk already failed once
                await asyncio.to_thread(self.storage.close)


_CHANGE_NAMES = {
    ConfChangeType.ADD_VOTER: "add-voter",
    ConfChangeType.ADD_LEARNER: "add-learner",
    ConfChangeType.REMOVE_NODE: "remove",
}


def lease_duration(tick_interval: float, election_tick: int) -> float:
    """Seconds of lease after a round a quorum acknowledged began: a follower
    votes again election_tick ticks after it heard us, which takes at least
    election_tick - 1 intervals (the first may come at once), less the slack
    for the leader's clock running slow."""
    return (election_tick - 1) * tick_interval * (1 - LEASE_CLOCK_SLACK)


def lease_clock() -> float:
    """The leader's clock for the lease: it keeps counting while the machine
    sleeps (CLOCK_BOOTTIME), unlike the monotonic clock, so a leader woken from
    a suspend does not trust a lease the followers stopped honouring."""
    return time.clock_gettime(_LEASE_CLOCK_ID)


_LEASE_CLOCK_ID = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark an outcome nobody may wait for any more as seen (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
