"""The printed table: per case each target's medians, and the ratios of the
pairs (median and range)."""

from __future__ import annotations

from typing import Any

from scripts.bench import add_summary, cpu_table, table


def _run(target: str, case: str, rep: int, rate: float, p99: float) -> dict[str, Any]:
    return {
        "target": target,
        "case": case,
        "mix": "put",
        "clients": 64,
        "rep": rep,
        "ops_per_sec": rate,
        "errors": 0,
        "latency_ms": {"p50": p99 / 4, "p99": p99},
    }


def test_table_shows_medians_and_pairwise_ratios() -> None:
    record: dict[str, Any] = {
        "config": {"targets": ["shardlite", "etcd", "echo"]},
        "runs": [
            _run("shardlite", "put-64", 1, 1000.0, 40.0),
            _run("etcd", "put-64", 1, 2000.0, 20.0),
            _run("echo", "put-64", 1, 4000.0, 10.0),
            _run("shardlite", "put-64", 2, 3000.0, 20.0),
            _run("etcd", "put-64", 2, 1000.0, 40.0),
            _run("echo", "put-64", 2, 3000.0, 10.0),
        ],
    }
    add_summary(record)
    lines = table(record).splitlines()
    assert lines[0] == (
        "| case | shardlite | etcd | echo | shardlite/etcd ops/s | shardlite/etcd p99 "
        "| shardlite/echo ops/s |"
    )
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "put-64"
    assert cells[1] == "2,000/s (1,000-3,000), p50 7.5 ms, p99 30.0 ms"
    assert cells[4] == "1.75 (0.50-3.00)"  # pairs 1000/2000 and 3000/1000
    assert cells[5] == "1.25 (0.50-2.00)"  # p99 40/20 and 20/40
    assert cells[6] == "0.62 (0.25-1.00)"  # 1000/4000 and 3000/3000


def test_cpu_table_names_the_leader_of_each_run() -> None:
    def run(rep: int, leader: str, cores: dict[str, float]) -> dict[str, Any]:
        processes: dict[str, float | None] = {**cores, "generator0": 0.2, "generator1": 0.3}
        return {
            **_run("shardlite", "put-64", rep, 100.0, 1.0),
            "leader": leader,
            "cpu_cores": {
                "processes": processes,
                "generator_total": 0.5,
                "machine_busy_cores": 1.9,
            },
        }

    record: dict[str, Any] = {
        "runs": [
            run(1, "n1", {"n1": 0.8, "n2": 0.3, "n3": 0.4}),
            run(2, "n2", {"n1": 0.2, "n2": 1.0, "n3": 0.3}),  # the leader moved
        ]
    }

    row = cpu_table(record).splitlines()[2]
    assert row == "| put-64 | shardlite | 0.90 | 0.25 / 0.35 | 0.50 | 1.90 |"
