"""Nothing a client or a stranger can send stops, splits or escapes the node
(issue 11 items 1 and 9, and "What it must show"): forged frames through
Raft.Forward, arbitrary frames through Batch and arbitrary bytes to every RPC
of every service, on a real one-member Raft node. It keeps serving, nothing
appears outside its data directory, and a second replica applying the same
log ends byte-for-byte equal."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc
from tests.harness import LocalCluster, running_cluster, wait_until
from tests.node.replay import dump_shards, replay

FORGED = [
    ("..", "ns"),
    ("", "../../escaped"),
    ("o", "../../../escaped"),
    ("", "n" * 300),
    ("", "bad\x00name"),
    ("/abs", "ns"),
]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("box")


@pytest.fixture(scope="module")
def member(box: Path) -> Iterator[LocalCluster]:
    """A one-member Raft cluster: Raft (Forward) on its peer port, the KV API
    on its client port."""
    with running_cluster(box, size=1) as cluster:
        yield cluster


def _endpoint(cluster: LocalCluster) -> str:
    return cluster.nodes["n1"].endpoint


def _peer(cluster: LocalCluster, name: str = "n1") -> str:
    return cluster.peer_addresses[name]


def _stray_files(box: Path) -> list[str]:
    """Files under `box` other than the node's data, log and ready file, and
    anything outside `box` that a forged name could reach."""
    allowed = {"n1.log", "n1.ready", "n1.tmp"}
    stray = [
        str(p.relative_to(box))
        for p in box.rglob("*")
        if p.is_file() and (box / "n1") not in p.parents and p.name not in allowed
    ]
    stray += [str(p) for p in box.parent.glob("*escaped*")]
    stray += [str(p) for p in box.parent.parent.glob("*escaped*")]
    return stray


def _forward(channel: grpc.Channel, frame: frame_pb2.Frame) -> str:
    """What Forward made of `frame`: 'refused' (a status or a rejection, before
    proposing) or 'invalid' (committed, refused when applied); else 'applied'."""
    stub = raft_pb2_grpc.RaftStub(channel)
    failure: grpc.RpcError | None
    try:
        reply = stub.Forward(raft_pb2.ForwardRequest(frame=frame), timeout=10)
    except grpc.RpcError as exc:
        failure = exc
    else:
        failure = None
    if failure is not None:
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT, failure
        return "refused"
    if reply.HasField("rejection"):
        return "refused"
    return "invalid" if reply.result.invalid else "applied"


def _serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    kv = kv_pb2_grpc.KVStub(channel)
    kv.Put(kv_pb2.PutRequest(namespace="alive", key="k", value=b"v"), timeout=10)


def _frame(org: str, namespace: str, key: str = "k") -> frame_pb2.Frame:
    """A frame as a follower would forward it (with its trace_id)."""
    frame = frame_pb2.Frame(org=org, namespace=namespace, trace_id=os.urandom(16))
    frame.ops.add(put=frame_pb2.PutOp(key=key, value=b"v"))
    return frame


def test_forged_forwards_are_refused_or_recorded_invalid_and_the_node_goes_on(
    member: LocalCluster, box: Path
) -> None:
    with (
        grpc.insecure_channel(_endpoint(member)) as channel,
        grpc.insecure_channel(_peer(member)) as peer,
    ):
        outcomes = [_forward(peer, _frame(org, ns)) for org, ns in FORGED]
        assert set(outcomes) <= {"refused", "invalid"}, outcomes
        _serving(channel)
        assert _forward(peer, _frame("", "fine")) == "applied"
    assert _stray_files(box) == []
    # And again after a restart (a replay of those frames must not stop it).
    node = member.nodes["n1"]
    assert node.terminate() == 0
    node.start()
    member.leader()
    with grpc.insecure_channel(_endpoint(member)) as channel:
        _serving(channel)
    assert _stray_files(box) == []


# -- the property ---------------------------------------------------------

_names = st.one_of(
    st.sampled_from(["", "ns", "a.b", "..", ".", "_", "../../escaped", "a/b", "x" * 65, "n\x00"]),
    st.text(max_size=80),
)
_keys = st.one_of(st.sampled_from(["k", "", "a\x00", "x" * 1025]), st.text(max_size=20))
_ops = st.one_of(
    st.builds(
        lambda k, v: frame_pb2.Op(put=frame_pb2.PutOp(key=k, value=v)),
        _keys,
        st.binary(max_size=64),
    ),
    st.builds(lambda k: frame_pb2.Op(delete=frame_pb2.DeleteOp(key=k)), _keys),
    st.just(frame_pb2.Op()),
)
_conditions = st.builds(
    lambda k, v: frame_pb2.Condition(key=k, version=v), _keys, st.integers(-(2**63), 2**63 - 1)
)
_request_ids = st.one_of(
    st.none(),
    st.builds(
        lambda c, s: frame_pb2.RequestId(client_id=c, seq=s),
        st.sampled_from(["c1", "c2", "", "x" * 129, "a\x00"]),
        st.integers(0, 3),
    ),
)


@st.composite
def _frames(draw: st.DrawFn) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(org=draw(_names), namespace=draw(_names))
    frame.ops.extend(draw(st.lists(_ops, max_size=4)))
    frame.conditions.extend(draw(st.lists(_conditions, max_size=2)))
    request_id = draw(_request_ids)
    if request_id is not None:
        frame.request_id.CopyFrom(request_id)
    frame.trace_id = draw(st.binary(max_size=80))
    return frame


def _methods() -> list[tuple[ServiceDescriptor, MethodDescriptor]]:
    services = [
        kv_pb2.DESCRIPTOR.services_by_name["KV"],
        kv_pb2.DESCRIPTOR.services_by_name["Maintenance"],
        raft_pb2.DESCRIPTOR.services_by_name["Raft"],
        raft_pb2.DESCRIPTOR.services_by_name["Cluster"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
    return [(s, m) for s in services for m in s.methods]


METHODS = _methods()


def _call_raw(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> None:
    """Send `payload` as the request message; any status is fine, a hang is not."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    failure = _failure(channel, method, path, payload)
    # Any status is an answer; UNKNOWN is an unhandled exception in a handler,
    # unless it is gRPC's own refusal of bytes that do not parse (for streams,
    # grpcio reports a DecodeError as UNKNOWN before any handler runs).
    if failure is not None and failure.code() == grpc.StatusCode.UNKNOWN:
        assert "Error parsing message" in (failure.details() or ""), (path, failure)


