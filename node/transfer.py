"""Export and import one namespace as JSON lines, for people who just want
their data out and in:

    {"key": "user/1", "value": "aGVsbG8=", "version": 1042}

one line per key in key order; `value` is the bytes in standard base64 (so
tabs, newlines and NULs survive), `version` the key's version when exported.
Import writes through the normal write path (Batch: replicated, one frame per
batch), so a key gets a new version on import; `version` is not required and
ignored there. An export is read page by page (each page linearizable), so
under concurrent writes it is not one snapshot: take a backup for that.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shardlite.node.client import Client, ClientError, Put
from shardlite.node.progress import Update

# Keys per List page on export; keys and bytes per Batch on import (well under
# the node's limits: 10,000 ops, --max-request-bytes 16 MiB by default).
EXPORT_PAGE = 1000
IMPORT_BATCH_KEYS = 500
IMPORT_BATCH_BYTES = 1 << 20


class TransferError(Exception):
    """An export or import file that cannot be used; says where and why."""


def encode_line(key: str, value: bytes, version: int) -> str:
    return json.dumps(
        {"key": key, "value": base64.b64encode(value).decode("ascii"), "version": version}
    )


def decode_line(line: str, number: int) -> tuple[str, bytes]:
    """(key, value) of one line; TransferError naming the line otherwise."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise TransferError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
        raise TransferError(f'line {number}: expected {{"key": "...", "value": "<base64>"}}')
    encoded = raw.get("value")
    if not isinstance(encoded, str):
        raise TransferError(f'line {number}: "value" must be a base64 string')
    try:
        value = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise TransferError(f'line {number}: "value" is not valid base64 ({exc})') from None
    return raw["key"], value


def export_namespace(
    client: Client, org: str, namespace: str, out: TextIO, progress: Update | None = None
) -> int:
    """Write every key of (org, namespace) to `out` as JSON lines; how many."""
    count = 0
    after = ""
    while True:
        page = list(client.list(start_after=after, limit=EXPORT_PAGE, org=org, namespace=namespace))
        for entry in page:
            out.write(encode_line(entry.key, entry.value, entry.version) + "\n")
        count += len(page)
        if progress is not None:
            progress(count, -1)
        if len(page) < EXPORT_PAGE:
            return count
        after = page[-1].key


@dataclass(frozen=True)
class Imported:
    keys: int
    batches: int
    last_index: int


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def _check(path: Path) -> int:
    """Read the whole file once before writing anything: a bad line is found
    before any key is imported. The number of keys."""
    count = 0
    try:
        for number, line in _lines(path):
            decode_line(line, number)
            count += 1
    except UnicodeDecodeError as exc:
        raise TransferError(f"{path} is not UTF-8 text ({exc})") from None
    return count


def import_namespace(
    client: Client, org: str, namespace: str, path: Path, progress: Update | None = None
) -> Imported:
    """Put every line of `path` into (org, namespace), in batches of at most
    IMPORT_BATCH_KEYS keys and IMPORT_BATCH_BYTES bytes, each one replicated
    Batch. A batch the node refuses stops the import, saying which lines were
    imported before it."""
    total = _check(path)
    done = batches = last_index = 0
    ops: list[Put] = []
    size = 0
    first_line = 0

    def flush() -> None:
        nonlocal done, batches, last_index, ops, size
        if not ops:
            return
        try:
            results = client.batch(ops, org=org, namespace=namespace)
        except ClientError as exc:
            raise TransferError(
                f"the batch from line {first_line} was refused ({exc.code.name}: "
                f"{exc.details}); {done} keys before it were imported"
            ) from None
        done += len(ops)
        batches += 1
        last_index = results[0].index if results else last_index
        ops, size = [], 0
        if progress is not None:
            progress(done, total)

    for number, line in _lines(path):
        key, value = decode_line(line, number)
        if ops and (
            len(ops) >= IMPORT_BATCH_KEYS or size + len(key) + len(value) > IMPORT_BATCH_BYTES
        ):
            flush()
        if not ops:
            first_line = number
        ops.append(Put(key, value))
        size += len(key) + len(value)
    flush()
    return Imported(done, batches, last_index)
