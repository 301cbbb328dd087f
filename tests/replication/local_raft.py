"""Three RaftReplicators in one process, talking real gRPC on loopback, seen
through the Replicator contract (calls go to whichever is leader): lets the
conformance suite run against a Raft cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from scripts.cluster import free_ports
from shardlite.replication.raft.replicator import RaftReplicator, RaftSettings
from shardlite.replication.raft.snapshots import KeptSnapshot
from shardlite.replication.raft.transport import SERVER_GRPC_OPTIONS
from shardlite.replication.replicator import Accepted, Rejected, RejectReason, ReplicatorStatus
from shardlite.v1 import frame_pb2, raft_pb2_grpc

NAMES = ["r1", "r2", "r3"]


class EmptyStateMachine:
    """Snapshots of nothing: the contract is about the log, not the state."""

    async def create_snapshot(self, index: int, into: Path, previous: KeptSnapshot | None) -> None:
        (into / "state").write_text(str(index))

    async def install_snapshot(self, index: int, source: Path) -> None:
        pass


class LocalRaft:
    kind = "raft"

    def __init__(self) -> None:
        self.replicators: dict[str, RaftReplicator] = {}
        self.servers: list[grpc.aio.Server] = []

    @staticmethod
    def _peers(path: Path) -> dict[str, str]:
        path.mkdir(parents=True, exist_ok=True)
        ports_file = path / "ports.json"
        if ports_file.exists():  # a restart: same cluster, same addresses
            ports = json.loads(ports_file.read_text())
        else:
            ports = dict(zip(NAMES, free_ports(3), strict=True))
            ports_file.write_text(json.dumps(ports))
        return {name: f"127.0.0.1:{port}" for name, port in ports.items()}

    @classmethod
    async def open(
        cls,
        path: Path,
        max_frame_bytes: int = 64 << 10,
        message_hosts: dict[str, str] | None = None,
        read_lease: bool = False,
        features: dict[str, frozenset[str]] | None = None,
    ) -> LocalRaft:
        """`message_hosts`: a member's RaftSettings.message_host ("" = no TCP
        stream); `features`: what a member announces (none if not named)."""
        peers = cls._peers(path)
        cluster = cls()
        for name in NAMES:
            replicator = RaftReplicator(
                RaftSettings(
                    name=name,
                    address=peers[name],
                    directory=path / name,
                    peers=peers,
                    tick_interval=0.02,
                    read_lease=read_lease,
                    max_frame_bytes=max_frame_bytes,
                    message_host=(message_hosts or {}).get(name),
                    features=(features or {}).get(name, frozenset()),
                    snapshot_entries=50,
                    catchup_entries=10,
                ),
                EmptyStateMachine(),
            )
            server = grpc.aio.server(options=SERVER_GRPC_OPTIONS)
            raft_pb2_grpc.add_RaftServicer_to_server(replicator.peer_servicer(), server)
            server.add_insecure_port(peers[name])
            await server.start()
            cluster.replicators[name] = replicator
            cluster.servers.append(server)
        await cluster.leader()
        return cluster

    async def leader(self, within: float = 10.0) -> RaftReplicator:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if all(r.closed for r in self.replicators.values()):
                raise Rejected(RejectReason.SHUTTING_DOWN)
            for r in self.replicators.values():
                if r.driver.is_leader and not r.closed:
                    return r
            await asyncio.sleep(0.02)
        raise TimeoutError("no leader elected")

    async def propose(self, frame: frame_pb2.Frame) -> Accepted:
        for _ in range(20):  # a leadership change mid-test: find the new leader
            leader = await self.leader()
            try:
                return await leader.propose(frame)
            except Rejected as exc:
                if exc.reason is not RejectReason.NOT_LEADER:
                    raise
        raise Rejected(RejectReason.NOT_LEADER, "no stable leader")

    async def subscribe(
        self, from_index: int, *, marks: bool = False
    ) -> AsyncIterator[list[tuple[int, frame_pb2.Frame | None]]]:
        leader = await self.leader()
        async for batch in leader.subscribe(from_index, marks=marks):
            yield batch

    async def read_barrier(self) -> int:
        return await (await self.leader()).read_barrier()

    def status(self) -> ReplicatorStatus:
        leaders = [r for r in self.replicators.values() if r.driver.is_leader]
        return (leaders or list(self.replicators.values()))[0].status()

    def compact(self, applied_index: int) -> None:
        for r in self.replicators.values():
            r.compact(min(applied_index, r.driver.commit_published))

    async def close(self) -> None:
        for r in self.replicators.values():
            await r.close()
        for server in self.servers:
            await server.stop(None)
