"""shardlite: a replicated storage node, and the clients to talk to it.

    from shardlite import Client, AsyncClient

The one package an installed shardlite adds. Its parts (the source folders of the
repository, linked in here):

- shardlite.node: the node (server, shards, CLI) and the clients (node.client,
  node.async_client);
- shardlite.replication: the Replicator interface, no-op and Raft;
- shardlite.stores: the seed documents' stores over the client (docs/stores.md);
- shardlite.v1: the generated protobuf and gRPC modules of proto/shardlite/v1/*.proto.
"""

from shardlite.node.async_client import AsyncClient
from shardlite.node.client import (
    LINEARIZABLE,
    SERIALIZABLE,
    AccessDeniedError,
    Client,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Entry,
    InvalidRequestError,
    Put,
    UnavailableError,
    WriteResult,
    tls_credentials,
)

__all__ = [
    "LINEARIZABLE",
    "SERIALIZABLE",
    "AccessDeniedError",
    "AsyncClient",
    "Client",
    "ClientError",
    "Condition",
    "ConditionFailedError",
    "Delete",
    "Entry",
    "InvalidRequestError",
    "Put",
    "UnavailableError",
    "WriteResult",
    "tls_credentials",
]
