"""The leader lease for reads (dissertation §6.4.1).

A heartbeat round that a quorum acknowledged proves that no other leader
could be elected until an election timeout after each acknowledging follower
heard it: a follower refuses votes for that long (§4.2.3, and for one
election timeout after it starts, see ``RaftCore.ticks_since_leader``). So
for ``duration`` seconds of the leader's clock after such a round *began*,
the leader may answer a read index without a round of its own.

The bound is only as good as the clocks: ``duration`` must stay below the
election timeout as the followers' ticks measure it, with room for the rate
at which the leader's clock may run slow against theirs. The driver sets it
(``RaftDriver``); the leader's clock must keep counting while the machine is
suspended (CLOCK_BOOTTIME), or a suspended leader would wake up believing in a
lease the others have long stopped honouring.

The lease is void:
- in another configuration than the one the confirming quorum was counted in
  (a single-server change keeps quorums overlapping once, not twice, §4.1);
- for the rest of a term once the leader began a transfer: the transferee's
  forced campaign bypasses the followers' refusal (§3.10);
- once the node stops leading (the core resets it with the term).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class ReadLease:
    duration: float  # seconds of the driver's clock; 0: reads always take a round
    until: float = -math.inf
    conf_index: int = -1  # the configuration the confirming quorum was counted in
    barred: bool = False  # a transfer began this term: no lease until the next one

    def reset(self) -> None:
        self.until, self.conf_index, self.barred = -math.inf, -1, False

    def bar(self) -> None:
        self.barred = True
        self.until = -math.inf

    def extend(self, started: float, conf_index: int) -> None:
        """A round that began at ``started`` (the clock) and was counted in the
        configuration set at ``conf_index`` was acknowledged by a quorum."""
        if self.barred:
            return
        if conf_index != self.conf_index:
            self.until, self.conf_index = -math.inf, conf_index
        self.until = max(self.until, started + self.duration)

    def holds(self, now: float, conf_index: int) -> bool:
        return not self.barred and conf_index == self.conf_index and now < self.until
