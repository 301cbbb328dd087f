"""TLS: clients over TLS (with client certificates when required), members
always mutually authenticated; a stranger's certificate (another CA) gets
nowhere; a certificate replaced on disk is served without a restart."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError

from shardlite.node import certs
from shardlite.node.client import Client, ClientError, tls_credentials
from shardlite.replication.raft.transport import FRAME_LENGTH, HANDSHAKE_TIMEOUT, host_of
from shardlite.v1 import raft_pb2, raft_pb2_grpc
from tests.harness import LocalCluster, running_cluster, wait_until

FAST = ("--raft-tick-ms", "20", "--election-ticks", "10")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cluster's CA with n1..n3 and a client, and a stranger's CA with its own."""
    ours = tmp_path_factory.mktemp("pki")
    theirs = tmp_path_factory.mktemp("stranger")
    for name in ("n1", "n2", "n3"):
        certs.issue(ours, name, ["127.0.0.1"])
    certs.issue(ours, "alice", server=False)
    certs.issue(theirs, "n4", ["127.0.0.1"])
    return {"ours": ours, "theirs": theirs}


def _node_tls(pki: Path, name: str) -> list[str]:
    return [
        "--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key"),
        "--tls-ca", str(pki / "ca.pem"), "--client-cert-auth",
        "--peer-tls-cert", str(pki / f"{name}.pem"), "--peer-tls-key", str(pki / f"{name}.key"),
        "--peer-tls-ca", str(pki / "ca.pem"),
    ]  # fmt: skip


def _alice(pki: Path) -> grpc.ChannelCredentials:
    return tls_credentials(pki / "ca.pem", pki / "alice.pem", pki / "alice.key")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]
) -> Iterator[LocalCluster]:
    ours = pki["ours"]
    with running_cluster(
        tmp_path_factory.mktemp("tls"),
        3,
        args=FAST,
        node_args=lambda name: _node_tls(ours, name),
        client_options={"credentials": _alice(ours)},
    ) as cluster:
        yield cluster


def test_a_client_with_the_ca_and_a_certificate_reads_and_writes(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(name for name in cluster.nodes if name != leader)
    with cluster.client(follower) as client:  # forwarded to the leader over mutual TLS
        client.put("k", b"over tls")
        entry = client.get("k")
    assert entry is not None
    assert entry.value == b"over tls"


@pytest.mark.parametrize("who", ["plaintext", "another CA", "no client certificate"])
def test_a_client_the_node_cannot_trust_or_that_cannot_trust_it_fails(
    cluster: LocalCluster, pki: dict[str, Path], who: str
) -> None:
    ours, theirs = pki["ours"], pki["theirs"]
    credentials = {
        "plaintext": None,
        "another CA": tls_credentials(theirs / "ca.pem", ours / "alice.pem", ours / "alice.key"),
        "no client certificate": tls_credentials(ours / "ca.pem"),
    }[who]
    with (
        Client(cluster.addresses["n1"], timeout=2, credentials=credentials) as client,
        pytest.raises(ClientError) as failure,
    ):
        client.status()
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE


def test_a_member_with_another_cas_certificate_cannot_join(
    cluster: LocalCluster, pki: dict[str, Path]
) -> None:
    theirs = pki["theirs"]
    stranger = grpc.ssl_channel_credentials(
        (theirs / "ca.pem").read_bytes(),
        (theirs / "n4.key").read_bytes(),
        (theirs / "n4.pem").read_bytes(),
    )
    request = raft_pb2.AddMemberRequest(name="n4", address="127.0.0.1:1")
    with grpc.secure_channel(cluster.peer_addresses["n1"], stranger) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            raft_pb2_grpc.ClusterStub(channel).AddMember(request, timeout=3)
        assert isinstance(failure.value, grpc.Call)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            raft_pb2_grpc.RaftStub(channel).MessagePort(raft_pb2.MessagePortRequest(), timeout=3)
    with cluster.client("n1") as client:
        assert "n4" not in {m.name for m in client.members().members}


def _message_port(cluster: LocalCluster, pki: Path) -> int:
    ours = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), (pki / "n2.key").read_bytes(), (pki / "n2.pem").read_bytes()
    )
    with grpc.secure_channel(cluster.peer_addresses["n1"], ours) as channel:
        reply = raft_pb2_grpc.RaftStub(channel).MessagePort(
            raft_pb2.MessagePortRequest(), timeout=5
        )
    assert reply.port
    return int(reply.port)


def _welcomed(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether the message stream at `port` answers our hello with a welcome."""
    hello = raft_pb2.MessageStreamHello().SerializeToString()
    try:
        # Longer than the listener's handshake timeout: a stranger that never
        # completes a handshake is closed by then (EOF), not left hanging.
        with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT * 3) as raw:
            conn = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            with conn:
                conn.sendall(FRAME_LENGTH.pack(len(hello)) + hello)
                header = conn.recv(FRAME_LENGTH.size)
                if len(header) < FRAME_LENGTH.size:
                    return False
                (length,) = FRAME_LENGTH.unpack(header)
                welcome = raft_pb2.MessageStreamWelcome.FromString(conn.recv(length))
                return not welcome.refusal
    except (ssl.SSLError, ConnectionError, DecodeError):
        return False


def _member_context(pki: Path, ca: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca / "ca.pem")
    context.load_cert_chain(pki / f"{name}.pem", pki / f"{name}.key")
    return context


def test_the_message_stream_takes_only_the_clusters_certificates(
    cluster: LocalCluster, pki: dict[str, Path]
) -> None:
    ours, theirs = pki["ours"], pki["theirs"]
    port = _message_port(cluster, ours)
    assert _welcomed(port, _member_context(ours, ours, "n2"))  # a member is
    stranger = _member_context(theirs, theirs, "n4")
    stranger.check_hostname = False
    stranger.verify_mode = ssl.CERT_NONE  # whoever they are: they must refuse us
    assert not _welcomed(port, stranger)
    assert not _welcomed(port, None)  # plaintext


def _served_fingerprint(address: str, pki: Path) -> str:
    """SHA-256 of the certificate the node presents at a new handshake."""
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    context.load_cert_chain(pki / "alice.pem", pki / "alice.key")
    context.set_alpn_protocols(["h2"])
    host, port = host_of(address), int(address.rpartition(":")[2])
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_a_certificate_replaced_on_disk_is_used_without_a_restart(
    cluster: LocalCluster, pki: dict[str, Path]
) -> None:
    ours = pki["ours"]
    address = cluster.addresses["n3"]
    before = _served_fingerprint(address, ours)
    pid = cluster.nodes["n3"].pid
    certs.issue(ours, "n3", ["127.0.0.1"])  # a new key and certificate, same paths
    wait_until(
        lambda: _served_fingerprint(address, ours) != before,
        10,
        "n3 to present its new certificate",
    )
    assert cluster.nodes["n3"].pid == pid  # the same process
    # The cluster goes on with n3's new certificate among members too.
    with cluster.client("n3") as client:
        client.put("after-rotation", b"ok")
        entry = client.get("after-rotation")
    assert entry is not None
    assert entry.value == b"ok"
