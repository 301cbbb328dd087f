"""Every RPC of the KV service, against a real node process over gRPC."""

from __future__ import annotations

import itertools
import threading

import grpc
import pytest

from shardlite.node.client import (
    SERIALIZABLE,
    Client,
    ClientError,
    Condition,
    ConditionFailedError,
    Delete,
    Put,
)
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess

_names = itertools.count()


@pytest.fixture
def kv(shared_node: NodeProcess) -> Client:
    """A client on a namespace no other test uses."""
    return shared_node.client(namespace=f"ns{next(_names)}")


def test_put_then_get_returns_value_and_version(kv: Client) -> None:
    written = kv.put("greeting", b"hello")
    assert written.version == written.index > 0
    entry = kv.get("greeting")
    assert entry is not None
    assert (entry.value, entry.version) == (b"hello", written.version)


def test_overwrite_bumps_version_to_the_new_index(kv: Client) -> None:
    first = kv.put("k", b"1")
    second = kv.put("k", b"2")
    assert second.version > first.version
    entry = kv.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"2", second.version)


def test_get_missing_key_is_not_found_not_an_error(kv: Client) -> None:
    assert kv.get("nope") is None
    assert kv.get("nope", consistency=SERIALIZABLE) is None


def test_empty_value_is_a_value(kv: Client) -> None:
    kv.put("empty", b"")
    entry = kv.get("empty")
    assert entry is not None
    assert entry.value == b""


def test_cas_succeeds_on_matching_version(kv: Client) -> None:
    created = kv.put("c", b"a", expected_version=0)
    updated = kv.put("c", b"b", expected_version=created.version)
    entry = kv.get("c")
    assert entry is not None
    assert (entry.value, entry.version) == (b"b", updated.version)


def test_cas_mismatch_is_failed_precondition_with_current_version(kv: Client) -> None:
    created = kv.put("c", b"a")
    with pytest.raises(ConditionFailedError) as failure:
        kv.put("c", b"b", expected_version=created.version + 100)
    assert failure.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"current version {created.version}" in failure.value.details
    with pytest.raises(ConditionFailedError, match="current version"):
        kv.put("c", b"b", expected_version=0)  # must-not-exist, but it does
    entry = kv.get("c")
    assert entry is not None
    assert (entry.value, entry.version) == (b"a", created.version)


def test_cas_on_missing_key_reports_version_zero(kv: Client) -> None:
    with pytest.raises(ConditionFailedError, match="current version 0"):
        kv.put("ghost", b"x", expected_version=5)
    assert kv.get("ghost") is None


def test_delete_existing_and_missing(kv: Client) -> None:
    kv.put("d", b"x")
    assert kv.delete("d").deleted is True
    assert kv.get("d") is None
    missing = kv.delete("d")
    assert missing.deleted is False
    assert missing.index > 0


def test_delete_with_expected_version(kv: Client) -> None:
    written = kv.put("d", b"x")
    with pytest.raises(ConditionFailedError):
        kv.delete("d", expected_version=written.version + 1)
    assert kv.get("d") is not None
    assert kv.delete("d", expected_version=written.version).deleted is True


def test_batch_applies_every_op_at_one_index(kv: Client) -> None:
    kv.put("gone", b"x")
    results = kv.batch([Put("a", b"1"), Put("b", b"2"), Delete("gone")])
    index = results[0].index
    assert [r.index for r in results] == [index] * 3
    assert [r.version for r in results[:2]] == [index, index]
    assert results[2].deleted is True
    a, b = kv.get("a"), kv.get("b")
    assert a is not None
    assert b is not None
    assert a.version == b.version == index
    assert kv.get("gone") is None


