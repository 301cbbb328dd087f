"""What client commands print: text for people, or one JSON document per
result with `--output json` for scripts. Bytes (values) are base64 in JSON."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def emit(args: argparse.Namespace, text: str, data: Any) -> None:
    """Print `text`, or `data` as one line of JSON with --output json."""
    if wants_json(args):
        print(json.dumps(data, sort_keys=True), flush=True)
    else:
        print(text, flush=True)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def error(args: argparse.Namespace, code: str, message: str) -> None:
    """A failed command's reason on stderr (as JSON with --output json)."""
    if wants_json(args):
        reason = {"code": code, "message": message} if code else {"message": message}
        print(json.dumps({"error": reason}), file=sys.stderr)
    else:
        print(f"error: {code}: {message}" if code else f"error: {message}", file=sys.stderr)
