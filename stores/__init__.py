"""The seeds' stores as thin layers over the shardlite Client (docs/stores.md).

Each keeps one seed's semantics in a namespace of its own:

- CheckpointStore (seed 001, vessel): the latest checkpoint per id.
- PositionStore (seed 004, synapse): a position per name, (0, False) when missing.
- MemoryStore (seed 000, Harbor): per-identity state, fail closed, forward-only schemas.
- Mirror (seed 003, dbcache): a local read-only copy of a namespace from Subscribe.
"""

from shardlite.stores.checkpoint import Checkpoint, CheckpointStore
from shardlite.stores.errors import (
    ContentionError,
    CorruptRecordError,
    ForeignIdentityError,
    IdentityError,
    InvalidIdError,
    MirrorTimeoutError,
    MissingIdentityError,
    NewerSchemaError,
    SchemaError,
    StoreClosedError,
    StoreError,
)
from shardlite.stores.memory import Identity, MemoryState, MemoryStore
from shardlite.stores.mirror import Mirror, MirrorSnapshot
from shardlite.stores.position import PositionStore

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "ContentionError",
    "CorruptRecordError",
    "ForeignIdentityError",
    "Identity",
    "IdentityError",
    "InvalidIdError",
    "MemoryState",
    "MemoryStore",
    "Mirror",
    "MirrorSnapshot",
    "MirrorTimeoutError",
    "MissingIdentityError",
    "NewerSchemaError",
    "PositionStore",
    "SchemaError",
    "StoreClosedError",
    "StoreError",
]
