"""shardlite against etcd and a bare gRPC echo server, side by side, on this machine.

    python -m scripts.bench                      # the default comparison (~13 min)
    python -m scripts.bench --quick              # the same cases, shorter (~2 min)
    python -m scripts.bench --targets shardlite,etcd --case put@64 --case get=90,put=10@256
    python -m scripts.bench --targets shardlite-client,shardlite,etcd --case put@64
    python -m scripts.bench --report docs/bench-results/RUN.json   # table and plot again

Starts every target once (shardlite: a local 3-node cluster; shardlite-client:
the same cluster through the AsyncClient, which coalesces the concurrent
callers of each generator process into MultiWrite/MultiGet calls;
shardlite-lease: a cluster of its own with --read-lease, LINEARIZABLE reads
on the leader lease, run in the get case only; etcd: 3
members on loopback, default fsync; echo: grpc.aio answering shardlite's KV
API with no work), seeds --keys keys, then for each repetition runs every case against
every target back to back (A B A B ...), so each pair of runs shares the
machine's noise and the ratios are taken pair by pair. The same closed-loop
generator (scripts/bench_load.py) drives them all. Every run is written, as it
ends, to one JSON record (--out-dir); a table with the medians and the ratios
is printed at the end, and a PNG plot of throughput and p99 against clients.
Every process started is stopped by its PID at the end, on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from google import protobuf

from scripts.bench_load import OP_HELP, LoadSpec, measure, parse_mix, stderr_progress
from scripts.bench_stats import pair_runs, summarise_pairs, summarise_target
from scripts.bench_targets import (
    EchoTarget,
    EtcdTarget,
    ShardliteClientTarget,
    ShardliteTarget,
    Target,
    ensure_etcd,
    etcd_version,
    prefill,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1
TARGETS = ("shardlite", "shardlite-client", "shardlite-lease", "etcd", "echo")
# What a case runs on unless it says: the lease cluster differs only in reads.
WRITE_TARGETS = tuple(t for t in TARGETS if t != "shardlite-lease")
# Ratios reported, (base, other): base's ops/s over other's, pair by pair.
PAIRS = (
    ("shardlite", "etcd"),
    ("shardlite-client", "etcd"),
    ("shardlite-client", "shardlite"),
    ("shardlite", "echo"),
    ("shardlite-lease", "etcd"),
    ("shardlite-lease", "shardlite"),
    ("shardlite-lease", "echo"),
    ("etcd", "echo"),
)
_SHARDLITE_DURABILITY = (
    "a write is acknowledged after its Raft entry is fsynced on a majority (the "
    "leader's log and a follower's) and applied on the answering node"
)
# The ratio columns of the table: (base, other, with the p99 ratio too).
TABLE_RATIOS = (
    ("shardlite", "etcd", True),
    ("shardlite-client", "etcd", True),
    ("shardlite-client", "shardlite", False),
    ("shardlite", "echo", False),
    ("shardlite-lease", "etcd", True),
    ("shardlite-lease", "echo", False),
)
DURABILITY = {
    "shardlite": _SHARDLITE_DURABILITY,
    "shardlite-client": _SHARDLITE_DURABILITY
    + " (each op of a coalesced call is its own frame and version, acknowledged on its own;"
    " ops of one namespace that share no key commit as one Raft entry, an envelope)",
    "shardlite-lease": _SHARDLITE_DURABILITY
    + "; LINEARIZABLE reads are answered on the leader lease (dissertation §6.4.1), "
    "which assumes the members' clocks run within 10% of each other",
    "etcd": (
        "a write is acknowledged after its Raft entry is fsynced in the WAL of a "
        "majority and applied (etcd's defaults; no --unsafe-no-fsync)"
    ),
    "echo": "nothing is stored",
}


@dataclass(frozen=True)
class Case:
    """One workload: an op mix at a client count, and which targets run it."""

    name: str
    mix: str
    clients: int
    targets: tuple[str, ...] = WRITE_TARGETS


def parse_case(text: str, targets: Sequence[str]) -> Case:
    """'MIX@CLIENTS', e.g. 'put@64' or 'put=90,get=10@256'."""
    mix, sep, clients = text.rpartition("@")
    if not sep or not clients.isdigit() or int(clients) < 1:
        raise argparse.ArgumentTypeError(f"case {text!r}: expected MIX@CLIENTS, e.g. put@64")
    parse_mix(mix)  # fails early on a bad mix
    name = f"{mix.replace('=', '').replace(',', '+')}-{clients}"
    return Case(name, mix, int(clients), tuple(targets))


def default_cases(quick: bool) -> list[Case]:
    """The issue's cases (with the echo ceiling where it means something),
    then the client sweep for the plot."""
    cases = [
        Case("put-1", "put", 1),
        Case("put-64", "put", 64),
        Case("get-64", "get", 64, TARGETS),
        # The echo server answers both reads alike: its get-64 is the ceiling.
        Case("sget-64", "sget", 64, ("shardlite", "shardlite-client", "etcd")),
    ]
    if not quick:
        sweep = ("shardlite", "shardlite-client", "etcd")
        cases += [Case(f"put-{n}", "put", n, sweep) for n in (8, 256)]
    return cases


# -- the machine -------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info(etcd_binary: str | None) -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gib": round(mem_kb / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf.__version__,
        "sqlite": sqlite3.sqlite_version,
        "etcd": etcd_version(etcd_binary) if etcd_binary else None,
        "commit": commit,
        "loadavg_before": _read("/proc/loadavg").split()[:3],
    }


# -- running ----------------------------------------------------------------------


def make_target(
    name: str, base: Path, args: argparse.Namespace, started: dict[str, Target]
) -> Target:
    if name == "shardlite":
        return ShardliteTarget(base, nodes=args.nodes)
    if name == "shardlite-lease":
        return ShardliteTarget(base, nodes=args.nodes, read_lease=True)
    if name == "shardlite-client":
        shared = started.get("shardlite")
        if isinstance(shared, ShardliteTarget):
            return ShardliteClientTarget(shared, shared=True)
        return ShardliteClientTarget(ShardliteTarget(base, nodes=args.nodes), shared=False)
    if name == "etcd":
        return EtcdTarget(base, members=args.nodes, binary=args.etcd_binary)
    return EchoTarget(base, value_bytes=args.value_bytes)


def base_spec(args: argparse.Namespace) -> LoadSpec:
    return LoadSpec(
        api="shardlite",
        endpoints=(),
        clients=1,
        value_bytes=args.value_bytes,
        keys=args.keys,
        distribution=args.distribution,
        batch_size=args.batch_size,
        op_timeout=args.op_timeout,
        seed=args.seed,
        client_in_flight=args.client_in_flight,
    )


def run_benchmark(args: argparse.Namespace, cases: list[Case], out_path: Path) -> dict[str, Any]:
    names = [t for t in TARGETS if t in args.targets]
    etcd_binary = None
    if "etcd" in names:
        if args.etcd_binary != "etcd":  # an explicit binary: use it as it is
            if not shutil.which(args.etcd_binary):
                raise SystemExit(f"--etcd-binary {args.etcd_binary}: not found")
            etcd_binary = args.etcd_binary
        else:
            etcd_binary = args.etcd_binary = ensure_etcd(args.install_etcd)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m scripts.bench", *sys.argv[1:]]),
        "machine": machine_info(etcd_binary),
        "config": {
            "targets": names,
            "nodes": args.nodes,
            "reps": args.reps,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "processes": args.processes,
            "value_bytes": args.value_bytes,
            "keys": args.keys,
            "distribution": args.distribution,
            "batch_size": args.batch_size,
            "cases": [c.__dict__ | {"targets": list(c.targets)} for c in cases],
            "endpoint": "the leader (asked before each run)",
        },
        "durability": {n: DURABILITY[n] for n in names},
        "targets": {},
        "runs": [],
    }
    base = Path(tempfile.mkdtemp(prefix="shardlite-bench-"))
    targets: dict[str, Target] = {}
    try:
        for name in names:
            say(f"starting {name} ...")
            target = make_target(name, base, args, targets)
            targets[name] = target
            target.start()
            spec = replace(base_spec(args), api=target.api)
            if not getattr(target, "shared", False):  # a shared cluster is seeded already
                asyncio.run(prefill(target.api, target.endpoints()[0], spec))
            record["targets"][name] = target.describe()
            say(f"{name} serving, {args.keys} keys written: {target.describe()}")
        total = sum(len([t for t in c.targets if t in targets]) for c in cases) * args.reps
        done = 0
        for rep in range(1, args.reps + 1):
            for case in cases:
                for name in case.targets:
                    if name not in targets:
                        continue
                    done += 1
                    run = run_once(
                        args,
                        targets[name],
                        case,
                        rep,
                        f"[{done}/{total}] {name} {case.name} rep {rep}",
                    )
                    record["runs"].append(run)
                    write_record(record, out_path)
        for name, target in targets.items():
            record["targets"][name] = target.describe()
    finally:
        for name, target in reversed(targets.items()):
            try:
                target.stop()
            except Exception as exc:  # keep stopping the others
                say(f"stopping {name} failed: {exc}")
        if args.keep_data:
            say(f"data and logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    record["machine"]["loadavg_after"] = _read("/proc/loadavg").split()[:3]
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    add_summary(record)
    write_record(record, out_path)
    return record


def run_once(
    args: argparse.Namespace, target: Target, case: Case, rep: int, label: str
) -> dict[str, Any]:
    spec = replace(
        base_spec(args),
        api=target.api,
        endpoints=tuple(target.endpoints()),
        clients=case.clients,
        mix=parse_mix(case.mix),
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    pids = target.pids()
    result = measure(
        spec,
        processes=args.processes,
        warmup=args.warmup,
        window=args.window,
        watch=pids,
        label=label,
        progress=None if args.no_progress else stderr_progress,
    )
    run = {
        "target": target.name,
        "case": case.name,
        "mix": case.mix,
        "clients": case.clients,
        "rep": rep,
        "started": started,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "leader": target.describe().get("leader", ""),
        "pids": pids,
        **result,
    }
    lat = run["latency_ms"]
    coalesced = run.get("client_ops_per_call")
    say(
        f"{label}: {run['ops_per_sec']:,.0f} ops/s, p50 {lat['p50']:.2f} ms,"
        f" p99 {lat['p99']:.2f} ms, errors {run['errors']}, cpu {_cpu_line(run)}"
        + (f", ops per call {coalesced}" if coalesced else "")
    )
    return run


def _cpu_line(run: dict[str, Any]) -> str:
    procs = run["cpu_cores"]["processes"]
    servers = ", ".join(
        f"{k} {v:.2f}" for k, v in procs.items() if not k.startswith("generator") and v is not None
    )
    return f"[{servers}] generator {run['cpu_cores']['generator_total']:.2f} cores"


def add_summary(record: dict[str, Any]) -> None:
    runs = record["runs"]
    pairs = [pair for base, other in PAIRS for pair in pair_runs(runs, base, other)]
    record["pairs"] = pairs
    record["ratios"] = summarise_pairs(pairs)
    record["medians"] = [
        {"case": case, "target": target, **values}
        for (case, target), values in summarise_target(runs).items()
    ]


def write_record(record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(path)


# -- reporting --------------------------------------------------------------------


def _fmt_rate(values: dict[str, Any]) -> str:
    low, mid, high = values["ops_per_sec_min"], values["ops_per_sec"], values["ops_per_sec_max"]
    spread = f" ({low:,.0f}-{high:,.0f})" if values["runs"] > 1 else ""
    return f"{mid:,.0f}/s{spread}, p50 {values['p50']:.1f} ms, p99 {values['p99']:.1f} ms"


def _fmt_ratio(entry: dict[str, Any] | None, key: str = "throughput_ratio") -> str:
    if entry is None or entry.get(key) is None:
        return ""
    r = entry[key]
    spread = f" ({r['min']:.2f}-{r['max']:.2f})" if entry["pairs"] > 1 else ""
    return f"{r['median']:.2f}{spread}"


def table(record: dict[str, Any]) -> str:
    """A markdown table: per case, each target's medians (and range), and the
    pairwise ratios (median over the pairs, and their range)."""
    medians = {(m["case"], m["target"]): m for m in record["medians"]}
    ratios = {(r["case"], r["base"], r["other"]): r for r in record["ratios"]}
    cases = list(dict.fromkeys(run["case"] for run in record["runs"]))
    targets = [t for t in TARGETS if t in record["config"]["targets"]]
    head = ["case", *targets]
    columns = [c for c in TABLE_RATIOS if {c[0], c[1]} <= set(targets)]
    for base, other, with_p99 in columns:
        head.append(f"{base}/{other} ops/s")
        if with_p99:
            head.append(f"{base}/{other} p99")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        row = [case]
        row += [_fmt_rate(medians[(case, t)]) if (case, t) in medians else "" for t in targets]
        for base, other, with_p99 in columns:
            pair = ratios.get((case, base, other))
            row.append(_fmt_ratio(pair))
            if with_p99:
                row.append(_fmt_ratio(pair, "p99_ratio"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cpu_table(record: dict[str, Any]) -> str:
    """Median cores used during the window, per case and target: the leader,
    the followers (each), the generator, and the whole machine."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in record["runs"]:
        groups.setdefault((run["case"], run["target"]), []).append(run)
    lines = [
        "| case | target | leader | followers | generator | machine busy |",
        "|---|---|---|---|---|---|",
    ]
    for (case, target), runs in groups.items():
        leaders, followers, generators, busy = [], [], [], []
        for run in runs:
            cpu = run["cpu_cores"]
            servers = {k: v for k, v in cpu["processes"].items() if not k.startswith("generator")}
            leader = run.get("leader") or next(iter(servers), "")
            leaders.append(servers.get(leader) or 0.0)
            followers.append(sorted(v or 0.0 for k, v in servers.items() if k != leader))
            generators.append(cpu["generator_total"])
            busy.append(cpu.get("machine_busy_cores") or 0.0)
        per_follower = [
            statistics.median(f[i] for f in followers) for i in range(len(followers[0]))
        ]
        lines.append(
            f"| {case} | {target} | {statistics.median(leaders):.2f} | "
            f"{' / '.join(f'{v:.2f}' for v in per_follower) or '-'} | "
            f"{statistics.median(generators):.2f} | {statistics.median(busy):.2f} |"
        )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> bool:
    """Throughput and p99 of the put cases against the client count, for
    shardlite and etcd. False (and a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no plot: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    series: dict[str, list[tuple[int, float, float]]] = {}
    clients = {run["case"]: run["clients"] for run in record["runs"] if run["mix"] == "put"}
    for m in record["medians"]:
        if m["case"] in clients:
            series.setdefault(m["target"], []).append(
                (clients[m["case"]], m["ops_per_sec"], m["p99"])
            )
    if not {"shardlite", "etcd"} & series.keys():
        say("no plot: no put cases of shardlite or etcd in the run")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {
        "shardlite": "o-",
        "shardlite-client": "^-",
        "shardlite-lease": "d-",
        "etcd": "s-",
        "echo": "x--",
    }
    for name in [t for t in TARGETS if t in series]:
        points = sorted(series[name])
        xs = [p[0] for p in points]
        label = "bare gRPC echo (ceiling)" if name == "echo" else name
        left.plot(xs, [p[1] for p in points], styles[name], label=label)
        right.plot(xs, [p[2] for p in points], styles[name], label=label)
    ticks = sorted({p[0] for points in series.values() for p in points})
    for axis, ylabel in ((left, "puts/s (median)"), (right, "p99 latency, ms (median, log)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.set_xlabel("concurrent clients (closed loop)")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
        axis.legend()
    right.set_yscale("log")
    left.set_ylim(bottom=0)
    machine = record["machine"]
    fig.suptitle(
        f"3 members on loopback, {record['config']['value_bytes']}-byte values, "
        f"{machine['nproc']} cores, commit {machine['commit']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def report(record: dict[str, Any], plot_path: Path | None) -> None:
    print()
    print(table(record))
    print()
    print("CPU in cores (median over the repetitions):")
    print()
    print(cpu_table(record))
    print()
    for name, text in record["durability"].items():
        print(f"- {name}: {text}")
    machine = record["machine"]
    print(
        f"- machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['ram_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"etcd {machine['etcd']}; load average {' '.join(machine['loadavg_before'])} before, "
        f"{' '.join(machine.get('loadavg_after', []))} after"
    )
    if plot_path is not None and plot(record, plot_path):
        print(f"- plot: {plot_path}")


def say(text: str) -> None:
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # over the live progress line
    sys.stderr.write(clear + text + "\n")
    sys.stderr.flush()


# -- the command line ----------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Ops in a mix: {OP_HELP}.",
    )
    p.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated, of: " + ", ".join(TARGETS)
    )
    p.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="MIX@CLIENTS",
        help="a workload, e.g. put@64 or put=90,get=10@256 (repeatable; default: the issue's)",
    )
    p.add_argument(
        "--quick", action="store_true", help="1 repetition, short windows, no sweep (~2 min)"
    )
    p.add_argument(
        "--reps", type=int, default=None, help="repetitions of every case (default 3; quick 1)"
    )
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds before the window (default 2; quick 1)"
    )
    p.add_argument(
        "--window", type=float, default=None, help="measured seconds (default 6; quick 3)"
    )
    p.add_argument(
        "--processes", type=int, default=2, help="load generator processes (at most one per client)"
    )
    p.add_argument("--nodes", type=int, default=3, help="shardlite nodes and etcd members")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument(
        "--keys", type=int, default=10_000, help="distinct keys (all written before the runs)"
    )
    p.add_argument("--distribution", choices=("uniform", "zipf"), default="uniform")
    p.add_argument("--batch-size", type=int, default=10, help="puts per batch op")
    p.add_argument("--op-timeout", type=float, default=10.0, help="deadline of each request")
    p.add_argument(
        "--client-in-flight",
        type=int,
        default=2,
        help="shardlite-client: multi calls in flight per AsyncClient lane (max_in_flight)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "bench-results")
    p.add_argument(
        "--out", type=Path, default=None, help="the JSON record (default: OUT_DIR/<time>.json)"
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no live progress lines")
    p.add_argument(
        "--install-etcd", action="store_true", help="apt-get install etcd-server if missing"
    )
    p.add_argument("--etcd-binary", default="etcd")
    p.add_argument("--keep-data", action="store_true", help="keep the targets' data and logs")
    p.add_argument(
        "--report", type=Path, default=None, help="print the table (and plot) of a saved record"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.report is not None:
        record = json.loads(args.report.read_text())
        report(record, None if args.no_plot else args.report.with_suffix(".png"))
        return 0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets {sorted(unknown)}; targets: {', '.join(TARGETS)}")
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.window = args.window or (3.0 if args.quick else 6.0)
    if args.reps < 1 or args.window <= 0 or args.warmup < 0:
        raise SystemExit("--reps must be >= 1, --window > 0, --warmup >= 0")
    cases = [parse_case(c, args.targets) for c in args.case] or default_cases(args.quick)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.out or args.out_dir / f"{stamp}{'-quick' if args.quick else ''}.json"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwind through the finally blocks that stop everything

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    try:
        record = run_benchmark(args, cases, out_path)
    except KeyboardInterrupt:
        say(f"interrupted; every process started was stopped; partial record in {out_path}")
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; record: {out_path}")
    report(record, None if args.no_plot else out_path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
