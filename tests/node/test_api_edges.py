"""Edges of the API found with another gRPC stack (issue 11, item 9): an
unknown consistency is refused, Cluster answers on a single node, reflection
serves v1 as well as v1alpha."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from shardlite.v1 import kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc
from tests.harness import NodeProcess


@pytest.fixture
def node(start_node: Callable[..., NodeProcess]) -> NodeProcess:
    started = start_node()
    with started.client() as c:
        c.put("k", b"v", namespace="ns")
    return started


def _complete(call: Callable[[], Any]) -> None:
    """Make the call, reading it to the end if it is a stream."""
    result = call()
    if not hasattr(result, "ListFields"):
        list(result)


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        _complete(call)
    error = failure.value
    assert isinstance(error, grpc.Call)
    return error.code(), error.details() or ""


@pytest.mark.parametrize("consistency", [2, 7, 1000])
def test_unknown_consistency_is_invalid_argument(node: NodeProcess, consistency: int) -> None:
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))
    get = kv_pb2.GetRequest(namespace="ns", key="k", consistency=consistency)  # type: ignore[arg-type]
    lst = kv_pb2.ListRequest(namespace="ns", consistency=consistency)  # type: ignore[arg-type]
    for call in (lambda: stub.Get(get, timeout=5), lambda: stub.List(lst, timeout=5)):
        code, details = _code(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"unknown consistency {consistency}" in details


def test_known_consistencies_still_read(node: NodeProcess) -> None:
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(node.endpoint))
    for consistency in (kv_pb2.LINEARIZABLE, kv_pb2.SERIALIZABLE):
        reply = stub.Get(kv_pb2.GetRequest(namespace="ns", key="k", consistency=consistency))
        assert reply.value == b"v"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("Members", raft_pb2.MembersRequest()),
        ("AddMember", raft_pb2.AddMemberRequest(name="n2", address="127.0.0.1:1")),
        ("RemoveMember", raft_pb2.RemoveMemberRequest(name="n2")),
        ("TransferLeader", raft_pb2.TransferLeaderRequest()),
    ],
)
def test_cluster_rpcs_on_a_single_node_are_failed_precondition(
    node: NodeProcess, method: str, message: object
) -> None:
    stub = raft_pb2_grpc.ClusterStub(grpc.insecure_channel(node.endpoint))
    code, details = _code(lambda: getattr(stub, method)(message, timeout=5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "runs alone" in details


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_serves_v1_and_v1alpha(node: NodeProcess, version: str) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    # v1's messages are v1alpha's under another package: the same bytes.
    info = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shardlite.v1.KV"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]
    listed, kv_file, v1_file = list(info(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "shardlite.v1.KV",
        "shardlite.v1.Maintenance",
        "shardlite.v1.Cluster",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= names
    assert kv_file.file_descriptor_response.file_descriptor_proto
    assert v1_file.file_descriptor_response.file_descriptor_proto
