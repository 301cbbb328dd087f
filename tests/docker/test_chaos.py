"""The chaos harness against the docker-compose cluster: the same workload and the
same checks as tests/chaos, with container faults (the leader `docker kill`ed and
`docker start`ed, the leader cut off with `docker network disconnect`/`connect`).
The cluster is a private compose project (tests/docker/dockerlib.py), `down -v`'d
when the run ends, pass or fail."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scripts.chaos import SCENARIO_DIR, Scenario, run_scenario
from tests.docker.dockerlib import COMPOSE_LABEL, leftovers

SCENARIO = SCENARIO_DIR / "docker" / "leader-kill-partition.json"
# Two periods of the scenario: two leader kills and two partitions. Bounded: <= 90 s.
DURATION = min(float(os.environ.get("CHAOS_DOCKER_DURATION", "30")), 90.0)
SEED = 6 + int(os.environ.get("CHAOS_SEED", "0"))


@pytest.mark.timeout(300)
def test_leader_kills_and_a_partition_are_linearizable_and_lose_nothing(tmp_path: Path) -> None:
    scenario = Scenario.load(str(SCENARIO))
    started = time.monotonic()
    result = run_scenario(scenario, SEED, DURATION, base=tmp_path, backend="docker")
    report = result.report()
    print(f"{report}\n(wall time {time.monotonic() - started:.1f}s)")
    assert not leftovers(COMPOSE_LABEL), "the compose project was not removed"
    assert result.backend == "docker", report
    assert result.verdict is not None, report
    assert result.verdict.linearizable is True, report
    assert result.failures == [], report  # lost writes, shards, Subscribe streams, log
    assert result.ok, report
    assert result.counts["writes_ok"] > 100, report
    assert result.counts["reads_ok"] > 100, report
    # The faults really happened: every kill, restart, disconnect and heal.
    done = "\n".join(result.faults)
    for what in ("kill leader ->", "restart @victim ->", "isolate leader ->", "heal"):
        assert what in done, report
    assert "docker network disconnect" in done, report
    assert "failed:" not in done, report


def test_the_docker_backend_rejects_what_it_cannot_inject(tmp_path: Path) -> None:
    scenario = Scenario.load("partition-asymmetric")  # drop: needs the node's Faults service
    with pytest.raises(ValueError, match="docker backend cannot inject drop"):
        run_scenario(scenario, 1, 1, base=tmp_path, backend="docker")
