"""Bearer tokens scoped to orgs, checked once per call on the client API.

A node started with `--auth-tokens FILE` admits a call only with the metadata
`authorization: Bearer <token>` naming a token of that file. The file holds
each token's SHA-256, never the token (tokens are random and long, so a plain
digest is what token stores such as GitHub's keep), with what it may do:

    {"tokens": [
      {"name": "ci", "sha256": "<64 hex digits>", "orgs": ["acme", "beta"],
       "read_only": false, "admin": false},
      {"name": "ops", "sha256": "<64 hex digits>", "orgs": ["*"], "admin": true}
    ]}

`orgs` lists the orgs the token may use ("" is the default org, "*" every
org); `read_only` refuses its writes; `admin` opens the Cluster, Maintenance
and Faults services. `shardlite token create` makes a token and its entry.
The file is read again when it changes (checked at most once a second), so a
token is added or revoked without a restart; a file that no longer parses is
ignored (the previous tokens stay) and logged.

`Authorizer.authorize` is node/rpc.py's hook: it runs before every handler of
the client services, raises Unauthenticated or PermissionDenied from the
token and the request's org names alone -- never from what exists, so a
denial says nothing about another org's namespaces or keys -- and leaves the
caller's Grant in a context variable for the two handlers that narrow by
it: MultiWrite and MultiGet check each op's org on its own (one op outside
the token fails alone with PERMISSION_DENIED, as its unary RPC would: an
AsyncClient's coalesced calls never fail for a neighbour's op), and
Subscribe streams only the frames of orgs the token may read.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from shardlite.node import names
from shardlite.node.bearer import METADATA_KEY as METADATA_KEY
from shardlite.node.errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

SCHEME = "Bearer"
ALL_ORGS = "*"
TOKEN_PREFIX = "slt_"
# secrets.token_urlsafe(32): 256 random bits.
TOKEN_BYTES = 32
# How often a call may look at the tokens file for changes.
RELOAD_CHECK_SECONDS = 1.0

MISSING_TOKEN = (
    "this node requires a token: send the metadata 'authorization: Bearer <token>' "
    "(shardlite --token, or SHARDLITE_TOKEN)"
)
BAD_TOKEN = "the token is not valid on this node (unknown or revoked)"


def org_label(org: str) -> str:
    return "the default org" if org == "" else f"org {org!r}"


@dataclass(frozen=True)
class Grant:
    """What one token may do. `orgs` None: every org."""

    name: str
    orgs: frozenset[str] | None
    read_only: bool = False
    admin: bool = False

    def may_read(self, org: str) -> bool:
        return self.orgs is None or org in self.orgs

    def check_read(self, org: str) -> None:
        if not self.may_read(org):
            raise PermissionDenied(f"token {self.name!r} may not use {org_label(org)}")

    def check_writer(self) -> None:
        if self.read_only:
            raise PermissionDenied(f"token {self.name!r} is read-only: it may not write")

    def check_write(self, org: str) -> None:
        self.check_read(org)
        self.check_writer()

    def check_admin(self, method: str) -> None:
        if not self.admin:
            raise PermissionDenied(
                f"{method} is an admin RPC: token {self.name!r} is not an admin token"
            )


# Authentication off: the caller may do everything.
OPEN = Grant(name="", orgs=None, read_only=False, admin=True)

# The grant of the call being served. Each gRPC call runs in its own task (with
# its own copy of the context), so one call's grant never reaches another.
_current: contextvars.ContextVar[Grant] = contextvars.ContextVar("shardlite_grant", default=OPEN)


def current() -> Grant:
    """The caller's grant (OPEN when authentication is off)."""
    return _current.get()


# -- the tokens file ----------------------------------------------------------


class TokenFileError(ValueError):
    """The tokens file cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes  # SHA-256 of the token
    grant: Grant


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def entry_json(
    name: str, token: str, orgs: Sequence[str], *, read_only: bool, admin: bool
) -> dict[str, Any]:
    """The tokens-file entry for `token` (its digest, never the token)."""
    entry = {
        "name": name,
        "sha256": token_digest(token).hex(),
        "orgs": list(orgs),
        "read_only": read_only,
        "admin": admin,
    }
    parse_entry(entry, "the new entry")  # refuses what the node would refuse
    return entry


_FIELDS = {"name", "sha256", "orgs", "read_only", "admin"}


def parse_entry(raw: object, where: str) -> TokenEntry:
    if not isinstance(raw, dict):
        raise TokenFileError(f"{where} must be an object with name, sha256, orgs")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise TokenFileError(
            f"{where} has unknown fields {sorted(unknown)}: the fields are {sorted(_FIELDS)}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise TokenFileError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    sha = raw.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or not _is_hex(sha):
        raise TokenFileError(
            f"{where}: 'sha256' must be 64 hex digits, the SHA-256 of the token "
            "(as `shardlite token create` prints it)"
        )
    orgs = raw.get("orgs")
    if not isinstance(orgs, list) or not all(isinstance(o, str) for o in orgs):
        raise TokenFileError(f"{where}: 'orgs' must be a list of org names, or [\"*\"]")
    allowed: frozenset[str] | None
    if ALL_ORGS in orgs:
        allowed = None
    else:
        try:
            allowed = frozenset(names.check_org(o) for o in orgs)
        except InvalidArgument as exc:
            raise TokenFileError(f"{where}: {exc}") from None
    flags = {}
    for flag in ("read_only", "admin"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise TokenFileError(f"{where}: {flag!r} must be true or false")
        flags[flag] = value
    grant = Grant(name=name, orgs=allowed, read_only=flags["read_only"], admin=flags["admin"])
    return TokenEntry(digest=bytes.fromhex(sha), grant=grant)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def parse_tokens(text: str, source: str) -> tuple[TokenEntry, ...]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenFileError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise TokenFileError(f'{source} must be a JSON object {{"tokens": [...]}}')
    entries = tuple(
        parse_entry(raw, f"{source}: tokens[{position}]")
        for position, raw in enumerate(document["tokens"])
    )
    seen: set[str] = set()
    digests: set[bytes] = set()
    for entry in entries:
        if entry.grant.name in seen:
            raise TokenFileError(f"{source}: two tokens are named {entry.grant.name!r}")
        if entry.digest in digests:
            raise TokenFileError(f"{source}: token {entry.grant.name!r} repeats another's sha256")
        seen.add(entry.grant.name)
        digests.add(entry.digest)
    return entries


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add `entry` to the tokens file at `path` (made if missing)."""
    text = path.read_text() if path.exists() else '{"tokens": []}'
    parse_tokens(text, str(path))  # refuse to extend a broken file
    document = json.loads(text)
    if any(t.get("name") == entry["name"] for t in document["tokens"]):
        raise TokenFileError(f"{path} already has a token named {entry['name']!r}")
    document["tokens"].append(entry)
    write_tokens(path, document)


