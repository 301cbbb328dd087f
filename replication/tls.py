"""TLS material from PEM files that may be replaced while the node runs.

A `TlsFiles` is a certificate, its key and the CA that signs the other side.
Every use reads the files' current state: servers through gRPC's dynamic
credentials (asked at each handshake), the TCP message stream through a fresh
`ssl.SSLContext` per connection, channels through `generation`, which changes
whenever a file does, so a cache of channels knows to make new ones. A file
replaced on disk is used from the next connection on, without a restart; a
half-written or mismatched pair is logged and the previous one kept.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsError(Exception):
    """The configured certificate files cannot be used."""


@dataclass(frozen=True)
class _Material:
    stamp: tuple[tuple[int, int], ...]  # (mtime_ns, size) of every file
    cert: bytes
    key: bytes
    ca: bytes | None


class TlsFiles:
    def __init__(self, cert: Path, key: Path, ca: Path | None) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self._lock = threading.Lock()
        self.generation = 0
        self._material = self._read()  # raises TlsError: a node must not start without

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.ca,) if self.ca is not None else ())

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        try:
            stats = [path.stat() for path in self.paths]
        except OSError as exc:
            raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def _read(self) -> _Material:
        stamp = self._stamp()
        try:
            cert, key, *ca = (path.read_bytes() for path in self.paths)
        except OSError as exc:
            raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
        material = _Material(stamp, cert, key, ca[0] if ca else None)
        _check(material, self)
        return material

    def current(self) -> _Material:
        """The files as they are now; the last good ones if they are being
        replaced (or were replaced by something unusable)."""
        with self._lock:
            try:
                if self._stamp() == self._material.stamp:
                    return self._material
                material = self._read()
            except TlsError as exc:
                log.error("TLS files changed but cannot be used (%s); keeping the old ones", exc)
                return self._material
            self._material = material
            self.generation += 1
            log.info("TLS certificate %s reloaded", self.cert)
            return material

    # -- gRPC ---------------------------------------------------------------------

    def server_credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        """Credentials that pick up replaced files at the next handshake."""
        served = self.current()

        def config(material: _Material) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(material.key, material.cert)], root_certificates=material.ca
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal served
            material = self.current()
            if material is served:
                return None  # unchanged
            served = material
            return config(material)

        return grpc.dynamic_ssl_server_credentials(
            config(served),
            fetch,  # type: ignore[arg-type]  # None means "unchanged" (grpc's docs)
            require_client_authentication=require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        material = self.current()
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca,
            private_key=material.key,
            certificate_chain=material.cert,
        )

    # -- plain TCP (the Raft message stream) ----------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """Accepts only peers whose certificate the CA signed."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        self._load(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Checks the listener's certificate and host name, shows ours."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        material = self.current()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if material.ca is None:
            raise TlsError("a CA certificate is needed to authenticate the other side")
        context.load_verify_locations(cadata=material.ca.decode("ascii", "replace"))
        # The ssl module loads a chain from files only: the paths as read.
        context.load_cert_chain(self.cert, self.key)


def _check(material: _Material, files: TlsFiles) -> None:
    """Refuse what would fail at the first handshake: a key that does not
    match its certificate, or a CA file that holds no certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        if material.ca is not None:
            context.load_verify_locations(cadata=material.ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"{files.ca} holds no usable CA certificate ({exc})") from None
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise TlsError(
            f"{files.cert} and {files.key} are not a certificate and its key ({exc})"
        ) from None
