"""What the replication layer reports as it happens, for the node to count.

The replicators, the Raft driver and the logs they write call an Observer at
each event (an fsync, a proposal, an election, a snapshot); node/metrics.py
turns the calls into Prometheus series. Gauges (role, term, indices, peer
connections) are not reported: the node reads them when it is scraped. The
default observer does nothing, so replication never depends on the node.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Literal

from shardlite.replication.replicator import Rejected, RejectReason

ReadIndexVia = Literal["lease", "round"]


class Observer:
    """Every method is called on the event's own thread (fsyncs run on worker
    threads) and must be quick and never raise."""

    def fsync(self, file: str, seconds: float) -> None:
        """One fsync (or one group of them) of `file`: "raft_wal", "frame_log", "shards"."""

    def proposed(self, count: int) -> None:
        """`count` frames were offered to the log here."""

    def committed(self, count: int) -> None:
        """`count` frames proposed here committed (their proposers were answered)."""

    def rejected(self, reason: RejectReason, count: int = 1) -> None:
        """`count` frames proposed here were refused, or their outcome is unknown."""

    def read_index(self, via: ReadIndexVia) -> None:
        """A LINEARIZABLE read got its read index here: "lease" (the leader
        lease, §6.4.1) or "round" (a heartbeat round, §6.4)."""

    def election_started(self, term: int) -> None: ...

    def election_ended(self, term: int, won: bool) -> None: ...

    def leader_changed(self, leader: str, term: int) -> None:
        """A leader ("" while none is known) took over at `term`."""

    def membership_changed(self, change: str, member: str, index: int) -> None:
        """A committed membership change: `change` is add-voter, add-learner or remove."""

    def snapshot(self, kind: str, index: int, size: int, seconds: float) -> None:
        """A snapshot `kind` "taken" here or "installed" from a leader."""


NULL_OBSERVER = Observer()


def timed_fsync(fd: int, observer: Observer, file: str) -> None:
    """os.fsync(fd), its duration reported to `observer`."""
    started = time.perf_counter()
    os.fsync(fd)
    observer.fsync(file, time.perf_counter() - started)


def report_outcomes(observer: Observer, outcomes: Sequence[object]) -> None:
    """A propose_many's outcomes: each Accepted committed, each Rejected by reason."""
    observer.proposed(len(outcomes))
    committed = 0
    for outcome in outcomes:
        if isinstance(outcome, Rejected):
            observer.rejected(outcome.reason)
        else:
            committed += 1
    if committed:
        observer.committed(committed)
