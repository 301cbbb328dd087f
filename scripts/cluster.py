"""Start a local shardlite cluster of node processes on loopback.

    python -m scripts.cluster --nodes 3 --data ./data --base-port 7001

Prints the endpoints, then runs until Ctrl-C (or SIGTERM) and stops every node
gracefully. Tests use the same classes (LocalNode, LocalCluster) to run real
clusters, so users and tests start nodes the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shardlite.node import stack_dump
from shardlite.node.client import Client

# Generous: a start normally takes under a second, but on a shared CI machine
# one fresh node once took over 30 s (cause unknown; if it happens again the
# TimeoutError carries the node's stacks, see LocalNode.stacks).
START_TIMEOUT = 60.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# Where free_ports looks: below the kernel's ephemeral range. bind(("", 0))
# hands out a port from that range, and any outgoing connection (a client, a
# peer stream) may take the same port as its local end before the node that
# was given it binds it, or while that node is down for a restart: its bind
# then fails (CI saw "Failed to bind to address 127.0.0.1:58579").
PORTS_BELOW_EPHEMERAL = 12_000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now, outside the
    kernel's ephemeral range when there is room below it (else from it)."""
    span = _below_ephemeral()
    if span is None:
        return _kernel_chosen_ports(count)
    low, high = span
    # A random start: test processes running side by side rarely meet.
    first = random.randrange(low, high)
    held: list[socket.socket] = []
    try:
        for offset in range(high - low):
            if len(held) == count:
                break
            port = low + (first - low + offset) % (high - low)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        if len(held) < count:
            raise OSError(f"fewer than {count} free ports in {low}-{high - 1}")
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _below_ephemeral() -> tuple[int, int] | None:
    """[low, high) just below the ephemeral range, or None if there is no room."""
    try:
        ephemeral_low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    low = max(1024, ephemeral_low - PORTS_BELOW_EPHEMERAL)
    return (low, ephemeral_low) if ephemeral_low - low >= 1000 else None


def _kernel_chosen_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (bound and released at once)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class LocalNode:
    """One `shardlite node` child process."""

    data_dir: Path
    args: list[str]
    log_path: Path
    node_id: str = "n1"
    listen: str = "127.0.0.1:0"
    env: dict[str, str] | None = None
    # The module run as `python -m`: tests run a wrapper (a crash-point hook).
    module: str = "shardlite.node.cli"
    # The interpreter that runs it (another virtualenv's: the installed-wheel test).
    python: str = sys.executable
    # Its working directory (None: ours); `python -m` puts it first on sys.path.
    cwd: Path | None = None
    # host:port for its Prometheus endpoint ("" = none).
    metrics_listen: str = ""
    start_timeout: float = START_TIMEOUT
    process: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> LocalNode:
        ready = self.data_dir.parent / f"{self.data_dir.name}.ready"
        ready.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop/kill
        cmd = [
            self.python, "-m", self.module, "node",
            "--id", self.node_id,
            "--data", str(self.data_dir),
            "--listen", self.listen,
            "--ready-file", str(ready),
            *(["--metrics-listen", self.metrics_listen] if self.metrics_listen else []),
            *self.args,
        ]  # fmt: skip
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
        )
        proc = self.process

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}: {self.log_tail()}")
            return ready.exists()

        try:
            wait_until(started, self.start_timeout, f"node {self.node_id} to serve")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; where it waits:\n{self.stacks()}") from None
        self.endpoint = ready.read_text().strip()
        return self

    def stacks(self, timeout: float = 5.0) -> str:
        """Ask a running node where it waits (SIGUSR1, node/stack_dump.py) and
        return the end of its log, which holds the answer."""
        if not self.running:
            return self.log_tail()
        before = self.log_path.stat().st_size if self.log_path.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)

        def dumped() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(before)
                return stack_dump.END.encode() in log.read()

        with contextlib.suppress(TimeoutError):  # a stuck loop: the threads' part only
            wait_until(dumped, timeout, "the stack dump")
        return self.log_tail(lines=300)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_listen}/metrics" if self.metrics_listen else ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: Any) -> Client:
        return Client(self.endpoint, **kwargs)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and wait for a graceful exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalCluster:
    """N nodes bootstrapped together with --peers, on loopback ports."""

    def __init__(
        self,
        base: Path,
        size: int = 3,
        ports: list[int] | None = None,
        args: tuple[str, ...] = (),
        names: list[str] | None = None,
        peer_ports: list[int] | None = None,
        node_args: Callable[[str], list[str]] | None = None,
        client_options: dict[str, Any] | None = None,
        metrics_ports: list[int] | None = None,
    ) -> None:
        """`args` go to every node, `node_args(name)` to that one (its
        certificate, say); `client_options` to every Client made here;
        `metrics_ports`, one per node, its --metrics-listen on loopback."""
        self.base = base
        self.client_options = client_options or {}
        names = names or [f"n{i + 1}" for i in range(size)]
        ports = ports or free_ports(size)
        peer_ports = peer_ports or free_ports(size)
        # Where clients reach each node, and where its peers do (--peer-listen).
        self.addresses = {
            name: f"127.0.0.1:{port}" for name, port in zip(names, ports, strict=True)
        }
        self.peer_addresses = {
            name: f"127.0.0.1:{port}" for name, port in zip(names, peer_ports, strict=True)
        }
        peers = ",".join(f"{n}={a}" for n, a in self.peer_addresses.items())
        metrics = dict(zip(names, metrics_ports or [], strict=False))
        self.nodes: dict[str, LocalNode] = {
            name: LocalNode(
                data_dir=base / name,
                args=[
                    "--peers",
                    peers,
                    "--peer-listen",
                    self.peer_addresses[name],
                    *args,
                    *(node_args(name) if node_args else ()),
                ],
                log_path=base / f"{name}.log",
                node_id=name,
                listen=address,
                metrics_listen=f"127.0.0.1:{metrics[name]}" if name in metrics else "",
            )
            for name, address in self.addresses.items()
        }

    def joining_node(self, name: str, via: str, args: tuple[str, ...] = ()) -> LocalNode:
        """A new member (not started yet) that joins the cluster through the
        peer address of member `via`."""
        port, peer_port = free_ports(2)
        self.addresses[name] = f"127.0.0.1:{port}"
        self.peer_addresses[name] = f"127.0.0.1:{peer_port}"
        node = self.nodes[name] = LocalNode(
            data_dir=self.base / name,
            args=[
                "--join", self.peer_addresses[via],
                "--peer-listen", self.peer_addresses[name],
                *args,
            ],
            log_path=self.base / f"{name}.log",
            node_id=name,
            listen=self.addresses[name],
        )  # fmt: skip
        return node

    def start(self) -> LocalCluster:
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.running:
                with contextlib.suppress(Exception):
                    node.terminate(timeout=15)
            node.kill()

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def client(self, name: str, **kwargs: Any) -> Client:
        return Client(self.addresses[name], **{**self.client_options, **kwargs})

    def leader(self, timeout: float = 15.0, among: list[str] | None = None) -> str:
        """The name of the node that is leader (as it says itself), once all the
        live nodes asked agree on it."""
        names = among or [n for n, node in self.nodes.items() if node.running]
        found: list[str] = []

        def agreed() -> bool:
            seen = set()
            for name in names:
                try:
                    with self.client(name, timeout=1) as c:
                        status = c.status()
                except Exception:
                    return False
                seen.add(status.leader)
            if len(seen) == 1 and "" not in seen and seen <= set(names):
                found[:] = list(seen)
                return True
            return False

        wait_until(agreed, timeout, f"one leader among {names}")
        return found[0]


