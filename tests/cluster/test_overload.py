"""A flood of proposals beyond the queue bound (issue 13, "Limits"): with
--max-pending-proposals, what does not fit is refused RESOURCE_EXHAUSTED at
once (never proposed), the node stays healthy and keeps serving, and every
write it acknowledged is on every replica with the version it was given."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shardlite.node.client import SERIALIZABLE
from shardlite.v1 import frame_pb2, kv_pb2, kv_pb2_grpc
from tests.harness import LocalCluster, NodeProcess, wait_until

BOUND = 16
FLOODERS = 6
ROUNDS = 5
WRITES_PER_CALL = 100
CHAIN = "-chain"


def _own_entry(key: str, chain: str) -> kv_pb2.WriteRequest:
    """A write of `key` that is its own Raft entry: all of a call's writes
    also write `chain`, so none shares an envelope (node/envelope.py) and each
    counts against the bound on entries in flight."""
    batch = kv_pb2.BatchRequest(namespace="flood")
    batch.ops.add(put=frame_pb2.PutOp(key=key, value=b"v"))
    batch.ops.add(put=frame_pb2.PutOp(key=chain, value=b""))
    return kv_pb2.WriteRequest(batch=batch)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_a_flood_past_the_queue_bound_is_shed_and_nothing_acknowledged_is_lost(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(3, args=("--max-pending-proposals", str(BOUND)))
    leader = cluster.leader()
    acked: dict[str, int] = {}
    refused: dict[str, str] = {}
    other: list[str] = []
    lock = threading.Lock()

    def flood(n: int) -> None:
        with grpc.insecure_channel(cluster.addresses[leader]) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            for r in range(ROUNDS):
                keys = [f"f{n}-{r}-{i}" for i in range(WRITES_PER_CALL)]
                request = kv_pb2.MultiWriteRequest(
                    writes=[_own_entry(key, chain=f"f{n}-{r}{CHAIN}") for key in keys]
                )
                reply = stub.MultiWrite(request, timeout=60)
                with lock:
                    for key, result in zip(keys, reply.results, strict=True):
                        if result.WhichOneof("result") == "batch":
                            acked[key] = result.batch.results[0].version
                        elif result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]:
                            refused[key] = result.error.message
                        else:
                            other.append(f"{result.error.code}: {result.error.message}")

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(FLOODERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)

    assert other == []
    assert refused, "the flood never passed the bound"
    assert acked, "nothing was accepted"
    assert all("queue full" in message for message in refused.values())
    assert len(acked) + len(refused) == FLOODERS * ROUNDS * WRITES_PER_CALL
    # Healthy, and serving writes again at once.
    for address in cluster.addresses.values():
        assert _serving(address)
    with cluster.client(leader, namespace="flood") as c:
        after = c.put("after", b"v")
        commit = c.status().commit_index
    assert after.version > max(acked.values())
    # Every acknowledged write on every replica, with its version; nothing refused.
    for name in cluster.nodes:
        with cluster.client(name, namespace="flood", timeout=30) as c:
            wait_until(lambda: c.status().applied_index >= commit, 30, f"{name} to apply")
            stored = {e.key: e.version for e in c.list(consistency=SERIALIZABLE)}
        mine = {k: v for k, v in stored.items() if k != "after" and not k.endswith(CHAIN)}
        assert mine == acked, name
        assert not set(refused) & set(stored)


def test_a_single_node_takes_the_same_bound(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("--max-pending-proposals", "4")
    # One key: each write its own entry (no two share an envelope).
    writes = [
        kv_pb2.WriteRequest(put=kv_pb2.PutRequest(namespace="one", key="k", value=f"{i}".encode()))
        for i in range(50)
    ]
    with grpc.insecure_channel(node.endpoint) as channel:
        reply = kv_pb2_grpc.KVStub(channel).MultiWrite(
            kv_pb2.MultiWriteRequest(writes=writes), timeout=30
        )
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds[:4] == ["put"] * 4
    assert {r.error.code for r in reply.results[4:]} == {
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    }
    assert _serving(node.endpoint)
    with node.client(namespace="one") as c:
        assert [(e.key, e.value, e.version) for e in c.list()] == [
            ("k", b"3", reply.results[3].put.version)
        ]
