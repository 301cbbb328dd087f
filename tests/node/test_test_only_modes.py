"""Test-only modes cannot be turned on by accident (issue 11, item 8): a
SHARDLITE_* variable never turns on --unsafe-stale-reads or
--fault-injection (an environment left over in a container or a shell
would silently break linearizability); the flag does, and the node warns on
every start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.chaos_docker import flags_to_env
from shardlite.node.cli import build_parser
from tests.harness import NodeProcess

TEST_ONLY_ENV = {"SHARDLITE_UNSAFE_STALE_READS": "1", "SHARDLITE_FAULT_INJECTION": "1"}


def test_the_environment_never_turns_test_only_modes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in TEST_ONLY_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("SHARDLITE_LEADER_WAIT", "3")  # ordinary flags still do
    args = build_parser().parse_args(["node"])
    assert args.unsafe_stale_reads is False
    assert args.fault_injection is False
    assert args.leader_wait == 3.0
    flagged = build_parser().parse_args(["node", "--unsafe-stale-reads", "--fault-injection"])
    assert flagged.unsafe_stale_reads is True
    assert flagged.fault_injection is True


def test_a_node_ignores_them_in_its_environment_and_says_so(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = start_node(env=TEST_ONLY_ENV)
    node.terminate()
    log = (tmp_path / "n1.log").read_text()
    assert "SHARDLITE_UNSAFE_STALE_READS is set but ignored" in log
    assert "SHARDLITE_FAULT_INJECTION is set but ignored" in log
    assert "UNSAFE" not in log.replace("SHARDLITE_UNSAFE_STALE_READS", "")


def test_the_flag_warns_on_every_start(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    for _ in range(2):
        node = start_node("--unsafe-stale-reads")
        node.terminate()
    log = (tmp_path / "n1.log").read_text()
    assert log.count("UNSAFE: --unsafe-stale-reads") == 2


def test_docker_chaos_refuses_to_pass_them_as_variables() -> None:
    with pytest.raises(ValueError, match="test-only"):
        flags_to_env(["--unsafe-stale-reads"])
    assert flags_to_env(["--leader-wait", "2"]) == {"SHARDLITE_LEADER_WAIT": "2"}
