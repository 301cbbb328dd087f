"""The no-op replicator: one node, every frame accepted in arrival order.

Still durable: each frame is appended to a FrameLog and fsynced before it is
accepted. Proposals that arrive while an fsync runs are written together with
the next one (group commit), so N concurrent writers share one fsync; the
frames of one `propose_many` share one future as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from shardlite.replication.frame_log import FrameLog, IndexOutOfRange
from shardlite.replication.observer import NULL_OBSERVER, Observer, report_outcomes
from shardlite.replication.replicator import (
    Accepted,
    Compacted,
    Rejected,
    RejectReason,
    ReplicatorStatus,
)
from shardlite.v1 import frame_pb2

log = logging.getLogger(__name__)


class NoopReplicator:
    kind = "noop"

    def __init__(
        self,
        node_id: str,
        log_dir: Path,
        *,
        segment_bytes: int = 64 << 20,
        retain: int = 100_000,
        max_frame_bytes: int = 16 << 20,
        max_pending: int = 65_536,
        first_index: int = 1,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.retain = retain
        self.max_frame_bytes = max_frame_bytes
        self.max_pending = max_pending
        self._log = FrameLog(log_dir, segment_bytes, first_index)
        # Invariant: _durable_index == _log.last_index once no append is running.
        self._durable_index = self._log.last_index
        self._first_index = self._log.first_index
        # Waiting to be written: the frames of one proposal, and a future for
        # the index of its first frame (the others follow it, in order).
        self._pending: list[tuple[list[bytes], asyncio.Future[int]]] = []
        self._pending_frames = 0
        self._wakeup = asyncio.Event()
        self._durable = asyncio.Condition()
        self._closing = False
        # Fail-stop (issue 11 item 4): once a write or fsync of the log fails,
        # nothing is known about what reached the disk; every waiter and every
        # new request fails at once, and on_fatal hears of it once.
        self._failed: BaseException | None = None
        self.on_fatal = on_fatal
        self.observer: Observer = NULL_OBSERVER
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name="noop-log-writer"
        )

    # -- proposals --------------------------------------------------------

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def _storage_failed(self) -> Rejected:
        return Rejected(RejectReason.STORAGE_FAILED, f"the frame log failed: {self._failed}")

    def _refusal(self) -> Rejected | None:
        """Why no frame can be taken now, or None."""
        if self._failed is not None:
            return self._storage_failed()
        if self._closing:
            return Rejected(RejectReason.SHUTTING_DOWN)
        return None

    def _frame_refusal(self, data: bytes, taking: int = 0) -> Rejected | None:
        """Why this one frame cannot be taken now (its size, the queue counting
        `taking` frames of the same call before it), or None."""
        if len(data) > self.max_frame_bytes:
            return Rejected(
                RejectReason.TOO_LARGE,
                f"frame is {len(data)} bytes; the limit is {self.max_frame_bytes}",
            )
        if self._pending_frames + taking >= self.max_pending:
            return Rejected(RejectReason.QUEUE_FULL, f"{self.max_pending} proposals waiting")
        return None

    def _enqueue(self, datas: list[bytes]) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((datas, future))
        self._pending_frames += len(datas)
        self._wakeup.set()
        return future

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        self.observer.proposed(1)
        try:
            data = frame.SerializeToString()
            refusal = self._refusal() or self._frame_refusal(data)
            if refusal is not None:
                raise refusal
            accepted = Accepted(await self._enqueue([data]))
        except Rejected as exc:
            self.observer.rejected(exc.reason)
            raise
        self.observer.committed(1)
        return accepted

    async def propose_many(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        """Every frame its own index, in order, written with one append."""
        outcomes = await self._propose_many(frames)
        report_outcomes(self.observer, outcomes)
        return outcomes

    async def _propose_many(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        refusal = self._refusal()
        if refusal is not None:
            return [refusal] * len(frames)
        outcomes: list[Accepted | Rejected | None] = []
        datas: list[bytes] = []
        for frame in frames:
            data = frame.SerializeToString()
            frame_refusal = self._frame_refusal(data, len(datas))
            outcomes.append(frame_refusal)
            if frame_refusal is None:
                datas.append(data)
        if not datas:
            return [o for o in outcomes if o is not None]
        try:
            first = await self._enqueue(datas)
        except Rejected as exc:  # the log failed: every frame of the lot
            return [o if o is not None else exc for o in outcomes]
        taken: list[Accepted | Rejected] = []
        for outcome in outcomes:
            if outcome is None:
                outcome = Accepted(first)
                first += 1
            taken.append(outcome)
        return taken

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                self._pending_frames = 0
                await self._write_batch(batch)
            if self._closing:
                return

    async def _write_batch(self, batch: list[tuple[list[bytes], asyncio.Future[int]]]) -> None:
        if self._failed is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._storage_failed())
            return
        first = self._durable_index + 1
        records = [data for datas, _ in batch for data in datas]
        try:
            # Shielded: a cancelled proposer must not leave a half-written batch.
            last = await asyncio.shield(asyncio.to_thread(self._log.append, records))
        except Exception as exc:  # an fsync or write error: stop accepting anything
            await self._fail(exc, batch)
            return
        assert last == first + len(records) - 1
        self._durable_index = last
        for datas, future in batch:
            if not future.done():
                future.set_result(first)
            first += len(datas)
        async with self._durable:
            self._durable.notify_all()

    async def _fail(
        self, exc: BaseException, batch: list[tuple[list[bytes], asyncio.Future[int]]]
    ) -> None:
        log.critical("the frame log failed: %s", exc, exc_info=exc)
        self._failed = exc
        waiting, self._pending = self._pending, []
        self._pending_frames = 0
        for _, future in batch + waiting:
            if not future.done():
                future.set_exception(self._storage_failed())
        async with self._durable:
            self._durable.notify_all()
        if self.on_fatal is not None:
            try:
                self.on_fatal(exc)
            except Exception:
                log.exception("on_fatal failed")

    # -- the committed stream ----------------------------------------------

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        """Every index holds a frame here, so `marks` changes nothing."""
        if from_index < 1:
            raise ValueError("from_index must be >= 1")
        if from_index < self._first_index:
            raise Compacted(from_index, self._first_index)
        next_index = from_index
        while True:
            if self._failed is not None:
                raise self._storage_failed()
            if next_index <= self._durable_index:
                try:
                    records = self._log.read(next_index)
                except IndexOutOfRange as exc:
                    raise Compacted(exc.index, exc.first_index) from exc
                batch: list[tuple[int, frame_pb2.Frame | None]] = []
                for index, data in records:
                    if index > self._durable_index:
                        break
                    batch.append((index, frame_pb2.Frame.FromString(data)))
                    next_index = index + 1
                if batch:
                    yield batch
                continue
            if self._closing and not self._pending and self._writer_task.done():
                return
            await self._wait_durable(next_index)

    async def _wait_durable(self, index: int) -> None:
        async with self._durable:
            await self._durable.wait_for(
                lambda: (
                    self._durable_index >= index
                    or self._writer_task.done()
                    or self._failed is not None
                )
            )

    async def read_barrier(self) -> int:
        if self._failed is not None:
            raise self._storage_failed()
        if self._closing:
            raise Rejected(RejectReason.SHUTTING_DOWN)
        return self._durable_index

    def status(self) -> ReplicatorStatus:
        return ReplicatorStatus(
            kind=self.kind,
            role="leader",
            term=0,
            leader=self.node_id,
            commit_index=self._durable_index,
            first_index=self._first_index,
            last_index=self._durable_index,
            members=(self.node_id,),
        )

    def observe(self, observer: Observer) -> None:
        self.observer = self._log.observer = observer

    def log_bytes(self) -> int:
        return self._log.size_bytes()

    def peer_connections(self) -> dict[str, bool]:
        return {}  # alone

    def compact(self, applied_index: int) -> None:
        keep_from = min(applied_index, self._durable_index) - self.retain + 1
        if keep_from > self._first_index:
            self._first_index = self._log.compact(keep_from)

    async def close(self) -> None:
        """Write what was already accepted for writing, then stop."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        with contextlib.suppress(Exception):
            await self._writer_task
        async with self._durable:
            self._durable.notify_all()
        if self._failed is None:
            await asyncio.to_thread(self._log.close)
        else:
            with contextlib.suppress(OSError):  # the disk already failed once
                await asyncio.to_thread(self._log.close)
