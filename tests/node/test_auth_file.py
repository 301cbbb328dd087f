"""The tokens file (node/auth.py) and the Subscribe filter
(node/subscribe_filter.py) on their own: reload on change with an injected
clock, what a grant allows, a prefix narrowing a frame."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shardlite.node import auth
from shardlite.node.errors import PermissionDenied, Unauthenticated
from shardlite.node.subscribe_filter import FrameFilter
from shardlite.v1 import frame_pb2, kv_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _file(path: Path, *entries: dict[str, object]) -> None:
    auth.write_tokens(path, {"tokens": list(entries)})


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_changed_file_is_read_at_the_next_check_and_a_broken_one_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    old, new = auth.new_token(), auth.new_token()
    _file(path, auth.entry_json("old", old, ["a"], read_only=False, admin=False))
    clock = Clock()
    tokens = auth.TokenFile(path, clock)
    assert tokens.authenticate(_bearer(old)).name == "old"
    _file(path, auth.entry_json("new", new, ["a"], read_only=False, admin=False))
    # Not looked at again before the check interval...
    assert tokens.authenticate(_bearer(old)).name == "old"
    clock.now += auth.RELOAD_CHECK_SECONDS
    # ... then taken whole.
    assert tokens.authenticate(_bearer(new)).name == "new"
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        tokens.authenticate(_bearer(old))
    # A broken file: said once, the tokens in force stay.
    path.write_text('{"tokens": [')
    for _ in range(3):
        clock.now += auth.RELOAD_CHECK_SECONDS
        assert tokens.authenticate(_bearer(new)).name == "new"
    refusals = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert len(refusals) == 1
    path.unlink()
    clock.now += auth.RELOAD_CHECK_SECONDS
    assert tokens.authenticate(_bearer(new)).name == "new"


def test_the_file_is_written_for_its_owner_only_and_never_holds_a_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = auth.new_token()
    auth.append_entry(path, auth.entry_json("x", token, ["*"], read_only=True, admin=False))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert token not in path.read_text()
    assert json.loads(path.read_text())["tokens"][0]["sha256"] == auth.token_digest(token).hex()
    with pytest.raises(auth.TokenFileError, match="already has a token named 'x'"):
        auth.append_entry(path, auth.entry_json("x", token, ["a"], read_only=False, admin=False))


def test_a_grant_allows_its_orgs_and_nothing_else() -> None:
    grant = auth.Grant(name="g", orgs=frozenset({"a", ""}), read_only=True)
    grant.check_read("a")
    grant.check_read("")
    with pytest.raises(PermissionDenied, match="may not use org 'b'"):
        grant.check_read("b")
    with pytest.raises(PermissionDenied, match="read-only"):
        grant.check_write("a")
    with pytest.raises(PermissionDenied, match="is not an admin token"):
        grant.check_admin("shardlite.v1.Maintenance.Backup")
    assert auth.OPEN.may_read("anything")


def _response(*keys: str) -> kv_pb2.SubscribeResponse:
    frame = frame_pb2.Frame(org="o", namespace="n")
    response = kv_pb2.SubscribeResponse(index=7, outcome=kv_pb2.APPLIED)
    for position, key in enumerate(keys):
        if key.startswith("-"):
            frame.ops.add().delete.key = key[1:]
            response.result.results.add(deleted=True)
        else:
            frame.ops.add().put.key = key
            response.result.results.add(version=100 + position)
        frame.conditions.add(key=key.lstrip("-"), version=position)
    response.frame.CopyFrom(frame)
    return response


def test_a_prefix_keeps_each_result_beside_its_op() -> None:
    selected = FrameFilter(None, "", "u/", lambda org: True)
    narrowed = selected.narrow(_response("u/1", "x", "-u/2", "y", "u/3"))
    assert narrowed is not None
    assert [op.put.key or op.delete.key for op in narrowed.frame.ops] == ["u/1", "u/2", "u/3"]
    assert [(r.version, r.deleted) for r in narrowed.result.results] == [
        (100, False),
        (0, True),
        (104, False),
    ]
    assert [c.key for c in narrowed.frame.conditions] == ["u/1", "u/2", "u/3"]
    assert selected.narrow(_response("x", "y")) is None
    # A frame with no results (a failed condition) keeps its ops narrowed.
    failed = _response("u/1", "x")
    del failed.result.results[:]
    failed.outcome = kv_pb2.CONDITION_FAILED
    narrowed = selected.narrow(failed)
    assert narrowed is not None
    assert [op.put.key for op in narrowed.frame.ops] == ["u/1"]
    assert not narrowed.result.results


def test_org_namespace_and_grant_keep_or_drop_whole_frames() -> None:
    request = kv_pb2.SubscribeRequest(orgs=["a", "b"], namespace="n")
    selected = FrameFilter.of(request, lambda org: org != "b")
    assert selected.keeps(frame_pb2.Frame(org="a", namespace="n"))
    assert not selected.keeps(frame_pb2.Frame(org="a", namespace="m"))
    assert not selected.keeps(frame_pb2.Frame(org="b", namespace="n"))  # not the grant's
    assert not selected.keeps(frame_pb2.Frame(org="c", namespace="n"))  # not asked for
