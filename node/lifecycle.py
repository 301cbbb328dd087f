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

from node.errors import OutcomeUnknown, Unavailable

T = TypeVar("T")

RETRY_ELSEWHERE = "retry on another node"


class Lifecycle:
    def __init__(self) -> None:
        self.closing = False
        # Set once, by fail(): why this node stopped serving.
        self.fatal: str | None = None
        self._failed = asyncio.Event()
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
        return True

    async def wait_failed(self) -> str:
        await self._failed.wait()
        assert self.fatal is not None
        return self.fatal

    async def guard(self, waiting: Awaitable[T], *, outcome_unknown: bool = False) -> T:
        """Await `waiting`, unless the node fails first: then cancel it and raise
        Unavailable with the reason (saying the outcome is unknown when the
        request may already be in the log)."""
        task = asyncio.ensure_future(waiting)
        if self.fatal is None:
            failed = asyncio.ensure_future(self._failed.wait())
            try:
                await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                if not task.done():
                    task.cancel()
        if not task.done() or (self.fatal is not None and not _succeeded(task)):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            message = f"node stopped after a fatal fault ({self.fatal}); {RETRY_ELSEWHERE}"
            if outcome_unknown:
                raise OutcomeUnknown(message)
            raise Unavailable(message)
        return task.result()

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


def _succeeded(task: asyncio.Future[T]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
