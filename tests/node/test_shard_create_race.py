"""A shard being created while a read opens the same namespace (a Get, a
Subscribe or an outcome lookup, `use(create=False)`): the reader finds no
shard or a finished one, and neither side waits for the other's lock. Two
connections setting up one new file used to wait on each other until the
busy timeout: "database is locked" (the applier fail-stopped a node in a
docker chaos run, and the read held the event loop for the whole timeout)."""

from __future__ import annotations

import threading
from pathlib import Path

from shardlite.node.shards import ShardStore

NAMESPACES = 400
ROUNDS = 2


def test_reads_opening_a_shard_being_created_never_meet_a_lock(tmp_path: Path) -> None:
    errors: list[str] = []
    for round_ in range(ROUNDS):
        store = ShardStore(tmp_path / f"data{round_}", max_open=2 * NAMESPACES, busy_timeout_ms=300)
        created = threading.Event()

        def read_while_created(
            store: ShardStore = store, created: threading.Event = created
        ) -> None:
            while not created.is_set():
                for i in range(NAMESPACES):
                    try:
                        with store.use("", f"ns{i}", create=False):
                            pass
                    except Exception as exc:  # the failure this test is about
                        errors.append(f"read ns{i}: {exc!r}")

        reader = threading.Thread(target=read_while_created)
        reader.start()
        try:
            for i in range(NAMESPACES):
                try:
                    with store.use("", f"ns{i}", create=True) as shard:
                        assert shard is not None
                except Exception as exc:
                    errors.append(f"create ns{i}: {exc!r}")
        finally:
            created.set()
            reader.join(timeout=60)
        assert not reader.is_alive()
        assert errors == [], errors[:5]
        org_dir = store.path("", "ns0").parent
        # Only finished shards are left: no temporary file beside them.
        assert sorted(
            p.name for p in org_dir.iterdir() if not p.name.endswith(("-wal", "-shm"))
        ) == sorted(f"ns{i}.db" for i in range(NAMESPACES))
        store.close_all()


def test_a_setup_cut_short_by_a_crash_leaves_nothing_behind(tmp_path: Path) -> None:
    """The temporary files of a shard set up when the node crashed are removed
    at the next start; shards whose names look alike are kept."""
    store = ShardStore(tmp_path)
    with store.use("", "kept.db.new-1-2", create=True) as shard:
        assert shard is not None
    with store.use("", "ns", create=True) as shard:
        assert shard is not None
    store.close_all()
    org = store.path("", "ns").parent
    leftovers = [org / f"ns.db.new-4242-1397{suffix}" for suffix in ("", "-wal", "-shm")]
    for path in leftovers:
        path.write_bytes(b"half set up")

    reopened = ShardStore(tmp_path)

    assert not any(path.exists() for path in leftovers)
    assert sorted(p.name for p in org.iterdir() if p.name.endswith(".db")) == [
        "kept.db.new-1-2.db",
        "ns.db",
    ]
    with reopened.use("", "kept.db.new-1-2", create=False) as shard:
        assert shard is not None
    reopened.close_all()
