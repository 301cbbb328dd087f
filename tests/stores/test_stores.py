"""The stores' contracts (seeds 000, 001, 004), each against a single node and
a 3-node cluster: the seeds' semantics, escaping, schema marks, closing, and
the seeds' N=128 concurrent stress, on the cluster with the leader killed in
the middle of it (the client talks to a follower): every call returns, and
the final state is exactly what was acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from shardlite.node.client import Client, ClientError, ConditionFailedError
from shardlite.stores import (
    Checkpoint,
    CheckpointStore,
    ForeignIdentityError,
    Identity,
    InvalidIdError,
    MemoryStore,
    MissingIdentityError,
    NewerSchemaError,
    PositionStore,
    SchemaError,
    StoreClosedError,
)
from shardlite.stores.keys import record_key, record_parts
from tests.harness import wait_until
from tests.stores.conftest import CALL_TIMEOUT, Cluster, Target

N = 128

# Ids that must neither collide nor leave their store's prefix.
AWKWARD_IDS = ["a", "a/b", "a\x01", "a\x01\x01b", "nul\x00byte", "../x", "é", "a" * 900, "_schema"]


# -- CheckpointStore (seed 001) ---------------------------------------------------


def test_checkpoint_save_upserts_the_latest_load_delete_list(
    client: Client, namespace: str
) -> None:
    store = CheckpointStore(client, namespace=namespace)
    assert store.load("missing") is None
    store.delete("missing")  # a missing id is a no-op
    first = store.save(Checkpoint("e-2", b"one"))
    store.save(Checkpoint("e-1", b"x"))
    latest = store.save(Checkpoint("e-2", b"two"))
    assert latest.version > first.version
    loaded = store.load("e-2")
    assert loaded == Checkpoint("e-2", b"two", latest.version)
    assert store.list() == ["e-1", "e-2"]
    store.delete("e-1")
    assert store.list() == ["e-2"]
    assert store.load("e-1") is None


def test_checkpoint_ids_are_escaped_in_order_and_never_collide(
    client: Client, namespace: str
) -> None:
    store = CheckpointStore(client, namespace=namespace)
    for i, id in enumerate(AWKWARD_IDS):
        store.save(Checkpoint(id, str(i).encode()))
    for i, id in enumerate(AWKWARD_IDS):
        loaded = store.load(id)
        assert loaded is not None
        assert loaded.data == str(i).encode()
    # UTF-8 byte order of the ids themselves.
    assert store.list() == sorted(AWKWARD_IDS, key=lambda s: s.encode())
    with pytest.raises(InvalidIdError, match="non-empty"):
        store.save(Checkpoint("", b""))
    with pytest.raises(InvalidIdError, match="too long"):
        store.load("x" * 1100)


def test_migrate_is_idempotent_and_refuses_another_store_or_a_newer_schema(
    client: Client, namespace: str
) -> None:
    store = CheckpointStore(client, namespace=namespace)  # migrates
    mark = client.get("_schema", namespace=namespace)
    assert mark is not None
    assert store.migrate() == 1
    again = client.get("_schema", namespace=namespace)
    assert again == mark  # nothing written the second time
    with pytest.raises(SchemaError, match="holds a checkpoint store"):
        PositionStore(client, namespace=namespace)
    client.put("_schema", b'{"schema": 7, "store": "checkpoint"}', namespace=namespace)
    with pytest.raises(NewerSchemaError, match="version 7"):
        CheckpointStore(client, namespace=namespace)


# -- PositionStore (seed 004) -------------------------------------------------------


def test_position_load_of_a_missing_name_is_zero_false(client: Client, namespace: str) -> None:
    store = PositionStore(client, namespace=namespace)
    assert store.load("never") == (0, False)
    store.save("p", 41)
    store.save("p", 42)
    assert store.load("p") == (42, True)
    store.reset("p")
    store.reset("p")  # a missing name: no-op
    assert store.load("p") == (0, False)
    with pytest.raises(ValueError, match="outside"):
        store.save("p", -1)
    with pytest.raises(TypeError):
        store.save("p", "12")  # type: ignore[arg-type]


def test_position_names_are_streamed_in_order_page_by_page(client: Client, namespace: str) -> None:
    store = PositionStore(client, namespace=namespace)
    names = [f"n{i:03d}" for i in range(25)] + AWKWARD_IDS
    for i, name in enumerate(reversed(names)):
        store.save(name, i)
    streamed = store.names(page=4)
    assert next(streamed) == min(names, key=lambda s: s.encode())
    assert [*store.names(page=4)] == sorted(names, key=lambda s: s.encode())
    assert [*store.names()] == sorted(names, key=lambda s: s.encode())


# -- MemoryStore (seed 000) -------------------------------------------------------


def test_memory_is_per_identity_and_fails_closed(client: Client, namespace: str) -> None:
    store = MemoryStore(client, tenant="acme", namespace=namespace)
    alice = Identity("acme", "alice", "s1")
    bob = Identity("acme", "bob", "s1")
    store.save(alice, {"facts": ["tea"]})
    assert store.load(bob) is None
    loaded = store.load(alice)
    assert loaded is not None
    assert loaded.state == {"facts": ["tea"]}
    for missing in (Identity("acme", "", "s1"), Identity("acme", "alice", "")):
        with pytest.raises(MissingIdentityError):
            store.load(missing)
        with pytest.raises(MissingIdentityError):
            store.save(missing, {})
    with pytest.raises(ForeignIdentityError, match="tenant 'globex'"):
        store.load(Identity("globex", "alice", "s1"))
    with pytest.raises(MissingIdentityError):
        MemoryStore(client, tenant="", namespace=namespace)
    # A record that names another identity than its key is never served.
    key = record_key("m/", bob.parts)
    client.put(key, client.get(record_key("m/", alice.parts), namespace=namespace).value,  # type: ignore[union-attr]
               namespace=namespace)  # fmt: skip
    with pytest.raises(ForeignIdentityError, match="refusing"):
        store.load(bob)
    assert [*store.identities()] == [alice, bob]
    store.delete(alice)
    store.delete(alice)
    assert store.load(alice) is None


def test_memory_identity_parts_cannot_run_into_each_other(client: Client, namespace: str) -> None:
    store = MemoryStore(client, tenant="t", namespace=namespace)
    one, two = Identity("t", "a\x01\x01b", "c"), Identity("t", "a", "b\x01\x01c")
    store.save(one, {"n": 1})
    store.save(two, {"n": 2})
    assert store.load(one).state == {"n": 1}  # type: ignore[union-attr]
    assert store.load(two).state == {"n": 2}  # type: ignore[union-attr]
    assert record_parts("m/", record_key("m/", one.parts)) == one.parts


def test_memory_schema_moves_forward_only(client: Client, namespace: str) -> None:
    me = Identity("acme", "u", "s")
    v1 = MemoryStore(client, tenant="acme", namespace=namespace)
    v1.save(me, {"name": "Ada"})

    def add_turns(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "turns": state.get("turns", 0)}

    def rename(state: dict[str, Any]) -> dict[str, Any]:
        return {"display": state.get("name", state.get("display")), "turns": state["turns"]}

    v3 = MemoryStore(client, tenant="acme", namespace=namespace, migrate=False,
                     migrations=[add_turns, rename])  # fmt: skip
    migrated = v3.load(me)  # read forward, in memory
    assert migrated is not None
    assert (migrated.state, migrated.schema) == ({"display": "Ada", "turns": 0}, 1)
    assert v3.migrate() == 3  # rewrites the old record once
    after = client.get(record_key("m/", me.parts), namespace=namespace)
    assert after is not None
    assert v3.migrate() == 3
    assert client.get(record_key("m/", me.parts), namespace=namespace) == after  # idempotent
    assert v3.load(me).schema == 3  # type: ignore[union-attr]
    # The old program refuses both the namespace and the record.
    with pytest.raises(NewerSchemaError, match="version 3"):
        MemoryStore(client, tenant="acme", namespace=namespace)
    with pytest.raises(NewerSchemaError, match="version 3"):
        v1.load(me)


# -- closing ------------------------------------------------------------------------


def test_a_closed_store_fails_every_call(client: Client, namespace: str) -> None:
    me = Identity("t", "u", "s")
    checkpoints = CheckpointStore(client, namespace=namespace + "c")
    positions = PositionStore(client, namespace=namespace + "p")
    memory = MemoryStore(client, tenant="t", namespace=namespace + "m")
    calls: list[Callable[[], object]] = [
        lambda: checkpoints.save(Checkpoint("a", b"")),
        lambda: checkpoints.load("a"),
        lambda: checkpoints.delete("a"),
        checkpoints.list,
        checkpoints.migrate,
        lambda: positions.save("a", 1),
        lambda: positions.load("a"),
        lambda: positions.reset("a"),
        lambda: [*positions.names()],
        lambda: memory.save(me, {}),
        lambda: memory.load(me),
        lambda: memory.update(me, lambda state: {}),
        lambda: memory.delete(me),
        lambda: [*memory.identities()],
    ]
    with checkpoints, positions, memory:
        pass
    for call in calls:
        with pytest.raises(StoreClosedError, match="is closed; open a new one"):
            call()
    client.put("still", b"open", namespace=namespace)  # the client is not the store's


# -- the seeds' N=128 concurrent stress ----------------------------------------------


class Stress:
    """N threads at once on one store; on a cluster, the leader is killed once
    a third of the work is done. Every call must return without error."""

    def __init__(self, target: Target, work: Callable[[int], None], steps: int) -> None:
        self.target, self.work, self.steps = target, work, steps
        self.done = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.done += 1

    def run(self) -> str | None:
        def worker(n: int) -> None:
            try:
                self.work(n)
            except (ClientError, AssertionError) as exc:
                with self.lock:
                    self.errors.append(f"worker {n}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(N)]
        killed = None
        try:
            for t in threads:
                t.start()
            if self.target.kind == "cluster":
                wait_until(lambda: self.done >= self.steps // 3 or not any(
                    t.is_alive() for t in threads), 60, "a third of the work")  # fmt: skip
                killed = self.target.kill_other()
                with self.lock:
                    at_kill = self.done
                # In the middle of it: work was left to do after the kill.
                assert at_kill < self.steps, "the work finished before the kill"
        finally:
            for t in threads:
                t.join(120)
        assert not any(t.is_alive() for t in threads), "a worker did not return"
        assert self.errors == []
        return killed


@pytest.fixture
def heal(target: Target) -> Any:
    yield
    target.restart()


def test_checkpoint_store_under_128_threads(
    target: Target, client: Client, namespace: str, heal: None
) -> None:
    store = CheckpointStore(client, namespace=namespace)
    stress = Stress(target, lambda n: work(n), N * 6)

    def work(n: int) -> None:
        keep, drop = f"w{n:03d}-keep", f"w{n:03d}-drop"
        store.save(Checkpoint(keep, b"1"))
        stress.step()
        store.save(Checkpoint(drop, b"1"))
        stress.step()
        assert store.load(keep) == Checkpoint(keep, b"1", store.load(keep).version)  # type: ignore[union-attr]
        stress.step()
        store.save(Checkpoint(keep, f"final-{n}".encode()))
        stress.step()
        store.delete(drop)
        store.delete(drop)
        stress.step()
        store.save(Checkpoint("shared", f"{n}".encode()))
        assert store.load(drop) is None
        stress.step()

    stress.run()
    expected = sorted([f"w{n:03d}-keep" for n in range(N)] + ["shared"])
    assert store.list() == expected
    for n in range(N):
        assert store.load(f"w{n:03d}-keep").data == f"final-{n}".encode()  # type: ignore[union-attr]
    assert int(store.load("shared").data) in range(N)  # type: ignore[union-attr]


def test_position_store_under_128_threads(
    target: Target, client: Client, namespace: str, heal: None
) -> None:
    store = PositionStore(client, namespace=namespace)
    stress = Stress(target, lambda n: work(n), N * 5)

    def work(n: int) -> None:
        mine, gone = f"c{n:03d}", f"c{n:03d}-reset"
        for position in (1, 2, 3):
            store.save(mine, n * 10 + position)
            stress.step()
        store.save(gone, 5)
        store.reset(gone)
        assert store.load(gone) == (0, False)
        assert store.load(mine) == (n * 10 + 3, True)
        stress.step()
        store.save(mine, n * 10 + 9)
        stress.step()

    stress.run()
    assert [*store.names(page=50)] == [f"c{n:03d}" for n in range(N)]
    for n in range(N):
        assert store.load(f"c{n:03d}") == (n * 10 + 9, True)


def test_memory_store_under_128_threads(
    target: Target, client: Client, namespace: str, heal: None
) -> None:
    """Each thread keeps its own identity and adds to a shared one by
    compare-and-set (16 threads per shared identity): no update is lost."""
    store = MemoryStore(client, tenant="acme", namespace=namespace)
    shared = [Identity("acme", "shared", f"s{i}") for i in range(8)]
    stress = Stress(target, lambda n: work(n), N * 4)

    def work(n: int) -> None:
        mine = Identity("acme", f"u{n:03d}", "s")
        store.save(mine, {"n": n, "turns": []})
        stress.step()
        for turn in range(2):

            def add(state: dict[str, Any] | None, turn: int = turn) -> dict[str, Any]:
                assert state is not None
                return {**state, "turns": [*state["turns"], turn]}

            store.update(mine, add)
            stress.step()
        store.update(shared[n % 8], lambda s: {"who": sorted([*(s or {}).get("who", []), n])})
        stress.step()

    stress.run()
    for n in range(N):
        got = store.load(Identity("acme", f"u{n:03d}", "s"))
        assert got is not None
        assert got.state == {"n": n, "turns": [0, 1]}
    for i, identity in enumerate(shared):
        got = store.load(identity)
        assert got is not None
        assert got.state == {"who": [n for n in range(N) if n % 8 == i]}
    assert len([*store.identities()]) == N + 8


def test_a_failed_compare_and_set_is_a_condition_error(client: Client, namespace: str) -> None:
    store = MemoryStore(client, tenant="t", namespace=namespace)
    me = Identity("t", "u", "s")
    version = store.save(me, {"a": 1}, expected_version=0)
    with pytest.raises(ConditionFailedError):
        store.save(me, {"a": 2}, expected_version=0)
    store.save(me, {"a": 2}, expected_version=version)


def test_migrate_moves_records_written_before_any_mark(client: Client, namespace: str) -> None:
    me = Identity("t", "u", "s")
    MemoryStore(client, tenant="t", namespace=namespace, migrate=False).save(me, {"a": 1})

    def add_b(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "b": 2}

    v2 = MemoryStore(client, tenant="t", namespace=namespace, migrations=[add_b])
    stored = v2.load(me)
    assert stored is not None
    assert (stored.state, stored.schema) == ({"a": 1, "b": 2}, 2)


@pytest.mark.parametrize("target", ["cluster"], indirect=True)  # a node has no other member
def test_a_store_on_every_endpoint_rides_out_the_leader_it_talks_to_being_killed(
    target: Target, namespace: str, heal: None
) -> None:
    """With a Client of every member the store's writes go to the leader; kill
    that one mid-stress and the client moves on (same request ids)."""
    assert isinstance(target, Cluster)
    cluster = target.cluster
    with Client(list(cluster.addresses.values()), timeout=CALL_TIMEOUT) as every:
        store = PositionStore(every, namespace=namespace)
        done = [0]
        lock = threading.Lock()
        errors: list[str] = []

        def work(n: int) -> None:
            try:
                for position in range(1, 5):
                    store.save(f"c{n:03d}", position)
                    with lock:
                        done[0] += 1
            except ClientError as exc:
                with lock:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(N)]
        try:
            for t in threads:
                t.start()
            wait_until(lambda: done[0] >= N, 60, "a quarter of the work")
            leader = cluster.leader()
            assert cluster.addresses[leader] == every.endpoint
            cluster.nodes[leader].kill()
            with lock:
                assert done[0] < 4 * N, "the work finished before the kill"
        finally:
            for t in threads:
                t.join(120)
        assert errors == []
        assert done[0] == 4 * N
        assert [*store.names()] == [f"c{n:03d}" for n in range(N)]
        assert all(store.load(f"c{n:03d}") == (4, True) for n in range(N))
