"""Fail-stop (issue 11, item 4): after a fault of the machine the node turns
NOT_SERVING, answers every waiting and every new request UNAVAILABLE with the
reason, shuts down and `shardlite node` exits non-zero, so its supervisor
(docker's restart policy, systemd) restarts it."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shardlite.node.config import NodeConfig
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc
from tests.harness import InProcessNode, NodeProcess, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
KV = "shardlite.v1.KV"


def _complete(call: Any) -> None:
    """Make the call, reading it to the end if it is a stream."""
    result = call()
    if not hasattr(result, "ListFields"):
        list(result)


def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        _complete(call)
    error = failure.value
    assert isinstance(error, grpc.Call)
    return error.code(), error.details() or ""


def _put(key: str, seq: int) -> kv_pb2.PutRequest:
    return kv_pb2.PutRequest(
        namespace="ns",
        key=key,
        value=b"v",
        request_id=frame_pb2.RequestId(client_id="fail-stop-test", seq=seq),
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode(NodeConfig(data_dir=tmp_path / "n1", listen="127.0.0.1:0"))
    try:
        yield started
    finally:
        started.stop()


def test_a_failed_log_write_fail_stops_the_node(node: InProcessNode) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    kv = kv_pb2_grpc.KVStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    kv.Put(_put("before", 1), timeout=10)
    assert health.Check(health_pb2.HealthCheckRequest(service=KV)).status == SERVING

    # The frame log's next write fails as a dying disk's would.
    replicator: Any = node.node.replicator

    def broken(payloads: list[bytes]) -> int:
        raise OSError(errno.EIO, "injected I/O error")

    replicator._log.append = broken

    # The write that met the fault: UNAVAILABLE, its outcome unknown, the reason said.
    code, details = _status(lambda: kv.Put(_put("during", 2), timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "outcome unknown: retry with the same request_id" in details
    assert "injected I/O error" in details
    assert node.node.lifecycle.fatal is not None

    def not_serving(service: str) -> bool:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        return bool(reply.status == NOT_SERVING)

    wait_until(lambda: not_serving("") and not_serving(KV), 10, "health to turn NOT_SERVING")
    # Every new request, of every service, at once: UNAVAILABLE with the reason.
    cluster = raft_pb2_grpc.ClusterStub(channel)
    maintenance = kv_pb2_grpc.MaintenanceStub(channel)
    for call in (
        lambda: kv.Put(_put("after", 3), timeout=5),
        lambda: kv.Get(kv_pb2.GetRequest(namespace="ns", key="before"), timeout=5),
        lambda: kv.List(kv_pb2.ListRequest(namespace="ns"), timeout=5),
        lambda: kv.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=5),
        lambda: kv.Status(kv_pb2.StatusRequest(), timeout=5),
        lambda: cluster.Members(raft_pb2.MembersRequest(), timeout=5),
        lambda: maintenance.Backup(kv_pb2.BackupRequest(), timeout=5),
    ):
        code, details = _status(call)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "fatal fault" in details
        assert "injected I/O error" in details


def test_a_failed_apply_fails_waiting_requests_at_once(node: InProcessNode) -> None:
    """A machine fault in the applier: the write waiting for its result is
    answered at once (not after a timeout), and so is every later one."""
    import time

    from shardlite.node import shard

    channel = grpc.insecure_channel(node.endpoint)
    kv = kv_pb2_grpc.KVStub(channel)
    kv.Put(_put("before", 1), timeout=10)
    original = shard.Shard.apply

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "injected apply I/O error")

    shard.Shard.apply = broken  # type: ignore[method-assign]
    try:
        began = time.monotonic()
        code, details = _status(lambda: kv.Put(_put("during", 2), timeout=30))
        took = time.monotonic() - began
    finally:
        shard.Shard.apply = original  # type: ignore[method-assign]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "injected apply I/O error" in details
    assert took < 5
    code, details = _status(lambda: kv.Put(_put("after", 3), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "fatal fault" in details


@pytest.mark.parametrize("fault", ["wal", "applier"])
def test_a_node_process_exits_non_zero_after_a_machine_fault(tmp_path: Path, fault: str) -> None:
    trigger = tmp_path / "fail-now"
    node = NodeProcess(
        data_dir=tmp_path / "n1",
        args=[],
        log_path=tmp_path / "n1.log",
        env={"SHARDLITE_TEST_FAULT_TRIGGER": str(trigger), "SHARDLITE_TEST_FAULT": fault},
        module="tests.node.faulty_node",
    )
    node.start()
    try:
        channel = grpc.insecure_channel(node.endpoint)
        kv = kv_pb2_grpc.KVStub(channel)
        kv.Put(_put("before", 1), timeout=10)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=KV), timeout=60
        )
        assert next(watch).status == SERVING
        trigger.touch()
        code, details = _status(lambda: kv.Put(_put("during", 2), timeout=10))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "injected I/O error" in details
        # The health watch hears NOT_SERVING before the process goes away.
        assert next(watch).status == NOT_SERVING
        assert node.process is not None
        returncode = node.process.wait(timeout=60)
        assert returncode == 1
        log = (tmp_path / "n1.log").read_text()
        assert "fail-stops" in log
        assert "the node stopped after a fatal fault" in log
    finally:
        node.kill()
