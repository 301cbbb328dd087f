"""Contexts that name ReadIndex requests (dissertation §6.4).

The leader matches heartbeat acknowledgements and its answer to a read by the
request's context alone, so a context must never repeat: not between members
(two followers asking at once) and not across restarts of one member (an answer
to a request made before a crash must not complete a read made after it).
"""

from __future__ import annotations

import itertools


class ReadContexts:
    """One member's source of read contexts, for one run of the process."""

    def __init__(self, member: int, incarnation: bytes) -> None:
        # member id + a value new with every start (the driver: os.urandom) + a counter.
        self._prefix = member.to_bytes(8, "big") + incarnation
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "big")
