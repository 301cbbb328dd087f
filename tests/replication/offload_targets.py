"""Functions tests run in a child process through replication/offload.py."""

from __future__ import annotations

import os
import time
from pathlib import Path


def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b, "pid": os.getpid()}


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_after_writing_pid(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
