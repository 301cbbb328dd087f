"""Store ids escaped into keys: injective, in the same order, never a NUL.

A node key is 1-1024 bytes of UTF-8 without NUL; ids are any non-empty
string. Each store puts its records under a fixed prefix, so an id cannot
reach another store's keys or another namespace (the namespace is a field of
the request, never part of the key). Escaping maps two characters and
separates the parts of a composite id:

    "\\x00" -> "\\x01\\x02"    "\\x01" -> "\\x01\\x03"    between parts: "\\x01\\x01"

The codewords are prefix-free and ordered like the characters they stand
for, so UTF-8 byte order of keys is the order of ids (the order List
returns), and a part boundary sorts before any character: ("a", "b") < ("ab",).
"""

from __future__ import annotations

from collections.abc import Sequence

from shardlite.stores.errors import InvalidIdError

MAX_KEY_BYTES = 1024  # node/names.py
_SEPARATOR = "\x01\x01"


def escape(part: str) -> str:
    return part.replace("\x01", "\x01\x03").replace("\x00", "\x01\x02")


def unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\x01":
            out.append(char)
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code == "\x02":
            out.append("\x00")
        elif code == "\x03":
            out.append("\x01")
        else:
            raise InvalidIdError(f"not an escaped id: {text[:80]!r}")
        i += 2
    return "".join(out)


def record_key(prefix: str, parts: Sequence[str], what: str = "id") -> str:
    """The key of the record named by `parts` under `prefix`."""
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidIdError(f"{what} must be a non-empty string, not {part!r}")
    key = prefix + _SEPARATOR.join(escape(part) for part in parts)
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidIdError(
            f"{what} is too long: its key is {size} bytes, keys are at most {MAX_KEY_BYTES} "
            f"(keep it under about {MAX_KEY_BYTES - len(prefix) - 8} bytes of UTF-8)"
        )
    return key


def record_parts(prefix: str, key: str) -> list[str]:
    """The parts of a key `record_key(prefix, parts)` made."""
    if not key.startswith(prefix):
        raise InvalidIdError(f"key {key[:80]!r} is not under {prefix!r}")
    return [unescape(part) for part in key[len(prefix) :].split(_SEPARATOR)]
