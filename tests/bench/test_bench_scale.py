"""Each scenario of scripts/bench_scale.py on a tiny size, against real node
processes: the record's shape, and that what it measured happened (the
follower did catch up by a snapshot, the restarted node answered with the
value written, every node opened the shards). Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from scripts.bench_load import key_name, measure
from scripts.bench_scale import (
    MB,
    SPREAD_API,
    CatchupParams,
    Load,
    OverloadParams,
    RestartParams,
    ShardsParams,
    SpreadSpec,
    _size,
    evaluate,
    main,
    put_each,
    run,
    run_catchup,
    run_overload,
    run_shards,
    spread_namespace,
    tables,
)
from scripts.bench_targets import ShardliteTarget
from shardlite.node.client import SERIALIZABLE, Client

TINY_LOAD = Load(processes=1, warmup=0.2, window=0.5)


def _check_run(run: dict[str, Any]) -> None:
    assert run["ops"] > 0
    assert run["errors"] == 0, run["error_codes"]
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"]


def test_spread_ops_write_to_every_namespace(tmp_path: Path) -> None:
    target = ShardliteTarget(tmp_path, nodes=1)
    target.start()
    try:
        (endpoint,) = target.endpoints()
        names = [spread_namespace("sp", i) for i in range(4)]
        asyncio.run(put_each(endpoint, names, key_name(0), b"first", concurrency=2))
        with Client(endpoint) as client:
            before = {
                n: client.get(key_name(0), namespace=n, consistency=SERIALIZABLE) for n in names
            }
        spec = SpreadSpec(
            api=SPREAD_API, endpoints=(endpoint,), clients=2, keys=1, namespace="sp", namespaces=4
        )
        result = measure(spec, processes=1, warmup=0.1, window=0.5, watch=target.pids())
        with Client(endpoint) as client:
            after = {
                n: client.get(key_name(0), namespace=n, consistency=SERIALIZABLE) for n in names
            }
            assert set(client.namespaces()) == set(names)  # nothing written elsewhere
    finally:
        target.stop()
    assert result["ops"] > 20  # so each of 4 namespaces was drawn (all but surely)
    for name in names:
        first, last = before[name], after[name]
        assert first is not None
        assert last is not None
        assert last.version > first.version, name
        assert last.value != b"first"


def test_shards_scenario(tmp_path: Path) -> None:
    params = ShardsParams(nodes=1, namespaces=12, clients=2, reps=1, keys=20, open_shards=10)
    out = run_shards(params, TINY_LOAD, tmp_path)
    assert out["create"]["namespaces"] == 12
    assert out["create"]["per_sec"] > 0
    assert [(r["case"], r["rep"]) for r in out["runs"]] == [("one", 1), ("spread", 1)]
    for r in out["runs"]:
        _check_run(r)
    assert out["spread_ratio"] > 0
    # After the runs the node holds the one namespace and the 12 spread ones.
    (memory,) = out["after_runs"].values()
    assert memory["open_shards"] == 13
    rss = out["rss"]
    assert rss["found"] == {"n1": 10}
    for phase in ("start", "after_writes", "after_reads"):
        (node,) = rss[phase].values()
        assert node["rss_mib"] > 10
    (written,) = rss["after_writes"].values()
    assert written["open_shards"] == 10
    rows = evaluate({"shards": out})
    assert [r["met"] is not None for r in rows] == [True, True, True]


def test_catchup_scenario(tmp_path: Path) -> None:
    params = CatchupParams(bytes=8 * MB, value_bytes=64 << 10)
    out = run_catchup(params, tmp_path)
    assert out["batches"] == 8
    assert out["leader"] != out["follower"]
    c = out["catchup"]
    assert c["by_snapshot"], out
    assert c["snapshot_index"] > out["follower_stopped_at"]
    # The snapshot may be taken before the last batches (they follow from the
    # log), but it carries data, and the follower ends with every value.
    assert c["snapshot_bytes"] > 0
    assert c["follower_shards_bytes"] >= out["written_bytes"]
    assert 0 < c["serving_s"] <= c["caught_up_s"]
    assert c["mb_per_s"] > 0
    (row,) = evaluate({"catchup": out})
    assert row["measured"] == c["mb_per_s"]


def test_restart_scenario_writes_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = {"restart": RestartParams(nodes=1, keys=2_000, batch=500, kill_batches=2)}
    out_path = tmp_path / "scale.json"
    record = run(["restart"], params | {"load": TINY_LOAD}, out_path, command="test")
    saved = json.loads(out_path.read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["kind"] == "scale"
    assert set(saved) >= {"started", "finished", "machine", "scenarios", "targets", "command"}
    restart = saved["scenarios"]["restart"]
    assert restart["role"] == "leader"  # the only node
    assert restart["write"]["keys_per_sec"] > 0
    assert restart["data_bytes"]["shards"] > 2_000 * 100
    for mode in ("sigterm", "sigkill"):
        assert restart[mode]["serving_s"] > 0
        assert restart[mode]["read_s"] > 0
    assert [r["target"].split(",")[0] for r in saved["targets"]] == [
        "6 restart after SIGTERM",
        "6 restart after SIGKILL",
    ]
    assert main(["restart", "--report", str(out_path)]) == 0
    printed = capsys.readouterr().out
    assert "| SIGTERM |" in printed
    assert "| SIGKILL |" in printed


def test_overload_scenario(tmp_path: Path) -> None:
    params = OverloadParams(nodes=1, clients=(2, 4), mixes=("put", "get"), keys=20)
    out = run_overload(params, TINY_LOAD, tmp_path)
    assert [(r["mix"], r["clients"]) for r in out["runs"]] == [
        ("put", 2),
        ("put", 4),
        ("get", 2),
        ("get", 4),
    ]
    for r in out["runs"]:
        _check_run(r)
        assert r["cpu_cores"]["n1"] is not None
    rows = evaluate({"overload": out})
    assert len(rows) == 2
    assert all(r["measured"] > 0 for r in rows)
    text = tables({"scenarios": {"overload": out}, "targets": rows})
    assert "| put | 4 |" in text


def test_sizes() -> None:
    assert _size("1G") == 10**9
    assert _size("100M") == 10**8
    assert _size("256Ki") == 256 << 10
    assert _size("64KiB") == 64 << 10
    assert _size("12345") == 12345


def test_evaluate_flags_unclean_errors_and_falling_throughput() -> None:
    def overload_run(clients: int, ops: float, codes: dict[str, int]) -> dict[str, Any]:
        return {"mix": "put", "clients": clients, "ops_per_sec": ops, "error_codes": codes}

    clean = {
        "params": {"mixes": ["put"]},
        "runs": [overload_run(64, 1000, {}), overload_run(1024, 990, {"RESOURCE_EXHAUSTED": 9})],
    }
    assert [r["met"] for r in evaluate({"overload": clean})] == [True]
    unclean = {
        "params": {"mixes": ["put"]},
        "runs": [overload_run(64, 1000, {}), overload_run(1024, 1000, {"DEADLINE_EXCEEDED": 1})],
    }
    assert [r["met"] for r in evaluate({"overload": unclean})] == [False]
    falling = {
        "params": {"mixes": ["put"]},
        "runs": [overload_run(64, 1000, {}), overload_run(1024, 800, {})],
    }
    assert [r["met"] for r in evaluate({"overload": falling})] == [False]
