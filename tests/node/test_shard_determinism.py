"""The shard decides the same whatever the applier's batch boundaries (issue 11
item 3): the same frames at the same indices give the same results and the
same logical content, however they are split into transactions."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlite.node.shard import Shard, dump
from shardlite.v1 import frame_pb2

RETENTION = 3


def _frame(
    key: str, value: bytes, client: str, seq: int, expect: int | None, delete: bool = False
) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(namespace="ns")
    if delete:
        frame.ops.add(delete=frame_pb2.DeleteOp(key=key))
    else:
        frame.ops.add(put=frame_pb2.PutOp(key=key, value=value))
    if expect is not None:
        frame.conditions.add(key=key, version=expect)
    if client:
        frame.request_id.client_id = client
        frame.request_id.seq = seq
    return frame


def _apply_split(
    path: Path, frames: list[tuple[int, frame_pb2.Frame]], cuts: list[int]
) -> tuple[list[bytes], object]:
    shard = Shard(path)
    results: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(frames)]:
        if cut <= start:
            continue
        for result in shard.apply(frames[start:cut], RETENTION):
            assert result is not None
            results.append(result.SerializeToString())
        start = cut
    shard.close()
    return results, dump(path)


def test_a_late_retry_is_decided_by_indices_not_by_batches(tmp_path: Path) -> None:
    """The original at index 1, a retry at index 13 (retention 10, so 1 < 13 - 10:
    too old to be recognised). Applied in one batch or split before the retry, the
    retry is a new write both times."""
    frames = [(1, _frame("k", b"v1", "c", 1, None))]
    frames += [(i, _frame(f"other{i}", b"x", "", 0, None)) for i in range(2, 13)]
    frames.append((13, _frame("k", b"v2", "c", 1, None)))
    outcomes = []
    for name, cuts in (("one", []), ("split", [12])):
        shard = Shard(tmp_path / f"{name}.db")
        results = []
        start = 0
        for cut in [*cuts, len(frames)]:
            results += shard.apply(frames[start:cut], 10)
            start = cut
        outcomes.append((results[-1], shard.get("k")))
        shard.close()
    assert outcomes[0] == outcomes[1]
    last, value = outcomes[0]
    assert last is not None
    assert last.index == 13
    assert value == (b"v2", 13)
    assert dump(tmp_path / "one.db") == dump(tmp_path / "split.db")


_ops = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.binary(max_size=3),
    st.sampled_from(["", "c1", "c2"]),
    st.integers(1, 3),
    st.none() | st.integers(0, 12),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_ops, min_size=1, max_size=14), cuts=st.lists(st.integers(0, 14)))
def test_any_batch_split_gives_identical_results_and_dumps(
    ops: list[tuple[str, bytes, str, int, int | None, bool]], cuts: list[int]
) -> None:
    frames = [(i + 1, _frame(*op)) for i, op in enumerate(ops)]
    with tempfile.TemporaryDirectory() as tmp:
        whole = _apply_split(Path(tmp) / "whole.db", frames, [])
        one_by_one = _apply_split(Path(tmp) / "single.db", frames, list(range(len(frames))))
        split = _apply_split(Path(tmp) / "split.db", frames, cuts)
    assert whole == one_by_one == split


def test_a_frame_failing_for_its_content_is_refused_alone_whatever_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deterministic SQLite error caused by one frame of several ops (here
    forced for key "poison", after its writes) rolls back that frame only;
    the others in its transaction apply, and every split records the same."""
    original = Shard._apply_ops

    def poisoned(
        conn: sqlite3.Connection, index: int, frame: frame_pb2.Frame
    ) -> frame_pb2.FrameResult:
        result: frame_pb2.FrameResult = original(conn, index, frame)
        if frame.ops[0].put.key == "poison":  # after its writes: they must be undone
            raise sqlite3.DataError("string or blob too big")
        return result

    monkeypatch.setattr(Shard, "_apply_ops", staticmethod(poisoned))
    frames = [(i, _frame(k, b"v", "c", i, None)) for i, k in enumerate(["a", "poison", "b"], 1)]
    frames[1][1].ops.add(put=frame_pb2.PutOp(key="also", value=b"v"))
    whole = _apply_split(tmp_path / "whole.db", frames, [])
    split = _apply_split(tmp_path / "split.db", frames, [1, 2])
    assert whole == split
    results = [frame_pb2.FrameResult.FromString(r) for r in whole[0]]
    assert [r.invalid for r in results] == ["", "cannot apply: string or blob too big", ""]
    shard = Shard(tmp_path / "whole.db")
    assert shard.get("poison") is None
    assert shard.get("also") is None
    assert shard.get("b") == (b"v", 3)
    shard.close()


def test_a_one_op_frame_whose_statement_fails_leaves_nothing(tmp_path: Path) -> None:
    """A frame of one op is one statement, which SQLite undoes alone when it
    fails (no savepoint is taken for it): here a value past the connection's
    length limit. Its request id is not recorded either, so nothing of it
    stays; the frames around it apply."""
    frames = [
        (1, _frame("a", b"v", "c", 1, None)),
        (2, _frame("poison", b"x" * 2_000, "c", 2, None)),
        (3, _frame("b", b"v", "c", 3, None)),
    ]
    shard = Shard(tmp_path / "s.db")
    shard._writer.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000)
    results = shard.apply(frames, RETENTION)
    assert [r.invalid if r else None for r in results] == [
        "",
        "cannot apply: string or blob too big",
        "",
    ]
    assert shard.get("poison") is None
    assert shard.get("b") == (b"v", 3)
    shard.close()
    requests = dict(dump(tmp_path / "s.db"))["requests"]
    assert [row[1] for row in requests] == [1, 3]  # seq 2, the poisoned frame's: none
