"""The stores' exceptions: each says what happened and what to do.

Errors of the node or the network come through unchanged as the client's own
(node.client: UnavailableError - retry; InvalidRequestError - fix the
request; ConditionFailedError - re-read). The ones below are the stores'.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error a store raises itself."""


class StoreClosedError(StoreError):
    """The store was closed; every call after close() fails with this. Open a
    new store (the Client it was built on is not closed with it)."""


class InvalidIdError(StoreError, ValueError):
    """An id, name or identity field the store cannot keep as it is (empty, or
    too long once escaped into a key): choose another."""


class CorruptRecordError(StoreError):
    """A stored value is not what this store writes (another program wrote the
    key, or the namespace is shared): give the store a namespace of its own."""


class SchemaError(StoreError):
    """The namespace belongs to another kind of store: give each store its own
    namespace."""


class NewerSchemaError(SchemaError):
    """Data in the namespace was written by a newer schema version than this
    store knows: upgrade the program (schemas only move forward)."""


class IdentityError(StoreError):
    """Fail closed: the call named no usable identity, or one this store must
    not serve. No data of any identity was read or written."""


class MissingIdentityError(IdentityError):
    """The identity is missing a field (tenant, user or session): pass a full one."""


class ForeignIdentityError(IdentityError):
    """The identity belongs to another tenant than the store's (or a stored
    record names another identity than its key): use that tenant's store."""


class ContentionError(StoreError):
    """An update lost its compare-and-set every time it was tried: too many
    writers on one record. Retry later, or spread the writes."""


class MirrorTimeoutError(StoreError, TimeoutError):
    """The mirror did not reach the asked index in time (is the node reachable?
    `Mirror.error` says what the stream last failed with)."""
