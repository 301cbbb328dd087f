"""A caller that goes away in the middle of a stream is not an error (issue
11, item 9): cancelling a Subscribe, or letting its deadline pass, while the
node is still sending history logs no ERROR traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc

from shardlite.node.client import Put
from shardlite.v1 import kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess, free_ports


async def _subscribe_and_leave(endpoint: str) -> list[grpc.StatusCode]:
    codes = []
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for deadline in (0.05, 0.1, 0.2, 0.4):
            call = stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=deadline)
            try:
                async for _ in call:
                    await asyncio.sleep(0.01)  # a slow reader: the node has more to send
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        for count in (1, 5, 50):
            call = stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1))
            seen = 0
            async for _ in call:
                seen += 1
                if seen >= count:
                    break
            call.cancel()
    return codes


def test_leaving_a_subscribe_logs_no_error(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    node = start_node("--listen", address, "--peers", f"n1={address}")
    with node.client(timeout=30) as c:
        for n in range(300):
            c.batch([Put(f"k{j}", b"x" * 2000) for j in range(20)], namespace=f"ns{n % 3}")
    codes = asyncio.run(_subscribe_and_leave(node.endpoint))
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    with node.client() as c:
        assert c.status().applied_index > 300  # still serving
    log = (tmp_path / "n1.log").read_text()
    assert "ERROR" not in log, log[log.find("ERROR") - 200 :][:3000]
