"""MemoryStore: per-identity memory state (seed 000, Harbor's SQLite memory driver).

Harbor keeps an agent's memory per identity and fails closed on identity
errors; its schema moves forward only, by idempotent migrations. Kept here:

- Every call names a full Identity(tenant, user, session); a missing field is
  MissingIdentityError, an identity of another tenant than the store's is
  ForeignIdentityError, raised before anything is read or written. A stored
  record also names its identity, checked on every read: a record that names
  another identity than its key is refused (ForeignIdentityError), never
  returned.
- Schema versions: a store built with `migrations=[m1, m2]` writes schema 3
  (1 + the number of migrations; each takes a state of version i to i + 1).
  A record or namespace written by a newer schema is refused
  (NewerSchemaError); an older record is migrated forward when read, and
  migrate() rewrites every older record once (compare-and-set, so a
  concurrent writer is never overwritten; running it again writes nothing).
- Safe for many threads at once: update() is a compare-and-set loop, so 128
  concurrent updates of one identity lose none.

    store = MemoryStore(client, tenant="acme")        # namespace "memory"
    me = Identity("acme", "alice", "s-1")
    store.save(me, {"facts": ["likes tea"]})
    store.update(me, lambda state: {**(state or {}), "turns": 1})
    store.load(me)                                     # MemoryState(state, version, schema)

Stored as: key `m/<tenant>\\x01\\x01<user>\\x01\\x01<session>` (each part
escaped, stores/keys.py), value UTF-8 JSON
{"identity": [tenant, user, session], "schema": N, "state": {...}}; a state
is a JSON object (dict with str keys).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardlite.node.client import Client, ConditionFailedError, Entry
from shardlite.stores.base import Store
from shardlite.stores.errors import (
    ContentionError,
    CorruptRecordError,
    ForeignIdentityError,
    MissingIdentityError,
    NewerSchemaError,
)
from shardlite.stores.keys import record_key, record_parts

PREFIX = "m/"
# Compare-and-set rounds update() tries before ContentionError.
UPDATE_ATTEMPTS = 200

State = dict[str, Any]
Migration = Callable[[State], State]


@dataclass(frozen=True)
class Identity:
    tenant: str
    user: str
    session: str

    @property
    def parts(self) -> list[str]:
        return [self.tenant, self.user, self.session]


@dataclass(frozen=True)
class MemoryState:
    state: State
    # The record's version on the node (compare-and-set with it); 0: not stored.
    version: int
    # The schema version it was stored with (the state returned is migrated to
    # the store's own).
    schema: int


class MemoryStore(Store):
    kind = "memory"

    def __init__(
        self,
        client: Client,
        *,
        tenant: str,
        namespace: str = "memory",
        org: str = "",
        migrations: Sequence[Migration] = (),
        migrate: bool = True,
    ) -> None:
        if not isinstance(tenant, str) or not tenant:
            raise MissingIdentityError("a MemoryStore serves one tenant: pass tenant=...")
        super().__init__(client, namespace=namespace, org=org)
        self.tenant = tenant
        # Each tenant's records move forward on their own: one mark per tenant.
        self._schema_key = record_key("_schema/", [tenant], "tenant")
        self._migrations = list(migrations)
        self.schema_version = 1 + len(self._migrations)
        if migrate:
            self.migrate()

    # -- the API ------------------------------------------------------------------

    def load(self, identity: Identity) -> MemoryState | None:
        """The identity's state (migrated to this store's schema), or None."""
        key = self._key(identity)
        entry = self._get(key)
        return None if entry is None else self._decode(identity, entry)

    def save(
        self, identity: Identity, state: Mapping[str, Any], *, expected_version: int | None = None
    ) -> int:
        """Replace the identity's state; with `expected_version` only if the
        record is still at that version (0: must not exist), else
        ConditionFailedError. Returns the new version (= the commit index)."""
        key = self._key(identity)
        self._check_open()
        value = self._encode(identity, state)
        written = self._client.put(
            key, value, expected_version=expected_version, org=self.org, namespace=self.namespace
        )
        return written.version

    def update(
        self, identity: Identity, change: Callable[[State | None], Mapping[str, Any]]
    ) -> int:
        """Apply `change` to the current state (None: none yet) and store the
        result, again if another writer got there first. `change` may run more
        than once: keep it free of side effects. Returns the new version."""
        key = self._key(identity)
        for _ in range(UPDATE_ATTEMPTS):
            entry = self._get(key)
            current = None if entry is None else self._decode(identity, entry)
            new = change(None if current is None else current.state)
            try:
                return self.save(
                    identity, new, expected_version=0 if current is None else current.version
                )
            except ConditionFailedError:
                continue
        raise ContentionError(
            f"update of {identity} lost its compare-and-set {UPDATE_ATTEMPTS} times in a row"
        )

    def delete(self, identity: Identity) -> None:
        """Forget the identity's state (a missing one is a no-op)."""
        key = self._key(identity)
        self._check_open()
        self._client.delete(key, org=self.org, namespace=self.namespace)

    def identities(self) -> Iterator[Identity]:
        """The identities of this store's tenant that have a state, in order."""
        prefix = record_key(PREFIX, [self.tenant], "tenant") + "\x01\x01"
        for entry in self._walk(prefix):
            tenant, user, session = self._parts(entry.key)
            yield Identity(tenant, user, session)

    # -- identities and records -------------------------------------------------

    def _key(self, identity: Identity) -> str:
        """The record key of `identity`, after failing closed on a bad one."""
        if not isinstance(identity, Identity):
            raise MissingIdentityError(f"expected an Identity, got {type(identity).__name__}")
        for name, part in zip(("tenant", "user", "session"), identity.parts, strict=True):
            if not isinstance(part, str) or not part:
                raise MissingIdentityError(
                    f"identity has no {name}: every call names a tenant, a user and a session"
                )
        if identity.tenant != self.tenant:
            raise ForeignIdentityError(
                f"identity of tenant {identity.tenant!r} given to the store of tenant "
                f"{self.tenant!r}: use that tenant's MemoryStore"
            )
        return record_key(PREFIX, identity.parts, "identity")

    def _parts(self, key: str) -> tuple[str, str, str]:
        parts = record_parts(PREFIX, key)
        if len(parts) != 3:
            raise CorruptRecordError(f"key {key[:80]!r} is not a memory record's key")
        return parts[0], parts[1], parts[2]

    def _encode(self, identity: Identity, state: Mapping[str, Any]) -> bytes:
        if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
            raise TypeError("a memory state is a mapping with str keys (stored as a JSON object)")
        record = {"identity": identity.parts, "schema": self.schema_version, "state": dict(state)}
        try:
            value = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the state cannot be stored as JSON: {exc}") from None
        return value.encode("utf-8")

    def _decode(self, identity: Identity, entry: Entry) -> MemoryState:
        try:
            record = json.loads(entry.value)
            named, schema, state = record["identity"], record["schema"], record["state"]
            if not isinstance(schema, int) or not isinstance(state, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CorruptRecordError(
                f"the record of {identity} in namespace {self.namespace!r} is not a memory "
                "record: give the store a namespace of its own"
            ) from None
        if named != identity.parts:
            # Fail closed: never hand one identity another's data.
            raise ForeignIdentityError(
                f"the record stored for {identity} names the identity {named!r}; refusing it"
            )
        if schema > self.schema_version:
            raise NewerSchemaError(
                f"the record of {identity} was written by memory schema version {schema}; "
                f"this store knows up to {self.schema_version}: upgrade the program"
            )
        return MemoryState(self._forward(state, schema), entry.version, schema)

    def _forward(self, state: State, schema: int) -> State:
        for migration in self._migrations[schema - 1 :]:
            state = migration(state)
        return state

    def _migrate_records(self, from_version: int) -> None:
        """Rewrite every record of this tenant older than this schema, each by
        compare-and-set (one that changed meanwhile is left to its writer,
        who writes the current schema)."""
        prefix = record_key(PREFIX, [self.tenant], "tenant") + "\x01\x01"
        for entry in self._walk(prefix):
            tenant, user, session = self._parts(entry.key)
            identity = Identity(tenant, user, session)
            current = self._decode(identity, entry)
            if current.schema == self.schema_version:
                continue
            try:
                self.save(identity, current.state, expected_version=current.version)
            except ConditionFailedError:
                continue
