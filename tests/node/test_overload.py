"""An overloaded node sheds load at the door: past --max-concurrent-requests a
request is RESOURCE_EXHAUSTED with a message that says what to do, health
stays SERVING, and once the load goes the same requests succeed."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shardlite.v1 import kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess, wait_until


def test_requests_beyond_the_limit_are_resource_exhausted_and_the_node_stays_healthy(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--max-concurrent-requests", "2")
    with grpc.insecure_channel(node.endpoint) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        kv.Put(kv_pb2.PutRequest(namespace="o", key="before", value=b"v"), timeout=10)
        # Two streams hold both places until they are cancelled.
        held = [kv.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=60) for _ in range(2)]
        for stream in held:
            next(iter(stream))  # open and served
        with pytest.raises(grpc.RpcError) as shed:
            kv.Put(kv_pb2.PutRequest(namespace="o", key="shed", value=b"v"), timeout=10)
        error = shed.value
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-requests" in (error.details() or "")
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        for stream in held:
            stream.cancel()

        def put_succeeds() -> bool:
            try:
                kv.Put(kv_pb2.PutRequest(namespace="o", key="after", value=b"v"), timeout=5)
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return True

        wait_until(put_succeeds, 10, "the places to be released")
        found = kv.Get(kv_pb2.GetRequest(namespace="o", key="before"), timeout=5)
        assert found.found  # nothing acknowledged was lost
        assert not kv.Get(kv_pb2.GetRequest(namespace="o", key="shed"), timeout=5).found
