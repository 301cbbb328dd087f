"""The ports tests give their nodes (scripts/cluster.py free_ports) stay out of
the kernel's ephemeral range, where any outgoing connection could take one as
its local port before its node binds it (a chaos run failed so on CI)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts import cluster


def test_ports_come_from_below_the_ephemeral_range_free_and_distinct(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")  # Linux's default
    monkeypatch.setattr(cluster, "EPHEMERAL_RANGE_FILE", ranges)
    ports = cluster.free_ports(20)
    assert len(set(ports)) == 20
    assert all(32768 - cluster.PORTS_BELOW_EPHEMERAL <= port < 32768 for port in ports), ports
    for port in ports:  # free when handed out: each can be bound at once
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        # The whole search window is the taken port.
        monkeypatch.setattr(cluster, "_below_ephemeral", lambda: (port, port + 1))
        with pytest.raises(OSError, match="fewer than 1 free ports"):
            cluster.free_ports(1)
    finally:
        taken.close()


def test_without_a_readable_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cluster, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    ports = cluster.free_ports(3)
    assert len(set(ports)) == 3
