"""The `shardlite` command line against a real node."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.harness import NodeProcess


def shardlite(
    node: NodeProcess, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", command, "--endpoint", node.endpoint, *rest],
        input=stdin, capture_output=True, timeout=60, env=env,
    )  # fmt: skip


def test_put_get_del_ls_round_trip(shared_node: NodeProcess) -> None:
    put = shardlite(shared_node, "put", "-n", "cli", "greeting", "hello")
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith(b"OK index=")
    got = shardlite(shared_node, "get", "-n", "cli", "greeting", "--show-version")
    assert got.returncode == 0
    version_line, value = got.stdout.decode().splitlines()
    assert version_line.startswith("version=")
    assert value == "hello"
    shardlite(shared_node, "put", "-n", "cli", "other", "-", stdin=b"from stdin")
    listing = shardlite(shared_node, "ls", "-n", "cli")
    assert [line.split("\t")[::2] for line in listing.stdout.decode().splitlines()] == [
        ["greeting", "hello"],
        ["other", "from stdin"],
    ]
    keys = shardlite(shared_node, "ls", "-n", "cli", "gr", "--keys-only")
    assert keys.stdout == b"greeting\n"
    deleted = shardlite(shared_node, "del", "-n", "cli", "greeting")
    assert b"deleted=yes" in deleted.stdout
    missing = shardlite(shared_node, "get", "-n", "cli", "greeting")
    assert missing.returncode == 1
    assert b"not found" in missing.stderr


def test_cas_conflict_exits_nonzero_with_the_reason(shared_node: NodeProcess) -> None:
    shardlite(shared_node, "put", "-n", "cli-cas", "k", "v")
    failed = shardlite(shared_node, "put", "-n", "cli-cas", "k", "w", "--expected-version", "0")
    assert failed.returncode == 2
    assert b"FAILED_PRECONDITION" in failed.stderr
    assert b"current version" in failed.stderr


def test_bad_namespace_exits_nonzero_with_a_clear_message(shared_node: NodeProcess) -> None:
    failed = shardlite(shared_node, "put", "-n", "../etc", "k", "v")
    assert failed.returncode == 2
    assert failed.stderr.startswith(b"error: INVALID_ARGUMENT: namespace '../etc' is invalid")


def test_unreachable_endpoint_fails_fast(shared_node: NodeProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "status", "--endpoint", "127.0.0.1:1",
         "--timeout", "1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"UNAVAILABLE" in result.stderr or b"DEADLINE_EXCEEDED" in result.stderr


def test_status_namespaces_and_watch(shared_node: NodeProcess) -> None:
    written = shardlite(shared_node, "put", "--org", "cliorg", "-n", "w", "k", "v")
    index = int(written.stdout.split()[1].split(b"=")[1])
    status = shardlite(shared_node, "status")
    assert b"replicator     noop" in status.stdout
    names = shardlite(shared_node, "namespaces", "--org", "cliorg")
    assert names.stdout == b"w\n"
    watched = shardlite(shared_node, "watch", "--from", str(index), "--count", "1")
    line = json.loads(watched.stdout)
    assert line == {
        "index": index,
        "org": "cliorg",
        "namespace": "w",
        "ops": [{"put": "k", "value": "v"}],
        "outcome": "APPLIED",
        "result": {"index": str(index), "results": [{"version": str(index)}]},
    }


def test_watch_shows_a_failed_put_as_failed(shared_node: NodeProcess) -> None:
    """The issue's new user: a put refused with FAILED_PRECONDITION must not look
    like a write that happened."""
    shardlite(shared_node, "put", "-n", "wf", "greeting", "hello")
    failed = shardlite(
        shared_node, "put", "-n", "wf", "greeting", "again", "--expected-version", "99"
    )
    assert failed.returncode != 0
    status = shardlite(shared_node, "status").stdout.decode()
    last = int(next(x for x in status.splitlines() if x.startswith("applied_index")).split()[1])
    watched = shardlite(shared_node, "watch", "--from", str(last), "--count", "1")
    line = json.loads(watched.stdout)
    assert line["ops"] == [{"put": "greeting", "value": "again"}]
    assert line["outcome"] == "CONDITION_FAILED"
    assert line["result"]["failedKey"] == "greeting"
    assert line["result"]["failedExpected"] == "99"


def test_endpoint_from_the_environment(shared_node: NodeProcess) -> None:
    env = dict(os.environ, SHARDLITE_ENDPOINT=shared_node.endpoint)
    result = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "put", "-n", "env", "k", "v"],
        capture_output=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_health_command(shared_node: NodeProcess) -> None:
    ok = shardlite(shared_node, "health")
    assert ok.returncode == 0
    assert ok.stdout == b"SERVING\n"
    down = subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", "health", "--endpoint", "127.0.0.1:1",
         "--timeout", "1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert down.returncode == 1
    assert b"unhealthy" in down.stderr
