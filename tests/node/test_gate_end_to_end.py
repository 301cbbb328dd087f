"""The gate seen from outside, on a real node (issue 11 item 9): a write the
node accepts can always be streamed back, and what enters the log is the
frame the node built, never unknown fields a client sent."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from shardlite.node.client import ClientError, Put
from shardlite.v1 import frame_pb2, kv_pb2
from tests.harness import NodeProcess

MESSAGE_LIMIT = 150_000


def _batch(n: int) -> list[Put]:
    return [Put(f"k{i:05d}", b"") for i in range(n)]


def test_the_largest_batch_accepted_can_be_subscribed(
    start_node: Callable[..., NodeProcess],
) -> None:
    """10,000 small puts fit a 150 kB request, but the SubscribeResponse
    carrying them with their 10,000 results would not fit a 150 kB message:
    the node must refuse such a batch, and stream every batch it accepts."""
    node = start_node("--max-request-bytes", str(MESSAGE_LIMIT))
    accepted: dict[int, int] = {}
    refusals: list[ClientError] = []
    with node.client(namespace="edge", timeout=30) as c:
        low, high = 1, 10_000  # the largest accepted is in [low, high]
        for _ in range(20):
            if low == high:
                break
            middle = (low + high + 1) // 2
            try:
                accepted[middle] = c.batch(_batch(middle))[0].version
                low = middle
            except ClientError as exc:
                refusals.append(exc)
                high = middle - 1
        largest = low
        if largest not in accepted:
            accepted[largest] = c.batch(_batch(largest))[0].version
        assert refusals  # 10,000 does not fit: the boundary is inside the range
        assert {(e.code, "does not fit" in e.details) for e in refusals} == {
            (grpc.StatusCode.INVALID_ARGUMENT, True)
        }
        stream = c.events(accepted[largest], timeout=20)
        event = next(stream)
    assert event.index == accepted[largest]
    assert len(event.frame.ops) == largest
    assert event.outcome == kv_pb2.APPLIED
    assert len(event.result.results) == largest
    assert event.ByteSize() <= MESSAGE_LIMIT
    # Every accepted batch, streamed from the first: no index is unreadable.
    with node.client(timeout=20) as c:
        first = min(accepted.values())
        events = c.events(first, timeout=20)
        seen = [next(events).index for _ in range(len(accepted))]
    assert sorted(accepted.values()) == seen


UNKNOWN = b"\xfa\x07\x05XYZZY"  # field 127, length-delimited


def test_unknown_fields_nested_in_a_request_never_enter_the_log(shared_node: NodeProcess) -> None:
    """A BatchRequest encoded by hand (as another gRPC stack might) with unknown
    fields inside request_id, inside an op and inside its put: Subscribe streams
    back the frame the node built, byte for byte free of them."""
    put = frame_pb2.PutOp(key="k", value=b"v").SerializeToString() + UNKNOWN
    op = b"\x0a" + bytes([len(put)]) + put + UNKNOWN  # Op.put = 1
    request_id = frame_pb2.RequestId(client_id="hand", seq=1).SerializeToString() + UNKNOWN
    request = (
        kv_pb2.BatchRequest(namespace="unknown").SerializeToString()
        + b"\x1a" + bytes([len(op)]) + op  # BatchRequest.ops = 3
        + b"\x2a" + bytes([len(request_id)]) + request_id  # BatchRequest.request_id = 5
        + UNKNOWN
    )  # fmt: skip
    with grpc.insecure_channel(shared_node.endpoint) as channel:
        batch = channel.unary_unary(
            "/shardlite.v1.KV/Batch", request_serializer=None, response_deserializer=None
        )
        reply = kv_pb2.BatchResponse.FromString(batch(request, timeout=10))
        subscribe = channel.unary_stream(
            "/shardlite.v1.KV/Subscribe",
            request_serializer=kv_pb2.SubscribeRequest.SerializeToString,
            response_deserializer=None,
        )
        raw = next(iter(subscribe(kv_pb2.SubscribeRequest(from_index=reply.index), timeout=10)))
    assert b"XYZZY" not in raw
    event = kv_pb2.SubscribeResponse.FromString(raw)
    assert event.index == reply.index
    assert event.frame.request_id == frame_pb2.RequestId(client_id="hand", seq=1)
    assert [(o.put.key, o.put.value) for o in event.frame.ops] == [("k", b"v")]