def write_tokens(path: Path, document: dict[str, Any]) -> None:
    """Replace the tokens file atomically (a node never reads half of it),
    readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


_GONE = (-1, -1, -1)  # the signature of a file that cannot be read


class TokenFile:
    """The tokens of one file, read again when the file changes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._signature = self._stat()
        self._refused: tuple[int, int, int] | None = None  # a version that did not parse
        self.entries = parse_tokens(self._read(), str(path))
        self._next_check = clock() + RELOAD_CHECK_SECONDS
        if not self.entries:
            log.warning("the tokens file %s has no tokens: every call will be refused", path)

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except OSError as exc:
            raise TokenFileError(f"cannot read the tokens file {self.path}: {exc}") from None

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise TokenFileError(f"cannot read the tokens file {self.path}: {exc}") from None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> tuple[TokenEntry, ...]:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + RELOAD_CHECK_SECONDS
            self._maybe_reload()
        return self.entries

    def _maybe_reload(self) -> None:
        try:
            signature = self._stat()
        except TokenFileError as exc:
            self._refuse(_GONE, exc)
            return
        if signature in (self._signature, self._refused):
            return
        try:
            entries = parse_tokens(self._read(), str(self.path))
        except TokenFileError as exc:
            self._refuse(signature, exc)
            return
        self._signature = signature
        self._refused = None
        self.entries = entries
        log.info("tokens file %s reloaded: %d tokens", self.path, len(entries))

    def _refuse(self, signature: tuple[int, int, int], exc: TokenFileError) -> None:
        """Keep serving the tokens we have rather than lock everyone out; say
        so once per version of the file."""
        if signature != self._refused:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
        self._refused = signature

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Grant:
        values = [value for key, value in metadata if key == METADATA_KEY]
        if not values:
            raise Unauthenticated(MISSING_TOKEN)
        if len(values) > 1 or not isinstance(values[0], str):
            raise Unauthenticated("send exactly one 'authorization: Bearer <token>' metadata")
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != SCHEME.lower() or not token:
            raise Unauthenticated("the authorization metadata must read 'Bearer <token>'")
        presented = token_digest(token)
        found: Grant | None = None
        for entry in self.current():  # every entry compared: no early exit
            if hmac.compare_digest(entry.digest, presented) and found is None:
                found = entry.grant
        if found is None:
            raise Unauthenticated(BAD_TOKEN)
        return found


# -- what each call needs -------------------------------------------------------

_KV = "shardlite.v1.KV."
Rule = Callable[[Grant, Any], None]


def _subscribe(grant: Grant, request: Any) -> None:
    for org in request.orgs:
        grant.check_read(org)


def _nothing(grant: Grant, request: Any) -> None:
    """Any valid token; the handler checks each op (Multi*) or reveals no org's data."""


_RULES: dict[str, Rule] = {
    _KV + "Put": lambda grant, request: grant.check_write(request.org),
    _KV + "Delete": lambda grant, request: grant.check_write(request.org),
    _KV + "Batch": lambda grant, request: grant.check_write(request.org),
    _KV + "Get": lambda grant, request: grant.check_read(request.org),
    _KV + "List": lambda grant, request: grant.check_read(request.org),
    _KV + "ListNamespaces": lambda grant, request: grant.check_read(request.org),
    _KV + "Subscribe": _subscribe,
    # Every op of a MultiWrite is a write; each op's org is checked on its own.
    _KV + "MultiWrite": lambda grant, request: grant.check_writer(),
    _KV + "MultiGet": _nothing,
    _KV + "Status": _nothing,
}


class Authorizer:
    """node/rpc.py's authorize hook for the client services. A method without
    a rule here (Cluster, Maintenance, Faults, any RPC added later) needs an
    admin token: what nobody classified stays closed."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    def authorize(self, method: str, request: Message | None, context: Any) -> None:
        grant = self.tokens.authenticate(context.invocation_metadata() or ())
        _current.set(grant)
        rule = _RULES.get(method)
        if rule is None:
            grant.check_admin(method)
        else:
            rule(grant, request)


def passed_on(context: Any) -> tuple[tuple[str, str], ...]:
    """The caller's authorization, for a call this node relays on its behalf."""
    return tuple(
        (key, value)
        for key, value in (context.invocation_metadata() or ())
        if key == METADATA_KEY and isinstance(value, str)
    )
