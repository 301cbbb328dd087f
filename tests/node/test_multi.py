"""MultiWrite and MultiGet against real nodes: a single node (no-op
replicator) and a 3-node Raft cluster, written to through the leader and
through a follower (which forwards each write).

Each write of a MultiWrite is its own frame: its own status, index and
version; a bad one fails alone with what the unary RPC would say."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import LocalCluster, NodeProcess

FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")
_names = itertools.count()
Code = grpc.StatusCode


def _put(ns: str, key: str, value: bytes, **kw: object) -> kv_pb2.WriteRequest:
    return kv_pb2.WriteRequest(put=kv_pb2.PutRequest(namespace=ns, key=key, value=value, **kw))  # type: ignore[arg-type]


def _code(result: kv_pb2.WriteResult | kv_pb2.GetResult) -> Code:
    if result.WhichOneof("result") != "error":
        return Code.OK
    return next(c for c in Code if c.value[0] == result.error.code)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("multi") / "c", 3, args=FAST)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _stub(endpoint: str) -> Iterator[kv_pb2_grpc.KVStub]:
    with grpc.insecure_channel(endpoint) as channel:
        yield kv_pb2_grpc.KVStub(channel)


@pytest.fixture
def single(shared_node: NodeProcess) -> Iterator[kv_pb2_grpc.KVStub]:
    yield from _stub(shared_node.endpoint)


def _mixed(ns: str) -> kv_pb2.MultiWriteRequest:
    """Valid, invalid and condition-failed writes of every kind, interleaved."""
    write = kv_pb2.WriteRequest
    batch = kv_pb2.BatchRequest(namespace=ns)
    batch.ops.add(put=frame_pb2.PutOp(key="b1", value=b"x"))
    batch.ops.add(put=frame_pb2.PutOp(key="b2", value=b"y"))
    return kv_pb2.MultiWriteRequest(
        writes=[
            _put(ns, "k", b"1"),
            _put(ns, "k", b"2"),  # the same key again: its own version
            _put("bad/ns", "k", b"x"),  # invalid name
            _put(ns, "k", b"3", expected_version=1),  # k is at the version of write 1
            write(),  # no write at all
            write(batch=batch),
            _put(ns, "huge", b"v" * (2 << 20)),  # over --max-value-bytes
            write(delete=kv_pb2.DeleteRequest(namespace=ns, key="b1")),
            _put(ns, "absent", b"z", expected_version=0),  # must-not-exist: holds
        ]
    )


def _check_mixed(reply: kv_pb2.MultiWriteResponse) -> None:
    r = reply.results
    assert [_code(x) for x in r] == [
        Code.OK,
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.FAILED_PRECONDITION,
        Code.INVALID_ARGUMENT,
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.OK,
        Code.OK,
    ]
    first, second = r[0].put, r[1].put
    assert first.version == first.index
    assert second.version == second.index
    assert second.version > first.version  # one version, one value
    assert "namespace 'bad/ns' is invalid" in r[2].error.message
    failed = r[3].error
    assert (failed.failed_key, failed.failed_expected, failed.failed_actual) == (
        "k",
        1,
        second.version,
    )
    assert failed.message == (
        f"condition failed on key 'k': expected version 1, current version {second.version}"
    )
    assert "neither a put, a delete nor a batch" in r[4].error.message
    assert [o.version for o in r[5].batch.results] == [r[5].batch.index] * 2
    assert "--max-value-bytes" in r[6].error.message
    assert r[7].delete.deleted
    assert r[7].delete.index > r[5].batch.index
    assert r[8].put.version > 0
    # Writes that share no key may share a log entry (an envelope) and so an
    # index; those that share one commit apart, in request order (above).


def _check_state(stub: kv_pb2_grpc.KVStub, ns: str, reply: kv_pb2.MultiWriteResponse) -> None:
    got = stub.MultiGet(
        kv_pb2.MultiGetRequest(
            gets=[
                kv_pb2.GetRequest(namespace=ns, key="k"),
                kv_pb2.GetRequest(namespace=ns, key="b1", consistency=kv_pb2.SERIALIZABLE),
                kv_pb2.GetRequest(namespace=ns, key="b2"),
                kv_pb2.GetRequest(namespace="bad/ns", key="k"),
                kv_pb2.GetRequest(namespace=ns, key="k", consistency=7),  # type: ignore[arg-type]
            ]
        ),
        timeout=10,
    ).results
    assert (got[0].get.value, got[0].get.version) == (b"2", reply.results[1].put.version)
    assert not got[1].get.found  # deleted by write 7 (read on the node written to)
    assert got[2].get.value == b"y"
    assert _code(got[3]) == Code.INVALID_ARGUMENT
    assert "unknown consistency 7" in got[4].error.message


def test_each_write_gets_its_own_status_on_a_single_node(single: kv_pb2_grpc.KVStub) -> None:
    ns = f"m{next(_names)}"
    reply = single.MultiWrite(_mixed(ns), timeout=10)
    _check_mixed(reply)
    _check_state(single, ns, reply)


@pytest.mark.parametrize("through", ["leader", "follower"])
def test_each_write_gets_its_own_status_on_a_cluster(cluster: LocalCluster, through: str) -> None:
    leader = cluster.leader()
    name = leader if through == "leader" else next(n for n in cluster.addresses if n != leader)
    ns = f"m{next(_names)}"
    for stub in _stub(cluster.addresses[name]):
        reply = stub.MultiWrite(_mixed(ns), timeout=20)
        _check_mixed(reply)
        _check_state(stub, ns, reply)


def test_a_retried_multiwrite_with_the_same_request_ids_applies_once(
    single: kv_pb2_grpc.KVStub,
) -> None:
    ns = f"m{next(_names)}"
    ids = [frame_pb2.RequestId(client_id="retry-test", seq=s) for s in (1, 2)]
    request = kv_pb2.MultiWriteRequest(
        writes=[_put(ns, "a", b"1", request_id=ids[0]), _put(ns, "a", b"2", request_id=ids[1])]
    )
    first = single.MultiWrite(request, timeout=10)
    again = single.MultiWrite(request, timeout=10)  # a retry after a lost answer
    assert [r.put for r in again.results] == [r.put for r in first.results]
    entry = single.Get(kv_pb2.GetRequest(namespace=ns, key="a"), timeout=10)
    assert (entry.value, entry.version) == (b"2", first.results[1].put.version)
    # Not re-applied: a new write lands right after the first call's frames.
    later = single.Put(kv_pb2.PutRequest(namespace=ns, key="a", value=b"3"), timeout=10)
    assert later.version > first.results[1].put.version


def test_too_many_writes_refuse_the_whole_call(single: kv_pb2_grpc.KVStub) -> None:
    writes = [_put("m", "k", b"") for _ in range(10_001)]
    with pytest.raises(grpc.RpcError) as raised:
        single.MultiWrite(kv_pb2.MultiWriteRequest(writes=writes), timeout=10)
    assert raised.value.code() == Code.INVALID_ARGUMENT
    assert "10001 writes; the limit is 10000" in (raised.value.details() or "")
    gets = [kv_pb2.GetRequest(namespace="m", key="k")] * 10_001
    with pytest.raises(grpc.RpcError) as raised:
        single.MultiGet(kv_pb2.MultiGetRequest(gets=gets), timeout=10)
    assert raised.value.code() == Code.INVALID_ARGUMENT


def test_an_empty_call_answers_nothing(single: kv_pb2_grpc.KVStub) -> None:
    assert not single.MultiWrite(kv_pb2.MultiWriteRequest(), timeout=10).results
    assert not single.MultiGet(kv_pb2.MultiGetRequest(), timeout=10).results


def test_multiget_answer_too_large_fails_only_the_gets_past_the_bound(tmp_path: Path) -> None:
    node = NodeProcess(
        data_dir=tmp_path / "n1",
        args=["--max-request-bytes", str(1 << 20), "--max-value-bytes", str(400 << 10)],
        log_path=tmp_path / "n1.log",
    )
    try:
        node.start()
        for stub in _stub(node.endpoint):
            for key in ("a", "b", "c"):
                stub.Put(
                    kv_pb2.PutRequest(namespace="big", key=key, value=b"v" * (400 << 10)),
                    timeout=10,
                )
            gets = [kv_pb2.GetRequest(namespace="big", key=k) for k in ("a", "b", "c", "nope")]
            got = stub.MultiGet(kv_pb2.MultiGetRequest(gets=gets), timeout=10).results
            assert [_code(g) for g in got] == [
                Code.OK,
                Code.OK,
                Code.RESOURCE_EXHAUSTED,
                Code.OK,
            ]
            assert "read this key with Get" in got[2].error.message
            assert not got[3].get.found
    finally:
        node.kill()
