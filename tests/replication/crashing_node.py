"""`SHARDLITE_TEST_CRASH_POINT=P python -m tests.replication.crashing_node node ...`:
a shardlite node that dies as if SIGKILLed (os._exit: nothing flushed or
closed) the first time it reaches the crash point P
(replication.durable.crash_point). A test-only launcher: the node itself
knows no such variable."""

from __future__ import annotations

import logging
import os
import sys

from shardlite.node.cli import main as cli_main
from shardlite.replication.durable import set_crash_hook

CRASHED = 86  # the exit status that says "stopped at the crash point"


def main() -> int:
    point = os.environ["SHARDLITE_TEST_CRASH_POINT"]

    def hook(name: str) -> None:
        if name == point:
            sys.stdout.write(f"crash point {name} reached: exiting\n")
            sys.stdout.flush()
            os._exit(CRASHED)

    set_crash_hook(hook)
    logging.basicConfig()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
