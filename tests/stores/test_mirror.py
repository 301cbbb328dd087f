"""Mirror (seed 003, dbcache) against a single node and a 3-node cluster:
read-your-writes with wait(index), no half-applied frame ever visible, only
its namespace and only what applied, a rebuild when the stream is gone (the
log moved past it: OUT_OF_RANGE; the node it follows was killed)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from shardlite.node.client import Client, ClientError, Condition, ConditionFailedError, Delete, Put
from shardlite.stores import Mirror, MirrorTimeoutError, StoreClosedError
from shardlite.v1 import kv_pb2
from tests.harness import NodeProcess, wait_until
from tests.stores.conftest import Cluster, Target

WINDOW = 0.5


@pytest.fixture
def mirror_of(target: Target) -> Iterator[Callable[[str], Mirror]]:
    made: list[Mirror] = []

    def make(namespace: str) -> Mirror:
        mirror = Mirror(target.client(timeout=3.0), namespace=namespace, window_seconds=WINDOW)
        made.append(mirror)
        return mirror

    yield make
    for mirror in made:
        mirror.close()


def test_wait_gives_read_your_writes(
    client: Client, namespace: str, mirror_of: Callable[[str], Mirror]
) -> None:
    client.put("before", b"0", namespace=namespace)
    mirror = mirror_of(namespace)
    assert mirror.get("before") == b"0"  # the first copy is built from List
    for i in range(40):
        written = client.put(f"k{i % 7}", f"{i}".encode(), namespace=namespace)
        mirror.wait(written.index)
        assert mirror.get(f"k{i % 7}") == f"{i}".encode()
        if i % 5 == 0:
            gone = client.delete(f"k{i % 7}", namespace=namespace)
            assert mirror.wait(gone.index).get(f"k{i % 7}") is None
            assert mirror.get(f"k{i % 7}") is None
    entries = {e.key: e for e in client.list(namespace=namespace)}
    snapshot = mirror.snapshot()
    assert dict(snapshot.entries) == entries  # values and versions alike


def test_only_its_namespace_and_only_what_applied(
    client: Client, namespace: str, mirror_of: Callable[[str], Mirror]
) -> None:
    mirror = mirror_of(namespace)
    client.put("k", b"mine", namespace=namespace)
    client.put("k", b"theirs", namespace=namespace + "x")
    with pytest.raises(ConditionFailedError):
        client.batch([Put("k", b"lost"), Put("j", b"lost")], [Condition("k", 0)],
                     namespace=namespace)  # fmt: skip
    last = client.put("other", b"x", namespace=namespace + "x")
    snapshot = mirror.wait(last.index)
    assert dict(snapshot.entries).keys() == {"k"}
    assert snapshot.get("k") == b"mine"


def test_no_half_applied_frame_is_ever_visible(
    client: Client, namespace: str, mirror_of: Callable[[str], Mirror]
) -> None:
    """A writer puts a, b and c in one Batch (one frame) again and again,
    sometimes deleting all three; readers check the three always agree and
    the index never goes back."""
    mirror = mirror_of(namespace)
    keys = ("a", "b", "c")
    done = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        last_index = 0
        while not done.is_set() and len(problems) < 5:
            snapshot = mirror.snapshot()
            values = {snapshot.get(k) for k in keys}
            if len(values) != 1:
                problems.append(f"at {snapshot.index}: {[snapshot.get(k) for k in keys]}")
            if snapshot.index < last_index:
                problems.append(f"index went back from {last_index} to {snapshot.index}")
            last_index = snapshot.index
            reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        last = 0
        for n in range(1, 120):
            if n % 10 == 0:
                written = client.batch([Delete(k) for k in keys], namespace=namespace)
            else:
                written = client.batch([Put(k, f"{n}".encode()) for k in keys], namespace=namespace)
            last = written[0].index
        final = mirror.wait(last)
    finally:
        done.set()
        for t in readers:
            t.join(30)
    assert problems == []
    assert reads[0] > 0
    assert {final.get(k) for k in keys} == {b"119"}


def test_rebuilds_after_the_node_it_follows_was_killed(
    target: Target, client: Client, namespace: str, mirror_of: Callable[[str], Mirror]
) -> None:
    client.put("k0", b"0", namespace=namespace)
    mirror = mirror_of(namespace)
    assert mirror.rebuilds == 1
    target.kill_endpoint()
    try:
        if isinstance(target, Cluster):
            # Writes go on through another member while the mirror's node is down.
            other = next(a for a in target.cluster.addresses.values() if a != target.endpoint())
            with Client(other, timeout=15.0) as writer:
                for i in range(1, 20):
                    writer.put(f"k{i}", f"{i}".encode(), namespace=namespace)
                writer.delete("k0", namespace=namespace)
    finally:
        target.restart()
    last = client.put("after", b"restart", namespace=namespace)
    snapshot = mirror.wait(last.index, timeout=30)
    assert mirror.rebuilds >= 2
    assert dict(snapshot.entries) == {e.key: e for e in client.list(namespace=namespace)}


class StallingMirror(Mirror):
    """A mirror whose consumer stalls before it reopens its stream, as a busy
    process would: the test holds it there while the log moves on."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _subscribe(self, from_index: int) -> Iterator[kv_pb2.SubscribeResponse]:
        if self.stall.is_set() and not self.release.is_set():
            self.stalled.set()
            self.release.wait(30)
        return super()._subscribe(from_index)


