"""The Raft replicator: the Replicator contract (replication/replicator.py) on
top of the Raft driver.

A proposal is accepted once its entry is committed -- durable on a majority's
logs, the leader's own fsync counted only once it returned -- and published
here. Followers do not propose: they reject with the leader's address and the
node forwards (node/server.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto import frame_pb2
from replication.replicator import (
    Accepted,
    Compacted,
    Rejected,
    RejectReason,
    ReplicatorStatus,
)

from .driver import RaftDriver
from .errors import CompactedError, DropReason, ProposalDroppedError
from .members import MemberBook, MemberInfo, bootstrap_entries, member_id
from .messages import EntryType, HardState, Role, Snapshot
from .wal import DiskStorage

log = logging.getLogger(__name__)

_DROP_REASONS = {
    DropReason.NOT_LEADER: RejectReason.NOT_LEADER,
    DropReason.TRANSFER_IN_PROGRESS: RejectReason.TRANSFER_IN_PROGRESS,
    DropReason.CONF_CHANGE_PENDING: RejectReason.INVALID,
    DropReason.INVALID_CONF_CHANGE: RejectReason.INVALID,
    DropReason.NOT_READY: RejectReason.NOT_LEADER,
}


@dataclass(frozen=True)
class RaftSettings:
    name: str
    address: str
    directory: Path
    peers: dict[str, str]  # static bootstrap: every founding member, self included
    tick_interval: float = 0.1
    election_tick: int = 10
    heartbeat_tick: int = 1
    propose_timeout: float = 5.0
    read_timeout: float = 5.0
    max_frame_bytes: int = 16 << 20
    applied: int = 0
    seed: int | None = None


class RaftReplicator:
    kind = "raft"

    def __init__(
        self,
        settings: RaftSettings,
        on_install_snapshot: Callable[[Snapshot], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.id = member_id(settings.name)
        directory = settings.directory
        directory.mkdir(parents=True, exist_ok=True)
        self.storage = DiskStorage(directory)
        self.members = MemberBook(directory / "members.json")
        self.members.add(MemberInfo(settings.name, settings.address))
        for name, address in settings.peers.items():
            self.members.add(MemberInfo(name, address))
        if self.storage.is_empty and settings.peers:
            if settings.name not in settings.peers:
                raise ValueError(f"--peers must include this node ({settings.name})")
            entries = bootstrap_entries(settings.peers)
            self.storage.save(HardState(term=1, vote=0, commit=len(entries)), entries, None, True)
            log.info("bootstrapped a new cluster of %s", ", ".join(sorted(settings.peers)))
        self.driver = RaftDriver(
            self.id,
            self.storage,
            self.members,
            tick_interval=settings.tick_interval,
            election_tick=settings.election_tick,
            heartbeat_tick=settings.heartbeat_tick,
            applied=settings.applied,
            rng=random.Random(settings.seed),
            on_install_snapshot=on_install_snapshot,
        )
        self._closing = False
        self.driver.start()

    # -- proposals ------------------------------------------------------------

    def _rejected(self, exc: ProposalDroppedError) -> Rejected:
        reason = _DROP_REASONS.get(exc.reason, RejectReason.INVALID)
        hint = self.members.address(exc.leader_hint) or "" if exc.leader_hint else ""
        return Rejected(reason, exc.reason.value, leader_hint=hint)

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        if self._closing:
            raise Rejected(RejectReason.SHUTTING_DOWN)
        data = frame.SerializeToString()
        if len(data) > self.settings.max_frame_bytes:
            raise Rejected(
                RejectReason.TOO_LARGE,
                f"frame is {len(data)} bytes; the limit is {self.settings.max_frame_bytes}",
            )
        if not self.driver.is_leader:
            raise self._rejected(ProposalDroppedError(DropReason.NOT_LEADER, self.driver.leader))
        try:
            term, index = await self.driver.propose(data)
        except ProposalDroppedError as exc:
            raise self._rejected(exc) from None
        try:
            await asyncio.wait_for(
                asyncio.shield(self.driver.wait_committed(term, index)),
                self.settings.propose_timeout,
            )
        except ProposalDroppedError:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST, f"entry {index} was replaced by a new leader"
            ) from None
        except TimeoutError:
            raise Rejected(
                RejectReason.LEADERSHIP_LOST,
                f"entry {index} not committed within {self.settings.propose_timeout}s; "
                "its outcome is unknown",
            ) from None
        return Accepted(index)

    # -- the committed stream ---------------------------------------------------

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[tuple[int, frame_pb2.Frame | None]]:
        if from_index < 1:
            raise ValueError("from_index must be >= 1")
        next_index = from_index
        while True:
            published = self.driver.commit_published
            if next_index <= published:
                try:
                    entries = self.storage.entries(
                        next_index, min(published, next_index + 255) + 1, 4 << 20
                    )
                except CompactedError:
                    raise Compacted(next_index, self.storage.first_index()) from None
                for e in entries:
                    if e.type is EntryType.NORMAL:
                        yield e.index, frame_pb2.Frame.FromString(e.data)
                    elif marks:
                        yield e.index, None  # a leader's empty entry, a conf change
                    next_index = e.index + 1
                continue
            if self._closing:
                return
            await self._wait_published(next_index)

    async def _wait_published(self, index: int) -> None:
        async with self.driver.committed:
            await self.driver.committed.wait_for(
                lambda: self.driver.commit_published >= index or self._closing
            )

    async def read_barrier(self) -> int:
        if self._closing:
            raise Rejected(RejectReason.SHUTTING_DOWN)
        try:
            return await asyncio.wait_for(self.driver.read_index(), self.settings.read_timeout)
        except ProposalDroppedError as exc:
            raise self._rejected(exc) from None
        except TimeoutError:
            raise Rejected(
                RejectReason.NOT_LEADER,
                f"no leader confirmed a read index within {self.settings.read_timeout}s",
            ) from None

    # -- status -----------------------------------------------------------------

    @property
    def leader_address(self) -> str:
        return self.members.address(self.driver.leader) or "" if self.driver.leader else ""

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

    @property
    def role(self) -> Role:
        return self.driver.role

    def compact(self, applied_index: int) -> None:
        """Snapshots and log compaction come with the snapshot machinery."""

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self.driver.close()