@contextlib.contextmanager
def running_cluster(base: Path, size: int = 3, **kwargs: Any) -> Iterator[LocalCluster]:
    """A started cluster that has elected a leader; stopped afterwards, whatever happened."""
    cluster = LocalCluster(base, size, **kwargs)
    try:
        cluster.start()
        cluster.leader()
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--data", type=Path, default=Path("./data"))
    p.add_argument("--base-port", type=int, default=7001, help="client ports from here")
    p.add_argument(
        "--peer-base-port", type=int, default=0, help="peer ports from here (base port + 100)"
    )
    p.add_argument(
        "--metrics-base-port",
        type=int,
        default=0,
        help="Prometheus /metrics ports from here (base port + 200; -1: none)",
    )
    args = p.parse_args()
    ports = [args.base_port + i for i in range(args.nodes)]
    peer_base = args.peer_base_port or args.base_port + 100
    peer_ports = [peer_base + i for i in range(args.nodes)]
    metrics_base = args.metrics_base_port or args.base_port + 200
    metrics_ports = (
        [metrics_base + i for i in range(args.nodes)] if args.metrics_base_port >= 0 else None
    )
    cluster = LocalCluster(
        args.data, args.nodes, ports=ports, peer_ports=peer_ports, metrics_ports=metrics_ports
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        leader = cluster.leader()
        print(f"shardlite cluster of {args.nodes} nodes, data under {args.data}/:")
        for name, address in cluster.addresses.items():
            mark = "  (leader)" if name == leader else ""
            peer = cluster.peer_addresses[name]
            node = cluster.nodes[name]
            metrics = f"  metrics {node.metrics_url}" if node.metrics_url else ""
            print(f"  {name}  {address}  peers {peer}  log {node.log_path}{metrics}{mark}")
        first = next(iter(cluster.addresses.values()))
        print("Try, in another shell:")
        print(f"  .venv/bin/shardlite put greeting hello --endpoint {first}")
        print(
            f"  .venv/bin/shardlite get greeting --endpoint {list(cluster.addresses.values())[-1]}"
        )
        print("  .venv/bin/shardlite status")
        print("Ctrl-C stops all nodes.", flush=True)
        while not stop and all(n.running for n in cluster.nodes.values()):
            time.sleep(0.2)
        for name, node in cluster.nodes.items():
            if not node.running and not stop:
                print(f"node {name} exited; stopping the cluster:\n{node.log_tail(10)}")
    finally:
        cluster.stop()
        print("cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
