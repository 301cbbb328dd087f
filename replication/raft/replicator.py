"""The Raft replicator: the Replicator contract (replication/replicator.py) on
top of the Raft driver.

A proposal is accepted once its entry is committed -- durable on a majority's
logs, the leader's own fsync counted only once it returned -- and published
here. Followers do not propose: they reject with the leader's address and the
node forwards (node/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shardlite.replication.durable import crash_point, fsync_tree, replace_durably
from shardlite.replication.observer import NULL_OBSERVER, Observer, report_outcomes
from shardlite.replication.replicator import (
    Accepted,
    Compacted,
    Rejected,
    RejectReason,
    ReplicatorStatus,
)
from shardlite.replication.tls import TlsFiles
from shardlite.v1 import frame_pb2, raft_pb2

from .cluster_id import ClusterId, derive
from .core import RaftCore
from .driver import DriverFailed, DriverStopped, RaftDriver
from .errors import CompactedError, DropReason, ProposalDroppedError
from .members import MemberBook, MemberInfo, bootstrap_entries, member_id
from .messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    Message,
    Role,
    Snapshot,
    SnapshotMeta,
)
from .snapshots import (
    MANIFEST,
    KeptSnapshot,
    SnapshotError,
    StateMachine,
    incoming_name,
    index_of,
    read_manifest,
    seal,
    verify_dir,
)
from .transport import RaftServicer, host_of
from .wal import DiskStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

_DROP_REASONS = {
    DropReason.NOT_LEADER: RejectReason.NOT_LEADER,
    DropReason.TRANSFER_IN_PROGRESS: RejectReason.TRANSFER_IN_PROGRESS,
    DropReason.CONF_CHANGE_PENDING: RejectReason.CONFLICT,
    DropReason.INVALID_CONF_CHANGE: RejectReason.INVALID,
    DropReason.NOT_READY: RejectReason.NOT_LEADER,
}
# Refusals of a membership change that the next commit may lift.
_WAIT_FOR_COMMIT = {DropReason.CONF_CHANGE_PENDING, DropReason.NOT_READY}


PROMOTE_LAG = 10  # a learner this close to the commit index is caught up
# Peers' introductions kept beyond the members' own (node joining, not yet added).
MAX_INTRODUCTIONS = 64


@dataclass(frozen=True)
class MemberView:
    name: str
    id: int
    address: str
    learner: bool
    leader: bool
    match_index: int
    client_address: str = ""


@dataclass(frozen=True)
class RaftSettings:
    name: str
    address: str  # where peers reach this member
    directory: Path
    peers: dict[str, str]  # static bootstrap: every founding member, self included
    tick_interval: float = 0.1
    election_tick: int = 10
    heartbeat_tick: int = 1
    # Serve LINEARIZABLE reads on the leader lease (dissertation §6.4.1)
    # instead of a heartbeat round each: needs every member on the same tick
    # and election timeout, and clocks whose rates differ by under 10%.
    read_lease: bool = False
    propose_timeout: float = 5.0
    read_timeout: float = 5.0
    max_frame_bytes: int = 16 << 20
    # Where peers' TCP message streams are taken (the host the node serves
    # gRPC on; the port is picked at start and told by Raft.MessagePort).
    # None: the host of `address`; "": no TCP stream (peers use Raft.Send).
    message_host: str | None = None
    # ... and on this port (0: any free one).
    message_port: int = 0
    # Where this member serves clients (peers learn it by MessagePort; "":
    # the same as `address`).
    client_address: str = ""
    # Mutual TLS between members (certificates the cluster's CA signed).
    tls: TlsFiles | None = None
    # Proposals in flight here (queued for the loop or waiting to commit), by
    # count and by bytes: past either, propose answers QUEUE_FULL at once.
    max_pending_proposals: int = 10_000
    max_pending_bytes: int = 256 << 20
    applied: int = 0
    seed: int | None = None
    # §7: snapshot once this many entries, or this many bytes of them, were
    # applied since the last snapshot, keeping this many entries (at most so
    # many bytes) before it so slow followers catch up from the log. The bytes
    # bound what the in-memory log holds whatever the entries' size.
    snapshot_entries: int = 10_000
    catchup_entries: int = 5_000
    snapshot_bytes: int = 256 << 20
    catchup_bytes: int = 64 << 20
    # A new cluster started from a backup: its index, and its directory.
    restore_index: int = 0
    restore_dir: Path | None = None
    # What this member's code can apply beyond the first version of the log's
    # contents, told to every peer (raft.proto MessagePortRequest.features).
    features: frozenset[str] = frozenset()


class RaftReplicator:
    kind = "raft"

    def __init__(
        self,
        settings: RaftSettings,
        state_machine: StateMachine | None = None,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_fatal = on_fatal
        self._pending_count = 0
        self._pending_bytes = 0
        self.state_machine = state_machine
        self.snapshot_dir = settings.directory / "snapshots"
        self.incoming_dir = self.snapshot_dir / "incoming"
        self._snapshotting: asyncio.Task[None] | None = None
        self.name = settings.name
        self.id = member_id(settings.name)
        directory = settings.directory
        directory.mkdir(parents=True, exist_ok=True)
        self.storage = DiskStorage(directory)
        self.cluster = ClusterId(directory)
        self.members = MemberBook(directory / "members.json")
        self.members.add(MemberInfo(settings.name, settings.address))
        for name, address in settings.peers.items():
            self.members.add(MemberInfo(name, address))
        if self.storage.is_empty and settings.peers:
            self._bootstrap()
        # The log starts after a snapshot the shards have not got: a crash
        # interrupted its install (driver docstring, step c); finish it first.
        unfinished = (
            state_machine is not None and settings.applied < self.storage.snapshot().meta.index
        )
        self.driver = RaftDriver(
            self.id,
            self.storage,
            self.members,
            tick_interval=settings.tick_interval,
            election_tick=settings.election_tick,
            heartbeat_tick=settings.heartbeat_tick,
            read_lease=settings.read_lease,
            applied=settings.applied,
            rng=random.Random(settings.seed),
            on_snapshot_accepted=self._keep_snapshot if state_machine else None,
            on_install_snapshot=self._install_snapshot if state_machine else None,
            before_start=self._finish_install if unfinished else None,
            snapshot_source=self._snapshot_files,
            on_fatal=self._driver_died,
        )
        self._closing = False
        self._servicer: RaftServicer | None = None
        self.observer: Observer = NULL_OBSERVER
        self.driver.transport.metadata = self.cluster.metadata
        self.driver.transport.tls = settings.tls
        self.timing = raft_pb2.RaftTiming(
            tick_us=round(settings.tick_interval * 1_000_000),
            election_ticks=settings.election_tick,
            read_lease=settings.read_lease,
        )
        self.driver.transport.introduction = raft_pb2.MessagePortRequest(
            sender=self.id,
            client_address=settings.client_address or settings.address,
            timing=self.timing,
            features=sorted(settings.features),
        )
        # What each member that streams to us told us in its introduction.
        self._introductions: dict[int, raft_pb2.MessagePortRequest] = {}
        self.driver.start()
        self._promoter = asyncio.get_running_loop().create_task(
            self._promote_learners(), name="raft-promote-learners"
        )

    def _bootstrap(self) -> None:
        """Write the founding log. From a backup at index S, the log starts with
        a snapshot at S (the backup itself, so it can be sent to followers)."""
        settings = self.settings
        if settings.name not in settings.peers:
            raise ValueError(f"--peers must include this node ({settings.name})")
        base = settings.restore_index
        entries = bootstrap_entries(settings.peers, first_index=base + 1)
        snapshot = None
        if base:
            assert settings.restore_dir is not None
            keep = self.snapshot_dir / str(base)
            if not keep.exists():
                self._keep_copy(settings.restore_dir, keep)
            voters = frozenset(member_id(name) for name in settings.peers)
            snapshot = Snapshot(
                SnapshotMeta(base, 1, ConfState(voters)), (keep / MANIFEST).read_bytes()
            )
        # The id first: a crash before the log is written derives it again.
        self.cluster.set(derive(settings.peers, snapshot.data if snapshot else b""))
        self.storage.save(
            HardState(term=1, vote=0, commit=base + len(entries)), entries, snapshot, True
        )
        log.info(
            "bootstrapped a new cluster of %s%s",
            ", ".join(sorted(settings.peers)),
            f" from a backup at index {base}" if base else "",
        )

    # -- fail-stop (issue 11 item 4) ---------------------------------------------

    def _driver_died(self, exc: BaseException) -> None:
        """The driver failed its own waiters; tell the node (once: the loop dies once)."""
        if self.on_fatal is not None:
            self.on_fatal(exc)

    @property
    def failed(self) -> BaseException | None:
        """The fault that stopped the Raft loop, if it stopped."""
        return self.driver.failed.cause if self.driver.failed is not None else None

    def _check_usable(self) -> None:
        if self.driver.failed is not None:
            raise _storage_failed(self.driver.failed)
        if self._closing:
            raise Rejected(RejectReason.SHUTTING_DOWN)

    # -- proposals ------------------------------------------------------------

    def _rejected(self, exc: ProposalDroppedError) -> Rejected:
        reason = _DROP_REASONS.get(exc.reason, RejectReason.INVALID)
        leader = exc.leader_hint
        peer = self.members.address(leader) or "" if leader else ""
        return Rejected(
            reason, exc.reason.value, leader_hint=self.client_address(leader), leader_peer=peer
        )

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """The driver's refusals of a request it has not taken, as Rejected."""
        try:
            yield
        except ProposalDroppedError as exc:
            raise self._rejected(exc) from None
        except DriverFailed as exc:
            raise _storage_failed(exc) from None
        except DriverStopped:
            raise Rejected(RejectReason.SHUTTING_DOWN) from None

    def _frame_refusal(
        self, data: bytes, taking: int = 0, taking_bytes: int = 0
    ) -> Rejected | None:
        """Why this frame cannot be proposed now: too large, or past the pending
        bounds counting `taking` frames (`taking_bytes`) of the same call before it."""
        settings = self.settings
        if len(data) > settings.max_frame_bytes:
            return Rejected(
                RejectReason.TOO_LARGE,
                f"frame is {len(data)} bytes; the limit is {settings.max_frame_bytes}",
            )
        count = self._pending_count + taking
        size = self._pending_bytes + taking_bytes
        if count >= settings.max_pending_proposals or size + len(data) > settings.max_pending_bytes:
            return Rejected(
                RejectReason.QUEUE_FULL,
                f"{count} proposals ({size} bytes) in flight; "
                f"the limits are {settings.max_pending_proposals} and "
                f"{settings.max_pending_bytes} bytes",
            )
        return None

    def _check_leader(self) -> None:
        if not self.driver.is_leader:
            raise self._rejected(ProposalDroppedError(DropReason.NOT_LEADER, self.driver.leader))

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        self.observer.proposed(1)
        try:
            accepted = await self._propose_one(frame)
        except Rejected as exc:
            self.observer.rejected(exc.reason)
            raise
        self.observer.committed(1)
        return accepted

    async def _propose_one(self, frame: frame_pb2.Frame) -> Accepted:
        self._check_usable()
        data = frame.SerializeToString()
        refusal = self._frame_refusal(data)
        if refusal is not None and refusal.reason is RejectReason.TOO_LARGE:
            raise refusal  # said before NOT_LEADER: no other node would take it either
        self._check_leader()
        if refusal is not None:
            raise refusal
        self._pending_count += 1
        self._pending_bytes += len(data)
        try:
            return Accepted(await self._commit([data]))
        finally:
            self._pending_count -= 1
            self._pending_bytes -= len(data)

    async def propose_many(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        """The frames as consecutive entries of one term (one hand-off to the
        driver, one wait for the last entry's commit: by log matching, §5.3,
        the earlier ones committed with it). Each frame keeps the bounds
        `propose` checks (size, pending count and bytes)."""
        outcomes = await self._propose_many(frames)
        report_outcomes(self.observer, outcomes)
        return outcomes

    async def _propose_many(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        try:
            self._check_usable()
            self._check_leader()
        except Rejected as everyone:
            return [everyone] * len(frames)
        outcomes: list[Accepted | Rejected | None] = []
        datas: list[bytes] = []
        size = 0
        for frame in frames:
            data = frame.SerializeToString()
            refusal = self._frame_refusal(data, len(datas), size)
            outcomes.append(refusal)
            if refusal is None:
                datas.append(data)
                size += len(data)
        if not datas:
            return [o for o in outcomes if o is not None]
        self._pending_count += len(datas)
        self._pending_bytes += size
        try:
            first = await self._commit(datas)
        except Rejected as exc:  # the lot's: every frame that was taken
            return [o if o is not None else exc for o in outcomes]
        finally:
            self._pending_count -= len(datas)
            self._pending_bytes -= size
        taken: list[Accepted | Rejected] = []
        for outcome in outcomes:
            if outcome is None:
                outcome = Accepted(first)
                first += 1
            taken.append(outcome)
        return taken

    async def _commit(self, datas: list[bytes]) -> int:
        """Append `datas` as consecutive entries and wait until the last one
        commits; the index of the first. Raises Rejected: QUEUE_FULL when the
        loop did not take them in time (withdrawn, not proposed), the
        driver's refusals (not proposed), LEADERSHIP_LOST or STORAGE_FAILED
        once they may be in the log (outcome unknown).

        One timer per step (asyncio.timeout, a timer handle) instead of
        wait_for's task and extra futures: this runs for every write."""
        timeout = self.settings.propose_timeout
        try:
            # Bounded: a loop stuck in an fsync must not hold callers forever.
            # Timed out before the loop took it, the proposal is withdrawn.
            with self._refusals():
                async with asyncio.timeout(timeout):
                    term, first = await self.driver.propose_many(datas)
        except TimeoutError:
            raise Rejected(
                RejectReason.QUEUE_FULL,
                f"the raft loop did not take the proposal within {timeout}s",
            ) from None
        last = first + len(datas) - 1
        single = last == first
        entries = f"entry {last}" if single else f"entries {first}-{last}"
        were, its = ("was", "its") if single else ("were", "their")
        try:
            await _within(self.driver.wait_committed(term, last), timeout)
        except ProposalDroppedError:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST, f"{entries} {were} replaced by a new leader"
            ) from None
        except DriverFailed as exc:
            raise _storage_failed(exc) from None
        except DriverStopped:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST,
                f"the raft loop stopped before {entries} committed; {its} outcome is unknown",
            ) from None
        except TimeoutError:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST,
                f"{entries} not committed within {timeout}s; {its} outcome is unknown",
            ) from None
        return first

    # -- the committed stream ---------------------------------------------------

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        if from_index < 1:
            raise ValueError("from_index must be >= 1")
        self._check_failed()
        next_index = from_index
        while True:
            self._check_failed()
            published = self.driver.commit_published
            if next_index <= published:
                try:
                    entries = self.storage.entries(
                        next_index, min(published, next_index + 255) + 1, 4 << 20
                    )
                except CompactedError:
                    if not self.driver.installing or self._closing:
                        raise Compacted(next_index, self.storage.first_index()) from None
                    # The log already starts after a snapshot being installed;
                    # the applier is restarted past it: others learn it is gone.
                    await self._wait_installed()
                    continue
                batch: list[tuple[int, frame_pb2.Frame | None]] = []
                for e in entries:
                    if e.type is EntryType.NORMAL:
                        batch.append((e.index, frame_pb2.Frame.FromString(e.data)))
                    elif marks:
                        batch.append((e.index, None))  # a leader's empty entry, a conf change
                if entries:
                    next_index = entries[-1].index + 1
                if batch:
                    yield batch
                continue
            if self._closing:
                return
            await self._wait_published(next_index)

    async def _wait_published(self, index: int) -> None:
        async with self.driver.committed:
            await self.driver.committed.wait_for(
                lambda: (
                    self.driver.commit_published >= index
                    or self._closing
                    or self.driver.failed is not None
                )
            )

    async def _wait_installed(self) -> None:
        async with self.driver.committed:
            await self.driver.committed.wait_for(
                lambda: (
                    not self.driver.installing or self._closing or self.driver.failed is not None
                )
            )

    def _check_failed(self) -> None:
        if self.driver.failed is not None:
            raise _storage_failed(self.driver.failed)

    async def read_barrier(self) -> int:
        self._check_usable()
        index = self.driver.lease_read_index()
        if index is not None:
            self.observer.read_index("lease")
            return index
        try:
            # A timer, not wait_for's task: this runs for every LINEARIZABLE read.
            with self._refusals():
                async with asyncio.timeout(self.settings.read_timeout):
                    index = await self.driver.read_index()
            self.observer.read_index("round")
            return index
        except TimeoutError:
            raise Rejected(
                RejectReason.NOT_LEADER,
                f"no leader confirmed a read index within {self.settings.read_timeout}s",
            ) from None

    # -- status -----------------------------------------------------------------

    @property
    def leader_address(self) -> str:
        return self.members.address(self.driver.leader) or "" if self.driver.leader else ""

    @property
    def leader_client_address(self) -> str:
        return self.client_address(self.driver.leader)

    def client_address(self, nid: int) -> str:
        """Where member `nid` serves clients, as it told us ("" if unknown)."""
        if nid == self.id:
            return self.settings.client_address or self.settings.address
        introduction = self._introductions.get(nid) if nid else None
        return introduction.client_address if introduction is not None else ""

    def every_member_understands(self, feature: str) -> bool:
        """True once every other member (voter or learner) introduced itself
        with `feature`; a member not heard from yet counts as one without it."""
        for nid in self.driver.core.conf.members():
            if nid != self.id:
                introduction = self._introductions.get(nid)
                if introduction is None or feature not in introduction.features:
                    return False
        return True

    def _introduced(self, introduction: raft_pb2.MessagePortRequest) -> None:
        """A peer that passed the cluster-id check asked for our message port
        and said who it is: where it serves clients, what it can apply. Its
        latest introduction counts (a restarted member may run another
        version). Kept also for a node not yet in the configuration (one that
        joins may connect before it is added); past MAX_INTRODUCTIONS only
        members' stay, so strangers cannot grow the map."""
        self._introductions[introduction.sender] = introduction
        if len(self._introductions) > MAX_INTRODUCTIONS:
            members = self.driver.core.conf.members()
            for nid in [n for n in self._introductions if n not in members]:
                del self._introductions[nid]

    def status(self) -> ReplicatorStatus:
        st = self.driver.core.status()
        return ReplicatorStatus(
            kind=self.kind,
            role=st.role.value,
            term=st.term,
            leader=self.members.name(st.leader),
            commit_index=self.driver.commit_published,
            first_index=self.storage.first_index(),
            last_index=st.last_index,
            members=tuple(
                sorted(self.members.name(n) for n in st.conf_state.voters)
                + sorted(self.members.name(n) + " (learner)" for n in st.conf_state.learners)
            ),
        )

    # -- observation (replication/replicator.py Observable) ----------------------

    def observe(self, observer: Observer) -> None:
        self.observer = self.storage.observer = self.driver.observer = observer

    def log_bytes(self) -> int:
        return self.storage.size_bytes()

    def peer_connections(self) -> dict[str, bool]:
        connections = self.driver.transport.connections()
        conf = self.driver.core.status().conf_state
        return {
            self.members.name(nid): connections.get(nid, False)
            for nid in conf.members()
            if nid != self.id
        }

    async def leader_changed(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.driver.leader_changed.wait(), within)

    def leader_unreachable(self) -> bool:
        return bool(self.driver.leader) and self.driver.leader in self.driver.transport.blocked

    # -- peers and fault injection (replication/replicator.py PeerEndpoint, Partitioning)

    def peer_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.cluster.metadata()

    def peer_servicer(self) -> RaftServicer:
        if self._servicer is None:
            host = self.settings.message_host
            self._servicer = RaftServicer(
                self.driver.deliver,
                incoming=self.incoming_dir,
                on_snapshot=self.receive_snapshot,
                cluster=self.cluster,
                message_host=host_of(self.settings.address) if host is None else host,
                message_port=self.settings.message_port,
                on_introduced=self._introduced,
                tls=self.settings.tls,
                timing=self.timing,
            )
        return self._servicer

    def partition(
        self, drop_to: Sequence[str], drop_from: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        servicer = self.peer_servicer()
        self.driver.transport.blocked = {member_id(n) for n in drop_to}
        servicer.blocked_from = {member_id(n) for n in drop_from}
        name = self.members.name
        return (
            sorted(name(n) for n in self.driver.transport.blocked),
            sorted(name(n) for n in servicer.blocked_from),
        )

    def drops_from(self, name: str) -> bool:
        return self._servicer is not None and member_id(name) in self._servicer.blocked_from

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def role(self) -> Role:
        return self.driver.role

    # -- membership (dissertation §4) --------------------------------------------

    def member_list(self) -> list[MemberView]:
        st = self.driver.core.status()
        views = []
        for nid in sorted(st.conf_state.members(), key=self.members.name):
            progress = st.progress.get(nid)
            views.append(
                MemberView(
                    name=self.members.name(nid),
                    id=nid,
                    address=self.members.address(nid) or "",
                    learner=nid in st.conf_state.learners,
                    leader=nid == st.leader,
                    match_index=progress.match if progress else 0,
                    client_address=self.client_address(nid),
                )
            )
        return views

    async def _change(self, cc: ConfChange) -> None:
        """Propose one membership change on the leader and wait until it commits.

        One change at a time (dissertation §4.1): while the previous change (or
        a new leader's first entry) is not yet committed, wait for it, within
        propose_timeout, instead of refusing a change that will soon be valid."""
        self._check_usable()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.propose_timeout
        try:
            with self._refusals():
                while True:
                    try:
                        proposed = await self.driver.call(lambda core: core.propose_conf_change(cc))
                        break
                    except ProposalDroppedError as exc:
                        if exc.reason not in _WAIT_FOR_COMMIT or loop.time() >= deadline:
                            raise
                    await self._next_commit(deadline - loop.time())
                await asyncio.wait_for(
                    asyncio.shield(self.driver.wait_committed(proposed.term, proposed.last_index)),
                    self.settings.propose_timeout,
                )
        except TimeoutError:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST, "membership change not committed in time"
            ) from None

    async def _next_commit(self, within: float) -> None:
        """Wait until the commit index moves (at most `within` seconds)."""
        seen = self.driver.commit_published
        with contextlib.suppress(TimeoutError):
            async with self.driver.committed:
                await asyncio.wait_for(
                    self.driver.committed.wait_for(
                        lambda: self.driver.commit_published > seen or self._closing
                    ),
                    max(within, 0.0),
                )

    def remember_member(self, name: str, address: str) -> None:
        self.members.add(MemberInfo(name, address))

    async def add_member(self, name: str, address: str, *, learner_only: bool = False) -> None:
        """Add a node as a learner (§4.2.1: it catches up before it votes); the
        leader promotes it once caught up unless it is learner_only."""
        info = MemberInfo(name, address, learner_only)
        nid = member_id(info.name)
        conf = self.driver.core.status().conf_state
        if nid in conf.members():
            known = self.members.info(nid)
            if known is not None and known.address != info.address:
                raise Rejected(
                    RejectReason.INVALID,
                    f"member {info.name} already exists at {known.address}",
                )
            return  # a retried join
        self.members.add(info)
        await self._change(ConfChange(ConfChangeType.ADD_LEARNER, nid, info.encode()))

    async def remove_member(self, name: str) -> None:
        nid = member_id(name)
        if nid not in self.driver.core.status().conf_state.members():
            raise Rejected(RejectReason.INVALID, f"{name} is not a member")
        await self._change(ConfChange(ConfChangeType.REMOVE_NODE, nid))

    async def transfer_leader(self, name: str, wait: float = 5.0) -> str:
        """Hand leadership to `name` (dissertation §3.10), or to the most
        up-to-date other voter when `name` is empty; returns the new leader."""
        st = self.driver.core.status()
        if st.role is not Role.LEADER:
            raise self._rejected(ProposalDroppedError(DropReason.NOT_LEADER, st.leader))
        if name:
            target = member_id(name)
            if target not in st.conf_state.voters:
                raise Rejected(RejectReason.INVALID, f"{name} is not a voting member")
        else:
            others = [n for n in st.conf_state.voters if n != self.id]
            if not others:
                raise Rejected(RejectReason.INVALID, "no other voter to transfer to")
            target = max(others, key=lambda n: st.progress[n].match if n in st.progress else 0)
        if target == self.id:
            return self.name
        with self._refusals():
            await self.driver.call(lambda core: core.transfer_leader(target))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            if self.driver.leader == target:
                return self.members.name(target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.driver.leader_changed.wait(), 0.1)
        raise Rejected(
            RejectReason.TRANSFER_IN_PROGRESS,
            f"{self.members.name(target)} did not take over within {wait}s",
        )

    async def _promote_learners(self) -> None:
        """On the leader: a learner whose log caught up becomes a voter."""
        while not self._closing:
            await asyncio.sleep(self.settings.tick_interval * 5)
            if not self.driver.is_leader:
                continue
            st = self.driver.core.status()
            for nid in sorted(st.conf_state.learners):
                info = self.members.info(nid)
                progress = st.progress.get(nid)
                if info is None or info.learner_only or progress is None:
                    continue
                if progress.match + PROMOTE_LAG >= st.commit:
                    try:
                        await self._change(ConfChange(ConfChangeType.ADD_VOTER, nid, info.encode()))
                        log.info("promoted %s to voter", info.name)
                    except Rejected as exc:
                        log.info("promoting %s failed, will retry: %s", info.name, exc)
                    break  # one change at a time (§4.1)

    # -- snapshots (§7) ---------------------------------------------------------

    def compact(self, applied_index: int) -> None:
        """Take a snapshot in the background once enough was applied since the last."""
        if self.state_machine is None or self._closing:
            return
        if self._snapshotting is not None and not self._snapshotting.done():
            return
        last = self.storage.snapshot().meta.index
        if (
            applied_index - last < self.settings.snapshot_entries
            and self.storage.bytes_after(last) < self.settings.snapshot_bytes
        ):
            return
        self._snapshotting = asyncio.get_running_loop().create_task(
            self._take_snapshot(applied_index), name="raft-snapshot"
        )

    async def _take_snapshot(self, index: int) -> None:
        assert self.state_machine is not None
        started = time.perf_counter()
        partial = self.snapshot_dir / f"{index}.partial"
        final = self.snapshot_dir / str(index)
        try:
            await asyncio.to_thread(shutil.rmtree, partial, True)
            partial.mkdir(parents=True)
            previous = self._kept_snapshot()
            await self.state_machine.create_snapshot(index, partial, previous)
            manifest = await asyncio.to_thread(
                seal, partial, index, previous.directory if previous is not None else None
            )
            await asyncio.to_thread(shutil.rmtree, final, True)
            # Durable before the log is compacted below it: the files are what a
            # lagging follower will be sent instead of the dropped entries.
            await asyncio.to_thread(replace_durably, partial, final)

            def record(core: RaftCore) -> None:
                # Inside the driver loop, so the core never sees half a compaction.
                self.storage.record_snapshot(
                    index,
                    core.conf_state_at(index),
                    manifest,
                    self.settings.catchup_entries,
                    self.settings.catchup_bytes,
                )

            await self.driver.call(record)
            # The WAL rewrite off the event loop, but between two saves. The
            # older snapshots go only after it: the old WAL still names them.
            await self.driver.exclusive(self.storage.rewrite)
            self._report_snapshot("taken", index, manifest, started)
        except Exception:
            log.exception("snapshot at index %d failed", index, extra={"index": index})
            await asyncio.to_thread(shutil.rmtree, partial, True)
            return
        await asyncio.to_thread(self._remove_snapshots_before, index)

    def _remove_snapshots_before(self, index: int) -> None:
        for child in self.snapshot_dir.iterdir():
            at = index_of(child.name)
            if at is not None and at < index:
                shutil.rmtree(child, ignore_errors=True)
        if self.incoming_dir.exists():
            for child in self.incoming_dir.iterdir():
                at = index_of(child.name)
                if at is not None and at <= index:
                    shutil.rmtree(child, ignore_errors=True)

    def _kept_snapshot(self) -> KeptSnapshot | None:
        """The snapshot the log is compacted to, if its files are here."""
        index = self.storage.snapshot().meta.index
        directory = self._snapshot_files(index) if index > 0 else None
        return KeptSnapshot(index, directory) if directory is not None else None

    def _snapshot_files(self, index: int) -> Path | None:
        directory = self.snapshot_dir / str(index)
        return directory if (directory / MANIFEST).exists() else None

    async def receive_snapshot(self, message: Message, directory: Path) -> None:
        """A verified snapshot arrived (transport): step its message into Raft."""
        self.driver.deliver(message)

    async def _keep_snapshot(self, snapshot: Snapshot) -> None:
        """Step a of an install (driver docstring): the core accepted a leader's
        snapshot; its verified files become raft/snapshots/<S>, durably, before
        the log records the snapshot. They stay: the install reads them, a
        restart that finds the install unfinished reads them again, and this
        node sends them on if it leads."""
        index, _ = read_manifest(snapshot.data)
        if index != snapshot.meta.index:
            raise SnapshotError(f"snapshot {snapshot.meta.index} has the manifest of {index}")
        keep = self.snapshot_dir / str(index)
        if not await asyncio.to_thread(_holds, keep, snapshot.data):
            source = self.incoming_dir / incoming_name(index, snapshot.data)
            if not (source / MANIFEST).exists():
                raise SnapshotError(f"snapshot {index} was accepted but its files are missing")
            # A copy left by an attempt that crashed before the log named it
            # (perhaps another leader's) is not referenced by anything.
            await asyncio.to_thread(shutil.rmtree, keep, True)
            await asyncio.to_thread(replace_durably, source, keep)
        crash_point("snapshot-install:kept")

    async def _install_snapshot(self, snapshot: Snapshot) -> None:
        """Step c: restore the state machine from the kept files (the log
        already records the snapshot)."""
        assert self.state_machine is not None
        index = snapshot.meta.index
        started = time.perf_counter()
        await self.state_machine.install_snapshot(index, self.snapshot_dir / str(index))
        self._report_snapshot("installed", index, snapshot.data, started)
        await asyncio.to_thread(self._remove_snapshots_before, index)

    def _report_snapshot(self, kind: str, index: int, manifest: bytes, started: float) -> None:
        """One line and one observer call per snapshot taken or installed."""
        seconds = time.perf_counter() - started
        size = sum(f.size for f in read_manifest(manifest)[1])
        log.info(
            f"snapshot {kind}",
            extra={
                "index": index,
                "bytes": size,
                "duration_s": round(seconds, 4),
                "term": self.driver.core.term,
                "log_first_index": self.storage.first_index(),
            },
        )
        self.observer.snapshot(kind, index, size, seconds)

    async def _finish_install(self) -> None:
        """At start, before anything is applied: the log records a snapshot the
        shards are behind (a crash between steps b and c); install it again
        from the kept files, checked first against the manifest the log holds."""
        snapshot = self.storage.snapshot()
        index = snapshot.meta.index
        keep = self.snapshot_dir / str(index)
        log.warning(
            "the log starts after snapshot %d but the shards were applied only to %d: "
            "finishing its install",
            index,
            self.settings.applied,
        )

        def check() -> None:
            if not _holds(keep, snapshot.data):
                raise SnapshotError(
                    f"the raft log records snapshot {index} but {keep} does not hold its "
                    "files: this member cannot recover; remove it and let it rejoin"
                )
            verify_dir(keep)

        await asyncio.to_thread(check)
        await self._install_snapshot(snapshot)

    @staticmethod
    def _keep_copy(source: Path, keep: Path) -> None:
        """Copy an installed snapshot's files, all of them durable before the copy
        appears under its final name (a partial copy is never served)."""
        partial = keep.with_name(keep.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        fsync_tree(partial)
        replace_durably(partial, keep)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._promoter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._promoter
        if self._snapshotting is not None:
            with contextlib.suppress(Exception):
                await self._snapshotting
        if self._servicer is not None:
            self._servicer.close()  # the TCP message listener and its streams
        await self.driver.close()


async def _within(future: asyncio.Future[T], seconds: float) -> T:
    """Await `future` for at most `seconds`, then TimeoutError. The
    timer cancels the future itself (wait_committed's future is the caller's
    own: the driver skips a cancelled one), so there is no waiter to build."""
    if future.done():
        return future.result()
    handle = asyncio.get_running_loop().call_later(seconds, future.cancel)
    try:
        return await future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if future.cancelled() and task is not None and task.cancelling() == 0:
            raise TimeoutError from None  # the timer's doing, not the caller's
        raise
    finally:
        handle.cancel()


def _storage_failed(exc: DriverFailed) -> Rejected:
    return Rejected(RejectReason.STORAGE_FAILED, str(exc))


def _holds(directory: Path, manifest: bytes) -> bool:
    """`directory` is a complete kept copy of the snapshot with this manifest."""
    try:
        return (directory / MANIFEST).read_bytes() == manifest
    except FileNotFoundError:
        return False
