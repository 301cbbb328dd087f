"""Tiny real runs of the benchmark (1 s windows, 2 clients): the generator
against an in-process echo server and a single shardlite node, and the whole
command against the echo server, checking the JSON record it writes. Nothing
here asserts a speed; etcd is `make bench`'s, not CI's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts.bench import table
from scripts.bench_load import LoadSpec, key_name, measure, parse_mix
from scripts.bench_targets import EchoServer, ShardliteTarget, prefill
from shardlite.node.client import SERIALIZABLE, Client

ROOT = Path(__file__).resolve().parent.parent.parent
ALL_OPS = parse_mix("put,cas,delete,batch,get,sget")


def _check_measurement(result: dict[str, Any], watched: list[str]) -> None:
    assert result["ops"] > 0
    assert result["errors"] == 0, result["error_codes"]
    assert result["cas_conflicts"] == 0
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    processes = result["cpu_cores"]["processes"]
    for name in watched:
        assert processes[name] is not None
        assert processes[name] >= 0
    assert any(k.startswith("generator") for k in processes)
    assert result["processes"] == 1


def test_generator_against_an_in_process_echo_server() -> None:
    with EchoServer().in_thread() as endpoint:
        spec = LoadSpec(api="shardlite", endpoints=(endpoint,), clients=2, mix=ALL_OPS, keys=50)
        result = measure(spec, processes=1, warmup=0.2, window=1.0, watch={"echo": os.getpid()})
    _check_measurement(result, ["echo"])


def test_generator_against_a_single_shardlite_node(tmp_path: Path) -> None:
    target = ShardliteTarget(tmp_path, nodes=1)
    target.start()
    try:
        (endpoint,) = target.endpoints()
        spec = LoadSpec(
            api="shardlite", endpoints=(endpoint,), clients=2, mix=ALL_OPS, keys=30, batch_size=5
        )
        asyncio.run(prefill("shardlite", endpoint, spec))
        with Client(endpoint, namespace=spec.namespace) as client:
            entry = client.get(key_name(29), consistency=SERIALIZABLE)
        assert entry is not None
        assert len(entry.value) == spec.value_bytes
        result = measure(spec, processes=2, warmup=0.2, window=1.0, watch=target.pids())
        pids = target.pids()
    finally:
        target.stop()
    result["processes"] = 1  # two clients over two processes: one each
    _check_measurement(result, list(pids))


def test_bench_command_writes_a_record_of_interleaved_runs(tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    command = [
        sys.executable, "-m", "scripts.bench",
        "--targets", "echo", "--case", "put@2", "--case", "get=1,sget=1@2",
        "--reps", "2", "--warmup", "0.2", "--window", "0.5", "--keys", "20",
        "--out", str(out), "--no-plot", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["schema"] == 1
    assert set(record) >= {
        "started", "finished", "command", "machine", "config", "durability",
        "targets", "runs", "pairs", "ratios", "medians",
    }  # fmt: skip
    assert set(record["machine"]) >= {"nproc", "cpu_model", "ram_gib", "kernel", "python", "grpcio"}
    assert record["durability"] == {"echo": "nothing is stored"}
    # Repetitions interleave: every case once, then every case again.
    assert [(r["case"], r["rep"]) for r in record["runs"]] == [
        ("put-2", 1), ("get1+sget1-2", 1), ("put-2", 2), ("get1+sget1-2", 2),
    ]  # fmt: skip
    for run in record["runs"]:
        assert run["target"] == "echo"
        assert run["clients"] == 2
        assert run["window_s"] == 0.5
        assert set(run["latency_ms"]) == {"p50", "p99", "p999", "mean", "max"}
        assert run["errors"] == 0
        assert run["ops"] > 0
        assert run["ops_per_sec"] == round(run["ops"] / 0.5, 1)
        assert run["cpu_cores"]["processes"]["echo"] is not None
    assert {(m["case"], m["target"], m["runs"]) for m in record["medians"]} == {
        ("put-2", "echo", 2),
        ("get1+sget1-2", "echo", 2),
    }
    assert record["pairs"] == []
    assert record["ratios"] == []
    assert "| put-2 |" in done.stdout
    assert "- echo: nothing is stored" in done.stdout
    assert "| get1+sget1-2 |" in table(record)
    # The echo server's process was stopped with the command.
    (echo_pid,) = {run["pids"]["echo"] for run in record["runs"]}
    assert not Path(f"/proc/{echo_pid}").exists()
