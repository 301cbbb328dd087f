"""Structured logs of real node processes (issue 13, "Logs"): JSON lines in
containers, readable lines locally, node id and term on every line, the
request's context on the lines a request causes, never a value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from shardlite.node.client import ClientError
from tests.harness import LocalCluster, NodeProcess, wait_until


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        lines.append(entry)
    return lines


def test_cluster_lines_are_json_with_node_id_and_the_elections_term(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, args=("--log-format", "json"))
    try:
        cluster.start()
        leader = cluster.leader()
        target = next(n for n in cluster.nodes if n != leader)
        with cluster.client(leader, timeout=10) as c:
            c.put("k", b"v")
            assert c.transfer_leader(target) == target
        cluster.leader(timeout=15)
    finally:
        cluster.stop()

    for name in cluster.nodes:
        lines = json_lines(tmp_path / f"{name}.log")
        assert lines, name
        for entry in lines:
            assert entry["node"] == name, entry
            assert {"ts", "level", "logger", "msg"} <= entry.keys(), entry
            assert isinstance(entry.get("term"), int), entry
        # The founding members' membership, as each applied it.
        changes = [e for e in lines if e["msg"] == "membership changed"]
        assert {e["member"] for e in changes} >= set(cluster.nodes), name
        assert all(e["change"] == "add-voter" for e in changes)

    won = [e for e in json_lines(tmp_path / f"{leader}.log") if e["msg"] == "election won"]
    assert won
    assert all(e["term"] >= 1 for e in won)
    # The transfer: the target won an election at a later term, and everyone
    # saw the leader change to it.
    target_won = [e for e in json_lines(tmp_path / f"{target}.log") if e["msg"] == "election won"]
    assert target_won
    assert target_won[-1]["term"] > won[-1]["term"]
    for name in cluster.nodes:
        changed = [e for e in json_lines(tmp_path / f"{name}.log") if e["msg"] == "leader changed"]
        assert changed[-1]["leader"] == target, (name, changed)
        assert changed[-1]["term"] == target_won[-1]["term"]


def test_a_failed_request_logs_its_org_namespace_method_and_request_id(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = start_node("--log-format", "json", "--log-level", "DEBUG", "--max-value-bytes", "64")
    secret = b"SECRET-VALUE-" * 10
    with (
        node.client(timeout=10, org="acme", namespace="orders") as c,
        pytest.raises(ClientError) as failed,
    ):
        c.put("the-key", secret)
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    log = tmp_path / "n1.log"

    def failure_logged() -> bool:
        return any(e["msg"] == "request failed" for e in json_lines(log))

    wait_until(failure_logged, 10, "the failure's log line")
    (line,) = [e for e in json_lines(log) if e["msg"] == "request failed"]
    assert line["method"] == "KV/Put"
    assert line["org"] == "acme"
    assert line["namespace"] == "orders"
    assert line["code"] == "INVALID_ARGUMENT"
    client_id, _, seq = line["request_id"].rpartition(":")
    assert client_id, line
    assert seq.isdigit(), line
    assert line["node"] == "n1"
    assert "SECRET-VALUE" not in log.read_text()


def test_text_lines_for_people(start_node: Callable[..., NodeProcess], tmp_path: Path) -> None:
    node = start_node()
    node.terminate()
    text = (tmp_path / "n1.log").read_text()
    serving = next(line for line in text.splitlines() if "serving clients on" in line)
    assert "[INFO" in serving
    assert "node=n1" in serving
    assert not serving.startswith("{")  # not JSON
