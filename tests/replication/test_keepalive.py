"""Peer channels and node servers agree on keepalive (issue 11 item 9): a
channel with the peer options, idle for several keepalive periods against a
server with the node's options, stays READY; against gRPC's default server
policy the same channel gets GOAWAY too_many_pings and drops -- what peers
logged at each other. Periods are scaled down (the same functions build the
real options) so the test takes seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shardlite.replication.raft.transport import (
    GRPC_OPTIONS,
    SERVER_GRPC_OPTIONS,
    RaftServicer,
    channel_options,
    server_options,
)
from shardlite.v1 import raft_pb2_grpc

KEEPALIVE_MS = 1000  # gRPC pings at most about once a second anyway
IDLE_PERIODS = 5


async def _states_while_idle(server_opts: list[tuple[str, int]]) -> set[grpc.ChannelConnectivity]:
    server = grpc.aio.server(options=server_opts)
    raft_pb2_grpc.add_RaftServicer_to_server(RaftServicer(lambda m: None), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        options = channel_options(KEEPALIVE_MS)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), 5)
            seen = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + IDLE_PERIODS * KEEPALIVE_MS / 1000
            while loop.time() < deadline:
                seen.add(channel.get_state())
                await asyncio.sleep(0.05)
            return seen
    finally:
        await server.stop(None)


@pytest.mark.timeout(60)
def test_an_idle_peer_channel_stays_connected_to_a_node_server() -> None:
    seen = asyncio.run(_states_while_idle(server_options(KEEPALIVE_MS)))
    assert seen == {grpc.ChannelConnectivity.READY}


@pytest.mark.timeout(60)
def test_the_same_channel_is_sent_away_by_a_server_with_grpc_defaults() -> None:
    """The control: the observation above can fail (the old node server)."""
    seen = asyncio.run(_states_while_idle([]))
    assert seen != {grpc.ChannelConnectivity.READY}


def test_the_shipped_options_are_built_by_the_same_period() -> None:
    assert channel_options() == GRPC_OPTIONS
    assert server_options() == SERVER_GRPC_OPTIONS
    channel, server = dict(GRPC_OPTIONS), dict(SERVER_GRPC_OPTIONS)
    assert (
        server["grpc.http2.min_ping_interval_without_data_ms"] < channel["grpc.keepalive_time_ms"]
    )
    assert (
        server["grpc.keepalive_permit_without_calls"]
        == channel["grpc.keepalive_permit_without_calls"]
    )
