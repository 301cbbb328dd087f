"""The client's retry loop: UNAVAILABLE is retried with the same request until
the deadline, and a retry that runs out of time reports the node's answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from shardlite.node.client import Client, ClientError
from shardlite.v1 import kv_pb2


class _UnavailableThenSlow:
    """A KV server whose Put answers UNAVAILABLE once, then never in time."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def put(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        if self.calls == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "outcome unknown: retry with the same id")
        self.release.wait(5)
        return kv_pb2.PutResponse(index=1, version=1).SerializeToString()


@pytest.fixture
def server() -> Iterator[tuple[str, _UnavailableThenSlow]]:
    behaviour = _UnavailableThenSlow()
    handler = grpc.method_handlers_generic_handler(
        "shardlite.v1.KV",
        {"Put": grpc.unary_unary_rpc_method_handler(behaviour.put)},
    )
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers((handler,))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", behaviour
    finally:
        behaviour.release.set()
        grpc_server.stop(None)


def test_a_retry_that_runs_out_of_time_reports_the_nodes_answer(
    server: tuple[str, _UnavailableThenSlow],
) -> None:
    endpoint, behaviour = server
    with Client(endpoint, timeout=0.5) as client, pytest.raises(ClientError) as raised:
        client.put("k", b"v")
    assert behaviour.calls == 2
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "outcome unknown" in raised.value.details
