"""Tokens in a real cluster (issue 13): the node a client calls checks the
org before it forwards a write to the leader (the peer service's Forward
takes no token, so a write denied here was denied where it arrived); admin
RPCs relayed to the leader carry the caller's token; a node joins a cluster
with auth on only with an admin --join-token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from shardlite.node.client import SERIALIZABLE, Client, ClientError
from shardlite.node.cluster_status import cluster_status
from tests.cluster.conftest import FAST
from tests.harness import LocalCluster, NodeProcess, free_ports, wait_until
from tests.node.auth_tokens import Tokens, standard_tokens


def _leader(cluster: LocalCluster, token: str) -> str:
    found: list[str] = []

    def agreed() -> bool:
        seen = set()
        for name in cluster.nodes:
            try:
                with cluster.client(name, timeout=1, token=token) as c:
                    seen.add(c.status().leader)
            except ClientError:
                return False
        found[:] = list(seen)
        return len(seen) == 1 and "" not in seen

    wait_until(agreed, 30, "one leader")
    return found[0]


def test_orgs_are_checked_where_the_client_calls_and_admin_relays_carry_the_token(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    tokens: Tokens = standard_tokens(tmp_path / "tokens.json")
    cluster = make_cluster(3, args=("--auth-tokens", str(tokens.path)))
    leader = _leader(cluster, tokens["admin"])
    follower = next(name for name in cluster.nodes if name != leader)

    with cluster.client(follower, token=tokens["alpha"], org="a", namespace="ns") as alpha:
        written = alpha.put("k", b"forwarded")  # forwarded to the leader, then applied here
        entry = alpha.get("k")
        assert entry is not None
        assert entry.version == written.version
        with pytest.raises(ClientError) as denied:
            alpha.put("k", b"never", org="b")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with cluster.client(leader, token=tokens["admin"], namespace="ns") as admin:
        assert admin.get("k", org="b") is None
        assert admin.namespaces(org="b") == []
        assert admin.get("k", org="a") == entry

    # Admin RPCs sent to a follower are relayed to the leader with the token.
    with cluster.client(follower, token=tokens["alpha"]) as alpha:
        with pytest.raises(ClientError) as not_admin:
            alpha.transfer_leader(follower)
        assert not_admin.value.code == grpc.StatusCode.PERMISSION_DENIED
    with cluster.client(follower, token=tokens["admin"], timeout=30) as admin:
        assert admin.transfer_leader(follower) == follower
        assert {m.name for m in admin.members().members} == set(cluster.nodes)

    # status --cluster asks every member with the token it was given.
    rows = cluster_status(cluster.addresses[follower], 10, token=tokens["admin"])
    # (A member whose client address the node asked does not know yet has no
    # role; one that refused the token would say "unreachable".)
    assert "leader" in {r.role for r in rows}
    assert "unreachable" not in {r.role for r in rows}

    # Joining needs an admin token: none is refused at once, with the reason.
    port = free_ports(2)
    common = ["--auth-tokens", str(tokens.path), *FAST]
    refused = NodeProcess(
        data_dir=cluster.base / "n4",
        args=["--join", cluster.addresses[leader], *common],
        log_path=cluster.base / "n4.log",
        node_id="n4",
        listen=f"127.0.0.1:{port[0]}",
    )
    with pytest.raises(RuntimeError) as exited:
        refused.start()
    refused.kill()
    assert "UNAUTHENTICATED" in str(exited.value)
    joined = NodeProcess(
        data_dir=cluster.base / "n5",
        args=["--join", cluster.addresses[leader], "--join-token", tokens["admin"], *common],
        log_path=cluster.base / "n5.log",
        node_id="n5",
        listen=f"127.0.0.1:{port[1]}",
    )
    cluster.nodes["n5"] = joined  # stopped with the cluster
    joined.start()
    with Client(joined.endpoint, token=tokens["admin"], timeout=30) as admin:
        wait_until(
            lambda: any(m.name == "n5" and not m.learner for m in admin.members().members),
            60,
            "n5 to join as a voter",
        )
    with Client(joined.endpoint, token=tokens["alpha"], org="a", namespace="ns") as alpha:
        wait_until(
            lambda: alpha.get("k", consistency=SERIALIZABLE) is not None, 30, "n5 to catch up"
        )
        assert alpha.put("k2", b"v").version > written.version
