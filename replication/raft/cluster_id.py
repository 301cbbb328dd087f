"""The cluster id (issue 11 item 8): which cluster a member's Raft data
belongs to, so that members started from different data never merge.

Founding members bootstrap independently (static --peers), so the id cannot
be random: like etcd's, it is derived from what they are all given -- the
member list with its addresses, and the backup they start from (its manifest
names every file by checksum), if any. Members restored from different
backups get different ids. It is stored beside the WAL (raft/cluster_id),
sent with every peer stream as gRPC metadata, and a receiver refuses a
different one with FAILED_PRECONDITION and a log line.

A node that joins (--join) has none until the first peer stream from the
cluster that added it: it learns the id from it and keeps it. A sender
without an id (a joining node, an older version) is let through."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from shardlite.replication.durable import write_file_durably

log = logging.getLogger(__name__)

METADATA_KEY = "shardlite-cluster-id"
FILE_NAME = "cluster_id"
LOG_EVERY = 30.0  # seconds between two log lines about the same refused peer


def derive(peers: dict[str, str], backup_manifest: bytes = b"") -> str:
    """The id founding members with these --peers (and this backup) share."""
    h = hashlib.sha256(b"shardlite cluster v1\0")
    for name in sorted(peers):
        h.update(f"{name}={peers[name]}\0".encode())
    h.update(b"\0" + backup_manifest)
    return h.hexdigest()[:16]


class ClusterId:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        try:
            self.value = self.path.read_text().strip()
        except FileNotFoundError:
            self.value = ""
        self._logged: dict[str, float] = {}
        # Streams refused for another cluster's id (observable by tests, metrics).
        self.refused = 0

    def set(self, value: str) -> None:
        write_file_durably(self.path, f"{value}\n".encode())
        self.value = value

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every outgoing peer RPC carries."""
        return ((METADATA_KEY, self.value),) if self.value else ()

    def admit(self, sent: str, peer: str) -> str | None:
        """None if a peer that sent `sent` may talk to this member, else why not."""
        if not sent:
            return None
        if not self.value:
            self.set(sent)
            log.info("joined cluster %s (learned from %s)", sent, peer)
            return None
        if sent == self.value:
            return None
        why = (
            f"cluster id mismatch: this member belongs to cluster {self.value}, the sender "
            f"to cluster {sent}; members started from different data (--restore, --peers) "
            "cannot form one cluster"
        )
        self.refused += 1
        now = time.monotonic()
        if now - self._logged.get(peer, -LOG_EVERY) >= LOG_EVERY:
            self._logged[peer] = now
            log.error("refused a peer stream from %s: %s", peer, why)
        return why
