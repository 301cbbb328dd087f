"""Forwarded writes tell the truth (issue 11, item 5).

A follower (an in-process node whose replicator is never the leader) forwards
to a scripted leader: a gRPC server whose Forward answers what the test says.
Nothing is forwarded again unless the leader said it certainly did not propose
it; an unknown outcome says so; a write that committed but is not applied on
the follower in time says so too, instead of INTERNAL. On the leader's side,
Forward answers a structured rejection and never proposes an invalid frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from shardlite.node.config import NodeConfig
from shardlite.replication.replicator import Accepted, Rejected, RejectReason, ReplicatorStatus
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc
from tests.harness import InProcessNode

Reason = raft_pb2.ForwardRejection


class FollowerReplicator:
    """Never leads; says the leader is at `leader`. Has the Leadership and
    PeerEndpoint capabilities, so the node forwards and serves Forward."""

    kind = "scripted"

    def __init__(self, leader: str) -> None:
        self.leader = leader
        self.reason = RejectReason.NOT_LEADER
        self.proposed: list[frame_pb2.Frame] = []
        self._closed = asyncio.Event()

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        self.proposed.append(frame)
        raise Rejected(self.reason, "scripted", leader_peer=self.leader)

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        await self._closed.wait()
        return
        yield

    async def read_barrier(self) -> int:
        return 0

    def status(self) -> ReplicatorStatus:
        return ReplicatorStatus(self.kind, "follower", 1, "", 0, 1, 0, ())

    def compact(self, applied_index: int) -> None:
        pass

    async def close(self) -> None:
        self._closed.set()

    # Leadership
    @property
    def leader_address(self) -> str:
        return self.leader

    @property
    def leader_client_address(self) -> str:
        return ""

    async def leader_changed(self, within: float) -> None:
        await asyncio.sleep(within)

    def leader_unreachable(self) -> bool:
        return False

    def peer_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    # PeerEndpoint
    def peer_servicer(self) -> NoPeers:
        return NoPeers()


class NoPeers:
    async def Send(self, request_iterator: Any, context: Any) -> raft_pb2.SendAck:
        return raft_pb2.SendAck()

    async def SendSnapshot(self, request_iterator: Any, context: Any) -> raft_pb2.SnapshotAck:
        return raft_pb2.SnapshotAck()

    def refusal(self, context: Any) -> str | None:
        return None

    def close(self) -> None:
        pass


class ScriptedLeader(raft_pb2_grpc.RaftServicer):
    """A leader whose Forward answers `answer` (a response, or a status to abort with)."""

    def __init__(self) -> None:
        self.answer: raft_pb2.ForwardResponse | tuple[grpc.StatusCode, str] = (
            raft_pb2.ForwardResponse()
        )
        self.calls = 0
        self._lock = threading.Lock()

    def Forward(self, request: raft_pb2.ForwardRequest, context: Any) -> raft_pb2.ForwardResponse:
        with self._lock:
            self.calls += 1
        if isinstance(self.answer, tuple):
            context.abort(*self.answer)
        assert isinstance(self.answer, raft_pb2.ForwardResponse)
        return self.answer


@pytest.fixture
def leader() -> Iterator[tuple[ScriptedLeader, str]]:
    servicer = ScriptedLeader()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    raft_pb2_grpc.add_RaftServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _follower(tmp_path: Path, leader_address: str) -> tuple[InProcessNode, FollowerReplicator]:
    replicator = FollowerReplicator(leader_address)
    config = NodeConfig(
        node_id="f1",
        data_dir=tmp_path / "f1",
        listen="127.0.0.1:0",
        leader_wait=1.0,
        propose_timeout=0.5,
    )
    return InProcessNode(config, lambda _: replicator), replicator


@pytest.fixture
def follower(
    tmp_path: Path, leader: tuple[ScriptedLeader, str]
) -> Iterator[tuple[InProcessNode, FollowerReplicator, ScriptedLeader]]:
    node, replicator = _follower(tmp_path, leader[1])
    try:
        yield node, replicator, leader[0]
    finally:
        node.stop()


def _put(endpoint: str) -> grpc.Call:
    """One Put, no retries: the status it ended with."""
    stub = kv_pb2_grpc.KVStub(grpc.insecure_channel(endpoint))
    request = kv_pb2.PutRequest(
        namespace="ns",
        key="k",
        value=b"v",
        request_id=frame_pb2.RequestId(client_id="c", seq=1),
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.Put(request, timeout=10)
    error = failure.value
    assert isinstance(error, grpc.Call)
    return error


def _rejection(reason: int, detail: str = "scripted") -> raft_pb2.ForwardResponse:
    return raft_pb2.ForwardResponse(
        rejection=raft_pb2.ForwardRejection(reason=reason, detail=detail)  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "reason", [Reason.NOT_LEADER, Reason.SHUTTING_DOWN, Reason.TRANSFER_IN_PROGRESS]
)
def test_certainly_not_proposed_looks_for_the_leader_again(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader], reason: int
) -> None:
    node, _, leader = follower
    leader.answer = _rejection(reason)
    error = _put(node.endpoint)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "no leader within" in (error.details() or "")
    assert "outcome unknown" not in (error.details() or "")
    assert leader.calls >= 2  # forwarded again: it certainly was not proposed


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (Reason.INVALID, grpc.StatusCode.INVALID_ARGUMENT),
        (Reason.QUEUE_FULL, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_leader_refusal_is_answered_once(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader], reason: int, code: Any
) -> None:
    node, _, leader = follower
    leader.answer = _rejection(reason, "the leader's words")
    error = _put(node.endpoint)
    assert error.code() == code
    assert "the leader's words" in (error.details() or "")
    assert leader.calls == 1


@pytest.mark.parametrize(
    "answer",
    [
        _rejection(Reason.OUTCOME_UNKNOWN),
        _rejection(Reason.REASON_UNSPECIFIED),
        raft_pb2.ForwardResponse(),  # neither result nor rejection
        # A failed call may have reached the leader, whatever its text says.
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),
        (grpc.StatusCode.UNAVAILABLE, "not leader"),
        (grpc.StatusCode.INTERNAL, "boom"),
    ],
)
def test_unknown_outcome_is_never_forwarded_again(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader], answer: Any
) -> None:
    node, _, leader = follower
    leader.answer = answer
    error = _put(node.endpoint)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "outcome unknown: retry with the same request_id" in (error.details() or "")
    assert leader.calls == 1


def test_committed_but_not_applied_here_in_time_says_so(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader],
) -> None:
    """The leader committed it at index 7; this follower never applies index 7
    (its log is scripted): UNAVAILABLE saying it committed and to retry with the
    same request_id -- not INTERNAL, after which a caller would retry with a new
    id and apply it twice."""
    node, _, leader = follower
    leader.answer = raft_pb2.ForwardResponse(
        result=frame_pb2.FrameResult(index=7, results=[frame_pb2.OpResult(version=7)])
    )
    error = _put(node.endpoint)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert "committed at index 7" in details
    assert "retry with the same request_id" in details
    assert leader.calls == 1


def test_unreachable_leader_is_looked_for_again(tmp_path: Path) -> None:
    """A channel that never connects sent nothing: not an unknown outcome."""
    from scripts.cluster import free_ports

    (port,) = free_ports(1)
    node, _ = _follower(tmp_path, f"127.0.0.1:{port}")
    try:
        error = _put(node.endpoint)
    finally:
        node.stop()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "no leader within" in (error.details() or "")


# -- the leader's side of Forward ---------------------------------------------


def _forward(endpoint: str, frame: frame_pb2.Frame) -> raft_pb2.ForwardResponse:
    stub = raft_pb2_grpc.RaftStub(grpc.insecure_channel(endpoint))
    reply: raft_pb2.ForwardResponse = stub.Forward(raft_pb2.ForwardRequest(frame=frame), timeout=10)
    return reply


def _frame(**fields: Any) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(namespace="ns", trace_id=b"t" * 16, **fields)
    frame.ops.add(put=frame_pb2.PutOp(key="k", value=b"v"))
    return frame


@pytest.mark.parametrize(
    "frame",
    [
        _frame(org=".."),
        frame_pb2.Frame(org="", namespace="../../escaped", trace_id=b"t"),
        frame_pb2.Frame(namespace="x" * 300),
        frame_pb2.Frame(namespace="bad\0name"),
        frame_pb2.Frame(namespace="ns"),  # no ops
    ],
)
def test_forward_refuses_an_invalid_frame_without_proposing(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader], frame: frame_pb2.Frame
) -> None:
    node, replicator, _ = follower
    reply = _forward(node.endpoint, frame)
    assert reply.WhichOneof("outcome") == "rejection"
    assert reply.rejection.reason == Reason.INVALID
    assert reply.rejection.detail
    assert replicator.proposed == []


@pytest.mark.parametrize(
    ("rejected", "reason"),
    [
        (RejectReason.NOT_LEADER, Reason.NOT_LEADER),
        (RejectReason.SHUTTING_DOWN, Reason.SHUTTING_DOWN),
        (RejectReason.QUEUE_FULL, Reason.QUEUE_FULL),
        (RejectReason.TOO_LARGE, Reason.INVALID),
        (RejectReason.TRANSFER_IN_PROGRESS, Reason.TRANSFER_IN_PROGRESS),
        (RejectReason.LEADERSHIP_LOST, Reason.OUTCOME_UNKNOWN),
        (RejectReason.STORAGE_FAILED, Reason.OUTCOME_UNKNOWN),
    ],
)
def test_forward_answers_a_structured_rejection(
    follower: tuple[InProcessNode, FollowerReplicator, ScriptedLeader],
    rejected: RejectReason,
    reason: int,
) -> None:
    node, replicator, _ = follower
    replicator.reason = rejected
    reply = _forward(node.endpoint, _frame())
    assert reply.WhichOneof("outcome") == "rejection"
    assert reply.rejection.reason == reason
    assert rejected.value in reply.rejection.detail
    if rejected is RejectReason.NOT_LEADER:
        assert reply.rejection.leader_hint == replicator.leader
    assert len(replicator.proposed) == 1