def _failure(
    channel: grpc.Channel, method: MethodDescriptor, path: str, payload: bytes
) -> grpc.RpcError | None:
    requests = iter([payload])
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path, None, None)(requests, timeout=2)
            for _, _ in zip(range(3), call, strict=False):
                pass
        elif method.client_streaming:
            channel.stream_unary(path, None, None)(requests, timeout=2)
        elif method.server_streaming:
            call = channel.unary_stream(path, None, None)(payload, timeout=2)
            for _, _ in zip(range(3), call, strict=False):
                pass
        else:
            channel.unary_unary(path, None, None)(payload, timeout=2)
    except grpc.RpcError as exc:
        return exc
    return None


def _batch_code(kv: kv_pb2_grpc.KVStub, request: kv_pb2.BatchRequest) -> grpc.StatusCode:
    try:
        kv.Batch(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_arbitrary_input_never_stops_splits_or_escapes_the_node(
    member: LocalCluster, box: Path, tmp_path: Path
) -> None:
    with (
        grpc.insecure_channel(_endpoint(member)) as channel,
        grpc.insecure_channel(_peer(member)) as peer,
    ):
        kv = kv_pb2_grpc.KVStub(channel)

        @settings(
            max_examples=25,
            deadline=None,
            # Shrinking against a live node is slow; the failing example is printed.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(frame=_frames(), payload=st.binary(max_size=64), via_forward=st.booleans())
        def examples(frame: frame_pb2.Frame, payload: bytes, via_forward: bool) -> None:
            if via_forward:
                assert _forward(peer, frame) in {"refused", "invalid", "applied"}
            else:
                request = kv_pb2.BatchRequest(org=frame.org, namespace=frame.namespace)
                request.ops.extend(frame.ops)
                request.conditions.extend(frame.conditions)
                request.request_id.CopyFrom(frame.request_id)
                code = _batch_code(kv, request)
                assert code in (
                    grpc.StatusCode.OK,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ), code
            for _, method in METHODS:
                # Each listener gets what it serves: Raft on the peer port only,
                # Cluster and Health on both, the rest on the client port.
                service = method.containing_service.name
                if service != "Raft":
                    _call_raw(channel, method, payload)
                if service in ("Raft", "Cluster", "Health"):
                    _call_raw(peer, method, payload)
            _serving(channel)

        examples()
        # The log, as Subscribe streams it (each frame at its own index), up to a
        # sentinel written last.
        sentinel = kv.Put(kv_pb2.PutRequest(namespace="sentinel", key="k", value=b"v"), timeout=10)
        streamed: list[kv_pb2.SubscribeResponse] = []
        for event in kv.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=30):
            streamed.append(event)
            if event.index == sentinel.index:
                break
    assert _stray_files(box) == []
    entries = [(event.index, event.frame) for event in streamed]
    replay(entries, tmp_path / "replica")
    here, there = dump_shards(box / "n1"), dump_shards(tmp_path / "replica")
    assert {"_/alive.db", "_/sentinel.db"} <= set(here)
    assert here == there


def _applied(channel: grpc.Channel) -> int:
    status = kv_pb2_grpc.KVStub(channel).Status(kv_pb2.StatusRequest(), timeout=5)
    return int(status.applied_index)


def test_a_nul_namespace_forwarded_to_any_member_of_three_stops_none(tmp_path: Path) -> None:
    """Issue 11 item 9: a namespace with a NUL sent through Forward stopped all
    three nodes ("applier stopped: embedded null byte"), again on replay. Sent
    to the leader and to a follower, it must leave every member serving and
    applying."""
    cluster = LocalCluster(tmp_path, size=3)
    try:
        cluster.start()
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n != leader)
        for name in (leader, follower):
            with grpc.insecure_channel(cluster.peer_addresses[name]) as channel:
                for org, namespace in FORGED:
                    assert _forward(channel, _frame(org, namespace)) in {"refused", "invalid"}
        with cluster.client(leader, namespace="after") as c:
            index = c.put("k", b"v").index
        for name in cluster.nodes:
            with grpc.insecure_channel(cluster.addresses[name]) as channel:
                wait_until(lambda: _applied(channel) >= index, 20, f"{name} to apply {index}")
                _serving(channel)
    finally:
        cluster.stop()
    assert not list(tmp_path.parent.glob("*escaped*"))