def test_batch_with_a_failed_condition_applies_nothing(kv: Client) -> None:
    base = kv.put("guard", b"v1")
    with pytest.raises(ConditionFailedError, match="key 'x': expected version 7"):
        kv.batch(
            [Put("x", b"1"), Delete("guard"), Put("y", b"2")],
            [Condition("guard", base.version), Condition("x", 7)],
        )
    assert kv.get("x") is None
    assert kv.get("y") is None
    guard = kv.get("guard")
    assert guard is not None
    assert guard.version == base.version


def test_batch_conditions_that_hold_apply_everything(kv: Client) -> None:
    base = kv.put("guard", b"v1")
    kv.batch(
        [Put("guard", b"v2"), Put("new", b"n")],
        [Condition("guard", base.version), Condition("new", 0)],
    )
    guard, new = kv.get("guard"), kv.get("new")
    assert guard is not None
    assert guard.value == b"v2"
    assert new is not None
    assert new.value == b"n"


def test_list_is_lexicographic_with_prefix_and_limit(kv: Client) -> None:
    keys = ["b/2", "a", "b/10", "b/1", "c", "b", "b/1/x", "ä", "B"]
    for key in keys:
        kv.put(key, key.encode())
    assert [e.key for e in kv.list()] == sorted(keys, key=lambda k: k.encode())
    assert [e.key for e in kv.list("b/")] == ["b/1", "b/1/x", "b/10", "b/2"]
    assert [e.key for e in kv.list("b/", limit=2)] == ["b/1", "b/1/x"]
    assert [e.value for e in kv.list("b/1/")] == [b"b/1/x"]
    assert list(kv.list("zzz")) == []


def test_list_resumes_after_a_key(kv: Client) -> None:
    kv.batch([Put(f"k{i:04d}", str(i).encode()) for i in range(1000)])
    seen: list[str] = []
    cursor = ""
    for _ in range(20):  # bounded: 1000 keys in pages of 300
        page = [e.key for e in kv.list("k", start_after=cursor, limit=300)]
        if not page:
            break
        seen.extend(page)
        cursor = page[-1]
    assert seen == [f"k{i:04d}" for i in range(1000)]
    # start_after before the prefix range starts at the prefix
    assert next(iter(kv.list("k0999", start_after="a"))).key == "k0999"


def test_list_of_unknown_namespace_is_empty(kv: Client) -> None:
    assert list(kv.list(namespace="never-written")) == []


def test_list_namespaces_enumerates_shard_files(shared_node: NodeProcess) -> None:
    c = shared_node.client(org="acme")
    for name in ("orders", "users", "a.b-c_d"):
        c.put("k", b"v", namespace=name)
    assert c.namespaces() == ["a.b-c_d", "orders", "users"]
    assert c.namespaces(org="nobody-here") == []


def test_orgs_are_isolated(shared_node: NodeProcess) -> None:
    one = shared_node.client(org="org1", namespace="ns")
    two = shared_node.client(org="org2", namespace="ns")
    one.put("k", b"one")
    assert two.get("k") is None
    two.put("k", b"two")
    e1, e2 = one.get("k"), two.get("k")
    assert e1 is not None
    assert e2 is not None
    assert (e1.value, e2.value) == (b"one", b"two")


def test_retry_with_same_request_id_applies_once(shared_node: NodeProcess) -> None:
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(shared_node.endpoint))
    rid = frame_pb2.RequestId(client_id="retry-client", seq=1)
    request = kv_pb2.PutRequest(namespace="retries", key="k", value=b"v", request_id=rid)
    first = stub.Put(request, timeout=10)
    again = stub.Put(request, timeout=10)
    assert (again.index, again.version) == (first.index, first.version)
    # A CAS retried after it succeeded must not fail against its own write.
    cas_id = frame_pb2.RequestId(client_id="retry-client", seq=2)
    cas = kv_pb2.PutRequest(
        namespace="retries",
        key="k",
        value=b"w",
        expected_version=first.version,
        request_id=cas_id,
    )
    done = stub.Put(cas, timeout=10)
    assert stub.Put(cas, timeout=10).version == done.version
    got = stub.Get(kv_pb2.GetRequest(namespace="retries", key="k"), timeout=10)
    assert (got.value, got.version) == (b"w", done.version)
    # A new seq is a new write.
    fresh = stub.Put(
        kv_pb2.PutRequest(
            namespace="retries",
            key="k",
            value=b"x",
            request_id=frame_pb2.RequestId(client_id="retry-client", seq=3),
        ),
        timeout=10,
    )
    assert fresh.version > done.version


