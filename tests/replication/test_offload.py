"""replication/offload.py: a function run in a child process, its result or
its error back, and the child gone when the caller is cancelled."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shardlite.replication import offload
from tests.harness import until, wait_until

MANY = offload.CHILD_FROM_FILES  # enough files to be worth a child process


def test_the_result_comes_back_from_another_process() -> None:
    result = asyncio.run(offload.call("tests.replication.offload_targets:add", 2, 3, files=MANY))
    assert result["sum"] == 5
    assert result["pid"] != os.getpid()


def test_small_work_stays_in_this_process() -> None:
    result = asyncio.run(offload.call("tests.replication.offload_targets:add", 2, 3, files=1))
    assert result == {"sum": 5, "pid": os.getpid()}


def test_an_error_in_the_child_is_raised_with_its_message() -> None:
    with pytest.raises(offload.OffloadError, match="ValueError: the disk said no"):
        asyncio.run(
            offload.call("tests.replication.offload_targets:fail", "the disk said no", files=MANY)
        )


def test_a_cancelled_call_kills_its_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def cancel_midway() -> None:
        call = asyncio.ensure_future(
            offload.call(
                "tests.replication.offload_targets:sleep_after_writing_pid",
                str(pid_file),
                60,
                files=MANY,
            )
        )
        await until(lambda: pid_file.exists() and pid_file.read_text() != "", 20, "the child")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(asyncio.wait_for(cancel_midway(), 30))
    pid = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 10, "the child to be gone")
