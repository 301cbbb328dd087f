"""How soon a restarted follower hears from its leader.

Starts a 3-node cluster on loopback, keeps two clients writing through the
leader, then SIGKILLs a follower, restarts it after a pause, and measures the
time from the restarted node serving to its status naming the leader, a
bounded number of times. Prints one JSON line.

    python -m scripts.rejoin_latency --restarts 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from scripts.cluster import LocalCluster
from shardlite.node.client import Client, ClientError

DEADLINE = 30.0  # seconds to wait for one rejoin before giving up


def _write_until(stop: threading.Event, client: Client) -> None:
    i = 0
    while not stop.is_set():
        with contextlib.suppress(ClientError):  # load only: expected around kills
            client.put(f"k{i % 4}", b"x" * 50)
        i += 1


def _time_to_leader(client: Client) -> float:
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE:
        if client.status().leader:
            return time.monotonic() - start
        time.sleep(0.005)
    raise TimeoutError(f"no leader known within {DEADLINE}s of restarting")


def measure(base: Path, restarts: int, down: float) -> list[float]:
    cluster = LocalCluster(base, 3).start()
    stop = threading.Event()
    writers: list[threading.Thread] = []
    try:
        leader = cluster.leader()
        follower = next(n for n in cluster.addresses if n != leader)
        writers = [
            threading.Thread(target=_write_until, args=(stop, cluster.client(leader)))
            for _ in range(2)
        ]
        for w in writers:
            w.start()
        samples = []
        for _ in range(restarts):
            time.sleep(1.0)
            cluster.nodes[follower].kill()
            time.sleep(down)
            cluster.nodes[follower].start()
            with cluster.client(follower) as client:
                samples.append(_time_to_leader(client))
        return samples
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=DEADLINE)
        cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--restarts", type=int, default=6)
    p.add_argument("--down", type=float, default=3.0, help="seconds the follower stays down")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardlite-rejoin-") as tmp:
        samples = measure(Path(tmp), args.restarts, args.down)
    print(
        json.dumps(
            {
                "restarts": len(samples),
                "mean_s": round(statistics.mean(samples), 3),
                "max_s": round(max(samples), 3),
                "samples_s": [round(s, 3) for s in samples],
            }
        )
    )


if __name__ == "__main__":
    main()
