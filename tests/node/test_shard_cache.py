"""The open-shard cache: a cap and idle eviction, with every write succeeding."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.harness import NodeProcess, wait_until


def test_hundred_namespaces_with_a_cap_of_eight(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("--shard-cache-size", "8")
    c = node.client(timeout=30)
    peak = 0
    for n in range(100):
        c.put("k", f"v{n}".encode(), namespace=f"ns{n:03d}")
        peak = max(peak, c.status().open_shards)
    assert peak <= 8
    assert c.namespaces() == [f"ns{n:03d}" for n in range(100)]
    # Every shard reopens with its data after eviction.
    for n in range(100):
        entry = c.get("k", namespace=f"ns{n:03d}")
        assert entry is not None
        assert entry.value == f"v{n}".encode()
    assert c.status().open_shards <= 8


def test_concurrent_writes_across_many_shards_with_a_small_cap(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--shard-cache-size", "8")
    errors: list[Exception] = []

    def write(t: int) -> None:
        try:
            with node.client(timeout=30) as c:
                for n in range(25):
                    c.put(f"t{t}", b"v", namespace=f"ns{(t * 25 + n) % 100}")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with node.client() as c:
        assert len(c.namespaces()) == 100
        assert c.status().open_shards <= 8


def test_idle_shards_are_closed(start_node: Callable[..., NodeProcess]) -> None:
    # Flags also come from SHARDLITE_* variables.
    node = start_node(env={"SHARDLITE_SHARD_IDLE_SECONDS": "0.5"})
    c = node.client()
    for n in range(5):
        c.put("k", b"v", namespace=f"idle{n}")
    assert c.status().open_shards == 5
    wait_until(lambda: c.status().open_shards == 0, 15, "idle shards to close")
    entry = c.get("k", namespace="idle3")
    assert entry is not None
    assert entry.value == b"v"
