"""What every store shares: its client, namespace, close flag and schema mark.

A store does not own its Client (as the seeds' stores wrap a *sql.DB the
caller keeps): closing the store stops the store, not the client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

from shardlite.node.client import Client, ConditionFailedError, Entry
from shardlite.stores.errors import (
    CorruptRecordError,
    NewerSchemaError,
    SchemaError,
    StoreClosedError,
)

# Where a store writes what it is and which schema version wrote the namespace.
SCHEMA_KEY = "_schema"
# Keys read per List call when a store walks its records (a page, not one big call).
PAGE = 500


class Store:
    """Base of the stores: a namespace of one Client, closable once."""

    kind = "store"
    schema_version = 1

    def __init__(self, client: Client, *, namespace: str, org: str = "") -> None:
        self._client = client
        self.namespace = namespace
        self.org = org
        self._closed = threading.Event()
        self._schema_key = SCHEMA_KEY

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Every call after this fails with StoreClosedError. Idempotent."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreClosedError(
                f"this {type(self).__name__} (namespace {self.namespace!r}) is closed; "
                "open a new one"
            )

    # -- the KV calls, in this store's namespace ------------------------------

    def _get(self, key: str) -> Entry | None:
        self._check_open()
        return self._client.get(key, org=self.org, namespace=self.namespace)

    def _walk(self, prefix: str, page: int = PAGE) -> Iterator[Entry]:
        """Every key under `prefix` in order, one List call per `page` keys."""
        after = ""
        while True:
            self._check_open()
            got = 0
            for entry in self._client.list(
                prefix, start_after=after, limit=page, org=self.org, namespace=self.namespace
            ):
                got += 1
                after = entry.key
                yield entry
            if got < page:
                return

    # -- the schema mark --------------------------------------------------------

    def migrate(self) -> int:
        """Claim the namespace for this kind of store at this schema version.

        In a KV world there is no table to create: what the seeds' Migrate
        does (make the schema exist, idempotently, before first use) becomes a
        mark `_schema` = {"store": kind, "schema": version}, created if absent
        and moved forward (compare-and-set) if older. Refused, with nothing
        written, when the namespace belongs to another kind of store
        (SchemaError) or was marked by a newer version (NewerSchemaError).
        Running it again changes nothing. Returns the namespace's schema
        version."""
        for _ in range(10):
            self._check_open()
            entry = self._get(self._schema_key)
            mark = {"store": self.kind, "schema": self.schema_version}
            if entry is not None:
                store, schema = self._read_mark(entry)
                if store != self.kind:
                    raise SchemaError(
                        f"namespace {self.namespace!r} holds a {store} store, not a "
                        f"{self.kind} store: give each store its own namespace"
                    )
                if schema > self.schema_version:
                    raise NewerSchemaError(
                        f"namespace {self.namespace!r} was written by {self.kind} schema "
                        f"version {schema}; this program knows up to "
                        f"{self.schema_version}: upgrade it (schemas only move forward)"
                    )
                if schema == self.schema_version:
                    return self.schema_version
                self._migrate_records(schema)
            elif self.schema_version > 1:
                # Records written with migrate=False before any mark: move them too.
                self._migrate_records(1)
            try:
                self._client.put(
                    self._schema_key,
                    json.dumps(mark, sort_keys=True).encode(),
                    expected_version=entry.version if entry is not None else 0,
                    org=self.org,
                    namespace=self.namespace,
                )
            except ConditionFailedError:
                continue  # another process marked it meanwhile: look again
            return self.schema_version
        raise SchemaError(f"the schema mark of namespace {self.namespace!r} kept changing; retry")

    def _migrate_records(self, from_version: int) -> None:
        """Rewrite records older than this schema (stores with versions)."""

    def _read_mark(self, entry: Entry) -> tuple[str, int]:
        try:
            mark = json.loads(entry.value)
            store, schema = mark["store"], mark["schema"]
            if not isinstance(store, str) or not isinstance(schema, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CorruptRecordError(
                f"{self._schema_key!r} in namespace {self.namespace!r} is not a store's schema "
                "mark: give the store a namespace of its own"
            ) from None
        return store, schema
