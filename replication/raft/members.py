"""Who is in the cluster: member names, their Raft ids, their addresses.

The Raft core knows members by integer id. Operators name them (`n1`); the id
is derived from the name, so every node computes the same id for a name
without coordination. Addresses travel inside membership-change entries (the
ConfChange context) and are kept in `members.json` so a restart knows them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from shardlite.replication.durable import write_file_durably

from .messages import ConfChange, ConfChangeType, Entry, EntryType


def member_id(name: str) -> int:
    """A stable positive 63-bit id for a member name."""
    digest = hashlib.sha256(name.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 1) or 1


@dataclass(frozen=True)
class MemberInfo:
    name: str
    address: str
    # Stays a non-voting learner: the leader does not promote it when caught up.
    learner_only: bool = False

    def encode(self) -> bytes:
        return json.dumps(
            {"name": self.name, "address": self.address, "learner_only": self.learner_only}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> MemberInfo | None:
        try:
            raw = json.loads(data)
            return cls(str(raw["name"]), str(raw["address"]), bool(raw.get("learner_only")))
        except (ValueError, KeyError, TypeError):
            return None


def parse_peers(spec: str) -> dict[str, str]:
    """`n1=host:port,n2=host:port` -> {"n1": "host:port", ...}."""
    peers: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise ValueError(f"bad peer {item!r}: expected name=host:port")
        if name in peers:
            raise ValueError(f"peer {name!r} is listed twice")
        peers[name] = address
    return peers


def bootstrap_entries(peers: dict[str, str], first_index: int = 1) -> list[Entry]:
    """The identical first entries every founding member writes: one committed
    ADD_VOTER per peer at term 1, in id order, addresses in the context
    (starting after a restored backup's index when there is one)."""
    ordered = sorted(peers, key=member_id)
    return [
        Entry(
            1,
            i,
            EntryType.CONF_CHANGE,
            ConfChange(
                ConfChangeType.ADD_VOTER, member_id(name), MemberInfo(name, peers[name]).encode()
            ).encode(),
        )
        for i, name in enumerate(ordered, start=first_index)
    ]


class MemberBook:
    """id -> (name, address), persisted beside the Raft log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[int, MemberInfo] = {}
        try:
            raw = json.loads(path.read_text())
            for name, value in raw.items():
                # {"name": "address"} (older files) or {"name": {"address":..., ...}}
                if isinstance(value, str):
                    self._members[member_id(name)] = MemberInfo(name, value)
                else:
                    self._members[member_id(name)] = MemberInfo(
                        name, value["address"], bool(value.get("learner_only"))
                    )
        except FileNotFoundError:
            pass

    def add(self, info: MemberInfo) -> None:
        if self._members.get(member_id(info.name)) != info:
            self._members[member_id(info.name)] = info
            self._save()

    def info(self, nid: int) -> MemberInfo | None:
        return self._members.get(nid)

    def learn_from(self, entries: list[Entry]) -> None:
        """Addresses from membership-change entries (appended or committed)."""
        for e in entries:
            if e.type is EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                info = MemberInfo.decode(cc.context)
                if info is not None and cc.type is not ConfChangeType.REMOVE_NODE:
                    self.add(info)

    def name(self, nid: int) -> str:
        info = self._members.get(nid)
        return info.name if info else (str(nid) if nid else "")

    def address(self, nid: int) -> str | None:
        info = self._members.get(nid)
        return info.address if info else None

    def id_of(self, name: str) -> int | None:
        nid = member_id(name)
        return nid if nid in self._members else None

    def snapshot(self) -> dict[str, str]:
        return {m.name: m.address for m in self._members.values()}

    def _save(self) -> None:
        data = {
            m.name: {"address": m.address, "learner_only": m.learner_only}
            for m in self._members.values()
        }
        write_file_durably(self.path, json.dumps(data, sort_keys=True).encode())
