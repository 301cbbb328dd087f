"""The compose cluster with TLS on (docker/docker-compose.tls.yml): certificates made
by the one-shot `certs` service, clients over TLS with a client certificate, members
mutually authenticated; a plaintext client or one without a certificate is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from node.client import Client, ClientError, tls_credentials
from tests.docker.dockerlib import PROJECT, SERVICES, TLS_COMPOSE_FILE, ComposeCluster, docker


@pytest.fixture(scope="module")
def tls_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ComposeCluster, Path]]:
    cluster = ComposeCluster(project=f"{PROJECT}-tls", overrides=[TLS_COMPOSE_FILE])
    pki = tmp_path_factory.mktemp("compose-pki")
    failed_before = request.session.testsfailed
    try:
        cluster.up()
        certs = cluster.container("certs")  # exited once it made them
        for name in ("ca.pem", "client.pem", "client.key"):
            docker("cp", f"{certs}:/certs/{name}", str(pki / name), timeout=30)
        cluster.client_options = {
            "credentials": tls_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        }
        cluster.wait_ready(timeout=120)
        yield cluster, pki
    finally:
        if request.session.testsfailed > failed_before:
            cluster.dump_logs()
        cluster.down()


def test_writes_and_reads_over_tls_through_every_node(
    tls_cluster: tuple[ComposeCluster, Path],
) -> None:
    cluster, _ = tls_cluster
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
    tls_cluster: tuple[ComposeCluster, Path], who: str
) -> None:
    cluster, pki = tls_cluster
    credentials = None if who == "plaintext" else tls_credentials(pki / "ca.pem")
    with (
        Client(cluster.endpoint("n1"), timeout=3, credentials=credentials) as client,
        pytest.raises(ClientError) as failure,
    ):
        client.status()
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
