"""Where one put's time goes: timestamps at every hop, leader and followers.

    python -m scripts.bench_trace                 # 3 nodes, 300 sequential puts
    python -m scripts.bench_trace --puts 1000 --nodes 3
    python -m scripts.bench_trace --grpc-stream   # Raft messages over gRPC, to compare

Starts a local cluster whose nodes run through this module: it wraps the
functions each hop passes (the Put handler, the Raft driver's proposal, WAL
save, the wire out and in, commit, the applier) to record a monotonic
timestamp with the log indices concerned, then runs the node unchanged. One
client writes sequentially to the leader; at the end every node writes its
records, and this prints, per hop, the median time since the Put arrived.
CLOCK_MONOTONIC is one clock for every process of a machine, so the hops of
different nodes line up. The wrappers cost a few microseconds each: absolute
times are a little above an untraced run, the shape is the point.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from scripts.cluster import LocalCluster

OUT_ENV = "SHARDLITE_TRACE_OUT"
GRPC_STREAM_ENV = "SHARDLITE_TRACE_GRPC_STREAM"

Record = tuple[str, int, list[int], int]  # event, time (ns), indices, peer


def install(out: Path) -> None:
    """Wrap the hops (in the node process, before it starts)."""
    from shardlite.node.applier import Applier
    from shardlite.node.service import KVService
    from shardlite.replication.raft import transport
    from shardlite.replication.raft.driver import RaftDriver
    from shardlite.replication.raft.messages import Message, MessageType
    from shardlite.replication.raft.wal import DiskStorage

    records: list[Record] = []
    now = time.monotonic_ns
    if os.environ.get(GRPC_STREAM_ENV):
        # --grpc-stream: members offer no TCP message stream; peers use Raft.Send.

        async def no_port(self: Any) -> int:
            return 0

        transport.RaftServicer.message_port = no_port  # type: ignore[method-assign]

    def note(event: str, indices: list[int], peer: int = 0) -> None:
        records.append((event, now(), indices, peer))

    def message_indices(m: Message) -> list[int]:
        if m.type is MessageType.APP:
            return [e.index for e in m.entries]
        return [m.index]

    put = KVService.Put

    async def traced_put(self: Any, request: Any, context: Any) -> Any:
        start = now()
        response = await put(self, request, context)
        records.append(("put.start", start, [response.index], 0))
        note("put.end", [response.index])
        return response

    propose_many = RaftDriver.propose_many

    async def traced_propose_many(self: Any, datas: list[bytes]) -> tuple[int, int]:
        term, first = await propose_many(self, datas)
        note("proposed", list(range(first, first + len(datas))))
        return term, first

    save = DiskStorage.save

    def traced_save(self: Any, hs: Any, entries: Any, snapshot: Any, must_sync: bool) -> None:
        indices = [e.index for e in entries]
        note("save.start", indices)
        save(self, hs, entries, snapshot, must_sync)
        note("save.end", indices)

    to_pb = getattr(transport, "message_to_pb")  # noqa: B009 - patched below

    def traced_to_pb(m: Message) -> Any:
        if m.type in (MessageType.APP, MessageType.APP_RESP):
            note(f"wire.out.{m.type.name.lower()}", message_indices(m), m.to)
        return to_pb(m)

    deliver = RaftDriver.deliver

    def traced_deliver(self: Any, m: Message) -> None:
        if m.type in (MessageType.APP, MessageType.APP_RESP):
            note(f"recv.{m.type.name.lower()}", message_indices(m), m.frm)
        deliver(self, m)

    publish = RaftDriver._publish

    def traced_publish(self: Any, entries: Any) -> None:
        note("commit", [e.index for e in entries])
        publish(self, entries)

    apply = Applier._apply

    def traced_apply(self: Any, batch: Any, *on_thread: bool) -> Any:
        indices = [i for i, _ in batch]
        note("apply.start", indices)
        results = apply(self, batch, *on_thread)
        note("apply.end", indices)
        return results

    entries = DiskStorage.entries

    def traced_entries(self: Any, lo: int, hi: int, max_size: int | None = None) -> Any:
        note("read.committed", list(range(lo, hi)))  # the applier's stream reads the log
        return entries(self, lo, hi, max_size)

    apply_batch = Applier._apply_batch

    async def traced_apply_batch(self: Any, marked: Any) -> None:
        note("apply.queued", [i for i, _ in marked])
        await apply_batch(self, marked)

    apply_locked = Applier._apply_locked

    async def traced_apply_locked(self: Any, marked: Any) -> None:
        await apply_locked(self, marked)
        note("applied", [i for i, _ in marked])

    patches: list[tuple[object, str, object]] = [
        (KVService, "Put", traced_put),
        (RaftDriver, "propose_many", traced_propose_many),
        (DiskStorage, "save", traced_save),
        (transport, "message_to_pb", traced_to_pb),
        (RaftDriver, "deliver", traced_deliver),
        (RaftDriver, "_publish", traced_publish),
        (Applier, "_apply", traced_apply),
        (DiskStorage, "entries", traced_entries),
        (Applier, "_apply_batch", traced_apply_batch),
        (Applier, "_apply_locked", traced_apply_locked),
    ]
    for owner, name, wrapper in patches:
        setattr(owner, name, wrapper)
    atexit.register(lambda: out.write_text(json.dumps(records)))


# -- the analysis -------------------------------------------------------------------


def first_at(
    records: list[Record], event: str, index: int, after: int = 0, at_least: bool = False
) -> int | None:
    """The first time `event` concerned `index` (or, with at_least, an index
    >= it: an ack names the last index it covers), not before `after`."""
    for name, t, indices, _ in records:
        if name != event or t < after:
            continue
        if (at_least and indices and max(indices) >= index) or index in indices:
            return t
    return None


def hops(leader: list[Record], followers: list[list[Record]]) -> dict[str, list[float]]:
    """Per hop, the microseconds since the Put arrived, for every put."""
    by_hop: dict[str, list[float]] = defaultdict(list)
    for name, start, indices, _ in leader:
        if name != "put.start" or not indices:
            continue
        i = indices[0]
        marks: dict[str, int | None] = {
            "leader: proposed (loop took it)": first_at(leader, "proposed", i, start),
            "leader: WAL save starts": first_at(leader, "save.start", i, start),
            "leader: WAL fsynced": first_at(leader, "save.end", i, start),
            "leader: append on the wire": first_at(leader, "wire.out.app", i, start),
        }
        acks = []
        for n, records in enumerate(followers, start=1):
            marks[f"follower {n}: append received"] = first_at(records, "recv.app", i, start)
            marks[f"follower {n}: WAL fsynced"] = first_at(records, "save.end", i, start)
            sent = first_at(records, "wire.out.app_resp", i, start, at_least=True)
            marks[f"follower {n}: ack on the wire"] = sent
            acks.append(sent)
        marks["leader: first ack received"] = first_at(leader, "recv.app_resp", i, start, True)
        marks["leader: committed"] = first_at(leader, "commit", i, start)
        marks["leader: the applier's stream reads it"] = first_at(
            leader, "read.committed", i, start
        )
        marks["leader: the applier takes the batch"] = first_at(leader, "apply.queued", i, start)
        marks["leader: apply starts"] = first_at(leader, "apply.start", i, start)
        marks["leader: applied (SQLite committed)"] = first_at(leader, "apply.end", i, start)
        marks["leader: waiter woken"] = first_at(leader, "applied", i, start)
        marks["leader: Put returns"] = first_at(leader, "put.end", i, start)
        for hop, t in marks.items():
            if t is not None:
                by_hop[hop].append((t - start) / 1000)
    return by_hop


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        install(Path(os.environ[OUT_ENV]))
        from shardlite.node.cli import main as cli_main

        logging.basicConfig()
        return cli_main(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--puts", type=int, default=300)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument(
        "--grpc-stream",
        action="store_true",
        help="Raft messages over gRPC Send instead of the TCP stream (to compare)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardlite-trace-") as base:
        cluster = LocalCluster(Path(base), args.nodes)
        outs = {}
        for name, node in cluster.nodes.items():
            outs[name] = Path(base) / f"{name}.trace.json"
            node.module = "scripts.bench_trace"
            node.env = {OUT_ENV: str(outs[name])}
            if args.grpc_stream:
                node.env[GRPC_STREAM_ENV] = "1"
        cluster.start()
        try:
            leader = cluster.leader()
            value = b"v" * args.value_bytes
            with cluster.client(leader) as client:
                elapsed = []
                for n in range(args.warmup + args.puts):
                    t = time.perf_counter()
                    client.put(f"k{n % 1000}", value)
                    if n >= args.warmup:
                        elapsed.append(time.perf_counter() - t)
        finally:
            cluster.stop()
        traces: dict[str, list[Record]] = {
            name: [(r[0], r[1], r[2], r[3]) for r in json.loads(path.read_text())]
            for name, path in outs.items()
            if path.exists()
        }
    if leader not in traces:
        print("the leader wrote no trace", file=sys.stderr)
        return 1
    measured = traces[leader]
    # Only the measured puts (after the warm-up).
    starts = sorted(t for name, t, _, _ in measured if name == "put.start")
    cut = starts[args.warmup] if len(starts) > args.warmup else 0
    leader_records = [r for r in measured if r[0] != "put.start" or r[1] >= cut]
    followers = [traces[n] for n in sorted(traces) if n != leader]
    table = hops(leader_records, followers)
    print(
        f"{args.puts} sequential puts of {args.value_bytes} B to the leader of {args.nodes}: "
        f"client-side p50 {statistics.median(elapsed) * 1000:.2f} ms"
    )
    print("| hop | median us since the Put arrived | step |")
    print("|---|---|---|")
    previous = 0.0
    for hop, values in sorted(table.items(), key=lambda kv: statistics.median(kv[1])):
        median = statistics.median(values)
        print(f"| {hop} | {median:,.0f} | +{median - previous:,.0f} |")
        previous = median
    return 0


if __name__ == "__main__":
    sys.exit(main())
