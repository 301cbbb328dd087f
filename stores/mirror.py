"""Mirror: a local, read-only copy of one namespace kept current from
Subscribe (seed 003, dbcache).

dbcache keeps an in-memory copy of a SQLite database for the read path and
learned two rules the hard way: never publish a snapshot older than a
committed write (two reloads racing, the slower publishing stale rows), and
never let a caller keep a stale handle. Kept here:

- Never older: the mirror publishes states in index order only. After a
  rebuild (below) the new copy replaces the old one only once it is at least
  as recent as what was already published. `wait(index)` blocks until the
  copy includes the write that committed at `index` (every write through the
  Client returns it: `WriteResult.index`, a store's save() result), so a
  caller reads its own acknowledged writes.
- Never half a frame: a frame's ops (a Batch is one frame) are applied to the
  copy under the lock readers take, all at once, so no reader sees some keys
  of a frame and not the others. `snapshot()` returns an immutable copy at
  one index; `get()` always reads the current copy (no stale handle to keep).
- Rebuild when the stream is gone: at start, and whenever Subscribe fails
  (OUT_OF_RANGE: the log moved past the mirror; the connection broke; the
  node restarted), the mirror reads the namespace again on the node:
  Status (applied index a0), a SERIALIZABLE List (a snapshot at some index L,
  a0 <= L <= a1), Status again (its commit index a1: a shard commits a batch
  just before the node moves its applied index, so only the commit index
  bounds L), then Subscribe from a0 + 1. Replaying
  frames a0+1..a1 over the List gives exactly the state at a1 (each key's
  last write in that range wins either way), so the copy is published only
  once the stream has passed a1 (or at once when a0 == a1).

Subscribe streams every namespace's frames; the mirror keeps those of its own
(org, namespace) and uses the others only to advance its index (filtered in
the client, so it does not depend on server-side Subscribe filters). A frame
is applied when its outcome is APPLIED and its result is its own (a retried
write that the node answered with an earlier result changed nothing).

The mirror follows one node, so it needs a Client of one endpoint: its
rebuild reads Status, List and Subscribe on the same node (a client with
several would spread them, and the bound a0 <= L <= a1 would not hold).

    mirror = Mirror(Client("127.0.0.1:7001"), namespace="orders")
    written = client.put("o-1", b"new", namespace="orders")
    mirror.wait(written.index)       # read-your-writes
    mirror.get("o-1")                # b"new"

Values are the namespace's bytes as they are; keys as they are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from shardlite.node.client import SERIALIZABLE, Client, ClientError, Entry
from shardlite.stores.errors import MirrorTimeoutError, StoreClosedError
from shardlite.v1 import kv_pb2

# Subscribe is opened for this long at a time: the follower thread notices
# close() and a rebuild that cannot finish (its a1 was an entry that is no
# frame) within it. Reopened from the next index: nothing missed.
WINDOW_SECONDS = 1.0
# Backoff between failed rebuilds.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0


class _Resync(Exception):
    """The stream says a frame of ours has an unknown outcome: read again."""


@dataclass(frozen=True)
class MirrorSnapshot:
    """The namespace as it was at `index`: every key, immutable."""

    index: int
    entries: Mapping[str, Entry]

    def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        return None if entry is None else entry.value


class Mirror:
    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "default",
        org: str = "",
        wait_ready: float | None = 30.0,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        """Start following; with `wait_ready`, wait that long for the first
        copy (MirrorTimeoutError if none)."""
        if len(client.endpoints) != 1:
            raise ValueError(
                "a Mirror follows one node: give it a Client of one endpoint "
                f"(got {len(client.endpoints)}); see the module docstring"
            )
        self._client = client
        self.namespace = namespace
        self.org = org
        self._window = window_seconds
        self._changed = threading.Condition()
        # Guarded by _changed: the published copy and its index.
        self._entries: dict[str, Entry] = {}
        self._index = 0
        self._built = False
        self.rebuilds = 0  # how many times the copy was read again from List
        self.error: Exception | None = None  # what the stream last failed with
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="mirror", daemon=True)
        self._thread.start()
        if wait_ready is not None:
            try:
                self.wait(0, timeout=wait_ready)
            except MirrorTimeoutError:
                self.close()
                raise

    # -- reads --------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The index the copy is at: it holds every write committed up to it."""
        with self._changed:
            self._check_open()
            return self._index

    def get(self, key: str) -> bytes | None:
        entry = self.entry(key)
        return None if entry is None else entry.value

    def entry(self, key: str) -> Entry | None:
        with self._changed:
            self._check_open()
            return self._entries.get(key)

    def snapshot(self) -> MirrorSnapshot:
        """An immutable copy of the whole namespace at one index."""
        with self._changed:
            self._check_open()
            return MirrorSnapshot(self._index, MappingProxyType(dict(self._entries)))

    def keys(self, prefix: str = "") -> list[str]:
        with self._changed:
            self._check_open()
            return sorted(k for k in self._entries if k.startswith(prefix))

    def wait(self, index: int, timeout: float = 10.0) -> MirrorSnapshot:
        """Block until the copy holds every write committed up to `index` (a
        write's WriteResult.index), then return a snapshot of it. index 0:
        until the first copy is built."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._check_open()
            while not (self._built and self._index >= index):
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MirrorTimeoutError(
                        f"the mirror of {self.namespace!r} is at index {self._index}, not "
                        f"{index}, after {timeout}s (last stream error: {self.error})"
                    )
                self._changed.wait(remaining)
            return MirrorSnapshot(self._index, MappingProxyType(dict(self._entries)))

    # -- lifecycle --------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop following; every call after this raises StoreClosedError."""
        self._closed.set()
        with self._changed:
            self._changed.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreClosedError(
                f"this Mirror (namespace {self.namespace!r}) is closed; open a new one"
            )

    # -- following ----------------------------------------------------------------

    def _follow(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._closed.is_set():
            try:
                self._rebuild_and_follow()
                backoff = FIRST_BACKOFF
            except Exception as exc:
                # The node's errors (ClientError), a frame of unknown outcome
                # (_Resync), anything else: never a follower that stops.
                self.error = exc
                self._closed.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _rebuild_and_follow(self) -> None:
        """Read the namespace again, then follow the stream until it fails
        (returns: rebuild at once; raises: rebuild after a backoff)."""
        client = self._client
        a0 = int(client.status().applied_index)
        copy = {
            e.key: e
            for e in client.list(consistency=SERIALIZABLE, org=self.org, namespace=self.namespace)
        }
        # The commit index, not the applied one: a shard commits a batch a
        # moment before the node moves its applied index, so a List can see
        # frames past the applied index read after it, never past the commit index.
        a1 = int(client.status().commit_index)
        with self._changed:
            self.rebuilds += 1
            published = self._index
        # The copy may be published once it is consistent (>= a1) and not
        # older than what readers already saw (>= published).
        at = a0
        ready_at = max(a1, published)
        building: dict[str, Entry] | None = copy
        if at >= ready_at:
            self._publish(copy, at)
            building = None
        while not self._closed.is_set():
            # The frames of an entry that carries several (an envelope), held
            # until its last one: a snapshot is at an index, all of it.
            held: list[kv_pb2.SubscribeResponse] = []
            try:
                for reply in self._subscribe(at + 1):
                    if self._closed.is_set():
                        return
                    held.append(reply)
                    if reply.more_at_index:
                        continue
                    at = reply.index
                    if building is not None:
                        self._apply(building, held)
                        if at >= ready_at:
                            self._publish(building, at)
                            building = None
                    else:
                        with self._changed:
                            self._apply(self._entries, held)
                            self._index = at
                            self._changed.notify_all()
                    held = []
            except ClientError as exc:
                if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise  # the stream is gone: rebuild
            if building is not None:
                return  # a1 was no frame and nothing came since: read again
            # The window ended: reopen from the next index (an entry cut
            # short comes again whole).

    def _subscribe(self, from_index: int) -> Iterator[kv_pb2.SubscribeResponse]:
        """The committed frames from `from_index`, for one window."""
        return self._client.events(from_index, timeout=self._window)

    def _publish(self, copy: dict[str, Entry], index: int) -> None:
        with self._changed:
            self._entries = copy
            self._index = index
            self._built = True
            self._changed.notify_all()

    def _apply(self, entries: dict[str, Entry], replies: list[kv_pb2.SubscribeResponse]) -> None:
        """The frames of one index on `entries` (the caller holds the lock if
        readers can see them)."""
        for reply in replies:
            self._apply_frame(entries, reply)

    def _apply_frame(self, entries: dict[str, Entry], reply: kv_pb2.SubscribeResponse) -> None:
        frame = reply.frame
        if frame.org != self.org or frame.namespace != self.namespace:
            return
        if reply.outcome == kv_pb2.OUTCOME_UNKNOWN:
            raise _Resync(f"frame {reply.index} of {self.namespace!r} has no known outcome")
        if reply.outcome != kv_pb2.APPLIED or reply.result.index != reply.index:
            return  # nothing applied (condition failed, invalid, or a retry's echo)
        for op in frame.ops:
            if op.HasField("put"):
                entries[op.put.key] = Entry(op.put.key, op.put.value, reply.index)
            else:
                entries.pop(op.delete.key, None)
