"""The applier: takes committed frames from the replicator in index order and
applies them to shards, one SQLite transaction per shard per batch.

It is the only writer of shards. One task takes each batch the replicator's
stream hands over; a small batch on open shards is applied right there on the
event loop (SQLite's CPU only: commits are not fsynced), anything that may wait
on the disk (opening a shard, a checkpoint, a large batch) on one dedicated
thread, one hop per batch. Proposers register a waiter under the frame's
trace_id before proposing; the applier wakes it with the frame's result, on
the node that proposed it (etcd's wait.Register/Trigger).

Deterministic about bad frames: a committed frame that cannot be applied for
its content (node/frames.py `content_problem`, a shard path outside the data
directory, a deterministic SQLite/OS error) gets FrameResult.invalid, the same
on every replica, and the applier goes on. Only a fault of the machine (disk
full, I/O error: node/shard.py `is_machine_fault`) stops it: then it calls
`on_fatal` once, fails every waiter and refuses new ones at once (fail-stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shardlite.node import envelope
from shardlite.node.errors import InvalidArgument, StorageError, Unavailable
from shardlite.node.frames import MAX_PROBLEM_CHARS, content_problem
from shardlite.node.shard import REQUEST_RETENTION, is_machine_fault, sync_shards
from shardlite.node.shards import ShardPathError, ShardStore
from shardlite.replication.durable import crash_point, write_file_durably
from shardlite.replication.replicator import Replicator
from shardlite.v1 import frame_pb2, kv_pb2

log = logging.getLogger(__name__)

MARKER_INTERVAL = 1.0
# A committed batch of at most this many ops, on open shards, is applied on
# the event loop (Applier._on_the_loop); larger ones on the applier's thread.
INLINE_MAX_OPS = 256


def read_applied_marker(data_dir: Path) -> int:
    """The applied index recorded by the last run; 0 (replay from the start:
    every shard knows its own applied index and skips what it has) if there is
    none or it is unreadable (torn by a crash of an older version, garbage)."""
    path = data_dir / "applied_index"
    try:
        text = path.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s is unreadable (%s); replaying from the start", path, exc)
        return 0
    if not text.isdigit():
        if text:
            log.warning("%s holds %r, not an index; replaying from the start", path, text[:40])
        return 0
    return int(text)


class Applier:
    def __init__(
        self,
        store: ShardStore,
        replicator: Replicator,
        data_dir: Path,
        *,
        request_retention: int = REQUEST_RETENTION,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self._on_fatal = on_fatal
        self.replicator = replicator
        self.request_retention = request_retention
        self._marker = data_dir / "applied_index"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="applier")
        # Invariant: applied_index <= the replicator's commit index, and every
        # frame up to it is committed in its shard.
        self.applied_index = self._read_marker()
        self._waiters: dict[bytes, asyncio.Future[frame_pb2.FrameResult]] = {}
        self._index_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._ticket = 0
        self._failed: BaseException | None = None
        self._marker_written = self.applied_index
        self._task: asyncio.Task[None] | None = None
        self._marker_task: asyncio.Task[None] | None = None
        self._marker_lock = threading.Lock()  # one marker writer at a time
        # Shards written since the last marker (their commits are not fsynced);
        # its own lock, held only to add or swap: the loop applies too.
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        # Held while a batch is applied, so a snapshot install never overlaps one.
        self._applying = asyncio.Lock()
        # Hears how long each sync of the shards took (node/metrics.py).
        self.on_sync: Callable[[float], None] | None = None

    def _read_marker(self) -> int:
        return read_applied_marker(self._marker.parent)

    def _write_marker(self, index: int) -> None:
        # Only ever lags what is durable in the shards: they commit without an
        # fsync (synchronous=NORMAL), so every shard written since the last
        # marker is fsynced first. A lost or stale marker just means a longer,
        # idempotent replay. Durable and atomic: a crash leaves the old marker
        # or the new one. One writer at a time (the housekeeping write and a
        # snapshot install's share the temporary file).
        with self._marker_lock:
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            try:
                started = time.perf_counter()
                sync_shards(sorted(dirty))
                if self.on_sync is not None and dirty:
                    self.on_sync(time.perf_counter() - started)
                write_file_durably(self._marker, f"{index}\n".encode())
            except BaseException:
                with self._dirty_lock:
                    self._dirty |= dirty  # not durable yet: the next marker syncs them
                raise
            self._marker_written = index

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="applier")

    # -- waiting ----------------------------------------------------------

    def register(self, trace_id: bytes) -> asyncio.Future[frame_pb2.FrameResult]:
        """A future for the result of the frame with `trace_id`. Refused at once
        once the applier has stopped: nothing would ever wake it."""
        if self._failed is not None:
            raise self._stopped_error()
        # The key must be this proposal's alone, or a waiter is never woken (an
        # empty one is never looked up) or is woken by another's result.
        if not trace_id:
            raise InvalidArgument("frame has no trace_id: nothing could report its result")
        if trace_id in self._waiters:
            raise InvalidArgument("a write with the same trace_id is already in flight")
        future: asyncio.Future[frame_pb2.FrameResult] = asyncio.get_running_loop().create_future()
        self._waiters[trace_id] = future
        return future

    def unregister(self, trace_id: bytes) -> None:
        future = self._waiters.pop(trace_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait_applied(self, index: int) -> None:
        if self._failed is not None:
            raise self._stopped_error()
        if index <= self.applied_index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticket += 1
        heapq.heappush(self._index_waiters, (index, self._ticket, future))
        await future

    # -- applying ---------------------------------------------------------

    async def _run(self) -> None:
        try:
            start = max(self.applied_index + 1, self.replicator.status().first_index)
            # One task from the commit to the shards: the replicator's stream
            # hands over everything committed at once (no pump task between).
            stream = self.replicator.subscribe(start, marks=True)
            # Closed when the task is cancelled (a snapshot install restarts
            # it): every replicator's subscribe is an async generator.
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for batch in stream:
                    await self._apply_batch(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("applier stopped: %s", exc, exc_info=True)
            self._fail(exc)

    async def _apply_batch(self, marked: list[tuple[int, frame_pb2.Frame | None]]) -> None:
        async with self._applying:
            await self._apply_locked(marked)

    async def _apply_locked(self, marked: list[tuple[int, frame_pb2.Frame | None]]) -> None:
        marked = [(index, frame) for index, frame in marked if index > self.applied_index]
        if not marked:
            return
        # Entries without a frame (Raft's own) only move the applied index.
        batch = [(index, frame) for index, frame in marked if frame is not None]
        if self._on_the_loop(batch):
            results = self._apply(batch)
        else:
            loop = asyncio.get_running_loop()
            # Shielded: a half-finished apply must still report its results.
            results = await asyncio.shield(
                loop.run_in_executor(self._executor, self._apply, batch, True)
            )
        self.applied_index = marked[-1][0]
        for (_, entry), result in zip(batch, results, strict=True):
            if result is None:
                for frame in envelope.inner(entry):
                    self._wake(frame, StorageError("frame was already applied before restart"))
            else:
                for frame, own in zip(
                    envelope.inner(entry), envelope.inner_results(entry, result), strict=True
                ):
                    self._wake(frame, own)
        self._wake_index_waiters()

    def _wake(self, frame: frame_pb2.Frame, outcome: frame_pb2.FrameResult | Exception) -> None:
        future = self._waiters.pop(frame.trace_id, None) if frame.trace_id else None
        if future is None or future.done():
            return
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _on_the_loop(self, batch: list[tuple[int, frame_pb2.Frame]]) -> bool:
        """Whether `batch` is applied right here on the event loop: a few ops,
        on shards already open, none due for a checkpoint. Then it waits for
        nothing but SQLite's CPU (commits are not fsynced: synchronous=NORMAL),
        and a write is answered without two thread hops (~0.7 ms of a put
        here). Anything that may touch the disk for long -- opening or
        creating a shard, a checkpoint, a large batch -- goes to the thread.
        Where a batch is applied never changes what it decides."""
        if sum(envelope.op_count(frame) for _, frame in batch) > INLINE_MAX_OPS:
            return False
        for _, frame in batch:
            shard = self.store.peek(frame.org, frame.namespace)
            if shard is None or shard.checkpoint_due:
                return False
        return True

    def _apply(
        self, batch: list[tuple[int, frame_pb2.Frame]], on_thread: bool = False
    ) -> list[frame_pb2.FrameResult | None]:
        """Refuse invalid frames, group the rest by shard (order kept within
        each), one transaction per shard. `on_thread`: on the applier's
        thread, where a shard due for a checkpoint gets it."""
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        results: list[frame_pb2.FrameResult | None] = [None] * len(batch)
        for position, (index, frame) in enumerate(batch):
            problem = content_problem(frame)
            if problem is not None:
                results[position] = _invalid(index, problem)
            else:
                groups[(frame.org, frame.namespace)].append(position)
        for (org, namespace), positions in groups.items():
            frames = [batch[p] for p in positions]
            opened = False
            try:
                with self.store.use(org, namespace, create=True) as shard:
                    assert shard is not None
                    opened = True
                    with self._dirty_lock:
                        self._dirty.add(shard.path)
                    shard_results = shard.apply(frames, self.request_retention)
                    # After the commit, before applied_index moves past these
                    # frames: a snapshot at that index copies this shard anew.
                    self.store.note_written(shard.path)
                    if on_thread and shard.checkpoint_due:
                        shard.checkpoint()
            except Exception as exc:
                # Once the shard is open, a frame's own content errors are
                # caught per frame (Shard.apply's savepoints): anything that
                # escapes is the machine's, whatever its type.
                if opened or is_machine_fault(exc):
                    raise
                # The shard cannot exist (its path, a deterministic OS/SQLite
                # error): every replica fails these frames the same way.
                log.error("frames %s refused: %s", [i for i, _ in frames], exc)
                shard_results = [_invalid(index, f"cannot apply: {exc}") for index, _ in frames]
            for position, result in zip(positions, shard_results, strict=True):
                results[position] = result
        return results

    def outcomes_of(
        self, index: int, entry: frame_pb2.Frame
    ) -> list[tuple[frame_pb2.Frame, kv_pb2.Outcome.ValueType, frame_pb2.FrameResult]]:
        """What applying each frame of `entry` (committed at `index`, applied
        here; an envelope's frames in order, or the frame itself) did, the
        same on every replica: INVALID recomputed from the entry itself, else
        the result its shard stored in the transaction that applied it.
        OUTCOME_UNKNOWN when no shard holds it: pruned (older than
        request_retention indices) or its shard could not be created."""
        frames = envelope.inner(entry)
        problem = content_problem(entry)
        if problem is not None:
            return [(frame, kv_pb2.INVALID, _invalid(index, problem)) for frame in frames]
        try:
            with self.store.use(entry.org, entry.namespace, create=False) as shard:
                result = shard.outcome(index) if shard is not None else None
        except ShardPathError as exc:
            # What the applier recorded when it refused the frame for this.
            refused = _invalid(index, f"cannot apply: {exc}")
            return [(frame, kv_pb2.INVALID, refused) for frame in frames]
        if result is None:
            unknown = frame_pb2.FrameResult(index=index)
            return [(frame, kv_pb2.OUTCOME_UNKNOWN, unknown) for frame in frames]
        return [
            (frame, _outcome(own), own)
            for frame, own in zip(frames, envelope.inner_results(entry, result), strict=True)
        ]

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No batch is applied while the block runs (the shards hold still)."""
        async with self._applying:
            yield

    async def restart_at(self, index: int, replace_state: Callable[[], Awaitable[None]]) -> None:
        """Stop applying, let `replace_state` swap the shards for a snapshot at
        `index`, then go on applying from index + 1."""
        async with self._applying:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await replace_state()
            crash_point("snapshot-install:swapped")
            self.applied_index = index
            await asyncio.to_thread(self._write_marker, index)
            crash_point("snapshot-install:marked")
            self._wake_index_waiters()
        self.start()

    def _wake_index_waiters(self) -> None:
        while self._index_waiters and self._index_waiters[0][0] <= self.applied_index:
            _, _, waiter = heapq.heappop(self._index_waiters)
            if not waiter.done():
                waiter.set_result(None)

    def _stopped_error(self) -> Unavailable:
        return Unavailable(
            f"this node's applier stopped ({self._failed}); the node is failing: a write's "
            "outcome is unknown, retry with the same request_id on another node"
        )

    def _fail(self, exc: BaseException) -> None:
        """Fail-stop: report once, fail every waiter, refuse new ones."""
        if self._failed is not None:
            return
        self._failed = exc
        error = self._stopped_error()
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        for _, _, waiter in self._index_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._index_waiters.clear()
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except Exception:
                log.exception("on_fatal failed")

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def maybe_write_marker(self) -> None:
        """Record the applied index (then let the replicator compact up to it),
        on the applier's thread: an fsync never runs on the event loop."""
        if self.applied_index == self._marker_written or self._failed is not None:
            return
        if self._marker_task is None or self._marker_task.done():
            self._marker_task = asyncio.get_running_loop().create_task(
                self._write_marker_then_compact(self.applied_index), name="applied-marker"
            )

    async def _write_marker_then_compact(self, index: int) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write_marker, index
            )
        except Exception as exc:
            if is_machine_fault(exc):
                log.critical("writing the applied-index marker failed: %s", exc)
                self._fail(exc)
                return
            raise
        self.replicator.compact(index)

    async def close(self) -> None:
        """Stop after the replicator's stream ended (close the replicator first)."""
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._marker_task is not None:
            with contextlib.suppress(Exception):
                await self._marker_task
        error = Unavailable("node is shutting down")
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        for _, _, waiter in self._index_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        if self._failed is None:
            self._write_marker(self.applied_index)
        self._executor.shutdown(wait=True)


def _outcome(result: frame_pb2.FrameResult) -> kv_pb2.Outcome.ValueType:
    if result.invalid:
        return kv_pb2.INVALID
    if result.condition_failed:
        return kv_pb2.CONDITION_FAILED
    return kv_pb2.APPLIED


def _invalid(index: int, problem: str) -> frame_pb2.FrameResult:
    return frame_pb2.FrameResult(index=index, invalid=problem[:MAX_PROBLEM_CHARS])
