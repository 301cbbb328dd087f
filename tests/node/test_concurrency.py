"""128 concurrent clients on overlapping keys: the node's final state is what
applying the acknowledged writes serially in index order gives."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import grpc

from shardlite.node.client import Client, ClientError, Delete, Put
from tests.harness import NodeProcess

CLIENTS = 128
OPS_PER_CLIENT = 20
KEYS = [f"hot{i}" for i in range(12)]


@dataclass(frozen=True)
class Acked:
    index: int
    ops: tuple[tuple[str, bytes | None], ...]  # (key, value) or (key, None) for a delete


def _client_loop(endpoint: str, n: int, acked: list[Acked], errors: list[str]) -> None:
    rng = random.Random(n)
    with Client(endpoint, namespace="contended", timeout=30) as c:
        for i in range(OPS_PER_CLIENT):
            token = f"c{n}-{i}".encode()
            key = rng.choice(KEYS)
            kind = rng.random()
            try:
                if kind < 0.4:
                    r = c.put(key, token)
                    acked.append(Acked(r.index, ((key, token),)))
                elif kind < 0.6:
                    current = c.get(key)
                    version = current.version if current else 0
                    r = c.put(key, token, expected_version=version)
                    acked.append(Acked(r.index, ((key, token),)))
                elif kind < 0.7:
                    r = c.delete(key)
                    acked.append(Acked(r.index, ((key, None),)))
                else:
                    other = rng.choice([k for k in KEYS if k != key])
                    results = c.batch([Put(key, token), Put(other, token), Delete("absent")])
                    acked.append(Acked(results[0].index, ((key, token), (other, token))))
            except ClientError as exc:
                if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                    errors.append(str(exc))


def test_concurrent_writers_match_a_serial_order(shared_node: NodeProcess) -> None:
    acked: list[Acked] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_client_loop, args=(shared_node.endpoint, n, acked, errors))
        for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert errors == []
    assert len(acked) > CLIENTS * OPS_PER_CLIENT // 2

    # Each acknowledged write has its own index (a batch shares one).
    indices = [a.index for a in acked]
    assert len(set(indices)) == len(indices)

    model: dict[str, tuple[bytes, int]] = {}
    for write in sorted(acked, key=lambda a: a.index):
        for key, value in write.ops:
            if value is None:
                model.pop(key, None)
            else:
                model[key] = (value, write.index)

    with shared_node.client(namespace="contended") as c:
        actual = {e.key: (e.value, e.version) for e in c.list()}
    assert actual == model


def test_batches_are_never_half_applied(shared_node: NodeProcess) -> None:
    """Readers racing batch writers never see one half of a batch."""
    stop = threading.Event()
    torn: list[str] = []

    def writer(n: int) -> None:
        with Client(shared_node.endpoint, namespace="pairs") as c:
            for i in range(60):
                token = f"{n}-{i}".encode()
                c.batch([Put("left", token), Put("right", token)])

    def reader() -> None:
        with Client(shared_node.endpoint, namespace="pairs") as c:
            for _ in range(2000):
                if stop.is_set():
                    return
                entries = {e.key: e for e in c.list()}
                if entries and entries["left"].version != entries["right"].version:
                    torn.append(f"{entries['left']} vs {entries['right']}")

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(60)
    assert torn == []
