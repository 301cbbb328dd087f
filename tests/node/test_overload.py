"""An overloaded node sheds load at the door: past --max-concurrent-requests a
request is RESOURCE_EXHAUSTED with a message that says what to do, health
stays SERVING, and once the load goes the same requests succeed."""

from __future__ import annotations

import asyncio
from collections import Counter
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


def test_a_flood_of_calls_is_answered_or_refused_never_cancelled(
    start_node: Callable[..., NodeProcess],
) -> None:
    # More calls in flight than gRPC core's default queue of calls not yet taken
    # (1,000) used to come back CANCELLED at random, though no one cancelled them.
    node = start_node("--max-concurrent-requests", "1500")
    codes = asyncio.run(_flood(node.endpoint, channels=4, calls_per_channel=600, seconds=3.0))
    assert codes["OK"] > 0, codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes


async def _flood(
    endpoint: str, channels: int, calls_per_channel: int, seconds: float
) -> Counter[str]:
    """Closed-loop callers (below --max-streams-per-connection on each channel),
    for `seconds`; every answer's code."""
    codes: Counter[str] = Counter()
    opened = [
        grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        stubs = [kv_pb2_grpc.KVStub(channel) for channel in opened]
        end = asyncio.get_running_loop().time() + seconds

        async def caller(stub: kv_pb2_grpc.KVAsyncStub) -> None:
            while asyncio.get_running_loop().time() < end:
                try:
                    await stub.Get(
                        kv_pb2.GetRequest(
                            namespace="flood", key="k", consistency=kv_pb2.SERIALIZABLE
                        ),
                        timeout=30,
                    )
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1

        await asyncio.gather(*(caller(stub) for stub in stubs for _ in range(calls_per_channel)))
    finally:
        for channel in opened:
            await channel.close(None)
    return codes


def test_calls_beyond_the_streams_of_one_connection_wait_for_room(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--max-streams-per-connection", "2")
    with (
        grpc.insecure_channel(node.endpoint, options=[("grpc.use_local_subchannel_pool", 1)]) as a,
        grpc.insecure_channel(node.endpoint, options=[("grpc.use_local_subchannel_pool", 1)]) as b,
    ):
        kv_a, kv_b = kv_pb2_grpc.KVStub(a), kv_pb2_grpc.KVStub(b)
        kv_a.Put(kv_pb2.PutRequest(namespace="o", key="k", value=b"v"), timeout=10)
        held = [kv_a.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=60) for _ in range(2)]
        for stream in held:
            next(iter(stream))  # both streams of connection a are taken
        get = kv_pb2.GetRequest(namespace="o", key="k", consistency=kv_pb2.SERIALIZABLE)
        with pytest.raises(grpc.RpcError) as waited:
            kv_a.Get(get, timeout=1)  # waits for room on a, until its deadline
        assert isinstance(waited.value, grpc.Call)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert kv_b.Get(get, timeout=5).found  # another connection is not held up
        pending = kv_a.Get.future(get, timeout=30)
        held[0].cancel()
        assert pending.result(timeout=30).found  # room again: the waiting call goes
        held[1].cancel()
