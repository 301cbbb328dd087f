"""Subscribe that a tenant can use (issue 13): filters by org, namespace and
key prefix, resumable by index; with auth on a token sees only its orgs'
frames, never one of another org; a reader that stalls is dropped with
RESOURCE_EXHAUSTED and can resume where it was."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.node import service as service_module
from shardlite.node.async_client import AsyncClient
from shardlite.node.bearer import metadata
from shardlite.node.client import Client, ClientError, Condition, Delete, Put
from shardlite.node.config import NodeConfig
from shardlite.v1 import kv_pb2, kv_pb2_grpc
from tests.harness import InProcessNode, NodeProcess, free_ports, wait_until
from tests.node.auth_tokens import Tokens, standard_tokens

ORG_OF_INDEX = dict[int, str]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Tokens]]:
    base = tmp_path_factory.mktemp("subscribe-auth")
    tokens = standard_tokens(base / "tokens.json")
    node = NodeProcess(
        data_dir=base / "n1", args=["--auth-tokens", str(tokens.path)], log_path=base / "n1.log"
    )
    try:
        yield node.start(), tokens
    finally:
        node.kill()


def _interleaved_writes(endpoint: str, token: str, rounds: int) -> ORG_OF_INDEX:
    """Writes of every kind to orgs a, b and c in turn (puts, batches, deletes,
    failed compare-and-sets, multi-org MultiWrites); each frame's index -> org."""
    written: ORG_OF_INDEX = {}
    with Client(endpoint, token=token, namespace="mix") as c:
        for i in range(rounds):
            for org in ("a", "b", "c"):
                written[c.put(f"k{i}", f"{org}{i}".encode(), org=org).index] = org
                batch = c.batch([Put(f"b{i}", b"x"), Delete(f"k{i}")], org=org)
                written[batch[0].index] = org
                with pytest.raises(ClientError) as refused:
                    c.put(f"k{i}", b"never", expected_version=10**9, org=org)
                assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
                status = c.status()
                written[status.applied_index] = org  # the failed CAS is a frame too
    return written


def _read_until(
    stream: Iterator[kv_pb2.SubscribeResponse], last: int
) -> list[kv_pb2.SubscribeResponse]:
    seen = []
    for event in stream:
        seen.append(event)
        if event.index >= last:
            break
    return seen


