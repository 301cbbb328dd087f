"""Validation of everything a request names: orgs, namespaces, keys, values.

Runs before anything is proposed, so bad input never reaches a frame, a shard
or the file system.
"""

from __future__ import annotations

import re

from shardlite.node.errors import InvalidArgument

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_ORG_DIR = "_"
MAX_KEY_BYTES = 1024


def check_org(org: str) -> str:
    """The empty org is the default one; anything else must be a valid name."""
    if org == "":
        return org
    if org == DEFAULT_ORG_DIR:
        raise InvalidArgument("org '_' is reserved for the default org; send an empty org instead")
    return _check_name("org", org)


def check_namespace(namespace: str) -> str:
    return _check_name("namespace", namespace)


def _check_name(what: str, name: str) -> str:
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidArgument(
            f"{what} {name[:80]!r} is invalid: use 1-64 of letters, digits, '.', '_' and '-', "
            "not '.' or '..'"
        )
    return name


def check_key(key: str) -> str:
    if not key:
        raise InvalidArgument("key is empty: keys are 1-1024 bytes of UTF-8")
    # A character is at most 4 bytes of UTF-8: only a longer key may be too long.
    if len(key) * 4 > MAX_KEY_BYTES:
        size = len(key.encode("utf-8"))
        if size > MAX_KEY_BYTES:
            raise InvalidArgument(f"key is {size} bytes: keys are at most {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise InvalidArgument("key contains a NUL character")
    return key


def check_version(version: int) -> int:
    if version < 0:
        raise InvalidArgument(f"expected version {version} is negative; 0 means 'must not exist'")
    return version


def org_dir(org: str) -> str:
    return org or DEFAULT_ORG_DIR
