"""Bad input gets INVALID_ARGUMENT with a message that says what to fix, and
leaves nothing on disk: no shard file, no directory, no frame in the log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess

BAD_NAMES = [
    ("..", "invalid"),
    (".", "invalid"),
    ("a/b", "invalid"),
    ("../../etc", "invalid"),
    ("x" * 65, "invalid"),
    ("nul\x00byte", "invalid"),
    ("sp ace", "invalid"),
    ("ümlaut", "invalid"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    base = tmp_path_factory.mktemp("badinput")
    n = NodeProcess(
        data_dir=base / "n1", args=["--max-value-bytes", "1000"], log_path=base / "n1.log"
    )
    try:
        yield n.start()
    finally:
        n.kill()


@pytest.fixture
def stub(node: NodeProcess) -> kv_pb2_grpc.KVStub:
    return kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))


# The node's own bookkeeping, rewritten in the background whatever the test
# does: the applied-index marker, and its temporary file while it is replaced.
BOOKKEEPING = {"applied_index", "applied_index.tmp"}


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if "log" not in p.parts and p.name not in BOOKKEEPING
    }


@pytest.fixture
def unchanged(node: NodeProcess) -> Iterator[None]:
    """Asserts the test created no file under the data dir and no frame."""
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))
    before_files = _files(node.data_dir)
    before_index = stub.Status(kv_pb2.StatusRequest(), timeout=10).applied_index
    yield
    assert _files(node.data_dir) == before_files
    assert stub.Status(kv_pb2.StatusRequest(), timeout=10).applied_index == before_index


def _invalid(call: Callable[[], object], fragment: str) -> str:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    error = failure.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert fragment in (error.details() or ""), error.details()
    return error.details() or ""


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("name", "fragment"), [*BAD_NAMES, ("", "namespace")])
def test_bad_namespace_is_rejected_everywhere(
    stub: kv_pb2_grpc.KVStub, name: str, fragment: str
) -> None:
    message = _invalid(
        lambda: stub.Put(kv_pb2.PutRequest(namespace=name, key="k", value=b"v"), timeout=10),
        fragment,
    )
    assert "letters, digits" in message
    _invalid(lambda: stub.Get(kv_pb2.GetRequest(namespace=name, key="k"), timeout=10), fragment)
    _invalid(
        lambda: stub.Delete(kv_pb2.DeleteRequest(namespace=name, key="k"), timeout=10), fragment
    )
    _invalid(
        lambda: stub.Batch(
            kv_pb2.BatchRequest(namespace=name, ops=[frame_pb2.Op(put=frame_pb2.PutOp(key="k"))]),
            timeout=10,
        ),
        fragment,
    )
    _invalid(lambda: list(stub.List(kv_pb2.ListRequest(namespace=name), timeout=10)), fragment)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("name", "fragment"), [*BAD_NAMES, ("_", "reserved")])
def test_bad_org_is_rejected_everywhere(stub: kv_pb2_grpc.KVStub, name: str, fragment: str) -> None:
    _invalid(
        lambda: stub.Put(kv_pb2.PutRequest(org=name, namespace="ok", key="k"), timeout=10),
        fragment,
    )
    _invalid(
        lambda: stub.Get(kv_pb2.GetRequest(org=name, namespace="ok", key="k"), timeout=10),
        fragment,
    )
    _invalid(
        lambda: stub.ListNamespaces(kv_pb2.ListNamespacesRequest(org=name), timeout=10), fragment
    )


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "key is empty"),
        ("k" * 1025, "at most 1024 bytes"),
        ("é" * 513, "1026 bytes"),
        ("a\x00b", "NUL"),
    ],
)
def test_bad_keys_are_rejected(stub: kv_pb2_grpc.KVStub, key: str, fragment: str) -> None:
    _invalid(
        lambda: stub.Put(kv_pb2.PutRequest(namespace="ok", key=key, value=b"v"), timeout=10),
        fragment,
    )
    _invalid(lambda: stub.Get(kv_pb2.GetRequest(namespace="ok", key=key), timeout=10), fragment)
    _invalid(
        lambda: stub.Batch(
            kv_pb2.BatchRequest(
                namespace="ok",
                ops=[
                    frame_pb2.Op(put=frame_pb2.PutOp(key="fine")),
                    frame_pb2.Op(delete=frame_pb2.DeleteOp(key=key)),
                ],
            ),
            timeout=10,
        ),
        fragment,
    )


def test_longest_key_is_accepted(stub: kv_pb2_grpc.KVStub) -> None:
    key = "k" * 1024
    stub.Put(kv_pb2.PutRequest(namespace="ok", key=key, value=b"v"), timeout=10)
    assert stub.Get(kv_pb2.GetRequest(namespace="ok", key=key), timeout=10).found


@pytest.mark.usefixtures("unchanged")
def test_oversize_values_are_rejected_whole(stub: kv_pb2_grpc.KVStub) -> None:
    message = _invalid(
        lambda: stub.Put(
            kv_pb2.PutRequest(namespace="big", key="k", value=b"x" * 1001), timeout=10
        ),
        "value is 1001 bytes; the limit is 1000",
    )
    assert "--max-value-bytes" in message
    _invalid(
        lambda: stub.Batch(
            kv_pb2.BatchRequest(
                namespace="big",
                ops=[
                    frame_pb2.Op(put=frame_pb2.PutOp(key="a", value=b"ok")),
                    frame_pb2.Op(put=frame_pb2.PutOp(key="b", value=b"x" * 5000)),
                ],
            ),
            timeout=10,
        ),
        "limit is 1000",
    )


@pytest.mark.usefixtures("unchanged")
def test_batch_shape_errors(stub: kv_pb2_grpc.KVStub) -> None:
    _invalid(lambda: stub.Batch(kv_pb2.BatchRequest(namespace="ok"), timeout=10), "no ops")
    _invalid(
        lambda: stub.Batch(kv_pb2.BatchRequest(namespace="ok", ops=[frame_pb2.Op()]), timeout=10),
        "neither a put nor a delete",
    )
    _invalid(
        lambda: stub.Put(
            kv_pb2.PutRequest(namespace="ok", key="k", expected_version=-1), timeout=10
        ),
        "negative",
    )


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
def test_a_request_seq_past_a_signed_64_bit_integer_is_refused_before_proposing(
    stub: kv_pb2_grpc.KVStub, seq: int
) -> None:
    """It used to be proposed, committed, then refused by every replica's
    SQLite ("Python int too large to convert to SQLite INTEGER")."""
    _invalid(
        lambda: stub.Put(
            kv_pb2.PutRequest(
                namespace="ok",
                key="k",
                value=b"v",
                request_id=frame_pb2.RequestId(client_id="c", seq=seq),
            ),
            timeout=10,
        ),
        "request_id.seq is",
    )


GARBAGE = {
    "garbage": b"\xff\xff\xff\xff",
    "truncated-field": b"\x1a\x05ab",
    "unterminated-varint": b"\x0a\x80\x80\x80\x80\x80\x80",
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("method", ["Put", "Get", "Delete", "Batch", "ListNamespaces", "Status"])
@pytest.mark.parametrize("raw", GARBAGE.values(), ids=GARBAGE.keys())
def test_malformed_request_bytes(node: NodeProcess, method: str, raw: bytes) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    call = channel.unary_unary(f"/shardlite.v1.KV/{method}", None, None)
    _invalid(lambda: call(raw, timeout=10), "malformed request")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("method", ["Put", "Get", "Delete", "Batch", "ListNamespaces"])
def test_invalid_utf8_in_a_string_field(node: NodeProcess, method: str) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    call = channel.unary_unary(f"/shardlite.v1.KV/{method}", None, None)
    # field 1 (org), length 2, bytes that are not UTF-8
    _invalid(lambda: call(b"\x0a\x02\xff\xfe", timeout=10), "malformed request")


@pytest.mark.usefixtures("unchanged")
def test_malformed_streaming_request(node: NodeProcess) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    for method in ("List", "Subscribe"):
        call = channel.unary_stream(f"/shardlite.v1.KV/{method}", None, None)

        def consume(call: grpc.UnaryStreamMultiCallable[bytes, bytes] = call) -> object:
            return list(call(b"\xff\xff", timeout=10))

        _invalid(consume, "malformed request")


def test_subscribe_below_retained_is_out_of_range(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--log-retain", "10", "--log-segment-bytes", "2000")
    c = node.client(namespace="compact")
    for i in range(200):
        c.put(f"k{i}", b"x" * 50)
    # The node compacts on its housekeeping tick, about once a second.
    from tests.harness import wait_until

    wait_until(lambda: c.status().first_index > 1, 15, "the log to be compacted")
    first = c.status().first_index
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))
    with pytest.raises(grpc.RpcError) as failure:
        next(iter(stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=10)))
    error = failure.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"oldest retained index is {first}" in (error.details() or "")
    index, _ = next(c.subscribe(first, timeout=10))
    assert index == first
