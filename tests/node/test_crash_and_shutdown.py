"""Durability: SIGKILL in the middle of a write load loses nothing that was
acknowledged; SIGTERM finishes or refuses in-flight writes and checkpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from shardlite.node.client import Client, ClientError, Put
from tests.harness import NodeProcess, wait_until

WRITERS = 16


def _load(
    endpoint: str, n: int, acked: dict[str, int], stop: threading.Event, failures: list[str]
) -> None:
    """Write unique keys (and overwrite one hot key) until stopped or the node dies."""
    with Client(endpoint, namespace=f"load{n % 4}", timeout=2) as c:
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                if i % 5 == 4:
                    results = c.batch([Put(f"w{n}-{i}a", b"x"), Put(f"w{n}-{i}b", b"y")])
                    acked[f"load{n % 4}/w{n}-{i}a"] = results[0].version
                    acked[f"load{n % 4}/w{n}-{i}b"] = results[1].version
                else:
                    acked[f"load{n % 4}/w{n}-{i}"] = c.put(f"w{n}-{i}", b"v" * 100).version
            except ClientError as exc:
                failures.append(exc.code.name)
                return


def _run_load_until(
    endpoint: str, acked: dict[str, int], enough: int, then: Callable[[], None]
) -> list[str]:
    stop = threading.Event()
    failures: list[str] = []
    threads = [
        threading.Thread(target=_load, args=(endpoint, n, acked, stop, failures))
        for n in range(WRITERS)
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= enough, 60, f"{enough} acknowledged writes")
        then()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return failures


def _assert_all_present(node: NodeProcess, acked: dict[str, int]) -> None:
    with node.client() as c:
        for ns in ("load0", "load1", "load2", "load3"):
            stored = {e.key: e.version for e in c.list(namespace=ns)}
            for name, version in acked.items():
                if name.startswith(ns + "/"):
                    key = name.split("/", 1)[1]
                    assert stored.get(key) == version, f"acknowledged {name}@{version} lost"


def test_sigkill_mid_load_loses_no_acknowledged_write(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    acked: dict[str, int] = {}
    failures = _run_load_until(node.endpoint, acked, 1500, node.kill)
    # The writers were cut off mid-flight, not finished.
    assert failures, "no write was in flight when the node was killed"
    assert set(failures) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}

    restarted = start_node(data_dir=node.data_dir)
    _assert_all_present(restarted, acked)
    status = restarted.client().status()
    assert status.applied_index == status.commit_index
    assert status.applied_index >= max(acked.values())


def test_restart_after_kill_replays_idempotently_twice(
    start_node: Callable[..., NodeProcess],
) -> None:
    """A second crash right after recovery (before any new write) changes nothing."""
    node = start_node()
    acked: dict[str, int] = {}
    _run_load_until(node.endpoint, acked, 500, node.kill)
    again = start_node(data_dir=node.data_dir)
    again.kill()
    third = start_node(data_dir=node.data_dir)
    _assert_all_present(third, acked)


def test_sigterm_finishes_in_flight_writes_and_checkpoints(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    acked: dict[str, int] = {}
    exit_code: list[int] = []
    failures = _run_load_until(
        node.endpoint, acked, 800, lambda: exit_code.append(node.terminate(timeout=30))
    )
    assert exit_code == [0], node.log_tail()
    # A call racing the transport's shutdown can see CANCELLED; neither is an ack.
    assert set(failures) <= {"UNAVAILABLE", "CANCELLED"}, failures
    assert "stopped at applied index" in node.log_tail()
    # Shards were checkpointed and closed: no WAL content is left behind.
    for wal in Path(node.data_dir, "shards").rglob("*.db-wal"):
        assert wal.stat().st_size == 0, f"{wal} was not checkpointed"

    restarted = start_node(data_dir=node.data_dir)
    _assert_all_present(restarted, acked)


def test_writes_after_shutdown_began_are_refused_cleanly(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("--shutdown-grace", "5")
    c = Client(node.endpoint, timeout=1)
    c.put("before", b"v")
    code = node.terminate()
    assert code == 0
    with pytest.raises(ClientError) as failure:
        c.put("after", b"v")
    assert failure.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_data_dir_cannot_silently_change_kind(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """Single-node data started as a cluster member (or the reverse) would number
    new frames below what the shards already applied: refused with a reason."""
    import subprocess
    import sys

    node = start_node()
    with node.client() as c:
        for i in range(5):
            c.put(f"k{i}", b"v")
    node.terminate()
    as_member = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "node", "--id", "n1",
         "--data", str(node.data_dir), "--listen", "127.0.0.1:0", "--peers", "n1=127.0.0.1:1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert as_member.returncode == 2
    assert b"holds a single node's data" in as_member.stderr
    (tmp_path / "member" / "raft").mkdir(parents=True)
    as_single = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "node", "--data", str(tmp_path / "member"),
         "--listen", "127.0.0.1:0"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert as_single.returncode == 2
    assert b"belongs to a cluster member" in as_single.stderr