def test_rebuilds_when_the_log_moved_past_it(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--log-retain", "10", "--log-segment-bytes", "2000")
    with node.client(namespace="m") as client:
        client.put("gone", b"soon")
        mirror = StallingMirror(node.client(timeout=3.0), namespace="m", window_seconds=WINDOW)
        try:
            mirror.stall.set()
            wait_until(mirror.stalled.is_set, 10, "the mirror to stall")
            client.delete("gone")
            for i in range(150):
                client.put(f"k{i:03d}", b"x" * 50)
            wait_until(
                lambda: client.status().first_index > mirror.index + 1, 15, "the log to move on"
            )
            mirror.release.set()
            last = client.put("last", b"1")
            snapshot = mirror.wait(last.index, timeout=30)
            assert mirror.rebuilds >= 2
            assert "OUT_OF_RANGE" in str(mirror.error)
            assert "gone" not in snapshot.entries
            assert dict(snapshot.entries) == {e.key: e for e in client.list()}
        finally:
            mirror.release.set()
            mirror.close()


def test_a_closed_mirror_fails_every_call(target: Target, namespace: str) -> None:
    mirror = Mirror(target.client(), namespace=namespace, window_seconds=WINDOW)
    mirror.close()
    calls: list[Callable[[], object]] = [
        lambda: mirror.get("k"),
        lambda: mirror.entry("k"),
        mirror.snapshot,
        mirror.keys,
        lambda: mirror.wait(1),
        lambda: mirror.index,
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match="is closed; open a new one"):
            call()


def test_wait_past_what_was_written_times_out_clearly(
    client: Client, namespace: str, mirror_of: Callable[[str], Mirror]
) -> None:
    mirror = mirror_of(namespace)
    with pytest.raises(MirrorTimeoutError, match=r"not \d+, after 0\.3s"):
        mirror.wait(mirror.index + 10_000, timeout=0.3)


def test_a_mirror_follows_one_node() -> None:
    with (
        Client(["127.0.0.1:1", "127.0.0.1:2"]) as several,
        pytest.raises(ValueError, match="follows one node"),
    ):
        Mirror(several)


class _ScriptedNode:
    """A Client stand-in whose Subscribe streams follow a script: an envelope
    of two frames at index 1, the first stream cut (its window ends) between
    them."""

    endpoints = ("scripted:1",)

    def __init__(self) -> None:
        self.cut = threading.Event()  # the test saw the mirror mid-entry
        self.done = threading.Event()  # the test is over: quiet windows end at once
        self.opened: list[int] = []

    def status(self) -> kv_pb2.StatusResponse:
        return kv_pb2.StatusResponse(applied_index=0, commit_index=0)

    def list(self, **_: object) -> list[object]:
        return []

    def events(self, from_index: int, timeout: float) -> Iterator[kv_pb2.SubscribeResponse]:
        self.opened.append(from_index)
        frames = [_reply("a", more=True), _reply("b", more=False)]
        if len(self.opened) == 1:
            yield frames[0]
            self.cut.wait(timeout=10)
            raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, "window ended")
        if from_index <= 1:
            yield from frames
        self.done.wait(timeout)  # a quiet window: nothing until it ends


def _reply(key: str, more: bool) -> kv_pb2.SubscribeResponse:
    reply = kv_pb2.SubscribeResponse(index=1, outcome=kv_pb2.APPLIED, more_at_index=more)
    reply.frame.namespace = "ns"
    reply.frame.ops.add().put.key = key
    reply.result.index = 1
    return reply


def test_an_entry_of_several_frames_is_published_whole_even_across_a_cut() -> None:
    node = _ScriptedNode()
    mirror = Mirror(node, namespace="ns", window_seconds=0.2)  # type: ignore[arg-type]
    try:
        wait_until(lambda: len(node.opened) == 1, 5, "the first stream to open")
        # The first frame of index 1 arrived; the copy stays at 0, without it.
        with pytest.raises(MirrorTimeoutError):
            mirror.wait(1, timeout=0.3)
        assert mirror.keys() == []
        node.cut.set()
        snapshot = mirror.wait(1, timeout=5)
        assert sorted(snapshot.entries) == ["a", "b"]
        assert node.opened[1] == 1  # resumed at the entry cut short
    finally:
        node.done.set()
        mirror.close()
