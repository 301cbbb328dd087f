"""PositionStore: a named position per event-sourcing consumer (seed 004,
synapse's checkpoint store).

Kept from the seed: Save upserts by name; Load of a missing name is
(0, False) with no error; Reset deletes the name (a missing one is a no-op);
Names yields every name in ascending order, streamed (one List call per
page, so a consumer that stops early stops reading); the schema is applied
by the constructor by default and explicitly by migrate() (migrate=False is
the seed's WithoutMigrate).

    store = PositionStore(client)                     # namespace "positions"
    store.save("projector", 1042)
    store.load("projector")                            # (1042, True)
    store.load("unknown")                              # (0, False)

Stored as: key `pos/<escaped name>`, value the position in ASCII decimal
(b"1042"). Positions are int64, as the seed's: 0 <= position < 2**63.
"""

from __future__ import annotations

from collections.abc import Iterator

from shardlite.node.client import Client
from shardlite.stores.base import PAGE, Store
from shardlite.stores.errors import CorruptRecordError
from shardlite.stores.keys import record_key, record_parts

PREFIX = "pos/"
MAX_POSITION = 2**63 - 1


class PositionStore(Store):
    kind = "position"

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "positions",
        org: str = "",
        migrate: bool = True,
    ) -> None:
        super().__init__(client, namespace=namespace, org=org)
        if migrate:
            self.migrate()

    def save(self, name: str, position: int) -> int:
        """Upsert the position of `name`; returns the index the write committed at."""
        self._check_open()
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"a position is an int, not {type(position).__name__}")
        if not 0 <= position <= MAX_POSITION:
            raise ValueError(f"position {position} is outside 0..2**63-1")
        key = record_key(PREFIX, [name], "checkpoint name")
        written = self._client.put(
            key, str(position).encode("ascii"), org=self.org, namespace=self.namespace
        )
        return written.index

    def load(self, name: str) -> tuple[int, bool]:
        """(position, True), or (0, False) when nothing was saved for `name`."""
        entry = self._get(record_key(PREFIX, [name], "checkpoint name"))
        if entry is None:
            return 0, False
        try:
            text = entry.value.decode("ascii")
            if not text.isdigit():
                raise ValueError
            return int(text), True
        except ValueError:
            raise CorruptRecordError(
                f"the position of {name!r} in namespace {self.namespace!r} is not a decimal "
                f"number ({entry.value[:40]!r}): another program wrote it; give the store a "
                "namespace of its own"
            ) from None

    def reset(self, name: str) -> None:
        """Forget the position of `name` (a missing name is a no-op)."""
        self._check_open()
        key = record_key(PREFIX, [name], "checkpoint name")
        self._client.delete(key, org=self.org, namespace=self.namespace)

    def names(self, *, page: int = PAGE) -> Iterator[str]:
        """Every saved name in ascending (UTF-8 byte) order, `page` per List call."""
        if page < 1:
            raise ValueError(f"page must be at least 1, not {page}")
        for entry in self._walk(PREFIX, page):
            yield record_parts(PREFIX, entry.key)[0]
