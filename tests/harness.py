"""Start real shardlite nodes for tests: as processes (the way users run them)
or in-process on a private event loop (to plug in a test replicator).

Everything started here is stopped by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from scripts.cluster import LocalCluster, free_ports, running_cluster, wait_until
from scripts.cluster import LocalNode as NodeProcess
from shardlite.node.config import NodeConfig
from shardlite.node.server import Node, ReplicatorFactory

T = TypeVar("T")

__all__ = [
    "InProcessNode",
    "LocalCluster",
    "NodeProcess",
    "free_ports",
    "running_cluster",
    "until",
    "wait_until",
]


class InProcessNode:
    """A Node on its own event loop in a background thread, so a test can give
    it any replicator (None: the one it would build itself) and reach inside;
    clients reach it over real gRPC."""

    def __init__(
        self, config: NodeConfig, replicator_factory: ReplicatorFactory | None = None
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.node = Node(config, replicator_factory)
        port = self.run(self.node.start())
        self.endpoint = f"127.0.0.1:{port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        try:
            self.run(self.node.stop(grace=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait (polling on the loop) until `condition()` holds; fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)
