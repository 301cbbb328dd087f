"""The Prometheus endpoint of real node processes: the key series move when
writes, elections and snapshots happen (issue 13, "Metrics")."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardlite.node.client import ClientError, Put
from tests.harness import LocalCluster, NodeProcess, free_ports, wait_until

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0 when it is not there (yet)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def test_a_single_node_counts_requests_writes_and_fsyncs(
    start_node: Callable[..., NodeProcess],
) -> None:
    (port,) = free_ports(1)
    node = start_node("--metrics-listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    with node.client(timeout=10) as c:
        for i in range(20):
            c.put(f"k{i}", b"v")
        c.batch([Put(f"b{i}", b"v") for i in range(5)])
        with pytest.raises(ClientError) as bad:
            c.put("k", b"v", namespace="no/slashes")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(url)

    put_ok = {"service": "KV", "method": "Put", "code": "OK"}
    assert value(after, "shardlite_rpc_requests_total", **put_ok) == 20
    assert value(after, "shardlite_rpc_duration_seconds_count", **put_ok) == 20
    assert value(after, "shardlite_rpc_duration_seconds_sum", **put_ok) > 0
    invalid = {"service": "KV", "method": "Put", "code": "INVALID_ARGUMENT"}
    # grpc sends a refusal's status from inside abort(), before the handler's
    # `finally` counts the call: the caller may scrape first.
    wait_until(
        lambda: value(scrape(url), "shardlite_rpc_requests_total", **invalid) == 1,
        10,
        "the refused Put to be counted",
    )
    proposals = "shardlite_proposals_total"
    assert value(after, proposals) - value(before, proposals) == 21
    assert value(after, "shardlite_proposals_committed_total") == 21
    assert value(after, "shardlite_applied_index") >= 21
    assert value(after, "shardlite_commit_index") >= value(after, "shardlite_applied_index")
    assert value(after, "shardlite_apply_lag_entries") >= 0
    fsyncs = "shardlite_fsync_duration_seconds_count"
    assert value(after, fsyncs, file="frame_log") > value(before, fsyncs, file="frame_log")
    assert value(after, "shardlite_raft_role", role="leader") == 1  # alone, it leads
    assert value(after, "shardlite_open_shards") >= 1
    assert value(after, "shardlite_log_bytes") > 0
    assert value(after, "shardlite_node_info", node="n1", version="0.1.0", replicator="noop") == 1
    # An open Subscribe stream is a subscriber while it lasts.
    with node.client(timeout=30) as c:
        stream = c.subscribe(1, timeout=30)
        assert next(stream)[0] == 1
        assert value(scrape(url), "shardlite_subscribers") == 1
        stream.close()  # type: ignore[attr-defined]
    wait_until(lambda: value(scrape(url), "shardlite_subscribers") == 0, 10, "the stream to end")
    # The shards are fsynced when the applied marker is written (every second).
    wait_until(lambda: value(scrape(url), fsyncs, file="shards") > 0, 10, "a sync of the shards")


# A snapshot every 30 applied entries, 5 kept before it for slow followers.
SMALL_SNAPSHOTS = ("--snapshot-entries", "30", "--snapshot-catchup-entries", "5")


def test_a_cluster_shows_replication_elections_and_snapshots(tmp_path: Path) -> None:
    metrics_ports = free_ports(3)
    cluster = LocalCluster(
        tmp_path,
        3,
        args=SMALL_SNAPSHOTS,
        metrics_ports=metrics_ports,
    )
    try:
        cluster.start()
        urls = {name: node.metrics_url for name, node in cluster.nodes.items()}
        leader = cluster.leader()
        others = [n for n in cluster.nodes if n != leader]
        first = scrape(urls[leader])
        assert value(first, "shardlite_raft_role", role="leader") == 1
        term = value(first, "shardlite_raft_term")
        assert term >= 1
        wait_until(
            lambda: all(
                value(scrape(urls[leader]), "shardlite_peer_connected", peer=p) == 1 for p in others
            ),
            15,
            "the leader's streams to both followers",
        )

        with cluster.client(others[0], timeout=10) as c:  # forwarded to the leader
            for i in range(80):
                c.put(f"k{i}", b"v" * 100)
        # The snapshot is taken in the background once enough was applied.
        wait_until(
            lambda: value(scrape(urls[leader]), "shardlite_snapshots_total", kind="taken") >= 1,
            15,
            f"{leader} to take a snapshot",
        )
        on_leader = scrape(urls[leader])
        assert value(on_leader, "shardlite_proposals_committed_total") >= 80
        assert value(on_leader, "shardlite_snapshot_size_bytes_count", kind="taken") >= 1
        assert value(on_leader, "shardlite_snapshot_size_bytes_sum", kind="taken") > 0
        assert value(on_leader, "shardlite_snapshot_duration_seconds_count", kind="taken") >= 1
        # Compacted: the log keeps what came after the snapshot, not all 80+.
        assert value(on_leader, "shardlite_log_entries") < 80
        wal = "shardlite_fsync_duration_seconds_count"
        assert value(on_leader, wal, file="raft_wal") > value(first, wal, file="raft_wal")
        # A follower applies what the leader committed.
        wait_until(
            lambda: (
                value(scrape(urls[others[0]]), "shardlite_applied_index")
                >= value(on_leader, "shardlite_commit_index")
            ),
            15,
            "the follower to apply every write",
        )
        follower = scrape(urls[others[0]])
        assert value(follower, "shardlite_raft_role", role="follower") == 1
        forwarded = {"service": "KV", "method": "Put", "code": "OK"}
        assert value(follower, "shardlite_rpc_requests_total", **forwarded) == 80
        assert value(follower, "shardlite_proposals_rejected_total", reason="not_leader") >= 1
        with cluster.client(others[0], timeout=10) as c:
            assert c.get("k0") is not None  # LINEARIZABLE: a read index asked of the leader
        rounds = value(scrape(urls[others[0]]), "shardlite_read_index_total", via="round")
        assert rounds >= 1

        # The leader dies: a survivor sees an election, a new leader, a new term.
        survivor = others[0]
        before = scrape(urls[survivor])
        old_last = value(scrape(urls[leader]), "shardlite_log_last_index")
        cluster.nodes[leader].kill()
        new_leader = cluster.leader(among=others, timeout=30)
        after = scrape(urls[survivor])
        assert value(after, "shardlite_raft_term") > value(before, "shardlite_raft_term")
        assert value(after, "shardlite_raft_leader_changes_total") > value(
            before, "shardlite_raft_leader_changes_total"
        )
        on_new = scrape(urls[new_leader])
        assert value(on_new, "shardlite_raft_elections_started_total") >= 1
        assert value(on_new, "shardlite_raft_elections_total", result="won") >= 1
        wait_until(
            lambda: value(scrape(urls[new_leader]), "shardlite_peer_connected", peer=leader) == 0,
            15,
            f"the new leader to see {leader}'s stream down",
        )

        # Far behind a compacted log, the old leader catches up by snapshot.
        with cluster.client(new_leader, timeout=10) as c:
            for i in range(60):
                c.put(f"late{i}", b"v" * 100)

        def compacted_past_the_old_leader() -> bool:
            # The snapshot is taken in the background: wait until the new
            # leader's log no longer holds what the old one lacks.
            on_new = scrape(urls[new_leader])
            last = value(on_new, "shardlite_log_last_index")
            first = last - value(on_new, "shardlite_log_entries") + 1
            return first > old_last + 1

        wait_until(compacted_past_the_old_leader, 30, f"{new_leader} to compact past {leader}")
        cluster.nodes[leader].start()
        wait_until(
            lambda: value(scrape(urls[leader]), "shardlite_snapshots_total", kind="installed") >= 1,
            30,
            f"{leader} to install a snapshot",
        )
    finally:
        cluster.stop()
