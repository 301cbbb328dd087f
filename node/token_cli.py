"""`shardlite token create | list | revoke`: manage a node's tokens file
(node/auth.py). A token is printed once, when it is made; the file keeps its
SHA-256 only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shardlite.node import auth


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="create, list or revoke bearer tokens",
        description="Manage bearer tokens (the tokens file a node reads with --auth-tokens).",
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    create = actions.add_parser(
        "create",
        help="make a token; print it once, and its entry for the tokens file",
        description=(
            "Make a random token. It is printed once (first line of the output); "
            "with --auth-tokens its entry is added to that file (nodes pick it up "
            "within a second), else the entry is printed to add by hand."
        ),
    )
    create.add_argument("--name", required=True, help="who or what uses the token")
    create.add_argument(
        "--orgs",
        required=True,
        help="orgs it may use, comma-separated ('_' is the default org, '*' every org)",
    )
    create.add_argument("--read-only", action="store_true", help="refuse its writes")
    create.add_argument(
        "--admin",
        action="store_true",
        help="allow the admin RPCs (membership, leader transfer, backup, restore)",
    )
    _file_arg(create, required=False)
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="the tokens of a file (names and scopes)")
    _file_arg(listing, required=True)
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="remove a token from a file by name")
    revoke.add_argument("--name", required=True)
    _file_arg(revoke, required=True)
    revoke.set_defaults(run=_revoke)


def _file_arg(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--auth-tokens",
        type=Path,
        default=None,
        required=required,
        help="the tokens file (JSON), as the node's --auth-tokens",
    )


def _orgs(value: str) -> list[str]:
    orgs = [org.strip() for org in value.split(",")]
    if not orgs or any(org == "" for org in orgs):
        raise ValueError(
            f"--orgs {value!r}: list org names separated by commas ('_' for the default org)"
        )
    return [auth.ALL_ORGS if org == "*" else "" if org == "_" else org for org in orgs]


def _create(args: argparse.Namespace) -> int:
    token = auth.new_token()
    entry = auth.entry_json(
        args.name, token, _orgs(args.orgs), read_only=args.read_only, admin=args.admin
    )
    print(token)
    if args.auth_tokens is not None:
        auth.append_entry(args.auth_tokens, entry)
        print(
            f"token {args.name!r} added to {args.auth_tokens}; it is shown only now: "
            "store it (clients send it with --token or SHARDLITE_TOKEN)",
            file=sys.stderr,
        )
    else:
        print(json.dumps(entry))
        print(
            'the first line is the token, shown only now; add the second line to the "tokens" '
            "list of the node's tokens file",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    path: Path = args.auth_tokens
    for entry in auth.parse_tokens(path.read_text(), str(path)):
        grant = entry.grant
        orgs = "*" if grant.orgs is None else ",".join(sorted(o or "_" for o in grant.orgs))
        flags = [f for f, on in (("read-only", grant.read_only), ("admin", grant.admin)) if on]
        print(f"{grant.name}\t{orgs or '-'}\t{','.join(flags) or 'read-write'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path: Path = args.auth_tokens
    text = path.read_text()
    auth.parse_tokens(text, str(path))
    document = json.loads(text)
    kept = [t for t in document["tokens"] if t.get("name") != args.name]
    if len(kept) == len(document["tokens"]):
        raise ValueError(f"{path} has no token named {args.name!r}")
    document["tokens"] = kept
    auth.write_tokens(path, document)
    print(f"token {args.name!r} revoked in {path} (nodes drop it within a second)")
    return 0
