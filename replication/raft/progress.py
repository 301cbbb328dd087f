"""What the leader knows about each follower (etcd's tracker.Progress).

A follower is in one of three states:

- PROBE: the leader does not know where the follower's log matches; it sends
  at most one append per heartbeat interval and waits for the answer.
- REPLICATE: the logs match up to ``match``; appends are pipelined
  optimistically (``next`` moves on send) up to the in-flight limits.
- SNAPSHOT: the follower needs a snapshot (§7); nothing else is sent until the
  transfer is reported.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Appends sent but not yet acknowledged: flow control by count and by bytes."""

    __slots__ = ("_q", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        if max_count <= 0:
            raise ValueError("max_count must be positive")
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: no byte limit
        self._q: deque[tuple[int, int]] = deque()  # (last index of the append, its bytes)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._q)

    def add(self, index: int, size: int) -> None:
        # Invariant: indexes in flight are increasing.
        if self._q and index <= self._q[-1][0]:
            raise AssertionError(f"inflight index {index} not above {self._q[-1][0]}")
        self._q.append((index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Acknowledged up to ``index``: forget every append ending at or below it."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.max_count or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_flow_paused",
        "next",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, inflights: Inflights, *, is_learner: bool = False) -> None:
        # Invariant: 0 <= match < next
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # Set on any message from the follower; check-quorum clears it every
        # election timeout.
        self.recent_active = False
        # In PROBE: an append was sent and we wait for its answer (or a heartbeat).
        # In REPLICATE: the in-flight window is full.
        self.msg_app_flow_paused = False
        self.inflights = inflights
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value} match={self.match} next={self.next} "
            f"inflight={len(self.inflights)} paused={self.msg_app_flow_paused})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def update_on_entries_send(self, entries: int, size: int, next_index: int) -> None:
        """Bookkeeping after sending an append of ``entries`` entries starting at
        ``next_index``: pipelining moves ``next`` at once in REPLICATE."""
        if self.state is ProgressState.REPLICATE:
            if entries > 0:
                last = next_index + entries - 1
                self.next = last + 1
                self.inflights.add(last, size)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state is ProgressState.PROBE:
            # One probe per heartbeat interval.
            self.msg_app_flow_paused = True
        else:
            raise AssertionError(f"sending entries in state {self.state}")

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``. False if it is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.msg_app_flow_paused = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at ``rejected`` and hints its log may match
        at ``match_hint`` (fast backtracking). False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an old, reordered rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # not the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return True
        return self.msg_app_flow_paused


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """A read-only copy of a Progress for ``RaftCore.status()``."""

    match: int
    next: int
    state: ProgressState
    pending_snapshot: int
    recent_active: bool
    paused: bool
    inflight: int
    inflight_bytes: int
    is_learner: bool

    @classmethod
    def of(cls, pr: Progress) -> ProgressStatus:
        return cls(
            pr.match,
            pr.next,
            pr.state,
            pr.pending_snapshot,
            pr.recent_active,
            pr.is_paused(),
            len(pr.inflights),
            pr.inflights.bytes,
            pr.is_learner,
        )
