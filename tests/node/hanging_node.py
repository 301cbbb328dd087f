"""`python -m tests.node.hanging_node node ...`: a real `shardlite node` that
never finishes its start (its replay never ends), for the harness's
"where does it wait" report."""

from __future__ import annotations

import asyncio
import sys

from shardlite.node import cli
from shardlite.node.applier import Applier


async def replay_that_never_ends(self: Applier, index: int) -> None:
    await asyncio.Event().wait()


Applier.wait_applied = replay_that_never_ends  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main())
