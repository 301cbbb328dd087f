"""A tokens file for tests (node/auth.py): the tokens, and the file holding
only their digests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from shardlite.node import auth


@dataclass
class Tokens:
    path: Path
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token

    def add(
        self, name: str, orgs: list[str], *, read_only: bool = False, admin: bool = False
    ) -> str:
        token = auth.new_token()
        entry = auth.entry_json(name, token, orgs, read_only=read_only, admin=admin)
        auth.append_entry(self.path, entry)
        self.tokens[name] = token
        return token

    def __getitem__(self, name: str) -> str:
        return self.tokens[name]


def standard_tokens(path: Path) -> Tokens:
    """alpha: org a; reader: org a, read-only; pair: orgs a and c; wide: every
    org, not admin; admin: every org and the admin RPCs."""
    tokens = Tokens(path)
    tokens.add("alpha", ["a"])
    tokens.add("reader", ["a"], read_only=True)
    tokens.add("pair", ["a", "c"])
    tokens.add("wide", ["*"])
    tokens.add("admin", ["*"], admin=True)
    assert all(t not in path.read_text() for t in tokens.tokens.values())
    assert json.loads(path.read_text())["tokens"][0]["sha256"]
    return tokens
