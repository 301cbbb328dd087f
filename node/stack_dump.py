"""`kill -USR1 <pid>`: a running node writes where it waits to stderr, and
goes on serving (as SIGQUIT does for a Go program).

Two views, because a hang in this process is one of two kinds: a thread
blocked (the loop thread in a system call, the applier in SQLite) shows in
the threads' stacks, which faulthandler writes from the signal handler itself,
even when the loop is stuck; an await that never finishes shows only in the
asyncio tasks' stacks, which the loop writes when it gets the signal.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from typing import TextIO

# The last line of a dump: a reader (the test harness) knows it is whole.
END = "-- end of the stack dump --"


def install_threads() -> None:
    """The threads' part, from the start of the process (SIGUSR1 would
    otherwise end a node that hangs before its loop runs)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Both parts, once the loop runs."""
    # In this order: unregister puts back the default action, the loop's
    # handler replaces it, and chain makes faulthandler call the loop's after
    # writing the threads.
    faulthandler.unregister(signal.SIGUSR1)
    loop.add_signal_handler(signal.SIGUSR1, print_tasks, loop)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    faulthandler.unregister(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR1)


def print_tasks(loop: asyncio.AbstractEventLoop, file: TextIO | None = None) -> None:
    out = file or sys.stderr
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    print(f"{len(tasks)} asyncio tasks (most recent await last):", file=out)
    for task in tasks:
        print(f"task {task.get_name()}:", file=out)
        for line in await_chain(task.get_coro()):
            print(line, file=out)
    print(END, file=out, flush=True)


def await_chain(awaitable: object, limit: int = 40) -> list[str]:
    """Where a coroutine waits: its frame, then the frame of what it awaits,
    and so on (Task.print_stack shows the outermost frame only)."""
    lines = []
    for _ in range(limit):
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await", None)
    return lines
