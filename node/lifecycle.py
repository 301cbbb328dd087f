"""Whether the node takes requests: serving, shutting down, or stopped by a
fatal fault (fail-stop, issue 11 item 4).

Every request path asks `check()` before it starts work and runs its waits
under `guard()`, so a fatal fault answers every waiting and every new request
at once, with the reason, instead of leaving them to hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from shardlite.node.errors import OutcomeUnknown, Unavailable

T = TypeVar("T")

RETRY_ELSEWHERE = "retry on another node"


class Lifecycle:
    def __init__(self) -> None:
        self.closing = False
        # Set once, by fail(): why this node stopped serving.
        self.fatal: str | None = None
        self._failed = asyncio.Event()
        self._failed_at: asyncio.Future[None] | None = None
        self._inflight_writes = 0
        self._writes_drained = asyncio.Event()
        self._writes_drained.set()

    def check(self) -> None:
        """Raise Unavailable unless the node takes new requests."""
        self.check_fatal()
        if self.closing:
            raise Unavailable("node is shutting down")

    def check_fatal(self) -> None:
        """Raise Unavailable if the node stopped after a fatal fault."""
        if self.fatal is not None:
            raise Unavailable(f"node stopped after a fatal fault ({self.fatal}); {RETRY_ELSEWHERE}")

    def fail(self, reason: str) -> bool:
        """Enter fail-stop; False if it already was."""
        if self.fatal is not None:
            return False
        self.fatal = reason
        self._failed.set()
        if self._failed_at is not None and not self._failed_at.done():
            self._failed_at.set_result(None)
        return True

    async def wait_failed(self) -> str:
        await self._failed.wait()
        assert self.fatal is not None
        return self.fatal

    async def guard(self, waiting: Awaitable[T], *, outcome_unknown: bool = False) -> T:
        """Await `waiting`, unless the node fails first: then cancel it and raise
        Unavailable with the reason (OutcomeUnknown when the request may already
        be in the log). A result that arrived is returned even then."""
        task = asyncio.ensure_future(waiting)
        if self.fatal is None and not task.done():
            await _first_of(task, self._failed_future())
        if task.done() and (self.fatal is None or _succeeded(task)):
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        message = f"node stopped after a fatal fault ({self.fatal}); {RETRY_ELSEWHERE}"
        if outcome_unknown:
            raise OutcomeUnknown(message)
        raise Unavailable(message)

    def _failed_future(self) -> asyncio.Future[None]:
        """Done once the node fails; one per event loop, shared by every guard."""
        loop = asyncio.get_running_loop()
        if self._failed_at is None or self._failed_at.get_loop() is not loop:
            self._failed_at = loop.create_future()
            if self.fatal is not None:
                self._failed_at.set_result(None)
        return self._failed_at

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Count a write in flight (shutdown lets them finish)."""
        self._inflight_writes += 1
        self._writes_drained.clear()
        try:
            yield
        finally:
            self._inflight_writes -= 1
            if self._inflight_writes == 0:
                self._writes_drained.set()

    async def writes_drained(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._writes_drained.wait(), within)


async def _first_of(a: asyncio.Future[T], b: asyncio.Future[None]) -> None:
    """Wait until `a` or `b` is done (asyncio.wait without its set and task
    bookkeeping: this runs on every write)."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    a.add_done_callback(wake)
    b.add_done_callback(wake)
    try:
        await waiter
    finally:
        a.remove_done_callback(wake)
        b.remove_done_callback(wake)


def _succeeded(task: asyncio.Future[T]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
