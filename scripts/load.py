"""A bounded write/read load against one node: N concurrent gRPC clients for a
fixed time (and at most a fixed count), then a one-line summary.

    python -m scripts.load --endpoint 127.0.0.1:7001 --clients 64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc

from shardlite.v1 import kv_pb2, kv_pb2_grpc


async def _worker(
    stub: kv_pb2_grpc.KVAsyncStub,
    n: int,
    args: argparse.Namespace,
    deadline: float,
    latencies: list[float],
    budget: list[int],
) -> None:
    value = b"x" * args.value_bytes
    i = 0
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        key = f"c{n}-{i % args.keys}"
        start = time.perf_counter()
        if args.op == "put":
            await stub.Put(
                kv_pb2.PutRequest(namespace=args.namespace, key=key, value=value), timeout=30
            )
        else:
            await stub.Get(
                kv_pb2.GetRequest(namespace=args.namespace, key=key, consistency=args.consistency),
                timeout=30,
            )
        latencies.append(time.perf_counter() - start)
        i += 1


async def run(args: argparse.Namespace) -> dict[str, float]:
    async with grpc.aio.insecure_channel(args.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        if args.op == "get":  # something to read
            for n in range(args.clients):
                for i in range(min(args.keys, 10)):
                    await stub.Put(
                        kv_pb2.PutRequest(namespace=args.namespace, key=f"c{n}-{i}", value=b"v"),
                        timeout=30,
                    )
        latencies: list[float] = []
        budget = [args.max_ops]
        started = time.monotonic()
        deadline = started + args.seconds
        await asyncio.gather(
            *(_worker(stub, n, args, deadline, latencies, budget) for n in range(args.clients))
        )
        elapsed = time.monotonic() - started
    latencies.sort()
    count = len(latencies)
    return {
        "op": args.op,
        "clients": args.clients,
        "ops": count,
        "seconds": round(elapsed, 2),
        "ops_per_sec": round(count / elapsed, 1),
        "p50_ms": round(latencies[count // 2] * 1000, 2) if count else 0,
        "p99_ms": round(latencies[int(count * 0.99)] * 1000, 2) if count else 0,
        "max_ms": round(latencies[-1] * 1000, 2) if count else 0,
        "over_1s": sum(1 for s in latencies if s > 1.0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", default="127.0.0.1:7001")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-ops", type=int, default=1_000_000, help="stop after this many")
    p.add_argument("--op", choices=("put", "get"), default="put")
    p.add_argument("--consistency", type=int, default=kv_pb2.LINEARIZABLE)
    p.add_argument("--namespace", default="load")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys per client")
    p.add_argument("--value-bytes", type=int, default=100)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
