"""Test helpers: build cores, drain their Ready batches, and a deterministic
in-process network with send / drop / cut / isolate / recover (etcd's network
from raft_test.go, grown for our Ready discipline).

The helpers act as an ideal driver: everything is persisted immediately and
applied in order, so a test sees exactly the messages a node would send.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shardlite.replication.raft import (
    NONE,
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    RaftCore,
    ReadState,
    Role,
)

MT = MessageType

NULL_LOGGER = logging.getLogger("tests.raft.null")
NULL_LOGGER.addHandler(logging.NullHandler())
NULL_LOGGER.propagate = False
NULL_LOGGER.setLevel(logging.CRITICAL + 1)


@dataclass
class Node:
    """A core plus what an ideal driver keeps: its durable storage and what it applied."""

    core: RaftCore
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


def new_storage(voters: Iterable[int] = (), learners: Iterable[int] = ()) -> MemoryStorage:
    return MemoryStorage(ConfState(frozenset(voters), frozenset(learners)))


def new_core(
    nid: int,
    voters: Iterable[int] = (1, 2, 3),
    *,
    learners: Iterable[int] = (),
    storage: MemoryStorage | None = None,
    election_tick: int = 10,
    heartbeat_tick: int = 1,
    seed: int = 0,
    **kw: Any,
) -> RaftCore:
    if storage is None:
        storage = new_storage(voters, learners)
    cfg = Config(
        id=nid,
        storage=storage,
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        logger=NULL_LOGGER,
        **kw,
    )
    return RaftCore(cfg, random.Random(seed * 1000 + nid))


def storage_of(core: RaftCore) -> MemoryStorage:
    st = core.log.storage
    assert isinstance(st, MemoryStorage)
    return st


def drain(core: RaftCore, node: Node | None = None) -> list[Message]:
    """Act as an ideal driver: persist, apply and advance until nothing is left.
    Returns every message the node sent, in order (immediate ones first in each
    batch, then those that waited for persistence)."""
    st = storage_of(core)
    out: list[Message] = []
    for _ in range(1000):
        if not core.has_ready():
            return out
        rd = core.ready()
        out.extend(rd.messages)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        out.extend(rd.persisted_messages)
        if node is not None:
            node.applied.extend(rd.committed_entries)
            node.read_states.extend(rd.read_states)
        core.advance(rd)
    raise AssertionError("drain did not converge")


def read_messages(core: RaftCore) -> list[Message]:
    """The messages a node sends after persisting everything (etcd's readMessages)."""
    return drain(core)


def msg(
    t: MessageType,
    frm: int,
    to: int,
    term: int = 0,
    **kw: Any,
) -> Message:
    return Message(t, to, frm, term, **kw)


class Network:
    """Every node in one process; ``send`` delivers until the network is quiet."""

    def __init__(
        self,
        ids: Iterable[int] = (1, 2, 3),
        *,
        learners: Iterable[int] = (),
        seed: int = 0,
        cores: dict[int, RaftCore] | None = None,
        **kw: Any,
    ) -> None:
        ids = list(ids)
        learners = list(learners)
        self.nodes: dict[int, Node] = {}
        for nid in [*ids, *learners]:
            if cores and nid in cores:
                core = cores[nid]
            else:
                core = new_core(nid, ids, learners=learners, seed=seed, **kw)
            self.nodes[nid] = Node(core, storage_of(core))
        self.dropped: dict[tuple[int, int], float] = {}
        self.ignored: set[MessageType] = set()
        self.rng = random.Random(seed)
        self.delivered: list[Message] = []

    def core(self, nid: int) -> RaftCore:
        return self.nodes[nid].core

    def add(self, nid: int, core: RaftCore) -> None:
        self.nodes[nid] = Node(core, storage_of(core))

    def leader(self) -> int:
        leaders = [n for n, nd in self.nodes.items() if nd.core.role is Role.LEADER]
        return max(leaders, key=lambda n: self.nodes[n].core.term) if leaders else NONE

    # -- faults ----------------------------------------------------------
    def cut(self, a: int, b: int) -> None:
        self.drop(a, b, 1.0)
        self.drop(b, a, 1.0)

    def drop(self, frm: int, to: int, perc: float) -> None:
        self.dropped[(frm, to)] = perc

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut(nid, other)

    def ignore(self, t: MessageType) -> None:
        self.ignored.add(t)

    def recover(self) -> None:
        self.dropped.clear()
        self.ignored.clear()

    # -- delivery --------------------------------------------------------
    def _filter(self, msgs: list[Message]) -> list[Message]:
        out = []
        for m in msgs:
            if m.type in self.ignored:
                continue
            perc = self.dropped.get((m.frm, m.to), 0.0)
            if perc and self.rng.random() < perc:
                continue
            out.append(m)
        return out

    def flush(self, nid: int) -> list[Message]:
        nd = self.nodes[nid]
        return self._filter(drain(nd.core, nd))

    def send(self, *msgs: Message, limit: int = 100_000) -> None:
        """Deliver ``msgs`` and everything they cause, breadth first."""
        queue = list(msgs)
        for nid in self.nodes:
            queue.extend(self.flush(nid))
        steps = 0
        while queue:
            steps += 1
            if steps > limit:
                raise AssertionError("network did not quiesce")
            m = queue.pop(0)
            nd = self.nodes.get(m.to)
            if nd is None:
                continue
            self.delivered.append(m)
            nd.core.step(m)
            queue.extend(self.flush(m.to))

    def campaign(self, nid: int) -> None:
        self.nodes[nid].core.campaign()
        self.send()

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].core.tick()
        self.send()

    def propose(self, nid: int, *data: bytes) -> None:
        self.nodes[nid].core.propose(list(data))
        self.send()
