"""Progress bars for long CLI operations (backup, restore, export, import):
drawn with rich on stderr when it is a terminal, nothing otherwise, so stdout
stays clean for data and scripts see no control characters."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Literal

Update = Callable[[int, int], None]  # (done, total; total < 0 = unknown)


def _quiet(done: int, total: int) -> None:
    pass


@contextlib.contextmanager
def progress_bar(
    description: str, unit: Literal["bytes", "items"], *, enabled: bool | None = None
) -> Iterator[Update]:
    """A callback to report progress with; `enabled` None: when stderr is a tty."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _quiet
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counts = (
        (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counts,
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total if total >= 0 else None)

        yield update
