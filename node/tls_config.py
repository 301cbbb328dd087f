"""Which TLS the node's flags ask for: for clients, for peers, or none."""

from __future__ import annotations

from shardlite.node.config import NodeConfig
from shardlite.replication.tls import TlsError, TlsFiles


def client_tls(config: NodeConfig) -> TlsFiles | None:
    """The client listener's certificate; the CA checks client certificates."""
    cert, key, ca = config.tls_cert, config.tls_key, config.tls_ca
    if cert is None and key is None:
        if ca is not None or config.client_cert_auth:
            raise TlsError("--tls-ca and --client-cert-auth need --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise TlsError("--tls-cert and --tls-key go together")
    if config.client_cert_auth and ca is None:
        raise TlsError("--client-cert-auth needs --tls-ca (the CA of client certificates)")
    return TlsFiles(cert, key, ca)


def peer_tls(config: NodeConfig) -> TlsFiles | None:
    """Mutual TLS between members: all three files, and a peer port of their own."""
    files = (config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca)
    if all(f is None for f in files):
        return None
    cert, key, ca = files
    if cert is None or key is None or ca is None:
        raise TlsError("peer TLS needs all of --peer-tls-cert, --peer-tls-key and --peer-tls-ca")
    if not config.peer_listen:
        raise TlsError("peer TLS needs --peer-listen: members get a port of their own")
    return TlsFiles(cert, key, ca)
