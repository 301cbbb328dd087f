"""gRPC channels to other members (forwarded writes, cluster administration,
joining), one per address, closed when the node stops."""

from __future__ import annotations

import grpc

from replication.raft.transport import GRPC_OPTIONS


class PeerChannels:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(None)
