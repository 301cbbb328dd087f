"""Where a shardlite node spends its CPU under a load: py-spy on every node.

    python -m scripts.bench_profile --case put@64            # 3 nodes, 8 s window
    python -m scripts.bench_profile --case get@64 --top 40 --out-dir /tmp/prof

Starts a local cluster (scripts/bench_targets.ShardliteTarget), writes every
key once, runs the same closed-loop generator as `make bench` and, during its
window, samples each node with `py-spy record` (pip install py-spy; it needs
ptrace: root, or kernel.yama.ptrace_scope=0). Prints, per node, the functions
with the most samples inclusive (time under them) and exclusive (on top of the
stack), grouped by layer (grpc, protobuf, asyncio, raft, sqlite, ...), and
keeps the collapsed stacks (flamegraph.pl / speedscope input) in --out-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.bench_load import LoadSpec, measure, parse_mix
from scripts.bench_targets import ShardliteTarget, prefill

# The first matching pattern in a frame's file names its layer.
LAYERS = (
    ("grpc", ("grpc/", "grpc_", "cygrpc")),
    ("protobuf", ("google/protobuf",)),
    ("asyncio", ("asyncio/",)),
    ("raft", ("replication/raft/",)),
    ("replication", ("replication/",)),
    ("sqlite", ("sqlite3",)),
    ("node", ("node/",)),
    ("threads", ("threading.py", "concurrent/")),
)


def layer_of(frame: str) -> str:
    for name, patterns in LAYERS:
        if any(p in frame for p in patterns):
            return name
    return "other"


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw output: `frame;frame;...;leaf count` per line."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def report(name: str, stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(c for _, c in stacks) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        exclusive[frames[-1]] += count
        layers[layer_of(frames[-1])] += count
    lines = [f"== {name}: {total} samples"]
    lines.append("  exclusive time by layer (the frame on top of the stack):")
    for layer, count in layers.most_common():
        lines.append(f"    {100 * count / total:5.1f}%  {layer}")
    lines.append(f"  top {top} inclusive:")
    for frame, count in inclusive.most_common(top):
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    lines.append(f"  top {top} exclusive:")
    for frame, count in exclusive.most_common(top):
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--case", default="put@64", help="MIX@CLIENTS, as for scripts.bench")
    p.add_argument(
        "--api",
        choices=("shardlite", "shardlite-client"),
        default="shardlite",
        help="unary RPCs, or through the AsyncClient (coalesced MultiWrite/MultiGet)",
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    p.add_argument(
        "--native",
        action="store_true",
        help="C frames too (gRPC's core, protobuf, SQLite): py-spy then pauses the node for "
        "each sample, so rates fall; for where the time goes, not how much",
    )
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--node-arg", action="append", default=[], help="extra `shardlite node` flag")
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    mix_text, _, clients = args.case.rpartition("@")
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="shardlite-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shardlite-profile-data-") as base:
        target = ShardliteTarget(Path(base), args.nodes, tuple(args.node_arg))
        target.start()
        try:
            endpoints = target.endpoints()
            spec = LoadSpec(
                api=args.api,
                endpoints=tuple(endpoints),
                clients=int(clients),
                mix=parse_mix(mix_text),
                keys=args.keys,
            )
            asyncio.run(prefill("shardlite", endpoints[0], spec))
            samplers = {}
            for name, pid in target.pids().items():
                role = "leader" if name == target.leader else "follower"
                path = out_dir / f"{name}-{role}.txt"
                samplers[f"{name} ({role})"] = (
                    path,
                    subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            str(args.rate),
                            "--duration",
                            str(int(args.warmup + args.window)),
                            "--format",
                            "raw",
                            # py-spy reads native stacks only from a paused process.
                            *(["--native"] if args.native else ["--nonblocking"]),
                            "--output",
                            str(path),
                            *(["--gil"] if args.gil else []),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            result = measure(
                spec,
                processes=args.processes,
                warmup=args.warmup,
                window=args.window,
                watch=target.pids(),
            )
            for _, sampler in samplers.values():
                sampler.wait(timeout=args.warmup + args.window + 30)
        finally:
            target.stop()
    latency = result["latency_ms"]
    print(
        f"{args.case}: {result['ops_per_sec']:.0f} ops/s, p50 {latency['p50']:.2f} ms, "
        f"p99 {latency['p99']:.2f} ms; cores {result.get('cpu_cores')}"
    )
    for label, (path, _) in samplers.items():
        if path.exists():
            print(report(label, parse_collapsed(path), args.top))
    print(f"collapsed stacks in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
