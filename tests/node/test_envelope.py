"""Envelopes (node/envelope.py): many frames of one shard as one log entry,
each applied alone at the entry's index, the same on every replica."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlite.node import envelope, frames
from shardlite.node.applier import Applier
from shardlite.node.async_client import AsyncClient
from shardlite.node.client import StreamPosition
from shardlite.node.config import NodeConfig
from shardlite.node.errors import InvalidArgument
from shardlite.node.lifecycle import Lifecycle
from shardlite.node.paths import Paths
from shardlite.node.peers import PeerChannels
from shardlite.node.shard import Shard, dump
from shardlite.node.shards import ShardStore
from shardlite.replication.noop import NoopReplicator
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import NodeProcess
from tests.node.test_applier import _Pipeline

LIMITS = frames.Limits(max_value_bytes=1 << 20, max_message_bytes=64 * 1024)
RETENTION = 100


def _put(
    key: str,
    value: bytes = b"v",
    *,
    namespace: str = "ns",
    expect: int | None = None,
    client: str = "",
    seq: int = 0,
    trace: bytes = b"",
) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(namespace=namespace, trace_id=trace)
    frame.ops.add(put=frame_pb2.PutOp(key=key, value=value))
    if expect is not None:
        frame.conditions.add(key=key, version=expect)
    if client:
        frame.request_id.client_id = client
        frame.request_id.seq = seq
    return frame


def _delete(key: str) -> frame_pb2.Frame:
    frame = frame_pb2.Frame(namespace="ns")
    frame.ops.add(delete=frame_pb2.DeleteOp(key=key))
    return frame


# -- packing ---------------------------------------------------------------------


def test_frames_of_one_shard_that_share_nothing_pack_into_one_entry() -> None:
    batch = [_put("a"), _put("b"), _delete("c"), _put("d", expect=0)]
    assert envelope.pack(batch, LIMITS) == [[0, 1, 2, 3]]
    entry = envelope.wrap(batch)
    assert list(entry.batch) == batch
    assert frames.content_problem(entry) is None


def _conditioned_on_a() -> frame_pb2.Frame:
    frame = _put("z")
    frame.conditions.add(key="a", version=0)
    return frame


@pytest.mark.parametrize(
    "second",
    [
        _put("a", b"again"),  # the same key: versions must stay one value each
        _delete("a"),
        _conditioned_on_a(),  # a condition may depend on the first's op
    ],
)
def test_a_key_touched_again_starts_a_new_entry(second: frame_pb2.Frame) -> None:
    assert envelope.pack([_put("a"), second, _put("b")], LIMITS) == [[0], [1, 2]]


def test_a_request_id_twice_another_shard_or_no_room_start_a_new_entry() -> None:
    retried = [_put("a", client="c", seq=1), _put("b", client="c", seq=1)]
    assert envelope.pack(retried, LIMITS) == [[0], [1]]
    elsewhere = [_put("a"), _put("b", namespace="other"), _put("c")]
    assert envelope.pack(elsewhere, LIMITS) == [[0], [1], [2]]
    big = [_put(f"k{i}", b"x" * 20_000) for i in range(5)]
    groups = envelope.pack(big, LIMITS)
    assert [p for g in groups for p in g] == list(range(5))
    for group in groups:
        assert envelope.wrap([big[p] for p in group]).ByteSize() <= LIMITS.max_message_bytes
    assert len(groups) > 1
    many = [_put(f"k{i}", b"") for i in range(frames.MAX_ENVELOPE_FRAMES + 1)]
    assert [len(g) for g in envelope.pack(many, frames.Limits())] == [frames.MAX_ENVELOPE_FRAMES, 1]


def test_a_group_of_one_is_the_frame_itself() -> None:
    frame = _put("a")
    assert envelope.wrap([frame]) is frame


# -- what the gate and every replica refuse -----------------------------------------


def test_the_gate_refuses_an_envelope_from_outside() -> None:
    entry = envelope.wrap([_put("a"), _put("b")])
    with pytest.raises(InvalidArgument, match="batch of frames"):
        frames.gate(entry, LIMITS)


def _envelope(*inner: frame_pb2.Frame) -> frame_pb2.Frame:
    return frame_pb2.Frame(namespace="ns", batch=inner)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (_envelope(_put("a")), "envelope has 1 frames"),
        (_envelope(_put("a"), _envelope(_put("b"), _put("c"))), "frame 1 of the envelope is an"),
        (_envelope(_put("a"), _put("b", namespace="other")), "frame 1 of the envelope is of"),
        (_envelope(_put("a"), _put("a")), "frame 1 of the envelope shares a key"),
        (_envelope(_put("a", client="c", seq=1), _put("b", client="c", seq=1)), "shares a key"),
        (_envelope(_put("a"), _put("")), "frame 1 of the envelope: op 0: key"),
        (frame_pb2.Frame(namespace="../x", batch=[_put("a"), _put("b")]), "namespace '../x'"),
    ],
)
def test_a_malformed_envelope_is_refused_whole_on_every_replica(
    entry: frame_pb2.Frame, problem: str
) -> None:
    found = frames.content_problem(entry)
    assert found is not None
    assert problem in found


def test_an_envelope_with_ops_of_its_own_is_refused() -> None:
    entry = _envelope(_put("a"), _put("b"))
    entry.ops.add(put=frame_pb2.PutOp(key="c", value=b""))
    assert "ops, conditions or a request_id of its own" in (frames.content_problem(entry) or "")


# -- applying ----------------------------------------------------------------------


def test_each_frame_of_an_envelope_applies_alone_at_the_entry_index(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.db")
    try:
        [first] = shard.apply([(1, _put("a", b"1"))], RETENTION)
        assert first is not None
        entry = _envelope(
            _put("b", b"2"),
            _put("a", b"lost", expect=7),  # fails alone: a is at version 1
            _delete("zz"),
            _put("c", b"3", client="cl", seq=1),
        )
        [result] = shard.apply([(2, entry)], RETENTION)
        assert result is not None
        inner = envelope.inner_results(entry, result)
        assert [r.index for r in inner] == [2, 2, 2, 2]
        assert [v.version for v in inner[0].results] == [2]
        assert inner[1].condition_failed
        assert inner[1].failed_actual == 1
        assert not inner[2].results[0].deleted
        assert shard.get("a") == (b"1", 1)
        assert shard.get("b") == (b"2", 2)
        assert shard.outcome(2) == result  # Subscribe reads it back whole
        # A later retry of an inner frame's request id is recognised.
        [retry] = shard.apply([(3, _put("c", b"other", client="cl", seq=1))], RETENTION)
        assert retry == inner[3]
        assert shard.get("c") == (b"3", 2)
        # An entry the shard already has is skipped whole.
        assert shard.apply([(2, entry)], RETENTION) == [None]
    finally:
        shard.close()


_writes = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.binary(max_size=2),
    st.booleans(),  # delete
    st.booleans(),  # must not exist
    st.sampled_from(["", "c1", "c2"]),
    st.integers(1, 3),
)


def _writes_to_frames(
    writes: list[tuple[str, bytes, bool, bool, str, int]],
) -> list[frame_pb2.Frame]:
    out = []
    for key, value, delete, absent, client, seq in writes:
        frame = _delete(key) if delete else _put(key, value)
        if absent:
            frame.conditions.add(key=key, version=0)
        if client:
            frame.request_id.client_id, frame.request_id.seq = client, seq
        out.append(frame)
    return out


def _entries(batch: list[frame_pb2.Frame]) -> list[tuple[int, frame_pb2.Frame]]:
    groups = envelope.pack(batch, LIMITS)
    return [(i, envelope.wrap([batch[p] for p in g])) for i, g in enumerate(groups, start=1)]


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(_writes, min_size=1, max_size=16), cuts=st.lists(st.integers(0, 16)))
def test_packed_writes_decide_as_one_by_one_and_any_split_agrees(
    writes: list[tuple[str, bytes, bool, bool, str, int]], cuts: list[int]
) -> None:
    """The same writes packed into envelopes or each its own entry end with the
    same values and the same per-write outcome; a key's versions are distinct
    and rise in request order; and however the envelope entries are split into
    transactions, every replica holds the same."""
    batch = _writes_to_frames(writes)
    packed = _entries(batch)
    alone = list(enumerate(batch, start=1))
    with tempfile.TemporaryDirectory() as tmp:
        decided = []
        for name, entries in (("packed", packed), ("alone", alone)):
            shard = Shard(Path(tmp) / f"{name}.db")
            per_write: list[frame_pb2.FrameResult] = []
            for (_, entry), result in zip(entries, shard.apply(entries, RETENTION), strict=True):
                assert result is not None
                per_write += envelope.inner_results(entry, result)
            values = {k: shard.get(k) for k in "abcd"}
            shard.close()
            decided.append((per_write, values))
        (packed_results, packed_values), (alone_results, alone_values) = decided
        assert {k: v and v[0] for k, v in packed_values.items()} == {
            k: v and v[0] for k, v in alone_values.items()
        }
        assert [(r.condition_failed, [o.deleted for o in r.results]) for r in packed_results] == [
            (r.condition_failed, [o.deleted for o in r.results]) for r in alone_results
        ]
        versions: dict[str, list[int]] = {}
        for frame, result in zip(batch, packed_results, strict=True):
            if frame.ops[0].HasField("put") and result.results and not frame.request_id.client_id:
                versions.setdefault(frame.ops[0].put.key, []).append(result.results[0].version)
        for seen in versions.values():
            assert seen == sorted(set(seen))
        splits = []
        for name, at in (("whole", []), ("each", list(range(len(packed)))), ("cut", cuts)):
            shard = Shard(Path(tmp) / f"{name}.db")
            start, results = 0, []
            for cut in [*sorted(c for c in set(at) if c < len(packed)), len(packed)]:
                results += shard.apply(packed[start:cut], RETENTION)
                start = max(start, cut)
            shard.close()
            splits.append((results, dump(Path(tmp) / f"{name}.db")))
        assert splits[0] == splits[1] == splits[2]


def test_the_applier_wakes_each_frame_of_an_envelope_with_its_own_result(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        pipeline = _Pipeline(tmp_path / "n")
        pipeline.applier.start()
        try:
            inner = [_put("a", trace=b"t1"), _put("b", expect=5, trace=b"t2")]
            waiters = [pipeline.applier.register(f.trace_id) for f in inner]
            accepted = await pipeline.replicator.propose(envelope.wrap(inner))
            first, second = await asyncio.wait_for(asyncio.gather(*waiters), 10)
            assert first.index == second.index == accepted.index
            assert [r.version for r in first.results] == [accepted.index]
            assert second.condition_failed
            outcomes = pipeline.applier.outcomes_of(accepted.index, envelope.wrap(inner))
            assert [(f, o) for f, o, _ in outcomes] == [
                (inner[0], kv_pb2.APPLIED),
                (inner[1], kv_pb2.CONDITION_FAILED),
            ]
            # A forged envelope is refused whole, each frame INVALID, and the
            # applier goes on.
            forged = _envelope(_put("c", trace=b"t3"), _put("c", trace=b"t4"))
            waiters = [pipeline.applier.register(f.trace_id) for f in forged.batch]
            accepted = await pipeline.replicator.propose(forged)
            results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
            assert all("shares a key" in r.invalid for r in results)
            assert {o for _, o, _ in pipeline.applier.outcomes_of(accepted.index, forged)} == {
                kv_pb2.INVALID
            }
            assert await pipeline.write(_put("d", trace=b"t5"))
        finally:
            await pipeline.close()

    asyncio.run(run())


# -- Subscribe: several frames at one index -----------------------------------------


def test_subscribe_streams_an_envelope_frame_by_frame_and_resumes_inside_it(
    shared_node: NodeProcess,
) -> None:
    """Concurrent puts through the AsyncClient commit as envelopes: Subscribe
    sends one response per frame, more_at_index on all of an index but its
    last; a stream cut after any response and resumed where StreamPosition
    says gives exactly the rest."""
    ns = "envelope-subscribe"

    async def write() -> list[int]:
        async with AsyncClient(shared_node.endpoint, namespace=ns) as client:
            written = await asyncio.gather(*(client.put(f"k{i}", b"v") for i in range(30)))
            return [w.index for w in written]

    indices = asyncio.run(write())
    assert len(set(indices)) < len(indices)  # some shared an entry
    first = min(indices)
    with shared_node.client(namespace=ns) as client:

        def stream(position: StreamPosition, count: int) -> list[kv_pb2.SubscribeResponse]:
            got: list[kv_pb2.SubscribeResponse] = []
            for reply in client.events(position.request((), ns, "").from_index, timeout=10):
                # A fresh stream from where the position says, taken through it.
                if position.take(reply):
                    got.append(reply)
                if len(got) == count:
                    break
            return got

        whole = stream(StreamPosition(first), len(indices))
        assert sorted(r.index for r in whole) == sorted(indices)
        for index in set(indices):
            at = [r for r in whole if r.index == index]
            assert [r.more_at_index for r in at] == [True] * (len(at) - 1) + [False]
        for cut in range(1, len(whole)):
            position = StreamPosition(first)
            for reply in whole[:cut]:
                assert position.take(reply)
            assert whole[:cut] + stream(position, len(whole) - cut) == whole


def test_no_envelopes_commits_each_write_of_a_multiwrite_alone(
    start_node: Callable[..., NodeProcess],
) -> None:
    """--no-envelopes (a rolling upgrade from a version without them): the
    writes of one MultiWrite that could share an entry each get their own."""
    node = start_node("--no-envelopes")
    writes = [
        kv_pb2.WriteRequest(put=kv_pb2.PutRequest(namespace="alone", key=f"k{i}", value=b"v"))
        for i in range(20)
    ]
    with grpc.insecure_channel(node.endpoint) as channel:
        reply = kv_pb2_grpc.KVStub(channel).MultiWrite(
            kv_pb2.MultiWriteRequest(writes=writes), timeout=30
        )
    indices = [r.put.index for r in reply.results]
    assert all(indices)
    assert len(set(indices)) == 20


class _MixedVersions(NoopReplicator):
    """A replicator whose other members may not all announce envelopes."""

    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(name, directory)
        self.all_announce = False

    def every_member_understands(self, feature: str) -> bool:
        return self.all_announce and feature == envelope.FEATURE


def test_a_member_that_does_not_announce_envelopes_holds_them_back(tmp_path: Path) -> None:
    """While a member has not announced envelopes (an older version), the
    writes of a MultiWrite each get their own entry; once every member has,
    they share entries again."""

    async def run() -> None:
        replicator = _MixedVersions("n1", tmp_path / "log")
        store = ShardStore(tmp_path)
        applier = Applier(store, replicator, tmp_path)
        applier.start()
        paths = Paths(
            NodeConfig(data_dir=tmp_path), replicator, applier, Lifecycle(), PeerChannels()
        )

        async def indices(round_: int) -> list[int]:
            gated = [frames.gate(_put(f"r{round_}-{i}"), LIMITS) for i in range(10)]
            outcomes = await paths.write_many(gated)
            assert all(isinstance(o, frame_pb2.FrameResult) for o in outcomes), outcomes
            return [o.index for o in outcomes if isinstance(o, frame_pb2.FrameResult)]

        try:
            assert len(set(await indices(1))) == 10
            replicator.all_announce = True
            assert len(set(await indices(2))) == 1
        finally:
            await replicator.close()
            await applier.close()
            store.close_all()

    asyncio.run(run())
