"""What a new user hit in ten minutes with the CLI (issue 14), each fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.harness import NodeProcess, free_ports
from tests.node.test_cli import shardlite


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", *args],
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_ls_escapes_tabs_newlines_and_nuls_one_line_per_key(shared_node: NodeProcess) -> None:
    value = b"a\tb\nc\x00d\\e\xff"
    shardlite(shared_node, "put", "-n", "escapes", "k", "-", stdin=value)
    listing = shardlite(shared_node, "ls", "-n", "escapes")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.decode().splitlines()
    assert len(lines) == 1
    key, _, shown = lines[0].split("\t")
    assert key == "k"
    assert shown == r"a\tb\nc\x00d\\e\xff"


def test_get_writes_a_binary_value_exactly(shared_node: NodeProcess) -> None:
    value = bytes(range(256))
    shardlite(shared_node, "put", "-n", "binary", "blob", "-", stdin=value)
    got = shardlite(shared_node, "get", "-n", "binary", "blob")
    assert got.returncode == 0
    assert got.stdout == value  # no newline added when stdout is not a terminal


def test_a_negative_limit_says_what_is_allowed(shared_node: NodeProcess) -> None:
    listing = shardlite(shared_node, "ls", "--limit", "-1")
    assert listing.returncode == 2
    assert b"must be 0 or more, not -1" in listing.stderr


def test_per_request_values_never_come_from_the_environment(shared_node: NodeProcess) -> None:
    env = {**os.environ, "SHARDLITE_EXPECTED_VERSION": "12345"}
    put = shardlite(shared_node, "put", "-n", "env", "k", "v", env=env)
    assert put.returncode == 0, put.stderr  # a plain put, not a compare-and-set


def test_a_bad_variable_is_a_clear_error_not_a_traceback(shared_node: NodeProcess) -> None:
    env = {**os.environ, "SHARDLITE_TIMEOUT": "abc"}
    status = shardlite(shared_node, "status", env=env)
    assert status.returncode == 2
    assert b"Traceback" not in status.stderr
    assert b"SHARDLITE_TIMEOUT='abc'" in status.stderr


def test_help_shows_the_defaults() -> None:
    helped = _run("get", "--help")
    assert helped.returncode == 0
    assert b"127.0.0.1:7001" in helped.stdout


def test_a_malformed_endpoint_fails_at_once() -> None:
    started = time.monotonic()
    got = _run("get", "k", "--endpoint", "27310")
    assert got.returncode == 2
    assert b"not host:port" in got.stderr
    assert time.monotonic() - started < 10


def test_a_dead_endpoint_says_it_retries() -> None:
    (port,) = free_ports(1)
    got = _run("get", "k", "--endpoint", f"127.0.0.1:{port}", "--timeout", "1")
    assert got.returncode == 2
    assert b"retrying for up to 1s" in got.stderr
    assert b"UNAVAILABLE" in got.stderr


def test_watch_from_a_future_index_says_it_waits(shared_node: NodeProcess) -> None:
    watching = subprocess.Popen(
        [sys.executable, "-m", "shardlite.node.cli", "watch", "--endpoint", shared_node.endpoint,
         "--from", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert watching.stderr is not None
        line = watching.stderr.readline()  # the watch waits: it says so first
        assert b"waiting for index 1000000: the log is at" in line
    finally:
        watching.kill()
        watching.wait(10)
        if watching.stderr is not None:
            watching.stderr.close()


def test_members_on_a_single_node_says_it_runs_alone(shared_node: NodeProcess) -> None:
    members = shardlite(shared_node, "members", "list")
    assert members.returncode == 2
    assert b"UNIMPLEMENTED" not in members.stderr
    assert b"runs alone" in members.stderr
