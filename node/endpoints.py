"""Which node a client sends each call to, and where it goes when one fails.

Shared by the sync and the asyncio client: the policy only, no I/O. Writes
and LINEARIZABLE reads go to the leader once it is known (no forwarding hop;
a follower would forward a write and ask the leader for a read index anyway),
SERIALIZABLE reads are spread over every endpoint. An endpoint that fails
(UNAVAILABLE, unreachable, its attempt timed out) is left for the next one;
the leader is forgotten when it fails and looked up again. A client that has
tried every endpoint once backs off before the next round.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from shardlite.replication.raft.transport import address_problem
from shardlite.v1 import kv_pb2

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class Route(Enum):
    LEADER = "leader"  # writes, LINEARIZABLE reads, administration
    ANY = "any"  # SERIALIZABLE reads: spread over the endpoints
    CURRENT = "current"  # status, health: the node the client talks to now


def read_route(consistency: kv_pb2.Consistency.ValueType) -> Route:
    return Route.ANY if consistency == kv_pb2.SERIALIZABLE else Route.LEADER


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """`host:port` strings, checked now: a bad one fails at once, not after a
    whole timeout of DNS lookups. A single string may list several, comma separated."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise ValueError("no endpoint given: expected host:port, e.g. 127.0.0.1:7001")
    for item in items:
        problem = address_problem(item)
        if problem is not None:
            raise ValueError(f"endpoint {item!r}: {problem} (expected host:port)")
    if len(set(items)) != len(items):
        raise ValueError(f"an endpoint is listed twice: {', '.join(items)}")
    return items


class Endpoints:
    def __init__(self, endpoints: str | Sequence[str]) -> None:
        self.addresses = parse_endpoints(endpoints)
        self.current = 0
        self.leader: int | None = None if len(self.addresses) > 1 else 0
        self._next_any = 0
        self._failures_in_a_row = 0

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    def pick(self, route: Route) -> int:
        if route is Route.ANY:
            self._next_any = (self._next_any + 1) % len(self.addresses)
            return self._next_any
        if route is Route.LEADER and self.leader is not None:
            return self.leader
        return self.current

    def succeeded(self, index: int) -> None:
        self._failures_in_a_row = 0
        if index != self.current and self.leader == index:
            self.current = index

    def failed(self, index: int, leader_hint: str = "") -> float:
        """`index` did not answer: move on. Returns how long to wait first
        (0 until every endpoint failed once in a row)."""
        if self.several:
            if self.leader == index:
                self.leader = None
            hinted = self.index_of(leader_hint)
            if hinted is not None and hinted != index:
                self.leader = self.current = hinted
            elif index == self.current:
                self.current = (index + 1) % len(self.addresses)
        self._failures_in_a_row += 1
        rounds = self._failures_in_a_row // len(self.addresses)
        if rounds == 0:
            return 0.0
        return float(min(FIRST_BACKOFF * 2 ** (rounds - 1), MAX_BACKOFF))

    def learn_leader(self, index: int, status: kv_pb2.StatusResponse) -> bool:
        """What endpoint `index` said of itself: remember the leader if it is
        that endpoint or one the client knows. False when it does not say."""
        found = index if status.role == "leader" else self.index_of(status.leader_address)
        if found is None:
            return False
        self.leader = self.current = found
        return True

    def index_of(self, address: str) -> int | None:
        try:
            return self.addresses.index(address) if address else None
        except ValueError:
            return None  # a leader we cannot reach under that name (in a container?)
