"""Start real shardlite nodes for tests: as processes (the way users run them)
or in-process on a private event loop (to plug in a test replicator).

Everything started here is stopped by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from node.client import Client
from node.config import NodeConfig
from node.server import Node, ReplicatorFactory

T = TypeVar("T")

START_TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@dataclass
class NodeProcess:
    """A `shardlite node` child process."""

    data_dir: Path
    args: list[str]
    log_path: Path
    node_id: str = "n1"
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    _log: Any = field(default=None, repr=False)

    def start(self, listen: str = "127.0.0.1:0") -> NodeProcess:
        ready = self.data_dir.parent / f"{self.data_dir.name}.ready"
        ready.unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop/kill
        cmd = [
            sys.executable, "-m", "node.cli", "node",
            "--id", self.node_id,
            "--data", str(self.data_dir),
            "--listen", listen,
            "--ready-file", str(ready),
            *self.args,
        ]  # fmt: skip
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        proc = self.process

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"node exited with {proc.returncode}: {self.log_tail()}")
            return ready.exists()

        wait_until(started, START_TIMEOUT, f"node {self.node_id} to serve")
        self.endpoint = ready.read_text().strip()
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: Any) -> Client:
        return Client(self.endpoint, **kwargs)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and wait for a graceful exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class InProcessNode:
    """A Node on its own event loop in a background thread, so a test can give
    it any replicator; clients reach it over real gRPC."""

    def __init__(self, config: NodeConfig, replicator_factory: ReplicatorFactory) -> None:
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
