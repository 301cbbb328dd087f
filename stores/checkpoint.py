"""CheckpointStore: the latest checkpoint per id (seed 001, vessel's store).

vessel's engine saves "where to resume from" for each execution; the store
keeps the latest one per id, overwritten in place (an UPSERT), not a history.
Kept from the seed: Save upserts, Load of a missing id is None (not an
error), Delete of a missing id is a no-op, List gives the ids in order, and an
explicit, idempotent Migrate (run by the constructor unless migrate=False).

    with Client("127.0.0.1:7001") as client:
        store = CheckpointStore(client)               # namespace "checkpoints"
        store.save(Checkpoint("exec-1", b'{"step": 3}'))
        store.load("exec-1")                           # Checkpoint(id, data, version)

Stored as: key `cp/<escaped id>` (stores/keys.py), value the checkpoint's
bytes exactly as given (the caller chooses their encoding; nothing is added).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shardlite.node.client import Client
from shardlite.stores.base import Store
from shardlite.stores.keys import record_key, record_parts

PREFIX = "cp/"


@dataclass(frozen=True)
class Checkpoint:
    id: str
    data: bytes
    # The node's version of the record (the index that wrote it); 0 before saving.
    version: int = 0


class CheckpointStore(Store):
    kind = "checkpoint"

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "checkpoints",
        org: str = "",
        migrate: bool = True,
    ) -> None:
        super().__init__(client, namespace=namespace, org=org)
        if migrate:
            self.migrate()

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        """Upsert: the latest checkpoint of `checkpoint.id` is this one.
        Returns it with its new version, which is also the index the write
        committed at (what Mirror.wait takes)."""
        self._check_open()
        if not isinstance(checkpoint.data, bytes | bytearray):
            raise TypeError(f"checkpoint data must be bytes, not {type(checkpoint.data).__name__}")
        key = record_key(PREFIX, [checkpoint.id], "checkpoint id")
        written = self._client.put(
            key, bytes(checkpoint.data), org=self.org, namespace=self.namespace
        )
        return Checkpoint(checkpoint.id, bytes(checkpoint.data), written.version)

    def load(self, id: str) -> Checkpoint | None:
        """The latest checkpoint of `id`, or None if there is none."""
        entry = self._get(record_key(PREFIX, [id], "checkpoint id"))
        return None if entry is None else Checkpoint(id, entry.value, entry.version)

    def delete(self, id: str) -> None:
        """Remove the checkpoint of `id`; a missing id is a no-op."""
        self._check_open()
        key = record_key(PREFIX, [id], "checkpoint id")
        self._client.delete(key, org=self.org, namespace=self.namespace)

    def ids(self) -> Iterator[str]:
        """The ids with a checkpoint, in order (UTF-8 byte order), streamed page by page."""
        for entry in self._walk(PREFIX):
            yield record_parts(PREFIX, entry.key)[0]

    def list(self) -> list[str]:
        """The ids with a checkpoint, in order."""
        return [*self.ids()]
