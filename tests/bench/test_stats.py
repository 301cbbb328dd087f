"""The benchmark's arithmetic on known numbers: percentiles, CPU from /proc,
the A/B pairing of runs and the ratios' medians."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from scripts.bench_stats import (
    CpuMeter,
    latency_summary,
    pair_runs,
    percentile,
    process_cpu_seconds,
    stat_cpu_ticks,
    summarise_pairs,
    summarise_target,
)


def test_percentiles_of_a_known_distribution() -> None:
    latencies = [ms / 1000 for ms in range(1, 1001)]  # 1 ms .. 1000 ms
    random.Random(7).shuffle(latencies)
    summary = latency_summary(latencies)
    assert summary == {"p50": 500.0, "p99": 990.0, "p999": 999.0, "mean": 500.5, "max": 1000.0}


def test_percentile_is_nearest_rank() -> None:
    ordered = [10.0, 20.0, 30.0, 40.0]
    assert percentile(ordered, 25) == 10.0
    assert percentile(ordered, 26) == 20.0
    assert percentile(ordered, 50) == 20.0
    assert percentile(ordered, 99.9) == 40.0
    assert percentile(ordered, 100) == 40.0
    assert percentile([5.0], 1) == 5.0
    assert percentile([], 50) == 0.0
    with pytest.raises(ValueError, match="not in"):
        percentile(ordered, 0)


def test_a_single_slow_op_shows_in_p999_not_p99() -> None:
    latencies = [0.001] * 999 + [2.0]
    summary = latency_summary(latencies)
    assert summary["p99"] == 1.0
    assert summary["p999"] == 1.0  # rank 999 of 1000
    assert summary["max"] == 2000.0
    assert latency_summary(latencies + [2.0] * 9)["p999"] == 2000.0


def test_no_latencies_summarise_to_zeros() -> None:
    assert latency_summary([]) == {"p50": 0.0, "p99": 0.0, "p999": 0.0, "mean": 0.0, "max": 0.0}


def test_stat_line_with_parentheses_in_the_command_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    line = "4242 (a (b) c) S 1 1 1 0 -1 4194560 10 0 0 0 123 45 0 0 20 0 1 0 100 0 0"
    assert stat_cpu_ticks(line) == 168


def test_cpu_of_a_busy_process_grows_and_a_gone_one_reads_none() -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.monotonic() + 30
    while process_cpu_seconds(os.getpid()) == before:  # burn until a tick is charged
        assert time.monotonic() < deadline, "no CPU tick charged in 30 s"
        sum(range(10_000))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    assert process_cpu_seconds(child.pid) is None


def test_cpu_meter_reports_cores_per_process_and_none_for_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        meter = CpuMeter({"me": os.getpid(), "child": child.pid})
        meter.start()
        child.kill()
        child.wait(30)
        cpu = meter.stop(1.0)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert cpu["processes"]["child"] is None
    assert cpu["processes"]["me"] is not None
    assert cpu["processes"]["me"] >= 0
    assert cpu["machine_busy_cores"] is not None


def _run(
    target: str, case: str, rep: int, rate: float, p50: float, p99: float
) -> dict[str, object]:
    return {
        "target": target,
        "case": case,
        "rep": rep,
        "ops_per_sec": rate,
        "errors": 0,
        "latency_ms": {"p50": p50, "p99": p99},
    }


RUNS = [
    _run("shardlite", "put-64", 1, 100.0, 10.0, 40.0),
    _run("etcd", "put-64", 1, 200.0, 5.0, 20.0),
    _run("shardlite", "put-64", 2, 300.0, 4.0, 10.0),
    _run("etcd", "put-64", 2, 200.0, 8.0, 20.0),
    _run("shardlite", "put-64", 3, 250.0, 6.0, 30.0),
    _run("etcd", "put-64", 3, 250.0, 6.0, 30.0),
    _run("shardlite", "get-64", 1, 400.0, 1.0, 2.0),  # no etcd partner: not paired
    _run("etcd", "put-1", 1, 50.0, 1.0, 2.0),  # no shardlite partner
]


def test_runs_pair_by_case_and_repetition_with_their_ratios() -> None:
    pairs = pair_runs(RUNS, "shardlite", "etcd")
    assert [(p["case"], p["rep"]) for p in pairs] == [("put-64", 1), ("put-64", 2), ("put-64", 3)]
    assert [p["throughput_ratio"] for p in pairs] == [0.5, 1.5, 1.0]
    assert [p["p50_ratio"] for p in pairs] == [2.0, 0.5, 1.0]
    assert [p["p99_ratio"] for p in pairs] == [2.0, 0.5, 1.0]


def test_ratio_summary_is_the_median_of_the_pairs_not_the_ratio_of_medians() -> None:
    runs = [
        _run("shardlite", "c", 1, 100.0, 1.0, 1.0),
        _run("etcd", "c", 1, 400.0, 1.0, 1.0),  # ratio 0.25
        _run("shardlite", "c", 2, 300.0, 1.0, 1.0),
        _run("etcd", "c", 2, 100.0, 1.0, 1.0),  # ratio 3.0
        _run("shardlite", "c", 3, 200.0, 1.0, 1.0),
        _run("etcd", "c", 3, 250.0, 1.0, 1.0),  # ratio 0.8
    ]
    (summary,) = summarise_pairs(pair_runs(runs, "shardlite", "etcd"))
    assert summary["pairs"] == 3
    assert summary["throughput_ratio"] == {"median": 0.8, "min": 0.25, "max": 3.0}
    # With three pairs the ratio of the medians (200/250) is 0.8 too; a 4th tells them apart.
    runs += [_run("shardlite", "c", 4, 200.0, 1.0, 1.0), _run("etcd", "c", 4, 100.0, 1.0, 1.0)]
    (summary,) = summarise_pairs(pair_runs(runs, "shardlite", "etcd"))
    assert summary["throughput_ratio"]["median"] == 1.4  # median of 0.25, 0.8, 2.0, 3.0
    medians = summarise_target(runs)
    assert medians[("c", "shardlite")]["ops_per_sec"] == 200.0
    assert medians[("c", "etcd")]["ops_per_sec"] == 175.0  # 200/175 = 1.14, not 1.4


def test_a_zero_rate_gives_no_ratio_rather_than_a_crash() -> None:
    runs = [_run("shardlite", "c", 1, 10.0, 1.0, 1.0), _run("etcd", "c", 1, 0.0, 0.0, 0.0)]
    (pair,) = pair_runs(runs, "shardlite", "etcd")
    assert pair["throughput_ratio"] is None
    (summary,) = summarise_pairs([pair])
    assert summary["throughput_ratio"] is None


def test_target_medians_and_ranges() -> None:
    medians = summarise_target(RUNS)
    put = medians[("put-64", "shardlite")]
    assert put["runs"] == 3
    assert (put["ops_per_sec"], put["ops_per_sec_min"], put["ops_per_sec_max"]) == (250, 100, 300)
    assert (put["p50"], put["p99"]) == (6.0, 30.0)
