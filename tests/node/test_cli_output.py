"""CLI polish (issue 13): `--output json` on client commands, `status
--cluster` as a table of every member, progress bars only on a terminal."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import LocalCluster, NodeProcess

FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")


def shardlite(
    endpoint: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", command, "--endpoint", endpoint, *rest],
        input=stdin, capture_output=True, timeout=60,
    )  # fmt: skip


def as_json(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_client_command_speaks_json(shared_node: NodeProcess, tmp_path: Path) -> None:
    e = shared_node.endpoint
    j = ("--output", "json", "-n", "js")
    put = as_json(shardlite(e, "put", "k", "-", *j, stdin=b"a\x00b\n"))
    assert isinstance(put, dict)
    assert set(put) == {"index", "version"}
    got = as_json(shardlite(e, "get", "k", *j))
    assert got == {"key": "k", "found": True, "value": base64.b64encode(b"a\x00b\n").decode(),
                   "version": put["version"]}  # fmt: skip
    missing = shardlite(e, "get", "nope", *j)
    assert missing.returncode == 1
    assert json.loads(missing.stdout) == {"key": "nope", "found": False}
    listed = shardlite(e, "ls", *j)
    assert [json.loads(line)["key"] for line in listed.stdout.splitlines()] == ["k"]
    names = as_json(shardlite(e, "namespaces", "--output", "json"))
    assert isinstance(names, dict)
    assert names["org"] == ""
    assert "js" in names["namespaces"]
    status = as_json(shardlite(e, "status", *j))
    assert isinstance(status, dict)
    assert status["replicator"] == "noop"
    assert isinstance(status["applied_index"], int)
    assert as_json(shardlite(e, "health", *j)) == {"status": "SERVING"}
    deleted = as_json(shardlite(e, "del", "k", *j))
    assert deleted == {"index": deleted["index"], "deleted": True}
    backup = tmp_path / "b.tar"
    made = as_json(shardlite(e, "backup", "--out", str(backup), *j))
    assert made == {"index": made["index"], "file": str(backup), "bytes": backup.stat().st_size}
    restored = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "restore", str(backup), "--data",
         str(tmp_path / "r"), "--output", "json"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert json.loads(restored.stdout) == {"index": made["index"], "data": str(tmp_path / "r")}
    # A refusal: the status code and message as JSON on stderr, exit 2.
    failed = shardlite(e, "put", "k", "w", "--expected-version", "99", *j)
    assert failed.returncode == 2
    reason = json.loads(failed.stderr)["error"]
    assert reason["code"] == "FAILED_PRECONDITION"
    assert "current version" in reason["message"]


def test_status_cluster_shows_every_member(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", 3, args=FAST)
    try:
        cluster.start()
        leader = cluster.leader()
        with cluster.client(leader) as c:
            c.put("k", b"v")
        table = shardlite(cluster.addresses["n2"], "status", "--cluster")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.decode().splitlines()
        assert header.split() == [
            "id", "address", "role", "term", "commit", "applied", "lag", "health",
        ]  # fmt: skip
        by_id = {row.split()[0]: row.split() for row in rows}
        assert sorted(by_id) == ["n1", "n2", "n3"]
        for name, row in by_id.items():
            assert row[1] == cluster.addresses[name]
            assert row[2] == ("leader" if name == leader else "follower")
            assert row[7] == "SERVING"
        rows_json = as_json(
            shardlite(cluster.addresses["n1"], "status", "--cluster", "--output", "json")
        )
        assert isinstance(rows_json, list)
        assert {r["id"] for r in rows_json} == {"n1", "n2", "n3"}
        assert all(isinstance(r["applied_index"], int) and r["lag"] >= 0 for r in rows_json)

        members = as_json(shardlite(cluster.addresses["n3"], "members", "list", "--output", "json"))
        assert sorted((m["name"], m["role"]) for m in members) == sorted(
            (n, "leader" if n == leader else "voter") for n in cluster.nodes
        )

        down = next(n for n in cluster.nodes if n != leader)
        cluster.nodes[down].kill()
        degraded = shardlite(cluster.addresses[leader], "status", "--cluster", "--output", "json",
                             "--timeout", "2")  # fmt: skip
        assert degraded.returncode == 1
        health = {r["id"]: r["health"] for r in json.loads(degraded.stdout)}
        assert health[down] == "UNAVAILABLE"
        assert {h for n, h in health.items() if n != down} == {"SERVING"}
    finally:
        cluster.stop()


def test_progress_bar_on_a_terminal_only(shared_node: NodeProcess, tmp_path: Path) -> None:
    with shared_node.client() as c:
        c.put("big", b"x" * (1 << 20), namespace="bar")
    quiet = shardlite(shared_node.endpoint, "backup", "--out", str(tmp_path / "quiet.tar"))
    assert quiet.returncode == 0
    assert quiet.stderr == b""
    # On a terminal (a pty as stderr) rich draws the bar there.
    leader, follower = pty.openpty()
    try:
        drawn = subprocess.run(
            [sys.executable, "-m", "shardlite.node.cli", "backup",
             "--endpoint", shared_node.endpoint, "--out", str(tmp_path / "tty.tar")],
            stdout=subprocess.PIPE, stderr=follower, timeout=60,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )  # fmt: skip
        os.close(follower)
        follower = -1
        screen = b""
        while True:
            try:
                block = os.read(leader, 65536)
            except OSError:
                break
            if not block:
                break
            screen += block
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert drawn.returncode == 0
    assert b"backup" in screen
    assert b"\xe2\x94\x81" in screen  # the bar's "━"
    assert b"MB" in screen or b"kB" in screen
