"""Peers apart from clients (--peer-listen): the client port serves no Raft
service, the peer port no client API; forwarded writes, relayed admin calls
and joins go over the peer port; clients are told client addresses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.replication.raft.transport import RaftServicer
from shardlite.v1 import kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc
from tests.harness import LocalCluster, free_ports, running_cluster, wait_until

FAST = ("--raft-tick-ms", "20", "--election-ticks", "10")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("peers"), 3, args=FAST) as cluster:
        yield cluster


def _code(call: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(call, grpc.Call)
    return call.code()


def test_the_client_port_serves_no_raft_service(cluster: LocalCluster) -> None:
    with (
        grpc.insecure_channel(cluster.addresses["n1"]) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        raft_pb2_grpc.RaftStub(channel).MessagePort(raft_pb2.MessagePortRequest(), timeout=5)
    assert _code(failure.value) == grpc.StatusCode.UNIMPLEMENTED


def test_the_peer_port_serves_no_client_api(cluster: LocalCluster) -> None:
    with (
        grpc.insecure_channel(cluster.peer_addresses["n1"]) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(namespace="ns", key="k"), timeout=5)
    assert _code(failure.value) == grpc.StatusCode.UNIMPLEMENTED


def test_a_follower_forwards_and_names_the_leaders_client_address(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(name for name in cluster.nodes if name != leader)
    with cluster.client(follower) as client:
        client.put("forwarded", b"v")  # forwarded over the peer port
        entry = client.get("forwarded")
        assert entry is not None
        assert entry.value == b"v"
        wait_until(
            lambda: client.status().leader_address == cluster.addresses[leader],
            10,
            "the follower to name the leader's client address",
        )
        members = {m.name: m for m in client.members().members}
    for name, member in members.items():
        assert member.address == cluster.peer_addresses[name]
    # The follower learned its own and the leader's client address at least.
    assert members[follower].client_address == cluster.addresses[follower]
    assert members[leader].client_address == cluster.addresses[leader]


def test_admin_calls_on_a_follower_are_relayed_to_the_leader(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(name for name in cluster.nodes if name != leader)
    with cluster.client(follower, timeout=10) as client:
        assert client.transfer_leader(follower) == follower
    assert cluster.leader() == follower


def test_a_member_introducing_itself_with_a_bad_client_address_is_refused(
    cluster: LocalCluster,
) -> None:
    bad = raft_pb2.MessagePortRequest(sender=1, client_address="no port here")
    with (
        grpc.insecure_channel(cluster.peer_addresses["n1"]) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        raft_pb2_grpc.RaftStub(channel).MessagePort(bad, timeout=5)
    assert _code(failure.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "client_address" in (failure.value.details() or "")


def test_the_message_stream_listens_on_the_configured_port(tmp_path: Path) -> None:
    port = free_ports(1)[0]

    async def bound() -> int:
        servicer = RaftServicer(lambda m: None, message_host="127.0.0.1", message_port=port)
        try:
            return await servicer.message_port()
        finally:
            servicer.close()

    assert asyncio.run(bound()) == port