def test_retried_delete_reports_the_original_result(shared_node: NodeProcess) -> None:
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(shared_node.endpoint))
    Client(shared_node.endpoint, namespace="retries-del").put("k", b"v")
    rid = frame_pb2.RequestId(client_id="del-client", seq=1)
    request = kv_pb2.DeleteRequest(namespace="retries-del", key="k", request_id=rid)
    first = stub.Delete(request, timeout=10)
    again = stub.Delete(request, timeout=10)
    assert first.deleted is True
    assert again.deleted is True
    assert again.index == first.index


def test_subscribe_streams_committed_frames_and_resumes(shared_node: NodeProcess) -> None:
    c = shared_node.client(namespace="subs")
    a = c.put("a", b"1")
    b = c.delete("a")
    stream = c.subscribe(a.index, timeout=10)
    index, frame = next(stream)
    assert index == a.index
    assert frame.namespace == "subs"
    assert frame.ops[0].put.key == "a"
    frames = dict(itertools.islice(stream, b.index - a.index))
    assert frames[b.index].ops[0].delete.key == "a"
    # Resume from an index in the middle: same frame.
    index, frame = next(c.subscribe(b.index, timeout=10))
    assert index == b.index
    assert frame.ops[0].HasField("delete")


def test_subscribe_delivers_live_frames(shared_node: NodeProcess) -> None:
    c = shared_node.client(namespace="live")
    start = c.status().applied_index + 1
    received: list[tuple[int, str]] = []

    def consume() -> None:
        for index, frame in c.subscribe(start, timeout=20):
            if frame.namespace == "live":
                received.append((index, frame.ops[0].put.key))
            if len(received) == 3:
                return

    reader = threading.Thread(target=consume)
    reader.start()
    written = [c.put(key, b"v").index for key in ("x", "y", "z")]
    reader.join(20)
    assert not reader.is_alive(), "live frames did not arrive"
    assert received == list(zip(written, ["x", "y", "z"], strict=True))


def test_subscribe_from_zero_starts_after_what_is_committed(shared_node: NodeProcess) -> None:
    c = shared_node.client(namespace="from-zero")
    before = c.put("old", b"v").index
    stream = c.subscribe(0, timeout=20)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(next(stream)[0]))
    reader.start()
    # The stream starts when the server handles it; keep writing until it sees one.
    for _ in range(200):
        c.put("new", b"v")
        reader.join(0.05)
        if not reader.is_alive():
            break
    assert got
    assert got[0] > before


def test_status_reports_the_node(shared_node: NodeProcess) -> None:
    c = shared_node.client(namespace="status")
    written = c.put("k", b"v")
    status = c.status()
    assert status.node_id == "n1"
    assert status.replicator == "noop"
    assert status.role == "leader"
    assert status.leader == "n1"
    assert status.applied_index >= written.index
    assert status.open_shards >= 1
    assert status.data_dir.endswith("n1")
    assert status.version == "0.1.0"


def test_health_and_reflection_are_served(shared_node: NodeProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(shared_node.endpoint)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "shardlite.v1.KV"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    services = {s.name for r in replies for s in r.list_services_response.service}
    assert {"shardlite.v1.KV", "grpc.health.v1.Health"} <= services


def test_client_errors_carry_status_and_message(kv: Client) -> None:
    with pytest.raises(ClientError) as failure:
        kv.put("", b"v")
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "key is empty" in failure.value.details
