"""Long file work in a child process, away from the event loop's GIL.

A snapshot walks every shard: thousands of small system calls (open, link,
stat, fsync, an SQLite backup), each of which lets the GIL go and must take it
back. On a worker thread beside a busy event loop every take-back waits for
the loop to let go (up to the 5 ms switch interval), so the walk slows down
by orders of magnitude: 10,000 shards took 55-65 s under a write load
(13 s alone). A child process has a GIL of its own.

    python -m shardlite.replication.offload MODULE:FUNCTION < args.json > result.json

`call` runs one function that way: JSON arguments in, a JSON result out, the
child killed if the caller is cancelled; small work stays on a thread. Only
this code names the functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import traceback
from typing import Any


class OffloadError(Exception):
    """The child process failed: its exit status and the end of its stderr."""


# Below this many files a walk is quick even on a thread, and a child's start
# (~0.1 s of CPU: an interpreter and its imports) would cost more than it saves.
CHILD_FROM_FILES = 500


async def call(target: str, *args: Any, files: int) -> Any:
    """`target` ("module:function") called with `args` -- in a new Python
    process when the work touches `files` or more files (CHILD_FROM_FILES),
    else on a worker thread; its return value. Raises OffloadError if it
    raised in a child."""
    if files < CHILD_FROM_FILES:
        return await asyncio.to_thread(_resolve(target), *args)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        target,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await child.communicate(json.dumps(args).encode())
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await asyncio.shield(child.wait())
        raise
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise OffloadError(
            f"{target} failed in its child process (exit {child.returncode}): "
            + (lines[-1] if lines else "no message")
        )
    return json.loads(out)


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> int:
    function = _resolve(sys.argv[1])
    try:
        result = function(*json.load(sys.stdin))
    except Exception:
        traceback.print_exc()
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
