"""`python -m tests.node.faulty_node node ...`: a real `shardlite node` whose
disk fails on demand, for fail-stop tests (issue 11, item 4).

Once the file named by SHARDLITE_TEST_FAULT_TRIGGER exists, the fault named
by SHARDLITE_TEST_FAULT happens on the next write:
- "wal": the frame log's append fails with EIO (its write or fsync);
- "applier": applying a batch to a shard fails with EIO (a machine fault).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from shardlite.node import cli, shard
from shardlite.replication import frame_log

TRIGGER = Path(os.environ["SHARDLITE_TEST_FAULT_TRIGGER"])
FAULT = os.environ.get("SHARDLITE_TEST_FAULT", "wal")


def _failing(original: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if TRIGGER.exists():
            raise OSError(errno.EIO, f"injected I/O error ({FAULT}, test)")
        return original(*args, **kwargs)

    return call


if FAULT == "wal":
    frame_log.FrameLog.append = _failing(frame_log.FrameLog.append)  # type: ignore[method-assign]
elif FAULT == "applier":
    shard.Shard.apply = _failing(shard.Shard.apply)  # type: ignore[method-assign]
else:
    raise SystemExit(f"unknown SHARDLITE_TEST_FAULT {FAULT!r}")

if __name__ == "__main__":
    sys.exit(cli.main())