def test_a_token_for_org_a_never_receives_a_frame_of_another_org(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    """Live and from history, with writes to a, b and c interleaved: the
    a-token's stream carries exactly a's frames; a token for a and c gets a's
    and c's; none carries b's."""
    node, tokens = secured
    start = Client(node.endpoint, token=tokens["wide"]).status().applied_index + 1
    live: list[kv_pb2.SubscribeResponse] = []
    opened = threading.Event()

    def follow() -> None:
        with grpc.insecure_channel(node.endpoint) as channel:
            # Called now (not on the first next()): the stream is open before the writes.
            stream = kv_pb2_grpc.KVStub(channel).Subscribe(
                kv_pb2.SubscribeRequest(from_index=start),
                metadata=metadata(tokens["alpha"]),
                timeout=60,
            )
            opened.set()
            for event in stream:
                live.append(event)
                if event.frame.ops[0].put.key == "final":
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert opened.wait(10)
    written = _interleaved_writes(node.endpoint, tokens["wide"], rounds=5)
    # A final write to org a ends the live stream (it is a's frame).
    with Client(node.endpoint, token=tokens["alpha"], org="a", namespace="mix") as alpha:
        final = alpha.put("final", b"end").index
    written[final] = "a"
    follower.join(30)
    assert not follower.is_alive(), [e.index for e in live]

    expected_a = sorted(i for i, org in written.items() if org == "a")
    assert [e.index for e in live] == expected_a
    assert {e.frame.org for e in live} == {"a"}
    outcomes = {kv_pb2.Outcome.Name(e.outcome) for e in live}
    assert outcomes == {"APPLIED", "CONDITION_FAILED"}

    with Client(node.endpoint, token=tokens["alpha"]) as alpha:
        history = _read_until(alpha.events(start, timeout=30), final)
    assert [e.index for e in history] == expected_a
    with Client(node.endpoint, token=tokens["pair"]) as pair:
        both = _read_until(pair.events(start, timeout=30), final)
        only_c = _read_until(
            pair.events(start, orgs=["c"], timeout=30),
            max(i for i, org in written.items() if org == "c"),
        )
    assert [e.index for e in both] == sorted(i for i, o in written.items() if o in ("a", "c"))
    assert {e.frame.org for e in only_c} == {"c"}
    # The wide token (every org) sees b's frames: they were there to be seen.
    with Client(node.endpoint, token=tokens["wide"]) as wide:
        every = _read_until(wide.events(start, timeout=30), final)
    assert [e.index for e in every] == sorted(written)


def test_asking_for_a_foreign_org_is_denied_the_same_whether_it_exists(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    node, tokens = secured
    with Client(node.endpoint, token=tokens["wide"], namespace="deny") as wide:
        wide.put("k", b"v", org="b")
    answers = []
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for org in ("b", "nosuchorg"):
            stream = stub.Subscribe(
                kv_pb2.SubscribeRequest(from_index=1, orgs=["a", org]),
                metadata=metadata(tokens["alpha"]),
                timeout=10,
            )
            with pytest.raises(grpc.RpcError) as denied:
                next(iter(stream))
            answers.append(
                (denied.value.code(), (denied.value.details() or "").replace(org, "ORG"))
            )
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.PERMISSION_DENIED


# -- filters (auth off: they are for everyone) -----------------------------------------


def test_a_prefix_narrows_ops_results_and_conditions(shared_node: NodeProcess) -> None:
    with shared_node.client(org="p", namespace="prefix") as c:
        c.put("user/1", b"old")
        first = c.batch(
            [Put("user/1", b"1"), Put("other/1", b"o"), Delete("user/2"), Put("user/3", b"3")],
            [Condition("user/1", c.get("user/1").version), Condition("other/9", 0)],  # type: ignore[union-attr]
        )
        c.batch([Put("other/2", b"o")])  # nothing under the prefix: not streamed
        last = c.put("user/4", b"4")
        stream = c.events(first[0].index, prefix="user/", timeout=20)
        events = _read_until(stream, last.index)
    assert [e.index for e in events] == [first[0].index, last.index]
    narrowed = events[0]
    assert [op.put.key or op.delete.key for op in narrowed.frame.ops] == [
        "user/1",
        "user/2",
        "user/3",
    ]
    # Each result still stands beside its op.
    assert [(r.version, r.deleted) for r in narrowed.result.results] == [
        (first[0].version, False),
        (0, False),
        (first[3].version, False),
    ]
    assert [x.key for x in narrowed.frame.conditions] == ["user/1"]
    assert narrowed.outcome == kv_pb2.APPLIED


def test_org_and_namespace_filters_and_resume_by_index(shared_node: NodeProcess) -> None:
    with shared_node.client() as c:
        indexes = []
        for i in range(6):
            for org, namespace in (("f1", "one"), ("f1", "two"), ("f2", "one")):
                indexes.append(
                    (c.put(f"k{i}", b"v", org=org, namespace=namespace).index, org, namespace)
                )
        start = indexes[0][0]
        wanted = [i for i, org, ns in indexes if org == "f1" and ns == "one"]
        events = _read_until(c.events(start, orgs=["f1"], namespace="one", timeout=20), wanted[-1])
        assert [e.index for e in events] == wanted
        # Resume after the third: the same frames from there on, none twice.
        resumed = _read_until(
            c.events(events[2].index + 1, orgs=["f1"], namespace="one", timeout=20), wanted[-1]
        )
        assert [e.index for e in resumed] == wanted[3:]
        assert resumed[0] == events[3]
        in_f2 = [i for i, org, _ in indexes if org == "f2"]
        f2 = _read_until(c.events(start, orgs=["f2"], timeout=20), in_f2[-1])
        assert [e.index for e in f2] == in_f2


def test_a_filter_naming_an_invalid_org_or_namespace_is_invalid_argument(
    shared_node: NodeProcess,
) -> None:
    with shared_node.client() as c:
        for kwargs in ({"orgs": ["bad/org"]}, {"namespace": ".."}, {"orgs": ["_"]}):
            with pytest.raises(ClientError) as refused:
                next(c.events(1, timeout=10, **kwargs))
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- a reader that stalls --------------------------------------------------------------


def _subscribe_served(stub: kv_pb2_grpc.KVStub) -> bool:
    try:
        next(iter(stub.Subscribe(kv_pb2.SubscribeRequest(from_index=1), timeout=10)))
        return True
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_a_stalled_subscriber_is_dropped_and_resumes_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node holds at most a flow-control window for a reader that takes
    nothing: after --stream-stall-seconds the stream ends RESOURCE_EXHAUSTED
    (its slot is free again: with one slot, another subscriber is served),
    and the reader resumes from the last index it got + 1, losing nothing."""
    monkeypatch.setattr(service_module, "MAX_SUBSCRIBE_STREAMS", 1)
    config = NodeConfig(
        node_id="n1",
        data_dir=tmp_path / "n1",
        listen=f"127.0.0.1:{free_ports(1)[0]}",
        stream_stall_seconds=1.0,
    )
    node = InProcessNode(config)
    try:
        value = b"x" * (512 << 10)
        with Client(node.endpoint, namespace="stall") as c:
            writes = [c.put(f"k{i}", value).index for i in range(60)]  # 30 MiB
        with grpc.insecure_channel(
            node.endpoint, options=[("grpc.max_receive_message_length", 4 << 20)]
        ) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            stalled = stub.Subscribe(kv_pb2.SubscribeRequest(from_index=writes[0]), timeout=60)
            got = [next(iter(stalled)).index]
            # Its slot frees once the node gives up on it.
            with grpc.insecure_channel(node.endpoint) as other:
                wait_until(
                    lambda: _subscribe_served(kv_pb2_grpc.KVStub(other)),
                    20,
                    "the stalled stream to be dropped",
                )
            with pytest.raises(grpc.RpcError) as dropped:
                got.extend(event.index for event in stalled)
            assert dropped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "took no message for 1s" in (dropped.value.details() or "")
            assert got == writes[: len(got)]
            assert len(got) < len(writes)
            resumed = stub.Subscribe(kv_pb2.SubscribeRequest(from_index=got[-1] + 1), timeout=60)
            rest = [e.index for _, e in zip(range(len(writes) - len(got)), resumed, strict=False)]
            resumed.cancel()
        assert got + rest == writes
    finally:
        node.stop()


def test_the_async_client_subscribes_with_its_token_and_filters(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    node, tokens = secured
    with Client(node.endpoint, token=tokens["wide"], namespace="async-sub") as wide:
        start = wide.put("user/1", b"b", org="b").index
        wide.put("other", b"a", org="a")
        last = wide.put("user/2", b"a", org="a").index

    async def run() -> list[kv_pb2.SubscribeResponse]:
        async with AsyncClient(node.endpoint, token=tokens["alpha"]) as kv:
            seen = []
            async for event in kv.events(start, namespace="async-sub", prefix="user/"):
                seen.append(event)
                if event.index >= last:
                    return seen
        raise AssertionError("the stream ended")

    events = asyncio.run(asyncio.wait_for(run(), 30))
    assert [(e.index, e.frame.org, e.frame.ops[0].put.key) for e in events] == [
        (last, "a", "user/2")
    ]
