"""SIGUSR1 makes a node say where it waits (node/stack_dump.py), and the test
harness asks for it when a node does not serve in time: a start that hangs in
CI leaves the stacks in the failure, not only a timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shardlite.node import stack_dump
from tests.harness import NodeProcess


def test_a_serving_node_writes_its_threads_and_tasks_and_goes_on(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    dump = node.stacks()
    assert "Current thread" in dump, dump  # faulthandler: the threads
    assert "asyncio tasks (most recent await last):" in dump, dump  # the loop
    assert stack_dump.END in dump, dump
    assert node.running
    with node.client(timeout=10) as c:
        c.put("after-the-dump", b"v")
        entry = c.get("after-the-dump")
        assert entry is not None
        assert entry.value == b"v"


def test_a_node_that_never_serves_says_where_it_waits(tmp_path: Path) -> None:
    node = NodeProcess(
        data_dir=tmp_path / "n1",
        args=[],
        log_path=tmp_path / "n1.log",
        module="tests.node.hanging_node",
        start_timeout=3.0,
    )
    try:
        with pytest.raises(TimeoutError) as failure:
            node.start()
    finally:
        node.kill()
    message = str(failure.value)
    assert "waiting for node n1 to serve" in message
    # The await it hangs in, from the task that runs the node's start.
    assert "in start" in message, message
    assert "in replay_that_never_ends" in message, message
