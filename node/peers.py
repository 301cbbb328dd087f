"""gRPC channels to other members (forwarded writes, cluster administration,
joining), one per address, closed when the node stops."""

from __future__ import annotations

import grpc

from shardlite.replication.raft.transport import open_channel, tls_generation
from shardlite.replication.tls import TlsFiles


class PeerChannels:
    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self._channels: dict[str, tuple[grpc.aio.Channel, int]] = {}
        self._retired: list[grpc.aio.Channel] = []

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to `address`; a new one once the TLS files changed (the
        old one is closed with the others: calls on it may still run)."""
        generation = tls_generation(self.tls)
        channel, made = self._channels.get(address, (None, generation))
        if channel is not None and made != generation:
            self._retired.append(channel)
            channel = None
        if channel is None:
            channel = open_channel(address, self.tls)
            self._channels[address] = (channel, generation)
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        retired, self._retired = self._retired, []
        for channel in [c for c, _ in channels.values()] + retired:
            await channel.close(None)
