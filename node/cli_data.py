"""The CLI's long data operations: `backup`, `restore`, `export`, `import`
(docs/backup.md). Each shows a progress bar on a terminal (node/progress.py)
and prints its result as text or, with --output json, as JSON."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shardlite.node.backup import RestoreError, restore
from shardlite.node.cli_output import emit, error, wants_json
from shardlite.node.client import Client
from shardlite.node.progress import progress_bar
from shardlite.node.transfer import TransferError, export_namespace, import_namespace

ClientFactory = Callable[[argparse.Namespace], Client]
# (subparsers, name, help, run) -> the parser, with the client flags added.
ClientParser = Callable[[Any, str, str, Callable[..., int]], Any]


def _bars(args: argparse.Namespace) -> bool | None:
    """Progress bars on a terminal (None: decide by the tty), never with --output json."""
    return False if wants_json(args) else None


def backup(args: argparse.Namespace, client: ClientFactory) -> int:
    timeout = args.timeout if args.timeout > 10 else 3600
    with client(args) as c, progress_bar("backup", "bytes", enabled=_bars(args)) as bar:
        index = c.backup(args.out, timeout=timeout, progress=bar)
    size = args.out.stat().st_size
    emit(
        args,
        f"backup at index {index} written to {args.out} ({size} bytes, verified)",
        {"index": index, "file": str(args.out), "bytes": size},
    )
    return 0


def restore_data_dir(args: argparse.Namespace) -> int:
    try:
        with progress_bar("restore", "bytes", enabled=_bars(args)) as bar:
            result = restore(args.file, args.data, progress=bar)
    except RestoreError as exc:
        error(args, "", f"cannot restore: {exc}")
        return 2
    emit(
        args,
        f"restored the backup at index {result.index} into {args.data}; start it with "
        f"shardlite node --data {args.data} (and --peers ... for each member of a new cluster)",
        {"index": result.index, "data": str(args.data)},
    )
    return 0


def export(args: argparse.Namespace, client: ClientFactory) -> int:
    bar_name = f"export {args.namespace}"
    with client(args) as c, progress_bar(bar_name, "items", enabled=_bars(args)) as bar:
        if args.out is None:
            export_namespace(c, args.org, args.namespace, sys.stdout, bar)
            return 0
        # Atomic: a failed export leaves no half-written file under the name.
        partial = args.out.with_name(f".{args.out.name}.partial")
        try:
            with open(partial, "w", encoding="utf-8") as f:
                count = export_namespace(c, args.org, args.namespace, f, bar)
            partial.replace(args.out)
        finally:
            partial.unlink(missing_ok=True)
    emit(args, f"exported {count} keys to {args.out}", {"keys": count, "file": str(args.out)})
    return 0


def import_(args: argparse.Namespace, client: ClientFactory) -> int:
    bar_name = f"import {args.namespace}"
    with client(args) as c, progress_bar(bar_name, "items", enabled=_bars(args)) as bar:
        try:
            done = import_namespace(c, args.org, args.namespace, args.file, bar)
        except TransferError as exc:
            error(args, "", f"cannot import {args.file}: {exc}")
            return 2
    emit(
        args,
        f"imported {done.keys} keys into {args.org or '(default org)'}/{args.namespace} "
        f"in {done.batches} batches",
        {"keys": done.keys, "batches": done.batches, "last_index": done.last_index},
    )
    return 0


def add_parsers(sub: Any, client_parser: ClientParser, client: ClientFactory) -> None:
    """`backup`, `restore`, `export` and `import` on the `shardlite` parser."""
    p = client_parser(
        sub,
        "backup",
        "download a consistent backup as one file",
        functools.partial(backup, client=client),
    )
    p.add_argument("--out", type=Path, required=True, help="the backup file to write (new)")
    p = sub.add_parser(
        "restore",
        help="prepare a data directory from a backup file",
        description="Verify a backup file and restore it into an empty data directory; then "
        "start a node on it (shardlite node --data DIR, with --peers for a new cluster).",
    )
    p.add_argument("file", type=Path, help="a backup file (or an older backup directory)")
    p.add_argument("--data", type=Path, required=True, help="the data directory (empty or new)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(run=restore_data_dir)
    p = client_parser(
        sub,
        "export",
        "write a namespace's keys as JSON lines",
        functools.partial(export, client=client),
    )
    p.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    p = client_parser(
        sub,
        "import",
        "put the keys of a JSON-lines file into a namespace",
        functools.partial(import_, client=client),
    )
    p.add_argument("file", type=Path, help="JSON lines as written by shardlite export")
