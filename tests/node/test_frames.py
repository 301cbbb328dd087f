"""The validation gate (node/frames.py): one check of a Frame for every path
into the log, and its config-independent part for the applier."""

from __future__ import annotations

import pytest

from shardlite.node import frames
from shardlite.node.errors import InvalidArgument
from shardlite.v1 import frame_pb2, kv_pb2

LIMITS = frames.Limits(max_value_bytes=1000, max_message_bytes=64 * 1024)


def _frame(**fields: object) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(org="acme", namespace="orders", trace_id=b"t" * 16)
    frame.ops.add(put=frame_pb2.PutOp(key="k", value=b"v"))
    for name, value in fields.items():
        setattr(frame, name, value)
    return frame


@pytest.mark.parametrize(
    ("org", "namespace", "problem"),
    [
        ("..", "ns", "org '..' is invalid"),
        ("acme", "../../escaped", "namespace '../../escaped' is invalid"),
        ("acme", "x" * 300, "is invalid: use 1-64"),
        ("acme", "nul\x00byte", "namespace 'nul\\x00byte' is invalid"),
        ("_", "ns", "org '_' is reserved"),
    ],
)
def test_names_that_would_leave_the_data_dir_are_refused(
    org: str, namespace: str, problem: str
) -> None:
    frame = _frame(org=org, namespace=namespace)
    with pytest.raises(InvalidArgument) as raised:
        frames.gate(frame, LIMITS)
    assert problem in str(raised.value)
    assert frames.content_problem(frame) == str(raised.value)


def test_a_valid_frame_has_no_problem() -> None:
    frame = _frame()
    assert frames.content_problem(frame) is None
    canonical = frames.gate(frame, LIMITS)
    assert len(canonical.trace_id) == frames.TRACE_ID_BYTES
    canonical.trace_id = frame.trace_id
    assert canonical == frame


def test_the_gate_issues_its_own_trace_id() -> None:
    """The trace_id keys the proposer's waiter: one from a request (empty, or
    another write's) would leave a waiter hanging or wake the wrong one."""
    forged = _frame(trace_id=b"")
    first, second = frames.gate(forged, LIMITS), frames.gate(forged, LIMITS)
    assert first.trace_id
    assert first.trace_id != second.trace_id


def test_every_op_and_condition_is_checked_with_its_position() -> None:
    frame = _frame()
    frame.ops.add(delete=frame_pb2.DeleteOp(key=""))
    assert frames.content_problem(frame) == "op 1: key is empty: keys are 1-1024 bytes of UTF-8"
    frame = _frame()
    frame.ops.add()  # neither put nor delete
    assert frames.content_problem(frame) == "op 1 is neither a put nor a delete"
    frame = _frame()
    frame.conditions.add(key="k", version=-1)
    assert "negative" in (frames.content_problem(frame) or "")
    frame = _frame()
    frame.conditions.add(key="a\x00b", version=1)
    assert frames.content_problem(frame) == "condition 0: key contains a NUL character"


def test_counts_are_bounded() -> None:
    frame = _frame()
    del frame.ops[:]
    assert "no ops" in (frames.content_problem(frame) or "")
    frame = _frame()
    for n in range(frames.MAX_CONDITIONS + 1):
        frame.conditions.add(key=f"k{n}", version=0)
    assert "conditions; the limit is" in (frames.content_problem(frame) or "")
    frame = _frame()
    for n in range(frames.MAX_OPS):
        frame.ops.add(delete=frame_pb2.DeleteOp(key=f"k{n}"))
    assert "ops; the limit is" in (frames.content_problem(frame) or "")


def test_value_size_is_a_gate_limit_not_a_content_problem() -> None:
    """The value limit is a node's configuration: the applier must not depend
    on it, or replicas configured differently would decide differently."""
    frame = _frame()
    frame.ops[0].put.value = b"x" * 1001
    assert frames.content_problem(frame) is None
    with pytest.raises(InvalidArgument, match="op 0: value is 1001 bytes; the limit is 1000"):
        frames.gate(frame, LIMITS)


def test_the_largest_streamed_form_fits_the_message_limit() -> None:
    """A frame the gate passes fits a SubscribeResponse carrying it with the
    largest result it can produce."""
    limits = frames.Limits(max_value_bytes=1 << 20, max_message_bytes=64 * 1024)
    frame = _frame()
    frame.ops[0].put.value = b"x" * 60_000
    # Add 1 KiB-key ops until the gate refuses; the last accepted one is the boundary.
    for _ in range(100):
        frame.ops.add(put=frame_pb2.PutOp(key="k" * 1024, value=b""))
        if frames.content_problem(frame) is None and _refused(frame, limits):
            break
    with pytest.raises(InvalidArgument, match="does not fit the node's 65536-byte messages"):
        frames.gate(frame, limits)
    del frame.ops[-1]
    canonical = frames.gate(frame, limits)
    worst = frame_pb2.FrameResult(
        index=2**64 - 1,
        condition_failed=True,
        failed_key="k" * 1024,
        failed_expected=2**63 - 1,
        failed_actual=2**63 - 1,
        invalid="x" * frames.MAX_PROBLEM_CHARS,
    )
    for _ in canonical.ops:
        worst.results.add(version=2**63 - 1, deleted=True)
    response = kv_pb2.SubscribeResponse(
        index=2**64 - 1, frame=canonical, outcome=kv_pb2.INVALID, result=worst
    )
    assert response.ByteSize() <= limits.max_message_bytes


def _refused(frame: frame_pb2.Frame, limits: frames.Limits) -> bool:
    try:
        frames.gate(frame, limits)
    except InvalidArgument:
        return True
    return False


def test_unknown_fields_never_reach_the_log() -> None:
    """What enters the log is the frame the node built, field by field."""
    unknown = b"\xfa\x07\x03abc"  # field 127, length-delimited "abc"
    request_id = frame_pb2.RequestId.FromString(
        frame_pb2.RequestId(client_id="c", seq=1).SerializeToString() + unknown
    )
    op = frame_pb2.Op.FromString(
        frame_pb2.Op(put=frame_pb2.PutOp(key="k", value=b"v")).SerializeToString() + unknown
    )
    frame = frame_pb2.Frame.FromString(_frame().SerializeToString() + unknown)
    frame.request_id.CopyFrom(request_id)
    frame.ops.append(op)
    canonical = frames.gate(frame, LIMITS)
    assert unknown not in canonical.SerializeToString()
    assert canonical.request_id == frame_pb2.RequestId(client_id="c", seq=1)
    assert [o.put.key for o in canonical.ops] == ["k", "k"]


def test_a_request_id_without_client_is_dropped() -> None:
    frame = _frame()
    frame.request_id.seq = 7
    assert not frames.gate(frame, LIMITS).HasField("request_id")


def test_a_request_seq_must_fit_a_signed_64_bit_integer() -> None:
    """Shards keep request ids in SQLite INTEGER columns (signed 64-bit)."""
    frame = _frame()
    frame.request_id.client_id = "c"
    frame.request_id.seq = frames.MAX_REQUEST_SEQ
    assert frames.content_problem(frame) is None
    frame.request_id.seq = frames.MAX_REQUEST_SEQ + 1
    assert frames.content_problem(frame) == (
        f"request_id.seq is {frames.MAX_REQUEST_SEQ + 1}; the limit is "
        f"{frames.MAX_REQUEST_SEQ} (a signed 64-bit integer)"
    )