def test_a_forward_from_another_cluster_is_refused(member: LocalCluster) -> None:
    """Forward checks the cluster id like the Raft streams do (issue 11 item 8)."""
    with (
        grpc.insecure_channel(_endpoint(member)) as channel,
        grpc.insecure_channel(_peer(member)) as peer,
    ):
        stub = raft_pb2_grpc.RaftStub(peer)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Forward(
                raft_pb2.ForwardRequest(frame=_frame("", "other-cluster")),
                timeout=10,
                metadata=(("shardlite-cluster-id", "not-this-cluster"),),
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        _serving(channel)
        names = kv_pb2_grpc.KVStub(channel).ListNamespaces(kv_pb2.ListNamespacesRequest())
        assert "other-cluster" not in names.namespaces


def test_a_raft_message_of_an_unknown_type_is_invalid_argument(member: LocalCluster) -> None:
    """A message that parses but names a type this member does not know is the
    sender's error, not an internal one."""
    with (
        grpc.insecure_channel(_endpoint(member)) as channel,
        grpc.insecure_channel(_peer(member)) as peer,
    ):
        stub = raft_pb2_grpc.RaftStub(peer)
        batch = raft_pb2.RaftBatch(messages=[raft_pb2.RaftMessage(type=9999, to=1, term=1)])
        with pytest.raises(grpc.RpcError) as raised:
            stub.Send(iter([batch]), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a Raft message this member understands" in (raised.value.details() or "")
        _serving(channel)
