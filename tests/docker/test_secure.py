"""The compose cluster with TLS and tokens on (docker/docker-compose.secure.yml):
certificates and tokens made by the one-shot `certs` service, clients over TLS
with a client certificate and a token, members mutually authenticated; a
plaintext client, one without a certificate, one without a token, and a
tenant outside its org are each refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shardlite.node.client import AccessDeniedError, Client, ClientError, tls_credentials
from tests.docker.dockerlib import PROJECT, SECURE_COMPOSE_FILE, SERVICES, ComposeCluster, docker

FILES = ("ca.pem", "client.pem", "client.key", "admin.token", "tenant-a.token")


@pytest.fixture(scope="module")
def secure_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ComposeCluster, Path]]:
    cluster = ComposeCluster(project=f"{PROJECT}-secure", overrides=[SECURE_COMPOSE_FILE])
    pki = tmp_path_factory.mktemp("compose-pki")
    failed_before = request.session.testsfailed
    try:
        cluster.up()
        certs = cluster.container("certs")  # exited once it made them
        for name in FILES:
            docker("cp", f"{certs}:/certs/{name}", str(pki / name), timeout=30)
        cluster.client_options = {
            "credentials": _credentials(pki),
            "token": _token(pki, "admin"),
        }
        cluster.wait_ready(timeout=120)
        yield cluster, pki
    finally:
        if request.session.testsfailed > failed_before:
            cluster.dump_logs()
        cluster.down()


def _credentials(pki: Path) -> grpc.ChannelCredentials:
    return tls_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")


def _token(pki: Path, name: str) -> str:
    return (pki / f"{name}.token").read_text().strip()


def test_writes_and_reads_over_tls_through_every_node(
    secure_cluster: tuple[ComposeCluster, Path],
) -> None:
    cluster, _ = secure_cluster
    for service in SERVICES:  # followers forward over mutual TLS
        with cluster.client(service) as client:
            client.put(f"tls-{service}", service.encode())
    for service in SERVICES:
        with cluster.client(service) as client:
            for writer in SERVICES:
                entry = client.get(f"tls-{writer}")
                assert entry is not None
                assert entry.value == writer.encode()


@pytest.mark.parametrize("who", ["plaintext", "no client certificate"])
def test_a_client_without_tls_or_a_certificate_is_refused(
    secure_cluster: tuple[ComposeCluster, Path], who: str
) -> None:
    cluster, pki = secure_cluster
    credentials = None if who == "plaintext" else tls_credentials(pki / "ca.pem")
    with (
        Client(cluster.endpoint("n1"), timeout=3, credentials=credentials) as client,
        pytest.raises(ClientError) as failure,
    ):
        client.status()
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE


def test_tokens_decide_who_may_do_what(secure_cluster: tuple[ComposeCluster, Path]) -> None:
    cluster, pki = secure_cluster
    endpoint = cluster.endpoint("n2")
    with Client(endpoint, timeout=5, credentials=_credentials(pki)) as anonymous:
        with pytest.raises(AccessDeniedError) as refused:
            anonymous.get("k")
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    tenant = _token(pki, "tenant-a")
    with Client(endpoint, org="a", timeout=10, credentials=_credentials(pki), token=tenant) as a:
        a.put("mine", b"v")
        entry = a.get("mine")
        assert entry is not None
        with pytest.raises(AccessDeniedError) as foreign:
            a.put("theirs", b"v", org="b")
        assert foreign.value.code is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(AccessDeniedError):
            a.members()  # admin only
